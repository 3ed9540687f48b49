"""Live tracking against a sqlite MLflow store in tmp_path: which MLflow run a training
run goes to (new, resumed, retrained), what ends it, and what log_run does with it."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tunelab import config
from tunelab.lifecycle import live, tracking
from tunelab.lifecycle.registry import KEY_TAG
from tunelab.runs import RESULT_FILE, TrainResult
from tunelab.scorecard import Scorecard
from tunelab.workspace import Workspace

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
VERSION = "0123456789abcdef"


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One sqlite store for the module (creating one takes seconds)."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    workspace = Workspace(tmp_path_factory.mktemp("live") / "ws").ensure()
    yield workspace, tracking.setup(workspace)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture
def store(shared_store):
    workspace, target = shared_store
    tracking.setup(workspace)  # another test module may have pointed MLflow elsewhere
    return workspace, target


@pytest.fixture
def folder(shared_store, request) -> Path:
    """This test's run folder."""
    path = shared_store[0].root / "runs" / "live" / request.node.name
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def cfg():
    return config.load(CONFIGS / "tiny" / "sentiment-lora.yaml")


def client(target):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=target.uri)


def losses(target, run_id) -> dict[int, float]:
    history = client(target).get_metric_history(run_id, "curve/train_loss")
    return {m.step: m.value for m in history}


def train_a_little(target, run: live.LiveRun, folder: Path, steps: range, save: bool):
    """What a Trainer does to the callback: a log per step, then (maybe) a checkpoint."""
    sender = live.MetricSender(target, run.run_id)
    callback = live.metrics_callback(sender, run)
    args = SimpleNamespace(output_dir=str(folder))
    for step in steps:
        state = SimpleNamespace(global_step=step, is_world_process_zero=True)
        logs = {"loss": 3.0 - step / 10, "learning_rate": 1e-3, "grad_norm": 0.5, "epoch": 0.1}
        callback.on_log(args, state, None, logs=logs)
    if save:
        checkpoint = folder / f"checkpoint-{steps[-1]}"
        checkpoint.mkdir()
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": steps[-1]}))
        callback.on_save(
            args, SimpleNamespace(global_step=steps[-1], is_world_process_zero=True), None
        )
    sender.close()


def test_a_new_run_is_open_nested_and_tagged_before_training(store, cfg, folder):
    workspace, target = store
    parent = tracking.start_parent(target, cfg.data.name, "milestone", {})
    run = live.open_run(cfg, target, folder, VERSION, parent, {"tunelab.pipeline": "milestone"})
    assert not run.resumed
    assert live.LiveRun.read(folder) == run
    found = client(target).get_run(run.run_id)
    assert found.info.status == "RUNNING"
    assert found.info.run_name == f"{cfg.data.name}/lora tiny-bert data-{VERSION[:8]}"
    assert found.info.experiment_id == tracking.experiment_for(target, cfg.data.name)
    tags = found.data.tags
    assert tags[tracking.PARENT_TAG] == parent
    assert tags["tunelab.pipeline"] == "milestone"
    assert tags["tunelab.method"] == "lora" and tags["tunelab.role"] == "candidate"
    assert tags["tunelab.data_version"] == VERSION
    assert tags["tunelab.run_dir"] == folder.name
    assert tags["tunelab.config_hash"] == cfg.config_hash()
    # The Source says what ran: the pipeline's flow and the method, not engine.py.
    assert tags["mlflow.source.name"] == f"flow milestone: {cfg.data.name}/lora"
    assert tags["mlflow.source.type"] == "JOB"


def test_a_parent_run_is_named_by_its_pipeline_and_lasts_until_its_review(store, tmp_path):
    workspace, target = store
    parent = tracking.start_parent(target, "parents", "milestone", {"tunelab.pipeline": "m"})
    run = client(target).get_run(parent)
    assert run.info.run_name == "parents/milestone" and run.info.status == "RUNNING"
    assert run.data.tags["mlflow.source.name"] == "flow milestone: parents"
    assert run.data.tags["mlflow.source.type"] == "JOB"
    tracking.end_parent(target, parent, failed=True)
    ended = client(target).get_run(parent).info.end_time
    time.sleep(0.02)
    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "review.md").write_text("# review\n")
    tracking.log_folder(target, parent, tmp_path / "review", "milestone-review")
    after = client(target).get_run(parent).info
    assert after.status == "FAILED" and after.end_time > ended  # the review is inside it


def test_a_run_logged_after_training_is_dated_back_to_its_start(store, cfg, folder):
    """A baseline has no live run: its run is created when it is logged, starting when
    its training started (the record's time less its wall time)."""
    workspace, target = store
    result, card = trained(cfg, folder, None)
    result.wall_seconds = 30.0
    result.save()
    trained_at = int(time.time()) - 100  # whole seconds: the file's time holds them exactly
    os.utime(folder / RESULT_FILE, (trained_at, trained_at))
    training_start = int((trained_at - 30.0) * 1000)
    parent = tracking.start_parent(target, cfg.data.name, "milestone", {})
    tracked = tracking.log_run(cfg, result, card, workspace, target, parent, {KEY_TAG: "old"})
    run = client(target).get_run(tracked.run_id)
    assert run.info.start_time <= training_start
    assert run.info.end_time >= int(time.time() * 1000) - 60_000  # ended when logged
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.PARENT_TAG] == parent
    assert run.info.run_name == f"{cfg.data.name}/lora tiny-bert data-{VERSION[:8]}"
    assert run.data.tags["mlflow.source.type"] == "LOCAL"


