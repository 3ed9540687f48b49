"""A run folder: where a training run lives, the files in it and the record of it, and
the fingerprint of everything its result depends on, which names it.

One definition for every stage: training writes these files, scoring reads them, the
lifecycle layer logs them, the review shows them. Nothing here imports torch or the
orchestrator; MLflow only to pin the registered rewards of a GRPO run (train/rewards.py).
"""

from __future__ import annotations

import importlib.util
import json
import platform
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig, digest
from tunelab.errors import TrainingError
from tunelab.files import write_json_atomic
from tunelab.models.resolution import file_digest, weights_id
from tunelab.workspace import Workspace

RESULT_FILE = "train_result.json"
SCORECARD_FILE = "scorecard.json"
PREDICTIONS_FILE = "predictions.parquet"
CONFUSION_FILE = "confusion_matrix.png"
PROMPT_EXAMPLE_FILE = "prompt_example.txt"
# The column that holds a model's input, in the order looked for: classification text,
# generation input, preference prompt.
INPUT_COLUMNS = ("text", "input", "prompt")
# Libraries a run's result depends on: recorded with every run, part of its fingerprint.
LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "numpy",
    "scipy",
    "scikit-learn",
    "rouge-score",
    "sacrebleu",
)
PACKAGE_ROOT = Path(__file__).resolve().parent


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
    # The MLflow run that followed training live (tunelab.lifecycle.live); the run is
    # logged into it after evaluation. None when training was not tracked.
    mlflow_run_id: str | None = None

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
        result = cls(**read_record(folder, RESULT_FILE, missing))
        # A run folder fetched from the team store (or moved) is where it was loaded from.
        if Path(result.output_dir).resolve() != Path(folder).resolve():
            result.output_dir = str(Path(folder).resolve())
        return result


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
    """The run's fingerprint, short: a rerun of the same run finds its folder (and resumes
    it if it was cut off); anything that changes the result gets a new folder."""
    return fingerprint(cfg, data_version)[:10]


def is_finished(folder: str | Path) -> bool:
    """Whether a run folder holds a completed run (its train_result.json)."""
    return (Path(folder) / RESULT_FILE).is_file()


def run_dir(cfg: RunConfig, workspace: Workspace, data_version: str | None) -> Path:
    """runs/<dataset>/<method>-<model>-<key>/ in the workspace."""
    name = f"{method_label(cfg)}-{model_label(cfg)}-{run_key(cfg, data_version)}"
    return workspace.root / "runs" / cfg.data.name / name


# ---------------------------------------------------------------- what a result depends on


def fingerprint(cfg: RunConfig, data_version: str | None, code: str | None = None) -> str:
    """Hash of everything a training run's result depends on: the data, model and train
    config, the data version, the code, the library versions and the weights it starts
    from. It names the run folder and keys the cached train step, so whatever recomputes
    one also changes the other. ``code`` is a code_version() computed earlier."""
    config = cfg.model_dump(mode="json")
    _unplace(config["train"])
    payload = {
        "config": {section: config[section] for section in ("data", "model", "train")},
        "data_version": data_version,
        "code": code or code_version(),
        "libraries": library_versions(),
        "starts_from": starting_point(cfg),
    }
    return digest(payload, length=20)


def _unplace(train: dict) -> None:
    """Drop the places of the run folders a run starts from (a policy's init_from, a GRPO
    reward model): their contents are pinned in starting_point, and a folder fetched into
    another worker's workspace (tunelab.pipeline.exchange) must key the same run."""
    for section in ("dpo", "grpo"):
        start = (train.get(section) or {}).get("init_from")
        if start and Path(start).is_absolute():
            train[section]["init_from"] = "(run folder, pinned by its record)"
    for reward in (train.get("grpo") or {}).get("rewards") or []:
        if reward.get("model") and Path(reward["model"]).is_absolute():
            reward["model"] = "(run folder, pinned by its record)"


def starting_point(cfg: RunConfig, rewards: bool = True) -> dict[str, Any]:
    """What pins the weights a run starts from: the model (none for the sklearn
    baselines), the run a DPO or GRPO init_from names, a train.resume_from checkpoint;
    with ``rewards``, what a GRPO policy is rewarded by (registered versions resolved
    in the MLflow registry, so a moved alias trains anew)."""
    t = cfg.train
    found = {}
    start = t.policy_init_from
    if start:
        found["init_from"] = _folder_id(Path(start).expanduser(), RESULT_FILE)
    elif model_label(cfg) != "sklearn":
        found["model"] = weights_id(cfg.model.name, cfg.model.revision)
    if t.resume_from:
        found["resume_from"] = _folder_id(Path(t.resume_from).expanduser(), "trainer_state.json")
    if rewards and t.method == "grpo":
        from tunelab.train import rewards as reward_sources

        found["rewards"] = reward_sources.pins(cfg)
    return found


def _folder_id(folder: Path, record: str) -> str:
    """A run or checkpoint folder by the record it writes last (a rerun rewrites it);
    any other folder by its files."""
    try:
        if (folder / record).is_file():
            return f"{record}:{file_digest(folder / record)}"
    except OSError:
        pass
    return weights_id(str(folder))


def code_version() -> str:
    """Hash of the code that runs: the Python files of tunelab and of the flows package."""
    return digest(
        [
            [f"{folder.name}/{path.relative_to(folder).as_posix()}", file_digest(path)]
            for folder in code_folders()
            for path in sorted(folder.rglob("*.py"))
        ]
    )


def code_folders() -> list[Path]:
    """tunelab's package folder and the flows package's (found, not imported: flows
    import Prefect)."""
    folders = [PACKAGE_ROOT]
    try:
        spec = importlib.util.find_spec("flows")
    except (ImportError, ValueError):
        spec = None
    folders += [Path(p) for p in (spec.submodule_search_locations or [])[:1]] if spec else []
    return folders


def library_versions() -> dict[str, str]:
    """Python's version and those of the installed LIBRARIES."""
    return dict(_library_versions())


@cache
def _library_versions() -> dict[str, str]:
    # Looked up once: a running process keeps the libraries it imported.
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
