"""One model's way from config to registry: train -> evaluate -> track -> register -> gate.

`tunelab train` runs all of it; pipelines call the steps one by one (each is a function
of plain inputs, so an orchestrator can cache and retry them separately).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab import registry, scorecard, tracking
from tunelab.config import RunConfig
from tunelab.gate import Decision
from tunelab.scorecard import Scorecard
from tunelab.runs import TrainResult
from tunelab.workspace import Workspace


@dataclass
class Outcome:
    result: TrainResult
    card: Scorecard
    tracked: tracking.TrackedRun | None = None
    model_name: str | None = None
    version: str | None = None
    decision: Decision | None = None
    aliases: dict[str, str] | None = None
    # Why the run was not registered (baseline, evaluation failed, registering off).
    not_registered: str | None = None


def evaluate(cfg: RunConfig, result: TrainResult, workspace: Workspace) -> Scorecard:
    """The run's scorecard; the majority baseline comes from the training split's labels."""
    from tunelab.data import versioning

    train_labels = None
    if result.task == "classification":
        current = versioning.current_version(result.dataset, workspace)
        if current is not None and current.version == result.data_version:
            frame = versioning.load_splits(result.dataset, workspace).get("train")
            if frame is not None and "label" in frame.columns:
                train_labels = frame["label"].astype(str).tolist()
    return scorecard.evaluate_run(result, cfg, workspace, train_labels)


def track_and_register(
    cfg: RunConfig,
    result: TrainResult,
    card: Scorecard,
    workspace: Workspace,
    target: tracking.Tracking,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Outcome:
    """Log the run; register its model and run the gate when it has one."""
    outcome = Outcome(result, card)
    outcome.tracked = tracking.log_run(
        cfg, result, card, workspace, target, parent_run_id, extra_tags
    )
    if not cfg.registry.auto_register:
        outcome.not_registered = "registry.auto_register=false"
    elif not card.ok:
        outcome.not_registered = f"its evaluation failed: {card.error}"
    elif not card.servable or outcome.tracked.model_uri is None:
        outcome.not_registered = card.not_servable or "no model was logged"
    if outcome.not_registered:
        return outcome
    name = registry.model_name(cfg)
    version = registry.register(target, cfg, result, card, outcome.tracked)
    decision = registry.judge(target, cfg, card, outcome.tracked)
    change = registry.apply_decision(target, name, version, outcome.tracked.run_id, decision)
    outcome.model_name, outcome.version = name, version
    outcome.decision, outcome.aliases = decision, change.after
    return outcome


def train_and_register(cfg: RunConfig, workspace: Workspace) -> Outcome:
    """The whole `tunelab train`. The tracking target is checked first: a dead server
    fails the command before any training time is spent."""
    target = tracking.setup(workspace, cfg.registry.tracking_uri)
    result = train_from_config(cfg, workspace)
    card = evaluate(cfg, result, workspace)
    return track_and_register(cfg, result, card, workspace, target)


def train_from_config(cfg: RunConfig, workspace: Workspace | None = None) -> TrainResult:
    """The whole `tunelab train`: prepare the data (the validation gate), then train.

    Preparing unchanged data is cheap and rewrites nothing; it guarantees the splits
    trained on are the validated ones the config describes.
    """
    from tunelab.data import versioning
    from tunelab.data.prepare import prepare_dataset
    from tunelab.train import check_method, train

    check_method(cfg)
    workspace = (workspace or Workspace.resolve()).ensure()
    prepared = prepare_dataset(cfg, workspace)
    data = versioning.load_splits(cfg.data.name, workspace)
    return train(cfg, data, workspace, data_version=prepared.version.version)
