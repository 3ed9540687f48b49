"""Token counting for the gate's length check and the dataset report.

Which tokenizer counts (:func:`for_config`): ``data.tokenizer`` when set, else the
tokenizer of ``model.name``, the model the data is prepared for; ``data.tokenizer:
whitespace`` asks for the whitespace estimate. A tokenizer that cannot be loaded (a hub
id while offline, a missing folder) falls back to the estimate, and the counter's
``fallback`` says why so the report and the command output can say so. Loads are
cached per process.

An example is counted as training frames it: a chat conversation whole, through the
tokenizer's chat template; a generation pair as a user turn and an assistant turn of
that template (plain text plus eos without one); a prompt of prompts data (GRPO) alone,
as the policy sees it before it answers: a user turn up to where the assistant's turn
starts (the prompt and a newline without a template), since the completion is generated
and bounded by the training config, not the data; special tokens included. Counts never
touch the data, so they never change a data version; they change the gate's outcome.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from tunelab.data import chat
from tunelab.data.schema import text_columns

log = logging.getLogger(__name__)

WHITESPACE = "whitespace"  # data.tokenizer value that asks for the estimate
WHITESPACE_LABEL = "whitespace tokens (approximation; no tokenizer)"
_REASON_CHARS = 240


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of one text (``count``) and of whole examples (``examples``)."""

    count: Callable[[str], int]  # one text on its own, no special tokens
    label: str  # what counted, for the report, the gate's messages and the results
    # (task, frame) -> tokens per row as training frames each example; None = the words
    # of every text column (of every turn, for chat) together.
    examples: Callable[[str, pd.DataFrame], list[int]] | None = None
    chat_template: bool = False  # whether examples go through a chat template
    fallback: str | None = None  # why the estimate stands in for the tokenizer asked for

    def example_lengths(self, task: str, frame: pd.DataFrame) -> pd.Series:
        """Tokens per row of ``frame`` (canonical columns), as the length check counts."""
        if self.examples is not None:
            counts = self.examples(task, frame)
        elif task == "chat":
            counts = [sum(self.count(t) for t in chat.contents(v)) for v in _column(frame, task)]
        else:
            columns = [c for c in text_columns(task, frame) if c in frame.columns]
            counts = [self.count(_joined(row)) for row in frame[columns].itertuples(index=False)]
        return pd.Series(counts, index=frame.index, dtype="int64")

    def framing(self, task: str) -> str:
        """How an example is counted, in words, for the gate's check text."""
        if self.examples is None:
            return "every turn's text together" if task == "chat" else "all text columns together"
        template = self.chat_template
        return {
            "chat": "the whole conversation"
            + (" through the chat template" if template else " as 'role: content' lines"),
            "generation": "prompt and response"
            + (" as a user and an assistant turn of the chat template" if template else ""),
            "preference": "the prompt with the longer response",
            "prompts": "the prompt alone"
            + (" as a user turn of the chat template, up to the assistant's" if template else ""),
            "classification": "text (and text_pair)",
        }[task] + ", special tokens included"


def whitespace_counter(fallback: str | None = None, why: str | None = None) -> TokenCounter:
    """The estimate: whitespace-separated words. ``why`` (short, in the label) and
    ``fallback`` (the whole reason) say why no tokenizer counts."""
    label = f"whitespace tokens (approximation; {why})" if why else WHITESPACE_LABEL
    return TokenCounter(
        count=lambda text: len(text.split()) if isinstance(text, str) else 0,
        label=label,
        fallback=fallback,
    )


def for_config(cfg) -> TokenCounter:
    """The counter of a run config: data.tokenizer, else model.name's tokenizer."""
    wanted = (cfg.data.tokenizer or cfg.model.name).strip()
    if wanted.lower() == WHITESPACE:
        return whitespace_counter()
    revision = cfg.model.revision if wanted == cfg.model.name.strip() else None
    return load_counter(wanted, revision, cfg.model.trust_remote_code)


@functools.lru_cache(maxsize=8)
def load_counter(reference: str, revision: str | None, trust_remote_code: bool) -> TokenCounter:
    """The counter of a model reference's tokenizer, or the estimate saying why not."""
    from tunelab import models
    from tunelab.errors import TunelabError

    try:
        resolved = models.resolve(reference, revision)
        tokenizer = models.load_tokenizer(resolved, trust_remote_code=trust_remote_code)
    except (TunelabError, OSError, ValueError, ImportError) as exc:
        reason = " ".join(str(exc).split())
        if len(reason) > _REASON_CHARS:
            reason = reason[: _REASON_CHARS - 3] + "..."
        why = f"the tokenizer of '{reference}' could not be loaded"
        fallback = f"{why}: {reason}"
        log.warning("Token lengths are whitespace estimates: %s", fallback)
        return whitespace_counter(fallback, why)
    return tokenizer_counter(tokenizer, reference, resolved.family)


