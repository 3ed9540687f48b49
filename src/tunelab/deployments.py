"""The two deployments of prefect.yaml, created against a Prefect server (`tunelab deploy`)
or served in-process (`tunelab serve`), and where their flow runs run: a work pool of type
process, docker or kubernetes (``DeploymentTarget``: the pool, how a run gets the code, the
job variables that pick the image, request GPUs and point at the team's stores).

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

PoolType = Literal["process", "docker", "kubernetes"]
POOL_TYPES: tuple[str, ...] = ("process", "docker", "kubernetes")
# The pool each type deploys to when none is named.
DEFAULT_POOLS = {"process": "tunelab", "docker": "tunelab-docker", "kubernetes": "tunelab-k8s"}
# Where the Dockerfile puts the project (prefect.yaml, configs/, flows/) in the image.
IMAGE_PROJECT = "/opt/tunelab"
DEFAULT_IMAGE = "tunelab:0.1.0"
# The settings a flow run needs to reach the team's stores, copied from the deploying
# shell into the job's environment when set. Credentials are never among them: workers
# get those from their own environment, secrets or the tools' credential files.
STORE_ENV = (
    "MLFLOW_TRACKING_URI",
    "TUNELAB_WORKDIR",
    "TUNELAB_STORE",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
)
# Words that mark a variable as a credential: refused in a job's environment.
SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "CREDENTIAL")

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


# ---------------------------------------------------------------- where flow runs run


@dataclass(frozen=True)
class DeploymentTarget:
    """A work pool and what its jobs need: the code (from the image, a git clone or this
    folder), the image, GPUs and the stores' settings."""

    pool_type: PoolType = "process"
    pool: str | None = None  # None: DEFAULT_POOLS[pool_type]
    image: str = DEFAULT_IMAGE  # docker and kubernetes
    gpus: int = 0  # GPUs each flow run's job requests (docker, kubernetes)
    repository: str | None = None  # git URL the run clones its code from
    branch: str | None = None
    env: tuple[tuple[str, str], ...] = ()  # the job's environment (store URLs)

    def __post_init__(self) -> None:
        if self.pool_type not in POOL_TYPES:
            raise ConfigError(
                f"Unknown work pool type '{self.pool_type}': use one of {', '.join(POOL_TYPES)}."
            )
        if self.gpus < 0:
            raise ConfigError(f"gpus must be 0 or more, not {self.gpus}.")
        if self.gpus and self.pool_type == "process":
            raise ConfigError(
                "A process work pool runs flows on the worker's own machine and cannot "
                "request GPUs: drop --gpus (the worker's GPUs are used as they are) or use "
                "--pool-type docker or kubernetes."
            )
        secret = [name for name, _ in self.env if any(w in name.upper() for w in SECRET_WORDS)]
        if secret:
            raise ConfigError(
                f"{', '.join(secret)} look like credentials: they would be stored in the "
                "deployment's job variables, readable in the Prefect UI. Give them to the "
                "workers instead (their environment, a Kubernetes secret, ~/.aws/credentials)."
            )
        if self.repository and "@" in self.repository.split("://", 1)[-1].split("/", 1)[0]:
            raise ConfigError(
                "The repository URL holds credentials; they would be stored in the "
                "deployment. Use a URL without them and give the worker git credentials."
            )

    @property
    def pool_name(self) -> str:
        return self.pool or DEFAULT_POOLS[self.pool_type]

    def pull_steps(self, root: Path) -> list[dict]:
        """How a flow run gets the code: a git clone, else the image's project folder
        (docker, kubernetes) or this project folder (process, same machine)."""
        if self.repository:
            clone = {"repository": self.repository}
            if self.branch:
                clone["branch"] = self.branch
            return [{"prefect.deployments.steps.git_clone": clone}]
        folder = str(root) if self.pool_type == "process" else IMAGE_PROJECT
        return [{"prefect.deployments.steps.set_working_directory": {"directory": folder}}]

    def job_variables(self) -> dict:
        """The pool's job variables: image and environment; GPUs as the pool asks them (a
        docker device request; a kubernetes `nvidia.com/gpu` limit through tunelab's
        template variable ``gpus``)."""
        variables: dict = {"env": dict(self.env)} if self.env else {}
        if self.pool_type == "process":
            return variables
        variables["image"] = self.image
        if self.gpus and self.pool_type == "docker":
            request = {"count": self.gpus, "capabilities": [["gpu"]]}
            variables["container_create_kwargs"] = {"device_requests": [request]}
        elif self.gpus:
            variables["gpus"] = self.gpus
        return variables


def store_env(environ: dict[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The STORE_ENV settings of ``environ`` (this process's environment) that are set."""
    environ = os.environ if environ is None else environ
    return tuple((name, environ[name]) for name in STORE_ENV if environ.get(name))


def kubernetes_job_template(default: dict) -> dict:
    """prefect-kubernetes' base job template plus a ``gpus`` variable that sets the
    container's `nvidia.com/gpu` limit (0: none requested)."""
    import copy

    template = copy.deepcopy(default)
    template["variables"]["properties"]["gpus"] = {
        "title": "GPUs",
        "description": "NVIDIA GPUs for the flow run's pod (the nvidia.com/gpu limit).",
        "type": "integer",
        "minimum": 0,
        "default": 0,
    }
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    container["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpus }}"
    return template
