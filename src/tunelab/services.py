"""Start and stop local servers: Prefect and MLflow for one-machine use (the team stack
adds PostgreSQL and an S3 store: tunelab.stack).

Each server runs in its own session (process group) with its output in
``<state_dir>/<name>.log`` and a record in ``<state_dir>/<name>.pid``. Stopping
signals only the process groups named in those records, the last started first (a
database outlives the servers that use it). A health URL is http(s):// (answers 200) or
tcp://host:port (accepts connections).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tunelab.errors import TunelabError

POLL_S = 0.5
STOP_WAIT_S = 20.0
HEALTH_TIMEOUT_S = 2.0
LOG_TAIL_LINES = 20
PORT_HINT = "PREFECT_PORT=4201 MLFLOW_PORT=5001 make services"

# Servers started by this process, so that stopping them also reaps them (no zombies).
_children: dict[int, subprocess.Popen] = {}


class ServiceError(TunelabError):
    """A local service cannot be started: port taken, executable missing, unhealthy."""


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one local server and how to tell that it is up."""

    name: str
    host: str
    port: int
    command: list[str]
    health_url: str
    ui_url: str
    env: dict[str, str] = field(default_factory=dict)  # never written to the record
    folders: tuple[Path, ...] = ()  # created before the server starts
    stop_wait_s: float = STOP_WAIT_S  # SIGTERM, then SIGKILL after this long


