"""A new project from a data file (`tunelab init`): the task and columns detected from the
data, a run config for one fine-tuning method and a milestone plan with its baselines.

Files are read with tunelab's own readers (data/sources.py) and mapped with its own
schema (data/schema.py), so what `init` detects is what `data prepare` will read. Every
choice is explained in YAML comments; every written file is loaded back with tunelab's
config and plan loaders before it replaces anything, so a written file is always valid.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from tunelab import config as config_mod
from tunelab.config import DataConfig
from tunelab.data import chat, schema, sources
from tunelab.errors import ConfigError, DataSchemaError, DataSourceError, TunelabError

TASKS = ("classification", "generation", "chat", "preference", "prompts")
# Tried in this order: the most specific column sets first (prompts alone: the least).
PRIORITY = ("preference", "chat", "generation", "classification", "prompts")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Source column names (lower case, '_' for spaces and '-') per role, most likely first.
TEXT_NAMES = _words(
    "text sentence review review_text content comment tweet body document utterance post "
    "message description title question query input"
)
# (text, text_pair) names of sentence-pair data.
PAIR_NAMES = tuple(
    tuple(pair.split("+"))
    for pair in _words(
        "text+text_pair sentence1+sentence2 premise+hypothesis question1+question2 "
        "text_a+text_b text1+text2 question+passage query+passage"
    )
)
LABEL_NAMES = _words(
    "label labels label_text class category sentiment target rating stars intent topic tag "
    "polarity emotion y"
)
PROMPT_NAMES = _words(
    "prompt instruction question input query context source article document dialogue dialog text"
)
# Names that say "a prompt to answer" on their own, without a response beside them.
PROMPTS_NAMES = _words("prompt query instruction question")
RESPONSE_NAMES = _words(
    "response output answer completion target summary reply highlights abstract answers"
)
# Names that say "the answer" even when the answers are short (yes/no, a number).
SURE_RESPONSE_NAMES = ("response", "output", "completion")
CHOSEN_NAMES = ("chosen", "preferred", "accepted", "chosen_response", "response_chosen")
REJECTED_NAMES = ("rejected", "dispreferred", "rejected_response", "response_rejected")
CHAT_NAMES = ("messages", "conversations", "conversation", "dialog", "chat", "turns")
# Role names seen in exported chats that the defaults (system/user/assistant, ShareGPT's
# human/gpt) do not know.
ROLE_GUESSES = dict(
    pair.split(":")
    for pair in _words(
        "bot:assistant ai:assistant model:assistant chatbot:assistant agent:assistant "
        "customer:user client:user prompter:user"
    )
)

MAX_LABELS = 50  # more distinct labels than this: likely not classes
LABEL_MAX_MEAN_CHARS = 40  # labels are short
SAMPLE = 200  # cells looked at to tell a conversation column
LENGTH_STEPS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048)

# One fine-tuning method per task that runs offline on a CPU (the bundled configs').
RECIPES: dict[str, dict] = {
    "classification": {
        "method": "lora",
        "model": "minilm-l6",
        "model_limit": 512,  # BERT position embeddings
        "train": {
            "method": "lora",
            "epochs": 4,
            "learning_rate": 5.0e-3,
            "batch_size": 16,
            "warmup_ratio": 0.1,
            "adapter": {"r": 8, "alpha": 16, "dropout": 0.1},
        },
        "metric": "macro_f1",
        "train_cap": 4000,
    },
    "generation": {
        "method": "lora",
        "model": "smollm2-135m-instruct",
        "model_limit": 2048,  # SmolLM2 reads 8192; longer is slow on a CPU
        "train": {
            "method": "lora",
            "epochs": 1,
            "learning_rate": 2.0e-4,
            "batch_size": 4,
            "adapter": {"r": 16, "alpha": 32, "dropout": 0.05},
        },
        "metric": "rougeL",
        "train_cap": 1000,
    },
    "preference": {
        "method": "dpo",
        "model": "smollm2-135m-instruct",
        "model_limit": 2048,
        "train": {
            "method": "dpo",
            "epochs": 1,
            "learning_rate": 1.0e-4,
            "batch_size": 4,
            "adapter": {"r": 16, "alpha": 32, "dropout": 0.05},
            "dpo": {"beta": 0.1, "loss_type": "sigmoid"},
        },
        "metric": "reward_accuracy",
        "train_cap": 1000,
    },
}
RECIPES["chat"] = {**RECIPES["generation"]}

# Gate thresholds for data as it comes (configs/examples/starter.yaml's values).
CHECKS = {"max_duplicate_rate": 0.1, "min_rows_per_class": 5, "max_imbalance_ratio": 20.0}
DEFAULT_MAX_CHARS = 4000  # the gate's default


@dataclass(frozen=True)
class ColumnProfile:
    """What a source column looks like, enough to tell its role."""

    name: str
    key: str  # lower case, '_' for spaces and '-': what the name tables hold
    filled: int  # non-empty cells
    distinct: int
    mean_chars: float
    numeric: bool  # every non-empty cell reads as a number
    conversation: bool  # most cells are lists of turns

    @property
    def label_like(self) -> bool:
        """Few, short, repeated values: classes rather than texts."""
        if self.conversation or not self.filled:
            return False
        few = self.distinct <= MAX_LABELS and self.distinct <= max(2, self.filled // 2)
        return few and self.mean_chars <= LABEL_MAX_MEAN_CHARS

    @property
    def text_like(self) -> bool:
        return bool(self.filled) and not (self.conversation or self.numeric or self.label_like)

    def describe(self) -> str:
        if self.conversation:
            return f"{self.name} (conversations)"
        kind = "numbers" if self.numeric else "text"
        return f"{self.name} ({kind}, {self.distinct} distinct, mean {self.mean_chars:.0f} chars)"


@dataclass(frozen=True)
class Reading:
    """One way to read the columns: a task and source column -> canonical column."""

    task: str
    roles: dict[str, str]  # canonical -> source column
    why: str
    guessed: tuple[str, ...] = ()  # roles filled from values or order, not names


@dataclass(frozen=True)
class Detection:
    """The task, the column mapping and what the data looks like, each with its reason."""

    source: str  # as the config will name it
    origin: str  # what the reader read (a file or a folder)
    task: str
    columns: dict[str, str]  # source column -> canonical (renames only)
    kept: list[str]  # source columns already named as tunelab names them
    unused: list[str]  # source columns the task does not use
    rows: int
    has_splits: bool  # the source has its own train/validation/test files
    why: str
    alternatives: list[str]  # other readings, each with the flag that picks it
    warnings: list[str]
    labels: list[str] | None = None
    label_counts: dict[str, int] = field(default_factory=dict)
    max_length: int = 256
    length_note: str = ""
    response_tokens: int = 64  # about the longest answer (generation, chat)
    longest_chars: int = 0
    duplicate_rows: int = 0
    empty_rows: int = 0
    leaked_rows: int = 0
    chat_roles: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InitResult:
    """What `tunelab init` wrote and what to run next."""

    config_path: Path
    milestone_path: Path
    detection: Detection
    method: str
    model: str
    baselines: list[str]
    next_commands: list[str]

    def to_dict(self) -> dict:
        """The result as plain JSON-able data (for `--json` output)."""
        det = self.detection
        return {
            "config": str(self.config_path),
            "milestone": str(self.milestone_path),
            "source": det.source,
            "rows": det.rows,
            "task": det.task,
            "columns": dict(det.columns),
            "labels": det.labels,
            "label_counts": dict(det.label_counts),
            "max_length": det.max_length,
            "method": self.method,
            "model": self.model,
            "baselines": list(self.baselines),
            "why": det.why,
            "alternatives": list(det.alternatives),
            "warnings": list(det.warnings),
            "next_commands": list(self.next_commands),
        }

    @property
    def summary(self) -> list[str]:
        """Lines for the CLI to print."""
        det = self.detection
        mapped = ", ".join(f"{canon} <- {src}" for src, canon in det.columns.items())
        named = ", ".join(det.kept)
        columns = "; ".join(p for p in (mapped, f"as named: {named}" if named else "") if p)
        lines = [f"{det.task} data in {det.origin} ({det.rows} rows): {columns}."]
        if det.labels:
            counts = ", ".join(f"{k}={det.label_counts.get(k, 0)}" for k in det.labels[:10])
            more = f", ... ({len(det.labels)} labels)" if len(det.labels) > 10 else ""
            lines.append(f"Labels: {counts}{more}.")
        lines.append(f"Why {det.task}: {det.why}")
        lines += [f"It could also be {alt}" for alt in det.alternatives]
        lines.append(
            f"Wrote {self.config_path} ({self.method} on {self.model}, max_length "
            f"{det.max_length}) and {self.milestone_path} "
            f"({', '.join([*self.baselines, self.method])})."
        )
        lines += [f"Warning: {w}" for w in det.warnings]
        what = (
            "the validation gate and the dataset report, no training",
            f"{self.method} on {self.model}: train, evaluate, register",
            "every method of the plan, compared on one review page",
        )
        width = max(len(command) for command in self.next_commands)
        lines.append("Next:")
        lines += [
            f"  {command.ljust(width)}  # {w}"
            for command, w in zip(self.next_commands, what, strict=True)
        ]
        return lines


# --- detection --------------------------------------------------------------------------


def detect(data: str | os.PathLike, task: str | None = None) -> Detection:
    """Read a data file (or folder, or bundled:/hf: source) with tunelab's readers and
    tell its task and columns; ``task`` forces the task. Raises DataSchemaError when the
    columns say nothing clear, listing them and the --task flag."""
    if task is not None and task not in TASKS:
        raise ConfigError(f"Unknown task '{task}'. Tasks: {', '.join(TASKS)}.")
    source = source_reference(data)
    if not source.startswith(("bundled:", "hf:")) and not Path(source).exists():
        raise DataSourceError(
            f"{data} does not exist. Pass a CSV, JSONL or Parquet file (or a folder of "
            "train/validation/test files), e.g. `tunelab init data/reviews.csv`."
        )
    raw = sources.read_source(DataConfig(source=source))
    frame = pd.concat(list(raw.frames.values()), ignore_index=True)
    profiles = [profile_column(frame, column) for column in frame.columns]
    found = {name: reading for name in PRIORITY if (reading := _reading(name, profiles, task))}
    chosen_task = task or next(iter(found), None)
    if chosen_task is None or chosen_task not in found:
        raise DataSchemaError(_refusal(raw.origin, profiles, task))
    reading = found[chosen_task]
    alternatives = [
        f"{name} ({_roles_text(other)}): pass --task {name}"
        for name, other in found.items()
        if name != chosen_task and task is None
    ]
    return _describe(source, raw, frame, profiles, reading, alternatives)


def source_reference(data: str | os.PathLike) -> str:
    """The source as a config names it: a path relative to the working directory (where
    tunelab reads it from) when it lies below it, else absolute; bundled:/hf: unchanged."""
    text = str(data)
    if text.startswith(("bundled:", "hf:")):
        return text
    path = Path(text).expanduser()
    if not path.exists():
        return text  # detect() says it is missing
    absolute = path.resolve()
    cwd = Path.cwd().resolve()
    return absolute.relative_to(cwd).as_posix() if absolute.is_relative_to(cwd) else str(absolute)


def profile_column(frame: pd.DataFrame, column: str) -> ColumnProfile:
    values = [v for v in frame[column].tolist() if not _empty(v)]
    texts = [v if isinstance(v, str) else json.dumps(v, default=str) for v in values]
    sample = values[:SAMPLE]
    conversations = sum(_is_conversation(v) for v in sample)
    return ColumnProfile(
        name=str(column),
        key=_key(column),
        filled=len(values),
        distinct=len(set(texts)),
        mean_chars=sum(len(t) for t in texts) / len(texts) if texts else 0.0,
        numeric=bool(texts) and all(_number(t) is not None for t in texts),
        conversation=bool(sample) and conversations >= 0.8 * len(sample),
    )


def _reading(task: str, profiles: list[ColumnProfile], forced: str | None) -> Reading | None:
    """How the columns read as ``task``, or None. Guesses from values or column order
    are made only when ``task`` was asked for, except a label told by its values."""
    asked = forced == task
    return {
        "preference": _preference,
        "chat": _chat,
        "generation": _generation,
        "classification": _classification,
        "prompts": _prompts,
    }[task](profiles, asked)


def _preference(profiles: list[ColumnProfile], asked: bool) -> Reading | None:
    chosen, rejected = _named(profiles, CHOSEN_NAMES), _named(profiles, REJECTED_NAMES)
    if not (chosen and rejected):
        return None
    rest = [p for p in profiles if p not in (chosen, rejected)]
    prompt = _named(rest, PROMPT_NAMES)
    guessed = ()
    if prompt is None:
        texts = [p for p in rest if p.text_like]
        if len(texts) != 1:
            return None
        prompt, guessed = texts[0], ("prompt",)
    why = (
        f"'{chosen.name}' and '{rejected.name}' hold a preferred and a dispreferred answer to "
        f"each '{prompt.name}': pairs to train a policy with DPO."
    )
    roles = {"prompt": prompt.name, "chosen": chosen.name, "rejected": rejected.name}
    return Reading("preference", roles, why, guessed)


def _chat(profiles: list[ColumnProfile], asked: bool) -> Reading | None:
    conversations = [p for p in profiles if p.conversation]
    if not conversations:
        return None
    best = _named(conversations, CHAT_NAMES) or conversations[0]
    why = (
        f"'{best.name}' holds conversations (lists of turns with a role and a text): "
        "multi-turn chat data, trained with the loss on every assistant turn."
    )
    return Reading("chat", {chat.COLUMN: best.name}, why)


def _generation(profiles: list[ColumnProfile], asked: bool) -> Reading | None:
    response = next(
        (
            p
            for name in RESPONSE_NAMES
            for p in profiles
            if p.key == name and (p.text_like or name in SURE_RESPONSE_NAMES)
        ),
        None,
    )
    rest = [p for p in profiles if p is not response and not p.conversation]
    prompt = _named(rest, PROMPT_NAMES)
    guessed: tuple[str, ...] = ()
    if (prompt is None or response is None) and asked:
        # Asked for generation: texts in file order stand in for the names.
        texts = [p for p in profiles if p.text_like and p not in (prompt, response)]
        if prompt is None and texts:
            prompt, guessed = texts.pop(0), (*guessed, "prompt")
        if response is None and texts:
            response, guessed = texts.pop(0), (*guessed, "response")
    if prompt is None or response is None:
        return None
    why = (
        f"'{prompt.name}' reads as an input and '{response.name}' as the text to write for "
        "it: prompt/response pairs for supervised fine-tuning (loss on the response only)."
    )
    return Reading("generation", {"prompt": prompt.name, "response": response.name}, why, guessed)


def _classification(profiles: list[ColumnProfile], asked: bool) -> Reading | None:
    usable = [p for p in profiles if not p.conversation]
    guessed: tuple[str, ...] = ()
    label = _named(usable, LABEL_NAMES)
    if label is None:
        # Few short repeated values: a label by its values; the fewest distinct ones win.
        candidates = sorted((p for p in usable if p.label_like), key=lambda p: p.distinct)
        if not candidates:
            return None
        label, guessed = candidates[0], ("label",)
    rest = [p for p in usable if p is not label]
    pair = next(
        (
            (first, second)
            for a, b in PAIR_NAMES
            if (first := _named(rest, (a,))) and (second := _named(rest, (b,)))
        ),
        None,
    )
    text, text_pair = pair if pair else (_named(rest, TEXT_NAMES), None)
    if text is None:
        texts = sorted((p for p in rest if p.text_like), key=lambda p: -p.mean_chars)
        if not texts:
            return None
        text, guessed = texts[0], (*guessed, "text")
    if guessed and not asked and "label" in guessed and "text" in guessed:
        return None  # neither column is named: too little to go on without --task
    roles = {"text": text.name, "label": label.name}
    if text_pair is not None:
        roles["text_pair"] = text_pair.name
    why = (
        f"'{label.name}' holds {label.distinct} distinct short values, classes of "
        f"'{text.name}'" + (f" paired with '{text_pair.name}'" if text_pair else "") + "."
    )
    return Reading("classification", roles, why, guessed)


def _prompts(profiles: list[ColumnProfile], asked: bool) -> Reading | None:
    """A prompt column and nothing that answers it: prompts for a policy to answer (GRPO).
    A response, chosen or rejected column makes it another task unless --task prompts."""
    usable = [p for p in profiles if not (p.conversation or p.numeric)]
    answers = (*RESPONSE_NAMES, *CHOSEN_NAMES, *REJECTED_NAMES)
    if not asked and any(p.key in answers and p.filled for p in usable):
        return None
    prompt = _named(usable, PROMPTS_NAMES if not asked else PROMPT_NAMES)
    guessed: tuple[str, ...] = ()
    if prompt is None and asked:
        texts = [p for p in usable if p.text_like]
        if texts:
            prompt, guessed = texts[0], ("prompt",)
    if prompt is None:
        return None
    why = (
        f"'{prompt.name}' holds prompts with no answer beside them: prompts for a policy "
        "to answer in reinforcement learning (GRPO), scored by rewards."
    )
    return Reading("prompts", {"prompt": prompt.name}, why, guessed)


def _named(profiles: list[ColumnProfile], names: tuple[str, ...]) -> ColumnProfile | None:
    """The column with the most likely name (the tables' order), if any."""
    return next((p for name in names for p in profiles if p.key == name and p.filled), None)


def _refusal(origin: str, profiles: list[ColumnProfile], task: str | None) -> str:
    columns = "; ".join(p.describe() for p in profiles)
    expected = {
        "classification": "a text column and a label column with few distinct values",
        "generation": "two text columns, an input and the text to write for it",
        "chat": "a column of conversations: lists of {role, content} (or ShareGPT "
        "{from, value}) turns, as lists in JSONL/Parquet or JSON text in a CSV cell",
        "preference": "chosen and rejected columns (the preferred and dispreferred answer) "
        "and one prompt column; whole conversations without a separate prompt need the "
        "shared beginning moved into a prompt column first",
        "prompts": "one text column of prompts (named e.g. prompt, query, instruction or question)",
    }
    if task:
        return (
            f"{origin}: cannot read the columns as {task} data: it needs {expected[task]}. "
            f"Columns found: {columns}. Rename the columns in the file, or pass another "
            f"--task ({', '.join(TASKS)})."
        )
    return (
        f"{origin}: cannot tell the task from the columns. Columns found: {columns}. Name "
        "them as tunelab does (text + label: classification; prompt + response: "
        "generation; messages: chat; prompt + chosen + rejected: preference; prompt alone: "
        "prompts), or pass "
        f"--task ({', '.join(TASKS)}), e.g. `tunelab init {origin} --task classification`."
    )


def _roles_text(reading: Reading) -> str:
    return ", ".join(f"{canon} <- '{src}'" for canon, src in reading.roles.items())


# --- what the data looks like -------------------------------------------------------------


def _describe(
    source: str,
    raw: sources.RawDataset,
    frame: pd.DataFrame,
    profiles: list[ColumnProfile],
    reading: Reading,
    alternatives: list[str],
) -> Detection:
    task = reading.task
    renames = {src: canon for canon, src in reading.roles.items() if src != canon}
    kept = [canon for canon, src in reading.roles.items() if src == canon]
    used = set(reading.roles.values())
    unused = [p.name for p in profiles if p.name not in used]
    warnings: list[str] = []
    if reading.guessed:
        warnings.append(
            f"{', '.join(reading.guessed)} guessed from the values and column order, not the "
            f"names ({_roles_text(reading)}): check data.columns."
        )
    roles = _chat_roles(frame[reading.roles[chat.COLUMN]], warnings) if task == "chat" else {}
    canonical = schema.to_canonical(
        frame, task, renames, where=raw.origin, chat_roles={**roles} or None
    )
    has_splits = set(raw.frames) != {sources.WHOLE}
    labels, counts = None, {}
    if task == "classification":
        labels, counts = _labels(canonical, reading.roles["label"], warnings)
    _warn_unused_context(profiles, reading, unused, warnings)
    max_length, length_note, response_tokens = _length(canonical, task, warnings)
    keys = schema.example_keys(canonical, task)
    duplicates = int((keys.duplicated() & (keys != "")).sum())
    return Detection(
        source=source,
        origin=raw.origin,
        task=task,
        columns=renames,
        kept=kept,
        unused=unused,
        rows=len(canonical),
        has_splits=has_splits,
        why=reading.why,
        alternatives=alternatives,
        warnings=warnings,
        labels=labels,
        label_counts=counts,
        max_length=max_length,
        length_note=length_note,
        response_tokens=response_tokens,
        longest_chars=_longest_chars(canonical, task),
        duplicate_rows=duplicates,
        empty_rows=_empty_rows(canonical, task),
        leaked_rows=_leaked_rows(raw, task, renames, roles) if has_splits else 0,
        chat_roles=roles,
    )


def _labels(
    canonical: pd.DataFrame, column: str, warnings: list[str]
) -> tuple[list[str] | None, dict[str, int]]:
    """The label set as the gate will see it (strings, trimmed), with its counts."""
    values = canonical["label"][canonical["label"].map(lambda v: not _empty(v))]
    counts = values.value_counts()
    numbers = [_number(str(v)) for v in counts.index]
    numeric = all(n is not None for n in numbers)
    order = sorted(counts.index, key=lambda v: (_number(str(v)), str(v)) if numeric else str(v))
    found = {str(v): int(counts[v]) for v in order}
    if numeric and (len(found) > 20 or any(n != int(n) for n in numbers if n is not None)):
        warnings.append(
            f"label '{column}' holds {len(found)} different numbers: a score to predict "
            "(regression) rather than classes, and tunelab classifies. Bin it into a few "
            "named classes in the file (e.g. 1-2 negative, 3 neutral, 4-5 positive)."
        )
    elif numeric:
        warnings.append(
            f"labels of '{column}' are numbers ({', '.join(found)}): each is a class of its "
            "own, their order is not used."
        )
    if len(found) > MAX_LABELS or len(found) > max(2, len(values) // 2):
        warnings.append(
            f"label '{column}' has {len(found)} distinct values in {len(values)} rows: more "
            "like free text or an id than classes. If it is the text to write, pass --task "
            "generation; data.labels is left unset."
        )
        return None, found
    rare = [k for k, n in found.items() if n < CHECKS["min_rows_per_class"]]
    if rare:
        warnings.append(
            f"label(s) {rare} have fewer than {CHECKS['min_rows_per_class']} rows: the gate's "
            "min_rows_per_class fails; add rows or merge or drop those classes."
        )
    if found and max(found.values()) / min(found.values()) > CHECKS["max_imbalance_ratio"]:
        warnings.append(
            f"the largest class is {max(found.values()) / min(found.values()):.0f} times the "
            f"smallest: the gate's max_imbalance_ratio ({CHECKS['max_imbalance_ratio']:g}) fails."
        )
    return list(found), found


def _warn_unused_context(
    profiles: list[ColumnProfile], reading: Reading, unused: list[str], warnings: list[str]
) -> None:
    """Alpaca-style data: an 'input' next to the 'instruction' is context the prompt lacks."""
    if reading.task not in ("generation", "preference", "prompts"):
        return
    extra = [p for p in profiles if p.name in unused and p.key in PROMPT_NAMES and p.filled]
    for p in extra:
        warnings.append(
            f"column '{p.name}' ({p.filled} non-empty cells) adds to the prompt "
            f"'{reading.roles['prompt']}', but a {reading.task} example has one prompt: "
            "join them into one column in the file, or that text is not trained on."
        )


def _chat_roles(column: pd.Series, warnings: list[str]) -> dict[str, str]:
    """data.chat.roles for role names the defaults do not know; unknown ones are warned."""
    known = chat.role_map()
    seen: set[str] = set()
    for value in column.tolist()[: SAMPLE * 5]:
        for turn in chat.parse(chat.canonical_cell(value)) or []:
            seen.add(turn["role"].strip().casefold())
    strange = sorted(seen - set(known))
    guessed = {role: ROLE_GUESSES[role] for role in strange if role in ROLE_GUESSES}
    unknown = [role for role in strange if role not in guessed]
    if unknown:
        warnings.append(
            f"turn roles {unknown} are not system/user/assistant: map them with "
            "data.chat.roles (e.g. {" + f"{unknown[0]}: assistant" + "}) or the gate fails."
        )
    return guessed


def _length(canonical: pd.DataFrame, task: str, warnings: list[str]) -> tuple[int, str, int]:
    """model.max_length covering about 98% of the examples' estimated tokens, the note
    that says so, and an estimate of the longest answers (new tokens to generate)."""
    estimates = _token_estimates(canonical, task)
    # Prompts have no starter recipe (see init_project); a decoder answers them, as in
    # generation.
    recipe = RECIPES.get(task, RECIPES["generation"])
    limit = recipe["model_limit"]
    if not estimates:
        return 256, "no examples to measure: the default", 64
    need = _quantile(estimates, 0.98)
    shortest = 64 if task == "classification" else 128  # decoders: room for the template
    fits = [step for step in LENGTH_STEPS if max(need, shortest) <= step <= limit]
    max_length = fits[0] if fits else limit
    note = (
        f"98% of examples are about {need} tokens or fewer (longest about {max(estimates)}; "
        "estimated from words and characters)"
    )
    if not fits:
        warnings.append(
            f"examples run to about {need} tokens, more than model.max_length {limit} that "
            f"suits {recipe['model']}: the longer ones are cut, and the gate's "
            "max_too_long_share may fail. Shorten them, or use a model that reads longer "
            "inputs on a GPU."
        )
    answers = _answer_estimates(canonical, task)
    response_tokens = min(256, max(32, _quantile(answers, 0.95))) if answers else 64
    return max_length, note, response_tokens


def _token_estimates(canonical: pd.DataFrame, task: str) -> list[int]:
    """Tokens per example as training frames it: subword tokens from words and characters,
    plus the special tokens and chat-template turns around them."""
    if task == "chat":
        return [
            # About 5 template tokens a turn and 20 for SmolLM2's default system turn.
            sum(_tokens(m["content"]) + 5 for m in messages) + 25
            for messages in map(chat.parse, canonical[chat.COLUMN])
            if messages
        ]
    if task == "preference":
        return [
            _tokens(p) + max(_tokens(c), _tokens(r)) + 30
            for p, c, r in canonical[["prompt", "chosen", "rejected"]].itertuples(index=False)
        ]
    columns = schema.text_columns(task, canonical)
    # [CLS] and [SEP]; a user and an assistant turn of the chat template (with its
    # default system turn).
    overhead = 3 if task == "classification" else 30
    return [sum(_tokens(v) for v in row) + overhead for row in canonical[columns].values]


def _answer_estimates(canonical: pd.DataFrame, task: str) -> list[int]:
    if task == "generation":
        return [_tokens(v) + 2 for v in canonical["response"]]
    if task == "chat":
        return [
            _tokens(messages[-1]["content"]) + 2
            for messages in map(chat.parse, canonical[chat.COLUMN])
            if messages
        ]
    return []


def _tokens(text: object) -> int:
    if not isinstance(text, str):
        return 0
    return math.ceil(max(len(text.split()) * 1.3, len(text) / 4))


def _quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return int(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)])


