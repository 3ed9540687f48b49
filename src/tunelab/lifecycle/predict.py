"""Predict with a registered model: ``NAME@ALIAS`` (or ``NAME/VERSION``), resolved in the
registry and loaded by tunelab's own loaders (``packaging.load_registered``), which read
the model's files as data: no code stored with the model runs. What `tunelab predict` runs.

Merged models and adapter packages alike; a chat model takes a user message or a JSON
conversation (a list of {"role", "content"} messages, as text) per input and answers with
the next assistant turn."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from tunelab.errors import RegistryError
from tunelab.lifecycle import registry
from tunelab.lifecycle.packaging import LoadedModel, load_registered
from tunelab.lifecycle.tracking import Tracking, call

REFERENCE = re.compile(r"^(?P<name>[^@/\s]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")
# The columns of a user's input file looked for, in order: the dataset schema's input
# columns (text, prompt, a chat dataset's messages: JSON conversations) before "input".
# Unlike runs.INPUT_COLUMNS (prediction tables).
FILE_COLUMNS = ("text", "prompt", "messages", "input")


def parse(reference: str) -> tuple[str, str | None, str | None]:
    match = REFERENCE.match(reference.strip())
    if not match:
        raise RegistryError(
            f"'{reference}' is not a model reference. Use NAME@ALIAS (e.g. "
            "sentiment-classifier@champion) or NAME/VERSION (e.g. sentiment-classifier/3)."
        )
    return match["name"], match["alias"], match["version"]


def resolve(tracking: Tracking, reference: str):
    """The registered version a reference names (an MLflow ModelVersion); RegistryError
    listing the models, aliases or versions there are when it names none."""
    name, alias, version = parse(reference)
    known = registry.aliases(tracking, name)  # unknown model -> lists registered models
    if alias is not None:
        if alias not in known:
            listing = ", ".join(f"@{a} (v{v})" for a, v in sorted(known.items())) or "none"
            raise RegistryError(
                f"{name} has no alias '{alias}'. Its aliases: {listing}. See "
                f"`tunelab registry list {name}`."
            )
        version = known[alias]
    return registry.version_info(tracking, name, version)  # unknown version -> lists them


def load(tracking: Tracking, reference: str) -> LoadedModel:
    """Resolve the reference in the registry (clear errors), then load the version safely."""
    mv = resolve(tracking, reference)
    name, version = mv.name, str(mv.version)
    alias = parse(reference)[1]
    uri = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    return call(tracking, f"load {uri}", lambda: load_registered(name, version, uri))


def file_column(frame: pd.DataFrame, column: str | None, where: Path) -> str:
    """The column of a user's file to predict on: ``column``, else the first of FILE_COLUMNS."""
    if column:
        if column not in frame.columns:
            raise RegistryError(
                f"{where} has no column '{column}'. Its columns: {', '.join(frame.columns)}."
            )
        return column
    for candidate in FILE_COLUMNS:
        if candidate in frame.columns:
            return candidate
    raise RegistryError(
        f"{where} has none of the input columns {', '.join(FILE_COLUMNS)} (it has "
        f"{', '.join(map(str, frame.columns))}). Name the column with --column."
    )


def predict_file(
    loaded: LoadedModel,
    source: Path,
    target: Path,
    column: str | None = None,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Read a CSV, add a 'prediction' column, write a CSV; returns the row count.

    The output is written to a temporary file and moved into place at the end, so a
    failure never leaves a half-written output.
    """
    if not source.is_file():
        raise RegistryError(f"Input file {source} does not exist.")
    frame = pd.read_csv(source)
    texts = frame[file_column(frame, column, source)].fillna("").astype(str).tolist()
    predictions: list[str] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        predictions.extend(loaded.predict(chunk))
        if progress:
            progress(len(chunk))
    frame["prediction"] = predictions
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    frame.to_csv(partial, index=False)
    partial.replace(target)
    return len(frame)
