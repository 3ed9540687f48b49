"""GRPO (train.method=grpo): a policy tuned against rewards on prompts data, its held-out
reward and KL before and after, reward references checked before any model loads, and
the gate's paired comparison within the KL budget."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tunelab import config, evaluate, scorecard
from tunelab.errors import ConfigError, TrainingError
from tunelab.lifecycle import gate, registry
from tunelab.pipeline.plan import load_plan
from tunelab.train import check_method, grpo, rewards
from tunelab.train import train as run_training
from tunelab.workspace import Workspace

THINGS = ["a bakery", "running shoes", "a phone case", "a hotel", "a film", "a novel", "an app"]


def grpo_config(*overrides: str):
    return config.load(
        None,
        [
            "data.task=prompts",
            "data.name=tiny-prompts",
            "model.name=tiny-llama",
            "model.max_length=64",
            "train.method=grpo",
            "train.batch_size=8",
            "train.logging_steps=5",
            "train.save_steps=1000",
            *overrides,
        ],
    )


def prompts(rows: int, offset: int = 0) -> pd.DataFrame:
    texts = [f"Write a short review of {THINGS[i % len(THINGS)]}, number {i}." for i in range(rows)]
    return pd.DataFrame({"prompt": texts[offset:], "source_row": range(offset + 1, rows + 1)})


# ---------------------------------------------------------------- rewards


def test_rule_rewards_score_completions_and_sum_with_their_weights():
    cfg = grpo_config()
    cfg.train.grpo.rewards = [
        config.RewardSource(regex=r"\byes\b"),
        config.RewardSource(min_words=2, max_words=3, weight=0.5),
    ]
    scorers = rewards.Scorers(rewards.resolve(cfg))
    scores = scorers.score(["q"] * 3, ["Yes, sure thing", "no", "well yes"])
    assert scores == {"format": [1.0, 0.0, 1.0], "length": [1.0, 0.0, 1.0]}
    assert scorers.total(scores) == [1.5, 0.0, 1.5]


def test_a_reward_names_exactly_one_source():
    with pytest.raises(ConfigError, match="exactly one of model, classifier, regex"):
        grpo_config("train.grpo.rewards=[{regex: 'a', min_words: 2}]")
    with pytest.raises(ConfigError, match="needs the label"):
        grpo_config("train.grpo.rewards=[{classifier: 'sentiment-classifier@champion'}]")
    with pytest.raises(ConfigError, match="does not compile"):
        grpo_config("train.grpo.rewards=[{regex: '('}]")


def test_grpo_without_rewards_or_with_partial_groups_is_refused_before_loading():
    with pytest.raises(TrainingError, match="at least one reward"):
        rewards.resolve(grpo_config())
    with pytest.raises(TrainingError, match="not a multiple of train.grpo.num_generations=4"):
        check_method(grpo_config("train.batch_size=6", "train.grpo.rewards=[{regex: a}]"))
    with pytest.raises(TrainingError, match="grpo supports prompts"):
        check_method(grpo_config("data.task=preference", "train.grpo.rewards=[{regex: a}]"))


@pytest.fixture
def registry_store(tmp_path, monkeypatch):
    """A real MLflow registry (sqlite) with a classifier whose labels are recorded and a
    classifier of unrecorded labels; no model files: resolving must not load any."""
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    client.create_registered_model("sentiment-classifier")
    tags = {
        "task": "classification",
        "method": "baseline-tfidf",
        registry.LABELS_TAG: json.dumps(["negative", "neutral", "positive"]),
    }
    client.create_model_version("sentiment-classifier", "file:///nowhere", tags=tags)
    client.set_registered_model_alias("sentiment-classifier", "champion", "1")
    client.create_registered_model("chat-assistant")
    client.create_model_version("chat-assistant", "file:///nowhere", tags={"task": "chat"})
    client.set_registered_model_alias("chat-assistant", "champion", "1")
    yield client
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        ("{classifier: nope@champion, label: positive}", "No registered model named 'nope'"),
        ("{classifier: sentiment-classifier@best, label: positive}", "has no alias 'best'"),
        ("{classifier: sentiment-classifier/7, label: positive}", "has no version 7"),
        (
            "{classifier: sentiment-classifier@champion, label: joyful}",
            "has no label 'joyful'; its labels are negative, neutral, positive",
        ),
        ("{classifier: chat-assistant@champion, label: x}", "not a classifier"),
        ("{model: 'models:/sentiment-classifier@champion'}", "not a reward model"),
        ("{model: ./no-such-run}", "not a finished tunelab run folder"),
    ],
)
def test_a_bad_reward_reference_is_a_clear_error_before_any_model_loads(
    registry_store, monkeypatch, tmp_path, reward, message
):
    from tunelab import models
    from tunelab.train import preference

    def no_loading(*_a, **_k):
        raise AssertionError("a model was loaded before the rewards were checked")

    monkeypatch.setattr(models, "load_tokenizer", no_loading)
    monkeypatch.setattr(preference, "_load_model", no_loading)
    monkeypatch.chdir(tmp_path)
    cfg = grpo_config(f"train.grpo.rewards=[{reward}]")
    with pytest.raises(rewards.RewardSourceError, match=message) as caught:
        run_training(cfg, {"train": prompts(16), "test": prompts(24, 16)}, Workspace(tmp_path))
    assert "train.grpo.rewards[0]" in str(caught.value)


def test_a_registered_reward_pins_its_version_in_the_run_fingerprint(registry_store):
    from tunelab.runs import fingerprint

    cfg = grpo_config(
        "train.grpo.rewards=[{classifier: sentiment-classifier@champion, label: positive}]"
    )
    assert rewards.pins(cfg) == ["sentiment-classifier-positive=sentiment-classifier/1 (run None)"]
    before = fingerprint(cfg, "v1", code="c")
    registry_store.create_model_version(
        "sentiment-classifier", "file:///elsewhere", tags={"task": "classification"}
    )
    registry_store.set_registered_model_alias("sentiment-classifier", "champion", "2")
    assert fingerprint(cfg, "v1", code="c") != before  # the alias moved: a new run


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Full GRPO of the tiny random decoder against 'contains an a' (LoRA cannot reach a
    random model's output layer, whose near-uniform distribution must move)."""
    cfg = grpo_config(
        "train.grpo.rewards=[{regex: a, name: letter_a}]",
        "train.grpo.use_adapter=false",
        "train.grpo.max_completion_length=2",
        "train.grpo.eval_samples=4",
        "train.grpo.kl_budget=20",
        "train.learning_rate=2e-2",
        "train.max_steps=40",
    )
    workspace = Workspace(tmp_path_factory.mktemp("grpo"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNELAB_PROGRESS", "0")
        result = run_training(cfg, {"train": prompts(64), "test": prompts(100, 64)}, workspace)
    return cfg, result, workspace


def test_grpo_raises_a_rule_reward_on_held_out_prompts_within_the_kl_budget(trained):
    cfg, result, _ = trained
    m = result.metrics
    assert m["prompts"] == 36
    assert m["test_reward_letter_a"] == m["test_reward"]
    assert m["test_reward"] >= m["before_test_reward"] + 0.15, m
    assert 0 < m["test_kl"] <= cfg.train.grpo.kl_budget, m
    assert m["test_reward_ci_low"] <= m["test_reward"] <= m["test_reward_ci_high"]
    assert m["before_test_reward_ci_high"] < m["test_reward_ci_high"]
    assert result.history and any("reward" in h and "kl" in h for h in result.history)
    assert result.tokens_per_second > 0  # trl's GRPO counts tokens in its state
    assert set(result.artifacts) >= {"predictions", "model", "reward_plot"}
    table = pd.read_parquet(f"{result.output_dir}/predictions.parquet")
    assert {"completion_before", "completion", "reward_before", "reward", "kl"} <= set(table)
    assert table["source_row"].tolist() == list(range(65, 101))


def test_the_gate_pairs_the_policy_with_itself_before_training(trained):
    cfg, result, workspace = trained
    card = scorecard.evaluate_run(result, cfg, workspace)
    assert card.ok and card.primary_metric == "reward"
    table = card.predictions()
    decision = gate.decide(card, table, cfg, None, [])
    assert decision.versus == "the policy before training (built in)"
    assert decision.delta == pytest.approx(card.primary - table["reward_before"].mean())
    assert decision.limits["KL to the reference (nats per answer)"].startswith("ok:")
    assert decision.promote, decision.reason
    tight = cfg.model_copy(deep=True)
    tight.train.grpo.kl_budget = card.metrics["test_kl"] / 2
    refused = gate.decide(card, table, tight, None, [])
    assert not refused.promote and "limits exceeded" in refused.reason


def test_policies_scored_by_different_rewards_are_not_compared(trained):
    cfg, result, workspace = trained
    card = scorecard.evaluate_run(result, cfg, workspace)
    table = card.predictions()
    other = table.assign(reward_sources="letter_a=regex:i:b*1")
    champion = gate.Reference("champion v1", other, card.test_split, version="1")
    decision = gate.decide(card, table, cfg, champion, [])
    assert not decision.promote
    assert "scored by different rewards" in decision.reason


def test_policy_metrics_are_means_of_the_held_out_table():
    table = pd.DataFrame(
        {
            "reward": [1.0, 0.0],
            "reward_before": [0.0, 0.0],
            "kl": [0.5, 1.5],
            "words": [3.0, 5.0],
            "words_before": [4.0, 4.0],
            "reward_fmt": [1.0, 0.0],
            "reward_fmt_before": [0.0, 0.0],
            "reward_sources": ["x", "x"],
        }
    )
    metrics = evaluate.table_metrics(table, "prompts")
    assert metrics["reward"] == 0.5 and metrics["kl"] == 1.0
    assert metrics["reward_fmt"] == 0.5 and metrics["completion_words"] == 4.0
    assert "reward_sources" not in metrics
    with pytest.raises(ValueError, match="Unknown metric 'accuracy'"):
        evaluate.metric_value(table, "accuracy", "prompts")


def test_reward_hacking_signs_are_warned_about():
    table = pd.DataFrame(
        {
            "reward": [1.0],
            "reward_before": [0.0],
            "kl": [30.0],
            "words": [1.0],
            "words_before": [9.0],
        }
    )
    warnings = grpo.hacking_warnings(table, kl_budget=10)
    assert len(warnings) == 2
    assert "above train.grpo.kl_budget=10" in warnings[0]
    assert "shrank from 9.0 to 1.0 words" in warnings[1]
    calm = table.assign(kl=1.0, words=8.0)
    assert grpo.hacking_warnings(calm, kl_budget=10) == []


# ---------------------------------------------------------------- the plan


def test_the_plan_rewards_grpo_with_a_reward_model_listed_before_it(tmp_path):
    plan = load_plan("configs/tiny.yaml")
    method = plan.find("tiny-prompts/grpo")
    assert method.waits_for == ["tiny-instructions/lora", "tiny-preferences/reward"]
    assert method in plan.dependent()
    cfg = method.config_for("/runs/sft", "/runs/reward")
    assert cfg.train.grpo.init_from == "/runs/sft"
    assert [r.model for r in cfg.train.grpo.rewards if r.kind == "model"] == ["/runs/reward"]
    bad = tmp_path / "plan.yaml"
    bad.write_text(
        "datasets:\n"
        "  tiny-sentiment:\n"
        f"    tfidf: {{config: {config_dir()}/tiny/sentiment-tfidf.yaml}}\n"
        "  tiny-prompts:\n"
        f"    grpo: {{config: {config_dir()}/tiny/prompts-grpo.yaml, "
        "reward_from: tiny-sentiment/tfidf}\n"
    )
    with pytest.raises(ConfigError, match="not a reward model"):
        load_plan(bad)


def config_dir() -> str:
    from pathlib import Path

    return str(Path("configs").resolve())


def test_rloo_trains_through_the_same_path(tmp_path, monkeypatch):
    """train.grpo.algorithm=rloo: trl's RLOOTrainer, the same rewards, table and metrics."""
    monkeypatch.setenv("TUNELAB_PROGRESS", "0")
    cfg = grpo_config(
        "train.grpo.algorithm=rloo",
        "train.grpo.rewards=[{regex: e}]",
        "train.grpo.max_completion_length=4",
        "train.max_steps=2",
    )
    result = run_training(cfg, {"train": prompts(16), "test": prompts(24, 16)}, Workspace(tmp_path))
    assert result.method == "grpo" and result.metrics["prompts"] == 8
    assert {"test_reward", "before_test_reward", "test_kl"} <= set(result.metrics)
    assert any("reward" in h for h in result.history)
    assert "adapter" in result.artifacts  # LoRA by default, merged and verified
    assert result.metrics["merge_max_abs_diff"] <= cfg.train.adapter.merge_atol


def test_a_reward_reference_that_is_no_reference_says_how_to_write_one(registry_store):
    cfg = grpo_config("train.grpo.rewards=[{classifier: 'sentiment classifier', label: x}]")
    with pytest.raises(rewards.RewardSourceError, match=r"rewards\[0\].*Use NAME@ALIAS"):
        rewards.resolve(cfg)
