"""The `tunelab` command line. Heavy libraries are imported inside commands so --help is fast."""

from __future__ import annotations

import contextlib
import logging
import os
import time
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

# debug: --debug; json: the command prints JSON on stdout; deferred: errors of a quiet
# command, shown once the terminal is back.
_state: dict = {"debug": False, "json": False, "deferred": None}

Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
]
Json = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (README, JSON output).")
]
Verbose = Annotated[
    bool,
    typer.Option(
        "-v", "--verbose", help="Show the libraries' output (logs, progress bars) on the terminal."
    ),
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
    _state.update(debug=debug, json=False, deferred=None)
    # Quiet, offline-friendly defaults for the libraries commands import later.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")


def _fail(exc: Exception) -> None:
    """Print a user error as one paragraph and exit with its code (README, "Exit codes");
    re-raise with --debug. Inside a quiet command it is printed once the terminal is back."""
    if _state["debug"]:
        raise exc
    if _state["deferred"] is not None:
        _state["deferred"].append(exc)
    else:
        _show_error(exc)
    raise typer.Exit(code=getattr(exc, "exit_code", 2))


def _show_error(exc: Exception) -> None:
    from rich.console import Console
    from rich.markup import escape

    if _state["json"]:
        error = {"type": type(exc).__name__, "message": str(exc)}
        _emit_json({"ok": False, "error": {**error, "exit_code": getattr(exc, "exit_code", 2)}})
    # Escaped: messages hold things like "[train]" that rich would read as markup. One
    # line (the terminal wraps it): paths and commands in it stay whole for grep and copy.
    Console(stderr=True).print(
        f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
    )


def _emit_json(data) -> None:
    """The command's result on stdout, as JSON (NaN and infinities as null)."""
    import json

    typer.echo(json.dumps(_plain(data), indent=2, ensure_ascii=False))


def _plain(value):
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@contextlib.contextmanager
def _quiet(command: str, verbose: bool):
    """The command's libraries write to a log file in the workspace (tunelab.console);
    the terminal shows tunelab's progress, then the result or the error, once."""
    from rich.console import Console

    from tunelab import console

    stack = contextlib.ExitStack()
    try:
        run_log = stack.enter_context(console.quiet(_workspace().root, command, verbose))
    except OSError as exc:
        _fail_os(exc)
    Console(file=run_log.terminal, highlight=False).print(
        f"Log: {console.shown_path(run_log.path)}", markup=False, soft_wrap=True
    )
    _state["deferred"] = []
    try:
        with stack:
            yield run_log
    except BaseException:
        _note_log(run_log)
        raise
    finally:
        deferred, _state["deferred"] = _state["deferred"], None
        for exc in deferred:
            _show_error(exc)


def _note_log(run_log) -> None:
    """The log's path again at the end (stderr: stdout may carry JSON)."""
    from rich.console import Console

    from tunelab import console

    Console(stderr=True, highlight=False).print(
        f"Log: {console.shown_path(run_log.path)}", markup=False, soft_wrap=True
    )


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


def _fail_os(exc: OSError, then: str = "") -> None:
    """A file system error (permissions, disk full, a missing folder) as one clear error
    naming the path (``then``: what happens next, appended); any other OSError is
    re-raised as it is."""
    from tunelab.errors import FileSystemError

    error = None if _state["debug"] else FileSystemError.from_os_error(exc)
    if error is None:
        raise exc
    _fail(FileSystemError(f"{error} {then}") if then else error)


# A flow that stops on a file system error has kept what it finished: steps are cached,
# run folders and registered versions stay (the review goes to a new folder each time).
KEPT = "What finished is kept: the same command reuses it once this is fixed."


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
        _fail_os(exc, KEPT)
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


@app.command("init")
def init_cmd(
    data_file: Annotated[
        str,
        typer.Argument(
            help="CSV, JSONL or Parquet file (or a folder of train/validation/test files) "
            "to start a project from."
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Dataset name; default: from the file name.")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="classification, generation, chat or preference; default: detected from "
            "the columns.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the run config and the milestone plan.")
    ] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
    as_json: Json = False,
) -> None:
    """Start a project from a data file: detect the task and columns, write a run config
    and a milestone plan with baselines, each choice explained in comments."""
    from tunelab import scaffold

    _state["json"] = as_json
    result = _run(scaffold.init_project, data_file, name, task, out, force)
    if as_json:
        _emit_json(result.to_dict())
        return
    for line in result.summary:
        typer.echo(line)


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
    verbose: Verbose = False,
) -> None:
    """Ingest, split, validate (Great Expectations), version (DVC) and report on datasets.
    The libraries' output goes to a log file in .tunelab/logs/ (-v shows it)."""
    from tunelab import config as config_mod
    from tunelab.console import working
    from tunelab.data.prepare import bundled_configs

    if configs:
        cfgs = [_run(config_mod.load, path, overrides) for path in configs]
    else:
        cfgs = [
            _run(config_mod.from_dict, _run(config_mod.apply_overrides, c.to_dict(), overrides))
            for c in bundled_configs()
        ]
    if verbose:
        os.environ.setdefault("TUNELAB_PROGRESS", "1")
    # Prefect sets up logging when imported: before the console is quiet (tunelab.console).
    from flows.data import prepare_data

    names = ", ".join(dict.fromkeys(c.data.name for c in cfgs))
    live = False if verbose else None
    with (
        _locked(),
        _quiet("data-prepare", verbose) as run_log,
        working(run_log.terminal, f"Preparing {names}", live),
    ):
        prepared = _run_flow(prepare_data, cfgs, str(_workspace().root))
    _print_prepared(prepared)
    _note_log(run_log)


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
    as_json: Json = False,
) -> None:
    """List the recorded versions of a dataset (the current one marked *)."""
    from rich.console import Console

    from tunelab.console import Column, fitted_table
    from tunelab.data import versioning

    _state["json"] = as_json
    workspace = _workspace()
    names = [name] if name else versioning.list_datasets(workspace)
    if not names:
        _fail(_user_error(f"No dataset versions in {workspace.root}. Run `tunelab data prepare`."))
    datasets = []
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
        current_id = current.version if current else None
        listed = [
            {
                "version": v.version,
                "current": v.version == current_id,
                "created": v.created,
                "rows": {s: v.rows.get(s, 0) for s in ("train", "validation", "test")},
                "source": str(v.metadata.get("source", "")),
            }
            for v in versions
        ]
        datasets.append({"name": dataset, "current": current_id, "versions": listed})
    if as_json:
        _emit_json({"workspace": str(workspace.root), "datasets": datasets})
        return
    # Ids stay whole (they are typed back into `data checkout`); when the table is too
    # wide, the source is left out first, then the creation time.
    columns = [
        Column(""),
        Column("dataset", name=True),
        Column("version", name=True),
        Column("created", drop=2),
        *(Column(split, justify="right") for split in ("train", "validation", "test")),
        Column("source", drop=3, name=True),
    ]
    rows = [
        [
            "*" if v["current"] else "",
            d["name"],
            v["version"],
            v["created"],
            *(str(n) for n in v["rows"].values()),
            v["source"],
        ]
        for d in datasets
        for v in d["versions"]
    ]
    console = Console()
    console.print(
        fitted_table(f"Dataset versions in {workspace.root}", columns, rows, console.width)
    )


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
    verbose: Verbose = False,
    as_json: Json = False,
) -> None:
    """Validate the data, train one method, evaluate it, track it in MLflow, register it
    and run the promotion gate; files land in runs/. Exits non-zero when any of it failed.
    The libraries' output goes to a log file in .tunelab/logs/ (-v shows it)."""
    from tunelab import config as config_mod
    from tunelab.console import working
    from tunelab.errors import EvaluationError
    from tunelab.pipeline.method import train_and_register

    _state["json"] = as_json
    cfg = _run(config_mod.load, config, overrides)
    if verbose:
        os.environ.setdefault("TUNELAB_PROGRESS", "1")
    label = f"{cfg.data.name}/{cfg.train.method}"
    with _locked(), _quiet("train", verbose) as run_log:
        text = f"Training {label}"
        with working(run_log.terminal, text, live=False if verbose else None):
            outcome = _run(train_and_register, cfg, _workspace())
    if as_json:
        _emit_json(_outcome_json(outcome, run_log))
    else:
        _print_result(outcome.result)
        _print_outcome(outcome)
    _note_log(run_log)
    if not outcome.card.ok:
        # The run is on disk and in MLflow, but unscored: cron and CI must see a failure.
        raise typer.Exit(code=EvaluationError.exit_code)


