"""A killed training job, re-run with the same config and workspace, resumes and ends where
an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).parents[2] / "configs" / "tiny" / "sentiment-full.yaml"
# Long enough to be killed mid-way, short enough for the default suite.
OVERRIDES = ["train.max_steps=120", "train.save_steps=10", "train.batch_size=4"]


def train_cmd(workdir: Path) -> list[str]:
    args = [sys.executable, "-m", "tunelab.cli", "--workdir", str(workdir), "train", str(CONFIG)]
    for item in OVERRIDES:
        args += ["--set", item]
    return args


def env() -> dict:
    return {**os.environ, "TUNELAB_PROGRESS": "0"}


def result_of(workdir: Path) -> dict:
    [path] = list((workdir / "runs").rglob("train_result.json"))
    return json.loads(path.read_text())


def wait_for_checkpoint(workdir: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [
            p.parent
            for p in (workdir / "runs").rglob("checkpoint-*/trainer_state.json")
            if (p.parent / "rng_state.pth").exists()
        ]
        if done:
            return done[0]
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) before any checkpoint")
        time.sleep(0.05)
    pytest.fail("no checkpoint appeared in time")


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(train_cmd(straight), env=env(), check=True, capture_output=True, timeout=600)
    expected = result_of(straight)
    assert expected["resumed_from"] is None

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        train_cmd(killed), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = wait_for_checkpoint(killed, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # The MLflow run the killed attempt logged its curve to.
    [record] = list((killed / "runs").glob("*/*/live_run.json"))
    killed_run = json.loads(record.read_text())["run_id"]
    assert not list((killed / "runs").rglob("train_result.json")), "the run finished anyway"

    rerun = subprocess.run(
        train_cmd(killed), env=env(), capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    resumed = result_of(killed)
    assert resumed["resumed_from"] and Path(resumed["resumed_from"]).name.startswith("checkpoint-")
    assert int(Path(resumed["resumed_from"]).name.split("-")[1]) >= int(
        checkpoint.name.split("-")[1]
    )
    assert "Resumed from" in rerun.stdout
    # Same final metrics and the same last logged training loss as the straight run;
    # train_loss too: it covers the steps before the kill, not only the resumed ones.
    for key, value in expected["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert resumed["metrics"]["train_loss"] == pytest.approx(
        expected["metrics"]["train_loss"], rel=1e-6
    )
    last = [h["loss"] for h in expected["history"] if "loss" in h][-1]
    assert [h["loss"] for h in resumed["history"] if "loss" in h][-1] == pytest.approx(last)

    # One MLflow run across the kill: its curve covers every logged step of the run.
    assert resumed["mlflow_run_id"] == killed_run
    from mlflow import MlflowClient

    store = MlflowClient(tracking_uri=f"sqlite:///{killed / 'mlruns' / 'mlflow.db'}")
    assert store.get_run(killed_run).info.status == "FINISHED"
    logged = {m.step for m in store.get_metric_history(killed_run, "curve/train_loss")}
    assert logged == {h["step"] for h in resumed["history"] if "loss" in h}
