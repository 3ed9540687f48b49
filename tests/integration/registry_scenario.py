"""One registry story, run against the local store and against a real `mlflow server`.

Real training (a tiny random encoder and the TF-IDF baseline on the bundled sentiment
data), real evaluation, real MLflow: nothing is faked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab import config
from tunelab.errors import RegistryError
from tunelab.lifecycle import predict, registry
from tunelab.pipeline.method import Outcome, train_and_register
from tunelab.runs import TrainResult
from tunelab.scorecard import Scorecard
from tunelab.workspace import Workspace

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LABELS = {"negative", "neutral", "positive"}
NAME = "sentiment-classifier"


def tiny_encoder(seed: int = 42) -> config.RunConfig:
    """A random tiny BERT for 6 steps: worse than TF-IDF, about as good as always one label."""
    return config.load(
        CONFIGS / "sentiment-full.yaml",
        [
            "model.name=tiny-bert",
            "model.max_length=64",
            "train.max_steps=6",
            "train.save_steps=6",
            "train.logging_steps=2",
            f"train.seed={seed}",
        ],
    )


def tfidf(*overrides: str) -> config.RunConfig:
    return config.load(CONFIGS / "sentiment-tfidf.yaml", list(overrides))


def trained_tfidf(root: Path) -> tuple[Workspace, config.RunConfig, TrainResult, Scorecard]:
    """A TF-IDF run trained and evaluated in a workspace at ``root`` (seconds): what a
    registration takes, ready to register as often as a test needs."""
    from tunelab.pipeline import method

    workspace = Workspace(Path(root))
    cfg = tfidf()
    result = method.train_from_config(cfg, workspace)
    return workspace, cfg, result, method.evaluate(cfg, result, workspace)


def run_registry_story(workspace: Workspace) -> dict[str, Outcome]:
    """Register three versions, force one, roll back, predict; assert every step."""
    weak = train_and_register(tiny_encoder(), workspace)
    assert weak.registration.version == "1"
    assert not weak.registration.decision.promote, weak.registration.decision.reason
    assert "built in" in weak.registration.decision.versus  # no champion, no baseline run yet
    target = registry_target(workspace)
    assert registry.aliases(target, NAME) == {"challenger": "1"}

    strong = train_and_register(tfidf(), workspace)
    assert strong.registration.version == "2"
    assert strong.registration.decision.promote, strong.registration.decision.reason
    assert strong.registration.decision.p_value <= 0.05
    assert registry.aliases(target, NAME) == {"champion": "2"}

    worse = train_and_register(tiny_encoder(seed=7), workspace)
    assert worse.registration.version == "3"
    assert worse.registration.decision.versus.startswith("champion v2")
    assert worse.card.primary < strong.card.primary
    assert not worse.registration.decision.promote
    assert registry.aliases(target, NAME) == {"champion": "2", "challenger": "3"}

    loaded = predict.load(target, f"{NAME}@champion")
    assert loaded.version == "2"
    answer = loaded.predict(["I loved it, a wonderful film"])
    assert len(answer) == 1 and answer[0] in LABELS

    change = registry.promote(target, NAME, "3", reason="test of a manual decision")
    assert change.after == {"champion": "3", "previous": "2"}
    forced = registry.version_info(target, NAME, "3")
    assert forced.tags["gate.decision"] == "promoted (forced)"

    back = registry.rollback(target, NAME)
    assert back.after == {"champion": "2", "previous": "3"}
    assert predict.load(target, f"{NAME}@champion").version == "2"

    with pytest.raises(RegistryError, match=r"no alias 'best'.*@champion \(v2\)"):
        predict.load(target, f"{NAME}@best")
    with pytest.raises(RegistryError, match=f"No registered model named 'nope'.*{NAME}"):
        predict.load(target, "nope@champion")
    rows = registry.list_versions(target, NAME)
    assert [r["version"] for r in rows] == ["1", "2", "3"]
    return {"weak": weak, "strong": strong, "worse": worse}


def registry_target(workspace: Workspace):
    from tunelab.lifecycle import tracking

    return tracking.setup(workspace)
