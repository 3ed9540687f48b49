"""Full fine-tuning (train.method=full) with the transformers Trainer.

The task and the model family pick one of three kinds of job:

- ``classification``: a sequence-classification head on an encoder or a decoder;
- ``causal``: generation with a decoder, supervised fine-tuning with the loss on the
  response tokens only (the chat template frames prompt and response when the
  tokenizer has one, else ``prompt + "\\n" + response + eos``);
- ``seq2seq``: generation with an encoder-decoder, prompt in, response as labels.

adapters.py runs the same pipeline with the model wrapped by peft, so the steps are
public here: :func:`prepare`, :func:`load_model`, :func:`fit`, :func:`evaluate`,
:func:`new_result`.

torch and transformers are imported inside functions: the CLI imports this package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tunelab import models
from tunelab.config import RunConfig
from tunelab.errors import ModelError, TrainingError
from tunelab.evaluate import classification_metrics, rouge_scores
from tunelab.runs import PREDICTIONS_FILE, TrainResult
from tunelab.train import common

SPLITS = ("train", "validation", "test")
IGNORE_INDEX = -100
# Greedy generation for ROUGE runs on at most this many test prompts (generation is slow).
MAX_GENERATED = 32
MAX_NEW_TOKENS = 64
MODEL_DIR = "model"


@dataclass
class Job:
    """Everything a run needs before a model is loaded: tokenizer, features per split."""

    cfg: RunConfig
    kind: str  # "classification" | "causal" | "seq2seq"
    resolved: models.ResolvedModel
    tokenizer: Any
    frames: dict[str, pd.DataFrame]
    # split -> model inputs, one dict per row (lists of ints; "labels" included).
    features: dict[str, list[dict]]
    labels: list[str] | None = None
    # split -> prompt token ids (generation), what greedy decoding starts from.
    prompts: dict[str, list[list[int]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    uses_chat_template: bool = False

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels or [])}

    @property
    def family(self) -> str:
        return self.resolved.family

    def has(self, split: str) -> bool:
        return bool(self.features.get(split))


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


# ---------------------------------------------------------------- preparing the data


def job_kind(cfg: RunConfig, resolved: models.ResolvedModel) -> str:
    """classification / causal / seq2seq, or a TrainingError saying what would work."""
    task, family, name = cfg.data.task, resolved.family, cfg.model.name
    if task == "classification":
        if family == "seq2seq":
            raise TrainingError(
                f"model.name={name} is a seq2seq (encoder-decoder) model; classification "
                f"with train.method={cfg.train.method} needs an encoder (e.g. minilm-l6, "
                "tiny-bert) or a decoder (e.g. smollm2-135m-instruct, tiny-gpt2)."
            )
        return "classification"
    if task == "generation":
        if family == "encoder":
            raise TrainingError(
                f"model.name={name} is an encoder: it cannot generate text. Generation with "
                f"train.method={cfg.train.method} needs a decoder (e.g. smollm2-135m-instruct, "
                "tiny-llama, tiny-gpt2) or a seq2seq model (e.g. tiny-t5)."
            )
        return "causal" if family == "decoder" else "seq2seq"
    raise TrainingError(
        f"train.method={cfg.train.method} cannot train {task} data; use train.method=dpo."
    )


def prepare(cfg: RunConfig, data: dict[str, pd.DataFrame]) -> Job:
    """Resolve the model and tokenizer and turn each split into model inputs."""
    try:
        resolved = models.resolve(cfg.model.name, cfg.model.revision)
    except ModelError as exc:
        raise TrainingError(str(exc)) from None
    tokenizer = models.load_tokenizer(resolved, trust_remote_code=cfg.model.trust_remote_code)
    kind = job_kind(cfg, resolved)
    frames = {
        split: data[split].reset_index(drop=True)
        for split in SPLITS
        if split in data and data[split] is not None and not data[split].empty
    }
    job = Job(cfg, kind, resolved, tokenizer, frames, features={})
    _require_columns(job)
    if kind == "classification":
        job.labels = resolve_labels(cfg, frames)
        for split, frame in frames.items():
            job.features[split] = classification_features(job, frame)
    elif kind == "causal":
        job.uses_chat_template = bool(getattr(tokenizer, "chat_template", None))
        for split, frame in frames.items():
            job.features[split], job.prompts[split] = causal_features(job, frame, split)
    else:
        for split, frame in frames.items():
            job.features[split], job.prompts[split] = seq2seq_features(job, frame, split)
    return job


def _require_columns(job: Job) -> None:
    needed = ("text", "label") if job.kind == "classification" else ("prompt", "response")
    for split, frame in job.frames.items():
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise TrainingError(
                f"The {split} split of '{job.cfg.data.name}' lacks column(s) {missing} needed "
                f"for {job.cfg.data.task} (columns: {list(frame.columns)}). Check data.task "
                "and data.columns."
            )


def resolve_labels(cfg: RunConfig, frames: dict[str, pd.DataFrame]) -> list[str]:
    """The declared label set (cfg.data.labels) or the sorted labels of train; every split
    must stay inside it."""
    found = sorted({str(v) for v in frames["train"]["label"]})
    labels = [str(label) for label in cfg.data.labels] if cfg.data.labels else found
    if len(labels) < 2:
        raise TrainingError(
            f"Classification needs at least 2 labels, '{cfg.data.name}' has {labels}. "
            "Declare data.labels or add rows of the other classes."
        )
    for split, frame in frames.items():
        unknown = sorted({str(v) for v in frame["label"]} - set(labels))
        if unknown:
            raise TrainingError(
                f"The {split} split has label(s) {unknown} outside data.labels={labels}. "
                "Add them to data.labels or fix the data."
            )
    return labels


def _pairs(frame: pd.DataFrame) -> list[str] | None:
    if "text_pair" not in frame.columns or frame["text_pair"].isna().all():
        return None
    return [str(v) if isinstance(v, str) else "" for v in frame["text_pair"]]


def classification_features(job: Job, frame: pd.DataFrame) -> list[dict]:
    """Token ids (truncated to model.max_length) and the label id of each row.

    Encoders encode text_pair as a second segment; decoders read ``text + "\\n" + text_pair``.
    """
    tokenizer, max_length = job.tokenizer, job.cfg.model.max_length
    texts = [str(t) for t in frame["text"]]
    pairs = _pairs(frame)
    if pairs is not None and job.family == "decoder":
        texts = [f"{t}\n{p}" if p else t for t, p in zip(texts, pairs, strict=True)]
        pairs = None
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    label2id = job.label2id
    rows = []
    for i, label in enumerate(frame["label"]):
        row = {key: encoded[key][i] for key in encoded}
        row["labels"] = label2id[str(label)]
        rows.append(row)
    return rows


def render_chat(tokenizer, prompt: str, response: str) -> tuple[str, str]:
    """(prompt text, response text) in the chat template: user=prompt, assistant=response.

    The prompt text ends where the assistant's turn starts (the generation prompt), so
    training sees exactly what generation will be fed.
    """
    user = [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*user, {"role": "assistant", "content": response}], tokenize=False
    )
    if not full.startswith(head):
        raise TrainingError(
            "The chat template of this tokenizer renders the user turn differently with and "
            "without the assistant's answer, so the response tokens cannot be told apart from "
            "the prompt. Use a model whose template appends the assistant turn."
        )
    return head, full[len(head) :]


def causal_features(
    job: Job, frame: pd.DataFrame, split: str
) -> tuple[list[dict], list[list[int]]]:
    """input_ids = prompt + response (+ eos); labels = -100 on the prompt, the response ids.

    Prompts that leave no room for a response within model.max_length are an error.
    """
    tokenizer, max_length = job.tokenizer, job.cfg.model.max_length
    prompts = [str(p) for p in frame["prompt"]]
    responses = [str(r) for r in frame["response"]]
    if job.uses_chat_template:
        rendered = [render_chat(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
        heads = [h for h, _ in rendered]
        tails = [t for _, t in rendered]
    else:
        heads = [f"{p}\n" for p in prompts]
        tails = responses
    common.check_prompt_lengths(tokenizer, heads, max_length, where=split)
    # A chat template writes its own special tokens; plain text gets the tokenizer's (bos).
    head_ids = tokenizer(heads, add_special_tokens=not job.uses_chat_template)["input_ids"]
    tail_ids = tokenizer(tails, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    rows = []
    for head, tail in zip(head_ids, tail_ids, strict=True):
        if not job.uses_chat_template and eos is not None:
            tail = [*tail, eos]
        ids = (head + tail)[:max_length]
        labels = ([IGNORE_INDEX] * len(head) + tail)[:max_length]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return rows, [list(h) for h in head_ids]


def seq2seq_features(
    job: Job, frame: pd.DataFrame, split: str
) -> tuple[list[dict], list[list[int]]]:
    """Encoder input = the prompt, labels = the response, each cut at model.max_length."""
    tokenizer, max_length = job.tokenizer, job.cfg.model.max_length
    prompts = [str(p) for p in frame["prompt"]]
    full = tokenizer(prompts)["input_ids"]
    cut = sum(len(ids) > max_length for ids in full)
    if cut:
        job.notes.append(
            f"{cut} of {len(prompts)} {split} prompts were cut to model.max_length={max_length} "
            "tokens (the encoder input)."
        )
    inputs = tokenizer(prompts, truncation=True, max_length=max_length)
    targets = tokenizer(
        text_target=[str(r) for r in frame["response"]], truncation=True, max_length=max_length
    )
    rows = [
        {"input_ids": ids, "attention_mask": mask, "labels": labels}
        for ids, mask, labels in zip(
            inputs["input_ids"], inputs["attention_mask"], targets["input_ids"], strict=True
        )
    ]
    return rows, [list(ids) for ids in inputs["input_ids"]]


class CausalCollator:
    """Pads input_ids (pad id), attention_mask (0) and labels (-100) to the longest row."""

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        longest = max(len(r["input_ids"]) for r in rows)
        batch: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        for row in rows:
            gap = longest - len(row["input_ids"])
            for key, value in fill.items():
                pad = [value] * gap
                seq = list(row[key])
                batch[key].append(pad + seq if self.padding_side == "left" else seq + pad)
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


def collator(job: Job):
    """The batch builder for the job's kind (dynamic padding to the longest row)."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if job.kind == "classification":
        return DataCollatorWithPadding(job.tokenizer)
    if job.kind == "causal":
        return CausalCollator(job.tokenizer.pad_token_id)
    return DataCollatorForSeq2Seq(job.tokenizer, label_pad_token_id=IGNORE_INDEX)


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


