"""Read a dataset from where the config says: a bundled sample, the Hugging Face hub or files.

The result is raw frames keyed by split name ("all" when the source has no splits),
mapped to the task's canonical columns.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from tunelab.config import DataConfig
from tunelab.data.schema import SOURCE_ROW, require_declared_labels, to_canonical
from tunelab.errors import DataSchemaError, DataSourceError, SourceUnreachableError
from tunelab.models.resolution import file_digest

# Bundled samples written for tunelab, shipped as package data (samples/NAME.jsonl).
BUNDLED: dict[str, dict] = {
    "sentiment": {
        "task": "classification",
        "labels": ["negative", "neutral", "positive"],
        "about": "short reviews and posts labelled negative / neutral / positive",
    },
    "preferences": {
        "task": "preference",
        "labels": None,
        "about": "prompt / chosen / rejected triples across many topics",
    },
    "instructions": {
        "task": "generation",
        "labels": None,
        "about": "prompt / response pairs: short summaries and short instructions",
    },
    "chat": {
        "task": "chat",
        "labels": None,
        "about": "multi-turn conversations (OpenAI messages) with a concise assistant for "
        "everyday practical questions",
        # What `tunelab data prepare` with no config uses besides the data section:
        # conversations run longer than one prompt and response.
        "model": {"max_length": 512},
    },
    "prompts": {
        "task": "prompts",
        "labels": None,
        "about": "prompts alone, asking for a short review or description of a product, "
        "place, service, film, book or app, for a policy to answer in GRPO",
    },
}

SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
# File stems accepted as split names, and what they mean.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
WHOLE = "all"


@dataclass
class RawDataset:
    """Canonical frames keyed by split ('all' = not split yet) and where they came from."""

    frames: dict[str, pd.DataFrame]
    origin: str
    details: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(len(f) for f in self.frames.values())


def ingest(cfg: DataConfig) -> RawDataset:
    """Read the configured source, map it to canonical columns, check declared labels and
    cap it at max_rows when that is one number."""
    raw = read_source(cfg)
    _require_split_columns_match(raw, cfg.split_columns)
    canonical = {
        split: to_canonical(
            frame,
            cfg.task,
            cfg.columns,
            where=f"{raw.origin} [{split}]",
            split_columns=cfg.split_columns.get(split),
            chat_format=cfg.chat.format,
            chat_roles=cfg.chat.roles,
        )
        for split, frame in raw.frames.items()
    }
    if cfg.task == "classification":
        require_declared_labels(canonical, cfg.labels, raw.origin)
    # A per-split cap ({train: N}) waits for the split (splits.make_splits) so the
    # held-out splits stay whole; one number caps the whole data set here.
    cap = cfg.max_rows
    if isinstance(cap, int) and sum(len(f) for f in canonical.values()) > cap:
        canonical = _cap_rows(canonical, cap, cfg.seed)
    return RawDataset(canonical, raw.origin, raw.details)


def _require_split_columns_match(raw: RawDataset, split_columns: dict[str, dict]) -> None:
    named = sorted(split for split, renames in split_columns.items() if renames)
    if set(raw.frames) == {WHOLE} and named:
        raise DataSchemaError(
            f"{raw.origin}: data.split_columns names split(s) {named}, but the source is one "
            "data set not split yet, so its columns are the same for every split. Use "
            "data.columns instead."
        )
    absent = [split for split in named if split not in raw.frames]
    if absent:
        raise DataSchemaError(
            f"{raw.origin}: data.split_columns names split(s) {absent} that the source does "
            f"not have (it has {list(raw.frames)}). Remove them or name a split it has."
        )


def read_source(cfg: DataConfig) -> RawDataset:
    """Raw frames as the source has them (columns not yet mapped)."""
    source = cfg.source.strip()
    if source.startswith("bundled:"):
        raw = read_bundled(source.removeprefix("bundled:"))
    elif source.startswith("hf:"):
        raw = read_hub(source.removeprefix("hf:"), cfg.hf_config, cfg.hf_revision)
    else:
        raw = read_path(Path(source.removeprefix("file:")).expanduser())
    return _select_splits(raw, cfg.source_splits)


def source_identity(cfg: DataConfig) -> str | None:
    """What pins the bytes a source gives, known without reading it: a bundled sample's or
    a local file's content hash (a folder's: its data files'), a hub dataset's commit
    when data.hf_revision pins one. None when only reading it would tell (a hub branch or
    tag, a missing path): then whoever asks must read it."""
    source = cfg.source.strip()
    if source.startswith("bundled:"):
        name = source.removeprefix("bundled:")
        if name not in BUNDLED:
            return None
        resource = resources.files("tunelab.data").joinpath("samples", f"{name}.jsonl")
        with resources.as_file(resource) as path:
            return f"{source} {file_digest(path)}"
    if source.startswith("hf:"):
        pinned = cfg.hf_revision and re.fullmatch(r"[0-9a-f]{40}", cfg.hf_revision)
        return f"{source}@{cfg.hf_revision} config={cfg.hf_config}" if pinned else None
    path = Path(source.removeprefix("file:")).expanduser()
    try:
        if path.is_file():
            return f"file {file_digest(path)}"
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)
            return "folder " + " ".join(f"{p.name}={file_digest(p)}" for p in files)
    except OSError:
        return None
    return None


def read_bundled(name: str) -> RawDataset:
    if name not in BUNDLED:
        raise DataSourceError(
            f"Unknown bundled dataset '{name}'. Bundled datasets: {', '.join(BUNDLED)}. "
            "For your own data, set data.source to a CSV/JSONL/Parquet path or 'hf:ORG/NAME'."
        )
    resource = resources.files("tunelab.data").joinpath("samples", f"{name}.jsonl")
    with resources.as_file(resource) as path:
        frame = read_file(path)
    return RawDataset({WHOLE: frame}, f"bundled:{name}", {"about": BUNDLED[name]["about"]})


def read_hub(dataset_id: str, config_name: str | None, revision: str | None) -> RawDataset:
    """Load every split of a hub dataset with `datasets.load_dataset`."""
    import datasets

    hint = (
        "If this machine cannot reach the hub, download the dataset where you can "
        "(e.g. `datasets.load_dataset(...)['train'].to_parquet('train.parquet')`, one file per "
        "split) and set data.source to that file or folder."
    )
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        # Offline mode still finds a cached copy; the message says why it may not.
        hint = "Offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). " + hint
    try:
        loaded = datasets.load_dataset(dataset_id, config_name, revision=revision)
    except Exception as exc:  # datasets raises many types: offline, not found, bad config
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # A wrong id or config will not get better on retry; a network failure may.
        permanent = isinstance(exc, datasets.exceptions.DatasetNotFoundError | ValueError)
        raise (DataSourceError if permanent else SourceUnreachableError)(
            f"Could not load hub dataset '{dataset_id}'"
            f"{f' (config {config_name})' if config_name else ''}: {message}. "
            f"Check the id and config name; the hub may be unreachable from here. {hint}"
        ) from None
    frames = {split: ds.to_pandas() for split, ds in loaded.items()}
    return RawDataset(frames, f"hf:{dataset_id}", {"config": config_name, "revision": revision})


def read_path(path: Path) -> RawDataset:
    """One file (not split yet) or a folder with one file per split."""
    if not path.exists():
        raise DataSourceError(
            f"Data source {path} does not exist. Set data.source to an existing CSV, JSONL or "
            f"Parquet file or folder, 'bundled:NAME' ({', '.join(BUNDLED)}) or 'hf:ORG/NAME'."
        )
    if path.is_file():
        return RawDataset({WHOLE: read_file(path)}, str(path))
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise DataSourceError(
            f"Folder {path} holds no {'/'.join(SUPPORTED_SUFFIXES)} files. Put one file per "
            "split (train.csv, validation.csv, test.csv) or a single file there."
        )
    if len(files) == 1:
        return RawDataset({WHOLE: read_file(files[0])}, str(files[0]))
    frames: dict[str, pd.DataFrame] = {}
    for file in files:
        frames[file.stem] = read_file(file)
    return RawDataset(frames, str(path))


def read_file(path: Path) -> pd.DataFrame:
    """Read one CSV/JSONL/JSON/Parquet file, turning library errors into clear ones."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataSourceError(
            f"{path}: unsupported file type '{suffix}'. Use one of {', '.join(SUPPORTED_SUFFIXES)}."
        )
    text = _read_utf8(path)
    if suffix == ".csv":
        return _parse_csv(text, path)
    return _parse_json_lines(text, path) if suffix == ".jsonl" else _parse_json(text, path)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataSourceError(
            f"{path}: line {line} holds bytes that are not UTF-8 (byte {exc.start}: "
            f"{data[exc.start : exc.start + 1]!r}). Re-save the file as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`."
        ) from None


