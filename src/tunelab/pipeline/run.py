"""A pipeline run's shared state: the code version, the data versions, one MLflow parent
run per dataset; and the records put back in plan order at the end."""

from __future__ import annotations

from tunelab.data.prepare import PreparedDataset
from tunelab.lifecycle import tracking
from tunelab.pipeline.cache import code_version
from tunelab.pipeline.method import MethodContext, MethodRecord
from tunelab.pipeline.plan import Plan


def begin(
    plan: Plan,
    workdir: str,
    target: tracking.Tracking,
    prepared: list[PreparedDataset],
    tags: dict[str, str],
) -> MethodContext:
    """Open one MLflow parent run per dataset; the methods' runs nest under it."""
    pipeline = tags.get("tunelab.pipeline", "pipeline")
    parents = {d.name: tracking.start_parent(target, d.name, pipeline, tags) for d in plan.datasets}
    versions = {p.name: p.version_id for p in prepared}
    return MethodContext(workdir, target.uri, code_version(), versions, parents, tags)


def end(context: MethodContext, records: list[MethodRecord], target: tracking.Tracking) -> None:
    """Close each dataset's parent run: FAILED when one of its methods failed."""
    for dataset, parent in context.parents.items():
        failed = any(not r.ok for r in records if r.dataset == dataset)
        tracking.end_parent(target, parent, failed=failed)


def in_plan_order(plan: Plan, *groups: list[MethodRecord]) -> list[MethodRecord]:
    """The records of every wave, in the order the plan lists the methods."""
    found = {r.label: r for group in groups for r in group}
    return [found[m.label] for m in plan.methods()]


def lineage_tags(pipeline: str, flow_run_id: str | None, flow_run_url: str | None) -> dict:
    """Tags every run of a pipeline carries: which pipeline, which orchestrator run."""
    tags = {"tunelab.pipeline": pipeline}
    if flow_run_id:
        tags["tunelab.prefect_flow_run_id"] = str(flow_run_id)
    if flow_run_url:
        tags["tunelab.prefect_flow_run_url"] = flow_run_url
    return tags
