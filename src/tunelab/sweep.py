"""Hyperparameter sweeps: an Optuna study over the keys of a run config's ``sweep.space``.

A sweep prepares the data once (the validation gate), then runs trials: each is the run
config with the sampled values applied, trained through the path of `tunelab train`
(followed live in MLflow, nested under the sweep's parent run), evaluated and logged.
A callback reports the validation metric to the trial at each evaluation, and the
pruner may stop it there (PRUNED; its MLflow run ends KILLED saying why). A trial that
crashes is recorded FAIL with its error; the sweep goes on either way.

The study lives in an RDB storage (default ``sweeps/<study>/study.db`` in the workspace),
so trials can run in other processes: the coordinator asks a trial (sampling its values),
a worker re-opens it by number, trains it and tells the study. Running the same config
again continues the study: ``trials`` is the number of finished trials (complete, pruned
or failed) the study should hold in all, so a killed sweep runs only the missing ones.
A trial left RUNNING by a process that is gone is marked FAIL (``interrupted``, not
counted) and its values are tried again first.

Nothing here imports the orchestrator; flows/sweep.py runs the trials as Prefect tasks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab import config as config_mod
from tunelab import markdown as md
from tunelab.config import Distribution, RunConfig, digest
from tunelab.errors import ConfigError, TrainingError
from tunelab.redaction import redact_text
from tunelab.services import pid_exists
from tunelab.workspace import Workspace

log = logging.getLogger(__name__)

SWEEPS_DIR = "sweeps"
STUDY_DB = "study.db"
BEST_FILE = "best.yaml"
REPORT_FILE = "report.md"
HISTORY_PLOT = "optimization_history.png"
IMPORTANCE_PLOT = "param_importances.png"
TAG = "tunelab.sweep."  # MLflow tags of the parent and trial runs
COUNTED = ("COMPLETE", "PRUNED", "FAIL")  # finished trial states (less interrupted ones)


# ---------------------------------------------------------------- the config


def load(
    path: str | Path,
    overrides: list[str] | None = None,
    study: str | None = None,
    storage: str | None = None,
) -> RunConfig:
    """A run config that has a sweep section (ConfigError otherwise); ``study`` and
    ``storage`` (the command line's) replace the section's."""
    cfg = config_mod.load(path, overrides)
    if cfg.sweep is None:
        raise ConfigError(
            f"{path} has no sweep: section, so there is nothing to search. Add one (see "
            "configs/tiny/sentiment-lora-sweep.yaml), e.g. sweep: {space: {train.learning_rate: "
            "{low: 1.0e-5, high: 1.0e-2, log: true}}}."
        )
    update = {k: v for k, v in (("study", study), ("storage", storage)) if v}
    if update:
        cfg = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update=update)})
    return cfg


def objective(cfg: RunConfig) -> tuple[str, str]:
    """(metric, direction): sweep.metric, else validation_loss for trained methods and
    the primary metric on validation for baselines; minimize a loss, maximize the rest."""
    from tunelab.scorecard import primary_metric

    metric = cfg.sweep.metric
    if metric is None:
        trained = cfg.train.method != "baseline"
        metric = "validation_loss" if trained else f"validation_{primary_metric(cfg)}"
    direction = cfg.sweep.direction or ("minimize" if metric.endswith("loss") else "maximize")
    return metric, direction


def objective_hash(cfg: RunConfig) -> str:
    """What makes trials comparable: the run config a trial starts from and what is
    searched and judged. A study refuses trials of another objective."""
    metric, direction = objective(cfg)
    base = cfg.model_dump(mode="json", include={"data", "model", "train", "eval"})
    space = {k: v.model_dump(mode="json") for k, v in cfg.sweep.space.items()}
    return digest({"base": base, "metric": metric, "direction": direction, "space": space}, 8)


def study_name(cfg: RunConfig) -> str:
    """sweep.study, else <dataset>-<method>-<model>-<objective hash>."""
    from tunelab.runs import method_label, model_label

    if cfg.sweep.study:
        return cfg.sweep.study
    return f"{cfg.data.name}-{method_label(cfg)}-{model_label(cfg)}-{objective_hash(cfg)}"


def sweep_folder(workspace: Workspace, study: str) -> Path:
    return workspace.root / SWEEPS_DIR / md.slug(study, "sweep")


def storage_url(cfg: RunConfig, workspace: Workspace, study: str) -> str:
    return cfg.sweep.storage or f"sqlite:///{sweep_folder(workspace, study) / STUDY_DB}"


def trial_config(cfg: RunConfig, params: dict[str, Any]) -> RunConfig:
    """The run config of one trial: the sweep's config, its sampled values applied, no
    sweep section (so it is a plain run config, e.g. for `tunelab train`)."""
    raw = cfg.model_copy(update={"sweep": None}).to_dict()
    for key, value in params.items():
        raw = config_mod.merge(raw, config_mod.nested(key.split("."), value))
    return config_mod.from_dict(raw, where=f"a trial ({', '.join(params)})")


def suggest(trial, key: str, dist: Distribution):
    """Sample (or read the fixed value of) one key of the space."""
    if dist.choices is not None:
        return trial.suggest_categorical(key, dist.choices)
    if dist.is_int:
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step or 1, log=dist.log)
    return trial.suggest_float(key, float(dist.low), float(dist.high), step=dist.step, log=dist.log)


# ---------------------------------------------------------------- the study


@dataclass(frozen=True)
class SweepRun:
    """What every trial of one sweep shares (plain values: it crosses processes)."""

    cfg: RunConfig  # with its sweep section
    study: str
    storage: str  # may hold credentials: shown through redact_text only
    folder: str  # sweeps/<study>/ in the workspace: best config, report, plots
    workdir: str
    tracking_uri: str
    data_version: str
    metric: str
    direction: str
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    retried: tuple[int, ...] = ()  # trials a stopped process left: their values run again

    @property
    def shown_storage(self) -> str:
        return redact_text(self.storage)


def open_study(run: SweepRun, sample: bool = False):
    """The study with its pruner; ``sample``: with the configured sampler too, seeded
    by the trials so far (a resumed sweep does not repeat its first process's draws)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(run.storage)
    sampler = None
    if sample:
        done = len(storage.get_all_trials(storage.get_study_id_from_name(run.study)))
        seed = run.cfg.sweep.seed + done
        sampler = (
            optuna.samplers.RandomSampler(seed=seed)
            if run.cfg.sweep.sampler == "random"
            else optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=max(run.cfg.sweep.n_startup_trials, 1)
            )
        )
    return optuna.load_study(
        study_name=run.study, storage=storage, sampler=sampler, pruner=_pruner(run.cfg)
    )


def _storage(url: str):
    import optuna

    kwargs = {}
    if url.startswith("sqlite:"):
        # Trials in other threads and processes write the same file: wait, do not fail.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    return optuna.storages.RDBStorage(url, **kwargs)


def _pruner(cfg: RunConfig):
    import optuna

    if cfg.sweep.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.sweep.n_startup_trials, n_warmup_steps=cfg.sweep.n_warmup_steps
    )


