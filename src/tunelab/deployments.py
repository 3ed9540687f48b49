"""The two deployments of prefect.yaml, created against a Prefect server (`tunelab deploy`)
or served in-process (`tunelab serve`).

prefect.yaml is the one description of them (`prefect deploy --all` reads it too); this
module reads its `deployments:` list so the CLI and Prefect's own tooling agree. The
project (the folder holding prefect.yaml, configs/ and flows/) is $TUNELAB_PROJECT, else
the nearest folder at or above the current directory that holds prefect.yaml: the same
rule wherever tunelab is installed. flows/deployments.py creates or serves them with
Prefect; this module only reads and checks them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field

from tunelab.errors import ConfigError

PROJECT_ENV = "TUNELAB_PROJECT"
PROJECT_FILE = "prefect.yaml"

# The milestone plans bundled in configs/ (relative to the project folder, where workers
# run the flows): the choices a deployment's run form offers for `config`, next to a free
# path for any other plan. A test keeps this list and configs/ in step.
BundledPlan = Literal[
    "configs/milestone.yaml",
    "configs/tiny.yaml",
    "configs/milestone-full.yaml",
    "configs/retrain.yaml",
]
PlanChoice = (
    Annotated[BundledPlan, Field(title="bundled plan")]
    | Annotated[str, Field(title="path of a plan", min_length=1)]
)


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

    def schedule(self, cron: str | None = None, timezone: str | None = None):
        """(cron, time zone) of a scheduled deployment, the arguments overriding
        prefect.yaml's; None for one that runs only when triggered."""
        if not self.cron:
            return None
        return cron or self.cron, timezone or self.timezone or "UTC"

    def schedule_text(self, cron: str | None = None, timezone: str | None = None) -> str:
        chosen = self.schedule(cron, timezone)
        return f"{chosen[0]} ({chosen[1]})" if chosen else "manual"

    def entrypoint_in(self, root: Path) -> str:
        """The flow's entrypoint as an absolute path in the project folder."""
        path, name = self.entrypoint.split(":")
        return f"{root / path}:{name}"


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
