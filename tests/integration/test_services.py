"""`tunelab services start/stop`: real Prefect and MLflow servers on loopback, stopped by PID."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from tunelab import services
from tunelab.services import ServiceError, ServiceSpec

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return response.status


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def status_from_another_process(state_dir) -> list[dict]:
    """What `tunelab services status` sees: no Popen handles, only the PID files."""
    code = (
        "import json, sys; from tunelab import services; "
        "print(json.dumps(services.status(sys.argv[1])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(state_dir)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_start_status_restart_and_stop_both_servers(tmp_path):
    root = tmp_path / "workspace"
    state_dir = root / ".services"
    specs = [
        services.prefect_spec(root, port=free_port()),
        services.mlflow_spec(root, port=free_port()),
    ]
    try:
        started = services.start(specs, state_dir, timeout_s=STARTUP_TIMEOUT_S)
        assert [r["name"] for r in started] == ["prefect", "mlflow"]
        assert all(r["status"] == "started" for r in started)
        for r in started:
            print(f"{r['name']} healthy after {r['startup_s']} s")
        pids = {r["name"]: r["pid"] for r in started}

        for spec in specs:
            assert http_status(spec.health_url) == 200
        # Each server keeps its state in the workspace.
        assert (root / ".services" / "prefect.db").exists()
        assert (root / "mlruns" / "mlflow.db").exists()

        for seen in (services.status(state_dir), status_from_another_process(state_dir)):
            assert {r["name"]: (r["pid"], r["alive"], r["healthy"]) for r in seen} == {
                name: (pid, True, True) for name, pid in pids.items()
            }

        again = services.start(specs, state_dir, timeout_s=STARTUP_TIMEOUT_S)
        assert [(r["name"], r["pid"], r["status"]) for r in again] == [
            ("prefect", pids["prefect"], "already running"),
            ("mlflow", pids["mlflow"], "already running"),
        ]

        stopped = services.stop(state_dir)
        assert sorted((r["name"], r["pid"], r["status"]) for r in stopped) == [
            ("mlflow", pids["mlflow"], "stopped"),
            ("prefect", pids["prefect"], "stopped"),
        ]
        assert all(gone(pid) for pid in pids.values())
        assert not list(state_dir.glob("*.pid"))
        assert services.stop(state_dir) == []
        assert services.status(state_dir) == []
    finally:
        services.stop(state_dir)


def test_start_refuses_a_port_in_use(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        state_dir = tmp_path / ".services"
        try:
            with pytest.raises(ServiceError, match=f"prefect.*port {busy}.*MLFLOW_PORT="):
                services.start([services.prefect_spec(tmp_path, port=busy)], state_dir)
        finally:
            services.stop(state_dir)
        assert not list(state_dir.glob("*.pid"))


def test_a_server_that_dies_or_hangs_is_reported_with_its_log_and_cleaned_up(tmp_path):
    state_dir = tmp_path / ".services"

    def spec(name: str, code: str) -> ServiceSpec:
        port = free_port()
        return ServiceSpec(
            name=name,
            host="127.0.0.1",
            port=port,
            command=[sys.executable, "-c", code, str(state_dir)],
            health_url=f"http://127.0.0.1:{port}/health",
            ui_url=f"http://127.0.0.1:{port}",
        )

    try:
        dies = spec("mlflow", "import sys; print('no such backend store'); sys.exit(3)")
        with pytest.raises(ServiceError, match=r"(?s)exited with code 3.*mlflow\.log.*no such"):
            services.start([dies], state_dir, timeout_s=30)
        assert not list(state_dir.glob("*.pid"))

        hangs = spec(
            "prefect", "import time; print('still migrating', flush=True); time.sleep(600)"
        )
        with pytest.raises(ServiceError, match=r"(?s)within 2 s.*prefect\.log.*still migrating"):
            services.start([hangs], state_dir, timeout_s=2)
        assert not list(state_dir.glob("*.pid"))
    finally:
        services.stop(state_dir)