def _parse_csv(text: str, path: Path) -> pd.DataFrame:
    try:
        # Cells stay strings; an empty cell is "" so the gate reports it as empty text.
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataSourceError(f"{path}: the file is empty. Add a header row and data.") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataSourceError(
            f"{path}: not a readable CSV ({str(exc).strip()}). Check quoting and that every "
            "row has as many fields as the header."
        ) from None
    if frame.empty:
        raise DataSourceError(f"{path}: the CSV has a header but no rows.")
    return frame


def _parse_json_lines(text: str, path: Path) -> pd.DataFrame:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataSourceError(
                f"{path}: line {number} is not valid JSON ({exc.msg}). Each line must be one "
                "JSON object."
            ) from None
        if not isinstance(record, dict):
            raise DataSourceError(f"{path}: line {number} is not a JSON object.")
        records.append(record)
    if not records:
        raise DataSourceError(f"{path}: no rows found. Each line must be one JSON object.")
    return pd.DataFrame.from_records(records)


def _parse_json(text: str, path: Path) -> pd.DataFrame:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataSourceError(
            f"{path}: not valid JSON at line {exc.lineno} ({exc.msg}). Use a JSON list of "
            "objects, or JSON Lines (.jsonl)."
        ) from None
    if not (isinstance(data, list) and data and all(isinstance(r, dict) for r in data)):
        raise DataSourceError(f"{path}: expected a non-empty JSON list of objects.")
    return pd.DataFrame.from_records(data)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise DataSourceError(
            f"{path}: not a readable Parquet file ({exc}). The file may be truncated or "
            "another format with a .parquet name; re-export it."
        ) from None


