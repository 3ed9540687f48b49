"""Chat data: conversations as lists of ``{"role", "content"}`` messages.

In a prepared split a conversation is one JSON string in the ``messages`` column (roles
``system``, ``user`` and ``assistant``), so every string-based step (normalising,
duplicate and leak keys, DVC versions) treats it like any other text column.

Sources give OpenAI-style turns (``{"role", "content"}``) or ShareGPT turns (``{"from",
"value"}``, roles human/gpt/system), as lists (JSONL, Parquet, the hub) or as JSON text
(CSV). :func:`canonical_cell` maps either onto the canonical form and renames roles with
``data.chat.roles``. A row that is not a conversation is not an error at load time: its
cell keeps what the source had (as JSON text), and :func:`inspect` tells the gate what is
wrong with it, so the gate names the row.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field

from tunelab.config import SHAREGPT_ROLES

ROLES = ("system", "user", "assistant")
COLUMN = "messages"
# Turn keys per source format: (role key, content key).
KEYS = {"openai": ("role", "content"), "sharegpt": ("from", "value")}
# Role names every source may use, before data.chat.roles (which wins).
DEFAULT_ROLES = dict(SHAREGPT_ROLES)

Message = dict[str, str]

_SPACES = re.compile(r"\s+")


def dumps(messages: list[Message]) -> str:
    """The canonical JSON text of a conversation (role and content only, in that order)."""
    clean = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    return json.dumps(clean, ensure_ascii=False)


def loads(text: str) -> list[Message]:
    """A conversation from its canonical JSON text."""
    return [{"role": m["role"], "content": m["content"]} for m in json.loads(text)]


# --- from a source cell to the canonical form -----------------------------------------


def role_map(roles: dict[str, str] | None = None) -> dict[str, str]:
    """Source role (case-folded) -> canonical role: ours, the ShareGPT defaults, then
    ``roles`` (data.chat.roles) over them."""
    out = {role: role for role in ROLES} | dict(DEFAULT_ROLES)
    out.update({_role_key(k): v for k, v in (roles or {}).items()})
    return out


def canonical_cell(value: object, fmt: str = "auto", roles: dict[str, str] | None = None):
    """One source cell as canonical JSON text; None stays None (the gate's null check).

    A well-formed conversation comes back with roles mapped and each content NFC,
    trimmed. Anything else keeps its shape (JSON text of what the source had, turns
    renamed as far as they can be) for :func:`inspect` to describe at the gate.
    """
    if _is_null(value):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value  # not JSON: inspect() says so
    value = _plain(value)
    if not isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, default=str)
    mapping = role_map(roles)
    turns = [_turn(item, fmt, mapping) for item in value]
    return json.dumps(turns, ensure_ascii=False, default=str)


def _turn(item: object, fmt: str, mapping: dict[str, str]) -> object:
    """One turn with canonical keys; a turn that is not an object is kept as it is."""
    if not isinstance(item, dict):
        return item
    role_key, content_key = KEYS[_format_of(item, fmt)]
    out: dict[str, object] = {}
    if role_key in item and not _is_null(item[role_key]):
        role = item[role_key]
        out["role"] = mapping.get(_role_key(role), role) if isinstance(role, str) else role
    if content_key in item and not _is_null(item[content_key]):
        out["content"] = _content(item[content_key])
    return out


def _format_of(item: dict, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if not ({"role", "content"} & set(item)) and {"from", "value"} & set(item):
        return "sharegpt"
    return "openai"


def _content(value: object) -> object:
    """Text NFC and trimmed; OpenAI content parts ([{type: text, text}]) joined."""
    if isinstance(value, list) and value and all(_text_part(p) for p in value):
        value = "\n".join(p["text"] for p in value)
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).strip()
    return value


def _text_part(part: object) -> bool:
    return (
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )


def _role_key(role: object) -> str:
    return str(role).strip().casefold()


def _plain(value: object) -> object:
    """Lists and mappings as Parquet and the hub give them (numpy arrays) made plain."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _is_null(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    try:
        import pandas as pd

        return pd.api.types.is_scalar(value) and bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


# --- what the gate checks --------------------------------------------------------------


@dataclass
class Inspection:
    """What the gate needs to know about one canonical cell.

    Each problem is reported by one check: a cell that is not a conversation is not
    also checked for roles, and the turn-order checks apply only to well-formed
    conversations with known roles and at least one turn.
    """

    problem: str = ""  # why the cell is not a list of {role, content} texts; "" = it is
    roles: list[str] = field(default_factory=list)
    unknown_roles: list[str] = field(default_factory=list)
    empty_turns: list[int] = field(default_factory=list)  # 1-based numbers of blank turns
    order: str = ""  # why the turns do not alternate as they should; "" = they do
    lengths: list[int] = field(default_factory=list)  # characters of each turn's content
    missing: bool = False  # null or blank: the gate's null and blank checks report it

    @property
    def turns(self) -> int:
        return len(self.roles)

    @property
    def empty(self) -> bool:
        """No turns at all, or a turn with no visible text."""
        return not (self.problem or self.missing) and (not self.roles or bool(self.empty_turns))

    def outside(self, shortest: int, longest: int) -> list[int]:
        """1-based numbers of non-blank turns shorter or longer than the limits."""
        blank = set(self.empty_turns)
        return [
            number
            for number, chars in enumerate(self.lengths, 1)
            if number not in blank and not shortest <= chars <= longest
        ]

    @property
    def ordered(self) -> bool:
        """Whether the turn-order checks apply to this cell."""
        return not self.problem and not self.unknown_roles and bool(self.roles)

    @property
    def has_assistant(self) -> bool:
        return not self.ordered or "assistant" in self.roles

    @property
    def ends_with_assistant(self) -> bool:
        """Judged only where there is an assistant turn (else has_assistant fails)."""
        return not (self.ordered and "assistant" in self.roles) or self.roles[-1] == "assistant"


def parse(text: object) -> list[Message] | None:
    """The conversation in a canonical cell, or None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, list) or _structure_problem(value):
        return None
    return [{"role": m["role"], "content": m["content"]} for m in value]


def inspect(text: object) -> Inspection:
    """Format, roles, empty turns and turn order of one canonical cell."""
    if _is_null(text) or (isinstance(text, str) and not text.strip()):
        return Inspection(missing=True)
    if not isinstance(text, str):
        return Inspection(problem=f"not a list of turns (a {type(text).__name__})")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return Inspection(problem=f"not a JSON list of turns: {_short(text)!r}")
    if not isinstance(value, list):
        return Inspection(problem=f"not a list of turns (a JSON {_json_type(value)})")
    found = _structure_problem(value)
    if found:
        return Inspection(problem=found)
    out = Inspection(roles=[m["role"] for m in value], lengths=[len(m["content"]) for m in value])
    out.unknown_roles = list(dict.fromkeys(r for r in out.roles if r not in ROLES))
    out.empty_turns = [i for i, m in enumerate(value, 1) if not m["content"].strip()]
    if out.ordered:
        out.order = _order_problem(out.roles)
    return out


def _structure_problem(turns: list) -> str:
    for number, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            return f"turn {number} is not an object with role and content ({_short(turn)!r})"
        missing = [key for key in ("role", "content") if key not in turn]
        if missing:
            return f"turn {number} has no {' or '.join(missing)} ({_short(turn)!r})"
        for key in ("role", "content"):
            if not isinstance(turn[key], str):
                return f"turn {number} {key} is not text ({_short(turn[key])!r})"
    return ""


def _order_problem(roles: list[str]) -> str:
    """After an optional first system turn: user, assistant, user, ... ."""
    expected = "user"
    for number, role in enumerate(roles, 1):
        if role == "system":
            if number == 1:
                continue
            return f"turn {number} is a system turn (only the first turn may be)"
        if role != expected:
            before = roles[number - 2] if number > 1 else "system"
            if before == "system":
                return f"turn {number} is {role}; the first turn (after a system turn) is user"
            return f"turn {number} is {role} after {before}; expected {expected}"
        expected = "assistant" if role == "user" else "user"
    return ""


def _json_type(value: object) -> str:
    return {dict: "object", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _short(value: object, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


# --- keys, text and previews -----------------------------------------------------------


def conversation_key(text: object) -> str:
    """Equal keys mean the same conversation: every turn's role and content, case-folded
    with whitespace collapsed. A cell that is not a conversation is keyed by its text."""
    messages = parse(text)
    if messages is None:
        return _normalise(text) if isinstance(text, str) else ""
    if not messages:
        return ""
    return " \x1e ".join(f"{m['role']}\x1f{_normalise(m['content'])}" for m in messages)


def _normalise(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip().casefold()


def strip_cell(text: object) -> object:
    """A canonical cell with each turn's content stripped (not-conversations untouched)."""
    messages = parse(text)
    if messages is None:
        return text
    return dumps([{"role": m["role"], "content": m["content"].strip()} for m in messages])


def contents(text: object) -> list[str]:
    """The texts of a conversation's turns; [] for a cell that is not a conversation."""
    return [m["content"] for m in parse(text) or []]


def as_lines(messages: list[Message]) -> str:
    """'role: content' lines: how a conversation reads without a chat template."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def preview(text: object, width: int = 80) -> str:
    """A conversation on one line ('user: ... | assistant: ...'), cut at ``width``."""
    messages = parse(text)
    if messages is None:
        shown = text if isinstance(text, str) else ""
    else:
        shown = " | ".join(f"{m['role']}: {' '.join(m['content'].split())}" for m in messages)
    return shown if len(shown) <= width else shown[: width - 3] + "..."