def _outcome_json(outcome, run_log) -> dict:
    """`tunelab train --json`: the run, its primary metric and what registering did."""
    from tunelab.console import Primary

    result, card, done = outcome.result, outcome.card, outcome.registration
    primary = None
    if card.ok:
        level = card.ci_level
        primary = Primary(card.primary_metric, card.primary, card.ci_low, card.ci_high, level)
    return {
        "ok": card.ok,
        "dataset": result.dataset,
        "method": result.method,
        "model": result.model,
        "run_dir": str(result.output_dir),
        "log": str(run_log.path),
        "primary": primary.to_dict() if primary else None,
        "metrics": dict(card.metrics),
        "test_rows": card.test_rows,
        "error": card.error,
        "train_metrics": dict(result.metrics),
        "params": {"trainable": result.trainable_params, "total": result.total_params},
        "wall_seconds": result.wall_seconds,
        "device": result.device,
        "precision": result.precision,
        **_registration_json(done),
    }


def _registration_json(done) -> dict:
    """The fields `run --json` and `train --json` share about registering and the gate."""
    decision = done.decision if done else None
    gate = None
    if decision is not None:
        gate = {
            "outcome": decision.outcome,
            "promote": decision.promote,
            "metric": decision.metric,
            "versus": decision.versus or None,
            "p_value": decision.p_value,
            "delta": decision.delta,
            "delta_ci_low": decision.delta_ci_low,
            "delta_ci_high": decision.delta_ci_high,
            "test": decision.test or None,
            "reason": decision.reason,
        }
    registered = None
    if done is not None and done.model_name:
        registered = {"model": done.model_name, "version": done.version}
    return {
        "mlflow_run_id": done.run_id if done else None,
        "outcome": done.outcome if done else None,
        "registered": registered,
        "aliases": dict(done.aliases or {}) if done else {},
        "gate": gate,
    }


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

    from tunelab.console import gate_text

    # Lines stay whole (the terminal wraps them): run ids and commands are copied.
    console = Console(soft_wrap=True)
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
            f"[bold]{escape(gate_text(done))}[/]. {escape(done.decision.reason)}"
        )
        aliases = ", ".join(f"@{a}=v{v}" for a, v in sorted((done.aliases or {}).items()))
        console.print(f"Aliases of {done.model_name}: {aliases or 'none'}")
    from tunelab.lifecycle import tracking

    console.print(escape(tracking.resolve(_workspace()).ui_hint()))


