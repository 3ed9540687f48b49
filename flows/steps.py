"""Prefect tasks shared by the milestone and retraining flows: train -> evaluate ->
track/register/gate for one method, each cached on its inputs.

A step's cache key is built from what its output depends on (the data version, its
config section, the code version: see tunelab.milestone). Results are persisted in
the workspace (.prefect-results/), so an unchanged step is reused across runs and
processes; `refresh=True` recomputes everything.
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tunelab import tracking
from tunelab.pipeline import method as lifecycle
from tunelab.pipeline import plan as milestone
from tunelab.pipeline.plan import MethodSpec
from tunelab.report import MethodEntry
from tunelab.scorecard import Scorecard
from tunelab.runs import TrainResult
from tunelab.workspace import Workspace

STEPS = ("train", "evaluate", "register")


def _key(context, parameters) -> str:
    return parameters["key"]


@task(name="train", persist_result=True, cache_key_fn=_key)
def train_step(cfg, workdir: str, data_version: str, key: str) -> dict:
    from tunelab.data import versioning
    from tunelab.train import train

    workspace = Workspace(Path(workdir))
    started = time.perf_counter()
    data = versioning.load_splits(cfg.data.name, workspace)
    result = train(cfg, data, workspace, data_version=data_version)
    return {"run_dir": result.output_dir, "seconds": time.perf_counter() - started}


@task(name="evaluate", persist_result=True, cache_key_fn=_key)
def evaluate_step(cfg, run_dir: str, workdir: str, key: str) -> dict:
    started = time.perf_counter()
    card = lifecycle.evaluate(cfg, TrainResult.load(run_dir), Workspace(Path(workdir)))
    return {"status": card.status, "seconds": time.perf_counter() - started}


@task(name="register", persist_result=True, cache_key_fn=_key)
def register_step(
    cfg,
    run_dir: str,
    workdir: str,
    tracking_uri: str,
    parent_run_id: str | None,
    extra_tags: dict,
    key: str,
) -> dict:
    """Track the run in MLflow, register its model, run the gate (cached like the others:
    an unchanged run is not logged or registered twice)."""
    started = time.perf_counter()
    workspace = Workspace(Path(workdir))
    target = tracking.setup(workspace, tracking_uri)
    outcome = lifecycle.track_and_register(
        cfg,
        TrainResult.load(run_dir),
        Scorecard.load(run_dir),
        workspace,
        target,
        parent_run_id,
        extra_tags,
    )
    tracked = outcome.tracked
    return {
        "run_id": tracked.run_id if tracked else None,
        "run_url": tracked.run_url if tracked else None,
        "model_name": outcome.model_name,
        "version": outcome.version,
        "decision": outcome.decision.to_dict() if outcome.decision else None,
        "aliases": outcome.aliases,
        "not_registered": outcome.not_registered,
        "seconds": time.perf_counter() - started,
    }


@task(name="parent-run", cache_policy=NO_CACHE)
def start_parent_run(dataset: str, workdir: str, tracking_uri: str, tags: dict) -> str:
    target = tracking.setup(Workspace(Path(workdir)), tracking_uri)
    return tracking.start_parent(target, dataset, tags.get("tunelab.pipeline", "pipeline"), tags)


@dataclass(frozen=True)
class MethodContext:
    """What every method of one pipeline run shares."""

    workspace: Workspace
    target: tracking.Tracking
    storage: object  # the saved LocalFileSystem block holding persisted results (the cache)
    code: str  # tunelab.milestone.code_version()
    refresh: bool
    extra_tags: dict


def run_method(
    spec: MethodSpec,
    context: MethodContext,
    data_version: str,
    parent_run_id: str | None,
    init_from: str | None = None,
) -> MethodEntry:
    """One method through the three steps; a failure is recorded in the entry, not raised."""
    entry = MethodEntry(dataset=spec.dataset, method=spec.name, status="ok")
    overrides = [f"train.dpo.init_from={init_from}"] if init_from else []
    try:
        cfg = spec.load(overrides)
    except Exception as exc:  # noqa: BLE001 - a bad config fails this method only
        return _failed(entry, "config", exc)
    target, root = context.target, str(context.workspace.root)
    keys = {"train": milestone.train_key(cfg, data_version, context.code)}
    keys["evaluate"] = milestone.evaluate_key(keys["train"], cfg)
    keys["register"] = milestone.register_key(keys["evaluate"], cfg, target.uri)

    def options(step):
        return step.with_options(
            task_run_name=f"{step.name} {spec.label}",
            refresh_cache=context.refresh,
            result_storage=context.storage,
        )

    calls = {
        "train": lambda: options(train_step)(
            cfg, root, data_version, key=keys["train"], return_state=True
        ),
        "evaluate": lambda: options(evaluate_step)(
            cfg, entry.run_dir, root, key=keys["evaluate"], return_state=True
        ),
        "register": lambda: options(register_step)(
            cfg,
            entry.run_dir,
            root,
            target.uri,
            parent_run_id,
            context.extra_tags,
            key=keys["register"],
            return_state=True,
        ),
    }
    for step in STEPS:
        state = calls[step]()
        if state.is_failed():
            return _failed(entry, step, state.result(raise_on_failure=False))
        value = state.result()
        reused = state.name == "Cached"
        if reused:
            entry.reused.append(step)
        entry.seconds[step] = 0.0 if reused else float(value.get("seconds", 0.0))
        if step == "train":
            entry.run_dir = value["run_dir"]
        elif step == "evaluate" and value["status"] != "ok":
            entry.status = "failed"
            entry.error = f"evaluate: {Scorecard.load(entry.run_dir).error}"
        elif step == "register":
            entry.run_id, entry.run_url = value["run_id"], value["run_url"]
            entry.model_name, entry.version = value["model_name"], value["version"]
            entry.decision, entry.not_registered = value["decision"], value["not_registered"]
    return entry


def _failed(entry: MethodEntry, step: str, exc: BaseException) -> MethodEntry:
    entry.status = "failed"
    entry.error = f"{step}: {type(exc).__name__}: {exc}"
    return entry


def run_methods(
    specs: list[MethodSpec],
    concurrency: int,
    run_one,
) -> list[MethodEntry]:
    """Run methods, ``concurrency`` at a time; DPO methods with init_from wait for their
    source. Each thread gets a copy of the Prefect run context."""
    entries: dict[str, MethodEntry] = {}
    waves = [[s for s in specs if not s.init_from], [s for s in specs if s.init_from]]
    for wave in waves:
        if concurrency <= 1 or len(wave) <= 1:
            for spec in wave:
                entries[spec.label] = run_one(spec, entries)
            continue
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = {
                spec.label: pool.submit(contextvars.copy_context().run, run_one, spec, entries)
                for spec in wave
            }
            for label, future in futures.items():
                entries[label] = future.result()
    return [entries[s.label] for s in specs]


def init_source(spec: MethodSpec, entries: dict[str, MethodEntry]) -> str | None:
    """The run folder a DPO method starts from (its init_from method's), if any."""
    if not spec.init_from:
        return None
    source = entries.get(spec.init_from)
    if source is None or source.status != "ok" or not source.run_dir:
        raise RuntimeError(
            f"{spec.label} starts from {spec.init_from}, which did not finish"
            + (f" ({source.error})" if source and source.error else "")
        )
    return source.run_dir
