"""The terminal of a long command: the libraries' chatter in a log file, tunelab's own
progress on screen.

`tunelab run` and `tunelab train` work inside :func:`quiet`: what the libraries print or
log (Trainer log dicts, progress bars, transformers' load reports, MLflow, Prefect and
Python warnings) goes to ``.tunelab/logs/<time>-<command>.log`` in the workspace; the
terminal keeps what tunelab itself shows. ``verbose=True`` leaves the terminal as it was
and still writes the log.

The flows report each step of a method to :func:`step_started` / :func:`step_finished`;
a :class:`StepView` listening shows them: live on a terminal, plain lines otherwise.
Nothing here imports the orchestrator or a heavy library.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

LOGS_DIR = Path(".tunelab") / "logs"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s%(run_name)s: %(message)s"

# Read by the libraries when imported or when they show a bar (tunelab: when a Trainer starts):
# no progress bars on a quiet run. Only set where the user has not chosen.
QUIET_ENV = {
    "TUNELAB_PROGRESS": "0",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

# ---------------------------------------------------------------- step events


class StepListener(Protocol):
    def started(self, label: str, step: str) -> None: ...

    def finished(self, label: str, step: str, outcome: Any) -> None: ...


_listeners: list[StepListener] = []
_listeners_guard = threading.Lock()


def step_started(call: Any) -> None:
    """A step of a method (``call``: a pipeline.method.StepCall) is about to run."""
    _notify("started", call.label, call.step)


def step_finished(call: Any, outcome: Any) -> None:
    """A step ended; ``outcome`` is its pipeline.method.StepOutcome."""
    _notify("finished", call.label, call.step, outcome)


def _notify(event: str, *args: Any) -> None:
    with _listeners_guard:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            getattr(listener, event)(*args)
        except Exception:  # showing progress must never break a run
            log.debug("step listener failed", exc_info=True)


@contextlib.contextmanager
def listening(listener: StepListener) -> Iterator[StepListener]:
    """Send the step events of this process to ``listener`` while the block runs."""
    with _listeners_guard:
        _listeners.append(listener)
    try:
        yield listener
    finally:
        with _listeners_guard:
            _listeners.remove(listener)


# ---------------------------------------------------------------- the run's log file


class _LogStream(io.TextIOBase):
    """What sys.stdout and sys.stderr are while a command is quiet, and the stream of any
    handler a library creates meanwhile: writes go to the latest run log. It is never
    closed, so such a handler still works after the command."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self) -> None:
        self.target: io.TextIOBase | None = None

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        target = self.target
        if target is not None:
            with contextlib.suppress(ValueError):  # closed at interpreter exit
                target.write(text)
        return len(text)

    def flush(self) -> None:
        target = self.target
        if target is not None:
            with contextlib.suppress(ValueError):
                target.flush()

    def fileno(self) -> int:
        if self.target is None:
            raise io.UnsupportedOperation("fileno")
        return self.target.fileno()


_stream = _LogStream()


class _LogFormatter(logging.Formatter):
    """LOG_FORMAT, naming the Prefect flow or task run a record comes from."""

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        record.run_name = f" [{run}]" if run else ""
        return super().format(record)