@models_app.command("list")
def models_list(as_json: Json = False) -> None:
    """Show the bundled aliases, where they resolve and whether they are ready."""
    from rich.console import Console

    from tunelab import models
    from tunelab.console import Column, fitted_table

    _state["json"] = as_json
    rows = models.alias_status()
    if as_json:
        keys = ("name", "family", "tasks", "ready", "path", "description")
        _emit_json({"models": [{k: row[k] for k in keys} for row in rows]})
        return
    columns = [
        Column("alias", name=True),
        Column("family", name=True),
        Column("tasks"),
        Column("ready"),
        Column("what", drop=1),
        Column("path", drop=2, name=True),
    ]
    cells = [
        [
            row["name"],
            row["family"],
            ", ".join(row["tasks"]),
            "yes" if row["ready"] else "no",
            row["description"],
            row["path"] or "-",
        ]
        for row in rows
    ]
    console = Console()
    console.print(fitted_table("Bundled models (work offline)", columns, cells, console.width))


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
    rerun: Annotated[
        bool,
        typer.Option(
            "--rerun", help="Run the flow even when nothing changed (unchanged steps reused)."
        ),
    ] = False,
    runner: Annotated[
        str | None,
        typer.Option(
            "--runner",
            help="Where the methods run: thread (this process), dask or ray (worker "
            "processes of a cluster). Default: the plan's `runner`, else thread.",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="An existing Dask or Ray cluster (e.g. tcp://HOST:8786); default: a local one.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Methods at a time: threads, or a local cluster's worker processes. "
            "Default: the plan's concurrency (thread), one per CPU (dask, ray).",
        ),
    ] = None,
    verbose: Verbose = False,
    as_json: Json = False,
) -> None:
    """The milestone pipeline: data gate, every method trained, evaluated, registered and
    compared; ends with the review report and each registered model's champion. The
    libraries' output goes to a log file in .tunelab/logs/ (-v shows it). When nothing
    changed since the last complete run, shows its results without running anything."""
    from tunelab import console
    from tunelab.lifecycle import tracking
    from tunelab.pipeline import uptodate
    from tunelab.pipeline.plan import load_plan
    from tunelab.pipeline.runner import chosen_runner

    started = time.perf_counter()
    _state["json"] = as_json
    if verbose:
        os.environ.setdefault("TUNELAB_PROGRESS", "1")
    plan = _run(load_plan, config)
    # Checked before anything runs; not an input of the up-to-date check (same results).
    chosen = _run(chosen_runner, plan.runner, runner, address, workers)
    # Only what was chosen here: the flow reads the plan's runner itself.
    chose = {} if chosen == plan.runner else chosen.parameters()
    workspace = _workspace()
    uri = tracking.resolve(workspace).uri
    with _locked():
        # The inputs as the run starts: what it is recorded with once complete.
        found = _run(uptodate.check, plan, workspace, uri)
        if found.up_to_date and not (refresh or rerun):
            _print_summary(_up_to_date(found, time.perf_counter() - started))
            return
        # Until this run completes, no earlier one stands for it.
        uptodate.record_path(workspace).unlink(missing_ok=True)
        # Prefect sets up logging when imported: before the console is quiet (tunelab.console).
        from flows.milestone import milestone

        labels = [m.label for m in plan.methods()]
        with _quiet("run", verbose) as run_log:
            why = "--refresh" if refresh else "--rerun" if rerun else found.reason
            logging.getLogger(__name__).info("The flow runs: %s.", why)
            view = console.StepView(labels, run_log.terminal, live=False if verbose else None)
            with console.listening(view), view:
                summary = _run_flow(milestone, str(config), str(workspace.root), refresh, **chose)
        done = _summary_json(summary, [_method_json(r) for r in summary.methods], run_log)
        try:
            uptodate.save(workspace, uri, done, found.inputs)
        except OSError as exc:
            _warn(f"The run is not recorded as the last complete one: {exc}")
    _print_summary(done, run_log)


