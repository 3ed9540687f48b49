"""Zero/one/k-shot prompting of an instruct LM (train.method=baseline,
train.baseline.kind=prompt): no training at all.

- classification by scoring each label's verbalization (every prediction is a valid
  label; ``mode=generate`` reads the label back from a greedy answer instead);
- generation by greedy decoding (ROUGE); chat data the same way, the model answering the
  last assistant turn of each conversation from the turns before it;
- preference data by how often the model finds the chosen answer more likely than the
  rejected one (``loglik_win_rate``).

A :class:`Prompter` turns rows into prompts (pattern, verbalizer, demonstrations, chat
template); the model runs through the shared LM engine (engine.py). Like the other
baselines it evaluates on the test split (and validation when present), writes the test
predictions to ``predictions.parquet`` and ends with :func:`common.finish`.

torch and transformers are imported inside functions: the CLI imports this package.
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tunelab import evaluate
from tunelab.config import PromptingConfig, RunConfig
from tunelab.data import chat
from tunelab.errors import TrainingError
from tunelab.runs import PROMPT_EXAMPLE_FILE, TrainResult
from tunelab.train import engine as lm_engine
from tunelab.train.baseline import eval_splits, label_set, record_classification
from tunelab.train.common import (
    DeviceChoice,
    ResourceMeter,
    chat_prompt,
    finish,
    new_result,
    pick_device,
    save_predictions,
    show_progress,
)
from tunelab.train.engine import Engine

PATTERN_FIELDS = ("text", "text_pair", "prompt", "choices")
# The pattern when the config leaves it unset: a choice question for classification; for
# generation an instruction around the input, a summarise one when the inputs are bare
# conversations (DialogSum, SAMSum: nothing in them asks for anything); the prompt itself
# for preference data (scored, not answered).
CLASSIFICATION_PATTERN = "Classify the sentiment of this text as {choices}.\nText: {text}"
GENERATION_PATTERN = "Respond to the following.\n\n{prompt}"
SUMMARY_PATTERN = "Summarize this conversation in one or two sentences.\n\n{prompt}"
PROMPT_ONLY_PATTERN = "{prompt}"
# "Name: words" or "#Person1#: words": one speaker turn of a conversation.
SPEAKER_TURN = re.compile(r"^\s*#?[^\W\d][\w .'-]{0,30}#?\s*:\s")
VERBALIZER_KEY = "train.baseline.prompting.verbalizer"
PATTERN_KEY = "train.baseline.prompting.pattern"
# Inputs that carry no content: what the model answers for them is its label prior.
CONTENT_FREE = ("N/A", "", "[MASK]")


def train(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, data_version: str | None
) -> TrainResult:
    """Prompt ``cfg.model.name`` on the evaluation splits and score it; see the module doc."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = new_result(cfg, output_dir, data_version, method="baseline")
    device = pick_device(cfg)
    with ResourceMeter() as meter:
        run(cfg, data, output_dir, result, device)
    return finish(result, meter, device)


# ---------------------------------------------------------------- building prompts
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
        if self.task == "chat":
            return self._render_conversation(row)
        query = self.fill(self.fields(row))
        if self.use_chat:
            messages = []
            for demo_fields, answer in self.demos:
                messages.append({"role": "user", "content": self.fill(demo_fields)})
                messages.append({"role": "assistant", "content": answer})
            messages.append({"role": "user", "content": query})
            return chat_prompt(self.tokenizer, messages)
        parts = [f"{self.fill(f)}{self.joiner}{answer}" for f, answer in self.demos]
        return "\n\n".join([*parts, query])

    def _render_conversation(self, row: dict[str, Any]) -> str:
        """Demonstration conversations (with their answers), then this one up to its answer."""
        messages: list[dict[str, str]] = []
        for demo_fields, answer in self.demos:
            messages += chat.loads(demo_fields["prompt"])
            messages.append({"role": "assistant", "content": answer})
        messages += chat.loads(str(row["prompt"]))
        if self.use_chat:
            return chat_prompt(self.tokenizer, messages)
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])

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


def _default_pattern(
    p: PromptingConfig, task: str, prompts: list[str] | None = None
) -> tuple[str, str | None]:
    """The configured pattern, or the task's default when it is unset (generation: the
    summarise instruction when most ``prompts`` are bare conversations)."""
    if p.pattern is not None:
        return p.pattern, None
    if task == "chat":  # the conversation is the prompt
        return PROMPT_ONLY_PATTERN, None
    why = ""
    if task == "classification":
        default = CLASSIFICATION_PATTERN
    elif task == "generation" and prompts and is_conversations(prompts):
        default = SUMMARY_PATTERN
        why = " (most inputs are bare conversations, every line a speaker turn)"
    elif task == "generation":
        default = GENERATION_PATTERN
    else:
        default = PROMPT_ONLY_PATTERN
    return default, f"{PATTERN_KEY} unset: the {task} default {default!r} was used{why}."


def last_turn(frame: pd.DataFrame) -> pd.DataFrame:
    """Chat rows as prompt/response: the conversation before its last assistant turn (as
    JSON) and that turn's text, the answer generations are compared with."""
    conversations = [chat.loads(text) for text in frame[chat.COLUMN]]
    out = frame.drop(columns=[chat.COLUMN]).copy()
    out["prompt"] = [chat.dumps(m[:-1]) for m in conversations]
    out["response"] = [m[-1]["content"] if m else "" for m in conversations]
    return out


