"""The canonical columns of each task type and the mapping of raw rows onto them."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

from tunelab.data import chat
from tunelab.errors import DataSchemaError, DataValidationError

# Required columns first; optional ones (text_pair) may be absent.
REQUIRED: dict[str, tuple[str, ...]] = {
    "classification": ("text", "label"),
    "generation": ("prompt", "response"),
    "chat": (chat.COLUMN,),
    "preference": ("prompt", "chosen", "rejected"),
    # Prompts a policy answers during reinforcement learning (GRPO); the answers are generated.
    "prompts": ("prompt",),
}
OPTIONAL: dict[str, tuple[str, ...]] = {"classification": ("text_pair",)}

# Column holding the 1-based row number in the source, used to point at bad rows.
SOURCE_ROW = "source_row"

_SPACES = re.compile(r"\s+")


def columns_for(task: str, frame: pd.DataFrame | None = None) -> list[str]:
    """Canonical columns of a task, with optional ones only where the frame has them."""
    optional = [c for c in OPTIONAL.get(task, ()) if frame is None or c in frame.columns]
    return [*REQUIRED[task], *optional]


def text_columns(task: str, frame: pd.DataFrame | None = None) -> list[str]:
    """Free-text columns (everything but the label)."""
    return [c for c in columns_for(task, frame) if c != "label"]


def key_column(task: str) -> str:
    """The column whose normalised text identifies an example for duplicate/leakage checks."""
    return {"classification": "text", "chat": chat.COLUMN}.get(task, "prompt")


def normalise_text(value: object) -> object:
    """NFC, trimmed: how texts are stored. Non-strings (nulls) pass through for the gate."""
    if not isinstance(value, str):
        return value
    return unicodedata.normalize("NFC", value).strip()


def normalise_key(value: object) -> str:
    """NFC, case-folded, whitespace collapsed: equal keys mean the same example."""
    if not isinstance(value, str):
        return ""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", value)).strip().casefold()


def example_keys(frame: pd.DataFrame, task: str) -> pd.Series:
    """Normalised identity of each row (text plus text_pair for sentence-pair tasks; the
    whole conversation, turn by turn, for chat)."""
    if task == "chat":
        return frame[chat.COLUMN].map(chat.conversation_key).astype(object)
    keys = frame[key_column(task)].map(normalise_key)
    if task == "classification" and "text_pair" in frame.columns:
        keys = keys + " \x1f " + frame["text_pair"].map(normalise_key)
    return keys


def to_canonical(
    frame: pd.DataFrame,
    task: str,
    columns: dict[str, str],
    where: str,
    split_columns: dict[str, str] | None = None,
    chat_format: str = "auto",
    chat_roles: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Rename mapped columns, check the required ones exist, keep only canonical columns.

    ``split_columns`` are this split's own renames (data.split_columns), applied before
    ``columns``. ``where`` names the file or split for error messages. Chat cells become
    canonical JSON text (``chat.canonical_cell`` with data.chat's format and roles).
    """
    renames = column_renames(list(frame.columns), columns, split_columns or {}, where)
    out = frame.rename(columns=renames)
    missing = [c for c in REQUIRED[task] if c not in out.columns]
    if missing:
        raise DataSchemaError(
            f"{where}: missing required column(s) {missing} for a {task} dataset "
            f"(found {list(frame.columns)}). Rename them in the file or map them in the "
            f"config, e.g. data.columns: {{{_likely_source(task, out)}: {missing[0]}}}."
        )
    keep = columns_for(task, out)
    result = out[keep].copy()
    if task == "chat":
        result[chat.COLUMN] = (
            result[chat.COLUMN].map(lambda v: chat.canonical_cell(v, chat_format, chat_roles))
        ).astype(object)
        result[SOURCE_ROW] = range(1, len(result) + 1)
        return result
    for col in keep:
        # Labels are strings (ints from the hub become "0", "1"); nulls stay null for the gate.
        result[col] = result[col].map(lambda v: v if _is_null(v) else str(v)).astype(object)
        result[col] = result[col].map(normalise_text)
    result[SOURCE_ROW] = range(1, len(result) + 1)
    return result


