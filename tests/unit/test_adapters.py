"""PEFT adapters (lora, prefix, prompt, ia3): only the adapter trains, merged models are
checked against the adapter model, non-mergeable methods say so, bad settings fail clearly.

Tiny random models and a few dozen rows: every run takes seconds on a CPU.
"""

from __future__ import annotations

import json

import pytest
from echo_words import echo_frame

from tunelab import config
from tunelab.errors import TrainingError
from tunelab.train import adapters, common, features, finetune
from tunelab.train import train as run_training
from tunelab.workspace import Workspace

LABELS = ["negative", "neutral", "positive"]
# The new classification head, trained along with any adapter: BERT's has a bias, GPT-2's not.
HEAD_PARAMS = {"tiny-bert": 64 * 3 + 3, "tiny-gpt2": 64 * 3}


@pytest.fixture(autouse=True)
def short_answers(monkeypatch):
    # Answers here are one word: short greedy generations keep the tests fast.
    monkeypatch.setattr(finetune, "MAX_NEW_TOKENS", 8)


def make_cfg(method: str, model: str, task: str, *extra: str):
    task_keys = (
        ["data.task=classification", f"data.labels=[{', '.join(LABELS)}]"]
        if task == "classification"
        else ["data.name=echo", "data.task=generation"]
    )
    return config.load(
        None,
        [
            f"train.method={method}",
            f"model.name={model}",
            "model.max_length=64",
            *task_keys,
            "train.batch_size=8",
            "train.logging_steps=1",
            "train.learning_rate=1e-2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def sentiment(sentiment_splits):
    frame = sentiment_splits["train"]
    train = frame.groupby("label", group_keys=False).head(6).reset_index(drop=True)
    return {
        "train": train,
        "validation": sentiment_splits["validation"].head(4).reset_index(drop=True),
        "test": sentiment_splits["test"].head(6).reset_index(drop=True),
    }


def echo_data() -> dict:
    frame = echo_frame()
    return {
        "train": frame.iloc[:16].reset_index(drop=True),
        "validation": frame.iloc[16:18].reset_index(drop=True),
        "test": frame.iloc[16:20].reset_index(drop=True),
    }


def data_for(task: str, sentiment) -> dict:
    return {
        k: v.copy() for k, v in (sentiment if task == "classification" else echo_data()).items()
    }


# ---------------------------------------------------------------- lora keeps the base frozen


def test_lora_moves_only_the_adapter_and_the_head(tmp_path, sentiment):
    import torch

    cfg = make_cfg("lora", "tiny-bert", "classification", "train.max_steps=4")
    job = features.prepare(cfg, sentiment)
    base = finetune.load_model(job)
    before = {name: p.detach().clone() for name, p in base.named_parameters()}
    model = adapters.wrap(job, base)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    finetune.fit(job, model, tmp_path, common.pick_device(cfg))

    moved = {"lora": 0, "head": 0}
    for name, param in model.named_parameters():
        if "lora_" in name:
            moved["lora"] += not torch.equal(param, start[name])
            assert param.requires_grad
        elif "modules_to_save" in name:
            moved["head"] += not torch.equal(param, start[name])
            assert param.requires_grad
        else:
            # Frozen base weight (or the head's untouched original copy): bit-identical.
            original = (
                name.removeprefix("base_model.model.")
                .replace(".base_layer", "")
                .replace(".original_module", "")
            )
            assert not param.requires_grad, name
            assert torch.equal(param, before[original]), name
    # 2 layers x query/value x (A, B) and the head's weight and bias all moved.
    assert moved == {"lora": 8, "head": 2}


# ---------------------------------------------------------------- merged == unmerged


@pytest.mark.parametrize(
    ("method", "model", "task"),
    [
        ("lora", "tiny-bert", "classification"),
        ("ia3", "tiny-gpt2", "classification"),
        ("lora", "tiny-gpt2", "generation"),
        ("ia3", "tiny-llama", "generation"),
    ],
)
def test_merged_model_matches_the_adapter_model(tmp_path, sentiment, method, model, task):
    import torch
    from peft import PeftModel

    cfg = make_cfg(method, model, task, "train.max_steps=2")
    data = data_for(task, sentiment)
    result = run_training(cfg, data, workspace=Workspace(tmp_path))
    metrics = result.metrics
    if (method, model) == ("lora", "tiny-bert"):
        hidden, layers, r = 64, 2, cfg.train.adapter.r
        lora = layers * 2 * (2 * hidden * r)  # query and value: A (r x d) + B (d x r)
        assert result.trainable_params == lora + HEAD_PARAMS[model]
        base = common.count_parameters(finetune.load_model(features.prepare(cfg, data)))[1]
        # peft keeps the original head next to its trained copy.
        assert result.total_params == base + lora + HEAD_PARAMS[model]
    assert result.artifacts["adapter"] == "adapter" and result.artifacts["merged"] == "merged"
    adapter_dir, merged_dir = result.artifact("adapter"), result.artifact("merged")
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["peft_type"] == (
        method.upper()
    )
    assert (merged_dir / "model.safetensors").is_file()
    assert 0.0 <= metrics["merge_max_abs_diff"] <= cfg.train.adapter.merge_atol
    for key in ("latency_base_ms", "latency_unmerged_ms", "latency_merged_ms"):
        assert metrics[key] > 0
    assert result.trainable_share < 0.05
    assert ("test_macro_f1" if task == "classification" else "test_rougeL") in metrics

    # Independently of the run: base + adapter from disk vs the merged folder, same logits.
    job = features.prepare(cfg, data)
    unmerged = PeftModel.from_pretrained(finetune.load_model(job), str(adapter_dir)).eval()
    merged = finetune.load_model(job, path=merged_dir).eval()
    batch = adapters.held_out_batch(job)
    with torch.no_grad():
        expected, actual = unmerged(**batch).logits, merged(**batch).logits
    assert torch.allclose(actual, expected, atol=1e-4)
    # ... and the adapter did change the model: merged differs from the base.
    with torch.no_grad():
        plain = finetune.load_model(job).eval()(**batch).logits
    assert not torch.allclose(actual, plain, atol=1e-4)


def test_a_merge_that_changes_the_logits_is_an_error(tmp_path, sentiment, monkeypatch):
    calls = []
    real = adapters.logits_of

    def drifting(model, batch):
        logits = real(model, batch)
        calls.append(model)
        return logits + 0.01 if len(calls) == 2 else logits  # the reloaded merged model

    monkeypatch.setattr(adapters, "logits_of", drifting)
    cfg = make_cfg("lora", "tiny-bert", "classification", "train.max_steps=1")
    with pytest.raises(TrainingError, match=r"max \|logit difference\| = 0\.01 on 6 held-out"):
        run_training(cfg, sentiment, workspace=Workspace(tmp_path))


def test_merge_can_be_switched_off(tmp_path, sentiment):
    cfg = make_cfg(
        "ia3", "tiny-bert", "classification", "train.max_steps=1", "train.adapter.merge=false"
    )
    result = run_training(cfg, sentiment, workspace=Workspace(tmp_path))
    assert "merged" not in result.artifacts and not (tmp_path / "merged").exists()
    assert "merge_max_abs_diff" not in result.metrics
    assert any("merge=false" in note for note in result.notes)


# ---------------------------------------------------------------- prefix and prompt tuning


@pytest.mark.parametrize(
    ("method", "model", "task"),
    [
        ("prompt", "tiny-gpt2", "classification"),
        ("prefix", "tiny-bert", "classification"),
        ("prefix", "tiny-llama", "generation"),
        ("prompt", "tiny-t5", "generation"),
    ],
)
def test_prefix_and_prompt_tuning_train_few_weights_and_are_not_merged(
    tmp_path, sentiment, method, model, task
):
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    cfg = make_cfg(method, model, task, "train.max_steps=2", "train.adapter.num_virtual_tokens=8")
    data = data_for(task, sentiment)
    result = run_training(cfg, data, workspace=Workspace(tmp_path))
    hidden, layers, tokens = 64, 2, 8
    # Prompt tuning: one embedding per virtual token (T5: for encoder and decoder);
    # prefix tuning: a key and a value per virtual token in every layer.
    virtual = tokens * hidden * (2 if model == "tiny-t5" else 1)
    if method == "prefix":
        virtual = tokens * layers * 2 * hidden
    head = HEAD_PARAMS[model] if task == "classification" else 0
    assert result.trainable_params == virtual + head
    assert result.trainable_share < 0.05
    assert "merged" not in result.artifacts
    assert (result.artifact("adapter") / "adapter_config.json").is_file()
    assert any("cannot be merged" in note for note in result.notes)
    # The saved virtual tokens moved away from their (seeded, so reproducible) start.
    common.seed_everything(cfg.train.seed)
    job = features.prepare(cfg, data)
    start = get_peft_model_state_dict(adapters.wrap(job, finetune.load_model(job)))
    saved = load_file(str(result.artifact("adapter") / "adapter_model.safetensors"))
    assert sorted(saved) == sorted(start)
    virtual_keys = [k for k in saved if "classifier" not in k and "score" not in k]
    assert virtual_keys
    for key in saved:
        assert not torch.equal(saved[key], start[key]), key


# ---------------------------------------------------------------- clear failures


def test_target_modules_that_do_not_exist_fail_naming_real_ones(tmp_path, sentiment):
    cfg = make_cfg("lora", "tiny-bert", "classification", "train.adapter.target_modules=[q_proj]")
    with pytest.raises(TrainingError, match=r"target_modules.*query.*value"):
        run_training(cfg, sentiment, workspace=Workspace(tmp_path))


def test_target_modules_do_not_apply_to_prompt_tuning(tmp_path, sentiment):
    cfg = make_cfg("prompt", "tiny-bert", "classification", "train.adapter.target_modules=[query]")
    with pytest.raises(TrainingError, match="does not apply to train.method=prompt"):
        run_training(cfg, sentiment, workspace=Workspace(tmp_path))


def test_an_encoder_cannot_get_a_generation_adapter(tmp_path):
    cfg = make_cfg("lora", "tiny-bert", "generation")
    with pytest.raises(TrainingError, match="is an encoder: it cannot generate"):
        run_training(cfg, echo_data(), workspace=Workspace(tmp_path))


def test_adapters_refuse_other_methods(tmp_path, sentiment):
    cfg = make_cfg("full", "tiny-bert", "classification")
    with pytest.raises(TrainingError, match="it trains lora, prefix, prompt, ia3"):
        adapters.train(cfg, sentiment, tmp_path, None)