def _up_to_date(found, seconds: float) -> dict:
    """The last complete run's summary, as this run's: every step reused, nothing run."""
    from tunelab.pipeline.records import STEPS

    done = dict(found.summary)
    done["methods"] = [
        {**m, "reused": list(STEPS), "seconds": dict.fromkeys(STEPS, 0.0)} for m in done["methods"]
    ]
    finished = len(STEPS) * len(done["methods"])
    done.update(
        up_to_date=True,
        last_run=found.finished,
        wall_seconds=round(seconds, 2),
        steps={"reused": finished, "finished": finished},
        log=None,
    )
    return done


def _summary_columns(metric: str | None, level: str):
    """One dataset's table: names whole; when too wide for the terminal (80 columns
    without one), the optional columns go first so the metric, its CI, gate and p stay.
    ``metric``: the dataset's primary metric (the value column's header), None when its
    methods differ (then a column says which)."""
    from tunelab.console import Column

    return [
        Column("method", name=True),
        *([] if metric else [Column("metric", name=True)]),
        Column(metric or "value", name=True, justify="right"),
        Column(f"{level} CI".strip(), name=True),
        Column("gate", name=True),
        Column("p", name=True, justify="right"),
        Column("reused", drop=1, justify="right"),
        Column("registered", name=True, drop=2),
    ]


def _method_json(record) -> dict:
    """One method of `run --json`: the record, its primary metric, registering and gate."""
    from tunelab.console import read_primary

    primary = read_primary(record.run_dir) if record.ok else None
    return {
        "dataset": record.dataset,
        "method": record.method,
        "required": record.required,
        "status": record.status,
        "error": record.error,
        "reused": list(record.reused),
        "seconds": dict(record.seconds),
        "run_dir": record.run_dir,
        "primary": primary.to_dict() if primary else None,
        **_registration_json(record.registration),
    }


