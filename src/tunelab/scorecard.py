"""The scorecard of one finished run: every metric of its test predictions, a bootstrap
interval for the primary metric, and what the training cost (parameters, time, memory,
tokens/s). Saved as scorecard.json in the run folder; the lifecycle layer adds what
serving the model costs (``packaging.measure_serving_costs``: size on disk, latency).

Metrics come from the predictions table the run wrote (``evaluate.table_metrics``), so
every method is scored by the same code on the same frozen test split. Nothing here
imports training, packaging or MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tunelab import evaluate
from tunelab.config import RunConfig
from tunelab.errors import EvaluationError
from tunelab.runs import (
    CONFUSION_FILE,
    PREDICTIONS_FILE,
    SCORECARD_FILE,
    TrainResult,
    method_label,
    read_record,
    save_record,
)
from tunelab.workspace import Workspace

# The metric a task is judged by when the config does not say (eval.primary_metric).
DEFAULT_PRIMARY = {
    "classification": "macro_f1",
    "generation": "rougeL",
    "chat": "rougeL",
    "preference": "reward_accuracy",
    "prompts": "reward",
}


@dataclass
class Scorecard:
    dataset: str
    method: str
    task: str
    model: str
    run_dir: str
    data_version: str | None
    # md5 of the test split file: runs are only compared on identical test splits.
    test_split: str | None
    primary_metric: str
    primary: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    ci_level: float = 0.95
    resamples: int = 0
    test_rows: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float | None] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    # Most frequent training label: the built-in baseline a first classifier must beat.
    majority_label: str | None = None
    servable: bool = False
    not_servable: str | None = None
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def role(self) -> str:
        """'baseline' runs are what a first champion must beat; the rest are candidates."""
        return "baseline" if self.method.startswith("baseline") else "candidate"

    def save(self) -> Path:
        return save_record(self, self.run_dir, SCORECARD_FILE)

    @classmethod
    def load(cls, folder: str | Path) -> Scorecard:
        missing = EvaluationError(f"{folder} holds no {SCORECARD_FILE}: evaluate the run first.")
        return cls(**read_record(folder, SCORECARD_FILE, missing))

    def predictions(self) -> pd.DataFrame | None:
        """The run's per-example test predictions (None when it wrote none)."""
        path = Path(self.run_dir) / PREDICTIONS_FILE
        return pd.read_parquet(path) if path.is_file() else None


def primary_metric(cfg: RunConfig) -> str:
    """eval.primary_metric, unless it is the classification default on another task."""
    chosen = cfg.eval.primary_metric
    if cfg.data.task != "classification" and chosen == DEFAULT_PRIMARY["classification"]:
        return DEFAULT_PRIMARY[cfg.data.task]
    return chosen


def test_split_id(dataset: str, data_version: str | None, workspace: Workspace) -> str | None:
    """md5 of the test split of a recorded data version (None when it is not recorded)."""
    from tunelab.data import versioning
    from tunelab.errors import VersioningError

    if not data_version:
        return None
    try:
        record = versioning.find_version(dataset, data_version, workspace)
    except VersioningError:  # trained on data that was never recorded: no id to compare
        return None
    return record.files.get(f"{dataset}/test.parquet")


def evaluate_run(
    result: TrainResult,
    cfg: RunConfig,
    workspace: Workspace,
    train_labels: list[str] | None = None,
) -> Scorecard:
    """Score a finished run; a run that cannot be scored gets status 'failed' and the reason.

    ``train_labels`` (the training split's labels) give the majority-class baseline.
    """
    card = Scorecard(
        dataset=result.dataset,
        method=method_label(cfg),
        task=result.task,
        model=result.model,
        run_dir=result.output_dir,
        data_version=result.data_version,
        test_split=test_split_id(result.dataset, result.data_version, workspace),
        primary_metric=primary_metric(cfg),
        ci_level=cfg.eval.ci_level,
    )
    card.costs = _costs(result)
    if train_labels:
        card.majority_label = pd.Series(train_labels).astype(str).value_counts().idxmax()
    try:
        _score(card, result, cfg)
    except (EvaluationError, ValueError) as exc:
        card.status, card.error = "failed", str(exc)
    card.save()
    return card


def _score(card: Scorecard, result: TrainResult, cfg: RunConfig) -> None:
    path = Path(result.output_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise EvaluationError(
            f"The run in {result.output_dir} wrote no {PREDICTIONS_FILE}: it had no test "
            "(or validation) split to predict on, so it cannot be evaluated or registered."
        )
    table = pd.read_parquet(path)
    if table.empty:
        raise EvaluationError(f"{path} is empty: no test example was predicted.")
    labels = cfg.data.labels or _labels_of(table)
    card.test_rows = len(table)
    card.metrics = dict(result.metrics)
    card.metrics.update(
        {f"test_{k}": v for k, v in evaluate.table_metrics(table, card.task, labels).items()}
    )
    card.primary = float(evaluate.metric_value(table, card.primary_metric, card.task))
    if not math.isfinite(card.primary):
        raise EvaluationError(
            f"The primary metric {card.primary_metric} of {result.output_dir} is {card.primary}."
        )
    card.ci_low, card.ci_high = evaluate.bootstrap_ci(
        table,
        card.primary_metric,
        card.task,
        resamples=cfg.eval.bootstrap_resamples,
        level=cfg.eval.ci_level,
        seed=cfg.train.seed,
    )
    card.resamples = cfg.eval.bootstrap_resamples
    if card.task == "classification":
        plot = evaluate.confusion_matrix_plot(
            table["reference"].astype(str).tolist(),
            table["prediction"].astype(str).tolist(),
            labels,
            Path(result.output_dir) / CONFUSION_FILE,
            f"{result.dataset}: {card.method} on {result.model} (test)",
        )
        card.plots["confusion_matrix"] = plot.name
    if "loss_plot" in result.artifacts:
        card.plots["loss"] = result.artifacts["loss_plot"]
    if "margin_plot" in result.artifacts:  # a reward model's held-out margins
        card.plots["reward_margins"] = result.artifacts["margin_plot"]
    if "reward_plot" in result.artifacts:  # a policy's reward and KL per step
        card.plots["reward_curve"] = result.artifacts["reward_plot"]


def _labels_of(table: pd.DataFrame) -> list[str] | None:
    if "reference" not in table.columns or "prediction" not in table.columns:
        return None
    return sorted(set(table["reference"].astype(str)) | set(table["prediction"].astype(str)))


def _costs(result: TrainResult) -> dict[str, float | None]:
    return {
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "wall_seconds": result.wall_seconds,
        "train_seconds": result.train_seconds,
        "peak_rss_mb": result.peak_rss_mb,
        "cuda_max_allocated_mb": result.cuda_max_allocated_mb,
        "tokens_per_second": result.tokens_per_second,
    }
