"""Baselines: always start with a stupid model.

- ``majority``: predict the most frequent training label (classification).
- ``tfidf``: TF-IDF word 1-2 grams + logistic regression (classification).
- ``prompt``: zero/one/k-shot prompting of an instruct LM, no training at all:
  classification by scoring each label's verbalization (every prediction is a valid
  label), generation by greedy decoding (ROUGE), preference data by how often the model
  finds the chosen answer more likely than the rejected one (``loglik_win_rate``).

Every kind evaluates on the test split (and validation when present), writes the test
predictions to ``predictions.parquet`` and ends with :func:`common.finish`.

torch, transformers and scikit-learn are imported inside functions: the CLI imports
this package.
"""

from __future__ import annotations

import json
import logging
import random
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tunelab import evaluate
from tunelab.config import PromptingConfig, RunConfig
from tunelab.errors import TrainingError
from tunelab.runs import PREDICTIONS_FILE, PROMPT_EXAMPLE_FILE, TrainResult
from tunelab.train.common import (
    DeviceChoice,
    ResourceMeter,
    finish,
    pick_device,
    show_progress,
)

log = logging.getLogger(__name__)

EVAL_SPLITS = ("test", "validation")
PAIR_SEPARATOR = " [SEP] "
PATTERN_FIELDS = ("text", "text_pair", "prompt", "choices")
# The pattern when the config leaves it unset: a choice question for classification,
# the prompt itself (it is the instruction) for generation and preference data.
CLASSIFICATION_PATTERN = "Classify the sentiment of this text as {choices}.\nText: {text}"
PROMPT_ONLY_PATTERN = "{prompt}"
VERBALIZER_KEY = "train.baseline.prompting.verbalizer"
PATTERN_KEY = "train.baseline.prompting.pattern"