def _longest_chars(canonical: pd.DataFrame, task: str) -> int:
    if task == "chat":
        turns = [m["content"] for v in canonical[chat.COLUMN] for m in chat.parse(v) or []]
        return max((len(t) for t in turns), default=0)
    columns = schema.text_columns(task, canonical)
    return max((len(v) for c in columns for v in canonical[c] if isinstance(v, str)), default=0)


def _empty_rows(canonical: pd.DataFrame, task: str) -> int:
    if task == "chat":
        return int(canonical[chat.COLUMN].map(lambda v: chat.inspect(v).empty or _empty(v)).sum())
    columns = schema.columns_for(task, canonical)
    return int(canonical[columns].map(_empty).any(axis=1).sum())


def _leaked_rows(
    raw: sources.RawDataset, task: str, renames: dict[str, str], roles: dict[str, str]
) -> int:
    """Train examples (distinct) also in a held-out split of the source's own files."""
    keys = {
        split: set(
            schema.example_keys(
                schema.to_canonical(frame, task, renames, raw.origin, chat_roles=roles or None),
                task,
            )
        )
        for split, frame in raw.frames.items()
    }
    train = keys.get("train", set())
    held_out = set().union(*(k for split, k in keys.items() if split != "train"))
    return len((train & held_out) - {""})


