"""Parameter-efficient fine-tuning with peft: methods lora, prefix, prompt and ia3.

The same pipeline as full fine-tuning (features.py and finetune.py: data, Trainer, resume,
evaluation) with the model wrapped by peft, so only the adapter (and, for classification,
the new head) is trained. Afterwards:

- the adapter is saved to ``adapter/`` (peft format, loads onto the base model);
- for lora and ia3 (with train.adapter.merge), the adapter is merged into the base
  weights (``merge_and_unload``), saved to ``merged/`` as a plain transformers model,
  reloaded and checked: its logits on a held-out test batch must match the unmerged
  model's within train.adapter.merge_atol, else a TrainingError. Inference latency of
  the base, unmerged and merged models on that batch is recorded.
- prefix and prompt tuning add virtual tokens and cannot be merged; the result says so.

torch, transformers and peft are imported inside functions: the CLI imports this package.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tunelab.config import RunConfig
from tunelab.errors import TrainingError
from tunelab.runs import TrainResult
from tunelab.train import common, features, finetune, quantization
from tunelab.train.engine import pad

METHODS = ("lora", "prefix", "prompt", "ia3")
MERGEABLE = ("lora", "ia3")
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
# Held-out rows in the merge check and the latency batch; timed repeats after a warm-up.
VERIFY_ROWS = 8
LATENCY_REPEATS = 10
LATENCY_WARMUP = 2
LATENCY_MIN_REPEATS = 3
LATENCY_BUDGET_S = 20.0
# Relative tolerance of the merge check, on top of train.adapter.merge_atol (allclose default).
MERGE_RTOL = 1e-5
TASK_TYPES = {"classification": "SEQ_CLS", "causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
# Defaults beyond peft's own per-architecture tables (which cover bert, gpt2, llama, t5...).
EXTRA_LORA_TARGETS: dict[str, list[str]] = {}


def train(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, data_version: str | None
) -> TrainResult:
    """Train an adapter of kind ``cfg.train.method`` on ``cfg.model.name``."""
    method = cfg.train.method
    if method not in METHODS:
        raise TrainingError(
            f"adapters.train got train.method={method}; it trains {', '.join(METHODS)}."
        )
    device = common.pick_device(cfg)
    notes: list[str] = []
    with common.ResourceMeter() as meter:
        job = features.prepare(cfg, data)
        if method == "prompt" and job.kind == "classification" and job.family == "decoder":
            # Prompt tuning feeds embeddings, not ids, so the head cannot find the last real
            # token through the pad id: pad on the left, the last position is always real.
            job.tokenizer.padding_side = "left"
            notes.append("Prompt tuning of a decoder classifier: batches are left-padded.")
        base = finetune.load_model(job)
        if cfg.model.quantization:
            base = quantization.prepare(base, cfg.train.gradient_checkpointing)
            notes.append(
                f"QLoRA: base loaded {cfg.model.quantization} (bitsandbytes), adapter trained "
                "in the GPU's half precision."
            )
        model = wrap(job, base)
        trainable, total = model.get_nb_trainable_parameters()
        fitted = finetune.fit(job, model, output_dir, device)
        model = fitted.trainer.model
        metrics = finetune.evaluate(job, fitted.trainer, output_dir, model)
        adapter_dir = output_dir / ADAPTER_DIR
        model.save_pretrained(str(adapter_dir))
        job.tokenizer.save_pretrained(str(adapter_dir))
        merged = False
        if method in MERGEABLE and cfg.train.adapter.merge:
            if cfg.model.quantization:
                model = dequantized(job, model, adapter_dir, metrics)
                notes.append(
                    "The adapter was merged into the de-quantised base (full precision); "
                    "qlora_dequantized_max_abs_diff is how far that model's logits are from "
                    "the quantised one trained."
                )
            metrics.update(merge_and_verify(job, model, output_dir / MERGED_DIR))
            merged = True
        elif method in MERGEABLE:
            notes.append("train.adapter.merge=false: no merged model was written.")
        else:
            notes.append(
                f"{method} tuning adds {cfg.train.adapter.num_virtual_tokens} virtual tokens "
                "in front of every input; it cannot be merged into the base weights, so only "
                "the adapter is saved (load it with peft.PeftModel.from_pretrained)."
            )
    result = finetune.new_result(cfg, output_dir, data_version, job, fitted, metrics)
    result.trainable_params, result.total_params = int(trainable), int(total)
    result.notes.extend(notes)
    result.artifacts["adapter"] = ADAPTER_DIR
    if merged:
        result.artifacts["merged"] = MERGED_DIR
    return common.finish(result, meter, device)


# ---------------------------------------------------------------- the peft wrapper


def wrap(job: features.Job, model):
    """The model wrapped by peft for the run's method, only the adapter (and head) trainable."""
    from peft import get_peft_model

    peft_config = adapter_config(job, model)
    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:
        raise TrainingError(
            f"peft could not add a {job.cfg.train.method} adapter to '{job.cfg.model.name}': "
            f"{str(exc)[:300]}. Set train.adapter.target_modules to module names of the model "
            f"(linear layers: {', '.join(linear_module_names(model)[:12])})."
        ) from None