def begin(
    cfg: RunConfig,
    workspace: Workspace,
    tracking_uri: str | None = None,
    tags: dict[str, str] | None = None,
) -> SweepRun:
    """Prepare the data (the gate), create or continue the study, fail the trials a
    stopped process left RUNNING (and queue their values again), open the parent run."""
    import optuna

    from tunelab.data.prepare import prepare_dataset
    from tunelab.lifecycle import tracking
    from tunelab.train import check_method

    check_method(cfg)
    workspace = workspace.ensure()
    target = tracking.setup(workspace, tracking_uri or cfg.registry.tracking_uri)
    name = study_name(cfg)
    storage = storage_url(cfg, workspace, name)
    folder = sweep_folder(workspace, name)
    folder.mkdir(parents=True, exist_ok=True)
    metric, direction = objective(cfg)
    try:
        study = optuna.create_study(
            storage=_storage(storage), study_name=name, direction=direction, load_if_exists=True
        )
    except Exception as exc:  # noqa: BLE001 - any storage failure, said plainly
        raise ConfigError(
            f"Cannot open the Optuna storage {redact_text(storage)} for study {name}: "
            f"{type(exc).__name__}: {redact_text(str(exc))[:300]}. Check sweep.storage "
            "(or --storage)."
        ) from None
    _check_objective(study, cfg, name, storage)
    prepared = prepare_dataset(cfg, workspace)
    run = SweepRun(
        cfg=cfg,
        study=name,
        storage=storage,
        folder=str(folder),
        workdir=str(workspace.root),
        tracking_uri=target.uri,
        data_version=prepared.version.version,
        metric=metric,
        direction=direction,
        tags={**(tags or {}), f"{TAG}study": name},
    )
    retried = tuple(recover_interrupted(run, study))
    _end_interrupted_runs(run, retried, target)
    parent = _parent_run(run, study, target)
    return SweepRun(**{**run.__dict__, "parent_run_id": parent, "retried": retried})


