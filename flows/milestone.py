"""Flow `milestone`: prepare the data (the validation gate) -> every configured method
through train -> evaluate -> track/register/gate -> the milestone review.

Wiring only: each task calls one tunelab function. Methods run through a Prefect task
runner (flows/runners.py): threads here, `concurrency` at a time, or the worker processes
of a Dask / Ray cluster; DPO and GRPO methods with `init_from` wait for their source.
A training step on a GPU holds a slot of the `gpu` concurrency limit.
A failed method does not stop the others; the flow ends Failed when a required method
failed. Unchanged steps are reused from the cache (keys: tunelab.pipeline.cache).
Each flow publishes its review under its own artifact keys (``review_keys``), the same on
every run, so the Artifacts page keeps one history per flow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from flows.data import DatasetSpec, prepare_data
from flows.runners import gpu_slot, shared_api, task_runner
from flows.runtime import (
    flow_run_info,
    require_api,
    require_store,
    result_storage,
    workspace_lock,
)
from tunelab import console
from tunelab.deployments import PlanChoice
from tunelab.lifecycle import tracking
from tunelab.pipeline import method, run, summary
from tunelab.pipeline.plan import Plan, load_plan
from tunelab.pipeline.runner import RunnerChoice, RunnerSpec, chosen_runner
from tunelab.workspace import Workspace


def review_keys(pipeline: str) -> tuple[str, str]:
    """The keys of a pipeline's review artifacts (Markdown, table): 'milestone-review' and
    'milestone-review-table' for the milestone flow, 'retraining-review' and
    'retraining-review-table' for scheduled retraining."""
    return f"{pipeline}-review", f"{pipeline}-review-table"


def _key(context, parameters) -> str:
    return parameters["key"]


@task(name="train", persist_result=True, cache_key_fn=_key)
def train(cfg, workdir, data_version, tracking_uri, parent, tags, key) -> method.Trained:
    """Followed live in MLflow; a cached run is neither trained nor logged again. On a GPU
    it holds a slot of the `gpu` limit while it trains."""
    with gpu_slot(cfg):
        return method.train_step(cfg, workdir, data_version, tracking_uri, parent, tags)


@task(name="evaluate", persist_result=True, cache_key_fn=_key)
def evaluate(cfg, run_dir: str, workdir: str, key: str) -> method.Evaluated:
    return method.evaluate_step(cfg, run_dir, workdir)


@task(name="register", persist_result=True, cache_key_fn=_key)
def register(cfg, run_dir, workdir, tracking_uri, parent, tags, key) -> method.Registration:
    """Cached like the others: an unchanged run is not logged or registered twice."""
    return method.register_step(cfg, run_dir, workdir, tracking_uri, parent, tags)


STEP_TASKS = {"train": train, "evaluate": evaluate, "register": register}


def run_step(call: method.StepCall, refresh: bool, storage) -> method.StepOutcome:
    """Run one step as its task; report its value or exception and whether it was cached."""
    require_api(f"run the {call.step} step of {call.label}")
    require_store(f"run the {call.step} step of {call.label}")
    step = STEP_TASKS[call.step].with_options(
        task_run_name=f"{call.step} {call.label}", refresh_cache=refresh, result_storage=storage
    )
    console.step_started(call)  # the CLI's live view of the steps, when it listens
    state = step(*call.args, key=call.key, return_state=True)
    outcome = method.StepOutcome(
        state.result(raise_on_failure=False), state.is_failed(), state.name == "Cached"
    )
    console.step_finished(call, outcome)
    return outcome


@dataclass
class MethodRun:
    """A method's record, and its step events for the flow's process when it ran in
    another one (a Dask or Ray worker), where nobody listened."""

    record: method.MethodRecord
    pid: int = field(default_factory=os.getpid)
    events: list[tuple[method.StepCall, method.StepOutcome]] = field(default_factory=list)

    def replay(self) -> None:
        if self.pid != os.getpid():
            for call, outcome in self.events:
                console.step_started(call)
                console.step_finished(call, outcome)


@task(name="method", cache_policy=NO_CACHE, task_run_name="{spec.label}")
def run_method(spec, context, refresh: bool, storage, finished=()) -> MethodRun:
    events = []

    def steps(call: method.StepCall) -> method.StepOutcome:
        outcome = run_step(call, refresh, storage)
        events.append((call, outcome))
        return outcome

    record = method.run_method(spec, context, steps, list(finished), defer_register=True)
    return MethodRun(record, events=events)


@task(name="parent-runs", cache_policy=NO_CACHE)
def begin(plan: Plan, workdir: str, target, prepared, tags: dict):
    require_api("open the MLflow parent runs")
    return run.begin(plan, workdir, target, prepared, tags)


@task(name="review", cache_policy=NO_CACHE)
def review(
    plan: Plan, workspace, prepared, records, context, target, pipeline: str
) -> summary.Closing:
    """The review page, published as Prefect artifacts and logged to each parent run."""
    require_api("write the review")
    closing = summary.close(plan, workspace, prepared, records, context, target, flow_run_info()[1])
    page, table = review_keys(pipeline)
    create_markdown_artifact(key=page, markdown=closing.files.published, description=plan.title)
    create_table_artifact(key=table, table=closing.files.table, description=plan.title)
    return closing


def _registered(futures, register) -> list[method.MethodRecord]:
    """The records of one wave of methods, once each trained and was scored (shown in the
    CLI's step view as each ends), registered one after another in plan order: the gate's
    bar (the champion, the best baseline logged so far) is then the same whichever
    parallel method finished first. The next wave starts after them (a GRPO reward may
    name a champion registered here)."""
    for future in as_completed(list(futures)):
        done = future.result(raise_on_failure=False)
        if isinstance(done, MethodRun):
            done.replay()
    records = [done.record for done in futures.result()]
    return [method.register_pending(record, register) for record in records]


def run_plan(
    plan: Plan, workspace: Workspace, refresh: bool, pipeline: str, runner: RunnerSpec | None = None
):
    """Every method of every dataset of the plan, then the review: both flows' body.
    ``runner`` (default: the plan's) runs the methods."""
    started = summary.start_clock()
    target = tracking.setup(workspace)
    datasets = [DatasetSpec.of(cfg) for cfg in plan.data_configs()]
    prepared = prepare_data(datasets, str(workspace.root))
    tags = run.lineage_tags(pipeline, *flow_run_info())
    context = begin(plan, str(workspace.root), target, prepared, tags)
    storage = result_storage(workspace)
    options = {"context": unmapped(context), "refresh": refresh, "storage": unmapped(storage)}
    spec = (runner or plan.runner).resolve(plan.concurrency, len(plan.independent()))
    get_run_logger().info("The methods run on a %s.", spec.describe())
    register = partial(run_step, refresh=refresh, storage=storage)
    with shared_api(spec.kind, spec.address), task_runner(*spec.arguments()) as methods:
        first = _registered(
            methods.map(run_method, {"spec": plan.independent(), **options}), register
        )
        then = methods.map(
            run_method, {"spec": plan.dependent(), "finished": unmapped(first), **options}
        )
        records = run.in_plan_order(plan, first, _registered(then, register))
    closing = review(plan, workspace, prepared, records, context, target, pipeline)
    return summary.finish(plan, records, closing, started)


# The docstring's Args are the descriptions of the deployment's run form.
@flow(name="milestone")  # log_prints off: see flows/data.py
def milestone(
    config: PlanChoice = "configs/milestone.yaml",
    workdir: str | None = None,
    refresh: bool = False,
    runner: RunnerChoice | None = None,
    address: str | None = None,
    workers: int | None = None,
) -> summary.PipelineSummary:
    """Train, evaluate, register and compare every configured method.

    Args:
        config: The milestone plan: datasets, methods and their run configs. One bundled
            in configs/ (tiny.yaml runs in minutes on a CPU), or the path of another plan,
            relative to the project folder where the worker runs.
        workdir: The workspace (data, MLflow store, reports, cache). Empty: $TUNELAB_WORKDIR,
            else the folder the flow runs in.
        refresh: Recompute every step instead of reusing the unchanged ones from the cache.
        runner: Where the methods run: thread (in the flow's process), dask or ray (worker
            processes of a cluster). Empty: the plan's `runner`, else thread.
        address: The scheduler address of an existing Dask or Ray cluster, e.g.
            tcp://10.0.0.5:8786. Empty: a local cluster on this machine.
        workers: Methods at a time: threads, or the local cluster's worker processes.
            Empty: the plan's concurrency (thread), else one per CPU (dask, ray).
    """
    workspace = Workspace.resolve(workdir).ensure()
    plan = load_plan(config)
    spec = chosen_runner(plan.runner, runner, address, workers, "the flow's parameters")
    with workspace_lock(workspace):
        return run_plan(plan, workspace, refresh, "milestone", spec)
