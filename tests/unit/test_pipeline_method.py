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
    assert train.args == (spec.cfg, "/ws", "v1")
    assert evaluate.args == (spec.cfg, "/ws/runs/sentiment/lora-x", "/ws")
    assert register.args[3:] == ("sqlite:///ws/mlflow.db", "parent-1", context().tags)
    # Each key builds on the one before it.
    assert train.key.startswith("train-") and evaluate.key.startswith("evaluate-")
    assert record.ok and record.run_dir == "/ws/runs/sentiment/lora-x"
    assert record.reused == ["evaluate"]
    assert record.seconds == {"train": 12.5, "evaluate": 0.0, "register": 0.0}
    assert record.model_version == "sentiment-classifier v3"


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
    source = MethodRecord("instructions", "lora", run_dir="/ws/runs/instructions/lora-y")
    run = Orchestrator(
        {
            "train": done(Trained("/ws/runs/preferences/dpo-z", 3.0)),
            "evaluate": done(Evaluated("ok", None, 1.0)),
            "register": done(Registration()),
        }
    )
    method.run_method(spec, context(), run, finished=[source])
    cfg = run.calls[0].args[0]
    assert cfg.train.dpo.init_from == "/ws/runs/instructions/lora-y"
    assert spec.cfg.train.dpo.init_from is None

    failed = MethodRecord("instructions", "lora", status="failed", error="train: OOM")
    record = method.run_method(spec, context(), Orchestrator({}), finished=[failed])
    assert record.error.startswith("train: preferences/dpo starts from instructions/lora")
    assert "OOM" in record.error


def test_retraining_runs_only_changed_datasets(plan):
    ran = []

    def run(subset):
        ran.append(subset)
        from tunelab.pipeline.summary import PipelineSummary

        return PipelineSummary(subset.title, "r.md", "r.html", 1.0, {}, [], {})

    lines = ["- `sentiment`: skipped", "- `instructions`: retraining", "- `preferences`: skip"]
    summary = RetrainDecision(plan, ["instructions"], lines).apply(run)
    assert [d.name for d in ran[0].datasets] == ["instructions"]
    assert ran[0].title.endswith("(retraining)")
    assert summary.retrained == ["instructions"]
    assert summary.skipped == ["sentiment", "preferences"]

    nothing = RetrainDecision(plan, [], lines).apply(run)
    assert len(ran) == 1 and nothing.retrained == [] and nothing.report == ""
