"""Default prompting patterns: an instruction around generation inputs, a summarise one for
bare conversations, the prompt itself for preference data, and a set pattern always wins."""

from __future__ import annotations

import pandas as pd
import pytest

from tunelab import config
from tunelab.config import PromptingConfig
from tunelab.train import prompting
from tunelab.train import train as run_training
from tunelab.workspace import Workspace

DIALOGSUM = (
    "#Person1#: Hi, Mr. Smith. I'm Doctor Hawkins. Why are you here today?\n"
    "#Person2#: I found it would be a good idea to get a check-up.\n"
    "#Person1#: Yes, well, you haven't had one for 5 years."
)
SAMSUM = (
    "Amanda: I baked cookies. Do you want some?\nJerry: Sure!\nAmanda: I'll bring you tomorrow :-)"
)
INSTRUCTED = "Summarize the dialogue in one sentence.\n\nMaya: My car won't start.\nTom: On my way."


def test_bare_conversations_are_told_apart_from_prompts_that_ask_for_something():
    assert prompting.is_conversations([DIALOGSUM, SAMSUM, INSTRUCTED])
    assert not prompting.is_conversations([INSTRUCTED, "Name three fruits.", DIALOGSUM])
    # One line, or a line that is not a turn ("Note: ..." alone is not a conversation).
    assert not prompting.is_conversations(["Note: buy milk", "Write a haiku about rain."])
    assert not prompting.is_conversations(["Translate to French:\nThe cat sleeps."])


@pytest.mark.parametrize(
    ("task", "prompts", "expected"),
    [
        ("generation", [DIALOGSUM, SAMSUM], prompting.SUMMARY_PATTERN),
        ("generation", [INSTRUCTED, "Name three fruits."], prompting.GENERATION_PATTERN),
        ("preference", [DIALOGSUM, SAMSUM], prompting.PROMPT_ONLY_PATTERN),
        ("classification", None, prompting.CLASSIFICATION_PATTERN),
    ],
)
def test_the_default_pattern_depends_on_the_task_and_the_inputs(task, prompts, expected):
    pattern, note = prompting._default_pattern(PromptingConfig(), task, prompts)
    assert pattern == expected
    assert "pattern unset" in note and repr(expected) in note


def test_a_set_pattern_is_used_as_it_is():
    p = PromptingConfig(pattern="{prompt}")
    assert prompting._default_pattern(p, "generation", [DIALOGSUM]) == ("{prompt}", None)


def test_zero_shot_generation_wraps_bare_conversations_in_the_summarise_instruction(tmp_path):
    rows = pd.DataFrame({"prompt": [DIALOGSUM, SAMSUM] * 3, "response": ["A check-up."] * 6})
    data = {"train": rows, "test": rows.iloc[:2].reset_index(drop=True)}
    cfg = config.load(
        None,
        [
            "data.task=generation",
            "data.name=dialogues",
            "train.method=baseline",
            "train.baseline.kind=prompt",
            "train.baseline.prompting.max_new_tokens=2",
            "model.name=tiny-gpt2",
        ],
    )
    result = run_training(cfg, data, workspace=Workspace(tmp_path))
    example = result.artifact("prompt_example").read_text(encoding="utf-8")
    assert example == prompting.SUMMARY_PATTERN.format(prompt=DIALOGSUM)
    assert any("bare conversations" in note for note in result.notes)
