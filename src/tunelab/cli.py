"""The `tunelab` command line. Heavy libraries are imported inside commands so --help is fast."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="tunelab: fine-tuning projects for language models, run as MLOps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect run configs.", no_args_is_help=True)
data_app = typer.Typer(help="Prepare, inspect and restore dataset versions.", no_args_is_help=True)
app.add_typer(config_app, name="config")
models_app = typer.Typer(help="Bundled model aliases: list and prepare.", no_args_is_help=True)
registry_app = typer.Typer(
    help="The MLflow model registry: versions, aliases, promotion, rollback.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(registry_app, name="registry")
services_app = typer.Typer(
    help="Local Prefect and MLflow servers on 127.0.0.1 (`make services`).",
    no_args_is_help=True,
)
app.add_typer(services_app, name="services")

_state = {"debug": False}

Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
]


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"tunelab {version('tunelab')}")
        raise typer.Exit()


@app.callback()
def main(
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir", envvar="TUNELAB_WORKDIR", help="Workspace for everything a run writes."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    lock_timeout: Annotated[
        float | None,
        typer.Option(
            "--lock-timeout",
            envvar="TUNELAB_LOCK_TIMEOUT",
            help="Seconds to wait for another run that holds the workspace (default 3600).",
        ),
    ] = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    if workdir is not None:
        os.environ["TUNELAB_WORKDIR"] = str(workdir.expanduser().resolve())
    if lock_timeout is not None:
        # Through the environment: flows started from here read it too.
        os.environ["TUNELAB_LOCK_TIMEOUT"] = str(lock_timeout)
    _state["debug"] = debug
    # Quiet, offline-friendly defaults for the libraries commands import later.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")


def _fail(exc: Exception) -> None:
    """Print a user error as one paragraph and exit with its code (README, "Exit codes");
    re-raise with --debug."""
    if _state["debug"]:
        raise exc
    from rich.console import Console
    from rich.markup import escape

    # Escaped: messages hold things like "[train]" that rich would read as markup.
    Console(stderr=True).print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(code=getattr(exc, "exit_code", 2))


def _warn(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    # One line, however narrow the terminal: logs of scheduled runs are searched for it.
    Console(stderr=True).print(f"[yellow]{escape(message)}[/]", highlight=False, soft_wrap=True)


def _locked() -> contextlib.ExitStack:
    """Hold the workspace for this command, before anything (MLflow's store included) is
    written: a second writer waits for the first, then fails clearly."""
    from tunelab.errors import TunelabError

    stack = contextlib.ExitStack()
    try:
        stack.enter_context(_workspace().lock(notify=_warn))
    except TunelabError as exc:
        _fail(exc)
    return stack


def _run(fn, *args, **kwargs):
    from tunelab.errors import TunelabError

    try:
        return fn(*args, **kwargs)
    except TunelabError as exc:
        _fail(exc)
    except OSError as exc:
        _fail_os(exc)


def _fail_os(exc: OSError) -> None:
    """A file system error (permissions, disk full, a missing folder) as one clear error
    naming the path; any other OSError is re-raised as it is."""
    from tunelab.errors import FileSystemError

    error = None if _state["debug"] else FileSystemError.from_os_error(exc)
    if error is None:
        raise exc
    _fail(error)


def _run_flow(flow_fn, *args, **kwargs):
    """Run a Prefect flow; a user error is shown once, as a paragraph, not as a traceback."""
    if not _state["debug"]:
        _hide_user_error_tracebacks_on_console()
    from tunelab.errors import TunelabError

    try:
        return flow_fn(*args, **kwargs)
    except TunelabError as exc:
        _fail(exc)
    except OSError as exc:
        _fail_os(exc)
    except Exception as exc:
        if _state["debug"] or not _lost_api(exc):
            raise
        _fail(_orchestrator_error(exc))


def _lost_api(exc: BaseException) -> bool:
    """Whether a flow failed talking to its Prefect API (httpx transport errors)."""
    import httpx

    return any(isinstance(e, httpx.TransportError) for e in _chain(exc))


def _orchestrator_error(exc: BaseException):
    """A flow that lost its API fails again reporting its own end: the error that stopped
    it is further down the chain; without one, say that the API was lost."""
    from tunelab.errors import OrchestratorError, TunelabError

    chain = _chain(exc)
    for kind in (OrchestratorError, TunelabError):
        found = next((e for e in chain if isinstance(e, kind)), None)
        if found is not None:
            return found
    return OrchestratorError(
        f"The flow lost its Prefect API ({type(exc).__name__}: {exc}); its end was not "
        "recorded. Start the Prefect server again and re-run the same command: finished "
        "steps are reused from the cache and nothing is registered twice."
    )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and not any(exc is e for e in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _hide_user_error_tracebacks_on_console() -> None:
    """Prefect logs a failing run's exception with its traceback on the console.

    For errors the user caused the CLI prints the message itself, so the console
    handler drops those records; the API handler still sends them to the Prefect UI.
    """
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    from tunelab.errors import TunelabError

    class UserErrorFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            exc = record.exc_info[1] if record.exc_info else None
            return not isinstance(exc, TunelabError)

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            type(f).__name__ == "UserErrorFilter" for f in handler.filters
        ):
            handler.addFilter(UserErrorFilter())


def _workspace():
    from tunelab.workspace import Workspace

    return Workspace.resolve()


@config_app.command("show")
def config_show(
    config: Annotated[Path | None, typer.Argument(help="YAML config; none = defaults.")] = None,
    overrides: Overrides = None,
) -> None:
    """Print the resolved config (file + overrides + defaults) as YAML."""
    from tunelab import config as config_mod

    cfg = _run(config_mod.load, config, overrides)
    typer.echo(cfg.to_yaml(), nl=False)


@data_app.command("prepare")
def data_prepare(
    configs: Annotated[
        list[Path] | None,
        typer.Argument(help="Run configs naming datasets; none = every bundled dataset."),
    ] = None,
    overrides: Overrides = None,
) -> None:
    """Ingest, split, validate (Great Expectations), version (DVC) and report on datasets."""
    from tunelab import config as config_mod
    from tunelab.data.prepare import bundled_configs

    if configs:
        cfgs = [_run(config_mod.load, path, overrides) for path in configs]
    else:
        cfgs = [
            _run(config_mod.from_dict, _run(config_mod.apply_overrides, c.to_dict(), overrides))
            for c in bundled_configs()
        ]
    from flows.data import prepare_data

    with _locked():
        prepared = _run_flow(prepare_data, cfgs, str(_workspace().root))
    _print_prepared(prepared)


def _print_prepared(prepared: list) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Prepared datasets")
    for column in ("dataset", "version", "train", "validation", "test", "changed"):
        table.add_column(column)
    for data in prepared:
        table.add_row(
            data.name,
            data.version_id,
            *(str(data.rows.get(s, 0)) for s in ("train", "validation", "test")),
            "yes" if data.changed else "no (unchanged)",
        )
    console = Console()
    console.print(table)
    for data in prepared:
        console.print(f"{data.name}: report {data.report_path}")
        if data.data_docs:
            console.print(f"{data.name}: Data Docs {data.data_docs}")
        # Always say what counted tokens; a fallback to the estimate is a warning.
        line = f"{data.name}: token lengths counted as {data.token_counter}"
        if data.token_counter_fallback:
            line += f"; {data.token_counter_fallback}"
        style = "yellow" if data.token_counter_fallback else None
        console.print(line, style=style, markup=False, highlight=False)


@data_app.command("show")
def data_show(
    name: Annotated[str | None, typer.Argument(help="Dataset name; none = all.")] = None,
) -> None:
    """List the recorded versions of a dataset (the current one marked *)."""
    from rich.console import Console
    from rich.table import Table

    from tunelab.data import versioning

    workspace = _workspace()
    names = [name] if name else versioning.list_datasets(workspace)
    if not names:
        _fail(_user_error(f"No dataset versions in {workspace.root}. Run `tunelab data prepare`."))
    table = Table(title=f"Dataset versions in {workspace.root}")
    # Ids stay whole (they are typed back into `data checkout`); the source path folds.
    for column in ("", "dataset", "version"):
        table.add_column(column, no_wrap=True)
    for column in ("created", "train", "validation", "test"):
        table.add_column(column)
    table.add_column("source", overflow="fold")
    for dataset in names:
        versions = _run(versioning.list_versions, dataset, workspace)
        if not versions:
            _fail(
                _user_error(
                    f"No versions recorded for dataset '{dataset}' in "
                    f"{workspace.root}. Known: {versioning.list_datasets(workspace)}."
                )
            )
        current = versioning.current_version(dataset, workspace)
        for v in versions:
            table.add_row(
                "*" if current and v.version == current.version else "",
                dataset,
                v.version,
                v.created,
                *(str(v.rows.get(s, 0)) for s in ("train", "validation", "test")),
                str(v.metadata.get("source", "")),
            )
    Console().print(table)


@data_app.command("checkout")
def data_checkout(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    version: Annotated[str, typer.Argument(help="Version id from `tunelab data show NAME`.")],
) -> None:
    """Restore an earlier version of one dataset into data/NAME (other datasets untouched)."""
    from tunelab.data import versioning

    with _locked():
        restored = _run(versioning.checkout_version, name, version, _workspace())
    typer.echo(
        f"{name}: version {restored.version} restored to data/{name}/ "
        f"({', '.join(f'{k} {v}' for k, v in restored.rows.items())} rows)."
    )


@app.command("train")
def train_cmd(
    config: Annotated[
        Path, typer.Argument(help="Run config (YAML), e.g. configs/sentiment-lora.yaml.")
    ],
    overrides: Overrides = None,
) -> None:
    """Validate the data, train one method, evaluate it, track it in MLflow, register it
    and run the promotion gate; files land in runs/. Exits non-zero when any of it failed."""
    from tunelab import config as config_mod
    from tunelab.errors import EvaluationError
    from tunelab.pipeline.method import train_and_register

    cfg = _run(config_mod.load, config, overrides)
    with _locked():
        outcome = _run(train_and_register, cfg, _workspace())
    _print_result(outcome.result)
    _print_outcome(outcome)
    if not outcome.card.ok:
        # The run is on disk and in MLflow, but unscored: cron and CI must see a failure.
        raise typer.Exit(code=EvaluationError.exit_code)


def _print_result(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.dataset}: {result.method} on {result.model}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(result.metrics.items()):
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    table.add_row(
        "trainable / total params", f"{result.trainable_params:,} / {result.total_params:,}"
    )
    table.add_row("wall time (s)", f"{result.wall_seconds:.1f}")
    table.add_row("peak RSS (MB)", f"{result.peak_rss_mb:.0f}")
    if result.cuda_max_allocated_mb is not None:
        table.add_row("CUDA max allocated (MB)", f"{result.cuda_max_allocated_mb:.0f}")
    if result.tokens_per_second:
        table.add_row("tokens/s", f"{result.tokens_per_second:.0f}")
    table.add_row("device", f"{result.device} ({result.precision})")
    console = Console()
    console.print(table)
    if result.resumed_from:
        console.print(f"Resumed from {result.resumed_from}.")
    for note in result.notes:
        console.print(f"Note: {note}")
    console.print(f"Run folder: {result.output_dir}")
    for name, rel in result.artifacts.items():
        console.print(f"  {name}: {rel}")


def _print_outcome(outcome) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    card = outcome.card
    if card.ok:
        level = round(card.ci_level * 100)
        line = (
            f"Test {card.primary_metric}: {card.primary:.4f} ({level}% CI {card.ci_low:.4f} "
            f"to {card.ci_high:.4f}, {card.test_rows} rows)"
        )
        p50, p95 = card.costs.get("latency_p50_ms"), card.costs.get("latency_p95_ms")
        if p50 is not None:
            line += f"; latency p50 {p50:.1f} ms, p95 {p95:.1f} ms"
        console.print(line)
    else:
        console.print(f"[bold red]Evaluation failed:[/] {escape(card.error or '')}")
    done = outcome.registration
    if done.tracked:
        console.print(f"MLflow run: {done.run_id}" + (f" ({done.run_url})" if done.run_url else ""))
    if done.not_registered:
        console.print(f"Not registered: {escape(done.not_registered)}.")
    elif done.decision:
        console.print(
            f"Registered {done.model_name} version {done.version}: "
            f"[bold]{done.decision.outcome}[/]. {escape(done.decision.reason)}"
        )
        aliases = ", ".join(f"@{a}=v{v}" for a, v in sorted((done.aliases or {}).items()))
        console.print(f"Aliases of {done.model_name}: {aliases or 'none'}")
    from tunelab.lifecycle import tracking

    console.print(escape(tracking.resolve(_workspace()).ui_hint()))


@models_app.command("list")
def models_list() -> None:
    """Show the bundled aliases, where they resolve and whether they are ready."""
    from rich.console import Console
    from rich.table import Table

    from tunelab import models

    table = Table(title="Bundled models (work offline)")
    for column in ("alias", "family", "tasks", "ready", "path", "what"):
        table.add_column(column, overflow="fold")
    for row in models.alias_status():
        table.add_row(
            row["name"],
            row["family"],
            ", ".join(row["tasks"]),
            "yes" if row["ready"] else "no",
            row["path"] or "-",
            row["description"],
        )
    Console().print(table)


@models_app.command("prepare")
def models_prepare(
    alias: Annotated[str, typer.Argument(help="Alias from `tunelab models list`.")],
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if ready.")] = False,
) -> None:
    """Build or convert an alias once into the model cache (reused afterwards)."""
    from tunelab import models

    path = _run(models.prepare_alias, alias, force)
    typer.echo(f"{alias}: ready in {path}")


@app.command("run")
def run_cmd(
    config: Annotated[
        Path, typer.Argument(help="Milestone config (YAML): datasets and their methods.")
    ] = Path("configs/milestone.yaml"),
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Ignore cached steps: recompute everything.")
    ] = False,
) -> None:
    """The milestone pipeline: data gate, every method trained, evaluated, registered and
    compared; ends with the review report and each registered model's champion."""
    os.environ.setdefault("TUNELAB_PROGRESS", "1")
    with _locked():
        from flows.milestone import milestone

        summary = _run_flow(milestone, str(config), str(_workspace().root), refresh)
    _print_summary(summary)


def _print_summary(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Milestone")
    for column in ("dataset", "method", "status", "reused", "registered", "gate"):
        table.add_column(column, overflow="fold")
    for record in summary.methods:
        done = record.registration
        table.add_row(
            record.dataset,
            record.method,
            record.status if record.ok else f"failed: {record.error}",
            ", ".join(record.reused) or "-",
            (record.model_version if done and done.version else None) or "-",
            (done.decision.outcome if done and done.decision else None) or "-",
        )
    console = Console()
    console.print(table)
    console.print(
        f"Steps reused from the cache: {summary.reused_steps} of {summary.finished_steps}. "
        f"Wall time {summary.wall_seconds:.0f} s."
    )
    console.print(f"Review: {summary.report}")
    console.print(f"        {summary.html}")
    for name, version in summary.champions.items():
        console.print(f"Champion of {name}: " + (f"version {version}" if version else "none"))


@app.command("deploy")
def deploy_cmd(
    cron: Annotated[
        str | None, typer.Option("--cron", help="scheduled-retraining's cron (default 0 3 * * *).")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="Its time zone, e.g. Europe/Berlin.")
    ] = None,
) -> None:
    """Create the deployments of prefect.yaml on the Prefect server in PREFECT_API_URL
    (milestone-review, scheduled-retraining), with the process work pool 'tunelab'."""
    from rich.console import Console
    from rich.table import Table

    if not os.environ.get("PREFECT_API_URL"):
        _fail(
            _user_error(
                "PREFECT_API_URL is not set: deployments live on a Prefect server. Start one with "
                "`make services` and export the PREFECT_API_URL it prints (or use `tunelab serve` "
                "to run the deployments in this process without a server)."
            )
        )
    from flows.deployments import deploy_all

    rows = _run(deploy_all, cron, timezone)
    table = Table(title=f"Deployments on {os.environ['PREFECT_API_URL']}")
    for column in ("deployment", "work_pool", "schedule", "id"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["deployment"], row["work_pool"], row["schedule"], row["id"])
    console = Console()
    console.print(table)
    console.print("Start a worker: prefect worker start --pool tunelab")


@app.command("serve")
def serve_cmd(
    cron: Annotated[str | None, typer.Option("--cron", help="Retraining schedule (cron).")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="Its time zone.")] = None,
) -> None:
    """Serve both deployments from this process (flow.serve): one-machine use, no worker."""
    from flows.deployments import serve_all

    _run(serve_all, cron, timezone)


