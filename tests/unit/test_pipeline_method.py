"""One method of a plan through its steps, with a stand-in orchestrator: the order of the
steps, what a failure or a cached step leaves in the record, and DPO's init_from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.errors import ModelError
from tunelab.pipeline import method
from tunelab.pipeline.plan import load_plan
from tunelab.pipeline.records import Evaluated, MethodRecord, Registration, Trained
from tunelab.pipeline.retrain import RetrainDecision

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def plan():
    return load_plan(CONFIGS / "milestone.yaml")


def context() -> method.MethodContext:
    return method.MethodContext(
        workdir="/ws",
        tracking_uri="sqlite:///ws/mlflow.db",
        code="code1",
        data_versions={"sentiment": "v1", "instructions": "v2", "preferences": "v3"},
        parents={"sentiment": "parent-1"},
        tags={"tunelab.pipeline": "milestone"},
    )


class Orchestrator:
    """Runs each step call by a table of answers; records what it was asked."""

    def __init__(self, answers: dict[str, method.StepOutcome]):
        self.answers, self.calls = answers, []

    def __call__(self, call: method.StepCall) -> method.StepOutcome:
        self.calls.append(call)
        return self.answers[call.step]


def done(value, reused=False) -> method.StepOutcome:
    return method.StepOutcome(value, failed=False, reused=reused)


def test_three_steps_in_order_fill_one_record(plan):
    spec = plan.find("sentiment/lora")
    run = Orchestrator(
        {
            "train": done(Trained("/ws/runs/sentiment/lora-x", 12.5)),
            "evaluate": done(Evaluated("ok", None, 1.5), reused=True),
            "register": done(Registration(model_name="sentiment-classifier", version="3")),
        }
    )
    record = method.run_method(spec, context(), run)
    assert [c.step for c in run.calls] == ["train", "evaluate", "register"]
    assert [c.label for c in run.calls] == ["sentiment/lora"] * 3
    train, evaluate, register = run.calls
    # The train step opens the MLflow run live: where and under which parent, like register.
    assert train.args == (
        spec.cfg,
        "/ws",
        "v1",
        "sqlite:///ws/mlflow.db",
        "parent-1",
        context().tags,
    )
    assert evaluate.args == (spec.cfg, "/ws/runs/sentiment/lora-x", "/ws")
    assert register.args[3:] == ("sqlite:///ws/mlflow.db", "parent-1", context().tags)
    # Each key builds on the one before it.
    assert train.key.startswith("train-") and evaluate.key.startswith("evaluate-")
    assert record.ok and record.run_dir == "/ws/runs/sentiment/lora-x"
    assert record.reused == ["evaluate"]
    assert record.seconds == {"train": 12.5, "evaluate": 0.0, "register": 0.0}
    assert record.model_version == "sentiment-classifier v3"


def test_a_deferred_register_step_waits_for_register_pending(plan):
    """Parallel runners train and score at once but register in plan order."""
    run = Orchestrator(
        {
            "train": done(Trained("/ws/runs/sentiment/lora-x", 2.0)),
            "evaluate": done(Evaluated("ok", None, 1.0)),
            "register": done(Registration(model_name="sentiment-classifier", version="1")),
        }
    )
    record = method.run_method(plan.find("sentiment/lora"), context(), run, defer_register=True)
    assert [c.step for c in run.calls] == ["train", "evaluate"]
    assert record.registration is None and record.pending.step == "register"
    method.register_pending(record, run)
    assert [c.step for c in run.calls] == ["train", "evaluate", "register"]
    assert record.pending is None and record.model_version == "sentiment-classifier v1"
    method.register_pending(record, run)  # nothing left to run
    assert len(run.calls) == 3
    failed = method.run_method(
        plan.find("sentiment/full"),
        context(),
        Orchestrator({"train": method.StepOutcome(ModelError("x"), failed=True, reused=False)}),
        defer_register=True,
    )
    assert failed.pending is None


def test_a_failed_step_stops_the_method_and_names_the_step(plan):
    spec = plan.find("sentiment/full")
    failure = method.StepOutcome(ModelError("no such model"), failed=True, reused=False)
    run = Orchestrator({"train": failure})
    record = method.run_method(spec, context(), run)
    assert [c.step for c in run.calls] == ["train"]
    assert not record.ok and record.error == "train: ModelError: no such model"
    assert record.run_dir is None and record.registration is None


def test_a_run_that_cannot_be_scored_is_not_registered(plan):
    run = Orchestrator(
        {
            "train": done(Trained("/ws/runs/x", 1.0)),
            "evaluate": done(Evaluated("failed", "no predictions.parquet", 0.1)),
        }
    )
    record = method.run_method(plan.find("sentiment/tfidf"), context(), run)
    assert [c.step for c in run.calls] == ["train", "evaluate"]
    assert record.error == "evaluate: no predictions.parquet"


def test_dpo_starts_from_its_source_run_or_fails_clearly(plan):
    spec = plan.find("preferences/dpo")
    source = MethodRecord("chat", "lora", run_dir="/ws/runs/chat/lora-y")
    run = Orchestrator(
        {
            "train": done(Trained("/ws/runs/preferences/dpo-z", 3.0)),
            "evaluate": done(Evaluated("ok", None, 1.0)),
            "register": done(Registration()),
        }
    )
    method.run_method(spec, context(), run, finished=[source])
    cfg = run.calls[0].args[0]
    assert cfg.train.dpo.init_from == "/ws/runs/chat/lora-y"
    assert spec.cfg.train.dpo.init_from is None

    failed = MethodRecord("chat", "lora", status="failed", error="train: OOM")
    record = method.run_method(spec, context(), Orchestrator({}), finished=[failed])
    assert record.error.startswith("train: preferences/dpo starts from chat/lora")
    assert "OOM" in record.error


def test_retraining_runs_only_changed_datasets(plan):
    ran = []

    def run(subset):
        ran.append(subset)
        from tunelab.pipeline.summary import PipelineSummary

        return PipelineSummary(subset.title, "r.md", "r.html", 1.0, {}, [], {})

    lines = ["- `sentiment`: skipped", "- `chat`: retraining", "- `preferences`: skip"]
    summary = RetrainDecision(plan, ["chat"], lines).apply(run)
    assert [d.name for d in ran[0].datasets] == ["chat"]
    assert ran[0].title.endswith("(retraining)")
    assert summary.retrained == ["chat"]
    assert summary.skipped == ["sentiment", "preferences"]

    nothing = RetrainDecision(plan, [], lines).apply(run)
    assert len(ran) == 1 and nothing.retrained == [] and nothing.report == ""


def trained_and_scored(wall_seconds: float = 1.0, latency: float = 3.0):
    from tunelab.runs import TrainResult
    from tunelab.scorecard import Scorecard

    result = TrainResult(
        "baseline-tfidf", "sklearn", "sentiment", "classification", "/ws/runs/sentiment/x", "v1"
    )
    result.wall_seconds = wall_seconds
    card = Scorecard(
        "sentiment", "baseline-tfidf", "classification", "sklearn", "/ws/runs/sentiment/x",
        "v1", "md5", "macro_f1", primary=0.8, metrics={"macro_f1": 0.8},
        costs={"latency_p50_ms": latency}, servable=True,
    )  # fmt: skip
    return result, card


def test_the_registration_key_names_one_trained_and_evaluated_run(plan):
    cfg = plan.find("sentiment/tfidf").cfg
    key = method.registration_key(cfg, *trained_and_scored())
    assert key == method.registration_key(cfg, *trained_and_scored(latency=9.0))  # re-measured
    assert key != method.registration_key(cfg, *trained_and_scored(wall_seconds=2.0))  # retrained
    result, card = trained_and_scored()
    card.status, card.error = "failed", "no predictions"
    assert key != method.registration_key(cfg, result, card)
    other = cfg.model_copy(deep=True)
    other.registry.significance = 0.01  # another config: another registration
    assert key != method.registration_key(other, *trained_and_scored())


def test_a_rerun_of_a_registration_reuses_its_run_version_and_decision(plan, monkeypatch):
    """The register step run again after it stopped: nothing is logged, registered or
    judged twice, and half-done moves of the model are finished first."""
    from tunelab.lifecycle import evidence, registry, tracking
    from tunelab.lifecycle.gate import Decision

    cfg = plan.find("sentiment/tfidf").cfg
    result, card = trained_and_scored()
    runs, calls, decided = {}, [], {}

    def log_run(cfg, result, card, workspace, target, parent, tags):
        calls.append("log")
        runs[tags[registry.KEY_TAG]] = tracking.TrackedRun("run-1", "0", None, "models:/m-1")
        return runs[tags[registry.KEY_TAG]]

    def register(target, cfg, result, card, tracked):
        calls.append("register")
        return "1"

    def judge(target, cfg, card, tracked):
        calls.append("judge")
        return Decision(promote=True, reason="better", metric="macro_f1")

    def apply_decision(target, name, version, run_id, decision):
        calls.append("apply")
        decided[version] = (decision, registry.AliasChange(name, version, {}, {"champion": "1"}))
        return decided[version][1]

    monkeypatch.setattr(tracking, "log_run", log_run)
    monkeypatch.setattr(registry, "tracked_run", lambda target, dataset, key: runs.get(key))
    monkeypatch.setattr(registry, "recover", lambda target, name: calls.append("recover") or [])
    monkeypatch.setattr(registry, "register", register)
    monkeypatch.setattr(registry, "recorded_decision", lambda t, n, v: decided.get(v))
    monkeypatch.setattr(evidence, "judge", judge)
    monkeypatch.setattr(registry, "apply_decision", apply_decision)

    first = method.track_and_register(cfg, result, card, None, "target")
    assert calls == ["log", "recover", "register", "judge", "apply"]
    calls.clear()
    again = method.track_and_register(cfg, result, card, None, "target")
    assert calls == ["recover", "register"]
    assert (again.run_id, again.version, again.aliases) == ("run-1", "1", {"champion": "1"})
    assert again.decision is first.decision


def test_a_failed_step_keeps_no_credentials_in_its_error():
    """Error text reaches summary.json, the review and Prefect artifacts."""
    from tunelab.pipeline.records import MethodRecord

    record = MethodRecord("reviews", "lora").fail(
        "train", OSError("could not read https://ann:hunter2@data.example/x.csv?api_key=abc123")
    )
    assert "hunter2" not in record.error and "abc123" not in record.error
    assert record.error.startswith("train: OSError: could not read https://")
