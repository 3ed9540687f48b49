"""The deployments of prefect.yaml (read by tunelab.deployments) created on a Prefect
server (`tunelab deploy`, like `prefect deploy --all`) or served in this process
(`tunelab serve`)."""

from __future__ import annotations

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.flows import load_flow_from_entrypoint
from prefect.schedules import Cron

from tunelab.deployments import DeploymentSpec, project_root, specs


def ensure_work_pool(name: str) -> bool:
    """Create the process work pool if it is missing; True when it was created."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return True


def _schedules(spec: DeploymentSpec, cron: str | None, timezone: str | None):
    chosen = spec.schedule(cron, timezone)
    return [Cron(chosen[0], timezone=chosen[1])] if chosen else None


def deploy(spec: DeploymentSpec, root, cron: str | None, timezone: str | None) -> dict:
    """Create (or update) one deployment; a process work pool runs it from ``root``."""
    created = ensure_work_pool(spec.work_pool)
    flow = load_flow_from_entrypoint(spec.entrypoint_in(root))
    deployment_id = flow.from_source(source=str(root), entrypoint=spec.entrypoint).deploy(
        name=spec.name,
        work_pool_name=spec.work_pool,
        parameters=spec.parameters,
        description=spec.description,
        schedules=_schedules(spec, cron, timezone),
        print_next_steps=False,
    )
    return {
        "deployment": f"{flow.name}/{spec.name}",
        "id": str(deployment_id),
        "work_pool": spec.work_pool + (" (created)" if created else ""),
        "schedule": spec.schedule_text(cron, timezone),
    }


def deploy_all(cron: str | None = None, timezone: str | None = None) -> list[dict]:
    """Every deployment of the project's prefect.yaml on the current Prefect API;
    ``cron``/``timezone`` override scheduled-retraining's schedule."""
    root = project_root()
    return [deploy(spec, root, cron, timezone) for spec in specs(root)]


def serve_all(cron: str | None = None, timezone: str | None = None) -> None:
    """Serve every deployment from this process until interrupted (`flow.serve`)."""
    root = project_root()
    serve(
        *[
            load_flow_from_entrypoint(spec.entrypoint_in(root)).to_deployment(
                name=spec.name,
                parameters=spec.parameters,
                description=spec.description,
                schedules=_schedules(spec, cron, timezone),
            )
            for spec in specs(root)
        ]
    )