def _select_splits(raw: RawDataset, mapping: dict[str, str]) -> RawDataset:
    """Name splits train/validation/test, from data.source_splits or the usual aliases."""
    if set(raw.frames) == {WHOLE}:
        return raw
    if mapping:
        unknown = [ours for ours in mapping if ours not in ("train", "validation", "test")]
        missing = [theirs for theirs in mapping.values() if theirs not in raw.frames]
        if unknown or missing:
            raise DataSourceError(
                f"{raw.origin}: data.source_splits is wrong: "
                + (f"keys must be train/validation/test, got {unknown}. " if unknown else "")
                + (
                    f"no source split named {missing}; it has {list(raw.frames)}."
                    if missing
                    else ""
                )
            )
        frames = {ours: raw.frames[theirs] for ours, theirs in mapping.items()}
    else:
        frames = {}
        for name, frame in raw.frames.items():
            ours = SPLIT_ALIASES.get(name.lower())
            if ours is None:
                raise DataSourceError(
                    f"{raw.origin}: cannot tell which split '{name}' is. Name files "
                    "train/validation/test, or map them with data.source_splits, "
                    f"e.g. {{train: {name}}}."
                )
            if ours in frames:
                raise DataSourceError(f"{raw.origin}: two sources for the {ours} split.")
            frames[ours] = frame
    if "train" not in frames:
        if len(frames) == 1:  # a single named split: treat it as the whole dataset
            return RawDataset({WHOLE: next(iter(frames.values()))}, raw.origin, raw.details)
        raise DataSourceError(
            f"{raw.origin}: no train split among {list(frames)}. Map one with "
            "data.source_splits: {train: NAME}."
        )
    return RawDataset(frames, raw.origin, raw.details)


def _cap_rows(frames: dict[str, pd.DataFrame], max_rows: int, seed: int) -> dict[str, pd.DataFrame]:
    """Sample every split by the same fraction so the cap keeps the split proportions."""
    total = sum(len(f) for f in frames.values())
    capped = {}
    for split, frame in frames.items():
        n = max(1, round(len(frame) * max_rows / total))
        capped[split] = frame.sample(n=min(n, len(frame)), random_state=seed).sort_values(
            SOURCE_ROW
        )
    return capped