def is_conversations(prompts: list[str]) -> bool:
    """Whether most prompts are a conversation and nothing else: two or more lines, each a
    speaker turn, no line that asks for anything."""

    def bare(prompt: str) -> bool:
        lines = [line for line in str(prompt).splitlines() if line.strip()]
        return len(lines) >= 2 and all(SPEAKER_TURN.match(line) for line in lines)

    return sum(bare(p) for p in prompts) * 2 > len(prompts)


# ---------------------------------------------------------------- the model


def load_engine(cfg: RunConfig, device: DeviceChoice) -> tuple[Engine, int]:
    """The configured model in the LM engine, and its parameter count."""
    from tunelab import models

    resolved = models.resolve(cfg.model.name, cfg.model.revision)
    if resolved.family not in lm_engine.FAMILIES:
        raise TrainingError(
            f"train.baseline.kind=prompt needs a model that writes text (a decoder or seq2seq "
            f"model), but '{cfg.model.name}' is an {resolved.family}. Use e.g. "
            "model.name=smollm2-135m-instruct, or train.baseline.kind=tfidf."
        )
    lm = lm_engine.load(
        resolved,
        device,
        cfg.train.batch_size,
        trust_remote_code=cfg.model.trust_remote_code,
        progress=show_progress(),
    )
    return lm, sum(p.numel() for p in lm.model.parameters())


def _check_lengths(
    prompts: list[list[int]], reserve: int, cfg: RunConfig, lm: Engine, split: str
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


# ---------------------------------------------------------------- the runs


def run(
    cfg: RunConfig,
    data: dict[str, pd.DataFrame],
    output_dir: Path,
    result: TrainResult,
    device: DeviceChoice,
) -> None:
    p = cfg.train.baseline.prompting
    task = cfg.data.task
    if task == "chat":
        if p.pattern is not None:
            raise TrainingError(
                f"{PATTERN_KEY} does not apply to chat data: the conversation is the prompt. "
                "Remove it (a system turn in the data sets the model's instructions)."
            )
        data = {split: last_turn(frame) for split, frame in data.items()}
    prompts = [str(x) for f in data.values() if "prompt" in f.columns for x in f["prompt"]]
    pattern, note = _default_pattern(p, task, prompts)
    if note:
        result.notes.append(note)
    _check_pattern(pattern)
    labels = label_set(cfg, data) if task == "classification" else []
    verbal = _verbalizer(p, labels) if task == "classification" else {}
    lm, total = load_engine(cfg, device)
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
            "chat": lambda r: str(r["response"]),
            "preference": lambda r: str(r["chosen"]),
        }[task](row)
        prompter.demos.append((prompter.fields(row), answer))
    if demo_rows and "source_row" in train_frame.columns:
        rows = train_frame["source_row"].iloc[demo_rows].tolist()
        result.notes.append(f"{len(demo_rows)} demonstrations: train source_rows {rows}.")
    mode = p.mode
    if task != "classification":
        mode = "generate" if task in ("generation", "chat") else "loglik"
    result.notes.append(
        f"prompt baseline: {p.shots}-shot, mode={mode}, "
        f"{'chat template' if prompter.use_chat else 'plain text'}, model {cfg.model.name}."
    )

    splits = eval_splits(data)
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


def _score_classification(cfg, lm: Engine, prompter: Prompter, split, frame, encoded, result, out):
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
    record_classification(result, split, frame, predictions, labels, out, extra)


def _label_prior(lm: Engine, prompter: Prompter, frame: pd.DataFrame, conts) -> list[float]:
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


def _generate(cfg, lm: Engine, prompter: Prompter, split, frame, encoded, result, out):
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
        result.metrics[f"{split}_invalid_rate"] = evaluate.invalid_rate(predictions)
        extra = {"generated": answers}
        record_classification(result, split, frame, predictions, prompter.labels, out, extra)
        return
    references = frame["response"].astype(str).tolist()
    for name, value in evaluate.rouge_scores(answers, references).items():
        result.metrics[f"{split}_{name}"] = value
    if split == "test":
        per_example = evaluate.per_example_rouge(answers, references, "rougeL")
        columns = {
            "input": frame["prompt"].astype(str).tolist(),
            "reference": references,
            "prediction": answers,
            "score": per_example,  # ROUGE-L F-measure of this answer
        }
        save_predictions(pd.DataFrame(columns), out, result, source=frame)


def _match_label(answer: str, verbal: dict[str, str]) -> str:
    """The label whose words appear earliest in a generated answer ("" when none does)."""
    text = answer.lower()
    found = [(text.find(words.lower()), -len(words), lab) for lab, words in verbal.items()]
    found = [f for f in found if f[0] >= 0]
    return min(found)[2] if found else ""


def _score_preference(cfg, lm: Engine, prompter: Prompter, split, frame, encoded, result, out):
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
    for name, value in evaluate.loglik_margin_metrics(margins, sum_margins).items():
        result.metrics[f"{split}_{name}"] = value
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
        save_predictions(pd.DataFrame(columns), out, result, source=frame)