def _summary_json(summary, methods: list[dict], run_log) -> dict:
    return {
        "ok": not summary.failed_required(),
        "up_to_date": False,
        "last_run": None,
        "title": summary.title,
        "wall_seconds": summary.wall_seconds,
        "steps": {"reused": summary.reused_steps, "finished": summary.finished_steps},
        "review": {"markdown": summary.report, "html": summary.html},
        "log": str(run_log.path) if run_log else None,
        "champions": dict(summary.champions),
        "methods": methods,
    }


def _summary_row(m: dict, with_metric: bool) -> list[str]:
    from tunelab.console import format_ci, format_p, format_value

    primary, gate = m["primary"] or {}, m["gate"] or {}
    if m["status"] != "ok":
        step = (m["error"] or "").split(":", 1)[0] or "?"
        decision = f"failed ({step})"
    else:
        decision = m["outcome"] or "-"
    registered = m["registered"]
    return [
        m["method"],
        *([primary.get("name") or "-"] if with_metric else []),
        format_value(primary.get("value")),
        format_ci(primary.get("ci_low"), primary.get("ci_high"), digits=2),
        decision,
        format_p(gate.get("p_value")),
        f"{len(m['reused'])}/3" if m["reused"] else "-",
        f"{registered['model']} v{registered['version']}" if registered else "-",
    ]


def _shown_time(iso: str | None) -> str:
    """'2026-11-29 12:16 UTC' from an ISO time in UTC."""
    from datetime import datetime

    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC") if iso else "earlier"


def _print_summary(done: dict, run_log=None) -> None:
    """The final tables, one per dataset: per method its primary test metric with the CI,
    the gate's decision and p; then failures, the review and the champions. ``done``:
    the summary in `run --json`'s form."""
    from rich.console import Console

    from tunelab.console import fitted_table

    methods = done["methods"]
    if _state["json"]:
        _emit_json(done)
        if run_log is not None:
            _note_log(run_log)
        return
    console = Console(highlight=False)
    if done["up_to_date"]:
        console.print(
            f"Nothing changed since the run that ended {_shown_time(done['last_run'])} (plan, "
            "configs, code, libraries, data and starting weights; its MLflow store, data "
            "versions, cache and run folders untouched): its results stand and no step ran. "
            "--rerun runs the flow anyway; --refresh recomputes every step.",
            soft_wrap=True,
            markup=False,
        )
        console.print()
    console.print(done["title"], style="bold", markup=False)
    for dataset in dict.fromkeys(m["dataset"] for m in methods):
        group = [m for m in methods if m["dataset"] == dataset]
        scored = [m["primary"] for m in group if m["primary"]]
        names = {p["name"] for p in scored}
        levels = {round(p["ci_level"] * 100) for p in scored}
        metric = names.pop() if len(names) == 1 else None
        level = f"{levels.pop()}%" if len(levels) == 1 else ""
        rows = [_summary_row(m, with_metric=metric is None) for m in group]
        columns = _summary_columns(metric, level)
        console.print()
        console.print(fitted_table(dataset, columns, rows, console.width))
    console.print()
    for m in methods:
        if m["status"] != "ok":
            console.print(f"{m['dataset']}/{m['method']}: {m['error']}", markup=False)
    steps = done["steps"]
    console.print(
        f"Steps reused from the cache: {steps['reused']} of {steps['finished']}. "
        f"Wall time {done['wall_seconds']:.0f} s.",
        soft_wrap=True,
    )
    console.print(f"Review: {done['review']['markdown']}", markup=False, soft_wrap=True)
    console.print(f"        {done['review']['html']}", markup=False, soft_wrap=True)
    for name, version in done["champions"].items():
        console.print(f"Champion of {name}: " + (f"version {version}" if version else "none"))
    if run_log is not None:
        _note_log(run_log)


