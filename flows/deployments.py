"""The deployments of prefect.yaml (read by tunelab.deployments) created on a Prefect
server (`tunelab deploy`, like `prefect deploy --all`) or served in this process
(`tunelab serve`); and the job a work pool would start for them, rendered from the pool
type's own base job template (prefect-docker, prefect-kubernetes), to check it."""

from __future__ import annotations

from pathlib import Path

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from prefect.flows import load_flow_from_entrypoint
from prefect.schedules import Cron
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.utilities.callables import parameter_schema

from tunelab.deployments import (
    DeploymentSpec,
    DeploymentTarget,
    kubernetes_job_template,
    project_root,
    specs,
)
from tunelab.errors import ConfigError


def _worker(pool_type: str):
    """The worker class of a docker or kubernetes pool (its optional package)."""
    try:
        if pool_type == "docker":
            from prefect_docker.worker import DockerWorker

            return DockerWorker
        from prefect_kubernetes.worker import KubernetesWorker

        return KubernetesWorker
    except ImportError as exc:
        raise ConfigError(
            f"A {pool_type} work pool needs prefect-{pool_type}: pip install "
            f"'tunelab[{pool_type}]' (workers of that pool need it too)."
        ) from exc


def base_job_template(pool_type: str) -> dict:
    """The job template a new pool of this type gets (kubernetes: with tunelab's GPUs)."""
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    template = _worker(pool_type).get_default_base_job_template()
    return kubernetes_job_template(template) if pool_type == "kubernetes" else template


def job_configuration(target: DeploymentTarget, template: dict | None = None):
    """The job configuration a worker of ``target``'s pool would build from the pool's
    template and the deployment's job variables: refused (ConfigError) when the variables
    do not fit the template's schema."""
    from prefect.utilities.schema_tools.validation import validate

    template = template or base_job_template(target.pool_type)
    variables = target.job_variables()
    known = template["variables"].get("properties", {})
    unknown = sorted(set(variables) - set(known))
    if unknown:
        # Prefect would drop them silently: a job asked for GPUs would start without any.
        raise ConfigError(
            f"The {target.pool_type} pool's job template has no variable "
            f"{', '.join(unknown)}: create the pool with tunelab's template "
            "(`tunelab deploy` does, for a pool it creates) or name another pool with --pool."
        )
    errors = validate(variables, template["variables"], ignore_required=True)
    if errors:
        raise ConfigError(
            f"The job variables do not fit the {target.pool_type} pool's template: "
            + "; ".join(
                f"{'.'.join(map(str, e.path)) or 'job variables'}: {e.message}" for e in errors
            )
        )
    worker = _worker(target.pool_type) if target.pool_type != "process" else None
    if worker is None:
        from prefect.workers.process import ProcessWorker

        worker = ProcessWorker
    configuration = worker.job_configuration
    return run_coro_as_sync(configuration.from_template_and_values(template, variables))


def ensure_work_pool(name: str, pool_type: str = "process") -> bool:
    """Create the work pool if it is missing; True when it was created. An existing pool
    of another type is an error (its workers could not run these jobs)."""
    with get_client(sync_client=True) as client:
        try:
            found = client.read_work_pool(name)
        except ObjectNotFound:
            template = base_job_template(pool_type)
            client.create_work_pool(
                WorkPoolCreate(name=name, type=pool_type, base_job_template=template)
            )
            return True
    if found.type != pool_type:
        raise ConfigError(
            f"Work pool '{name}' exists with type {found.type}, not {pool_type}: name "
            "another pool with --pool, or use --pool-type " + found.type + "."
        )
    return False


def _schedules(spec: DeploymentSpec, cron: str | None, timezone: str | None):
    chosen = spec.schedule(cron, timezone)
    return [Cron(chosen[0], timezone=chosen[1])] if chosen else None


def deploy(
    spec: DeploymentSpec,
    root: Path,
    cron: str | None,
    timezone: str | None,
    target: DeploymentTarget | None = None,
) -> dict:
    """Create (or update) one deployment on ``target``'s work pool: its flow runs get the
    code by the target's pull steps and run with its job variables."""
    target = target or DeploymentTarget()
    created = ensure_work_pool(target.pool_name, target.pool_type)
    flow = load_flow_from_entrypoint(spec.entrypoint_in(root))
    chosen = spec.schedule(cron, timezone)
    schedules = (
        [DeploymentScheduleCreate(schedule=CronSchedule(cron=chosen[0], timezone=chosen[1]))]
        if chosen
        else []
    )
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(flow.name)
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=spec.name,
            description=spec.description,
            entrypoint=spec.entrypoint,
            parameters=spec.parameters,
            parameter_openapi_schema=parameter_schema(flow).model_dump_for_openapi(),
            enforce_parameter_schema=True,
            work_pool_name=target.pool_name,
            pull_steps=target.pull_steps(root),
            job_variables=target.job_variables(),
            schedules=schedules,
        )
    return {
        "deployment": f"{flow.name}/{spec.name}",
        "id": str(deployment_id),
        "work_pool": f"{target.pool_name} ({target.pool_type}" + (", created)" if created else ")"),
        "schedule": spec.schedule_text(cron, timezone),
    }


def deploy_all(
    cron: str | None = None,
    timezone: str | None = None,
    target: DeploymentTarget | None = None,
) -> list[dict]:
    """Every deployment of the project's prefect.yaml on the current Prefect API;
    ``cron``/``timezone`` override scheduled-retraining's schedule."""
    root = project_root()
    return [deploy(spec, root, cron, timezone, target) for spec in specs(root)]


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
