"""What the model registry tells, against a sqlite MLflow store in tmp_path: a version's
lineage tags, the registered model's description, the gate's decision on the version
(description line, tags, run metrics) and the run's duration up to the decision."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tunelab import config
from tunelab.lifecycle import gate, registry, tracking
from tunelab.lifecycle.registry import KEY_TAG
from tunelab.runs import TrainResult
from tunelab.scorecard import Scorecard
from tunelab.workspace import Workspace

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
VERSION = "fedcba9876543210"
NAME = "story-classifier"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    workspace = Workspace(tmp_path_factory.mktemp("story") / "ws").ensure()
    yield workspace, tracking.setup(workspace)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="module")
def cfg():
    return config.load(CONFIGS / "tiny" / "sentiment-lora.yaml", [f"registry.model_name={NAME}"])


def client():
    return tracking.mlflow_client()


def logged(workspace, target, cfg, model: str, key: str):
    """A tracked run with lineage tags, as if its model had been logged."""
    folder = workspace.root / "runs" / cfg.data.name / f"lora-{model}-{key * 10}"
    folder.mkdir(parents=True)
    result = TrainResult("lora", model, cfg.data.name, "classification", str(folder), VERSION)
    card = Scorecard(
        cfg.data.name, "lora", "classification", model, str(folder), VERSION, "md5test",
        "macro_f1", primary=0.8, ci_low=0.7, ci_high=0.9, metrics={"macro_f1": 0.8},
    )  # fmt: skip
    tracked = tracking.log_run(cfg, result, card, workspace, target, None, {KEY_TAG: key})
    return result, card, replace(tracked, model_uri=f"runs:/{tracked.run_id}/model")


def decision(p: float) -> gate.Decision:
    return gate.Decision(
        promote=True,
        reason="better",
        metric="macro_f1",
        versus="majority class 'positive' (built in)",
        challenger=0.8,
        reference=0.5,
        delta=0.3,
        p_value=p,
        test="paired_bootstrap",
        n=60,
        delta_ci_low=0.2,
        delta_ci_high=0.4,
    )


def test_a_version_tells_its_lineage_its_decision_and_the_models_purpose(store, cfg):
    workspace, target = store
    result, card, tracked = logged(workspace, target, cfg, "tiny-bert", "a")
    version = registry.register(target, cfg, result, card, tracked)
    run = client().get_run(tracked.run_id)
    mv = client().get_model_version(NAME, version)
    lineage = {
        "dataset": cfg.data.name,
        "task": "classification",
        "method": "lora",
        "base_model": "tiny-bert",
        "data_version": VERSION,
        "test_split": "md5test",
        "config_hash": cfg.config_hash(),
        "git_commit": run.data.tags["tunelab.git_commit"],
        "git_dirty": run.data.tags["tunelab.git_dirty"],
        "run_folder": "lora-tiny-bert-aaaaaaaaaa",
        "run_key": "aaaaaaaaaa",
        "run_id": tracked.run_id,
    }
    assert {k: mv.tags.get(k) for k in lineage} == lineage
    assert mv.description.startswith("# ")  # the model card, until the gate decides

    model = client().get_registered_model(NAME)
    assert "Classification models for dataset `tiny-sentiment`" in model.description
    assert "`tiny-bert` (encoder)" in model.description
    assert "`macro_f1` must beat the current `champion`" in model.description
    assert "p <= 0.05" in model.description and "reports/milestone/" in model.description

    before = client().get_run(tracked.run_id).info.end_time
    time.sleep(0.02)
    change = registry.apply_decision(target, NAME, version, tracked.run_id, decision(0.000999))
    assert change.after == {"champion": version}
    mv = client().get_model_version(NAME, version)
    first, _, rest = mv.description.partition("\n\n")
    assert first.startswith("**Promotion gate: promoted** (alias `champion`): macro_f1 0.8")
    assert "p < 0.001 (n=60)" in first and "p = 0" not in first
    assert rest.startswith("# ")  # the model card follows
    assert mv.tags["gate.p_value"] == "9.99e-04"
    run = client().get_run(tracked.run_id)
    assert run.data.metrics["gate.p_value"] == 0.000999  # full precision
    assert run.data.metrics["gate.delta"] == pytest.approx(0.3)
    # The run's duration covers its registration and gate, not only its logging.
    assert run.info.status == "FINISHED" and run.info.end_time > before


def test_the_model_description_is_rewritten_only_when_it_changes(store, cfg, monkeypatch):
    workspace, target = store
    writes = []
    original = type(client()).update_registered_model

    def spy(self, name, description=None, **kwargs):
        writes.append(description)
        return original(self, name, description=description, **kwargs)

    monkeypatch.setattr(type(client()), "update_registered_model", spy)
    registry.register(target, cfg, *logged(workspace, target, cfg, "tiny-bert", "b"))
    registry.register(target, cfg, *logged(workspace, target, cfg, "tiny-bert", "c"))
    assert writes == []  # same base model, same gate: not rewritten
    registry.register(target, cfg, *logged(workspace, target, cfg, "tiny-gpt2", "d"))
    assert len(writes) == 1 and "`tiny-gpt2` (decoder)" in writes[0]


def test_a_manual_promotion_leaves_the_runs_end_alone(store, cfg):
    workspace, target = store
    result, card, tracked = logged(workspace, target, cfg, "tiny-bert", "e")
    version = registry.register(target, cfg, result, card, tracked)
    ended = client().get_run(tracked.run_id).info.end_time
    registry.promote(target, NAME, version, "a person decided")
    assert client().get_run(tracked.run_id).info.end_time == ended
    mv = client().get_model_version(NAME, version)
    assert mv.description.startswith("**Promotion gate: promoted (forced)** (alias `champion`)")
    assert "Promoted by hand: a person decided" in mv.description