@services_app.command("start")
def services_start(
    prefect_port: Annotated[int, typer.Option(envvar="PREFECT_PORT")] = 4200,
    mlflow_port: Annotated[int, typer.Option(envvar="MLFLOW_PORT")] = 5000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
) -> None:
    """Start `prefect server` and `mlflow server` (on the workspace's mlruns/ store), wait
    until both are healthy, print their URLs; PIDs go to .services/."""
    from tunelab import services

    root = _workspace().root
    rows = _run(
        services.start,
        [
            services.prefect_spec(root, host, prefect_port),
            services.mlflow_spec(root, host, mlflow_port),
        ],
        root / ".services",
    )
    for row in rows:
        typer.echo(f"{row['name']}: {row['ui_url']} (pid {row['pid']}, {row['status']})")
    urls = {row["name"]: row["ui_url"] for row in rows}
    typer.echo(
        "Use them from this shell:\n"
        f"  export PREFECT_API_URL={urls['prefect']}/api MLFLOW_TRACKING_URI={urls['mlflow']}\n"
        "Stop them with `make services-stop`."
    )


@services_app.command("stop")
def services_stop() -> None:
    """Stop exactly the servers `services start` started (by their recorded PIDs)."""
    from tunelab import services

    rows = _run(services.stop, _workspace().root / ".services")
    if not rows:
        typer.echo("No services were running.")
    for row in rows:
        typer.echo(f"{row['name']}: pid {row['pid']} {row['status']}")