def _likely_source(task: str, frame: pd.DataFrame) -> str:
    """The column a missing canonical one most likely is, for the error's example."""
    if task == "chat":
        for name in ("conversations", "conversation", "dialog", "chat", "turns"):
            if name in frame.columns:
                return name
    return str(frame.columns[0]) if len(frame.columns) else "src"


def column_renames(
    found: list[str], columns: dict[str, str], split_columns: dict[str, str], where: str
) -> dict[str, str]:
    """One simultaneous rename: the split's own map, then data.columns on the result.

    A data.columns entry whose target the split's map already gives is skipped there, so
    ``columns: {summary: response}`` with ``split_columns: {test: {summary1: response}}``
    works for a test file without a summary column.
    """
    unknown = [src for src in split_columns if src not in found]
    if unknown:
        raise DataSchemaError(
            f"{where}: data.split_columns maps {unknown} but the data has no such column. "
            f"Columns found: {found}."
        )
    general = {s: t for s, t in columns.items() if t not in split_columns.values()}
    after_split = [split_columns.get(c, c) for c in found]
    missing_sources = [src for src in general if src not in after_split]
    if missing_sources:
        raise DataSchemaError(
            f"{where}: data.columns maps {missing_sources} but the data has no such column. "
            f"Columns found: {found}."
        )
    final = {c: general.get(split_columns.get(c, c), split_columns.get(c, c)) for c in found}
    by_target: dict[str, list[str]] = {}
    for src, target in final.items():
        by_target.setdefault(target, []).append(src)
    for target, srcs in by_target.items():
        if len(srcs) > 1:
            raise DataSchemaError(_collision_message(where, target, srcs))
    return {src: target for src, target in final.items() if src != target}


def _collision_message(where: str, target: str, srcs: list[str]) -> str:
    renamed = [s for s in srcs if s != target]
    if len(renamed) == len(srcs):
        return (
            f"{where}: columns {srcs} are all mapped to '{target}' (data.columns / "
            f"data.split_columns); a column can come from only one. Map just one of them to "
            f"'{target}'."
        )
    moved = ", ".join(f"{s}: {target}" for s in renamed)
    return (
        f"{where}: the mapping {{{moved}}} renames {renamed} to '{target}', but the data "
        f"already has a '{target}' column, so there would be two. Drop the existing "
        f"'{target}' column from the data, or map it elsewhere too (renames apply together), "
        f"e.g. data.columns: {{{target}: {target}_original, {moved}}}."
    )


def require_declared_labels(
    frames: dict[str, pd.DataFrame], labels: list[str] | None, origin: str
) -> None:
    """Name labels outside data.labels before splitting, where a rare one would otherwise
    surface as a split problem."""
    if not labels:
        return
    allowed = set(labels)
    seen: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for split, frame in frames.items():
        # Blank labels are left to the gate's null checks (and data.clean.drop_empty).
        present = frame["label"].notna() & (frame["label"].astype(str).str.strip() != "")
        undeclared = frame[present & ~frame["label"].isin(allowed)]
        for label, rows in undeclared.groupby("label", sort=False):
            seen.setdefault(str(label), []).append((split, rows))
    if not seen:
        return
    parts = []
    for label, hits in sorted(seen.items(), key=lambda item: -sum(len(r) for _, r in item[1])):
        count = sum(len(rows) for _, rows in hits)
        split, rows = hits[0]
        first = rows.iloc[0]
        place = "" if split == "all" else f"{split} "
        parts.append(
            f"'{label}' ({count} row{'s' if count != 1 else ''}, e.g. {place}row "
            f"{first[SOURCE_ROW]}: {_example(first)})"
        )
    hint = ""
    if not any(frame["label"].isin(allowed).any() for frame in frames.values()):
        # Nothing matches: likely the wrong column (e.g. ids where names were declared).
        hint = (
            " No row has a declared label: if another column holds the label names, map "
            "that one, e.g. data.columns: {label: label_id, label_text: label}."
        )
    raise DataValidationError(
        f"{origin}: label(s) outside data.labels [{', '.join(labels)}]: {'; '.join(parts)}. "
        "Add them to data.labels if they are real classes, or relabel or remove those rows "
        f"in the source.{hint}"
    )


def _example(row: pd.Series, width: int = 60) -> str:
    text = row.get("text")
    text = "" if _is_null(text) else str(text)
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _is_null(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
