"""Flow `milestone`: prepare the data (the validation gate) -> for each dataset, every
configured method through train -> evaluate -> track/register/gate -> the milestone
review (Markdown + HTML, Prefect artifacts, logged to MLflow).

A failed data gate stops everything before training. A failed method does not stop the
others: the review shows it with its error, and the flow ends Failed when a required
method failed. Unchanged steps are reused from the cache (see flows/steps.py).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from functools import partial

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.data import prepare_data
from flows.steps import STEPS, MethodContext, init_source, run_method, run_methods, start_parent_run
from tunelab.pipeline import plan as plan_mod
from tunelab import report, tracking
from tunelab.errors import PipelineError
from tunelab.pipeline.plan import Plan
from tunelab.workspace import Workspace

REVIEW_KEY = "milestone-review"


def flow_run_info() -> tuple[str | None, str | None]:
    from prefect.runtime import flow_run

    run_id = flow_run.id
    url = flow_run.ui_url if run_id else None
    # Without PREFECT_UI_URL (a temporary local API) there is no UI to link to.
    return run_id, url if url and url.startswith("http") else None


def result_storage(workspace: Workspace):
    """Persisted results (the cache) live in the workspace, in a saved Prefect block."""
    from prefect.filesystems import LocalFileSystem

    folder = workspace.prefect_results_dir
    folder.mkdir(parents=True, exist_ok=True)
    block = LocalFileSystem(basepath=str(folder))
    name = "tunelab-results-" + plan_mod.step_key("ws", str(folder)).split("-")[-1][:12]
    block.save(name, overwrite=True)
    return block


def run_datasets(
    plan: Plan,
    workspace: Workspace,
    versions: dict[str, str],
    target: tracking.Tracking,
    refresh: bool,
    pipeline: str,
) -> tuple[list[report.MethodEntry], dict[str, str]]:
    """Every method of every dataset in the plan, and the MLflow parent run of each dataset."""
    context = MethodContext(
        workspace=workspace,
        target=target,
        storage=result_storage(workspace),
        code=plan_mod.code_version(),
        refresh=refresh,
        extra_tags=_lineage_tags(pipeline),
    )
    entries: list[report.MethodEntry] = []
    parents: dict[str, str] = {}
    for dataset in plan.datasets:
        parent = start_parent_run(dataset.name, str(workspace.root), target.uri, context.extra_tags)
        finished = {f"{e.dataset}/{e.method}": e for e in entries}
        run_one = partial(
            _run_one,
            context=context,
            data_version=versions[dataset.name],
            parent=parent,
            finished=finished,
        )
        done = run_methods(dataset.methods, plan.concurrency, run_one)
        entries.extend(done)
        tracking.end_parent(target, parent, failed=any(e.status != "ok" for e in done))
        parents[dataset.name] = parent
    return entries, parents


def _lineage_tags(pipeline: str) -> dict[str, str]:
    run_id, run_url = flow_run_info()
    tags = {"tunelab.pipeline": pipeline}
    if run_id:
        tags["tunelab.prefect_flow_run_id"] = str(run_id)
    if run_url:
        tags["tunelab.prefect_flow_run_url"] = run_url
    return tags


def _run_one(spec, done, *, context, data_version, parent, finished) -> report.MethodEntry:
    try:
        source = init_source(spec, finished | done)
    except RuntimeError as exc:
        return report.MethodEntry(spec.dataset, spec.name, "failed", error=str(exc))
    return run_method(spec, context, data_version, parent, source)


def champions_of(entries: list[report.MethodEntry], target: tracking.Tracking) -> dict:
    """Registered model name -> its champion version now (None when it has none)."""
    from tunelab import registry

    names = dict.fromkeys(e.model_name for e in entries if e.model_name)
    return {name: registry.aliases(target, name).get("champion") for name in names}


@task(name="milestone-review", cache_policy=NO_CACHE)
def write_review(
    workspace: Workspace,
    data_rows: list[dict],
    entries: list[report.MethodEntry],
    champions: dict,
    parents: dict[str, str],
    target: tracking.Tracking,
    title: str,
) -> report.ReviewFiles:
    """The review page, published as Prefect artifacts and logged to each parent run."""
    created = datetime.now(UTC)
    folder = workspace.reports_dir / "milestone" / created.strftime("%Y%m%dT%H%M%SZ")
    _, flow_url = flow_run_info()
    review = report.Review(
        title=title,
        created=created.isoformat(timespec="seconds"),
        datasets=[_dataset_entry(row) for row in data_rows],
        methods=entries,
        champions=champions,
        flow_run_url=flow_url,
        mlflow=target.ui_command(),
    )
    files = report.write_review(review, folder)
    create_markdown_artifact(key=REVIEW_KEY, markdown=files.markdown, description=title)
    create_table_artifact(key=f"{REVIEW_KEY}-table", table=files.table, description=title)
    for parent in parents.values():
        tracking.log_folder(target, parent, folder, "milestone-review")
    return files


def _dataset_entry(row: dict) -> report.DatasetEntry:
    return report.DatasetEntry(
        name=row["dataset"],
        version=row["version"],
        rows={s: row.get(f"rows_{s}", 0) for s in ("train", "validation", "test")},
        validation=row.get("validation", "passed"),
        data_docs=row.get("data_docs") or None,
        report=row.get("report"),
    )


@flow(name="milestone")  # log_prints off: see flows/data.py
def milestone(
    config: str = "configs/milestone.yaml", workdir: str | None = None, refresh: bool = False
) -> dict:
    """Train, evaluate, register and compare every configured method; returns a summary."""
    started = time.perf_counter()
    workspace = Workspace.resolve(workdir).ensure()
    plan = plan_mod.load_plan(config)
    target = tracking.setup(workspace)
    data_rows = prepare_data(plan.data_configs(), str(workspace.root))
    versions = {row["dataset"]: row["version"] for row in data_rows}
    entries, parents = run_datasets(plan, workspace, versions, target, refresh, "milestone")
    champions = champions_of(entries, target)
    files = write_review(workspace, data_rows, entries, champions, parents, target, plan.title)
    return finish(plan, entries, files, champions, started)


def finish(plan: Plan, entries, files, champions: dict, started: float) -> dict:
    """The flow's summary; raises PipelineError (flow Failed) if a required method failed."""
    wall = time.perf_counter() - started
    per_step = {step: sum(e.seconds.get(step, 0.0) for e in entries) for step in STEPS}
    summary = {
        "report": str(files.markdown_path),
        "html": str(files.html_path),
        "wall_seconds": round(wall, 2),
        # Time inside the library's train / evaluate / register functions (0 when reused).
        "step_seconds": round(sum(per_step.values()), 2),
        **{f"{step}_seconds": round(value, 2) for step, value in per_step.items()},
        "methods": [
            {
                "dataset": e.dataset,
                "method": e.method,
                "status": e.status,
                "error": e.error,
                "reused": list(e.reused),
                "run_dir": e.run_dir,
                "model_name": e.model_name,
                "version": e.version,
                "outcome": (
                    ("promoted (forced)" if e.decision.get("forced") else "promoted")
                    if e.decision and (e.decision.get("promote") or e.decision.get("forced"))
                    else ("not promoted" if e.decision else None)
                ),
                "seconds": e.seconds,
            }
            for e in entries
        ],
        "champions": champions,
    }
    (files.folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    required = {m.label for m in plan.methods() if m.required}
    failed = [e for e in entries if e.status != "ok" and f"{e.dataset}/{e.method}" in required]
    get_run_logger().info("Milestone review: %s (HTML: %s)", files.markdown_path, files.html_path)
    if failed:
        listing = "; ".join(f"{e.dataset}/{e.method}: {e.error}" for e in failed)
        raise PipelineError(
            f"{len(failed)} required method(s) failed: {listing}. The review in "
            f"{files.markdown_path} shows every method's result."
        )
    return summary