def train(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, data_version: str | None
) -> TrainResult:
    """Fit (or just prompt) the configured baseline and evaluate it; see the module doc."""
    kind = cfg.train.baseline.kind
    task = cfg.data.task
    if kind in ("majority", "tfidf") and task != "classification":
        raise TrainingError(
            f"train.baseline.kind={kind} needs classification data, but '{cfg.data.name}' is "
            f"{task} data. Use train.baseline.kind=prompt."
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = TrainResult(
        method="baseline",
        model={"majority": "majority-class", "tfidf": "tfidf-logreg"}.get(kind, cfg.model.name),
        dataset=cfg.data.name,
        task=task,
        output_dir=str(output_dir),
        data_version=data_version,
    )
    # The scikit-learn baselines always run on the CPU, whatever train.device says.
    device = pick_device(cfg) if kind == "prompt" else DeviceChoice("cpu", "fp32")
    with ResourceMeter() as meter:
        if kind == "majority":
            _majority(cfg, data, output_dir, result)
        elif kind == "tfidf":
            _tfidf(cfg, data, output_dir, result)
        else:
            _prompt(cfg, data, output_dir, result, device)
    return finish(result, meter, device)


# ---------------------------------------------------------------- shared helpers


def _eval_splits(data: dict[str, pd.DataFrame]) -> list[str]:
    return [s for s in EVAL_SPLITS if s in data and not data[s].empty]


def _inputs(frame: pd.DataFrame) -> list[str]:
    """The classification input as one string: text, plus text_pair when present."""
    texts = frame["text"].astype(str).tolist()
    if "text_pair" not in frame.columns:
        return texts
    pairs = frame["text_pair"].tolist()
    return [
        t if p is None or (isinstance(p, float) and pd.isna(p)) else f"{t}{PAIR_SEPARATOR}{p}"
        for t, p in zip(texts, pairs, strict=True)
    ]


def _label_set(cfg: RunConfig, data: dict[str, pd.DataFrame]) -> list[str]:
    """Declared labels, else every label seen in any split (sorted, so the order is stable)."""
    if cfg.data.labels:
        return list(cfg.data.labels)
    seen: set[str] = set()
    for frame in data.values():
        if "label" in frame.columns:
            seen.update(frame["label"].astype(str))
    return sorted(seen)


def _record_classification(
    result: TrainResult,
    split: str,
    frame: pd.DataFrame,
    predictions: Sequence[str],
    labels: Sequence[str],
    output_dir: Path,
    extra: dict[str, Sequence[Any]] | None = None,
) -> None:
    y_true = frame["label"].astype(str).tolist()
    metric_labels = list(labels) + sorted(set(y_true) - set(labels))
    for name, value in evaluate.classification_metrics(y_true, predictions, metric_labels).items():
        result.metrics[f"{split}_{name}"] = value
    if split == "test":
        columns = {
            "input": _inputs(frame),
            "reference": y_true,
            "prediction": list(predictions),
            "correct": [t == p for t, p in zip(y_true, predictions, strict=True)],
            **(extra or {}),
        }
        _save_predictions(result, frame, columns, output_dir)


def _save_predictions(
    result: TrainResult, frame: pd.DataFrame, columns: dict[str, Sequence[Any]], output_dir: Path
) -> None:
    table = pd.DataFrame(columns)
    if "source_row" in frame.columns:  # a stable id: paired comparisons between runs join on it
        table.insert(0, "source_row", frame["source_row"].to_numpy())
    table.to_parquet(output_dir / PREDICTIONS_FILE, index=False)
    result.artifacts["predictions"] = PREDICTIONS_FILE


# ---------------------------------------------------------------- majority class


def _majority(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, result: TrainResult
) -> None:
    counts = data["train"]["label"].astype(str).value_counts()
    # Ties go to the label that sorts first, so the choice never depends on row order.
    label = min(counts.index, key=lambda lab: (-counts[lab], lab))
    labels = _label_set(cfg, data)
    (output_dir / "model.json").write_text(
        json.dumps({"kind": "majority", "label": label, "train_counts": counts.to_dict()}),
        encoding="utf-8",
    )
    result.artifacts["model"] = "model.json"
    result.notes.append(
        f"majority class '{label}': {counts[label]} of {int(counts.sum())} training rows."
    )
    for split in _eval_splits(data):
        frame = data[split]
        _record_classification(result, split, frame, [label] * len(frame), labels, output_dir)


# ---------------------------------------------------------------- TF-IDF + logistic regression


def _tfidf(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, result: TrainResult
) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    train_frame = data["train"]
    y = train_frame["label"].astype(str).tolist()
    if len(set(y)) < 2:
        raise TrainingError(
            f"train.baseline.kind=tfidf needs at least two labels in the training split of "
            f"'{cfg.data.name}', found only {sorted(set(y))}. Use train.baseline.kind=majority."
        )
    pipeline = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
            ("logreg", LogisticRegression(max_iter=5000, random_state=cfg.train.seed)),
        ]
    )
    started = time.perf_counter()
    pipeline.fit(_inputs(train_frame), y)
    fit_seconds = time.perf_counter() - started
    model_file = _save_sklearn(pipeline, output_dir)
    result.artifacts["model"] = model_file
    logreg = pipeline.named_steps["logreg"]
    n_coef = int(logreg.coef_.size + logreg.intercept_.size)
    result.trainable_params = result.total_params = n_coef
    vocab = len(pipeline.named_steps["tfidf"].vocabulary_)
    result.notes.append(
        f"TF-IDF vocabulary of {vocab} uni/bigrams; logistic regression fitted in "
        f"{fit_seconds:.2f}s ({n_coef} coefficients)."
    )
    labels = _label_set(cfg, data)
    for split in _eval_splits(data):
        frame = data[split]
        predictions = [str(p) for p in pipeline.predict(_inputs(frame))]
        extra = None
        if split == "test":
            proba = pipeline.predict_proba(_inputs(frame))
            extra = {"score": proba.max(axis=1).tolist()}  # probability of the predicted label
            # One column per label (0 for labels the model never saw): calibration metrics.
            classes = [str(c) for c in pipeline.classes_]
            for label in labels:
                column = proba[:, classes.index(label)] if label in classes else [0.0] * len(frame)
                extra[f"prob_{label}"] = list(column)
        _record_classification(result, split, frame, predictions, labels, output_dir, extra)


def _save_sklearn(pipeline, output_dir: Path) -> str:
    """skops when installed (loading it does not execute arbitrary code), else joblib."""
    try:
        import skops.io as sio
    except ImportError:
        import joblib

        joblib.dump(pipeline, output_dir / "model.joblib")
        return "model.joblib"
    sio.dump(pipeline, output_dir / "model.skops")
    return "model.skops"


# ---------------------------------------------------------------- prompting: building prompts