class _LogFileHandler(logging.StreamHandler):
    """Writes each record once to the run log, however many handlers passed it on."""

    def __init__(self) -> None:
        super().__init__(_stream)
        self.setFormatter(_LogFormatter(LOG_FORMAT))

    def handle(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_tunelab_logged", False):
            return False
        record._tunelab_logged = True
        return super().handle(record)


_file_handler = _LogFileHandler()


class _ToLogFile(logging.Filter):
    """On a handler that writes to the terminal: send the record to the run log instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        _file_handler.handle(record)
        return False


_to_log_file = _ToLogFile()


def _terminal_handlers() -> list[logging.Handler]:
    """The handlers (on any logger) that print to the terminal: plain stream handlers
    (transformers' own, Python's basicConfig) and Prefect's console handlers.

    A library that configures logging while a command is quiet binds its handlers to the
    log stream; one that replaces the root logger's handlers (Prefect at import) drops the
    log file's: import such libraries before entering :func:`quiet`."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in logger.handlers:
            kind = type(handler)
            console = kind is logging.StreamHandler or kind.__name__ in (
                "PrefectConsoleHandler",
                "_SafeStreamHandler",
            )
            if console:
                found[id(handler)] = handler
    return list(found.values())


@dataclass
class RunLog:
    """The log of one command; ``terminal`` is where tunelab's own progress goes."""

    path: Path
    verbose: bool
    terminal: Any  # a text stream


def log_path(root: Path, command: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return root / LOGS_DIR / f"{stamp}-{command}.log"


def shown_path(path: Path) -> str:
    """A path as short as it can be shown: relative to the current directory when below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def quiet(root: Path, command: str, verbose: bool = False) -> Iterator[RunLog]:
    """Hold the terminal for tunelab while ``command`` runs; the rest goes to a log file.

    Quiet: sys.stdout/sys.stderr, file descriptors 1 and 2 (C libraries, subprocesses),
    Python warnings and every handler printing to the terminal go to the log; progress
    bars are off. On leaving, the terminal is back for the command's result; output that
    libraries produce later (a temporary Prefect server stopping at exit) still goes to the
    log. Verbose: the terminal is left alone, log records are copied to the file.
    """
    path = log_path(Path(root), command)
    path.parent.mkdir(parents=True, exist_ok=True)
    file = open(path, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
    _stream.target = file
    root_logger = logging.getLogger()
    if verbose:
        # Python prints warnings of loggers without handlers (logging.lastResort) only
        # while the root logger has none: keep doing so next to the log file.
        last_resort = None if root_logger.handlers else logging.StreamHandler()
        if last_resort is not None:
            last_resort.setLevel(logging.WARNING)
            root_logger.addHandler(last_resort)
    if _file_handler not in root_logger.handlers:
        root_logger.addHandler(_file_handler)
    if verbose:
        try:
            yield RunLog(path, True, sys.stderr)
        finally:
            file.flush()
            if last_resort is not None:
                root_logger.removeHandler(last_resort)
        return
    with contextlib.ExitStack() as stack:
        terminal = stack.enter_context(_terminal_stream())
        stack.enter_context(_quiet_environment())
        stack.enter_context(_captured_warnings())
        stack.enter_context(_logger_level("tunelab", logging.INFO))
        for handler in _terminal_handlers():
            if _to_log_file not in handler.filters:
                handler.addFilter(_to_log_file)
        stack.enter_context(_redirected_descriptors(file))
        stack.enter_context(contextlib.redirect_stdout(_stream))
        stack.enter_context(contextlib.redirect_stderr(_stream))
        yield RunLog(path, False, terminal)


@contextlib.contextmanager
def _terminal_stream() -> Iterator[Any]:
    """Where tunelab writes while fd 2 goes to the log: a copy of the terminal's fd, or
    sys.stderr itself when it has none (a test runner's buffer)."""
    stderr = sys.stderr
    try:
        stderr.flush()
        descriptor = stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield stderr
        return
    encoding = getattr(stderr, "encoding", None) or "utf-8"
    copy = open(os.dup(descriptor), "w", encoding=encoding, errors="replace", buffering=1)  # noqa: SIM115
    try:
        yield copy
    finally:
        copy.close()


@contextlib.contextmanager
def _redirected_descriptors(file) -> Iterator[None]:
    """File descriptors 1 and 2 to the log (C extensions, subprocesses), then back."""
    saved: list[tuple[int, int]] = []
    for stream, descriptor in ((sys.stdout, 1), (sys.stderr, 2)):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
        try:
            saved.append((descriptor, os.dup(descriptor)))
        except OSError:
            continue
        os.dup2(file.fileno(), descriptor)
    try:
        yield
    finally:
        file.flush()
        for descriptor, copy in saved:
            os.dup2(copy, descriptor)
            os.close(copy)


@contextlib.contextmanager
def _quiet_environment() -> Iterator[None]:
    before = {key: os.environ.get(key) for key in QUIET_ENV}
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    restore = _disable_loaded_progress_bars()
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for enable in restore:
            with contextlib.suppress(Exception):
                enable()


def _disable_loaded_progress_bars() -> list:
    """Libraries imported before the environment was set read it no more: tell them.
    Returns what turns their bars on again."""
    switches = []
    if "transformers" in sys.modules:
        with contextlib.suppress(Exception):
            hf = sys.modules["transformers"].utils.logging
            switches.append(
                (hf.is_progress_bar_enabled, hf.disable_progress_bar, hf.enable_progress_bar)
            )
    if "datasets" in sys.modules:
        with contextlib.suppress(Exception):
            ds = sys.modules["datasets"].utils.logging
            switches.append(
                (ds.is_progress_bar_enabled, ds.disable_progress_bar, ds.enable_progress_bar)
            )
    restore = []
    for enabled, disable, enable in switches:
        with contextlib.suppress(Exception):
            if enabled():
                disable()
                restore.append(enable)
    return restore


@contextlib.contextmanager
def _captured_warnings() -> Iterator[None]:
    """Python warnings (MLflow's, torch's) as log records: into the file, with a time."""
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)


@contextlib.contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


# ---------------------------------------------------------------- what the terminal shows


def format_p(value: float | None) -> str:
    """A gate's p-value: never "0" (a resampling test cannot show less than 1/n)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3g}"


def format_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.3f}"


def format_ci(low: float | None, high: float | None, digits: int = 3) -> str:
    if format_value(low) == "-" or format_value(high) == "-":
        return "-"
    return f"{low:.{digits}f}-{high:.{digits}f}"


@dataclass(frozen=True)
class Primary:
    """A run's primary test metric with its confidence interval (from scorecard.json)."""

    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    ci_level: float

    def text(self) -> str:
        ci = format_ci(self.ci_low, self.ci_high)
        return f"{self.name} {format_value(self.value)}" + (f" [{ci}]" if ci != "-" else "")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "value": _finite(self.value),
            "ci_low": _finite(self.ci_low),
            "ci_high": _finite(self.ci_high),
            "ci_level": self.ci_level,
        }


def _finite(value: float | None) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def read_primary(run_dir: str | None) -> Primary | None:
    """The primary metric of an evaluated run; None when it has no readable scorecard."""
    from tunelab.runs import SCORECARD_FILE

    if not run_dir:
        return None
    try:
        card = json.loads((Path(run_dir) / SCORECARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict) or card.get("status") != "ok":
        return None
    return Primary(
        str(card.get("primary_metric", "")),
        _finite(card.get("primary")),
        _finite(card.get("ci_low")),
        _finite(card.get("ci_high")),
        float(card.get("ci_level") or 0.95),
    )


def gate_text(registration: Any) -> str:
    """What registering did, with the gate's p when it tested: 'promoted (p < 0.001)'."""
    if registration is None:
        return "-"
    outcome = registration.outcome or "-"
    decision = registration.decision
    p = format_p(getattr(decision, "p_value", None)) if decision is not None else "-"
    if p == "-":
        return outcome
    return f"{outcome} (p {p})" if p.startswith("<") else f"{outcome} (p = {p})"


@dataclass
class _Row:
    label: str
    number: int | None = None  # k of "method k of N", in the order methods start
    step: str = "waiting"
    started: float | None = None
    ended: float | None = None
    run_dir: str | None = None
    reused: list[str] = field(default_factory=list)
    result: str = ""
    failed: bool = False


class StepView:
    """The steps of a pipeline run as they happen: one live table on a terminal, else
    one plain line per finished step. Fed by the flows' step events (thread-safe)."""

    def __init__(self, labels: Sequence[str], terminal: Any, live: bool | None = None):
        from rich.console import Console

        self.rows = {label: _Row(label) for label in labels}
        self.total = len(self.rows)
        self.console = Console(file=terminal, highlight=False)
        self.live = self.console.is_terminal if live is None else live
        self.began = time.monotonic()
        self._guard = threading.Lock()
        self._started = 0
        self._live = None

    # events
    def started(self, label: str, step: str) -> None:
        with self._guard:
            row = self.rows.setdefault(label, _Row(label))
            if row.number is None:
                self._started += 1
                row.number = self._started
                row.started = time.monotonic()
            row.step = step

    def finished(self, label: str, step: str, outcome: Any) -> None:
        with self._guard:
            row = self.rows.setdefault(label, _Row(label))
            line = self._finish(row, step, outcome)
        if line and not self.live:
            self.console.print(line, markup=False, soft_wrap=True)

    def _finish(self, row: _Row, step: str, outcome: Any) -> str:
        value = outcome.value
        took = "reused" if outcome.reused else f"{getattr(value, 'seconds', 0.0):.1f} s"
        if outcome.reused:
            row.reused.append(step)
        if outcome.failed:
            row.failed, row.step, row.ended = True, "failed", time.monotonic()
            row.result = f"{step} failed"
            return f"{self._prefix(row)} {step} failed"
        detail = ""
        if step == "train":
            row.run_dir = getattr(value, "run_dir", None)
        elif step == "evaluate":
            if getattr(value, "status", "ok") != "ok":
                row.failed, row.step, row.ended = True, "failed", time.monotonic()
                row.result = "evaluate failed"
                return f"{self._prefix(row)} evaluate failed"
            primary = read_primary(row.run_dir)
            if primary is not None:
                row.result = primary.text()
                detail = f": {row.result}"
        elif step == "register":
            row.step, row.ended = "done", time.monotonic()
            gate = gate_text(value)
            row.result = f"{row.result}; {gate}" if row.result else gate
            detail = f": {gate}"
        return f"{self._prefix(row)} {step} {took}{detail}"

    def _prefix(self, row: _Row) -> str:
        number = row.number if row.number is not None else "?"
        return f"[{number}/{self.total}] {row.label}"

    # the live table
    def __rich__(self):
        from rich.table import Table

        now = time.monotonic()
        with self._guard:
            rows = sorted(self.rows.values(), key=lambda r: (r.number is None, r.number or 0))
            started = self._started
        table = Table(box=None, show_header=False, pad_edge=False, title_justify="left")
        table.title = (
            f"Preparing data (validate, version)... {_clock(now - self.began)}"
            if not started
            else f"Method {started} of {self.total}, {_clock(now - self.began)}"
        )
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True, justify="right")
        table.add_column(overflow="ellipsis", no_wrap=True)
        for row in rows:
            number = f"{row.number}/{self.total}" if row.number else ""
            elapsed = ""
            if row.started is not None:
                elapsed = _clock((row.ended or now) - row.started)
            style = "red" if row.failed else ("green" if row.step == "done" else None)
            table.add_row(number, row.label, row.step, elapsed, row.result, style=style)
        return table

    def __enter__(self) -> StepView:
        if self.live:
            from rich.live import Live

            self._live = Live(
                self,
                console=self.console,
                refresh_per_second=1,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if self._live is not None:
            # On success the final table replaces the view; after a failure it stays.
            self._live.transient = kind is None
            self._live.stop()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ---------------------------------------------------------------- tables that fit


@dataclass(frozen=True)
class Column:
    """A column of a fitted table. ``drop``: 0 = always shown; higher numbers go first
    when the table is too wide. ``name``: a name or id, shown whole, never wrapped."""

    header: str
    drop: int = 0
    name: bool = False
    justify: str = "left"


def fitted_table(
    title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int
):
    """A rich Table of at most ``width`` columns where it can be: optional columns are
    dropped (highest ``drop`` first) before anything would wrap; names never wrap."""
    from rich.console import Console

    measure = Console(width=100_000, file=io.StringIO())
    shown = list(range(len(columns)))
    while True:
        table = _table(title, columns, rows, shown)
        optional = [i for i in shown if columns[i].drop]
        if measure.measure(table).maximum <= width or not optional:
            return table
        shown.remove(max(optional, key=lambda i: (columns[i].drop, i)))


def _table(title, columns, rows, shown):
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        title_justify="left",
        title_style="bold",
    )
    for i in shown:
        column = columns[i]
        widest = max((len(str(row[i])) for row in rows), default=0)
        table.add_column(
            column.header,
            justify=column.justify,
            no_wrap=column.name,
            min_width=max(widest, len(column.header)) if column.name else None,
        )
    for row in rows:
        table.add_row(*(str(row[i]) for i in shown))
    return table


@contextlib.contextmanager
def working(terminal: Any, text: str, live: bool | None = None) -> Iterator[None]:
    """One line saying what runs: a spinner with the elapsed time on a terminal, else
    printed once."""
    from rich.console import Console
    from rich.spinner import Spinner

    console = Console(file=terminal, highlight=False)
    if not (console.is_terminal if live is None else live):
        console.print(f"{text}...", markup=False, soft_wrap=True)
        yield
        return
    from rich.live import Live

    began = time.monotonic()

    class _Line:
        def __rich__(self):
            return Spinner("dots", f"{text}... {_clock(time.monotonic() - began)}")

    with Live(
        _Line(),
        console=console,
        refresh_per_second=4,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    ):
        yield