def _check_objective(study, cfg: RunConfig, name: str, storage: str) -> None:
    wanted = objective_hash(cfg)
    found = study.user_attrs.get("objective")
    if found is None:
        metric, direction = objective(cfg)
        study.set_user_attr("objective", wanted)
        study.set_user_attr("metric", metric)
        return
    if found != wanted:
        raise ConfigError(
            f"Study {name} in {redact_text(storage)} was started for another objective (the "
            "run config, sweep.space, metric or direction changed since), so its trials "
            "cannot be compared with new ones. Pass --study NEW_NAME (or set sweep.study) to "
            "start a new study, or restore the config to continue this one."
        )


def recover_interrupted(run: SweepRun, study) -> list[int]:
    """Trials left RUNNING by a process that is gone: marked FAIL (interrupted, not
    counted), their values queued to be tried first. Returns their numbers. A trial of
    a live process (another sweep of a shared storage) is left alone."""
    from optuna.trial import TrialState

    found = []
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("owner") or {}
        if owner.get("host") not in (None, socket.gethostname()):
            log.warning(
                "Trial %d of study %s is RUNNING on %s; left alone.",
                trial.number,
                run.study,
                owner.get("host"),
            )
            continue
        if owner.get("pid") and owner["pid"] != os.getpid() and pid_exists(owner["pid"]):
            continue
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        found.append(trial.number)
    if found:
        log.warning("Trials %s of %s were interrupted: tried again first.", found, run.study)
    return found


def _end_interrupted_runs(run: SweepRun, numbers: tuple[int, ...], target) -> None:
    """The MLflow runs of interrupted trials, left RUNNING by the stopped process, end
    KILLED (a retry that resumes from the trial's checkpoint re-opens its run)."""
    from tunelab.lifecycle import live, tracking

    if not numbers:
        return
    client = tracking.mlflow_client()
    experiment = tracking.experiment_for(target, run.cfg.data.name)
    for number in numbers:
        found = client.search_runs(
            [experiment],
            filter_string=f"tags.`{TAG}study` = '{run.study}' and tags.`{TAG}trial` = "
            f"'{number}' and attributes.status = 'RUNNING'",
        )
        for stale in found:
            live.end_run(
                target,
                stale.info.run_id,
                "KILLED",
                f"Sweep {run.study} trial {number} was interrupted (its process stopped); "
                "its values are tried again in a later trial.",
            )


def _parent_run(run: SweepRun, study, target) -> str:
    """The sweep's MLflow parent run: the study's earlier one (re-opened) when it is in
    this tracking store, else a new one named <dataset>/sweep <study>."""
    from tunelab.lifecycle import tracking

    client = tracking.mlflow_client()
    earlier = study.user_attrs.get("mlflow_parent_run_id")
    if earlier and study.user_attrs.get("mlflow_tracking") == target.shown:
        experiment = tracking.experiment_for(target, run.cfg.data.name)
        found = tracking.open_run(target, client, earlier, experiment)
        if found is None:  # ended FINISHED by the last sweep: it goes on now
            with contextlib.suppress(Exception):
                found = client.get_run(earlier)
        if found is not None and found.info.lifecycle_stage == "active":
            tracking.call(
                target, "reopen the sweep run", lambda: client.update_run(earlier, "RUNNING")
            )
            return earlier
    parent = tracking.start_parent(target, run.cfg.data.name, f"sweep {run.study}", run.tags)
    study.set_user_attr("mlflow_parent_run_id", parent)
    study.set_user_attr("mlflow_tracking", target.shown)
    return parent