@app.command("sweep")
def sweep_cmd(
    config: Annotated[
        Path,
        typer.Argument(
            help="Run config with a sweep: section, e.g. configs/sentiment-lora-sweep.yaml."
        ),
    ],
    trials: Annotated[
        int,
        typer.Option(
            "--trials",
            min=1,
            help="Finished trials the study should hold in all: a study continued after a "
            "stop runs only the missing ones.",
        ),
    ] = 10,
    runner: Annotated[
        str, typer.Option("--runner", help="Where trials run: thread (this process), dask or ray.")
    ] = "thread",
    address: Annotated[
        str | None,
        typer.Option("--address", help="An existing Dask or Ray cluster; default: a local one."),
    ] = None,
    parallel: Annotated[
        int, typer.Option("--parallel", min=1, help="Trials at a time (1 on a CPU).")
    ] = 1,
    study: Annotated[
        str | None,
        typer.Option("--study", help="Study name; default: derived from the config (continued)."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage", help="Optuna storage URL; default: sweeps/<study>/study.db here."
        ),
    ] = None,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote", help="Register the best trial's model and run the promotion gate."
        ),
    ] = False,
    overrides: Overrides = None,
    verbose: Verbose = False,
    as_json: Json = False,
) -> None:
    """Hyperparameter sweep (Optuna): trials of the config's sweep.space, each trained,
    evaluated and logged as a nested MLflow run; writes the best config and a report to
    sweeps/<study>/. Running it again continues the same study. Exits non-zero when the
    sweep could not run or no trial completed."""
    from tunelab import console
    from tunelab import sweep as sweeps
    from tunelab.errors import TrainingError
    from tunelab.pipeline.runner import runner_spec

    _state["json"] = as_json
    if verbose:
        os.environ.setdefault("TUNELAB_PROGRESS", "1")
    cfg = _run(sweeps.load, config, overrides, study, storage)
    _run(runner_spec, runner, "--runner", address, parallel)
    workspace = _workspace()
    with _locked():
        from flows.sweep import sweep  # Prefect: imported before the console is quiet

        with _quiet("sweep", verbose) as run_log:
            progress = _SweepProgress(run_log.terminal, sweeps.objective(cfg)[0])
            progress.console.print(f"Sweep {sweeps.study_name(cfg)}: {trials} trials", markup=False)
            with console.listening(progress):
                summary = _run_flow(
                    sweep, str(config), trials, str(workspace.root), overrides, runner,
                    address, parallel, study, storage, promote,
                )  # fmt: skip
    if as_json:
        _emit_json(_sweep_json(summary, run_log))
    else:
        _print_sweep(summary)
    _note_log(run_log)
    if summary.best is None:
        if as_json:  # the JSON above says ok: false; one document on stdout
            raise typer.Exit(code=TrainingError.exit_code)
        _fail(TrainingError(f"No trial of sweep {summary.study} completed: see {summary.report}."))


class _SweepProgress:
    """One line per finished trial: i/N, state, value, best so far (tunelab.console)."""

    def __init__(self, terminal, metric: str):
        from rich.console import Console

        self.console = Console(file=terminal, highlight=False, soft_wrap=True)
        self.metric = metric

    def started(self, label: str, step: str) -> None:
        pass

    def finished(self, label: str, step: str, outcome) -> None:
        record = getattr(outcome, "record", None)
        if record is None:
            return
        value = "" if record.value is None else f" {self.metric} {record.value:.4f}"
        best = "" if outcome.best is None else f"; best {outcome.best:.4f}"
        state = record.state.lower()
        if record.state == "PRUNED" and record.error:
            state, value = record.error, ""  # "pruned at step N (the metric there)"
        elif record.state == "FAIL":
            state = f"failed ({record.error})"
        self.console.print(
            f"  [{outcome.finished}/{outcome.total}] trial {record.number}: "
            f"{state}{value} in {record.seconds:.0f} s{best}",
            markup=False,
        )


def _sweep_json(summary, run_log) -> dict:
    from dataclasses import asdict

    best = asdict(summary.best) if summary.best else None
    return {
        "ok": summary.best is not None,
        "study": summary.study,
        "storage": summary.storage,
        "metric": summary.metric,
        "direction": summary.direction,
        "trials": [asdict(t) for t in summary.trials],
        "counts": summary.counts,
        "ran": summary.ran,
        "retried": summary.retried,
        "best": best,
        "best_config": summary.best_config,
        "report": summary.report,
        "plots": summary.plots,
        "mlflow_parent_run_id": summary.parent_run_id,
        "log": str(run_log.path),
        **(_registration_json(summary.registration) if summary.registration else {}),
    }