@dataclass
class Prompter:
    """Turns rows into prompts: the pattern, the verbalizer, the demonstrations, the template."""

    task: str
    pattern: str
    labels: list[str]
    verbal: dict[str, str]  # label -> words (every label present)
    demos: list[tuple[dict[str, str], str]] = field(default_factory=list)  # (fields, answer)
    tokenizer: Any = None
    use_chat: bool = False

    @property
    def choices(self) -> str:
        return ", ".join(self.verbal[label] for label in self.labels)

    def fields(self, row: dict[str, Any]) -> dict[str, str]:
        """Pattern fields of one row. text and prompt stand in for each other."""
        if self.task == "classification":
            text = str(row["text"])
            pair = row.get("text_pair")
            pair = "" if pair is None or (isinstance(pair, float) and pd.isna(pair)) else str(pair)
            return {"text": text, "text_pair": pair, "prompt": text, "choices": self.choices}
        prompt = str(row["prompt"])
        return {"text": prompt, "text_pair": "", "prompt": prompt, "choices": self.choices}

    def fill(self, fields: dict[str, str]) -> str:
        return self.pattern.format(**fields)

    def render(self, row: dict[str, Any]) -> str:
        """The full prompt text for one row: demonstrations first, then the row, ready for the
        model's answer (after the assistant header with a chat template, else after the text)."""
        query = self.fill(self.fields(row))
        if self.use_chat:
            messages = []
            for demo_fields, answer in self.demos:
                messages.append({"role": "user", "content": self.fill(demo_fields)})
                messages.append({"role": "assistant", "content": answer})
            messages.append({"role": "user", "content": query})
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        parts = [f"{self.fill(f)}{self.joiner}{answer}" for f, answer in self.demos]
        return "\n\n".join([*parts, query])

    @property
    def joiner(self) -> str:
        """Between a plain-text prompt and its answer: a space, or nothing after a newline."""
        return "" if self.use_chat or self.pattern.endswith(("\n", " ")) else " "

    def continuation(self, answer: str) -> str:
        return f"{self.joiner}{answer}"


def _check_pattern(pattern: str) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    except ValueError as exc:
        raise TrainingError(
            f"{PATTERN_KEY} is not a valid str.format template ({exc}): {pattern!r}. "
            "Write literal braces as {{ and }}."
        ) from None
    unknown = sorted(n for n in names if n not in PATTERN_FIELDS)
    if unknown:
        raise TrainingError(
            f"{PATTERN_KEY} uses unknown field(s) {', '.join('{' + n + '}' for n in unknown)}; "
            f"allowed fields: {', '.join('{' + n + '}' for n in PATTERN_FIELDS)}."
        )


def _verbalizer(p: PromptingConfig, labels: list[str]) -> dict[str, str]:
    if p.verbalizer is None:
        return {label: label for label in labels}
    missing = [label for label in labels if label not in p.verbalizer]
    if missing:
        raise TrainingError(
            f"{VERBALIZER_KEY} has no words for label(s) {', '.join(map(repr, missing))}; "
            f"it must map every label ({', '.join(labels)}) to what the model should say, "
            f"e.g. {VERBALIZER_KEY}={{{', '.join(f'{lab}: {lab}' for lab in labels)}}}, "
            "or leave it unset to use the labels themselves."
        )
    verbal = {label: str(p.verbalizer[label]).strip() for label in labels}
    empty = [label for label, words in verbal.items() if not words]
    if empty:
        raise TrainingError(f"{VERBALIZER_KEY} maps {', '.join(empty)} to empty words.")
    by_words: dict[str, list[str]] = {}
    for label, words in verbal.items():
        by_words.setdefault(words.lower(), []).append(label)
    clashes = [group for group in by_words.values() if len(group) > 1]
    if clashes:
        raise TrainingError(
            f"{VERBALIZER_KEY} gives labels {', '.join(map(str, clashes))} the same words, so "
            "they cannot be told apart. Give each label its own words."
        )
    return verbal


def _demonstrations(
    frame: pd.DataFrame, shots: int, seed: int, task: str, labels: list[str]
) -> list[int]:
    """Row positions of ``shots`` training rows, the same for the same seed and data.

    Classification covers the labels round-robin (each label's rows in a seeded shuffle),
    then the chosen rows are shuffled so no label always comes last (recency bias).
    """
    if shots == 0:
        return []
    rng = random.Random(seed)
    n = len(frame)
    if shots >= n:
        chosen = list(range(n))
    elif task == "classification":
        by_label: dict[str, list[int]] = {}
        for pos, label in enumerate(frame["label"].astype(str)):
            by_label.setdefault(label, []).append(pos)
        order = [lab for lab in labels if lab in by_label] + sorted(set(by_label) - set(labels))
        queues = {lab: rng.sample(by_label[lab], len(by_label[lab])) for lab in order}
        chosen = []
        while len(chosen) < shots:
            for lab in order:
                if queues[lab] and len(chosen) < shots:
                    chosen.append(queues[lab].pop())
    else:
        chosen = rng.sample(range(n), shots)
    rng.shuffle(chosen)
    return chosen