def adapter_config(job: features.Job, model):
    """The peft config for cfg.train.method, with per-architecture default target modules."""
    from peft import (
        IA3Config,
        LoraConfig,
        PrefixTuningConfig,
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
    )

    cfg, settings = job.cfg, job.cfg.train.adapter
    method = cfg.train.method
    task_type = TaskType[TASK_TYPES[job.kind]]
    model_type = getattr(model.config, "model_type", "")
    # GPT-2 keeps its projections in Conv1D layers, stored transposed.
    fan_in_fan_out = model_type == "gpt2"
    heads = classifier_heads(model) if job.kind == "classification" else None
    if method == "lora":
        return LoraConfig(
            task_type=task_type,
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=settings.target_modules or default_targets("lora", model),
            fan_in_fan_out=fan_in_fan_out,
            modules_to_save=heads,
        )
    if method == "ia3":
        targets, feedforward = ia3_targets(settings.target_modules, model)
        return IA3Config(
            task_type=task_type,
            target_modules=targets,
            feedforward_modules=feedforward,
            fan_in_fan_out=fan_in_fan_out,
            modules_to_save=heads,
        )
    if settings.target_modules:
        raise TrainingError(
            f"train.adapter.target_modules does not apply to train.method={method}: "
            f"{method} tuning adds virtual tokens instead of adapting modules. Remove it."
        )
    if method == "prefix":
        return PrefixTuningConfig(
            task_type=task_type, num_virtual_tokens=settings.num_virtual_tokens
        )
    return PromptTuningConfig(
        task_type=task_type,
        num_virtual_tokens=settings.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.RANDOM,
    )


def classifier_heads(model) -> list[str]:
    """Names of the freshly initialised classification head (kept fully trainable)."""
    names = [name for name in ("classifier", "score") if hasattr(model, name)]
    if not names:
        raise TrainingError(
            f"Cannot find the classification head of {type(model).__name__} (looked for "
            "'classifier' and 'score'), so it would stay untrained. Use an encoder or decoder "
            "whose sequence-classification class names its head like transformers' do."
        )
    return names


def default_targets(method: str, model) -> list[str]:
    """peft's per-architecture defaults (e.g. bert query/value, llama q_proj/v_proj,
    gpt2 c_attn, t5 q/v); an error naming the model's linear layers otherwise."""
    from peft.utils import constants

    table = {
        "lora": constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
        "ia3": constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    }[method]
    model_type = getattr(model.config, "model_type", "")
    targets = EXTRA_LORA_TARGETS.get(model_type) if method == "lora" else None
    targets = targets or table.get(model_type)
    if not targets:
        raise TrainingError(
            f"No default {method} target modules for model_type={model_type!r}. Set "
            "train.adapter.target_modules, e.g. to some of its linear layers: "
            f"{', '.join(linear_module_names(model)[:12])}."
        )
    return list(targets)


def ia3_targets(configured: list[str] | None, model) -> tuple[list[str], list[str]]:
    """IA3 target modules and the feed-forward ones among them (scaled on their input)."""
    from peft.utils import constants

    model_type = getattr(model.config, "model_type", "")
    feedforward = constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(
        model_type, []
    )
    targets = list(configured) if configured else default_targets("ia3", model)
    return targets, [m for m in targets if m in feedforward]


def linear_module_names(model) -> list[str]:
    """Distinct last names of the model's linear (and GPT-2 Conv1D) layers."""
    names: list[str] = []
    for name, _ in common.linear_layers(model):
        last = name.rsplit(".", 1)[-1]
        if last not in names:
            names.append(last)
    return names


# ---------------------------------------------------------------- merging


def held_out_batch(job: features.Job) -> dict:
    """The first rows of the test split (else validation, else train), collated (decoders
    that generate: their prompts)."""
    split = next(s for s in ("test", "validation", "train") if job.has(s))
    if job.kind == "causal":
        # The prompts, as inference reads them (the SFT collator may pack training rows).
        ids, mask = pad(job.prompts[split][:VERIFY_ROWS], job.tokenizer.pad_token_id, "right")
        return {"input_ids": ids, "attention_mask": mask}
    return features.collator(job)(job.features[split][:VERIFY_ROWS])


