"""Reward models (train.method=reward): trl's RewardTrainer on preference pairs, scored on
the held-out pairs, registered under '<dataset>-reward' and served as a raw score."""

from __future__ import annotations

import pandas as pd
import pytest

from tunelab import config, evaluate
from tunelab.errors import TrainingError
from tunelab.lifecycle import gate, packaging, registry, safe_load
from tunelab.scorecard import Scorecard
from tunelab.train import check_method
from tunelab.train import train as run_training
from tunelab.workspace import Workspace

TOPICS = ["tea", "bikes", "rain", "maps", "bread", "clocks", "paint", "shoes", "lamps", "kites"]


def reward_config(*overrides: str):
    return config.load(
        None,
        [
            "data.task=preference",
            "data.name=easy-pairs",
            "train.method=reward",
            "model.name=tiny-llama",
            "model.max_length=64",
            "train.batch_size=8",
            "train.logging_steps=5",
            "train.save_steps=1000",
            *overrides,
        ],
    )


def easy_pairs(rows: int, offset: int = 0) -> pd.DataFrame:
    """Chosen answers say yes and thank, rejected ones refuse: one cue separates them."""
    records = []
    for i in range(offset, offset + rows):
        topic = TOPICS[i % len(TOPICS)]
        records.append(
            {
                "prompt": f"Question {i}: can you tell me about {topic}?",
                "chosen": f"Yes, gladly: {topic} are great, thank you for asking.",
                "rejected": f"No. I will not talk about {topic}.",
            }
        )
    return pd.DataFrame(records)


@pytest.fixture(scope="module")
def easy_splits():
    return {"train": easy_pairs(64), "validation": easy_pairs(8, 64), "test": easy_pairs(20, 72)}


def train_reward(tmp_path_factory, splits, *overrides):
    cfg = reward_config(*overrides)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNELAB_PROGRESS", "0")
        result = run_training(cfg, splits, workspace=Workspace(tmp_path_factory.mktemp("ws")))
    return cfg, result


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, easy_splits):
    return train_reward(
        tmp_path_factory, easy_splits, "train.max_steps=24", "train.learning_rate=3e-3"
    )


def test_a_reward_model_learns_to_rank_chosen_above_rejected(lora_run):
    """On an easy synthetic set the held-out pairs come out ordered right, by a margin."""
    _, result = lora_run
    table = pd.read_parquet(result.folder / "predictions.parquet")
    assert len(table) == 20
    assert evaluate.metric_value(table, "reward_accuracy", "preference") >= 0.9
    assert table["reward_margin"].mean() > 0
    assert result.metrics["test_reward_accuracy"] >= 0.9
    # Trained on the 64 pairs: the loss fell from ln 2 (every pair a tie).
    losses = [row["loss"] for row in result.history if "loss" in row]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert any("accuracy" in row and "margin" in row for row in result.history)
    assert {"adapter", "merged", "margin_plot"} <= set(result.artifacts)
    assert (result.folder / result.artifacts["margin_plot"]).stat().st_size > 0
    assert result.metrics["merge_max_abs_diff"] < 1e-4


def test_the_served_model_gives_the_rewards_evaluation_saw(lora_run):
    """The registered package (the merged model behind a text-classification pipeline)
    returns the raw reward of a prompt/response conversation, as scored at training."""
    cfg, result = lora_run
    served = packaging.servable(result, cfg)
    assert served is not None and served.task == "reward" and served.as_code
    assert served.hf_task == "text-classification" and served.package == "merged"
    table = pd.read_parquet(result.folder / "predictions.parquet").head(3)
    texts = [packaging.reward_example(p, c) for p, c in table[["prompt", "chosen"]].to_numpy()]
    scores = served.predictor()(texts)
    assert scores == pytest.approx(table["reward_chosen"].tolist(), abs=1e-4)


def test_a_grpo_reward_from_the_run_scores_in_batches_what_evaluation_saw(lora_run):
    """A reward run's folder as a GRPO reward (``model:``): resolved by its record, named
    after its dataset, and its batched scores equal the held-out rewards of training."""
    from tunelab.train import rewards

    cfg, result = lora_run
    grpo = config.load(
        None,
        [
            "data.task=prompts",
            "train.method=grpo",
            f"train.grpo.rewards=[{{model: {result.folder}}}]",
        ],
    )
    (reward,) = rewards.resolve(grpo)
    assert reward.name == "easy-pairs-reward" and reward.folder.endswith("merged")
    scorers = rewards.load([reward])
    table = pd.read_parquet(result.folder / "predictions.parquet").head(5)
    scores = scorers.score(table["prompt"].tolist(), table["chosen"].tolist())[reward.name]
    assert scores == pytest.approx(table["reward_chosen"].tolist(), abs=1e-4)


def test_an_encoder_reward_model_scores_prompt_and_response_as_a_pair(
    tmp_path_factory, easy_splits
):
    cfg, result = train_reward(
        tmp_path_factory,
        easy_splits,
        "model.name=tiny-bert",
        "train.max_steps=4",
        "train.reward.use_adapter=false",
    )
    assert set(result.artifacts) >= {"model", "predictions"}
    table = pd.read_parquet(result.folder / "predictions.parquet").head(2)
    pipe = safe_load.load_pipeline(
        result.folder / "model", result.folder / "model", "text-classification"
    )
    served = packaging.text_pipeline(pipe, "reward")
    texts = [packaging.reward_example(p, r) for p, r in table[["prompt", "rejected"]].to_numpy()]
    assert served.predict(texts) == pytest.approx(table["reward_rejected"].tolist(), abs=1e-4)


def test_a_reward_model_is_registered_as_the_datasets_reward_model():
    assert registry.model_name(reward_config()) == "easy-pairs-reward"
    policy = reward_config("train.method=dpo")
    assert registry.model_name(policy) == "easy-pairs-policy"


def test_the_gate_compares_a_reward_model_with_one_that_ties_every_pair():
    table = pd.DataFrame({"reward_margin": [0.3, -0.1, 0.2], "reward_win": [1.0, 0.0, 1.0]})
    card = Scorecard(
        dataset="easy-pairs",
        method="reward",
        task="preference",
        model="m",
        run_dir=".",
        data_version="v1",
        test_split="t1",
        primary_metric="reward_accuracy",
    )
    reference = gate.implicit_baseline(card, table)
    assert reference.label == "a reward that ties every pair (built in)"
    assert evaluate.metric_value(reference.table, "reward_accuracy", "preference") == 0.5


def test_reward_needs_preference_data_and_says_so_before_loading():
    cfg = reward_config("data.task=classification")
    with pytest.raises(TrainingError, match="reward cannot train classification data"):
        check_method(cfg)


def test_registering_a_reward_adapter_alone_is_refused_with_the_reason(lora_run):
    cfg, result = lora_run
    adapter_only = cfg.model_copy(
        update={"registry": cfg.registry.model_copy(update={"package": "adapter"})}
    )
    reason = packaging.why_not_servable(result, adapter_only)
    assert reason and "merged model" in reason


def test_the_scorecard_has_accuracy_with_a_ci_and_the_margin_plot(lora_run, tmp_path):
    from tunelab.scorecard import evaluate_run

    cfg, result = lora_run
    card = evaluate_run(result, cfg, Workspace(tmp_path))
    assert card.ok and card.primary_metric == "reward_accuracy"
    assert card.ci_low <= card.primary <= card.ci_high and card.primary >= 0.9
    assert card.plots["reward_margins"] == "reward_margins.png"
    assert card.metrics["test_pairs"] == 20 and "test_loglik_win_rate" not in card.metrics
