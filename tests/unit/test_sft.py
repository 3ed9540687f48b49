"""Supervised fine-tuning through trl's SFTTrainer: which tokens carry the loss (the
response of a prompt/response pair, every assistant turn of a conversation, never the
padding), the same mask from trl's template markers and from tunelab's prefix rendering,
packing, and a chat run that learns and is scored on its last assistant turn.

Tiny random models and a few dozen rows: every run takes seconds on a CPU.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from echo_words import WORDS, echo_frame

from tunelab import config
from tunelab.data import chat
from tunelab.errors import TrainingError
from tunelab.train import common, features, finetune, sft
from tunelab.train import train as run_training
from tunelab.workspace import Workspace


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("TUNELAB_PROGRESS", "0")
    monkeypatch.setattr(finetune, "MAX_NEW_TOKENS", 8)


def cfg_for(model: str, task: str, *extra: str):
    return config.load(
        None,
        [
            "train.method=full",
            f"model.name={model}",
            "model.max_length=96",
            f"data.name={task}-test",
            f"data.task={task}",
            "train.batch_size=4",
            "train.logging_steps=1",
            *extra,
        ],
    )


def echo_data(train: int = 16) -> dict:
    frame = echo_frame()
    return {
        "train": frame.iloc[:train].reset_index(drop=True),
        "validation": frame.iloc[train : train + 2].reset_index(drop=True),
        "test": frame.iloc[train:].reset_index(drop=True),
    }


def conversation(word: str, system: bool = False) -> list[dict[str, str]]:
    """Two user turns, two assistant turns: the second answer repeats the word twice."""
    turns = [
        {"role": "user", "content": f"Remember the word {word}."},
        {"role": "assistant", "content": f"Noted: {word}."},
        {"role": "user", "content": "Say it twice."},
        {"role": "assistant", "content": f"{word} {word}"},
    ]
    return ([{"role": "system", "content": "Be brief."}] if system else []) + turns


def chat_data() -> dict:
    def frame(words: list[str]) -> pd.DataFrame:
        texts = [chat.dumps(conversation(w, system=i % 3 == 0)) for i, w in enumerate(words)]
        return pd.DataFrame({chat.COLUMN: texts})

    return {
        "train": frame(WORDS[:16]),
        "validation": frame(WORDS[16:18]),
        "test": frame(WORDS[16:]),
    }


def built(cfg, data, tmp_path):
    """The job and its SFTTrainer (features prepared by trl), without training."""
    job = features.prepare(cfg, data)
    model = finetune.load_model(job)
    device = common.pick_device(cfg)
    trainer = finetune.make_trainer(job, model, tmp_path, device)
    return job, trainer


def collated(job, split: str, count: int = 4):
    rows = sft.first_rows(job.features[split], count)
    return rows, job.collate(rows)


def trained_spans(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of tokens that carry the loss."""
    spans, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


# ---------------------------------------------------------------- prompt/response pairs


def test_loss_is_on_the_response_only_in_the_chat_template(tmp_path):
    data = echo_data()
    job, _ = built(cfg_for("tiny-llama", "generation"), data, tmp_path)
    assert job.kind == "causal" and job.uses_chat_template
    rows, batch = collated(job, "train")
    width = batch["input_ids"].shape[1]
    for i, row in enumerate(rows):
        n, p = len(row["input_ids"]), len(job.prompts["train"][i])
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        assert ids[:p] == job.prompts["train"][i]  # training sees what generation is fed
        assert labels[:p] == [-100] * p  # the prompt
        assert labels[p:n] == ids[p:n]  # the response and its end of turn
        assert labels[n:] == [-100] * (width - n)  # padding
        prompt_text = job.tokenizer.decode(ids[:p])
        assert data["train"]["prompt"][i] in prompt_text
        assert prompt_text.endswith("<|assistant|>\n")
        assert job.tokenizer.decode(ids[p:n]) == f"{data['train']['response'][i]}</s>\n"


