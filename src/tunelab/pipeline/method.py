"""One method's way from config to registry: train -> evaluate -> track, register, gate.

Each step is a function of plain inputs, so an orchestrator can cache and retry them one
by one (flows/milestone.py wraps each in a Prefect task); `run_method` sequences them
for one method of a plan and fills its `MethodRecord`; `train_and_register` runs all of
it in one go for `tunelab train`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunelab import scorecard
from tunelab.config import RunConfig
from tunelab.errors import PipelineError, TunelabError
from tunelab.lifecycle import evidence, packaging, registry, tracking
from tunelab.pipeline import exchange
from tunelab.pipeline.cache import StepKeys
from tunelab.pipeline.plan import MethodSpec
from tunelab.pipeline.records import (
    Evaluated,
    MethodRecord,
    Outcome,
    Registration,
    Trained,
)
from tunelab.runs import TrainResult
from tunelab.scorecard import Scorecard
from tunelab.workspace import Workspace

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- the steps


def train_step(
    cfg: RunConfig,
    workdir: str,
    data_version: str,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Trained:
    """Train on the splits of the workspace's current (just validated) data version,
    followed live in its MLflow run when a tracking URI is given."""
    from tunelab.data import versioning

    started = time.perf_counter()
    workspace = Workspace.resolve(workdir)
    cfg = exchange.local_config(cfg, workspace)  # its init_from may be another worker's
    target = tracking.setup(workspace, tracking_uri) if tracking_uri else None
    data = versioning.load_splits(cfg.data.name, workspace)
    result = train_tracked(cfg, data, workspace, data_version, target, parent_run_id, extra_tags)
    exchange.publish(result.output_dir)
    return Trained(result.output_dir, time.perf_counter() - started)


def train_tracked(
    cfg: RunConfig,
    data,
    workspace: Workspace,
    data_version: str | None,
    target: tracking.Tracking | None = None,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> TrainResult:
    """tunelab.train.train; with a tracking target, a Trainer's run is followed live in
    its MLflow run (tunelab.lifecycle.live), whose id the result keeps."""
    from tunelab.lifecycle import live
    from tunelab.runs import run_dir
    from tunelab.train import train

    if target is None or not live.follows(cfg):
        return train(cfg, data, workspace, data_version=data_version)
    folder = run_dir(cfg, workspace, data_version)
    folder.mkdir(parents=True, exist_ok=True)
    with live.tracked(cfg, target, folder, data_version, parent_run_id, extra_tags) as run:
        result = train(cfg, data, workspace, data_version=data_version, output_dir=folder)
    result.mlflow_run_id = run.run_id
    result.save()
    return result


def evaluate(cfg: RunConfig, result: TrainResult, workspace: Workspace) -> Scorecard:
    """The run's scorecard (scoring, then what serving the model would cost); the
    majority baseline comes from the training split's labels."""
    card = scorecard.evaluate_run(result, cfg, workspace, _train_labels(result, workspace))
    if card.ok:
        packaging.measure_serving_costs(card, result, cfg=cfg)
    return card


def evaluate_step(cfg: RunConfig, run_dir: str, workdir: str) -> Evaluated:
    started = time.perf_counter()
    workspace = Workspace.resolve(workdir)
    run_dir = exchange.local(run_dir, workspace)
    card = evaluate(cfg, TrainResult.load(run_dir), workspace)
    exchange.publish(run_dir)
    return Evaluated(card.status, card.error, time.perf_counter() - started)


def _train_labels(result: TrainResult, workspace: Workspace) -> list[str] | None:
    from tunelab.data import versioning

    if result.task != "classification":
        return None
    current = versioning.current_version(result.dataset, workspace)
    if current is None or current.version != result.data_version:
        return None
    frame = versioning.load_splits(result.dataset, workspace).get("train")
    if frame is None or "label" not in frame.columns:
        return None
    return frame["label"].astype(str).tolist()


