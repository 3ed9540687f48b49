"""Full fine-tuning (train.method=full) with the transformers Trainer.

The splits become a :class:`features.Job` (classification, causal or seq2seq: see
features.py); the model gets the job's head, trains, and is evaluated on validation and
test, generation tasks with greedy answers from the LM engine (ROUGE).

adapters.py runs the same pipeline with the model wrapped by peft, so the steps are
public here: :func:`load_model`, :func:`fit`, :func:`evaluate`, :func:`new_result`
(and :func:`features.prepare`).

torch and transformers are imported inside functions: the CLI imports this package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tunelab.config import RunConfig
from tunelab.errors import TrainingError
from tunelab.evaluate import classification_metrics, per_example_rouge, perplexity, rouge_scores
from tunelab.runs import TrainResult
from tunelab.train import arguments, common, quantization, sft
from tunelab.train.engine import Engine
from tunelab.train.features import Job, collator, prepare

# Greedy generation for ROUGE runs on at most this many test prompts (generation is slow).
MAX_GENERATED = 32
MAX_NEW_TOKENS = 64
MODEL_DIR = "model"


# ---------------------------------------------------------------- entry point


def train(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, data_version: str | None
) -> TrainResult:
    """Fine-tune every weight of ``cfg.model.name`` on the splits; save it to ``model/``."""
    device = common.pick_device(cfg)
    with common.ResourceMeter() as meter:
        job = prepare(cfg, data)
        model = load_model(job)
        trainable, total = common.count_parameters(model)
        fitted = fit(job, model, output_dir, device)
        metrics = evaluate(job, fitted.trainer, output_dir)
        save_model(fitted.trainer.model, job, output_dir / MODEL_DIR)
    result = new_result(cfg, output_dir, data_version, job, fitted, metrics)
    result.trainable_params, result.total_params = trainable, total
    result.artifacts["model"] = MODEL_DIR
    return common.finish(result, meter, device)


# ---------------------------------------------------------------- the model


def auto_class(kind: str):
    """The transformers Auto class for a job kind."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
    )

    return {
        "classification": AutoModelForSequenceClassification,
        "causal": AutoModelForCausalLM,
        "seq2seq": AutoModelForSeq2SeqLM,
    }[kind]


