"""The two deployments of prefect.yaml, created against a Prefect server (`tunelab deploy`)
or served in-process (`tunelab serve`).

prefect.yaml is the one description of them (`prefect deploy --all` reads it too); this
module reads its `deployments:` list so the CLI and Prefect's own tooling agree. The
project (the folder holding prefect.yaml, configs/ and flows/) is $TUNELAB_PROJECT, else
the nearest folder at or above the current directory that holds prefect.yaml: the same
rule wherever tunelab is installed. Prefect is imported inside the functions: only the
CLI's deploy and serve commands call them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunelab.errors import ConfigError

PROJECT_ENV = "TUNELAB_PROJECT"
PROJECT_FILE = "prefect.yaml"


def project_root(start: Path | None = None) -> Path:
    """The tunelab project folder: $TUNELAB_PROJECT, else the nearest folder at or above
    ``start`` (the current directory) that holds prefect.yaml."""
    configured = os.environ.get(PROJECT_ENV)
    if configured:
        root = Path(configured).expanduser().resolve()
        if not (root / PROJECT_FILE).is_file():
            raise ConfigError(f"{PROJECT_ENV}={configured} holds no {PROJECT_FILE}.")
        return root
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise ConfigError(
        f"No {PROJECT_FILE} in {here} or above it: run this command inside a tunelab "
        f"project (a checkout of it), or set {PROJECT_ENV} to that folder."
    )


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

    def load_flow(self, root: Path):
        from prefect.flows import load_flow_from_entrypoint

        path, name = self.entrypoint.split(":")
        return load_flow_from_entrypoint(f"{root / path}:{name}")


def specs(root: Path) -> list[DeploymentSpec]:
    """The deployments listed in the project's prefect.yaml."""
    project_file = root / PROJECT_FILE
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
    root = project_root()
    rows = []
    for spec in specs(root):
        created = ensure_work_pool(spec.work_pool)
        flow = spec.load_flow(root)
        source = flow.from_source(source=str(root), entrypoint=spec.entrypoint)
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

    root = project_root()
    deployments = [
        spec.load_flow(root).to_deployment(
            name=spec.name,
            parameters=spec.parameters,
            description=spec.description,
            schedules=spec.schedules(cron, timezone) if spec.cron else None,
        )
        for spec in specs(root)
    ]
    serve(*deployments)