@services_app.command("status")
def services_status() -> None:
    """Which of the started servers are alive and healthy."""
    from tunelab import services

    rows = _run(services.status, _workspace().root / ".services")
    if not rows:
        typer.echo("No services started from this workspace.")
    for row in rows:
        state = (
            "healthy" if row["healthy"] else ("alive, not answering" if row["alive"] else "dead")
        )
        typer.echo(f"{row['name']}: {row['ui_url']} pid {row['pid']} {state}")


def _tracking():
    """The MLflow target of registry commands ($MLFLOW_TRACKING_URI or the workspace store)."""
    from tunelab.lifecycle import tracking

    return _run(tracking.setup, _workspace())


@registry_app.command("list")
def registry_list(
    name: Annotated[str | None, typer.Argument(help="Registered model; none = all.")] = None,
) -> None:
    """Registered models, their versions, aliases, metrics and gate decisions."""
    from rich.console import Console
    from rich.table import Table

    from tunelab.lifecycle import registry

    target = _tracking()
    rows = _run(registry.list_versions, target, name)
    if not rows:
        typer.echo(f"No registered models at {target.shown}. Train one with `tunelab train`.")
        return
    table = Table(title=f"Registered models at {target.shown}")
    for column in ("model", "version", "aliases", "method", "metric", "data_version", "decision"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            *(
                row[c]
                for c in (
                    "model",
                    "version",
                    "aliases",
                    "method",
                    "metric",
                    "data_version",
                    "decision",
                )
            )
        )
    Console().print(table)


