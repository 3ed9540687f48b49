"""One writer per workspace: a second process waits for the lock, says who holds it, and
fails clearly after the timeout; a killed holder never leaves a stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.errors import WorkspaceBusyError
from tunelab.workspace import Workspace

CONFIGS = Path(__file__).parents[2] / "configs"

TAKE = """
import sys
from tunelab.workspace import Workspace
with Workspace.resolve(sys.argv[1]).lock(0):
    pass
"""
HOLD = """
import sys, time
from tunelab.workspace import Workspace
with Workspace.resolve(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the workspace lock until it is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def held_by_another_process(root: Path) -> bool:
    """Whether a fresh process fails to take the workspace lock at once."""
    return subprocess.run([sys.executable, "-c", TAKE, str(root)], timeout=60).returncode != 0


def test_a_second_writer_waits_then_fails_naming_the_holder(tmp_path, holder):
    said = []
    started = time.monotonic()
    with pytest.raises(WorkspaceBusyError) as caught, Workspace(tmp_path).lock(0.5, said.append):
        pytest.fail("the lock was taken while another process held it")
    assert time.monotonic() - started >= 0.5
    assert len(said) == 1 and "waiting" in said[0] and f"pid {holder.pid}" in said[0]
    assert f"pid {holder.pid}" in str(caught.value) and "--lock-timeout" in str(caught.value)
    assert caught.value.exit_code == 8


def test_the_waiter_goes_on_when_the_holder_ends(tmp_path, holder):
    threading.Timer(0.5, holder.send_signal, (signal.SIGKILL,)).start()
    said = []
    # Killed, not released: the operating system frees the lock with its process.
    with Workspace(tmp_path).lock(60, said.append) as ws:
        assert holder.poll() is not None
        assert f"pid {os.getpid()}" in ws.holder()
    assert said and "waiting" in said[0]
    assert not ws.lock_owner_path.exists()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    ws = Workspace(tmp_path)
    entered = []

    def task() -> None:
        with ws.lock(0):
            entered.append("thread")

    with ws.lock(0):
        with ws.lock(0):
            entered.append("nested")
        # A task of the same run, in another thread, enters it without waiting.
        worker = threading.Thread(target=task)
        worker.start()
        worker.join(10)
        entered.append("outer")
        assert held_by_another_process(tmp_path)
    assert entered == ["nested", "thread", "outer"]
    # Released when the outermost holder leaves: another process takes it at once.
    assert not held_by_another_process(tmp_path)


def test_lock_timeout_comes_from_the_environment(monkeypatch):
    from tunelab.errors import ConfigError
    from tunelab.workspace import DEFAULT_LOCK_TIMEOUT_S, lock_timeout

    monkeypatch.delenv("TUNELAB_LOCK_TIMEOUT", raising=False)
    assert lock_timeout() == DEFAULT_LOCK_TIMEOUT_S
    monkeypatch.setenv("TUNELAB_LOCK_TIMEOUT", "2.5")
    assert lock_timeout() == 2.5 and lock_timeout(7) == 7
    monkeypatch.setenv("TUNELAB_LOCK_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="TUNELAB_LOCK_TIMEOUT"):
        lock_timeout()


def test_cli_train_waits_for_the_workspace_then_exits_8(tmp_path, holder):
    from tunelab.cli import app

    args = ["--workdir", str(tmp_path), "--lock-timeout", "0.5", "train"]
    result = CliRunner().invoke(app, [*args, str(CONFIGS / "tiny" / "sentiment-majority.yaml")])
    assert result.exit_code == 8, result.output
    assert "waiting" in result.output and f"pid {holder.pid}" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["train", "run"])
def test_commands_hold_the_workspace_before_mlflow_starts(tmp_path, monkeypatch, command):
    """Two first runs raced to create mlruns/mlflow.db: the lock must already be held."""
    import flows.milestone
    from tunelab.cli import app
    from tunelab.errors import TrackingError
    from tunelab.lifecycle import tracking

    seen = []

    def setup(*args, **kwargs):
        seen.append(held_by_another_process(tmp_path))
        raise TrackingError("stop here")

    monkeypatch.setattr(tracking, "setup", setup)
    monkeypatch.setattr(flows.milestone, "milestone", lambda *args: setup())
    config = CONFIGS / ("tiny/sentiment-majority.yaml" if command == "train" else "tiny.yaml")
    result = CliRunner().invoke(app, ["--workdir", str(tmp_path), command, str(config)])
    assert result.exit_code == 6, result.output
    assert seen == [True]
    assert not held_by_another_process(tmp_path)  # released when the command ended