# --- writing ------------------------------------------------------------------------------


def default_name(data: str | os.PathLike) -> str:
    """A dataset name from the file name: lower case, letters, digits, '-' and '_'."""
    text = str(data)
    stem = text.split(":", 1)[1].split("/")[-1] if text.startswith(("bundled:", "hf:")) else ""
    stem = stem or Path(text).stem
    name = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")
    return name or "dataset"


def init_project(
    data: str | os.PathLike,
    name: str | None = None,
    task: str | None = None,
    out: str | os.PathLike = ".",
    force: bool = False,
) -> InitResult:
    """Detect the data's task and columns and write a run config and a milestone plan
    into ``out``; existing files are replaced only with ``force``."""
    name = name or default_name(data)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise ConfigError(
            f"--name '{name}' is not a dataset name: use lower-case letters, digits, '-' and "
            "'_', starting with a letter or digit (it becomes a folder under data/)."
        )
    out = Path(out)
    det = detect(data, task)
    if det.task not in RECIPES:
        raise ConfigError(_no_recipe(det))
    recipe = RECIPES[det.task]
    config_path = out / f"{name}-{recipe['method']}.yaml"
    milestone_path = out / f"{name}-milestone.yaml"
    _refuse_existing([config_path, milestone_path], force)
    baselines = [method for method, _ in baseline_entries(det)]
    next_commands = [
        f"tunelab data prepare {config_path}",
        f"tunelab train {config_path}",
        f"tunelab run {milestone_path}",
    ]
    texts = {
        config_path: render_config(det, name, next_commands),
        milestone_path: render_milestone(det, name, config_path.name),
    }
    _write_checked(texts, config_path, milestone_path)
    return InitResult(
        config_path,
        milestone_path,
        det,
        recipe["method"],
        recipe["model"],
        list(baselines),
        next_commands,
    )


