"""`tunelab sweep` end to end on the tiny LoRA config: trials as nested MLflow runs, the
best config and the report; a study left with an interrupted trial continues where it
stopped (the trial's values run again) and sends its best trial through the gate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.scale]

CONFIG = Path(__file__).parents[2] / "configs" / "tiny" / "sentiment-lora-sweep.yaml"


def sweep(workdir: Path, trials: int, *more: str) -> dict:
    args = [sys.executable, "-m", "tunelab.cli", "--workdir", str(workdir), "sweep", str(CONFIG)]
    done = subprocess.run(
        [*args, "--trials", str(trials), "--json", *more],
        env={**os.environ, "TUNELAB_PROGRESS": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def leave_a_running_trial(workdir: Path, study: str) -> int:
    """What a sweep killed mid-trial leaves: a RUNNING trial of a process that is gone."""
    import optuna

    from tunelab import config
    from tunelab import sweep as sweeps
    from tunelab.workspace import Workspace

    cfg = config.load(CONFIG)
    url = sweeps.storage_url(cfg, Workspace(workdir), study)
    trial = optuna.load_study(study_name=study, storage=url).ask()
    for key, dist in cfg.sweep.space.items():
        sweeps.suggest(trial, key, dist)
    trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": 2**22 + 4321})
    return trial.number


def test_a_six_trial_sweep_in_two_sittings(tmp_path):
    from mlflow import MlflowClient

    from tunelab import config

    workdir = tmp_path / "ws"
    first = sweep(workdir, 4)
    assert first["ok"] and len(first["trials"]) == 4 and first["ran"] == 4
    assert first["counts"]["COMPLETE"] >= 2  # n_startup_trials=2: never pruned

    stopped = leave_a_running_trial(workdir, first["study"])
    second = sweep(workdir, 6, "--promote")
    assert second["study"] == first["study"]
    assert second["retried"] == [stopped] and second["ran"] == 2
    assert len(second["trials"]) == 6 and stopped not in [t["number"] for t in second["trials"]]
    retry = next(t for t in second["trials"] if t["number"] > stopped)
    assert retry["params"] is not None

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny-sentiment").experiment_id
    parent = second["mlflow_parent_run_id"]
    assert parent == first["mlflow_parent_run_id"]
    nested = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(nested) == 6
    assert {r.data.tags["tunelab.sweep.state"] for r in nested} <= {"COMPLETE", "PRUNED"}
    for run in nested:
        assert "train.learning_rate" in run.data.params and "train.adapter.r" in run.data.params
    summary = client.get_run(parent)
    assert summary.info.status == "FINISHED"
    assert summary.data.metrics["best_validation_loss"] == pytest.approx(second["best"]["value"])

    best = config.load(second["best_config"])
    assert best.sweep is None
    assert best.train.learning_rate == second["best"]["params"]["train.learning_rate"]
    folder = Path(second["report"]).parent
    report = Path(second["report"]).read_text()
    assert "optimization_history.png" in report and "param_importances.png" in report
    assert (folder / "optimization_history.png").is_file()
    assert (folder / "param_importances.png").is_file()
    assert second["registered"] and second["gate"]["outcome"]