def _print_sweep(summary) -> None:
    from rich.console import Console
    from rich.markup import escape

    from tunelab.console import gate_text

    console = Console(soft_wrap=True, highlight=False)
    counts = summary.counts
    console.print(
        f"Study {escape(summary.study)}: {len(summary.trials)} trials ({counts['COMPLETE']} "
        f"complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed); {summary.ran} ran now."
    )
    if summary.retried:
        listed = ", ".join(str(n) for n in summary.retried)
        console.print(f"Trial(s) {listed} had been interrupted: their values ran again.")
    if summary.best is not None:
        best = summary.best
        console.print(f"Best: trial {best.number}, {summary.metric} {best.value:.4f}")
        for key, value in best.params.items():
            console.print(f"  {escape(key)} = {escape(str(value))}")
        console.print(f"Best config: {escape(summary.best_config)}")
    console.print(f"Report: {escape(summary.report)}")
    if summary.parent_run_id:
        console.print(f"MLflow parent run: {summary.parent_run_id}")
    done = summary.registration
    if done is not None and done.decision:
        console.print(
            f"Registered {done.model_name} version {done.version}: "
            f"[bold]{escape(gate_text(done))}[/]. {escape(done.decision.reason)}"
        )
    elif done is not None and done.not_registered:
        console.print(f"Not registered: {escape(done.not_registered)}.")