def _default_pattern(p: PromptingConfig, task: str) -> tuple[str, str | None]:
    """The configured pattern, or the task's default when it is unset."""
    if p.pattern is not None:
        return p.pattern, None
    default = CLASSIFICATION_PATTERN if task == "classification" else PROMPT_ONLY_PATTERN
    return default, f"{PATTERN_KEY} unset: the {task} default '{default}' was used."


# ---------------------------------------------------------------- prompting: the model


@dataclass
class LM:
    model: Any
    tokenizer: Any
    family: str  # "decoder" | "seq2seq"
    device: str
    max_positions: int | None
    batch_size: int
    progress: bool
    keep_logits: bool = False  # the decoder's forward takes logits_to_keep
    tokens: int = 0  # real (non-padding) tokens processed
    seconds: float = 0.0  # time spent in forward passes and generation

    def encode_prompt(self, text: str) -> list[int]:
        tok = self.tokenizer
        if self.family == "seq2seq":
            return tok(text, add_special_tokens=True)["input_ids"]
        # Chat templates that write the bos token themselves must not get a second one.
        starts_with_bos = tok.bos_token is not None and text.startswith(tok.bos_token)
        ids = tok(text, add_special_tokens=not starts_with_bos)["input_ids"]
        eos = tok.eos_token_id
        if ids and eos is not None and ids[-1] == eos and not text.endswith(tok.eos_token or ""):
            ids = ids[:-1]  # some decoders append eos to every input; a prompt goes on
        if not ids:  # a decoder needs one token to predict the first continuation token from
            ids = [tok.bos_token_id if tok.bos_token_id is not None else eos]
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        # A seq2seq target ends with eos as in training; a decoder continuation does not.
        ids = self.tokenizer(text, add_special_tokens=self.family == "seq2seq")["input_ids"]
        if not ids:
            raise TrainingError(f"The answer {text!r} encodes to no tokens.")
        return ids

    def _bar(self, iterable, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, disable=not self.progress, leave=False)

    def logprobs(
        self, pairs: list[tuple[list[int], list[int]]], desc: str
    ) -> list[tuple[float, int]]:
        """(sum of token log-likelihoods, token count) of each continuation given its prompt."""
        import torch

        # Longest first, so similar lengths share a batch and an out-of-memory shows early.
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        started = time.perf_counter()
        with torch.no_grad():
            for batch in self._bar(batches, len(batches), desc):
                chunk = [pairs[i] for i in batch]
                if self.family == "seq2seq":
                    scores = self._seq2seq_logprobs(chunk)
                else:
                    scores = self._decoder_logprobs(chunk)
                for i, score in zip(batch, scores, strict=True):
                    out[i] = score
        self.seconds += time.perf_counter() - started
        return out

    def choice_logprobs(
        self, prompts: list[list[int]], choices: list[list[int]], desc: str
    ) -> list[list[tuple[float, int]]]:
        """(sum of token log-likelihoods, token count) of every choice after every prompt.

        Each prompt is run once: a decoder continues it from the cached keys and values
        (one-token choices need no further pass at all), a seq2seq model reuses the
        encoder output. Same numbers as :meth:`logprobs` on all the pairs, ~k times cheaper.
        """
        import torch

        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[list[tuple[float, int]]] = [[] for _ in prompts]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        started = time.perf_counter()
        with torch.no_grad():
            for batch in self._bar(batches, len(batches), desc):
                chunk = [prompts[i] for i in batch]
                if self.family == "seq2seq":
                    scores = self._seq2seq_choices(chunk, choices)
                else:
                    scores = self._decoder_choices(chunk, choices)
                for i, row in zip(batch, scores, strict=True):
                    out[i] = row
        self.seconds += time.perf_counter() - started
        return out

    def _left_padded(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    def _decoder_choices(self, chunk, choices) -> list[list[tuple[float, int]]]:
        import copy

        import torch

        ids, mask, positions = self._left_padded(chunk)
        rows = len(chunk)
        multi = any(len(c) > 1 for c in choices)
        kwargs = {"logits_to_keep": 1} if self.keep_logits else {}
        output = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=multi,
            **kwargs,
        )
        self.tokens += int(mask.sum())
        first = torch.log_softmax(output.logits[:, -1].float(), dim=-1).cpu()
        cache = output.past_key_values if multi else None
        lengths = mask.sum(-1, keepdim=True)
        totals = torch.zeros((rows, len(choices)))
        for j, cont in enumerate(choices):
            totals[:, j] = first[:, cont[0]]
            if len(cont) == 1:
                continue
            # Feed the choice's tokens but the last; each predicts the next one.
            step = torch.tensor([cont[:-1]]).repeat(rows, 1)
            extra = step.shape[1]
            croppable = getattr(cache, "is_croppable", True) and hasattr(cache, "crop")
            past = cache if croppable else copy.deepcopy(cache)
            logits = self.model(
                input_ids=step.to(self.device),
                attention_mask=torch.cat([mask, torch.ones((rows, extra), dtype=torch.long)], 1).to(
                    self.device
                ),
                position_ids=(lengths + torch.arange(extra)).to(self.device),
                past_key_values=past,
                use_cache=True,
            ).logits.float()
            logp = torch.log_softmax(logits, dim=-1).cpu()
            targets = torch.tensor([cont[1:]]).repeat(rows, 1).unsqueeze(-1)
            totals[:, j] += logp.gather(-1, targets).squeeze(-1).sum(-1)
            self.tokens += rows * extra
            if croppable:
                cache.crop(-extra)  # back to the bare prompt for the next choice
        return [[(float(totals[r, j]), len(c)) for j, c in enumerate(choices)] for r in range(rows)]

    def _seq2seq_choices(self, chunk, choices) -> list[list[tuple[float, int]]]:
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, prompt in enumerate(chunk):
            ids[row, : len(prompt)] = torch.tensor(prompt)
            mask[row, : len(prompt)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        encoded = self.model.get_encoder()(input_ids=ids, attention_mask=mask)
        self.tokens += int(mask.sum())
        totals = torch.zeros((len(chunk), len(choices)))
        for j, cont in enumerate(choices):
            labels = torch.tensor([cont]).repeat(len(chunk), 1).to(self.device)
            logits = self.model(
                encoder_outputs=encoded, attention_mask=mask, labels=labels
            ).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            totals[:, j] = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1).cpu()
            self.tokens += labels.numel()
        return [
            [(float(totals[r, j]), len(c)) for j, c in enumerate(choices)]
            for r in range(len(chunk))
        ]

    def _decoder_logprobs(self, chunk) -> list[tuple[float, int]]:
        import torch

        seqs = [prompt + cont for prompt, cont in chunk]
        # Left padding: every continuation ends at the last position, so only the last
        # (longest continuation + 1) positions need logits (logits_to_keep).
        ids, mask, positions = self._left_padded(seqs)
        longest = max(len(cont) for _, cont in chunk)
        kwargs = {"logits_to_keep": longest + 1} if self.keep_logits else {}
        logits = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            **kwargs,
        ).logits
        logits = logits[:, -(longest + 1) : -1].float()  # position t predicts token t + 1
        logp = torch.log_softmax(logits, dim=-1)
        targets = ids[:, -longest:].to(self.device)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
        self.tokens += int(mask.sum())
        return [
            (float(token_logp[row, longest - len(cont) :].sum()), len(cont))
            for row, (_, cont) in enumerate(chunk)
        ]

    def _seq2seq_logprobs(self, chunk) -> list[tuple[float, int]]:
        import torch

        pad = self.tokenizer.pad_token_id
        src_width = max(len(p) for p, _ in chunk)
        tgt_width = max(len(c) for _, c in chunk)
        ids = torch.full((len(chunk), src_width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), src_width), dtype=torch.long)
        labels = torch.full((len(chunk), tgt_width), -100, dtype=torch.long)
        for row, (prompt, cont) in enumerate(chunk):
            ids[row, : len(prompt)] = torch.tensor(prompt)
            mask[row, : len(prompt)] = 1
            labels[row, : len(cont)] = torch.tensor(cont)
        logits = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            labels=labels.to(self.device),
        ).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        valid = labels != -100
        token_logp = logp.gather(-1, labels.clamp(min=0).to(self.device).unsqueeze(-1))
        token_logp = token_logp.squeeze(-1).cpu() * valid
        self.tokens += int(mask.sum()) + int(valid.sum())
        return [(float(token_logp[row].sum()), len(cont)) for row, (_, cont) in enumerate(chunk)]

    def generate(self, prompts: list[list[int]], max_new_tokens: int, desc: str) -> list[str]:
        """Greedy answers to each prompt, decoded from the new tokens only."""
        import torch
        from transformers import GenerationConfig

        tok = self.tokenizer
        eos = self.model.generation_config.eos_token_id
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos if eos is not None else tok.eos_token_id,
            decoder_start_token_id=self.model.generation_config.decoder_start_token_id,
        )
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out = [""] * len(prompts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        started = time.perf_counter()
        with torch.no_grad():
            for batch in self._bar(batches, len(batches), desc):
                width = max(len(prompts[i]) for i in batch)
                ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    seq = torch.tensor(prompts[i])
                    if self.family == "seq2seq":  # encoder inputs: right padding
                        ids[row, : len(seq)], mask[row, : len(seq)] = seq, 1
                    else:  # decoder prompts: left padding, so generation continues each one
                        ids[row, width - len(seq) :], mask[row, width - len(seq) :] = seq, 1
                generated = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    generation_config=gen_cfg,
                ).cpu()
                new = generated if self.family == "seq2seq" else generated[:, width:]
                for row, i in enumerate(batch):
                    out[i] = tok.decode(new[row], skip_special_tokens=True).strip()
                self.tokens += int(mask.sum()) + int((new != tok.pad_token_id).sum())
        self.seconds += time.perf_counter() - started
        return out


