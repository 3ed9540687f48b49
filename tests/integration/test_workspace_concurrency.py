"""Two `tunelab run` started at once in one fresh workspace: one waits for the other's
lock, both end cleanly (no traceback from MLflow's first start of its store), the data is
versioned once and every model registered once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from services import tiny_plan

from tunelab.lifecycle import registry, tracking
from tunelab.workspace import Workspace

pytestmark = pytest.mark.integration


def start_run(root: Path, plan: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tunelab.cli", "--workdir", str(root), "run", str(plan)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_two_runs_at_once_in_one_workspace_end_cleanly(tmp_path, prefect_harness, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    from tunelab.data import versioning

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "ws"  # fresh: no mlruns/mlflow.db yet
    plan = tiny_plan(tmp_path)
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "TUNELAB_PROGRESS": "0",
        "TUNELAB_LOCK_TIMEOUT": "600",
    }
    runs = [start_run(root, plan, env), start_run(root, plan, env)]
    outputs = []
    for proc in runs:
        out, _ = proc.communicate(timeout=900)
        outputs.append(" ".join(out.split()))  # rich wraps long lines
    for proc, out in zip(runs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]
        assert "Traceback" not in out and "already exists" not in out, out[-4000:]
    waited = [out for out in outputs if "holds the workspace" in out]
    assert len(waited) == 1, "exactly one run waits for the other"
    # The one that waited found everything done: every step reused, nothing registered.
    assert "Steps reused from the cache: 6 of 6" in waited[0], waited[0][-3000:]

    workspace = Workspace(root)
    assert len(versioning.list_versions("tiny-sentiment", workspace)) == 1
    rows = registry.list_versions(tracking.setup(workspace), "tiny-sentiment-classifier")
    assert [r["version"] for r in rows] == ["1"]  # TF-IDF, once; majority is not servable
    assert not workspace.lock_owner_path.exists()
    with workspace.lock(0):  # both have exited: the lock is free again
        pass