def prefect_spec(
    workspace_root: Path,
    host: str = "127.0.0.1",
    port: int = 4200,
    database_url: str | None = None,
) -> ServiceSpec:
    """The Prefect API and UI, with its database at ``database_url`` (SQLAlchemy async
    URL, e.g. postgresql+asyncpg://...), else a sqlite file under ``<root>/.services``."""
    services_dir = Path(workspace_root).resolve() / ".services"
    return ServiceSpec(
        name="prefect",
        host=host,
        port=port,
        command=[_executable("prefect"), "server", "start", "--host", host, "--port", str(port)],
        health_url=f"http://{host}:{port}/api/health",
        ui_url=f"http://{host}:{port}",
        env={
            # Analytics writes to the database at startup: "database is locked" noise.
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # `prefect server start --port N` does not tell its UI the port: without this
            # the UI (its /ui-settings) calls the API at the default port 4200. A URL the
            # user set (e.g. behind a proxy) wins.
            "PREFECT_UI_API_URL": os.environ.get("PREFECT_UI_API_URL")
            or f"http://{host}:{port}/api",
            "PREFECT_HOME": str(services_dir / "prefect-home"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url
            or f"sqlite+aiosqlite:///{services_dir / 'prefect.db'}",
        },
        folders=(services_dir / "prefect-home",),
    )


def mlflow_spec(
    workspace_root: Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    backend_uri: str | None = None,
    artifacts: str | None = None,
    env: dict[str, str] | None = None,
) -> ServiceSpec:
    """An MLflow server over the workspace store (``mlruns/mlflow.db``, ``mlruns/artifacts``),
    or over ``backend_uri`` (e.g. PostgreSQL) with artifacts at ``artifacts`` (e.g. an S3
    URL; ``env`` holds the object store's endpoint and credentials). Artifacts are proxied:
    clients need no object-store credentials."""
    mlruns = Path(workspace_root).resolve() / "mlruns"
    return ServiceSpec(
        name="mlflow",
        host=host,
        port=port,
        command=[
            _executable("mlflow"),
            "server",
            "--backend-store-uri",
            backend_uri or f"sqlite:///{mlruns / 'mlflow.db'}",
            "--artifacts-destination",
            artifacts or str(mlruns / "artifacts"),
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        health_url=f"http://{host}:{port}/health",
        ui_url=f"http://{host}:{port}",
        env=dict(env or {}),
        folders=() if artifacts else (mlruns / "artifacts",),
    )


def start(specs: list[ServiceSpec], state_dir: Path, timeout_s: float = 120) -> list[dict]:
    """Start each service unless it already runs; wait until all answer their health URL.

    Either every service this call starts becomes healthy, or all of them are
    stopped again and ServiceError says why.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    to_start: list[ServiceSpec] = []
    for spec in specs:
        running = _already_running(spec, state_dir)
        if running is not None:
            results[spec.name] = running
        else:
            to_start.append(spec)
    _check_ports(to_start)

    launched: list[tuple[ServiceSpec, subprocess.Popen, float]] = []
    try:
        for spec in to_start:
            launched.append((spec, _launch(spec, state_dir), time.monotonic()))
    except BaseException:
        _abort(launched, state_dir)
        raise

    pending = {spec.name for spec, _, _ in launched}
    failures: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while pending and not failures:
            for spec, proc, began in launched:
                if spec.name not in pending:
                    continue
                if proc.poll() is not None:
                    failures[spec.name] = (
                        f"{spec.name} exited with code {proc.returncode} before it was healthy."
                    )
                elif _healthy(spec.health_url):
                    pending.discard(spec.name)
                    results[spec.name] = {
                        "name": spec.name,
                        "pid": proc.pid,
                        "ui_url": spec.ui_url,
                        "status": "started",
                        "startup_s": round(time.monotonic() - began, 1),
                        "log": str(_log_path(state_dir, spec.name)),
                    }
            if pending and not failures:
                if time.monotonic() > deadline:
                    failures.update(
                        (name, f"{name} did not answer its health URL within {timeout_s:g} s.")
                        for name in sorted(pending)
                    )
                else:
                    time.sleep(POLL_S)
    except BaseException:
        _abort(launched, state_dir)
        raise
    if failures:
        _abort(launched, state_dir)
        details = []
        for name in failures:
            log = _log_path(state_dir, name)
            details.append(f"--- last {LOG_TAIL_LINES} lines of {log} ---\n{_tail(log)}")
        raise ServiceError(
            " ".join(failures.values())
            + " Every service this command started was stopped again.\n"
            + "\n".join(details)
        )
    return [results[spec.name] for spec in specs]


def stop(state_dir: Path) -> list[dict]:
    """Stop every service recorded in ``state_dir``, the last started first (SIGTERM, then
    SIGKILL after its stop_wait_s, 20 s unless its spec says)."""
    results = []
    records = [(pid_file, _read_record(pid_file)) for pid_file in _pid_files(state_dir)]
    records.sort(key=lambda found: -int(found[1].get("launched_ns") or 0))
    for pid_file, record in records:
        pid = record.get("pid")
        name = record.get("name", pid_file.stem)
        if isinstance(pid, int) and _alive(record):
            _terminate_group(pid, float(record.get("stop_wait_s") or STOP_WAIT_S))
            status_ = "stopped"
        else:
            status_ = "not running"
        pid_file.unlink(missing_ok=True)
        results.append({"name": name, "pid": pid, "status": status_})
    return results


def status(state_dir: Path) -> list[dict]:
    """One line per recorded service: is its process alive, does it answer its health URL."""
    results = []
    for pid_file in _pid_files(state_dir):
        record = _read_record(pid_file)
        alive = _alive(record)
        results.append(
            {
                "name": record.get("name", pid_file.stem),
                "pid": record.get("pid"),
                "alive": alive,
                "healthy": alive and _healthy(record.get("health_url", "")),
                "ui_url": record.get("ui_url"),
            }
        )
    return results


def _executable(name: str) -> str:
    """The console script installed next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServiceError(
            f"The `{name}` command was not found next to {sys.executable} nor on PATH. "
            f"Install it into this environment (pip install -e .) and try again."
        )
    return found


def _already_running(spec: ServiceSpec, state_dir: Path) -> dict | None:
    """The running service recorded for this name, or None (a stale record is removed)."""
    pid_file = _pid_path(state_dir, spec.name)
    if not pid_file.exists():
        return None
    record = _read_record(pid_file)
    if not _alive(record):
        pid_file.unlink(missing_ok=True)
        return None
    if not _healthy(record.get("health_url", "")):
        raise ServiceError(
            f"{spec.name} is running (pid {record.get('pid')}) but does not answer "
            f"{record.get('health_url')}. See {_log_path(state_dir, spec.name)}; "
            f"stop it with `make services-stop` and start again."
        )
    return {
        "name": spec.name,
        "pid": record["pid"],
        "ui_url": record.get("ui_url"),
        "status": "already running",
        "startup_s": None,
        "log": str(_log_path(state_dir, spec.name)),
    }


def _check_ports(specs: list[ServiceSpec]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for spec in specs:
        other = seen.setdefault((spec.host, spec.port), spec.name)
        if other != spec.name:
            raise ServiceError(
                f"{other} and {spec.name} are both configured for port {spec.port}. "
                f"Pick different ports, e.g. {PORT_HINT}"
            )
        if _port_in_use(spec.host, spec.port):
            raise ServiceError(
                f"Cannot start {spec.name}: port {spec.port} on {spec.host} is already in use "
                f"by another program. Stop that program or pick another port, e.g. {PORT_HINT}"
            )


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option the servers use: a port in TIME_WAIT is free, a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _launch(spec: ServiceSpec, state_dir: Path) -> subprocess.Popen:
    log_path = _log_path(state_dir, spec.name)
    for folder in spec.folders:
        Path(folder).mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            spec.command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **spec.env},
            start_new_session=True,  # its own process group: stopped as a whole, by PID
        )
    _children[proc.pid] = proc
    record = {
        "name": spec.name,
        "pid": proc.pid,
        "host": spec.host,
        "port": spec.port,
        "ui_url": spec.ui_url,
        "health_url": spec.health_url,
        "command": spec.command,
        "log": str(log_path),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "launched_ns": time.time_ns(),
        "stop_wait_s": spec.stop_wait_s,
    }
    _pid_path(state_dir, spec.name).write_text(json.dumps(record, indent=2) + "\n")
    return proc


def _abort(launched: list[tuple[ServiceSpec, subprocess.Popen, float]], state_dir: Path) -> None:
    for spec, proc, _ in reversed(launched):
        _terminate_group(proc.pid, spec.stop_wait_s)
        _pid_path(state_dir, spec.name).unlink(missing_ok=True)


def _terminate_group(pid: int, stop_wait_s: float = STOP_WAIT_S) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it if still there after
    ``stop_wait_s``."""
    for sig, wait_s in ((signal.SIGTERM, stop_wait_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        if _wait_gone(pid, wait_s):
            break
    # Children that outlived their leader are still in its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _children.pop(pid, None)


def _wait_gone(pid: int, wait_s: float) -> bool:
    proc = _children.get(pid)
    if proc is not None:
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not pid_exists(pid):
            return True
        time.sleep(0.1)
    return False


def _alive(record: dict) -> bool:
    """Whether the recorded server still runs: same PID, still its own session leader."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    if not pid_exists(pid):
        return False
    # A recycled PID belongs to some other program: never signal that one.
    try:
        if os.getsid(pid) != pid:
            return False
    except OSError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    command = record.get("command") or []
    if command and cmdline.exists():
        try:
            return command[0] in cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return False
    return True


def pid_exists(pid: int) -> bool:
    """Whether a process with this id exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(url: str) -> bool:
    if not url:
        return False
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=HEALTH_TIMEOUT_S):
                return True
        except (OSError, ValueError):
            return False
    # Loopback servers: never route the check through an HTTP proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=HEALTH_TIMEOUT_S) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _pid_files(state_dir: Path) -> list[Path]:
    state_dir = Path(state_dir)
    return sorted(state_dir.glob("*.pid")) if state_dir.is_dir() else []


def _read_record(pid_file: Path) -> dict:
    try:
        record = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return {"name": pid_file.stem}
    return record if isinstance(record, dict) else {"name": pid_file.stem}


def _pid_path(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / f"{name}.pid"


def _log_path(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / f"{name}.log"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"