def load_model(job: Job, path: Path | None = None, full_precision: bool = False):
    """The pretrained weights (or those in ``path``) with the job's head, in fp32
    (mixed precision is the Trainer's business); quantised on the GPU with
    model.quantization (QLoRA), unless ``full_precision``."""
    import torch

    cfg, tokenizer = job.cfg, job.tokenizer
    kwargs: dict[str, Any] = {
        "dtype": torch.float32,
        "trust_remote_code": cfg.model.trust_remote_code,
    }
    if path is None and not full_precision and cfg.model.quantization:
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        kwargs.update(quantization.load_kwargs(cfg, compute))
    model_class = auto_class(job.kind)
    extra: dict[str, Any] = {}
    if job.kind == "classification":
        labels = job.labels or []
        extra = {
            "num_labels": len(labels),
            "label2id": job.label2id,
            "id2label": dict(enumerate(labels)),
        }
    try:
        model = model_class.from_pretrained(str(path or job.resolved.path), **extra, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(
            f"Could not load '{cfg.model.name}' ({path or job.resolved.path}) for {job.kind}: "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    if job.kind == "classification":
        # Its loss is a plain mean that ignores the Trainer's num_items_in_batch: without
        # this the Trainer scales it by the number of processes (train.distributed) and
        # by none of the accumulated batches, so gradients come out too large.
        model.accepts_loss_kwargs = False
    # Decoders find the last real token of each row through pad_token_id.
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    generation = getattr(model, "generation_config", None)
    if generation is not None and generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id
    return model


def save_model(model, job: Job, folder: Path) -> None:
    """Weights (safetensors), config and tokenizer in one folder that from_pretrained loads."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))  # transformers 5: always safetensors
    job.tokenizer.save_pretrained(str(folder))


# ---------------------------------------------------------------- training


@dataclass
class Fitted:
    trainer: Any
    output: Any
    resumed_from: str | None
    tokens_per_second: float | None


def make_trainer(job: Job, model, output_dir: Path, device: common.DeviceChoice):
    """The transformers Trainer of the job; trl's SFTTrainer for decoders that generate."""
    from transformers import Trainer

    if job.kind == "causal":
        return sft.make_trainer(job, model, output_dir, device)

    args = arguments.training_arguments(
        job.cfg,
        output_dir,
        device,
        has_validation=job.has("validation"),
        # Features hold only model inputs; peft models hide the forward signature.
        remove_unused_columns=False,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=job.features["train"],
        eval_dataset=job.features.get("validation") or None,
        data_collator=collator(job),
        processing_class=job.tokenizer,
        callbacks=common.callbacks(),
    )


def fit(job: Job, model, output_dir: Path, device: common.DeviceChoice) -> Fitted:
    """Train: from scratch, or resuming an interrupted run (common.run_trainer)."""
    trainer = make_trainer(job, model, output_dir, device)
    output, resumed = common.run_trainer(trainer, output_dir)
    # Rows are unpadded, so their mean length is the non-pad tokens per example. (The
    # Trainer's own token counter puts train_runtime in every log row, which
    # common.history_from reads as the summary row and drops.)
    rows = job.features["train"]
    mean_tokens = sum(len(r["input_ids"]) for r in rows) / len(rows)
    per_second = (output.metrics or {}).get("train_samples_per_second") or 0.0
    steps_run = trainer.state.global_step - getattr(trainer, "_initial_global_step", 0)
    tokens_per_second = round(per_second * mean_tokens, 1) if per_second and steps_run else None
    return Fitted(trainer, output, resumed, tokens_per_second)


def new_result(
    cfg: RunConfig,
    output_dir: Path,
    data_version: str | None,
    job: Job,
    fitted: Fitted,
    metrics: dict[str, float],
) -> TrainResult:
    result = common.new_result(
        cfg,
        output_dir,
        data_version,
        history=common.history_from(fitted.trainer.state.log_history),
        metrics=metrics,
        tokens_per_second=fitted.tokens_per_second,
        resumed_from=fitted.resumed_from,
        notes=list(job.notes),
    )
    common.record_trainer_output(result, fitted.output)
    result.metrics["train_loss"] = float((fitted.output.metrics or {}).get("train_loss", math.nan))
    result.metrics["train_steps"] = float(fitted.trainer.state.global_step)
    if fitted.resumed_from:
        result.notes.append(f"Resumed from {fitted.resumed_from}.")
    if job.kind == "causal":
        result.notes.append(_sft_note(job))
    return result


def _sft_note(job: Job) -> str:
    if job.cfg.data.task == "chat":
        how = "trl's" if job.trl_chat_masks else "tunelab's (template prefixes)"
        return f"SFTTrainer on conversations: loss on every assistant turn ({how} mask)."
    framing = "the chat template" if job.uses_chat_template else "plain text + eos"
    return f"SFTTrainer on prompt/completion pairs in {framing}: loss on the response only."


# ---------------------------------------------------------------- evaluation


def evaluate(job: Job, trainer, output_dir: Path, model=None) -> dict[str, float]:
    """Validation and test metrics of the trained model; writes predictions.parquet (test).

    ``model`` overrides the trainer's model for prediction (adapters pass the peft model).
    """
    model = model if model is not None else trainer.model
    if job.kind == "classification":
        metrics, frame = evaluate_classification(job, trainer)
    else:
        metrics, frame = evaluate_generation(job, trainer, model)
    if frame is not None:
        common.save_predictions(frame, output_dir)
    return metrics


def _softmax(logits):
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    logits = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


def evaluate_classification(job: Job, trainer) -> tuple[dict[str, float], pd.DataFrame | None]:
    labels = job.labels or []
    metrics: dict[str, float] = {}
    frame = None
    for split in ("validation", "test"):
        if not job.has(split):
            continue
        output = trainer.predict(job.features[split], metric_key_prefix=split)
        logits = (
            output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        )
        probs = _softmax(logits)
        predicted = [labels[i] for i in probs.argmax(axis=-1)]
        reference = [str(v) for v in job.frames[split]["label"]]
        for name, value in classification_metrics(reference, predicted, labels).items():
            metrics[f"{split}_{name}"] = value
        loss = (output.metrics or {}).get(f"{split}_loss")
        if loss is not None:
            metrics[f"{split}_loss"] = float(loss)
        if split == "test":
            source = job.frames[split]
            frame = pd.DataFrame({"text": source["text"].astype(str)})
            if "text_pair" in source.columns:
                frame["text_pair"] = source["text_pair"]
            frame["reference"] = reference
            frame["prediction"] = predicted
            for i, label in enumerate(labels):
                frame[f"prob_{label}"] = probs[:, i]
            frame["correct"] = frame["reference"] == frame["prediction"]
    return metrics, frame


def evaluate_generation(job: Job, trainer, model) -> tuple[dict[str, float], pd.DataFrame | None]:
    """Loss and perplexity on validation/test; greedy answers to test prompts -> ROUGE."""
    metrics: dict[str, float] = {}
    for split in ("validation", "test"):
        if not job.has(split):
            continue
        out = trainer.evaluate(job.features[split], metric_key_prefix=split)
        loss = float(out[f"{split}_loss"])
        metrics[f"{split}_loss"] = loss
        metrics[f"{split}_perplexity"] = perplexity(loss)
    if not job.has("test"):
        return metrics, None
    count = min(MAX_GENERATED, len(job.prompts["test"]))
    predictions = generate(job, model, job.prompts["test"][:count], MAX_NEW_TOKENS)
    if job.kind == "causal":
        test = job.sft_data["test"]
        prompts, references = test.prompt_texts[:count], test.references[:count]
    else:
        source = job.frames["test"].iloc[:count]
        prompts = source["prompt"].astype(str).tolist()
        references = [str(r) for r in source["response"]]
    for name, value in rouge_scores(predictions, references).items():
        metrics[f"test_{name}"] = value
    metrics["test_generated"] = float(count)
    per_row = per_example_rouge(predictions, references, "rougeL")
    frame = pd.DataFrame(
        {
            "prompt": prompts,
            "reference": references,
            "prediction": predictions,
            "rougeL": per_row,
        }
    )
    return metrics, frame


def generate(job: Job, model, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    """Greedy answers to tokenized prompts through the LM engine, in batches of
    train.batch_size taken in order."""
    lm = Engine.for_model(
        model,
        job.tokenizer,
        "decoder" if job.kind == "causal" else "seq2seq",
        batch_size=job.cfg.train.batch_size,
    )
    return lm.generate(
        prompts, max_new_tokens, eos_token_id=job.tokenizer.eos_token_id, longest_first=False
    )