def _load_lm(cfg: RunConfig, device: DeviceChoice) -> tuple[LM, int]:
    import inspect

    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from tunelab import models

    resolved = models.resolve(cfg.model.name, cfg.model.revision)
    if resolved.family not in ("decoder", "seq2seq"):
        raise TrainingError(
            f"train.baseline.kind=prompt needs a model that writes text (a decoder or seq2seq "
            f"model), but '{cfg.model.name}' is an {resolved.family}. Use e.g. "
            "model.name=smollm2-135m-instruct, or train.baseline.kind=tfidf."
        )
    trust = cfg.model.trust_remote_code
    tokenizer = models.load_tokenizer(resolved, trust_remote_code=trust)
    auto = AutoModelForCausalLM if resolved.family == "decoder" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(
        str(resolved.path), dtype=device.torch_dtype, trust_remote_code=trust
    )
    model.to(device.device)
    model.eval()
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    total = sum(p.numel() for p in model.parameters())
    lm = LM(
        model=model,
        tokenizer=tokenizer,
        family=resolved.family,
        device=device.device,
        max_positions=limit if resolved.family == "decoder" else None,
        batch_size=cfg.train.batch_size,
        progress=show_progress(),
        keep_logits="logits_to_keep" in inspect.signature(model.forward).parameters,
    )
    return lm, total


