"""A run folder: where a training run lives, the files in it and the record of it.

One definition for every stage: training writes these files, scoring reads them, the
lifecycle layer logs them, the review shows them. Nothing here imports torch, MLflow or
the orchestrator.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelab.config import RunConfig, digest
from tunelab.errors import TrainingError
from tunelab.files import write_json_atomic
from tunelab.workspace import Workspace

RESULT_FILE = "train_result.json"
SCORECARD_FILE = "scorecard.json"
PREDICTIONS_FILE = "predictions.parquet"
CONFUSION_FILE = "confusion_matrix.png"
PROMPT_EXAMPLE_FILE = "prompt_example.txt"
# The column that holds a model's input, in the order looked for: classification text,
# generation input, preference prompt.
INPUT_COLUMNS = ("text", "input", "prompt")


def save_record(record, folder: str | Path, name: str) -> Path:
    """Write a dataclass record as one JSON file of a run folder (atomically)."""
    return write_json_atomic(Path(folder) / name, asdict(record))


def read_record(folder: str | Path, name: str, missing: Exception) -> dict:
    """The fields of a run folder's JSON record; ``missing`` is raised when it is absent."""
    path = Path(folder) / name
    if not path.is_file():
        raise missing
    return json.loads(path.read_text(encoding="utf-8"))


def input_column(columns) -> str | None:
    """The input column among ``columns`` (see INPUT_COLUMNS), None when there is none."""
    return next((c for c in INPUT_COLUMNS if c in columns), None)


@dataclass
class TrainResult:
    """What a training run produced and what it cost; saved as train_result.json."""

    method: str
    model: str
    dataset: str
    task: str
    output_dir: str
    data_version: str | None = None
    # One row per logging step: {"step", "epoch", "loss"} or {"step", "epoch", "eval_loss"}.
    history: list[dict] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    trainable_params: int = 0
    total_params: int = 0
    wall_seconds: float = 0.0
    # Time inside trainer.train() and the optimizer steps it took (none for baselines).
    train_seconds: float | None = None
    train_steps: int = 0
    # Peak resident memory while trainer.train() ran (peak_rss_mb covers the whole run,
    # evaluation and merge checks included).
    train_peak_rss_mb: float | None = None
    peak_rss_mb: float = 0.0
    cuda_max_allocated_mb: float | None = None
    tokens_per_second: float | None = None
    device: str = "cpu"
    precision: str = "fp32"
    resumed_from: str | None = None
    # Named files the run wrote (model folder, adapter, merged model, plots), relative paths.
    artifacts: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0

    @property
    def folder(self) -> Path:
        return Path(self.output_dir)

    def artifact(self, name: str) -> Path:
        return Path(self.output_dir) / self.artifacts[name]

    def save(self) -> Path:
        return save_record(self, self.output_dir, RESULT_FILE)

    @classmethod
    def load(cls, folder: str | Path) -> TrainResult:
        missing = TrainingError(f"{folder} holds no {RESULT_FILE}: it is not a finished run.")
        return cls(**read_record(folder, RESULT_FILE, missing))


def model_slug(reference: str) -> str:
    """A folder-safe short name for a model reference (alias, path or hub id)."""
    name = Path(reference.rstrip("/")).name if "/" in reference else reference
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).lower()[:40]


def method_label(cfg: RunConfig) -> str:
    """The method as runs and reviews name it: baselines carry their kind."""
    method = cfg.train.method
    return f"baseline-{cfg.train.baseline.kind}" if method == "baseline" else method


def model_label(cfg: RunConfig) -> str:
    """The model part of a run's name; majority and tfidf use no language model."""
    if cfg.train.method == "baseline" and cfg.train.baseline.kind != "prompt":
        return "sklearn"
    return model_slug(cfg.model.name)


def run_name(cfg: RunConfig, data_version: str | None) -> str:
    """`{method}-{model}-{data_version[:8]}`: the MLflow run name of a training run."""
    return f"{method_label(cfg)}-{model_label(cfg)}-{(data_version or 'unversioned')[:8]}"


def run_key(cfg: RunConfig, data_version: str | None) -> str:
    """Same model, training config and data version -> same key -> the same folder to resume."""
    payload = {
        "model": cfg.model.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
        "task": cfg.data.task,
        "labels": cfg.data.labels,
        "data_version": data_version,
    }
    return digest(payload, length=10)


def run_dir(cfg: RunConfig, workspace: Workspace, data_version: str | None) -> Path:
    """runs/<dataset>/<method>-<model>-<key>/ in the workspace."""
    name = f"{method_label(cfg)}-{model_label(cfg)}-{run_key(cfg, data_version)}"
    return workspace.root / "runs" / cfg.data.name / name
