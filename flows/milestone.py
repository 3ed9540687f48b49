"""Flow `milestone`: prepare the data (the validation gate) -> every configured method
through train -> evaluate -> track/register/gate -> the milestone review.

Wiring only: each task calls one tunelab function. Methods run through a Prefect task
runner, `concurrency` at a time; DPO methods with `init_from` wait for their source.
A failed method does not stop the others; the flow ends Failed when a required method
failed. Unchanged steps are reused from the cache (keys: tunelab.pipeline.cache).
Each flow publishes its review under its own artifact keys (``review_keys``), the same on
every run, so the Artifacts page keeps one history per flow.
"""

from __future__ import annotations

from functools import partial

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.data import DatasetSpec, prepare_data
from flows.runtime import flow_run_info, require_api, result_storage, workspace_lock
from tunelab import console
from tunelab.deployments import PlanChoice
from tunelab.lifecycle import tracking
from tunelab.pipeline import method, run, summary
from tunelab.pipeline.plan import Plan, load_plan
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
    """Followed live in MLflow; a cached run is neither trained nor logged again."""
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


@task(name="method", cache_policy=NO_CACHE, task_run_name="{spec.label}")
def run_method(spec, context, refresh: bool, storage, finished=()) -> method.MethodRecord:
    steps = partial(run_step, refresh=refresh, storage=storage)
    return method.run_method(spec, context, steps, finished)


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


def run_plan(plan: Plan, workspace: Workspace, refresh: bool, pipeline: str):
    """Every method of every dataset of the plan, then the review: both flows' body."""
    started = summary.start_clock()
    target = tracking.setup(workspace)
    datasets = [DatasetSpec.of(cfg) for cfg in plan.data_configs()]
    prepared = prepare_data(datasets, str(workspace.root))
    tags = run.lineage_tags(pipeline, *flow_run_info())
    context = begin(plan, str(workspace.root), target, prepared, tags)
    storage = result_storage(workspace)
    options = {"context": unmapped(context), "refresh": refresh, "storage": unmapped(storage)}
    with ThreadPoolTaskRunner(max_workers=plan.concurrency) as runner:
        first = runner.map(run_method, {"spec": plan.independent(), **options})
        then = runner.map(
            run_method, {"spec": plan.dependent(), "finished": unmapped(first), **options}
        )
        records = run.in_plan_order(plan, first.result(), then.result())
    closing = review(plan, workspace, prepared, records, context, target, pipeline)
    return summary.finish(plan, records, closing, started)


# The docstring's Args are the descriptions of the deployment's run form.
@flow(name="milestone")  # log_prints off: see flows/data.py
def milestone(
    config: PlanChoice = "configs/milestone.yaml",
    workdir: str | None = None,
    refresh: bool = False,
) -> summary.PipelineSummary:
    """Train, evaluate, register and compare every configured method.

    Args:
        config: The milestone plan: datasets, methods and their run configs. One bundled
            in configs/ (tiny.yaml runs in minutes on a CPU), or the path of another plan,
            relative to the project folder where the worker runs.
        workdir: The workspace (data, MLflow store, reports, cache). Empty: $TUNELAB_WORKDIR,
            else the folder the flow runs in.
        refresh: Recompute every step instead of reusing the unchanged ones from the cache.
    """
    workspace = Workspace.resolve(workdir).ensure()
    with workspace_lock(workspace):
        return run_plan(load_plan(config), workspace, refresh, "milestone")
