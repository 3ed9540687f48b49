"""Supervised fine-tuning of decoders through trl's ``SFTTrainer`` (full and adapter
methods on generation and chat data).

trl renders, tokenizes, masks, truncates, packs and collates; tunelab hands it rows in
trl's formats:

- generation with a chat template: conversational prompt/completion (the prompt as the
  user turn, the response as the assistant turn): the loss is on the completion only;
- generation without one: plain ``prompt + "\\n"`` / ``response`` (trl appends eos);
- chat: ``messages`` with ``assistant_only_loss``: the loss is on every assistant turn.
  trl needs ``{% generation %}`` markers in the template for that, and patches the
  templates of the model families it knows. For any other template (SmolLM2's ChatML, the
  tiny test models) tunelab finds the assistant spans itself, by rendering each prefix of
  the conversation (:func:`assistant_mask`), and gives trl token ids with that mask.

Evaluation generates the final answer of each test row from its prompt: the user turn
(generation) or the conversation before the last assistant turn (chat).

torch, transformers and trl are imported inside functions: the CLI imports this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tunelab.data import chat
from tunelab.errors import TrainingError
from tunelab.train import arguments, common

SPLITS = ("train", "validation", "test")


@dataclass
class SftData:
    """One split as trl rows, plus what generation-based evaluation needs."""

    rows: list[dict]  # trl format: prompt/completion, messages, or input_ids + assistant_masks
    prompts: list[list[int]]  # token ids greedy decoding starts from
    prompt_texts: list[str]  # the prompt as a person reads it (chat: the JSON conversation)
    references: list[str]  # the answer to compare generations with


def uses_trl_chat_masks(tokenizer) -> bool:
    """Whether trl can mask assistant turns itself: the template has generation markers or
    trl ships a training version of it."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return False
    if has_generation_markers(template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except ValueError:  # a template trl cannot patch
        return False


def split_data(job, frame: pd.DataFrame, split: str) -> SftData:
    """The split's trl rows and evaluation prompts (see the module doc)."""
    tokenizer = job.tokenizer
    if job.cfg.data.task == "chat":
        return _chat_data(job, frame, split)
    prompts = [str(p) for p in frame["prompt"]]
    responses = [str(r) for r in frame["response"]]
    if job.uses_chat_template:
        heads = [common.chat_prompt(tokenizer, p) for p in prompts]
        rows = [
            {
                "prompt": [{"role": "user", "content": p}],
                "completion": [{"role": "assistant", "content": r}],
            }
            for p, r in zip(prompts, responses, strict=True)
        ]
    else:
        heads = [f"{p}\n" for p in prompts]
        rows = [{"prompt": h, "completion": r} for h, r in zip(heads, responses, strict=True)]
    common.check_prompt_lengths(tokenizer, heads, job.cfg.model.max_length, where=split)
    # A chat template writes its own special tokens; plain text gets the tokenizer's (bos).
    ids = tokenizer(heads, add_special_tokens=not job.uses_chat_template)["input_ids"]
    return SftData(rows, [list(i) for i in ids], prompts, responses)


def _chat_data(job, frame: pd.DataFrame, split: str) -> SftData:
    tokenizer = job.tokenizer
    conversations = [chat.loads(text) for text in frame[chat.COLUMN]]
    for pos, messages in enumerate(conversations):
        if not messages or messages[-1]["role"] != "assistant":
            raise TrainingError(
                f"Conversation {pos + 1} of the {split} split does not end with an assistant "
                "turn, so there is nothing to learn or compare from it. The data gate "
                "refuses such rows: run `tunelab data prepare` on the config."
            )
    heads = [common.chat_prompt(tokenizer, m[:-1]) for m in conversations]
    common.check_prompt_lengths(tokenizer, heads, job.cfg.model.max_length, where=split)
    if job.trl_chat_masks:
        rows = [{"messages": m} for m in conversations]
    else:
        rows = [assistant_mask(tokenizer, m) for m in conversations]
    ids = tokenizer(heads, add_special_tokens=False)["input_ids"]
    return SftData(
        rows,
        [list(i) for i in ids],
        [chat.dumps(m[:-1]) for m in conversations],
        [m[-1]["content"] for m in conversations],
    )


def assistant_mask(tokenizer, messages: list[dict[str, str]]) -> dict[str, list[int]]:
    """Token ids of the conversation and a mask that is 1 on the assistant turns.

    Each assistant turn spans from the end of the rendering of the messages before it
    (with the generation prompt: the assistant header is context, not output) to the end
    of the rendering that includes it (its end-of-turn token included, so the model
    learns to stop). Works for any template that renders a conversation's prefixes as
    prefixes of its full rendering, and says so when a template does not.
    """
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = common.chat_prompt(tokenizer, messages[:i])
        end = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (full.startswith(start) and full.startswith(end) and len(end) >= len(start)):
            raise TrainingError(
                "The chat template of this model renders the start of a conversation "
                "differently from the whole conversation, so its assistant turns cannot be "
                "found for the loss mask. Use a model whose template appends turns, or one "
                "whose template has {% generation %} markers."
            )
        spans.append((len(start), len(end)))
    encoded = tokenizer(
        full, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False
    )
    mask = [
        int(any(lo <= a < hi for lo, hi in spans) and b > a) for a, b in encoded["offset_mapping"]
    ]
    return {"input_ids": list(encoded["input_ids"]), "assistant_masks": mask}


def make_trainer(job, model, output_dir: Path, device: common.DeviceChoice):
    """An SFTTrainer on the job's train (and validation) rows; fills job.features with the
    rows as trl prepared them (the test split too) and job.collate with its collator."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    cfg = job.cfg
    has_validation = bool(job.sft_data.get("validation") and job.sft_data["validation"].rows)
    args = arguments.training_arguments(
        cfg,
        output_dir,
        device,
        args_class=SFTConfig,
        has_validation=has_validation,
        max_length=cfg.model.max_length,
        packing=cfg.train.packing,
        eval_packing=False,  # validation loss per conversation, comparable across runs
        assistant_only_loss=cfg.data.task == "chat" and job.trl_chat_masks,
        completion_only_loss=None,  # trl: on for prompt/completion rows
        dataset_num_proc=None,
    )
    datasets = {
        split: Dataset.from_list(data.rows) for split, data in job.sft_data.items() if data.rows
    }
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets.get("validation") if has_validation else None,
        processing_class=job.tokenizer,
        callbacks=common.callbacks(),
    )
    job.features["train"] = trainer.train_dataset
    if has_validation:
        job.features["validation"] = trainer.eval_dataset
    if "test" in datasets:
        # Prepared exactly as trl prepares evaluation data (not packed).
        job.features["test"] = trainer._prepare_dataset(
            datasets["test"], job.tokenizer, args, False, None, "test"
        )
    job.collate = trainer.data_collator
    return trainer


def first_rows(dataset: Any, count: int) -> list[dict]:
    """The first ``count`` rows of a prepared split as dicts (a Dataset or a list)."""
    return [dataset[i] for i in range(min(count, len(dataset)))]
