"""Splits as model inputs for the transformers Trainer: the :class:`Job` of a fine-tuning
run (full or adapter), with its tokenizer, features, prompts and batch builder.

The task and the model family pick one of three kinds of job:

- ``classification``: a sequence-classification head on an encoder or a decoder;
- ``causal``: generation or chat with a decoder, supervised fine-tuning through trl's
  SFTTrainer (sft.py: loss on the response, or on every assistant turn of a chat);
- ``seq2seq``: generation with an encoder-decoder, prompt in, response as labels.

transformers is imported inside functions: the CLI imports this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tunelab import models
from tunelab.config import RunConfig
from tunelab.errors import ModelError, TrainingError
from tunelab.train import common, sft

SPLITS = ("train", "validation", "test")
IGNORE_INDEX = -100


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
    # causal jobs: split -> trl rows and evaluation prompts; features come from trl.
    sft_data: dict[str, sft.SftData] = field(default_factory=dict)
    trl_chat_masks: bool = False  # trl masks assistant turns itself (see sft.py)
    collate: Callable | None = None  # the trainer's own batch builder, once it exists

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels or [])}

    @property
    def family(self) -> str:
        return self.resolved.family

    def has(self, split: str) -> bool:
        data = self.sft_data.get(split)
        return bool(self.features.get(split)) or bool(data and data.rows)


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
    if task == "chat":
        if family != "decoder":
            raise TrainingError(
                f"model.name={name} is an {family} model; chat data with "
                f"train.method={cfg.train.method} needs a decoder with a chat template "
                "(e.g. smollm2-135m-instruct, tiny-llama)."
            )
        return "causal"
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
        job.uses_chat_template = common.has_chat_template(tokenizer)
        if cfg.data.task == "chat" and not job.uses_chat_template:
            raise TrainingError(
                f"model.name={cfg.model.name} has no chat template, so its conversations "
                "cannot be rendered. Use a chat model (e.g. smollm2-135m-instruct, tiny-llama)."
            )
        job.trl_chat_masks = cfg.data.task == "chat" and sft.uses_trl_chat_masks(tokenizer)
        for split, frame in frames.items():
            job.sft_data[split] = sft.split_data(job, frame, split)
            job.prompts[split] = job.sft_data[split].prompts
    else:
        for split, frame in frames.items():
            job.features[split], job.prompts[split] = seq2seq_features(job, frame, split)
    return job


def _require_columns(job: Job) -> None:
    needed = {"classification": ("text", "label"), "chat": ("messages",)}.get(
        job.cfg.data.task, ("prompt", "response")
    )
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


def collator(job: Job):
    """The batch builder for the job's kind (dynamic padding to the longest row)."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if job.collate is not None:
        return job.collate
    if job.kind == "classification":
        return DataCollatorWithPadding(job.tokenizer)
    if job.kind == "causal":
        raise TrainingError("A causal job collates through its SFTTrainer: build it first.")
    return DataCollatorForSeq2Seq(job.tokenizer, label_pad_token_id=IGNORE_INDEX)
