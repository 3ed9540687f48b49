"""The two deployments of prefect.yaml, created against a Prefect server (`tunelab deploy`)
or served in-process (`tunelab serve`).

prefect.yaml is the one description of them (`prefect deploy --all` reads it too); this
module reads its `deployments:` list so the CLI and Prefect's own tooling agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tunelab.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILE = PROJECT_ROOT / "prefect.yaml"


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str  # "flows/milestone.py:milestone"
    parameters: dict
    description: str
    work_pool: str
    cron: str | None = None
    timezone: str | None = None

    def schedules(self, cron: str | None = None, timezone: str | None = None) -> list:
        from prefect.schedules import Cron

        expression = cron or self.cron
        if not expression:
            return []
        return [Cron(expression, timezone=timezone or self.timezone or "UTC")]

    def load_flow(self):
        from prefect.flows import load_flow_from_entrypoint

        path, name = self.entrypoint.split(":")
        return load_flow_from_entrypoint(f"{PROJECT_ROOT / path}:{name}")


def specs(project_file: Path = PROJECT_FILE) -> list[DeploymentSpec]:
    """The deployments listed in prefect.yaml."""
    raw = yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}
    found = []
    for entry in raw.get("deployments") or []:
        schedule = (entry.get("schedules") or [{}])[0]
        found.append(
            DeploymentSpec(
                name=entry["name"],
                entrypoint=entry["entrypoint"],
                parameters=dict(entry.get("parameters") or {}),
                description=entry.get("description", ""),
                work_pool=(entry.get("work_pool") or {}).get("name", "tunelab"),
                cron=schedule.get("cron"),
                timezone=schedule.get("timezone"),
            )
        )
    if not found:
        raise ConfigError(f"{project_file} lists no deployments.")
    return found


def ensure_work_pool(name: str) -> bool:
    """Create the process work pool if it is missing; True when it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return True


def deploy_all(cron: str | None = None, timezone: str | None = None) -> list[dict]:
    """Create (or update) every deployment on the current Prefect API, from this checkout.

    Equivalent to `prefect deploy --all` with prefect.yaml: a process work pool runs the
    flows from this folder. ``cron``/``timezone`` override scheduled-retraining's schedule.
    """
    rows = []
    for spec in specs():
        created = ensure_work_pool(spec.work_pool)
        flow = spec.load_flow()
        source = flow.from_source(source=str(PROJECT_ROOT), entrypoint=spec.entrypoint)
        deployment_id = source.deploy(
            name=spec.name,
            work_pool_name=spec.work_pool,
            parameters=spec.parameters,
            description=spec.description,
            schedules=spec.schedules(cron, timezone) if spec.cron else None,
            print_next_steps=False,
        )
        rows.append(
            {
                "deployment": f"{flow.name}/{spec.name}",
                "id": str(deployment_id),
                "work_pool": spec.work_pool + (" (created)" if created else ""),
                "schedule": (
                    f"{cron or spec.cron} ({timezone or spec.timezone or 'UTC'})"
                    if spec.cron
                    else "manual"
                ),
            }
        )
    return rows


def serve_all(cron: str | None = None, timezone: str | None = None) -> None:
    """Serve every deployment from this process until interrupted (`flow.serve`)."""
    from prefect import serve

    deployments = [
        spec.load_flow().to_deployment(
            name=spec.name,
            parameters=spec.parameters,
            description=spec.description,
            schedules=spec.schedules(cron, timezone) if spec.cron else None,
        )
        for spec in specs()
    ]
    serve(*deployments)