def tokenizer_counter(tokenizer, name: str, family: str = "decoder") -> TokenCounter:
    """A counter over a loaded Hugging Face tokenizer (``name`` labels it)."""
    template = family == "decoder" and bool(getattr(tokenizer, "chat_template", None))

    def count(text: str) -> int:
        return len(_ids(tokenizer, text, False)) if isinstance(text, str) else 0

    def examples(task: str, frame: pd.DataFrame) -> list[int]:
        return _framed(tokenizer, family, template, task, frame)

    label = f"tokens of the '{name}' tokenizer"
    return TokenCounter(count, label, examples, chat_template=template)


# --- framing ---------------------------------------------------------------------------


def _framed(tokenizer, family: str, template: bool, task: str, frame: pd.DataFrame) -> list[int]:
    """Tokens per row, framed as training frames the task (features.py, preference.py)."""
    if task == "chat":
        return [_conversation(tokenizer, template, chat.parse(v)) for v in _column(frame, task)]
    if task == "classification":
        texts = _texts(frame, "text")
        pairs = _texts(frame, "text_pair") if "text_pair" in frame.columns else None
        if pairs is not None and family == "decoder":
            texts = [f"{t}\n{p}" if p else t for t, p in zip(texts, pairs, strict=True)]
            pairs = None
        if pairs is None:
            return [len(_ids(tokenizer, t, True)) for t in texts]
        return [len(_ids(tokenizer, t, True, p or None)) for t, p in zip(texts, pairs, strict=True)]
    prompts = _texts(frame, "prompt")
    if task == "prompts":
        return [_prompt(tokenizer, family, template, prompt) for prompt in prompts]
    if task == "generation":
        responses = [_texts(frame, "response")]
    else:  # preference: the longer of the two completions decides
        responses = [_texts(frame, "chosen"), _texts(frame, "rejected")]
    return [
        max(_pair(tokenizer, family, template, prompt, r[i]) for r in responses)
        for i, prompt in enumerate(prompts)
    ]


def _pair(tokenizer, family: str, template: bool, prompt: str, response: str) -> int:
    if family == "seq2seq":  # encoder input and labels are cut separately
        target = tokenizer(text_target=response)["input_ids"]
        return max(len(_ids(tokenizer, prompt, True)), len(target))
    if template:
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return _conversation(tokenizer, True, turns)
    eos = 1 if tokenizer.eos_token_id is not None else 0
    return len(_ids(tokenizer, f"{prompt}\n", True)) + len(_ids(tokenizer, response, False)) + eos


def _prompt(tokenizer, family: str, template: bool, prompt: str) -> int:
    """A prompt as a policy is given it: the user turn up to where its answer starts."""
    if template:
        turn = [{"role": "user", "content": prompt}]
        try:
            out = tokenizer.apply_chat_template(turn, tokenize=True, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a template that refuses one turn: count it plain
            pass
        else:
            return len(out["input_ids"] if isinstance(out, Mapping) else out)
    if family == "seq2seq":
        return len(_ids(tokenizer, prompt, True))
    return len(_ids(tokenizer, f"{prompt}\n", True))


def _conversation(tokenizer, template: bool, messages: list[chat.Message] | None) -> int:
    """A whole conversation through the chat template; 'role: content' lines without one.
    Rows that are not conversations count 0: the gate fails them on their format."""
    if messages is None:
        return 0
    if template:
        try:
            out = tokenizer.apply_chat_template(messages, tokenize=True)
        except Exception:  # noqa: BLE001 - templates may raise on turn order; the gate says why
            pass
        else:
            ids = out["input_ids"] if isinstance(out, Mapping) else out
            return len(ids)
    return len(_ids(tokenizer, chat.as_lines(messages), True))


def _ids(tokenizer, text: str, special: bool, pair: str | None = None) -> list[int]:
    return tokenizer(text, pair, add_special_tokens=special)["input_ids"]


def _texts(frame: pd.DataFrame, column: str) -> list[str]:
    values = frame[column] if column in frame.columns else pd.Series("", index=frame.index)
    return [v if isinstance(v, str) else "" for v in values]


def _column(frame: pd.DataFrame, task: str) -> pd.Series:
    if chat.COLUMN in frame.columns:
        return frame[chat.COLUMN]
    return pd.Series(None, index=frame.index, dtype=object)


def _joined(values) -> str:
    return "\n".join(v for v in values if isinstance(v, str) and v)