@registry_app.command("promote")
def registry_promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
    force: Annotated[
        bool, typer.Option("--force", help="Required: promotion outside the gate is manual.")
    ] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (recorded on the version).")
    ] = "no reason given",
) -> None:
    """Make VERSION the champion by hand (recorded as a manual decision)."""
    from tunelab.lifecycle import registry

    if not force:
        _fail(
            _user_error(
                "Promotion outside the gate is a manual decision: add --force (and --reason). "
                "`tunelab train` promotes through the gate automatically."
            )
        )
    change = _run(registry.promote, _tracking(), name, version, reason)
    typer.echo(
        f"{name}: champion is now version {change.version} "
        f"(was {change.before.get('champion', 'none')})."
    )


@registry_app.command("rollback")
def registry_rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
) -> None:
    """Restore the previous champion (champion <- previous)."""
    from tunelab.lifecycle import registry

    change = _run(registry.rollback, _tracking(), name)
    typer.echo(
        f"{name}: champion is now version {change.version} "
        f"(was {change.before.get('champion', 'none')})."
    )


@registry_app.command("doctor")
def registry_doctor(
    name: Annotated[str | None, typer.Argument(help="Registered model; none = all.")] = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Finish or revert the half-done moves found.")
    ] = False,
) -> None:
    """Find registry moves a crash left half-done (unjudged versions, aliases that did not
    all move) and, with --repair, finish or revert them."""
    from tunelab.lifecycle import registry

    target = _tracking()
    findings = _run(registry.doctor, target, name, repair)
    if not findings:
        typer.echo(f"No half-done registry moves at {target.shown}.")
        return
    for finding in findings:
        typer.echo(str(finding))
    open_ = [f for f in findings if not f.repaired and f.kind != "in progress"]
    if open_ and not repair:
        hint = f" {name}" if name else ""
        typer.echo(f"Run `tunelab registry doctor{hint} --repair` to repair them.")
        raise typer.Exit(code=1)


