"""Prompts data (data.task=prompts, for GRPO): one `prompt` column through the same gate as
every task, its tokens counted as the policy is given the prompt, and the bundled sample."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tunelab import config, models
from tunelab.data import check_messages, prepare, schema, sources, tokens
from tunelab.errors import DataSchemaError, DataValidationError

CONFIGS = Path(__file__).parents[2] / "configs"


def write_splits(folder: Path, splits: dict[str, list]) -> Path:
    """One JSONL file per split, each row {"prompt": value}."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, prompts in splits.items():
        lines = "".join(json.dumps({"prompt": p}) + "\n" for p in prompts)
        (folder / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    return folder


def clean_splits() -> dict[str, list]:
    return {
        split: [f"Write a short review of the {split} shop number {i}." for i in range(n)]
        for split, n in (("train", 12), ("validation", 3), ("test", 3))
    }


def prompts_cfg(source, *overrides: str):
    """configs/prompts.yaml (max_duplicate_rate 0.0) on another source."""
    return config.load(
        CONFIGS / "prompts.yaml", ["data.name=asks", f"data.source={source}", *overrides]
    )


def gate_failures(cfg, workspace) -> tuple[dict[str, check_messages.Failure], str]:
    """The gate's failures by check, and the message `data prepare` stops with."""
    with pytest.raises(DataValidationError) as info:
        prepare.prepare_dataset(cfg, workspace)
    assert not (workspace.versions_dir / cfg.data.name).exists()  # nothing versioned
    return {f.check: f for f in info.value.failures}, str(info.value)


# --- the bundled sample ----------------------------------------------------------------


def test_bundled_prompts_are_distinct_short_requests():
    frame = sources.read_bundled("prompts").frames[sources.WHOLE]
    assert list(frame.columns) == ["prompt"]
    prompts = frame["prompt"].tolist()
    assert 200 <= len(prompts) <= 300
    assert all(isinstance(p, str) and 40 <= len(p) <= 160 for p in prompts)
    keys = {schema.normalise_key(p) for p in prompts}
    assert len(keys) == len(prompts)  # the gate's max_duplicate_rate 0.0 holds
    assert sources.BUNDLED["prompts"]["task"] == "prompts"


def test_bundled_prompts_pass_the_gate_with_their_config(workspace):
    cfg = config.load(CONFIGS / "prompts.yaml", ["model.name=tiny-llama"])
    assert (cfg.data.task, cfg.data.source) == ("prompts", "bundled:prompts")
    prepared = prepare.prepare_dataset(cfg, workspace)
    assert prepared.validation.success
    assert sum(prepared.rows.values()) == len(sources.read_bundled("prompts").frames["all"])
    assert prepared.rows["train"] > prepared.rows["test"] > 0
    version = prepared.version.metadata
    assert version["task"] == "prompts" and version["labels"] is None

    report = prepared.report
    assert set(report.summary["lengths"]) == {"prompt"}
    assert report.summary["lengths"]["prompt"]["all"]["tokens"]["max"] <= cfg.model.max_length
    assert "Per prompt: characters, and tokens of the prompt alone as a user turn" in (
        " ".join(report.markdown.split())
    )
    assert [p.name for p in report.plots] == ["lengths-prompt.png"]
    for heading in ("Rows per split", "Lengths", "Vocabulary", "Duplicates", "Examples"):
        assert f"\n## {heading}\n" in report.markdown
    assert "Label balance" not in report.markdown


# --- token lengths ---------------------------------------------------------------------


def test_a_prompt_is_counted_as_the_policy_is_given_it():
    frame = pd.DataFrame({"prompt": ["Describe your kettle in two sentences."]})
    llama = models.load_tokenizer(models.resolve("tiny-llama"))
    counter = tokens.load_counter("tiny-llama", None, False)
    turn = [{"role": "user", "content": frame["prompt"][0]}]
    framed = llama.apply_chat_template(turn, tokenize=True, add_generation_prompt=True)
    assert counter.example_lengths("prompts", frame).tolist() == [len(framed["input_ids"])]
    assert "the prompt alone as a user turn of the chat template" in counter.framing("prompts")

    gpt2 = models.load_tokenizer(models.resolve("tiny-gpt2"))  # no chat template: plain text
    plain = tokens.load_counter("tiny-gpt2", None, False)
    expected = len(gpt2(frame["prompt"][0] + "\n")["input_ids"])
    assert plain.example_lengths("prompts", frame).tolist() == [expected]


def test_too_long_prompts_say_the_limit_bounds_the_prompt_alone(workspace):
    splits = clean_splits()
    splits["train"][3] = "Describe the shop in detail: " + "its shelves, " * 20 + "and its staff."
    folder = write_splits(workspace.root / "long", splits)
    cfg = prompts_cfg(folder, "model.name=tiny-llama", "model.max_length=40")
    failures, message = gate_failures(cfg, workspace)
    (failure,) = failures.values()
    assert "longer than 40 tokens (the prompt alone as a user turn" in failure.check
    assert failure.observed.startswith("5.6% of examples (1 of 18) are longer than 40 tokens")
    assert "tokens of the 'tiny-llama' tokenizer; longest: train row 4 (" in failure.observed
    assert "raise model.max_length" in failure.fix and "the prompt alone" in failure.fix
    assert "shorten the prompts in the source" in message


# --- bad input -------------------------------------------------------------------------


def test_empty_and_missing_prompts_are_named_with_their_rows(workspace):
    splits = clean_splits()
    splits["train"][4] = ""
    splits["train"][8] = "   "
    splits["test"][1] = None
    folder = write_splits(workspace.root / "holes", splits)
    failures, message = gate_failures(prompts_cfg(folder), workspace)
    assert set(failures) == {"every row has a prompt", "no prompt is empty or blank"}
    missing = failures["every row has a prompt"]
    assert missing.observed == "1 row with no prompt (null): test row 2"
    assert missing.split == "test"
    blank = failures["no prompt is empty or blank"]
    assert blank.observed == "2 rows with an empty or blank prompt: train rows 5, 9"
    assert "data.clean.drop_empty=true" in blank.fix and "in the source" in blank.fix
    assert "Nothing was versioned" in message and "Fix: data.clean.drop_empty=true" in message

    fixed = prepare.prepare_dataset(prompts_cfg(folder, "data.clean.drop_empty=true"), workspace)
    assert fixed.rows == {"train": 10, "validation": 3, "test": 2}


def test_a_repeated_prompt_fails_at_a_zero_duplicate_rate(workspace):
    splits = clean_splits()
    first = splits["train"][2]
    splits["train"][6] = "  " + first.upper().replace(" ", "  ")  # same once normalised
    folder = write_splits(workspace.root / "dupes", splits)
    failures, message = gate_failures(prompts_cfg(folder), workspace)
    (failure,) = failures.values()
    assert failure.check == "at most 0.0% of rows repeat an earlier row (normalised prompt)"
    assert failure.observed == (
        f"5.6% of rows (1 of 18) repeat an earlier row: '{first[:37]}...' x2 (train rows 3, 7)"
    )
    assert failure.threshold == "at most 0.0% of rows"
    assert "data.clean.drop_duplicates=true" in failure.fix
    assert "data.checks.max_duplicate_rate" in failure.fix
    assert "Fix: data.clean.drop_duplicates=true" in message


def test_a_prompt_in_two_splits_is_a_leak_named_with_both_places(workspace):
    splits = clean_splits()
    splits["test"][0] = splits["train"][1]
    folder = write_splits(workspace.root / "leaky", splits)
    failures, message = gate_failures(prompts_cfg(folder), workspace)
    leak = failures["no example appears in more than one split (leakage)"]
    assert leak.observed.startswith("1 example leak across splits (2 rows): ")
    assert leak.observed.endswith(" in train and test (train row 2; test row 1)")
    assert leak.fix.startswith("data.clean.drop_leaked=train")
    assert "Fix: data.clean.drop_leaked=train" in message

    fixed = prepare.prepare_dataset(prompts_cfg(folder, "data.clean.drop_leaked=train"), workspace)
    assert fixed.rows == {"train": 11, "validation": 3, "test": 3}
    assert fixed.version.metadata["task"] == "prompts"


def test_a_prompts_source_without_a_prompt_column_says_how_to_map_it(workspace):
    path = workspace.root / "asks.jsonl"
    path.write_text(json.dumps({"query": "Describe your bike in one sentence."}) + "\n")
    with pytest.raises(DataSchemaError) as info:
        sources.ingest(prompts_cfg(path).data)
    message = str(info.value)
    assert "missing required column(s) ['prompt'] for a prompts dataset" in message
    assert "asks.jsonl" in message and "data.columns: {query: prompt}" in message
