"""DPO (train.method=dpo): trl's trainer with our defaults, LoRA or full with a frozen reference,
our own held-out scoring before and after, saved adapter / merged / full models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tunelab import config, evaluate, models
from tunelab.errors import TrainingError
from tunelab.lifecycle import gate
from tunelab.runs import TrainResult
from tunelab.scorecard import Scorecard
from tunelab.train import check_method, common, preference
from tunelab.train import train as run_training
from tunelab.train.engine import Engine
from tunelab.workspace import Workspace

POLITE = "Thank you for asking, I am happy to help with that."
RUDE = "Figure it out yourself, that is a stupid question."
LLAMA_PROJECTIONS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def dpo_config(*overrides: str):
    return config.load(
        None,
        [
            "data.task=preference",
            "data.name=preferences",
            "train.method=dpo",
            "model.name=tiny-llama",
            "train.batch_size=4",
            "train.logging_steps=1",
            "train.save_steps=1000",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, preference_splits):
    """One short LoRA DPO run on tiny-llama, shared by the tests that inspect it."""
    cfg = dpo_config("train.max_steps=4", "train.learning_rate=1e-3", "train.adapter.r=4")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNELAB_PROGRESS", "0")
        result = run_training(
            cfg, preference_splits, workspace=Workspace(tmp_path_factory.mktemp("ws"))
        )
    return cfg, result


def load_lm(path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def score(model_path, tokenizer_source, frame: pd.DataFrame, max_length: int) -> dict:
    """Our held-out scoring of a saved model, independent of the training run's objects."""
    tokenizer = models.load_tokenizer(tokenizer_source)
    encoded = preference.encode_pairs(
        tokenizer, frame, max_length, common.has_chat_template(tokenizer)
    )
    engine = Engine.for_model(load_lm(model_path), tokenizer, "decoder", batch_size=8)
    return preference.score_pairs(engine, encoded)


def state(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(next(path.glob("*.safetensors"))))


# ---------------------------------------------------------------- LoRA


def test_lora_dpo_logs_trl_rewards_and_saves_adapter_and_merged_model(lora_run):
    cfg, result = lora_run
    assert TrainResult.load(result.output_dir).metrics == result.metrics

    steps = [h for h in result.history if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2, 3, 4]
    for row in steps:
        assert {"rewards/accuracies", "rewards/margins", "rewards/chosen"} <= set(row)
    # Step 1: policy == reference, so trl's implicit rewards are exactly 0.
    assert steps[0]["rewards/margins"] == 0.0
    assert any(h["rewards/margins"] != 0.0 for h in steps[1:])

    assert 0 < result.trainable_params < result.total_params / 5
    assert result.tokens_per_second and result.tokens_per_second > 0
    assert result.precision == "fp32" and result.device == "cpu"

    adapter = result.artifact("adapter")
    settings = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(settings["target_modules"]) == LLAMA_PROJECTIONS
    assert (settings["r"], settings["lora_alpha"]) == (4, cfg.train.adapter.alpha)
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (result.artifact("merged") / "model.safetensors").is_file()
    assert (result.artifact("merged") / "tokenizer_config.json").is_file()
    assert result.metrics["merge_max_abs_diff"] <= cfg.train.adapter.merge_atol

    for key in ("test_reward_accuracy", "test_reward_margin", "test_loglik_win_rate"):
        assert key in result.metrics
    assert "before_test_loglik_win_rate" in result.metrics
    assert result.metrics["test_pairs"] == 6


