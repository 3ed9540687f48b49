"""The `tunelab` command line. Heavy libraries are imported inside commands so --help is fast."""

from __future__ import annotations

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
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

_state = {"debug": False}

Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
]


@app.callback()
def main(
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir", envvar="TUNELAB_WORKDIR", help="Workspace for everything a run writes."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    if workdir is not None:
        os.environ["TUNELAB_WORKDIR"] = str(workdir.expanduser().resolve())
    _state["debug"] = debug
    # Quiet, offline-friendly defaults for the libraries commands import later.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")


def _fail(exc: Exception) -> None:
    """Print a user error as one paragraph and exit 2; re-raise with --debug."""
    if _state["debug"]:
        raise exc
    from rich.console import Console
    from rich.markup import escape

    # Escaped: messages hold things like "[train]" that rich would read as markup.
    Console(stderr=True).print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(code=2)


def _run(fn, *args, **kwargs):
    from tunelab.errors import TunelabError

    try:
        return fn(*args, **kwargs)
    except TunelabError as exc:
        _fail(exc)


def _run_flow(flow_fn, *args, **kwargs):
    """Run a Prefect flow; a user error is shown once, as a paragraph, not as a traceback."""
    if not _state["debug"]:
        _hide_user_error_tracebacks_on_console()
    return _run(flow_fn, *args, **kwargs)


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

    rows = _run_flow(prepare_data, cfgs, str(_workspace().root))
    _print_prepared(rows)


def _print_prepared(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Prepared datasets")
    for column in ("dataset", "version", "train", "validation", "test", "changed"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["dataset"],
            row["version"],
            *(str(row.get(f"rows_{s}", 0)) for s in ("train", "validation", "test")),
            "yes" if row["changed"] else "no (unchanged)",
        )
    console = Console()
    console.print(table)
    for row in rows:
        console.print(f"{row['dataset']}: report {row['report']}")
        if row["data_docs"]:
            console.print(f"{row['dataset']}: Data Docs {row['data_docs']}")


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
    """Validate the data, train one method and print its metrics; files land in runs/."""
    from tunelab import config as config_mod
    from tunelab.train import train_from_config

    cfg = _run(config_mod.load, config, overrides)
    result = _run(train_from_config, cfg, _workspace())
    _print_result(result)


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


def _user_error(message: str) -> Exception:
    from tunelab.errors import TunelabError

    return TunelabError(message)


if __name__ == "__main__":
    app()