def counted(study) -> int:
    """Finished trials that count toward --trials (interrupted ones do not)."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state.name in COUNTED and not t.user_attrs.get("interrupted")
    )


def missing(run: SweepRun, total: int) -> int:
    """How many trials the study still needs to hold ``total`` finished ones."""
    return max(total - counted(open_study(run)), 0)


def ask(run: SweepRun, n: int) -> list[int]:
    """Ask ``n`` trials in this (the coordinating) process: their values are sampled here
    (queued values of interrupted trials first); the trials are run by number."""
    study = open_study(run, sample=True)
    numbers = []
    owner = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(n):
        trial = study.ask()
        for key, dist in run.cfg.sweep.space.items():
            suggest(trial, key, dist)
        trial.set_user_attr("owner", owner)
        numbers.append(trial.number)
    return numbers


# ---------------------------------------------------------------- one trial


@dataclass
class TrialRecord:
    """What became of one trial."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    params: dict[str, Any]
    value: float | None = None
    run_dir: str | None = None
    mlflow_run_id: str | None = None
    error: str | None = None
    seconds: float = 0.0
    # A mistake every trial would repeat (the metric is not among the run's): the sweep stops.
    fatal: str | None = None


def run_trial(run: SweepRun, number: int) -> TrialRecord:
    """Train, evaluate and log trial ``number`` of the study (re-opened from storage),
    then tell the study COMPLETE, PRUNED or FAIL. Never raises for a trial's failure."""
    import optuna
    from optuna.trial import TrialState

    started = time.perf_counter()
    study = open_study(run)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    trial = optuna.trial.Trial(study, trial_id)
    record = TrialRecord(number, "FAIL", dict(trial.params))
    workspace = Workspace.resolve(run.workdir)
    cfg = None
    try:
        cfg = trial_config(run.cfg, record.params)
        record.value = _train_and_log(run, trial, cfg, workspace, record)
        record.state = "COMPLETE"
    except optuna.TrialPruned as exc:
        record.state, record.error = "PRUNED", str(exc)
    except ConfigError as exc:
        record.error = record.fatal = str(exc)
    except Exception as exc:  # noqa: BLE001 - a crashed trial never stops the sweep
        record.error = redact_text(f"{type(exc).__name__}: {exc}")[:2000]
        log.warning("Trial %d of %s failed: %s", number, run.study, record.error)
    record.seconds = round(time.perf_counter() - started, 2)
    if cfg is not None and record.state != "COMPLETE":
        _note_unfinished(run, cfg, workspace, record)
    for key, value in (
        ("run_dir", record.run_dir),
        ("mlflow_run_id", record.mlflow_run_id),
        ("error", record.error),
        ("seconds", record.seconds),
    ):
        if value is not None:
            trial.set_user_attr(key, value)
    state = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED}
    if record.state == "COMPLETE":
        study.tell(number, record.value)
    else:
        study.tell(number, state=state.get(record.state, TrialState.FAIL))
    return record


def _train_and_log(run: SweepRun, trial, cfg: RunConfig, workspace: Workspace, record) -> float:
    from tunelab.lifecycle import registry, tracking
    from tunelab.pipeline import method
    from tunelab.runs import TrainResult, run_dir
    from tunelab.train.common import training_callbacks

    target = tracking.setup(workspace, run.tracking_uri)
    record.run_dir = str(run_dir(cfg, workspace, run.data_version))
    tags = {**run.tags, f"{TAG}trial": str(record.number)}
    with training_callbacks(pruning_callback(trial, run.metric)):
        trained = method.train_step(
            cfg, run.workdir, run.data_version, run.tracking_uri, run.parent_run_id, tags
        )
    result = TrainResult.load(trained.run_dir)
    value = result.metrics.get(run.metric)
    card = method.evaluate(cfg, result, workspace)
    key = method.registration_key(cfg, result, card)
    tracked = registry.tracked_run(target, result.dataset, key)
    if tracked is None:
        tracked = tracking.log_run(
            cfg, result, card, workspace, target, run.parent_run_id,
            {**tags, registry.KEY_TAG: key},
        )  # fmt: skip
    record.mlflow_run_id = tracked.run_id
    if value is None or not math.isfinite(float(value)):
        known = sorted(k for k in result.metrics if k.startswith("validation_"))
        if value is None:
            raise ConfigError(
                f"sweep.metric {run.metric} is not among the run's metrics (it has "
                f"{', '.join(known) or 'no validation metrics: is there a validation split?'}"
                "). Set sweep.metric to one of them."
            )
        raise TrainingError(f"{run.metric} is {value}")
    _mark(run, tracked.run_id, record, "COMPLETE", float(value))
    return float(value)