def track_and_register(
    cfg: RunConfig,
    result: TrainResult,
    card: Scorecard,
    workspace: Workspace,
    target: tracking.Tracking,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Registration:
    """Log the run; register its model and run the gate when it has one.

    Safe to run again after a failure at any point: the run an earlier attempt logged
    (same registration key) and its version are reused, and a decision already applied
    is not taken twice. Half-done moves of the model are finished first.
    """
    started = time.perf_counter()
    key = registration_key(cfg, result, card)
    tracked = registry.tracked_run(target, result.dataset, key)
    if tracked is None:
        tags = {**(extra_tags or {}), registry.KEY_TAG: key}
        tracked = tracking.log_run(cfg, result, card, workspace, target, parent_run_id, tags)
    done = Registration(tracked=tracked, not_registered=_why_not_registered(cfg, card, tracked))
    if done.not_registered is None:
        name = registry.model_name(cfg)
        for finding in registry.recover(target, name):
            # Another registration of the model may be running right now: not a problem.
            level = logging.INFO if finding.kind == "in progress" else logging.WARNING
            log.log(level, "registry: %s", finding)
        version = registry.register(target, cfg, result, card, tracked)
        recorded = registry.recorded_decision(target, name, version)
        if recorded is None:
            decision = evidence.judge(target, cfg, card, tracked)
            change = registry.apply_decision(target, name, version, tracked.run_id, decision)
        else:
            decision, change = recorded
        done.model_name, done.version = name, version
        done.decision, done.aliases = decision, change.after
    done.seconds = time.perf_counter() - started
    return done


def registration_key(cfg: RunConfig, result: TrainResult, card: Scorecard) -> str:
    """Same config, trained run and evaluation -> same key (a retrained or re-evaluated
    run gets a new one); serving costs are left out: they are re-measured each time."""
    from dataclasses import asdict

    from tunelab.config import digest

    evaluation = {
        "status": card.status,
        "error": card.error,
        "test_split": card.test_split,
        "metrics": card.metrics,
        "servable": card.servable,
    }
    return digest({"config": cfg.config_hash(), "train": asdict(result), "card": evaluation})


def _why_not_registered(cfg: RunConfig, card: Scorecard, tracked) -> str | None:
    if not cfg.registry.auto_register:
        return "registry.auto_register=false"
    if not card.ok:
        return f"its evaluation failed: {card.error}"
    if not card.servable or tracked.model_uri is None:
        return card.not_servable or "no model was logged"
    return None


def register_step(
    cfg: RunConfig,
    run_dir: str,
    workdir: str,
    tracking_uri: str,
    parent_run_id: str | None,
    extra_tags: dict[str, str],
) -> Registration:
    """Track the run in MLflow, register its model, run the gate."""
    workspace = Workspace.resolve(workdir)
    target = tracking.setup(workspace, tracking_uri)
    run_dir = exchange.local(run_dir, workspace)
    result = TrainResult.load(run_dir)
    card = Scorecard.load(run_dir)
    return track_and_register(cfg, result, card, workspace, target, parent_run_id, extra_tags)


def train_and_register(cfg: RunConfig, workspace: Workspace) -> Outcome:
    """The whole `tunelab train`. The tracking target is checked first: a dead server
    fails the command before any training time is spent."""
    with workspace.lock():  # one writer per workspace (re-entrant: the CLI holds it too)
        target = tracking.setup(workspace, cfg.registry.tracking_uri)
        result = train_from_config(cfg, workspace, target)
        card = evaluate(cfg, result, workspace)
        return Outcome(result, card, track_and_register(cfg, result, card, workspace, target))


def train_from_config(
    cfg: RunConfig, workspace: Workspace | None = None, target: tracking.Tracking | None = None
) -> TrainResult:
    """Prepare the data (the validation gate), then train (followed live in MLflow when a
    tracking target is given).

    Preparing unchanged data is cheap and rewrites nothing; it guarantees the splits
    trained on are the validated ones the config describes.
    """
    from tunelab.data import versioning
    from tunelab.data.prepare import prepare_dataset
    from tunelab.train import check_method

    check_method(cfg)
    workspace = (workspace or Workspace.resolve()).ensure()
    prepared = prepare_dataset(cfg, workspace)
    data = versioning.load_splits(cfg.data.name, workspace)
    return train_tracked(cfg, data, workspace, prepared.version.version, target)


# ---------------------------------------------------------------- one method of a plan


@dataclass(frozen=True)
class MethodContext:
    """What every method of one pipeline run shares (plain values: it crosses processes)."""

    workdir: str
    tracking_uri: str
    code: str  # tunelab.pipeline.cache.code_version()
    data_versions: dict[str, str]  # dataset -> data version
    parents: dict[str, str | None]  # dataset -> MLflow parent run id
    tags: dict[str, str]  # lineage tags for every run (pipeline, Prefect flow run)


@dataclass(frozen=True)
class StepCall:
    """A step for the orchestrator to run: its name, its cache key and its arguments."""

    step: str  # one of STEPS
    label: str  # "dataset/method", for the task run's name
    key: str
    args: tuple


@dataclass(frozen=True)
class StepOutcome:
    """What the orchestrator reports back: the step's value (or the exception it raised)
    and whether it came from the cache."""

    value: Any
    failed: bool
    reused: bool


StepRunner = Callable[[StepCall], StepOutcome]


def run_method(
    spec: MethodSpec,
    context: MethodContext,
    run_step: StepRunner,
    finished: list[MethodRecord] = (),
    defer_register: bool = False,
) -> MethodRecord:
    """One method through its three steps; a failure is recorded, never raised, so the
    other methods go on. ``finished`` holds the records an init_from or reward_from names.
    With ``defer_register`` the register step is left in ``record.pending`` for
    register_pending: the gate's bar (the champion, the best baseline logged so far) then
    depends on the plan's order, not on which parallel method finished first."""
    record = MethodRecord(spec.dataset, spec.name, required=spec.required)
    try:
        cfg = spec.config_for(
            run_of(spec, spec.init_from, finished, "starts from"),
            run_of(spec, spec.reward_from, finished, "is rewarded by"),
        )
        # Its keys pin the runs it starts from by their records: fetched when elsewhere.
        cfg = exchange.local_config(cfg, Workspace.resolve(context.workdir))
    except TunelabError as exc:
        return record.fail("train", str(exc))
    version = context.data_versions[spec.dataset]
    keys = StepKeys.of(cfg, version, context.code, context.tracking_uri)
    root = context.workdir
    # Where the run is tracked: the train step opens it (live), the register step ends it.
    where = (context.tracking_uri, context.parents.get(spec.dataset), context.tags)
    trained = _run(
        record, run_step, StepCall("train", spec.label, keys.train, (cfg, root, version, *where))
    )
    if trained is None:
        return record
    record.run_dir = trained.run_dir
    evaluate_call = StepCall("evaluate", spec.label, keys.evaluate, (cfg, record.run_dir, root))
    evaluated = _run(record, run_step, evaluate_call)
    if evaluated is not None and evaluated.status != "ok":
        record.fail("evaluate", evaluated.error or "the run could not be scored")
    if not record.ok:
        _end_unlogged(record, context)
        return record
    register = StepCall("register", spec.label, keys.register, (cfg, record.run_dir, root, *where))
    record.pending = register
    return record if defer_register else register_pending(record, run_step)


def register_pending(record: MethodRecord, run_step: StepRunner) -> MethodRecord:
    """Run a method's deferred register step, if it has one."""
    call, record.pending = record.pending, None
    if call is not None:
        record.registration = _run(record, run_step, call)
    return record


def _end_unlogged(record: MethodRecord, context: MethodContext) -> None:
    """A trained run that will not be logged ends its live MLflow run FAILED."""
    from tunelab.lifecycle import live

    try:  # its live run's record, when the run was trained on another worker
        run_dir = exchange.local(record.run_dir, Workspace.resolve(context.workdir))
    except TunelabError:
        run_dir = record.run_dir
    live.end_unlogged(run_dir, context.tracking_uri, record.error or "not evaluated")


def _run(record: MethodRecord, run_step: StepRunner, call: StepCall):
    """Run one step and note it in the record; None when it failed."""
    outcome = run_step(call)
    if outcome.failed:
        record.fail(call.step, outcome.value)
        return None
    if outcome.reused:
        record.reused.append(call.step)
    record.seconds[call.step] = 0.0 if outcome.reused else float(outcome.value.seconds)
    return outcome.value


def run_of(
    spec: MethodSpec, needed: str | None, finished: list[MethodRecord], how: str
) -> str | None:
    """The run folder of a method this one needs (its init_from or reward_from), if any."""
    if not needed:
        return None
    source = next((r for r in finished if r.label == needed), None)
    if source is None or not source.ok or not source.run_dir:
        raise PipelineError(
            f"{spec.label} {how} {needed}, which did not finish"
            + (f" ({source.error})" if source and source.error else "")
        )
    return source.run_dir