@app.command("predict")
def predict_cmd(
    reference: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION.")],
    text: Annotated[
        str | None,
        typer.Argument(
            help="One input text; for a chat model a user message or a JSON conversation "
            '(\'[{"role": "user", "content": "..."}]\').'
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input", help="CSV with a text/prompt column (chat: messages, JSON conversations)."
        ),
    ] = None,
    output_file: Annotated[
        Path | None, typer.Option("--output", help="CSV to write (input + prediction).")
    ] = None,
    column: Annotated[str | None, typer.Option("--column", help="Input column name.")] = None,
) -> None:
    """Predict with a registered model, loaded through models:/NAME@ALIAS."""
    from tunelab.lifecycle import predict

    if (text is None) == (input_file is None):
        _fail(_user_error("Give either one TEXT or --input FILE.csv (with --output)."))
    if input_file is not None and output_file is None:
        _fail(_user_error("--input needs --output: the CSV to write the predictions to."))
    loaded = _run(predict.load, _tracking(), reference)
    if text is not None:
        typer.echo(_run(loaded.predict, [text])[0])
        return
    import pandas as pd
    from rich.progress import Progress

    rows = len(pd.read_csv(input_file)) if input_file.is_file() else 0
    with Progress(disable=not rows) as bar:
        task = bar.add_task(f"{loaded.name} v{loaded.version}", total=rows)
        count = _run(
            predict.predict_file,
            loaded,
            input_file,
            output_file,
            column,
            progress=lambda n: bar.advance(task, n),
        )
    typer.echo(
        f"{count} predictions from {loaded.uri} (version {loaded.version}) written "
        f"to {output_file}."
    )


def _user_error(message: str) -> Exception:
    from tunelab.errors import TunelabError

    return TunelabError(message)


if __name__ == "__main__":
    app()
