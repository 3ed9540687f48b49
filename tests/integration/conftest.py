from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from services import MlflowServer, free_port


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (sqlite) for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "mlflow-server-root")
    server.root.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live_services(tmp_path, monkeypatch):
    """Prefect and MLflow servers started the way `make services` starts them, in a fresh
    workspace (yielded); PREFECT_API_URL, MLFLOW_TRACKING_URI and TUNELAB_WORKDIR point at
    them. Stopped by PID."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tunelab import services

    root = tmp_path / "ws"
    root.mkdir()
    state = root / ".services"
    prefect_port = free_port()
    specs = [
        services.prefect_spec(root, port=prefect_port),
        services.mlflow_spec(root, port=free_port()),
    ]
    try:
        rows = {row["name"]: row for row in services.start(specs, state, timeout_s=180)}
        api = rows["prefect"]["ui_url"] + "/api"
        monkeypatch.setenv("PREFECT_API_URL", api)  # for the worker process
        monkeypatch.setenv("MLFLOW_TRACKING_URI", rows["mlflow"]["ui_url"])
        monkeypatch.setenv("TUNELAB_WORKDIR", str(root))
        # In this process too, even if a test harness API is active in the session.
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield root
    finally:
        services.stop(state)


@pytest.fixture
def worker(live_services):
    """A Prefect process worker on the 'tunelab' pool (log: <workspace>/worker.log)."""
    log = open(live_services / "worker.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "tunelab"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        start_new_session=True,
    )
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    log.close()


@pytest.fixture
def team_workspace():
    """A workspace for the team stack that PostgreSQL's own user can reach when the tests
    run as root (pytest's temporary folders are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="tunelab-team-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
