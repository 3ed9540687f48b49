"""Flow `prepare-data`: ingest -> split -> validate (the gate) -> version -> report.

Every dataset is validated before any is versioned: one failing gate stops the
flow before anything downstream runs, and earlier versions stay as they were.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tunelab.config import RunConfig
from tunelab.data import prepare
from tunelab.data.checks import describe_failures
from tunelab.errors import DataValidationError, SourceUnreachableError
from tunelab.workspace import Workspace


def _transient(task, task_run, state) -> bool:
    """Retry only failures that may pass on their own (network), never bad input."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, SourceUnreachableError | OSError) and not isinstance(
        exc, FileNotFoundError
    )


io_retries = dict(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=_transient,
)


@task(name="ingest", cache_policy=NO_CACHE, **io_retries)
def ingest(cfg: RunConfig):
    return prepare.ingest(cfg)


@task(name="split", cache_policy=NO_CACHE)
def split(raw, cfg: RunConfig):
    return prepare.split(raw, cfg)


@task(name="validate", cache_policy=NO_CACHE)
def validate(frames, cfg: RunConfig, workspace: Workspace):
    outcome = prepare.validate(frames, cfg, workspace)
    if not outcome.success:
        raise DataValidationError(describe_failures(outcome), outcome.failures, outcome.docs_path)
    return outcome


@task(name="version", cache_policy=NO_CACHE, **io_retries)
def version(frames, cfg: RunConfig, origin: str, outcome, workspace: Workspace):
    return prepare.save_version(frames, cfg, origin, outcome, workspace)


@task(name="report", cache_policy=NO_CACHE)
def report(frames, cfg: RunConfig, data_version, outcome, workspace: Workspace):
    result = prepare.write_report(frames, cfg, data_version, outcome, workspace)
    create_markdown_artifact(
        key=f"data-report-{cfg.data.name}".replace("_", "-"),
        markdown=result.markdown,
        description=f"Dataset characteristics: {cfg.data.name} @ {data_version.version}",
    )
    return result


# log_prints stays off: it replaces builtins.print, which breaks libraries that capture
# their own printed output (dill, under datasets, disassembles functions that way).
@flow(name="prepare-data")
def prepare_data(configs: list[RunConfig], workdir: str | None = None) -> list[dict]:
    """Prepare every configured dataset; returns one summary row per dataset."""
    workspace = Workspace.resolve(workdir).ensure()
    staged, failures = [], []
    for cfg in configs:
        raw = ingest(cfg)
        frames = split(raw, cfg)
        state = validate(frames, cfg, workspace, return_state=True)
        if state.is_failed():
            failures.append(state.result(raise_on_failure=False))
        else:
            staged.append((cfg, raw, frames, state.result()))
    if failures:
        if len(failures) == 1:
            raise failures[0]
        raise DataValidationError("\n\n".join(str(f) for f in failures))
    rows = []
    for cfg, raw, frames, outcome in staged:
        data_version = version(frames, cfg, raw.origin, outcome, workspace)
        result = report(frames, cfg, data_version, outcome, workspace)
        rows.append(
            {
                "dataset": cfg.data.name,
                "version": data_version.version,
                "changed": data_version.changed,
                **{f"rows_{k}": v for k, v in data_version.rows.items()},
                "report": str(result.markdown_path),
                "data_docs": outcome.docs_path or "",
                "validation": (
                    f"passed: {outcome.statistics['successful']} of "
                    f"{outcome.statistics['evaluated']} checks"
                ),
            }
        )
    create_table_artifact(key="data-versions", table=rows, description="Prepared datasets")
    return rows