def test_lora_dpo_moves_the_adapter_and_leaves_the_base_weights(lora_run, preference_splits):
    cfg, result = lora_run
    base = models.resolve(cfg.model.name)
    table = pd.read_parquet(result.artifact("predictions"))
    assert len(table) == len(preference_splits["test"])

    # The adapter moved: every LoRA B matrix starts at zero and is no longer zero.
    lora_b = {k: v for k, v in state(result.artifact("adapter")).items() if "lora_B" in k}
    assert lora_b and all(v.abs().max() > 0 for v in lora_b.values())

    # The reference (adapter disabled) after training still scores like the untouched base.
    fresh = score(base.path, base, preference_splits["test"], cfg.model.max_length)
    for side in ("chosen", "rejected"):
        np.testing.assert_allclose(table[f"logp_{side}_ref"], fresh[side], atol=1e-3)
        np.testing.assert_allclose(table[f"logp_{side}_before"], fresh[side], atol=1e-3)
        assert np.abs(table[f"logp_{side}_policy"] - table[f"logp_{side}_ref"]).max() > 1e-3

    # The merged model is the trained policy; weights LoRA did not touch equal the base's.
    merged_path = result.artifact("merged")
    merged = score(merged_path, base, preference_splits["test"], cfg.model.max_length)
    np.testing.assert_allclose(merged["chosen"], table["logp_chosen_policy"], atol=1e-3)
    merged_state, base_state = state(merged_path), state(base.path)
    for name, tensor in base_state.items():
        adapted = any(f".{p}." in name for p in LLAMA_PROJECTIONS)
        assert adapted != bool((merged_state[name] == tensor).all()), name

    margin = table["reward_chosen"] - table["reward_rejected"]
    np.testing.assert_allclose(table["reward_margin"], margin)
    assert result.metrics["test_reward_accuracy"] == pytest.approx(table["reward_win"].mean())


def test_dpo_learns_a_preference_that_holds_on_unseen_prompts(tmp_path, preference_splits):
    """Chosen is always a polite sentence, rejected a rude one; the test prompts are new."""

    def fixed(frame):
        return pd.DataFrame({"prompt": frame["prompt"], "chosen": POLITE, "rejected": RUDE})

    held_out = pd.concat([preference_splits["validation"], preference_splits["test"]])
    data = {"train": fixed(preference_splits["train"]), "test": fixed(held_out)}
    assert not set(data["test"]["prompt"]) & set(data["train"]["prompt"])
    cfg = dpo_config("train.max_steps=8", "train.batch_size=8", "train.learning_rate=5e-3")
    result = run_training(cfg, data, workspace=Workspace(tmp_path))

    m = result.metrics
    assert m["test_pairs"] == len(held_out)
    assert m["test_reward_accuracy"] > 0.5
    assert m["test_reward_margin"] > 0
    assert m["test_chosen_logratio"] > 0 > m["test_rejected_logratio"]
    margins = [h["rewards/margins"] for h in result.history if "rewards/margins" in h]
    assert margins[-1] > margins[0]