def test_plain_text_without_a_chat_template_ends_with_eos(tmp_path):
    job, _ = built(cfg_for("tiny-gpt2", "generation"), echo_data(), tmp_path)
    assert not job.uses_chat_template
    tokenizer = job.tokenizer
    row, prompt_ids = job.features["train"][0], job.prompts["train"][0]
    assert tokenizer.decode(prompt_ids) == "Repeat the word: apple\n"
    assert row["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(row["input_ids"][len(prompt_ids) :]) == "apple<|endoftext|>"
    assert row["labels"][: len(prompt_ids)] == [-100] * len(prompt_ids)
    assert row["labels"][len(prompt_ids) :] == row["input_ids"][len(prompt_ids) :]


# ---------------------------------------------------------------- conversations


def test_loss_is_on_every_assistant_turn_of_a_conversation(tmp_path):
    data = chat_data()
    job, _ = built(cfg_for("tiny-llama", "chat"), data, tmp_path)
    assert not job.trl_chat_masks  # the tiny template has no generation markers
    rows, batch = collated(job, "train")
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids, labels = batch["input_ids"][i].tolist()[:n], batch["labels"][i].tolist()[:n]
        word = WORDS[i]
        # Both answers with their end-of-turn token; no user or system text.
        assert trained_spans(job.tokenizer, ids, labels) == [
            f"Noted: {word}.</s>\n",
            f"{word} {word}</s>\n",
        ]
        assert batch["labels"][i].tolist()[n:] == [-100] * (batch["labels"].shape[1] - n)


def test_trl_template_markers_and_prefix_rendering_give_the_same_mask(tmp_path):
    """A template with {% generation %} markers lets trl mask the turns; the same template
    without them goes through tunelab's prefix rendering: the labels must be equal."""
    from tunelab.models import tiny

    marked = tiny.TINY_CHAT_TEMPLATE.replace(
        "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}",
        "{{ '<|' + message['role'] + '|>\\n' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}"
        "{{ message['content'] + eos_token + '\\n' }}{% endgeneration %}"
        "{% else %}{{ message['content'] + eos_token + '\\n' }}{% endif %}",
    )
    assert marked != tiny.TINY_CHAT_TEMPLATE
    cfg, data = cfg_for("tiny-llama", "chat"), chat_data()
    plain_job, _ = built(cfg, data, tmp_path / "plain")
    job = features.prepare(cfg, data)
    job.tokenizer.chat_template = marked
    job.trl_chat_masks = sft.uses_trl_chat_masks(job.tokenizer)
    assert job.trl_chat_masks
    job.sft_data = {split: sft.split_data(job, f, split) for split, f in job.frames.items()}
    finetune.make_trainer(job, finetune.load_model(job), tmp_path / "marked", plain_job_device())
    for split in ("train", "test"):
        ours = [(r["input_ids"], r["labels"]) for r in plain_job.features[split]]
        trls = [(r["input_ids"], r["labels"]) for r in job.features[split]]
        assert ours == trls


def plain_job_device():
    return common.DeviceChoice("cpu", "fp32")


def test_a_template_that_rewrites_earlier_turns_is_refused():
    class Rewriting:
        """Renders the last message in capitals: prefixes are not prefixes."""

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
            parts = [f"{m['role']}: {m['content']}" for m in messages]
            if parts:
                parts[-1] = parts[-1].upper()
            return "\n".join(parts) + ("\nassistant: " if add_generation_prompt else "")

    with pytest.raises(TrainingError, match="cannot be found for the loss mask"):
        sft.assistant_mask(Rewriting(), conversation("apple"))


def test_chat_needs_a_decoder_with_a_chat_template(tmp_path):
    with pytest.raises(TrainingError, match="no chat template"):
        features.prepare(cfg_for("tiny-gpt2", "chat"), chat_data())
    with pytest.raises(TrainingError, match="needs a decoder"):
        features.prepare(cfg_for("tiny-t5", "chat"), chat_data())


def test_chat_sft_learns_and_is_scored_on_the_last_assistant_turn(tmp_path):
    cfg = cfg_for("tiny-llama", "chat", "train.epochs=6", "train.learning_rate=1e-2")
    result = run_training(cfg, chat_data(), workspace=Workspace(tmp_path))
    losses = [row["loss"] for row in result.history if "loss" in row]
    assert losses[-1] < 0.6 * losses[0], losses
    assert {"validation_loss", "test_loss", "test_rougeL"} <= set(result.metrics)
    table = pd.read_parquet(tmp_path / result.output_dir / "predictions.parquet")
    assert list(table["reference"]) == [f"{w} {w}" for w in WORDS[16:]]
    # The prompt is the conversation before the answer, as JSON a caller can send back.
    first = json.loads(table["prompt"][0])
    assert [m["role"] for m in first][-1] == "user" and len(first) in (3, 4)
    assert any("every assistant turn" in note for note in result.notes)


def test_packing_trains_on_packed_rows(tmp_path):
    cfg = cfg_for("tiny-llama", "generation", "train.packing=true", "train.epochs=2")
    job, trainer = built(cfg, echo_data(), tmp_path)
    packed, plain = len(job.features["train"]), len(echo_data()["train"])
    assert packed < plain  # several short pairs share one row of model.max_length
    assert len(job.features["test"]) == len(echo_data()["test"])  # evaluation unpacked
    output = trainer.train()
    assert output.training_loss > 0


def test_zero_and_few_shot_prompting_answer_the_last_turn(tmp_path):
    from tunelab.train import prompting

    cfg = cfg_for(
        "tiny-llama",
        "chat",
        "train.method=baseline",
        "train.baseline.kind=prompt",
        "train.baseline.prompting.shots=1",
        "train.baseline.prompting.max_new_tokens=4",
        "model.max_length=192",
    )
    result = run_training(cfg, chat_data(), workspace=Workspace(tmp_path))
    assert "test_rougeL" in result.metrics
    example = (tmp_path / result.output_dir / "prompt_example.txt").read_text()
    # One demonstration conversation with its answer, then the test conversation.
    assert example.count("<|assistant|>") == 2 + 1 + 1 and example.endswith("<|assistant|>\n")
    table = pd.read_parquet(tmp_path / result.output_dir / "predictions.parquet")
    assert list(table["reference"]) == [f"{w} {w}" for w in WORDS[16:]]
    with pytest.raises(TrainingError, match="does not apply to chat data"):
        prompting.run(
            cfg_for("tiny-llama", "chat", "train.baseline.prompting.pattern='{prompt}'"),
            chat_data(),
            tmp_path,
            None,
            None,
        )