@app.command("deploy")
def deploy_cmd(
    cron: Annotated[
        str | None, typer.Option("--cron", help="scheduled-retraining's cron (default 0 3 * * *).")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="Its time zone, e.g. Europe/Berlin.")
    ] = None,
    pool_type: Annotated[
        str,
        typer.Option(
            "--pool-type",
            help="Where flow runs run: process (a worker's machine), docker (a container per "
            "run) or kubernetes (a Job per run).",
        ),
    ] = "process",
    pool: Annotated[
        str | None,
        typer.Option(
            "--pool", help="Work pool name (tunelab, tunelab-docker, tunelab-k8s by type)."
        ),
    ] = None,
    image: Annotated[
        str, typer.Option("--image", help="docker/kubernetes: the image built from Dockerfile.")
    ] = "tunelab:0.1.0",
    gpus: Annotated[
        int, typer.Option("--gpus", help="docker/kubernetes: GPUs each flow run requests.")
    ] = 0,
    repository: Annotated[
        str | None,
        typer.Option(
            "--repository",
            help="A git URL each flow run clones the project from (default: the image's copy, "
            "or this folder for process pools).",
        ),
    ] = None,
    branch: Annotated[str | None, typer.Option("--branch", help="The branch to clone.")] = None,
) -> None:
    """Create the deployments of prefect.yaml on the Prefect server in PREFECT_API_URL
    (milestone-review, scheduled-retraining) on a work pool of the chosen type, created if
    missing. The job's environment carries this shell's store settings (MLFLOW_TRACKING_URI,
    TUNELAB_WORKDIR, AWS_ENDPOINT_URL, ...), never credentials."""
    from rich.console import Console
    from rich.table import Table

    from tunelab.deployments import DeploymentTarget, store_env

    if not os.environ.get("PREFECT_API_URL"):
        _fail(
            _user_error(
                "PREFECT_API_URL is not set: deployments live on a Prefect server. Start one with "
                "`make services` and export the PREFECT_API_URL it prints (or use `tunelab serve` "
                "to run the deployments in this process without a server)."
            )
        )
    target = _run(DeploymentTarget, pool_type, pool, image, gpus, repository, branch, store_env())
    from flows.deployments import deploy_all

    rows = _run(deploy_all, cron, timezone, target)
    table = Table(title=f"Deployments on {os.environ['PREFECT_API_URL']}")
    for column in ("deployment", "work_pool", "schedule", "id"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["deployment"], row["work_pool"], row["schedule"], row["id"])
    console = Console()
    console.print(table)
    console.print(f"Start a worker: prefect worker start --pool {target.pool_name}")


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
    stack: Annotated[
        str,
        typer.Option(
            "--stack",
            help="local: Prefect and MLflow on the workspace's sqlite stores and files; team: "
            "PostgreSQL and an S3 store (SeaweedFS) under them, for many writers.",
        ),
    ] = "local",
    postgres_port: Annotated[int, typer.Option(envvar="POSTGRES_PORT")] = 5433,
    s3_port: Annotated[
        int, typer.Option(envvar="S3_PORT", help="The S3 gateway; SeaweedFS takes the 3 after it.")
    ] = 8333,
) -> None:
    """Start `prefect server` and `mlflow server` (on the workspace's mlruns/ store), wait
    until both are healthy, print their URLs; PIDs go to .services/. With --stack team,
    PostgreSQL (both servers' databases) and SeaweedFS (MLflow's artifacts, proxied) first."""
    from tunelab import services

    root = _workspace().root
    if stack not in ("local", "team"):
        _fail(_user_error(f"--stack {stack}: use local or team."))
    if stack == "team":
        from tunelab import stack as team_stack

        ports = _run(team_stack.TeamPorts, prefect_port, mlflow_port, postgres_port, s3_port)
        rows, team = _run(team_stack.start, root, host, ports)
        exports = team.client_env()
    else:
        rows = _run(
            services.start,
            [
                services.prefect_spec(root, host, prefect_port),
                services.mlflow_spec(root, host, mlflow_port),
            ],
            root / ".services",
        )
        urls = {row["name"]: row["ui_url"] for row in rows}
        exports = {
            "PREFECT_API_URL": f"{urls['prefect']}/api",
            "MLFLOW_TRACKING_URI": urls["mlflow"],
        }
    for row in rows:
        typer.echo(f"{row['name']}: {row['ui_url']} (pid {row['pid']}, {row['status']})")
    shown = " ".join(f"{name}={value}" for name, value in exports.items())
    typer.echo(
        f"Use them from this shell:\n  export {shown}\nStop them with `tunelab services stop`."
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
    as_json: Json = False,
) -> None:
    """Registered models, their versions, aliases, metrics and gate decisions."""
    from rich.console import Console

    from tunelab.console import Column, fitted_table, format_value
    from tunelab.lifecycle import registry

    _state["json"] = as_json
    target = _tracking()
    rows = [_version_json(row) for row in _run(registry.list_versions, target, name)]
    if as_json:
        _emit_json({"tracking": target.shown, "versions": rows})
        return
    if not rows:
        typer.echo(f"No registered models at {target.shown}. Train one with `tunelab train`.")
        return
    # One table per model: its metric heads the value column; names and ids stay whole
    # and, when too wide, the data version and then the method are left out first.
    console = Console()
    console.print(f"Registered models at {target.shown}", style="bold", markup=False)
    for model in dict.fromkeys(row["model"] for row in rows):
        versions = [row for row in rows if row["model"] == model]
        metrics = {row["metric"] for row in versions}
        metric = metrics.pop() if len(metrics) == 1 and "" not in metrics else None
        columns = [
            Column("version", justify="right"),
            Column("aliases", name=True),
            Column("method", name=True, drop=2),
            *([] if metric else [Column("metric", name=True, drop=1)]),
            Column(metric or "value", name=True, justify="right"),
            Column("decision", name=True),
            Column("data", name=True, drop=3),
        ]
        cells = [
            [
                row["version"],
                ", ".join(row["aliases"]) or "-",
                row["method"] or "-",
                *([] if metric else [row["metric"] or "-"]),
                format_value(row["value"]),
                row["decision"] or "-",
                (row["data_version"] or "-")[:12],
            ]
            for row in versions
        ]
        console.print()
        console.print(fitted_table(model, columns, cells, console.width))


def _version_json(row: dict) -> dict:
    """A registry row with the metric split into name and value and aliases as a list."""
    metric, _, value = row["metric"].partition(" ")
    try:
        number = float(value) if value else None
    except ValueError:
        number = None
    return {
        "model": row["model"],
        "version": row["version"],
        "aliases": [a for a in row["aliases"].split(", ") if a],
        "method": row["method"],
        "metric": metric,
        "value": number,
        "data_version": row["data_version"],
        "decision": row["decision"],
        "run_id": row["run_id"],
    }


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