def test_a_resumed_run_continues_its_mlflow_run_a_retrained_one_gets_a_new_one(store, cfg, folder):
    workspace, target = store

    first = live.open_run(cfg, target, folder, VERSION)
    train_a_little(target, first, folder, range(1, 5), save=True)  # checkpoint-4
    train_a_little(target, first, folder, range(5, 7), save=False)  # then it died
    live.end_run(target, first.run_id, "FAILED", "Training failed: boom")
    assert (folder / "checkpoint-4" / live.LIVE_FILE).is_file()

    # Re-run unchanged: training resumes from checkpoint-4, the MLflow run goes on.
    resumed = live.open_run(cfg, target, folder, VERSION)
    assert resumed.run_id == first.run_id and resumed.resumed
    run = client(target).get_run(first.run_id)
    assert run.info.status == "RUNNING"
    assert tracking.FAILURE_TAG not in run.data.tags
    assert tracking.NOTE_TAG not in run.data.tags
    train_a_little(target, resumed, folder, range(5, 9), save=True)
    steps = [m.step for m in client(target).get_metric_history(first.run_id, "curve/train_loss")]
    # One curve; the steps the dead attempt logged after its checkpoint appear twice.
    assert sorted(steps) == [1, 2, 3, 4, 5, 5, 6, 6, 7, 8]

    # The run finished, then its folder is trained again from scratch: a new MLflow run,
    # the old curve is not mixed in.
    (folder / RESULT_FILE).write_text("{}")
    second = live.open_run(cfg, target, folder, VERSION)
    assert second.run_id != first.run_id and not second.resumed
    assert losses(target, second.run_id) == {}
    old = client(target).get_run(first.run_id)
    assert old.info.status == "KILLED"  # it was RUNNING, waiting for a registration
    assert "trained again from the start" in old.data.tags[tracking.NOTE_TAG]

    # Killed before its first checkpoint: training starts over, so does the MLflow run.
    (folder / RESULT_FILE).unlink()
    for checkpoint in folder.glob("checkpoint-*"):
        for path in checkpoint.iterdir():
            path.unlink()
        checkpoint.rmdir()
    third = live.open_run(cfg, target, folder, VERSION)
    assert third.run_id not in (first.run_id, second.run_id)


def test_a_checkpoint_killed_before_it_was_marked_resumes_the_folders_run(store, cfg, folder):
    workspace, target = store
    first = live.open_run(cfg, target, folder, VERSION)
    checkpoint = folder / "checkpoint-3"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")  # written after live_run.json
    assert live.open_run(cfg, target, folder, VERSION).run_id == first.run_id


