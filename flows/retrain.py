"""Flow `scheduled-retraining`: retrain when the data changed, through the same gate.

For each dataset of the config (milestone format, usually one dataset and the method(s)
that serve it): ingest and split the source, compute the data version it would get, and
compare it with the data version of each registered model's champion. Unchanged: record
"skipped: data unchanged (version ...)" as an artifact and end Completed. Changed (or no
champion yet): the milestone pipeline on those datasets, promoting only through the gate.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.data import io_retries
from flows.milestone import run_plan
from flows.runtime import require_api, workspace_lock
from tunelab.data import prepare
from tunelab.deployments import PlanChoice
from tunelab.lifecycle import tracking
from tunelab.pipeline import retrain
from tunelab.pipeline.plan import load_plan
from tunelab.pipeline.runner import RunnerChoice, chosen_runner
from tunelab.pipeline.summary import PipelineSummary
from tunelab.workspace import Workspace

DECISION_KEY = "retraining-decision"


@task(name="candidate-versions", cache_policy=NO_CACHE, **io_retries)
def candidate_versions(plan) -> dict[str, str]:
    """dataset -> the version id its source's data would get now (nothing is written)."""
    return prepare.candidate_versions(plan.data_configs())


@task(name="retraining-decision", cache_policy=NO_CACHE)
def decide(plan, candidates: dict[str, str], workspace: Workspace) -> retrain.RetrainDecision:
    decision = retrain.decide(plan, candidates, tracking.setup(workspace))
    get_run_logger().info(decision.message)
    require_api("publish the retraining decision")
    create_markdown_artifact(
        key=DECISION_KEY, markdown=decision.markdown, description="Retrain or skip, per dataset"
    )
    return decision


# The docstring's Args are the descriptions of the deployment's run form.
@flow(name="scheduled-retraining")  # log_prints off: see flows/data.py
def scheduled_retraining(
    config: PlanChoice = "configs/retrain.yaml",
    workdir: str | None = None,
    runner: RunnerChoice | None = None,
    address: str | None = None,
    workers: int | None = None,
) -> PipelineSummary:
    """Retrain the datasets whose data changed since their champion was trained.

    Args:
        config: The plan (milestone format) of the served datasets and the methods that
            retrain them. One bundled in configs/, or the path of another plan, relative
            to the project folder where the worker runs.
        workdir: The workspace (data, MLflow store, reports, cache). Empty: $TUNELAB_WORKDIR,
            else the folder the flow runs in.
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
    # Held from the decision on: what the champions serve cannot change in between.
    with workspace_lock(workspace):
        decision = decide(plan, candidate_versions(plan), workspace)
        return decision.apply(lambda subset: run_plan(subset, workspace, False, "retraining", spec))
