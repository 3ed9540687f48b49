"""The canonical columns of each task type and the mapping of raw rows onto them."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

from tunelab.errors import DataSchemaError

# Required columns first; optional ones (text_pair) may be absent.
REQUIRED: dict[str, tuple[str, ...]] = {
    "classification": ("text", "label"),
    "generation": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
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
    return "text" if task == "classification" else "prompt"


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
    """Normalised identity of each row (text plus text_pair for sentence-pair tasks)."""
    keys = frame[key_column(task)].map(normalise_key)
    if task == "classification" and "text_pair" in frame.columns:
        keys = keys + " \x1f " + frame["text_pair"].map(normalise_key)
    return keys


def to_canonical(
    frame: pd.DataFrame, task: str, columns: dict[str, str], where: str
) -> pd.DataFrame:
    """Rename mapped columns, check the required ones exist, keep only canonical columns.

    ``where`` names the file or split for error messages.
    """
    missing_sources = [src for src in columns if src not in frame.columns]
    if missing_sources:
        raise DataSchemaError(
            f"{where}: data.columns maps {missing_sources} but the data has no such column. "
            f"Columns found: {list(frame.columns)}."
        )
    out = frame.rename(columns=columns)
    missing = [c for c in REQUIRED[task] if c not in out.columns]
    if missing:
        raise DataSchemaError(
            f"{where}: missing required column(s) {missing} for a {task} dataset "
            f"(found {list(frame.columns)}). Rename them in the file or map them in the "
            f"config, e.g. data.columns: {{{frame.columns[0] if len(frame.columns) else 'src'}: "
            f"{missing[0]}}}."
        )
    keep = columns_for(task, out)
    result = out[keep].copy()
    for col in keep:
        # Labels are strings (ints from the hub become "0", "1"); nulls stay null for the gate.
        result[col] = result[col].map(lambda v: v if _is_null(v) else str(v)).astype(object)
        result[col] = result[col].map(normalise_text)
    result[SOURCE_ROW] = range(1, len(result) + 1)
    return result


def _is_null(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