def test_a_checkpoint_of_another_store_starts_a_new_run(store, cfg, folder):
    workspace, target = store
    (folder / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoint-2" / "trainer_state.json").write_text("{}")
    live.LiveRun("abc", "1", "http://elsewhere:5000").save(folder / "checkpoint-2")
    assert live.resumable(folder, target) is None
    run = live.open_run(cfg, target, folder, VERSION)
    assert run.run_id != "abc" and not run.resumed


def test_a_training_error_ends_the_run_failed_with_the_error_redacted(store, cfg, folder):
    workspace, target = store
    with (
        pytest.raises(RuntimeError),
        live.tracked(cfg, target, folder, VERSION) as run,
    ):
        raise RuntimeError("could not read https://ann:hunter2@hub.example/m")
    found = client(target).get_run(run.run_id)
    assert found.info.status == "FAILED"
    note = found.data.tags[tracking.NOTE_TAG]
    assert note.startswith("Training failed: RuntimeError: could not read https://***@")
    assert "hunter2" not in note


def test_an_interrupt_ends_the_run_killed(store, cfg, folder):
    workspace, target = store
    with (
        pytest.raises(KeyboardInterrupt),
        live.tracked(cfg, target, folder, VERSION) as run,
    ):
        raise KeyboardInterrupt
    assert client(target).get_run(run.run_id).info.status == "KILLED"


def test_an_mlflow_hiccup_while_training_is_one_warning(monkeypatch, caplog):
    class Down:
        calls = 0

        def log_batch(self, run_id, metrics=()):
            Down.calls += 1
            raise ConnectionError("Connection refused by https://bob:pw@mlflow.example")

    monkeypatch.setattr(live, "_client", lambda target: Down())
    monkeypatch.setattr(live, "SEND_ATTEMPTS", 2)
    monkeypatch.setattr(live.time, "sleep", lambda s: None)
    sender = live.MetricSender(tracking.Tracking("http://127.0.0.1:1"), "run-1")
    with caplog.at_level(logging.WARNING, logger=live.__name__):
        for step in range(1, 6):
            sender.put(live.step_metrics({"loss": 1.0, "epoch": 0.5}, step))
        sender.close(timeout=10)
    warnings = [r for r in caplog.records if "training goes on" in r.getMessage()]
    assert len(warnings) == 1 and "pw" not in warnings[0].getMessage()
    assert sender.sent == 0 and sender.dropped == 10 and Down.calls >= 2


def test_step_metrics_are_curves_at_the_global_step():
    logs = {
        "loss": 1.5,
        "grad_norm": float("nan"),
        "learning_rate": 1e-4,
        "rewards/chosen": 0.2,
        "eval_loss": 1.7,
        "epoch": 0.25,
        "note": "text",
    }
    points = {m.key: (m.value, m.step) for m in live.step_metrics(logs, 7)}
    assert points == {
        "curve/train_loss": (1.5, 7),
        "curve/learning_rate": (1e-4, 7),
        "curve/rewards/chosen": (0.2, 7),
        "curve/validation_loss": (1.7, 7),
        "curve/epoch": (0.25, 7),
    }
    assert live.step_metrics({"train_runtime": 3.0, "train_loss": 1.0}, 9) == []


def test_system_metrics_reach_the_run_offline_with_psutil_only(store, cfg, folder, monkeypatch):
    workspace, target = store
    monkeypatch.setattr(live, "SYSTEM_METRICS_INTERVAL_S", 0.2)
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", raising=False)
    run = live.open_run(cfg, target, folder, VERSION)
    monitor = live.start_system_metrics(target, run.run_id)
    assert monitor is not None
    time.sleep(1.5)
    monitor.finish()
    metrics = client(target).get_run(run.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    assert "system/system_memory_usage_megabytes" in metrics


def trained(cfg, folder: Path, run_id: str | None) -> tuple[TrainResult, Scorecard]:
    result = TrainResult(
        "lora", "tiny-bert", cfg.data.name, "classification", str(folder), VERSION,
        history=[{"step": 1, "epoch": 0.1, "loss": 2.0}, {"step": 2, "epoch": 0.2, "loss": 1.5}],
        mlflow_run_id=run_id,
    )  # fmt: skip
    card = Scorecard(
        cfg.data.name, "lora", "classification", "tiny-bert", str(folder), VERSION, None,
        "macro_f1", primary=0.5, ci_low=0.4, ci_high=0.6, metrics={"macro_f1": 0.5},
    )  # fmt: skip
    return result, card


def test_log_run_fills_and_ends_the_live_run_once(store, cfg, folder):
    workspace, target = store
    run = live.open_run(cfg, target, folder, VERSION)
    sender = live.MetricSender(target, run.run_id)
    sender.put(live.step_metrics({"loss": 2.0}, 1))  # step 2 never arrived live
    sender.close()
    result, card = trained(cfg, folder, run.run_id)

    tracked = tracking.log_run(cfg, result, card, workspace, target, None, {KEY_TAG: "k1"})
    assert tracked.run_id == run.run_id
    found = client(target).get_run(run.run_id)
    assert found.info.status == "FINISHED"
    assert found.data.params["train.method"] == "lora"
    assert found.data.metrics["test_macro_f1"] == 0.5
    assert found.data.tags[KEY_TAG] == "k1"
    history = client(target).get_metric_history(run.run_id, "curve/train_loss")
    assert sorted(m.step for m in history) == [1, 2]  # the missing point added, none twice

    # Registered again under another key (e.g. another registry config): the finished run
    # is left as it is, a new run takes the results.
    again = tracking.log_run(cfg, result, card, workspace, target, None, {KEY_TAG: "k2"})
    assert again.run_id != run.run_id
    assert client(target).get_run(run.run_id).data.tags[KEY_TAG] == "k1"
    assert sorted(losses(target, again.run_id)) == [1, 2]


def test_a_failed_logging_attempt_is_taken_over_by_its_retry(store, cfg, folder, monkeypatch):
    workspace, target = store
    run = live.open_run(cfg, target, folder, VERSION)
    result, card = trained(cfg, folder, run.run_id)

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(tracking, "_log_artifacts", broken)
    with pytest.raises(OSError):
        tracking.log_run(cfg, result, card, workspace, target, None, {KEY_TAG: "k1"})
    assert client(target).get_run(run.run_id).info.status == "FAILED"
    monkeypatch.undo()
    tracked = tracking.log_run(cfg, result, card, workspace, target, None, {KEY_TAG: "k1"})
    assert tracked.run_id == run.run_id
    assert client(target).get_run(run.run_id).info.status == "FINISHED"


def test_an_evaluation_failure_ends_the_live_run_failed(store, cfg, folder):
    workspace, target = store
    run = live.open_run(cfg, target, folder, VERSION)
    live.end_unlogged(folder, target.uri, "evaluate: no predictions.parquet")
    found = client(target).get_run(run.run_id)
    assert found.info.status == "FAILED"
    assert found.data.tags[tracking.NOTE_TAG] == "Not logged: evaluate: no predictions.parquet"
    live.end_unlogged(folder / "untracked", target.uri, "x")  # nothing to do