def _check_lengths(
    prompts: list[list[int]], reserve: int, cfg: RunConfig, lm: LM, split: str
) -> None:
    """Refuse prompts that do not fit instead of silently cutting demonstrations off."""
    limit = cfg.model.max_length
    if lm.max_positions is not None:
        limit = min(limit, lm.max_positions)
    longest = max(len(p) for p in prompts) + reserve
    if longest > limit:
        n_over = sum(len(p) + reserve > limit for p in prompts)
        raise TrainingError(
            f"{n_over} of {len(prompts)} {split} prompts (with demonstrations and answer) need "
            f"up to {longest} tokens, more than the limit of {limit} (model.max_length="
            f"{cfg.model.max_length}"
            + (f", model positions {lm.max_positions}" if lm.max_positions else "")
            + "). Raise model.max_length, lower train.baseline.prompting.shots, or shorten "
            "train.baseline.prompting.pattern."
        )


# ---------------------------------------------------------------- prompting: the runs


def _prompt(
    cfg: RunConfig,
    data: dict[str, pd.DataFrame],
    output_dir: Path,
    result: TrainResult,
    device: DeviceChoice,
) -> None:
    p = cfg.train.baseline.prompting
    task = cfg.data.task
    pattern, note = _default_pattern(p, task)
    if note:
        result.notes.append(note)
    _check_pattern(pattern)
    labels = _label_set(cfg, data) if task == "classification" else []
    verbal = _verbalizer(p, labels) if task == "classification" else {}
    lm, total = _load_lm(cfg, device)
    result.trainable_params, result.total_params = 0, total
    has_chat = getattr(lm.tokenizer, "chat_template", None) is not None
    if p.use_chat_template and not has_chat:
        result.notes.append(f"'{cfg.model.name}' has no chat template: plain-text prompts.")
    prompter = Prompter(
        task=task,
        pattern=pattern,
        labels=labels,
        verbal=verbal,
        tokenizer=lm.tokenizer,
        use_chat=p.use_chat_template and has_chat,
    )
    train_frame = data["train"].reset_index(drop=True)
    demo_rows = _demonstrations(train_frame, p.shots, cfg.train.seed, task, labels)
    for pos in demo_rows:
        row = train_frame.iloc[pos].to_dict()
        answer = {
            "classification": lambda r: verbal.get(str(r["label"]), str(r["label"])),
            "generation": lambda r: str(r["response"]),
            "preference": lambda r: str(r["chosen"]),
        }[task](row)
        prompter.demos.append((prompter.fields(row), answer))
    if demo_rows and "source_row" in train_frame.columns:
        rows = train_frame["source_row"].iloc[demo_rows].tolist()
        result.notes.append(f"{len(demo_rows)} demonstrations: train source_rows {rows}.")
    mode = p.mode
    if task != "classification":
        mode = "generate" if task == "generation" else "loglik"
    result.notes.append(
        f"prompt baseline: {p.shots}-shot, mode={mode}, "
        f"{'chat template' if prompter.use_chat else 'plain text'}, model {cfg.model.name}."
    )

    splits = _eval_splits(data)
    if not p.score_validation and "test" in splits:
        # Nothing is fitted, so validation scores select nothing: skip them to save time.
        splits = ["test"]
        result.notes.append("validation split not scored (prompting.score_validation=false).")
    for split in splits:
        frame = data[split]
        if p.max_examples is not None and len(frame) > p.max_examples:
            result.notes.append(
                f"{split}: scored the first {p.max_examples} of {len(frame)} rows "
                "(train.baseline.prompting.max_examples)."
            )
            frame = frame.iloc[: p.max_examples]
        frame = frame.reset_index(drop=True)
        rows = frame.to_dict("records")
        rendered = [prompter.render(row) for row in rows]
        if split == "test":
            _write_prompt_example(output_dir, result, rendered[0], prompter, mode)
        encoded = [lm.encode_prompt(text) for text in rendered]
        if mode == "score":
            _score_classification(cfg, lm, prompter, split, frame, encoded, result, output_dir)
        elif mode == "generate":
            _generate(cfg, lm, prompter, split, frame, encoded, result, output_dir)
        else:
            _score_preference(cfg, lm, prompter, split, frame, encoded, result, output_dir)
    if lm.seconds > 0:
        result.tokens_per_second = round(lm.tokens / lm.seconds, 1)