def load_model(job: Job, path: Path | None = None):
    """The pretrained weights (or those in ``path``) with the job's head, in fp32
    (mixed precision is the Trainer's business)."""
    import torch

    cfg, tokenizer = job.cfg, job.tokenizer
    kwargs: dict[str, Any] = {
        "dtype": torch.float32,
        "trust_remote_code": cfg.model.trust_remote_code,
    }
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
    from transformers import Trainer

    args = common.training_arguments(
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
        callbacks=[common.divergence_guard()],
    )


def fit(job: Job, model, output_dir: Path, device: common.DeviceChoice) -> Fitted:
    """Train (resuming from the last checkpoint in output_dir, if any)."""
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
    result = TrainResult(
        method=cfg.train.method,
        model=cfg.model.name,
        dataset=cfg.data.name,
        task=cfg.data.task,
        output_dir=str(output_dir),
        data_version=data_version,
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
    if job.uses_chat_template:
        result.notes.append("Prompts and responses were framed with the chat template.")
    return result


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
        frame.to_parquet(output_dir / PREDICTIONS_FILE, index=False)
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
        metrics[f"{split}_perplexity"] = math.exp(loss) if loss < 700 else math.inf
    if not job.has("test"):
        return metrics, None
    count = min(MAX_GENERATED, len(job.prompts["test"]))
    predictions = generate(job, model, job.prompts["test"][:count], MAX_NEW_TOKENS)
    source = job.frames["test"].iloc[:count]
    references = [str(r) for r in source["response"]]
    for name, value in rouge_scores(predictions, references).items():
        metrics[f"test_{name}"] = value
    metrics["test_generated"] = float(count)
    per_row = [
        rouge_scores([p], [r])["rougeL"] for p, r in zip(predictions, references, strict=True)
    ]
    frame = pd.DataFrame(
        {
            "prompt": source["prompt"].astype(str).tolist(),
            "reference": references,
            "prediction": predictions,
            "rougeL": per_row,
        }
    )
    return metrics, frame


def generate(job: Job, model, prompts: list[list[int]], max_new_tokens: int):
    """Greedy answers to tokenized prompts, batched (left-padded for decoders)."""
    import torch

    tokenizer = job.tokenizer
    pad = tokenizer.pad_token_id
    side = "left" if job.kind == "causal" else "right"
    batcher = CausalCollator(pad, padding_side=side)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[str] = []
    size = job.cfg.train.batch_size
    try:
        for start in range(0, len(prompts), size):
            chunk = prompts[start : start + size]
            batch = batcher(
                [{"input_ids": p, "attention_mask": [1] * len(p), "labels": p} for p in chunk]
            )
            input_ids = batch["input_ids"].to(device)
            attention_mask = batch["attention_mask"].to(device)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad,
                    eos_token_id=tokenizer.eos_token_id,
                )
            width = input_ids.shape[1]
            if (
                job.kind == "causal"
                and out.shape[1] >= width
                and torch.equal(out[:, :width], input_ids)
            ):
                out = out[:, width:]
            answers.extend(t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return answers
