"""Live tracking through a real `mlflow server`: the loss curve is on the server while a
tiny model still trains, and after `tunelab train` the same run holds everything."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tunelab import config
from tunelab.lifecycle import live
from tunelab.pipeline.method import train_and_register
from tunelab.train import common

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STEPS = 12
PROBE_AT = 7


@pytest.fixture
def server_store(workspace, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    yield workspace
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def probe(url: str):
    """A callback that, at step PROBE_AT, asks the server (its own client) for the curve;
    training waits meanwhile, so whatever it sees was there before training ended."""
    from mlflow import MlflowClient
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        seen: dict = {}

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step != PROBE_AT:
                return
            run_id = live.LiveRun.read(args.output_dir).run_id
            client = MlflowClient(tracking_uri=url)
            deadline = time.monotonic() + 30
            history = []
            while not history and time.monotonic() < deadline:
                history = client.get_metric_history(run_id, "curve/train_loss")
                time.sleep(0.2)
            Probe.seen = {
                "run_id": run_id,
                "steps": sorted(m.step for m in history),
                "status": client.get_run(run_id).info.status,
            }

    return Probe()


def test_the_curve_is_on_the_server_while_training_and_in_the_logged_run(
    server_store, mlflow_server
):
    from mlflow import MlflowClient

    cfg = config.load(
        CONFIGS / "tiny" / "instructions-lora.yaml",
        [f"train.max_steps={STEPS}", "train.logging_steps=1", "train.save_steps=6"],
    )
    watcher = probe(mlflow_server.url)
    with common.training_callbacks(watcher):
        outcome = train_and_register(cfg, server_store)

    seen = watcher.seen
    assert seen, "the probe never ran"
    assert seen["status"] == "RUNNING"
    assert seen["steps"] and max(seen["steps"]) < PROBE_AT, seen  # points of earlier steps

    run_id = seen["run_id"]
    assert outcome.result.mlflow_run_id == run_id
    assert outcome.registration.tracked.run_id == run_id  # logged into the live run
    assert live.LiveRun.read(outcome.result.output_dir).run_id == run_id

    client = MlflowClient(tracking_uri=mlflow_server.url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_steps"] == str(STEPS)
    card = outcome.card
    assert run.data.metrics[f"test_{card.primary_metric}"] == pytest.approx(card.primary)
    assert run.data.tags["tunelab.evaluation"] == "ok"
    assert outcome.registration.tracked.model_uri  # the model is in this run
    assert run.data.tags["tunelab.model_uri"] == outcome.registration.tracked.model_uri

    losses_steps = sorted(m.step for m in client.get_metric_history(run_id, "curve/train_loss"))
    assert losses_steps == list(range(1, STEPS + 1))  # each step once
    for name in ("curve/learning_rate", "curve/grad_norm"):
        assert len(client.get_metric_history(run_id, name)) == STEPS, name
    # Evaluation logs carry the epoch too.
    assert {m.step for m in client.get_metric_history(run_id, "curve/epoch")} == set(losses_steps)
    assert client.get_metric_history(run_id, "curve/validation_loss")
    system = [key for key in run.data.metrics if key.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system, sorted(run.data.metrics)
    # One run for the method: nothing was logged a second time.
    found = client.search_runs(
        [run.info.experiment_id], filter_string="tags.`tunelab.method` = 'lora'"
    )
    assert [r.info.run_id for r in found] == [run_id]