def _write_prompt_example(
    output_dir: Path, result: TrainResult, text: str, prompter: Prompter, mode: str
) -> None:
    lines = [text]
    if mode == "score":
        lines += ["", "---- scored continuations ----"]
        lines += [repr(prompter.continuation(prompter.verbal[lab])) for lab in prompter.labels]
    (output_dir / PROMPT_EXAMPLE_FILE).write_text("\n".join(lines), encoding="utf-8")
    result.artifacts["prompt_example"] = PROMPT_EXAMPLE_FILE


def _score_classification(cfg, lm: LM, prompter: Prompter, split, frame, encoded, result, out):
    # Length-normalised: each label is scored by the MEAN log-likelihood per token of its
    # verbalization. The plain sum charges a price for every extra token, so with
    # verbalizations of different token counts ("positive" = 1 token, "not sure" = 2) it
    # favours the shortest one regardless of the input; the mean compares like with like
    # and equals the sum when all verbalizations are one token long.
    labels = prompter.labels
    conts = [lm.encode_continuation(prompter.continuation(prompter.verbal[lab])) for lab in labels]
    _check_lengths(encoded, max(len(c) for c in conts), cfg, lm, split)
    scores = lm.choice_logprobs(encoded, conts, f"scoring {split}")
    n = len(labels)
    prior = [0.0] * n
    if cfg.train.baseline.prompting.calibrate:
        prior = _label_prior(lm, prompter, frame, conts)
        result.metrics[f"{split}_calibration_prior_spread"] = max(prior) - min(prior)
    predictions, best_scores, all_scores = [], [], []
    for row in scores:
        mean = [total / count - bias for (total, count), bias in zip(row, prior, strict=True)]
        best = max(range(n), key=lambda j: mean[j])  # first label wins a tie
        predictions.append(labels[best])
        best_scores.append(mean[best])
        all_scores.append(
            json.dumps({lab: round(s, 4) for lab, s in zip(labels, mean, strict=True)})
        )
    extra = {"score": best_scores, "label_scores": all_scores}
    _record_classification(result, split, frame, predictions, labels, out, extra)


# Inputs that carry no content: what the model answers for them is its label prior.
CONTENT_FREE = ("N/A", "", "[MASK]")