def _no_recipe(det: Detection) -> str:
    """Why init writes nothing for a task it detects but has no starter recipe for."""
    columns = f" and data.columns: {_y(det.columns)}" if det.columns else ""
    return (
        f"{det.origin}: read as {det.task} data ({_roles_text_of(det)}), but `tunelab init` "
        f"writes no run config for {det.task} data: a GRPO run needs train.grpo.rewards (what "
        "to reward), which the data cannot tell. Copy configs/prompts.yaml, set "
        f"data.name, data.source: {det.source}{columns}, then `tunelab data prepare` it; "
        "add train.method: grpo and train.grpo.rewards to train on it."
    )


def _roles_text_of(det: Detection) -> str:
    kept = [f"{name} <- '{name}'" for name in det.kept]
    mapped = [f"{canon} <- '{src}'" for src, canon in det.columns.items()]
    return ", ".join([*mapped, *kept])


def _refuse_existing(paths: list[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: tunelab "
            "init does not overwrite files. Pass --force to replace "
            f"{'it' if len(existing) == 1 else 'them'}, or choose --out DIR or --name NAME."
        )


def _write_checked(texts: dict[Path, str], config_path: Path, milestone_path: Path) -> None:
    """Write into a scratch folder next to the targets, load the files there with tunelab's
    loaders (and read the data through the config), then move them into place."""
    from tunelab.pipeline import plan as plan_mod

    out = config_path.parent
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tunelab-init-", dir=out))
    try:
        for path, text in texts.items():
            (scratch / path.name).write_text(text, encoding="utf-8")
        try:
            cfg = config_mod.load(scratch / config_path.name)
            plan_mod.load_plan(scratch / milestone_path.name)
        except TunelabError as exc:
            raise ConfigError(
                f"tunelab init made an invalid file (a bug in tunelab; please report it with "
                f"your data's column names): {exc}"
            ) from None
        sources.ingest(cfg.data)  # the columns and labels map as written
        for path in texts:
            os.replace(scratch / path.name, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def baseline_entries(det: Detection) -> list[tuple[str, list[str]]]:
    """The task's baselines: (method name, overrides of the run config) for the plan. A
    preference policy has none: its reference policy is the baseline the gate uses."""
    if det.task == "classification":
        return [
            ("majority", ["train.method=baseline", "train.baseline.kind=majority"]),
            ("tfidf", ["train.method=baseline", "train.baseline.kind=tfidf"]),
        ]
    if det.task == "preference":
        return []
    zeroshot = [
        "train.method=baseline",
        "train.baseline.kind=prompt",
        "train.baseline.prompting.mode=generate",
        f"train.baseline.prompting.max_new_tokens={det.response_tokens}",
        # Prompting fits nothing: only the test scores compare methods.
        "train.baseline.prompting.score_validation=false",
    ]
    return [("zeroshot", zeroshot)]


def render_config(det: Detection, name: str, next_commands: list[str]) -> str:
    """The run config as YAML text, every choice explained in a comment."""
    recipe = RECIPES[det.task]
    lines = _header(det, name, next_commands)
    lines.append("data:")
    lines += _item("name", name, "folder under data/, report and experiment name", 2)
    lines += _item("task", det.task, det.why, 2)
    lines += _item(
        "source",
        det.source,
        "read from the directory you run tunelab in; a folder of "
        "train/validation/test files works too",
        2,
    )
    lines += _columns(det)
    if det.labels is not None:
        counts = ", ".join(f"{k}={n}" for k, n in det.label_counts.items())
        lines += _item(
            "labels",
            det.labels,
            f"rows per label in the file: {counts}. A label outside this list fails the gate",
            2,
        )
    lines += _splits(det)
    cap = recipe["train_cap"]
    if det.rows * 0.8 > cap:
        lines += _item(
            "max_rows",
            {"train": cap},
            f"a first run that fits a CPU ({det.rows} rows in the "
            "file); validation and test stay whole. Remove it on a GPU",
            2,
        )
    lines += _item("seed", 13, "seeds sampling and the split", 2)
    if det.task == "preference":
        lines += _item(
            "truncation",
            "keep_end",
            "a prompt longer than model.max_length keeps its last "
            "tokens (the latest turns); drop leaves such pairs out",
            2,
        )
    if det.chat_roles:
        lines += ["  chat:"]
        lines += _item(
            "roles", det.chat_roles, "role names of your file that mean user or assistant", 4
        )
    lines += _clean(det)
    lines += _checks(det)
    lines.append("model:")
    lines += _item("name", recipe["model"], _model_why(det.task), 2)
    lines += _item("max_length", det.max_length, det.length_note, 2)
    lines.append("train:")
    lines += _comment(_method_why(det.task), 2)
    for key, value in recipe["train"].items():
        lines += _item(key, value, _TRAIN_NOTES.get(key, ""), 2)
    lines.append("eval:")
    lines += _item("primary_metric", recipe["metric"], _METRIC_WHY[det.task], 2)
    return "\n".join(lines) + "\n"


def render_milestone(det: Detection, name: str, config_name: str) -> str:
    """The milestone plan: the baselines and the fine-tuning method on one data version."""
    recipe = RECIPES[det.task]
    lines = _wrap(
        f"Milestone plan for '{name}', written by `tunelab init`: "
        + {
            "classification": "the majority class and TF-IDF + logistic regression are the "
            "floor that LoRA on MiniLM must beat, on the same frozen test split.",
            "generation": "SmolLM2 answering zero-shot (no training) is what LoRA SFT must beat.",
            "chat": "SmolLM2 answering the last turn zero-shot (no training) is what LoRA "
            "chat SFT must beat.",
            "preference": "DPO's baseline is implicit: the untrained reference policy (reward "
            "accuracy 0.5), which the gate requires it to beat by registry.min_improvement. "
            "To start DPO from an SFT run, list that method first and give dpo "
            "`init_from: DATASET/METHOD` (configs/milestone.yaml does).",
        }[det.task],
        "# ",
    )
    entries = baseline_entries(det)
    lines += _wrap(
        f"Every method starts from {config_name}, so all train on its one data section "
        "(one data version) and the gate counts tokens with its model's tokenizer"
        + ("; `set:` says what a baseline changes" if entries else "")
        + ". Run it with `tunelab run` and this file's path.",
        "# ",
    )
    title = f"{name}: " + ("baselines and " if entries else "") + recipe["method"]
    lines += [f"title: {_y(title)}", "datasets:", f"  {_y(name)}:"]
    for method, overrides in entries:
        line = f"    {method}: {_y({'config': config_name, 'set': overrides})}"
        if len(line) > 100:  # one override a line
            line = f"    {method}:\n      config: {_y(config_name)}\n      set:\n" + "\n".join(
                f"        - {_y(item)}" for item in overrides
            )
        lines.append(line)
    lines.append(f"    {recipe['method']}: {_y({'config': config_name})}")
    return "\n".join(lines) + "\n"


def _header(det: Detection, name: str, next_commands: list[str]) -> list[str]:
    recipe = RECIPES[det.task]
    text = [
        f"Run config for '{name}', written by `tunelab init` from {det.origin} ({det.rows} "
        f"rows): {recipe['method']} on {recipe['model']}, offline on a CPU.",
    ]
    if det.alternatives:
        text.append("It could also be " + "; or ".join(det.alternatives) + ".")
    text += [f"Check: {w}" for w in det.warnings]
    lines = [line for part in text for line in _wrap(part, "# ")]
    what = ("the gate and the dataset report", "train, evaluate, register", "with the baselines")
    width = max(len(command) for command in next_commands)
    lines.append("# Next:")
    lines += [
        f"#   {command.ljust(width)}  # {w}" for command, w in zip(next_commands, what, strict=True)
    ]
    return lines


def _columns(det: Detection) -> list[str]:
    lines: list[str] = []
    if det.columns:
        lines += _item("columns", det.columns, "your column -> tunelab's name for it", 2)
    if det.kept:
        lines += _comment(f"Already named as tunelab names them: {', '.join(det.kept)}.", 2)
    if det.unused:
        lines += _comment(f"Not used by {det.task} data: {', '.join(det.unused)}.", 2)
    return lines


def _splits(det: Detection) -> list[str]:
    if det.has_splits:
        return _comment(
            "The source's own train/validation/test files are kept as the splits (a missing "
            "one is carved from train by `splits`).",
            2,
        )
    if det.rows < 500:
        fractions = {"train": 0.7, "validation": 0.15, "test": 0.15}
        why = f"{det.rows} rows: larger held-out shares so the test split can tell methods apart"
    else:
        fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
        why = "one file: seeded split" + (", stratified by label" if det.labels else "")
    return _item("splits", fractions, why, 2)


def _clean(det: Detection) -> list[str]:
    lines = ["  clean:  # a recorded cleaning policy, run before the gate; the report lists drops"]
    lines += _item(
        "drop_empty",
        det.empty_rows > 0,
        f"{det.empty_rows} row(s) with an empty "
        + ("conversation or turn" if det.task == "chat" else "cell in a used column")
        + (" are dropped instead of failing the gate" if det.empty_rows else ""),
        4,
    )
    rate = det.duplicate_rows / det.rows if det.rows else 0.0
    lines += _item(
        "drop_duplicates",
        rate > CHECKS["max_duplicate_rate"],
        f"{det.duplicate_rows} row(s) repeat an earlier example ({rate:.1%}); repeats always "
        "land in the same split",
        4,
    )
    lines += _item(
        "drop_leaked",
        "train" if det.leaked_rows else None,
        f"{det.leaked_rows} train example(s) also in your validation/test files"
        if det.has_splits
        else "one file: a repeat never lands in two splits",
        4,
    )
    return lines


def _checks(det: Detection) -> list[str]:
    lines = ["  checks:  # the validation gate; starter values for data as it comes"]
    max_chars = max(DEFAULT_MAX_CHARS, math.ceil(det.longest_chars / 1000) * 1000)
    what = "turn" if det.task == "chat" else "text"
    lines += _item(
        "max_chars",
        max_chars,
        f"longest {what} in the file: {det.longest_chars} characters; "
        "guards against rows merged by broken CSV quoting",
        4,
    )
    lines += _item(
        "max_duplicate_rate",
        CHECKS["max_duplicate_rate"],
        "share of repeated examples allowed (strict: 0.0)",
        4,
    )
    if det.task == "classification":
        lines += _item(
            "min_rows_per_class",
            CHECKS["min_rows_per_class"],
            "fewer rows of a label cannot be learned or measured",
            4,
        )
        lines += _item(
            "max_imbalance_ratio",
            CHECKS["max_imbalance_ratio"],
            "largest / smallest class (strict bundled value 1.5)",
            4,
        )
    lines += _item(
        "max_too_long_share",
        0.05,
        "examples longer than model.max_length, counted with the model's tokenizer",
        4,
    )
    return lines


def _model_why(task: str) -> str:
    if task == "classification":
        return (
            "all-MiniLM-L6-v2, a 22.7M-parameter encoder bundled offline: a classification "
            "head plus LoRA trains in minutes on a CPU. On a GPU or with the hub, any "
            "encoder works, e.g. a local folder or FacebookAI/roberta-base"
        )
    return (
        "SmolLM2-135M-Instruct, bundled offline, with a chat template: small enough to "
        "train on a CPU. On a GPU or with the hub, any instruct decoder works, e.g. "
        "Qwen/Qwen2.5-0.5B-Instruct; above 1B add model.quantization: 4bit (QLoRA, CUDA)"
    )


def _method_why(task: str) -> str:
    if task == "preference":
        return (
            "DPO with a LoRA adapter: the reference policy is the model with the adapter "
            "off, so one copy of the weights is in memory. On a GPU raise batch_size; "
            "precision picks bf16 there by itself."
        )
    return (
        "LoRA: a few trainable parameters on the frozen model, fast on a CPU and merged "
        "into a full model after training. On a GPU raise batch_size (precision picks bf16 "
        "there by itself); method: full trains every weight."
    )


_TRAIN_NOTES = {
    "epochs": "passes over train",
    "learning_rate": "LoRA takes a higher rate than full fine-tuning",
    "batch_size": "examples per step; raise it on a GPU",
    "warmup_ratio": "share of steps warming up",
    "adapter": "rank, scaling and dropout of the LoRA matrices",
    "dpo": "beta: how far the policy may move from the reference",
}
_METRIC_WHY = {
    "classification": "macro-F1 weighs every class alike, whatever its size",
    "generation": "ROUGE-L of the generated response against yours",
    "chat": "ROUGE-L of the generated last assistant turn against yours",
    "preference": "share of held-out pairs where the policy prefers chosen over rejected",
}


# --- YAML text ----------------------------------------------------------------------------


def _item(key: str, value: object, note: str, indent: int) -> list[str]:
    """``key: value  # note``, the note moved above the line when the line gets long."""
    line = f"{' ' * indent}{key}: {_y(value)}"
    if not note:
        return [line]
    inline = f"{line}  # {note}"
    if len(inline) <= 100:
        return [inline]
    sentence = note[0].upper() + note[1:] + ("" if note.endswith(".") else ".")
    return [*_comment(sentence, indent), line]


def _comment(text: str, indent: int) -> list[str]:
    return _wrap(text, " " * indent + "# ")


def _wrap(text: str, prefix: str) -> list[str]:
    lines = textwrap.wrap(
        text,
        width=100,
        initial_indent=prefix,
        subsequent_indent=prefix,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return lines or [prefix.rstrip()]


def _y(value: object) -> str:
    """One YAML value on one line (flow style)."""
    text = yaml.safe_dump(
        value, default_flow_style=True, width=10**9, allow_unicode=True, sort_keys=False
    )
    return text.removesuffix("\n").removesuffix("\n...").strip()


# --- cells ------------------------------------------------------------------------------


def _key(name: object) -> str:
    return re.sub(r"[\s-]+", "_", str(name).strip().lower())


def _empty(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | dict):
        return not value
    if getattr(value, "ndim", 0):  # an array (a Parquet list column)
        return value.size == 0
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _is_conversation(value: object) -> bool:
    """A list of turns that tunelab's chat reader maps to {role, content} objects."""
    if not isinstance(value, str | list | tuple) and not hasattr(value, "tolist"):
        return False
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return False
    messages = chat.parse(chat.canonical_cell(value))
    return bool(messages)