def pruning_callback(trial, metric: str):
    """A TrainerCallback: the metric at each evaluation to the trial (its eval_* name in
    the Trainer's logs), and optuna.TrialPruned when the pruner says so."""
    import optuna
    from transformers import TrainerCallback

    logged = "eval_" + metric.removeprefix("validation_")

    class Pruning(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(logged)
            if value is None or not math.isfinite(value):
                return
            step = int(state.global_step)
            trial.report(float(value), step)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned at step {step} ({metric} {value:.4g}: worse than the median of "
                    "earlier trials there)"
                )

    return Pruning()


def _note_unfinished(run: SweepRun, cfg: RunConfig, workspace: Workspace, record) -> None:
    """A pruned or failed trial's live MLflow run (if training opened one) ends saying
    why, with the trial's values as params."""
    from tunelab.lifecycle import live
    from tunelab.runs import run_dir

    folder = run_dir(cfg, workspace, run.data_version)
    found = live.LiveRun.read(folder)
    if found is None or record.mlflow_run_id:
        return
    record.run_dir = str(folder)
    record.mlflow_run_id = found.run_id
    from tunelab.lifecycle.tracking import Tracking

    status = "KILLED" if record.state == "PRUNED" else "FAILED"
    live.end_run(
        Tracking(run.tracking_uri),
        found.run_id,
        status,
        f"Sweep {run.study} trial {record.number} {record.state.lower()}: {record.error}",
    )
    _mark(run, found.run_id, record, record.state, None)


def _mark(run: SweepRun, run_id: str, record: TrialRecord, state: str, value) -> None:
    """The trial's params, state and objective on its MLflow run; best effort."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri=run.tracking_uri)
    now = int(time.time() * 1000)
    try:
        client.log_batch(
            run_id,
            metrics=[Metric("sweep/objective", value, now, 0)] if value is not None else [],
            params=[Param(k, str(v)) for k, v in record.params.items()],
            tags=[
                RunTag(f"{TAG}state", state),
                RunTag(f"{TAG}trial", str(record.number)),
                RunTag(f"{TAG}metric", run.metric),
                RunTag("mlflow.runName", trial_run_name(run.cfg, record.number)),
            ],
        )
    except Exception as exc:  # noqa: BLE001 - the trial's result is in the study anyway
        log.warning("Could not mark MLflow run %s: %s", run_id, redact_text(str(exc))[:300])


@dataclass(frozen=True)
class TrialProgress:
    """Where the sweep stands after a trial: for the command's progress lines."""

    record: TrialRecord
    finished: int  # trials that count toward the total, this one included
    total: int
    best: float | None

    @classmethod
    def of(cls, run: SweepRun, record: TrialRecord, total: int) -> TrialProgress:
        study = open_study(run)
        complete = [t.value for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        pick = min if run.direction == "minimize" else max
        return cls(record, counted(study), total, pick(complete) if complete else None)


def trial_run_name(cfg: RunConfig, number: int) -> str:
    """``<dataset>/<method> <model> trial <n>``: a trial's MLflow run name."""
    from tunelab.runs import method_label, model_label

    return f"{cfg.data.name}/{method_label(cfg)} {model_label(cfg)} trial {number}"


def lost(run: SweepRun, number: int, error: str) -> TrialRecord:
    """A trial whose task died without telling the study (its process was lost): FAIL."""
    from optuna.trial import TrialState

    study = open_study(run)
    trial = study.trials[number]
    record = TrialRecord(number, "FAIL", dict(trial.params), error=redact_text(error)[:2000])
    if trial.state == TrialState.RUNNING:
        study._storage.set_trial_user_attr(trial._trial_id, "error", record.error)
        study.tell(number, state=TrialState.FAIL)
    return record


# ---------------------------------------------------------------- the end: best, report


@dataclass
class SweepSummary:
    """What a sweep left: the study's trials, the best one and where its files are."""

    study: str
    storage: str  # redacted
    metric: str
    direction: str
    total: int
    trials: list[TrialRecord]
    best: TrialRecord | None = None
    best_config: str | None = None
    report: str | None = None
    plots: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    ran: int = 0  # trials this sweep ran (the others were there before)
    retried: list[int] = field(default_factory=list)  # interrupted trials run again
    registration: Any = None  # pipeline.records.Registration of the best, when promoted

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(COUNTED, 0)
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out


def records(run: SweepRun) -> list[TrialRecord]:
    """Every finished trial of the study, from storage (interrupted ones left out)."""
    study = open_study(run)
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in COUNTED or t.user_attrs.get("interrupted"):
            continue
        out.append(
            TrialRecord(
                t.number,
                t.state.name,
                dict(t.params),
                t.value,
                t.user_attrs.get("run_dir"),
                t.user_attrs.get("mlflow_run_id"),
                t.user_attrs.get("error"),
                float(t.user_attrs.get("seconds") or 0.0),
            )
        )
    return out


def finish(run: SweepRun, total: int, ran: int = 0) -> SweepSummary:
    """The best trial's config (best.yaml), the report with its plots, both on the parent
    MLflow run, which ends FINISHED (FAILED when no trial completed)."""
    from tunelab.lifecycle import tracking

    trials = records(run)
    summary = SweepSummary(
        run.study,
        run.shown_storage,
        run.metric,
        run.direction,
        total,
        trials,
        parent_run_id=run.parent_run_id,
        ran=ran,
        retried=list(run.retried),
    )
    folder = Path(run.folder)
    done = [t for t in trials if t.state == "COMPLETE"]
    if done:
        pick = min if run.direction == "minimize" else max
        summary.best = pick(done, key=lambda t: t.value)
        best_cfg = trial_config(run.cfg, summary.best.params)
        path = folder / BEST_FILE
        header = (
            f"# Best trial #{summary.best.number} of sweep {run.study}: {run.metric} = "
            f"{summary.best.value:.6g}.\n# Train it: tunelab train {BEST_FILE}\n"
        )
        path.write_text(header + best_cfg.to_yaml(), encoding="utf-8")
        summary.best_config = str(path)
    summary.plots = plot_study(run, folder)
    summary.report = str(write_report(summary, run, folder))
    if run.parent_run_id:
        target = tracking.setup(Workspace.resolve(run.workdir), run.tracking_uri)
        _log_parent(run, summary, target)
    return summary


def plot_study(run: SweepRun, folder: Path) -> dict[str, str]:
    """Optimisation history and parameter importances as PNGs (importance needs two
    completed trials and a value that varies); a plot that cannot be drawn is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    study = open_study(run)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    varying = [k for k in run.cfg.sweep.space if len({repr(t.params.get(k)) for t in complete}) > 1]
    wanted = {HISTORY_PLOT: lambda: vis.plot_optimization_history(study, target_name=run.metric)}
    if len(complete) >= 2 and varying:
        wanted[IMPORTANCE_PLOT] = lambda: vis.plot_param_importances(
            study, params=varying, target_name=run.metric
        )
    made = {}
    for name, draw in wanted.items() if complete else ():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's ExperimentalWarning
                axes = draw()
            fig = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            fig.set_size_inches(7, 4)
            fig.tight_layout()
            fig.savefig(folder / name, dpi=100)
            plt.close(fig)
            made[name.removesuffix(".png")] = name
        except Exception as exc:  # noqa: BLE001 - a report without one plot is still a report
            log.warning("Sweep plot %s not drawn: %s", name, exc)
    return made


def write_report(summary: SweepSummary, run: SweepRun, folder: Path) -> Path:
    """report.md: the study, the best trial and its config, every trial, the plots."""
    counts = summary.counts
    s = run.cfg.sweep
    lines = [
        f"# Sweep {md.inline(run.study)}",
        "",
        f"Dataset {md.code(run.cfg.data.name)} (data version {md.code(run.data_version[:12])}), "
        f"{md.code(run.cfg.train.method)} on {md.code(run.cfg.model.name)}. "
        f"Objective: {s.sampler.upper()} sampler, {md.code(run.direction)} "
        f"{md.code(run.metric)}; pruner {md.code(s.pruner)}. Storage "
        f"{md.code(summary.storage)}.",
        "",
        f"{len(summary.trials)} of {summary.total} trials finished: {counts['COMPLETE']} "
        f"complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed.",
        "",
        "## Best trial",
        "",
    ]
    if summary.best is None:
        lines.append("No trial completed, so there is no best config.")
    else:
        b = summary.best
        lines += [
            f"Trial #{b.number}: {md.code(run.metric)} = {b.value:.6g}"
            + (f", MLflow run {md.code(b.mlflow_run_id)}" if b.mlflow_run_id else "")
            + ".",
            "",
            md.table(["key", "value"], [[md.cell(k), md.cell(v)] for k, v in b.params.items()]),
            "",
            f"Config: {md.link(str(folder / BEST_FILE), folder)} (`tunelab train {BEST_FILE}`).",
        ]
    lines += ["", "## Trials", ""]
    keys = list(s.space)
    rows = []
    for t in summary.trials:
        value = "" if t.value is None else f"{t.value:.6g}"
        note = t.error or ""
        rows.append(
            [
                str(t.number),
                t.state,
                value,
                *[md.cell(t.params.get(k)) for k in keys],
                f"{t.seconds:.1f}",
                md.cell(note, 120),
            ]
        )
    headers = ["#", "state", run.metric, *keys, "seconds", "note"]
    lines.append(md.table([md.cell(h) for h in headers], rows))
    titles = {"optimization_history": "Optimisation history", "param_importances": "Importance"}
    for name, file in summary.plots.items():
        lines += ["", f"## {titles.get(name, name)}", "", md.image(folder / file, folder, name)]
    if "param_importances" not in summary.plots:
        lines += [
            "",
            "Parameter importance needs at least two completed trials and a parameter "
            "whose value varies among them.",
        ]
    path = folder / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _log_parent(run: SweepRun, summary: SweepSummary, target) -> None:
    """The summary on the parent run (tags and metrics: a resumed sweep changes them),
    the report, plots and best config as artifacts; then the run ends."""
    from tunelab.lifecycle import tracking

    client = tracking.mlflow_client()
    parent = run.parent_run_id
    counts = summary.counts
    metrics = {f"trials_{k.lower()}": float(v) for k, v in counts.items()}
    tags = {
        f"{TAG}study": run.study,
        f"{TAG}storage": summary.storage,
        f"{TAG}metric": run.metric,
        f"{TAG}direction": run.direction,
        f"{TAG}sampler": run.cfg.sweep.sampler,
        f"{TAG}pruner": run.cfg.sweep.pruner,
    }
    if summary.best is not None:
        metrics[f"best_{run.metric}"] = float(summary.best.value)
        tags[f"{TAG}best_trial"] = str(summary.best.number)
        tags.update({f"{TAG}best.{k}": str(v) for k, v in summary.best.params.items()})
    step = len(summary.trials)
    for key, value in metrics.items():
        tracking.call(target, "log the sweep", lambda k=key, v=value: client.log_metric(
            parent, k, v, step=step))  # fmt: skip
    for key, value in tags.items():
        tracking.call(target, "tag the sweep", lambda k=key, v=value: client.set_tag(parent, k, v))
    folder = Path(run.folder)
    files = [REPORT_FILE, BEST_FILE, *summary.plots.values()]
    for name in files:
        if (folder / name).is_file():
            tracking.call(
                target, "log the sweep report",
                lambda n=name: client.log_artifact(parent, str(folder / n), "sweep"),
            )  # fmt: skip
    tracking.end_parent(target, parent, failed=summary.best is None)


def abandon(run: SweepRun, error: BaseException) -> None:
    """A sweep stopped by an error: its parent run ends FAILED saying why (best effort;
    the study keeps every finished trial, and the same command continues it)."""
    from tunelab.lifecycle import live
    from tunelab.lifecycle.tracking import Tracking

    if run.parent_run_id:
        why = f"Sweep {run.study} stopped: {type(error).__name__}: {error}"
        live.end_run(Tracking(run.tracking_uri), run.parent_run_id, "FAILED", why)


def promote_best(run: SweepRun, summary: SweepSummary):
    """Register the best trial's logged model and run the promotion gate on it, as
    `tunelab train` does for its run (its MLflow run is the trial's, found by its key)."""
    from tunelab.lifecycle import tracking
    from tunelab.pipeline import method
    from tunelab.runs import TrainResult
    from tunelab.scorecard import Scorecard

    if summary.best is None or not summary.best.run_dir:
        raise TrainingError(f"Sweep {run.study} has no completed trial to promote.")
    workspace = Workspace.resolve(run.workdir)
    target = tracking.setup(workspace, run.tracking_uri)
    cfg = trial_config(run.cfg, summary.best.params)
    result = TrainResult.load(summary.best.run_dir)
    card = Scorecard.load(summary.best.run_dir)
    tags = {**run.tags, f"{TAG}trial": str(summary.best.number)}
    return method.track_and_register(cfg, result, card, workspace, target, run.parent_run_id, tags)
