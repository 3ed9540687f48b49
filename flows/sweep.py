"""Flow `sweep`: prepare the data -> trials of an Optuna study as tasks on the chosen task
runner, `parallel` at a time -> the best config and the sweep report (-> the promotion
gate for the best trial when asked).

Wiring only: each task calls one tunelab.sweep function. The flow's process asks the
study for trials (their values are sampled here, in one sampler), a task trains one trial
by its number, in this process's threads or on a Dask / Ray worker, where it re-opens the
trial from the study's storage; a training task on a GPU holds a slot of the `gpu` limit.
A failed or pruned trial never stops the sweep; a lost task's trial is recorded FAIL.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.runners import gpu_slot, task_runner
from flows.runtime import flow_run_info, require_api, workspace_lock
from tunelab import console
from tunelab import sweep as sweeps
from tunelab.errors import ConfigError
from tunelab.pipeline import run
from tunelab.workspace import Workspace


@task(name="begin-sweep", cache_policy=NO_CACHE)
def begin(cfg, workdir: str, tags: dict) -> sweeps.SweepRun:
    require_api("start the sweep")
    return sweeps.begin(cfg, Workspace.resolve(workdir), tags=tags)


@task(name="trial", cache_policy=NO_CACHE, task_run_name="trial {number}")
def trial(sweep: sweeps.SweepRun, number: int) -> sweeps.TrialRecord:
    with gpu_slot(sweep.cfg):
        return sweeps.run_trial(sweep, number)


@task(name="sweep-report", cache_policy=NO_CACHE)
def finish(sweep: sweeps.SweepRun, total: int, ran: int) -> sweeps.SweepSummary:
    summary = sweeps.finish(sweep, total, ran)
    create_markdown_artifact(
        key="sweep-report",
        markdown=open(summary.report, encoding="utf-8").read(),  # noqa: SIM115
        description=f"Sweep {sweep.study}",
    )
    return summary


@task(name="promote", cache_policy=NO_CACHE)
def promote(sweep: sweeps.SweepRun, summary: sweeps.SweepSummary):
    require_api("register the best trial")
    return sweeps.promote_best(sweep, summary)


def _progress(sweep: sweeps.SweepRun, record: sweeps.TrialRecord, total: int) -> None:
    """The CLI's live view of the trials, when it listens (tunelab.console)."""
    label = f"trial {record.number}"
    console.step_finished(_Call(label, "trial"), sweeps.TrialProgress.of(sweep, record, total))


class _Call:
    def __init__(self, label: str, step: str):
        self.label, self.step = label, step


def run_trials(sweep: sweeps.SweepRun, total: int, runner, address, parallel: int) -> int:
    """Ask and run trials, ``parallel`` at a time, until the study holds ``total``
    finished ones; returns how many ran."""
    ran = 0
    with task_runner(runner, address, parallel) as pool:
        while (needed := sweeps.missing(sweep, total)) > 0:
            numbers = sweeps.ask(sweep, min(parallel, needed))
            futures = [pool.submit(trial, {"sweep": sweep, "number": n}) for n in numbers]
            for number, future in zip(numbers, futures, strict=True):
                state = future.wait() or future.state
                record = future.result(raise_on_failure=False)
                if not isinstance(record, sweeps.TrialRecord):
                    record = sweeps.lost(sweep, number, f"{state.name}: {record}")
                ran += 1
                _progress(sweep, record, total)
                if record.fatal:
                    raise ConfigError(record.fatal)
    return ran


# The docstring's Args are the descriptions of the deployment's run form.
@flow(name="sweep")  # log_prints off: see flows/data.py
def sweep(
    config: str,
    trials: int = 10,
    workdir: str | None = None,
    overrides: list[str] | None = None,
    runner: str = "thread",
    address: str | None = None,
    parallel: int = 1,
    study: str | None = None,
    storage: str | None = None,
    promote_best: bool = False,
) -> sweeps.SweepSummary:
    """Search a run config's sweep.space with Optuna; write the best config and a report.

    Args:
        config: A run config with a sweep: section (e.g. configs/tiny/sentiment-lora-sweep.yaml).
        trials: Finished trials the study should hold in all (a resumed study runs the rest).
        workdir: The workspace. Empty: $TUNELAB_WORKDIR, else the folder the flow runs in.
        overrides: section.key=value overrides of the config.
        runner: Where trials run: thread, dask or ray.
        address: An existing Dask or Ray cluster; empty = a local one.
        parallel: Trials at a time.
        study: Study name (default: derived from the config, so a re-run continues it).
        storage: Optuna storage URL (default: sweeps/<study>/study.db in the workspace).
        promote_best: Register the best trial's model and run the promotion gate on it.
    """
    cfg = sweeps.load(config, overrides, study, storage)
    workspace = Workspace.resolve(workdir).ensure()
    with workspace_lock(workspace):
        tags = run.lineage_tags("sweep", *flow_run_info())
        context = begin(cfg, str(workspace.root), tags)
        try:
            ran = run_trials(context, trials, runner, address, max(parallel, 1))
        except Exception as exc:
            sweeps.abandon(context, exc)
            raise
        summary = finish(context, trials, ran)
        if promote_best and summary.best is not None:
            summary.registration = promote(context, summary)
        return summary