def swapped(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The pairs with chosen and rejected exchanged in a random half: preferences as noise."""
    flip = np.random.default_rng(seed).random(len(frame)) < 0.5
    out = frame.reset_index(drop=True).copy()
    out.loc[flip, ["chosen", "rejected"]] = out.loc[flip, ["rejected", "chosen"]].to_numpy()
    return out


def test_a_random_tiny_policy_is_never_promoted(tmp_path, preference_splits):
    """A tiny random decoder, untrained or DPO-trained on noise, does not beat the reference
    policy at the gate: ties count half, so the reference scores 0.5, not 0."""
    held_out = pd.concat([preference_splits["validation"], preference_splits["test"]])
    # Held-out labels are noise too, so no shortcut (chosen answers are the longer ones) helps.
    data = {"train": swapped(preference_splits["train"], 1), "test": swapped(held_out, 2)}
    cfg = dpo_config(
        "train.max_steps=4",
        "train.learning_rate=1e-3",
        "train.adapter.r=4",
        "train.adapter.merge=false",
    )
    result = run_training(cfg, data, workspace=Workspace(tmp_path))
    table = pd.read_parquet(result.artifact("predictions"))
    card = Scorecard(
        dataset="preferences",
        method="dpo",
        task="preference",
        model="tiny-llama",
        run_dir=result.output_dir,
        data_version=None,
        test_split="split",
        primary_metric="reward_accuracy",
    )
    noise = gate.decide(card, table, cfg, None, [])
    assert noise.versus == "the untrained reference policy (built in)"
    assert noise.reference == 0.5 and noise.n == len(held_out)
    assert not noise.promote, noise.reason

    # Untrained: the policy is the reference, scored by the same code.
    before = {
        "chosen": table["logp_chosen_before"].tolist(),
        "rejected": table["logp_rejected_before"].tolist(),
        "chosen_tokens": table["chosen_tokens"].tolist(),
        "rejected_tokens": table["rejected_tokens"].tolist(),
    }
    untrained = preference.predictions_table(data["test"], before, before, before, 0.1)
    assert (untrained["reward_win"] == 0.5).all()
    assert evaluate.preference_metrics(untrained)["reward_accuracy"] == 0.5
    decision = gate.decide(card, untrained, cfg, None, [])
    assert decision.challenger == decision.reference == 0.5
    assert not decision.promote, decision.reason


# ---------------------------------------------------------------- full DPO


def test_full_dpo_trains_every_weight_against_a_frozen_reference(tmp_path, preference_splits):
    cfg = dpo_config(
        "model.name=tiny-gpt2",
        "train.dpo.use_adapter=false",
        "train.max_steps=3",
        "train.learning_rate=1e-3",
    )
    result = run_training(cfg, preference_splits, workspace=Workspace(tmp_path))

    assert result.trainable_params == result.total_params
    assert set(result.artifacts) >= {"model", "predictions"}
    assert "adapter" not in result.artifacts and "merged" not in result.artifacts
    assert any("no chat template" in note for note in result.notes)

    base = models.resolve("tiny-gpt2")
    table = pd.read_parquet(result.artifact("predictions"))
    fresh = score(base.path, base, preference_splits["test"], cfg.model.max_length)
    trained = score(result.artifact("model"), base, preference_splits["test"], 256)
    for side in ("chosen", "rejected"):
        # The reference copy did not move during training ...
        np.testing.assert_allclose(table[f"logp_{side}_ref"], fresh[side], atol=1e-3)
        # ... while the policy did, and the saved model is that policy.
        assert np.abs(table[f"logp_{side}_policy"] - fresh[side]).max() > 1e-3
        np.testing.assert_allclose(trained[side], table[f"logp_{side}_policy"], atol=1e-3)
    base_state = state(base.path)
    saved = state(result.artifact("model"))
    assert any(not (saved[k] == v).all() for k, v in base_state.items() if k in saved)


# ---------------------------------------------------------------- init_from


def test_init_from_an_earlier_run_starts_from_its_merged_model(
    lora_run, tmp_path, preference_splits
):
    _, first = lora_run
    cfg = dpo_config(f"train.dpo.init_from={first.output_dir}", "train.max_steps=1")
    result = run_training(cfg, preference_splits, workspace=Workspace(tmp_path))

    before = pd.read_parquet(result.artifact("predictions"))
    trained = pd.read_parquet(first.artifact("predictions"))
    # The new policy (and reference) begin where the first run's policy ended.
    np.testing.assert_allclose(
        before["logp_chosen_before"], trained["logp_chosen_policy"], atol=1e-3
    )
    np.testing.assert_allclose(before["logp_chosen_ref"], trained["logp_chosen_policy"], atol=1e-3)
    assert any("init_from" in note for note in result.notes)


def test_init_from_a_missing_folder_is_refused(tmp_path, preference_splits):
    cfg = dpo_config(f"train.dpo.init_from={tmp_path / 'nowhere'}", "train.max_steps=1")
    with pytest.raises(TrainingError, match="does not exist.*'merged' or 'model' subfolder"):
        run_training(cfg, preference_splits, workspace=Workspace(tmp_path))


def test_init_from_a_folder_with_only_an_adapter_says_to_merge(tmp_path, preference_splits):
    run = tmp_path / "earlier"
    (run / "adapter").mkdir(parents=True)
    cfg = dpo_config(f"train.dpo.init_from={run}", "train.max_steps=1")
    with pytest.raises(TrainingError, match="only an adapter.*train.adapter.merge=true"):
        run_training(cfg, preference_splits, workspace=Workspace(tmp_path))


# ---------------------------------------------------------------- refusals and defaults


def test_dpo_is_refused_for_classification_data():
    cfg = dpo_config("data.task=classification", "data.name=sentiment")
    with pytest.raises(TrainingError, match="dpo cannot train classification data"):
        check_method(cfg)


def test_dpo_is_refused_for_a_seq2seq_model(tmp_path, preference_splits):
    cfg = dpo_config("model.name=tiny-t5", "train.max_steps=1")
    with pytest.raises(TrainingError, match="decoder-only"):
        run_training(cfg, preference_splits, workspace=Workspace(tmp_path))


def test_prompts_that_do_not_fit_max_length_are_refused(tmp_path, preference_splits):
    cfg = dpo_config("train.dpo.max_length=8", "train.max_steps=1")
    with pytest.raises(TrainingError, match="longer than model.max_length=8"):
        run_training(cfg, preference_splits, workspace=Workspace(tmp_path))


@pytest.mark.parametrize(
    ("name", "expected", "fan_in_fan_out"),
    [("tiny-llama", LLAMA_PROJECTIONS, False), ("tiny-gpt2", ["c_attn", "c_fc", "c_proj"], True)],
)
def test_lora_targets_every_projection_of_the_decoder(name, expected, fan_in_fan_out):
    model = load_lm(models.resolve(name).path)
    assert preference.target_modules(model) == expected
    lora = preference.lora_config(dpo_config(f"model.name={name}"), model)
    assert sorted(lora.target_modules) == expected
    assert lora.fan_in_fan_out is fan_in_fan_out
    custom = preference.lora_config(
        dpo_config(f"model.name={name}", f"train.adapter.target_modules=[{expected[0]}]"), model
    )
    assert list(custom.target_modules) == [expected[0]]


def test_a_merge_beyond_merge_atol_keeps_the_adapter_and_saves_no_merged_model(
    tmp_path, preference_splits
):
    cfg = dpo_config(
        "train.max_steps=1", "train.learning_rate=1e-2", "train.adapter.merge_atol=1e-12"
    )
    result = run_training(cfg, preference_splits, workspace=Workspace(tmp_path))
    assert result.metrics["merge_max_abs_diff"] > 1e-12
    assert "merged" not in result.artifacts
    assert not (Path(result.output_dir) / "merged").exists()
    assert (result.artifact("adapter") / "adapter_model.safetensors").is_file()
    assert any("no merged model was saved" in note for note in result.notes)


def test_preference_metrics_are_computed_from_the_predictions_table(lora_run):
    _, result = lora_run
    table = pd.read_parquet(result.artifact("predictions"))
    metrics = evaluate.preference_metrics(table, prefix="test_")
    assert metrics == {k: v for k, v in result.metrics.items() if k in metrics}
    assert set(metrics) == {
        f"test_{name}"
        for name in (
            "reward_accuracy",
            "reward_margin",
            "loglik_win_rate",
            "chosen_logratio",
            "rejected_logratio",
            "pairs",
        )
    }
    assert result.metrics["before_test_loglik_win_rate"] == table["before_loglik_win"].mean()
    assert evaluate.preference_metrics(table.iloc[:0]) == {}


# ---------------------------------------------------------------- data.truncation

LAST_TURN = "Human: and which one should I pick for a small garden?"


def multi_turn(turns: int) -> str:
    """An HH-RLHF-like prompt: many earlier turns, the question that matters last."""
    earlier = [
        f"Human: tell me about plant number {i}.\n\nAssistant: plant {i} likes sun and water."
        for i in range(turns)
    ]
    return "\n\n".join([*earlier, LAST_TURN])


def with_long_prompts(splits: dict, rows: dict[str, int]) -> dict:
    """The splits with the first ``rows[split]`` prompts replaced by long multi-turn ones."""
    out = {name: frame.reset_index(drop=True).copy() for name, frame in splits.items()}
    for name, n in rows.items():
        out[name].loc[: n - 1, "prompt"] = multi_turn(12)
    return out


def test_keep_end_trains_on_long_multi_turn_prompts_and_counts_the_cuts(
    tmp_path, preference_splits
):
    data = with_long_prompts(preference_splits, {"train": 5, "test": 2})
    cfg = dpo_config("train.dpo.max_length=96", "train.max_steps=1", "data.truncation=keep_end")
    result = run_training(cfg, data, workspace=Workspace(tmp_path))

    m = result.metrics
    assert (m["train_prompts_truncated"], m["test_prompts_truncated"]) == (5, 2)
    assert m["validation_prompts_truncated"] == 0
    assert m["train_pairs_dropped"] == m["test_pairs_dropped"] == 0
    assert any("train: 5 of" in n and "data.truncation=keep_end" in n for n in result.notes)
    # Every pair is scored, the cut ones on the prompt training saw: its latest turn.
    table = pd.read_parquet(result.artifact("predictions"))
    assert len(table) == m["test_pairs"] == len(data["test"])
    cut = table["prompt"].iloc[:2]
    assert all(p.endswith(LAST_TURN) and len(p) < len(multi_turn(12)) for p in cut)


def test_cut_prompts_keep_the_chosen_and_rejected_responses_whole(preference_splits):
    tokenizer = models.load_tokenizer(models.resolve("tiny-llama"))
    data = with_long_prompts(preference_splits, {"train": 3})
    result = TrainResult(method="dpo", model="m", dataset="d", task="preference", output_dir=".")
    for mode, kept in (
        ("keep_end", LAST_TURN),
        ("keep_start", "Human: tell me about plant number 0."),
    ):
        splits = preference.fit_splits(tokenizer, data, 192, True, mode, result)
        train = splits["train"].iloc[:3]
        assert all(kept in p for p in train["prompt"])
        # Encoded without a limit, prompt and either response fit in max_length together.
        for chosen, start, rejected, _ in preference.encode_pairs(tokenizer, train, 10**6, True):
            assert 0 < start < len(chosen) <= 192 and len(rejected) <= 192
    assert result.metrics["train_prompts_truncated"] == 3


def test_drop_leaves_the_long_pairs_out_and_counts_them(preference_splits):
    tokenizer = models.load_tokenizer(models.resolve("tiny-llama"))
    data = with_long_prompts(preference_splits, {"train": 4, "test": 1})
    result = TrainResult(method="dpo", model="m", dataset="d", task="preference", output_dir=".")
    splits = preference.fit_splits(tokenizer, data, 96, True, "drop", result)
    assert len(splits["train"]) == len(data["train"]) - 4
    assert len(splits["test"]) == len(data["test"]) - 1
    assert multi_turn(12) not in set(splits["train"]["prompt"])
    assert result.metrics["train_pairs_dropped"] == 4
    assert result.metrics["test_pairs_dropped"] == 1
    assert result.metrics["train_prompts_truncated"] == 0
    assert any("dropped 4" in note for note in result.notes)


def test_long_prompts_without_truncation_are_refused_naming_the_option(tmp_path, preference_splits):
    data = with_long_prompts(preference_splits, {"train": 2})
    cfg = dpo_config("train.dpo.max_length=96", "train.max_steps=1")
    with pytest.raises(TrainingError, match=r"2 of \d+ train prompts.*set data.truncation"):
        run_training(cfg, data, workspace=Workspace(tmp_path))