def logits_of(model, batch: dict):
    import torch

    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        out = model(**{k: v.to(device) for k, v in batch.items()})
    return out.logits.detach().float().cpu()


def latency_ms(models: dict[str, Any], batch: dict, repeats: int = LATENCY_REPEATS):
    """Median forward-pass time of each model on the batch, in milliseconds.

    The models take turns, one pass each per round after warm-up rounds, and the order
    reverses every round (A B, B A, ...), so neither load changes nor going first favour
    one of them.
    """
    import torch

    inputs = {}
    for name, model in models.items():
        model.eval()
        device = next(model.parameters()).device
        inputs[name] = {k: v.to(device) for k, v in batch.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    cuda = torch.cuda.is_available()
    rounds = repeats + LATENCY_WARMUP
    with torch.inference_mode():
        round_ = 0
        while round_ < rounds:
            order = list(models.items())
            for name, model in order if round_ % 2 == 0 else order[::-1]:
                if cuda:
                    torch.cuda.synchronize()
                started = time.perf_counter()
                model(**inputs[name])
                if cuda:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - started
                if round_ >= LATENCY_WARMUP:
                    times[name].append(seconds * 1000)
                elif round_ == 0:
                    # Big models on a CPU: fewer repeats, so timing stays within a budget.
                    affordable = int(LATENCY_BUDGET_S / max(seconds * len(models), 1e-6))
                    rounds = LATENCY_WARMUP + max(LATENCY_MIN_REPEATS, min(repeats, affordable))
            round_ += 1
    return {name: statistics.median(values) for name, values in times.items()}


def dequantized(job: features.Job, model, adapter_dir: Path, metrics: dict[str, Any]):
    """The saved adapter on the full-precision base: what a QLoRA adapter is merged into.

    Records the largest logit difference to the quantised model that was trained
    (quantisation error, not a merge error) as ``qlora_dequantized_max_abs_diff``.
    """
    from peft import PeftModel

    batch = held_out_batch(job)
    quantized_logits = logits_of(model, batch)
    device = next(model.parameters()).device
    del model
    base = finetune.load_model(job, full_precision=True).to(device)
    full = PeftModel.from_pretrained(base, str(adapter_dir))
    diff = (logits_of(full, batch) - quantized_logits).abs().max().item()
    metrics["qlora_dequantized_max_abs_diff"] = float(diff)
    return full


def merge_and_verify(job: features.Job, model, folder: Path) -> dict[str, Any]:
    """Merge the adapter into the base weights, save, reload and compare logits.

    The reloaded merged model must give the unmerged model's logits within
    train.adapter.merge_atol on a held-out batch, else a TrainingError.
    """
    import torch

    atol = job.cfg.train.adapter.merge_atol
    batch = held_out_batch(job)
    device = next(model.parameters()).device
    expected = logits_of(model, batch)
    latency_unmerged = latency_ms({"unmerged": model}, batch)["unmerged"]
    merged = model.merge_and_unload()
    finetune.save_model(merged, job, folder)
    del merged, model
    reloaded = finetune.load_model(job, path=folder).to(device)
    actual = logits_of(reloaded, batch)
    diff = (actual - expected).abs().max().item() if actual.shape == expected.shape else None
    # torch.allclose: |merged - unmerged| <= atol + rtol * |unmerged|, rtol at its default
    # (1e-5): large-vocabulary logits of ~20 differ by ~1e-4 from float summation order alone.
    if diff is None or not torch.allclose(actual, expected, atol=atol, rtol=MERGE_RTOL):
        raise TrainingError(
            f"The merged model in {folder} does not reproduce the adapter model: max |logit "
            f"difference| = {diff if diff is None else f'{diff:.3g}'} on {len(expected)} "
            f"held-out rows, more than train.adapter.merge_atol={atol:g} + {MERGE_RTOL:g} x "
            f"|logit| allows (logits {tuple(actual.shape)} vs {tuple(expected.shape)}). Use "
            "the adapter folder instead, or raise train.adapter.merge_atol if the gap is "
            "numerical noise."
        )
    base = finetune.load_model(job, full_precision=True).to(device)
    latency = latency_ms({"base": base, "merged": reloaded}, batch)
    return {
        "merge_max_abs_diff": float(diff),
        "latency_base_ms": round(latency["base"], 3),
        "latency_unmerged_ms": round(latency_unmerged, 3),
        "latency_merged_ms": round(latency["merged"], 3),
        "latency_batch_rows": float(len(expected)),
    }
