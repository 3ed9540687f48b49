"""Flow `prepare-data`: ingest -> split + clean -> validate -> the gate -> version -> report.

Every dataset is validated before any is versioned: one failing gate stops the flow
before anything downstream runs, and earlier versions stay as they were.
The flow takes one small ``DatasetSpec`` per dataset (what the data stage reads of a run
config), so a subflow run's parameters in the Prefect UI stay readable.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

from flows.runtime import require_api, workspace_lock
from tunelab.config import DataConfig, ModelConfig, RunConfig
from tunelab.data import prepare
from tunelab.errors import SourceUnreachableError
from tunelab.workspace import Workspace


class DatasetSpec(BaseModel):
    """One dataset to prepare: its data section, and the model whose tokenizer the gate
    counts tokens with (and whose max_length it checks); the rest of a run config is not
    read here."""

    model_config = ConfigDict(frozen=True)

    data: DataConfig
    model: ModelConfig

    @classmethod
    def of(cls, cfg: RunConfig) -> DatasetSpec:
        return cls(data=cfg.data, model=cfg.model)

    def run_config(self) -> RunConfig:
        """The run config the data stage's functions take (other sections: defaults)."""
        return RunConfig(data=self.data, model=self.model)

    @model_validator(mode="before")
    @classmethod
    def _from_run_config(cls, value: Any) -> Any:
        # Callers may still pass whole run configs (`tunelab data prepare`).
        return {"data": value.data, "model": value.model} if isinstance(value, RunConfig) else value

    @model_serializer(mode="plain")
    def _compact(self) -> dict:
        # What a flow run records as its parameters: the name, task and what differs from
        # the defaults, not every field.
        head = {"name": self.data.name, "task": self.data.task}
        return {
            "data": {**head, **self.data.model_dump(mode="json", exclude_defaults=True)},
            "model": self.model.model_dump(mode="json", exclude_defaults=True),
        }


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
    return prepare.validate(frames, cfg, workspace)


@task(name="data-gate", cache_policy=NO_CACHE)
def gate(outcomes) -> None:
    prepare.require_passed(outcomes)


@task(name="version", cache_policy=NO_CACHE, **io_retries)
def version(frames, cfg: RunConfig, raw, outcome, workspace: Workspace):
    require_api(f"version {cfg.data.name}")
    return prepare.save_version(frames, cfg, raw.origin, outcome, workspace)


@task(name="report", cache_policy=NO_CACHE)
def report(frames, cfg: RunConfig, data_version, outcome, workspace: Workspace):
    result = prepare.write_report(frames, cfg, data_version, outcome, workspace)
    require_api(f"publish the report of {cfg.data.name}")
    create_markdown_artifact(
        key=f"data-report-{cfg.data.name}".replace("_", "-"),
        markdown=result.markdown,
        description=f"Dataset characteristics: {cfg.data.name} @ {data_version.version}",
    )
    return prepare.PreparedDataset(data_version, outcome, result)


# log_prints stays off: it replaces builtins.print, which breaks libraries that capture
# their own printed output (dill, under datasets, disassembles functions that way).
# One worker: the datasets share the workspace's DVC repository and GX project.
@flow(name="prepare-data", task_runner=ThreadPoolTaskRunner(max_workers=1))
def prepare_data(
    datasets: list[DatasetSpec], workdir: str | None = None
) -> list[prepare.PreparedDataset]:
    """Prepare every given dataset; returns one record per dataset.

    Args:
        datasets: The datasets: each one's data section and the model that counts tokens.
        workdir: The workspace; empty: $TUNELAB_WORKDIR, else the folder the flow runs in.
    """
    workspace = Workspace.resolve(workdir).ensure()
    configs = [spec.run_config() for spec in datasets]
    with workspace_lock(workspace):
        raws = ingest.map(configs).result()
        frames = split.map(raws, configs).result()
        outcomes = validate.map(frames, configs, unmapped(workspace)).result()
        gate(outcomes)
        versions = version.map(frames, configs, raws, outcomes, unmapped(workspace)).result()
        prepared = report.map(frames, configs, versions, outcomes, unmapped(workspace)).result()
        require_api("publish the table of prepared datasets")
        create_table_artifact(
            key="data-versions", table=prepare.table_rows(prepared), description="Prepared datasets"
        )
    return prepared
