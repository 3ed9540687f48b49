"""The recorded cleaning policy (``data.clean``): drop what the gate would fail on, and
say which rows went and why.

Pure pandas, applied to the splits before the gate. Empty means what the gate's null and
blank checks mean (a missing value or no visible character in a canonical column); the
duplicate and leak keys are the gate's own (``schema.example_keys``), so what cleaning
removes is exactly what the duplicate and leakage checks would have counted. With the
policy off (the default) the splits pass through untouched.

Chat data (one ``messages`` conversation per row): strip trims every turn's text,
drop_empty drops conversations with no turns or with a turn that has no visible text,
and duplicates and leaks compare whole conversations turn by turn. A row that is not a
conversation at all is never dropped: the gate names it, to be fixed in the source.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import pandas as pd

from tunelab.config import CleanConfig
from tunelab.data import chat
from tunelab.data.schema import SOURCE_ROW, columns_for, example_keys, key_column

REASONS = ("empty", "duplicate", "leaked")
TEXT_CHARS = 80  # of a dropped row's text kept in the listing
TRAIN = "train"  # the only split drop_leaked shrinks; held-out splits stay whole
_VISIBLE = re.compile(r"\S")  # the gate's blank check


@dataclass
class DroppedRow:
    """One row the policy removed: where it was, why, and what it said."""

    split: str
    reason: str  # one of REASONS
    text: str  # the key column (text or prompt), cut at TEXT_CHARS
    source_row: int | None
    detail: str = ""


@dataclass
class CleaningRecord:
    """What the policy did to one dataset's splits."""

    policy: dict
    rows_before: dict[str, int]
    rows_after: dict[str, int]
    stripped: dict[str, int] = field(default_factory=dict)  # cells changed, per split
    dropped: list[DroppedRow] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return any(bool(v) for v in self.policy.values())

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> reason -> rows dropped, for every split (zeros included)."""
        out = {name: dict.fromkeys(REASONS, 0) for name in self.rows_before}
        for row in self.dropped:
            out[row.split][row.reason] += 1
        return out

    def summary(self) -> dict:
        """The policy and the counts: what a version record keeps."""
        return {
            "policy": dict(self.policy),
            "rows_before": dict(self.rows_before),
            "rows_after": dict(self.rows_after),
            "stripped": dict(self.stripped),
            "dropped": self.counts(),
            "dropped_total": len(self.dropped),
        }

    def to_dict(self) -> dict:
        """The summary plus every dropped row."""
        return self.summary() | {"rows": [asdict(row) for row in self.dropped]}


@dataclass
class CleanedSplits:
    """The splits the gate validates, with the record of how they were cleaned."""

    frames: dict[str, pd.DataFrame]
    cleaning: CleaningRecord


def clean_splits(frames: dict[str, pd.DataFrame], task: str, policy: CleanConfig) -> CleanedSplits:
    """Apply the policy: strip, drop empty rows, duplicates within a split, then train rows
    whose key is also in another split. Deterministic: row order is kept."""
    before = {name: int(len(frame)) for name, frame in frames.items()}
    record = CleaningRecord(policy.model_dump(mode="json"), before, dict(before))
    if not record.active:
        return CleanedSplits(dict(frames), record)

    out = dict(frames)
    if policy.strip:
        for name, frame in out.items():
            out[name], record.stripped[name] = _strip(frame, task)
    if policy.drop_empty:
        for name, frame in out.items():
            empty = _empty_columns(frame, task)
            out[name] = _drop(frame, name, empty.ne(""), "empty", task, record, empty)
    if policy.drop_duplicates:
        for name, frame in out.items():
            out[name] = _drop_repeats(frame, name, task, record)
    if policy.drop_leaked == TRAIN and TRAIN in out:
        out[TRAIN] = _drop_leaked(out, task, record)
    record.rows_after = {name: int(len(frame)) for name, frame in out.items()}
    return CleanedSplits(out, record)


def _drop_repeats(frame: pd.DataFrame, name: str, task: str, record) -> pd.DataFrame:
    """Rows whose key repeats an earlier row of the same split; the first copy stays."""
    keys = _keys(frame, task)
    repeats = keys.duplicated(keep="first") & keys.ne("")
    first = _first_rows(frame, keys)
    detail = keys.map(
        lambda k: f"repeats {name} row {first[k]}" if first.get(k) else "repeats an earlier row"
    )
    return _drop(frame, name, repeats, "duplicate", task, record, detail)


def _drop_leaked(frames: dict[str, pd.DataFrame], task: str, record) -> pd.DataFrame:
    """Train rows whose key is also in another split; the other splits are not touched."""
    elsewhere: dict[str, str] = {}
    for name, frame in frames.items():
        if name != TRAIN:
            for key in _keys(frame, task):
                if key:
                    elsewhere.setdefault(key, name)
    train = frames[TRAIN]
    keys = _keys(train, task)
    leaked = keys.map(lambda k: k in elsewhere).astype(bool) & keys.ne("")
    detail = keys.map(lambda k: f"also in {elsewhere.get(k, '?')}")
    return _drop(train, TRAIN, leaked, "leaked", task, record, detail)


def _strip(frame: pd.DataFrame, task: str) -> tuple[pd.DataFrame, int]:
    changed = 0
    out = frame
    strip = chat.strip_cell if task == "chat" else _strip_text
    for col in (c for c in columns_for(task, frame) if c in frame.columns):
        stripped = frame[col].map(strip)
        diff = int((stripped.ne(frame[col]) & frame[col].map(lambda v: isinstance(v, str))).sum())
        if diff:
            out = out.copy() if out is frame else out
            out[col] = stripped.astype(object)
            changed += diff
    return out, changed


def _strip_text(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _empty_columns(frame: pd.DataFrame, task: str) -> pd.Series:
    """Per row, 'empty <columns>' naming what the gate's null/blank checks would fail
    (for chat also its empty-turn check: 'empty conversation', 'empty turns 2, 4')."""
    if task == "chat" and chat.COLUMN in frame.columns:
        return frame[chat.COLUMN].map(_empty_conversation).astype(object)
    parts = [
        frame[col].map(lambda v, c=col: c if _is_empty(v) else "")
        for col in columns_for(task, frame)
        if col in frame.columns
    ]
    if not parts or not len(frame):
        return pd.Series("", index=frame.index, dtype=object)
    named = pd.concat(parts, axis=1).apply(lambda r: ", ".join(v for v in r if v), axis=1)
    return named.map(lambda s: f"empty {s}" if s else "").astype(object)


def _empty_conversation(value: object) -> str:
    if _is_empty(value):
        return f"empty {chat.COLUMN}"
    found = chat.inspect(value)
    if not found.empty:
        return ""
    if not found.roles:
        return "empty conversation (no turns)"
    numbers = ", ".join(str(n) for n in found.empty_turns)
    return f"empty turn{'s' if len(found.empty_turns) > 1 else ''} {numbers}"


def _is_empty(value: object) -> bool:
    """Null, or no visible character once read as text (the gate stringifies numbers)."""
    if value is None or value is pd.NA:
        return True
    if not isinstance(value, str):
        try:
            if bool(pd.isna(value)):
                return True
        except (TypeError, ValueError):
            pass
        value = str(value)
    return _VISIBLE.search(value) is None


def _keys(frame: pd.DataFrame, task: str) -> pd.Series:
    if key_column(task) not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    return example_keys(frame, task)


def _first_rows(frame: pd.DataFrame, keys: pd.Series) -> dict[str, object]:
    rows = _source_rows(frame)
    firsts = ~keys.duplicated(keep="first")
    return dict(zip(keys[firsts], rows[firsts], strict=True))


def _source_rows(frame: pd.DataFrame) -> pd.Series:
    """Each row's source row as a plain int, or None where the source gave none."""
    values = (
        [None if pd.isna(v) else int(v) for v in frame[SOURCE_ROW]]
        if SOURCE_ROW in frame.columns
        else [None] * len(frame)
    )
    return pd.Series(values, index=frame.index, dtype=object)


def _drop(frame, split, mask, reason, task, record, detail) -> pd.DataFrame:
    if not mask.any():
        return frame
    column = key_column(task)
    texts = frame[column] if column in frame.columns else pd.Series("", index=frame.index)
    if task == "chat":
        texts = texts.map(lambda v: chat.preview(v, TEXT_CHARS))
    rows = _source_rows(frame)
    for index in frame.index[mask.to_numpy()]:
        record.dropped.append(
            DroppedRow(split, reason, _cut(texts[index]), rows[index], str(detail[index]))
        )
    return frame[~mask].reset_index(drop=True)


def _cut(value: object) -> str:
    text = value if isinstance(value, str) else ""
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 3] + "..."