def _label_prior(lm: LM, prompter: Prompter, frame: pd.DataFrame, conts) -> list[float]:
    """Mean per-token log-likelihood of each label on content-free inputs (Zhao et al.,
    2021, "Calibrate Before Use"); subtracting it removes the model's bias to a label."""
    template = frame.iloc[0].to_dict()
    rows = [
        {**template, **{c: filler for c in ("text", "text_pair") if c in template}}
        for filler in CONTENT_FREE
    ]
    encoded = [lm.encode_prompt(prompter.render(row)) for row in rows]
    scores = lm.choice_logprobs(encoded, conts, "calibrating")
    return [sum(row[j][0] / row[j][1] for row in scores) / len(scores) for j in range(len(conts))]


def _generate(cfg, lm: LM, prompter: Prompter, split, frame, encoded, result, out):
    p = cfg.train.baseline.prompting
    _check_lengths(encoded, 0, cfg, lm, split)
    if lm.max_positions is not None:
        room = lm.max_positions - max(len(e) for e in encoded)
        if room < p.max_new_tokens:
            raise TrainingError(
                f"{split} prompts leave room for only {room} new tokens within the model's "
                f"{lm.max_positions} positions; lower train.baseline.prompting.max_new_tokens "
                f"(now {p.max_new_tokens}) or the shots."
            )
    answers = lm.generate(encoded, p.max_new_tokens, f"generating {split}")
    if cfg.data.task == "classification":  # generate mode on labels: read the label back
        predictions = [_match_label(a, prompter.verbal) for a in answers]
        invalid = sum(pred == "" for pred in predictions)
        result.metrics[f"{split}_invalid_rate"] = invalid / len(predictions)
        extra = {"generated": answers}
        _record_classification(result, split, frame, predictions, prompter.labels, out, extra)
        return
    references = frame["response"].astype(str).tolist()
    for name, value in evaluate.rouge_scores(answers, references).items():
        result.metrics[f"{split}_{name}"] = value
    if split == "test":
        per_example = [
            evaluate.rouge_scores([a], [r])["rougeL"]
            for a, r in zip(answers, references, strict=True)
        ]
        columns = {
            "input": frame["prompt"].astype(str).tolist(),
            "reference": references,
            "prediction": answers,
            "score": per_example,  # ROUGE-L F-measure of this answer
        }
        _save_predictions(result, frame, columns, out)


def _match_label(answer: str, verbal: dict[str, str]) -> str:
    """The label whose words appear earliest in a generated answer ("" when none does)."""
    text = answer.lower()
    found = [(text.find(words.lower()), -len(words), lab) for lab, words in verbal.items()]
    found = [f for f in found if f[0] >= 0]
    return min(found)[2] if found else ""


def _score_preference(cfg, lm: LM, prompter: Prompter, split, frame, encoded, result, out):
    # Length-normalised (mean log-likelihood per token), because chosen and rejected answers
    # differ in length and a summed log-likelihood mostly measures which one is shorter.
    # The summed version is reported too, as loglik_win_rate_sum.
    chosen = [lm.encode_continuation(prompter.continuation(str(t))) for t in frame["chosen"]]
    rejected = [lm.encode_continuation(prompter.continuation(str(t))) for t in frame["rejected"]]
    longest = max(max(len(c) for c in chosen), max(len(r) for r in rejected))
    _check_lengths(encoded, longest, cfg, lm, split)
    pairs = [(e, c) for e, c in zip(encoded, chosen, strict=True)]
    pairs += [(e, r) for e, r in zip(encoded, rejected, strict=True)]
    scores = lm.logprobs(pairs, f"scoring {split}")
    n = len(encoded)
    good, bad = scores[:n], scores[n:]
    margins = [g[0] / g[1] - b[0] / b[1] for g, b in zip(good, bad, strict=True)]
    sum_margins = [g[0] - b[0] for g, b in zip(good, bad, strict=True)]

    def win_rate(values: list[float]) -> float:  # a tie counts half
        return sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in values) / len(values)

    result.metrics[f"{split}_loglik_win_rate"] = win_rate(margins)
    result.metrics[f"{split}_loglik_win_rate_sum"] = win_rate(sum_margins)
    result.metrics[f"{split}_mean_loglik_margin"] = sum(margins) / n
    if split == "test":
        columns = {
            "input": frame["prompt"].astype(str).tolist(),
            "reference": frame["chosen"].astype(str).tolist(),
            "prediction": [
                c if m >= 0 else r
                for c, r, m in zip(frame["chosen"], frame["rejected"], margins, strict=True)
            ],
            "correct": [m > 0 for m in margins],
            "score": margins,  # mean log-likelihood per token: chosen minus rejected
        }
        _save_predictions(result, frame, columns, out)
