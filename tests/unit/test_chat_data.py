"""Chat data: sources in OpenAI and ShareGPT form, the chat checks of the gate, cleaning,
and token lengths counted with the model's tokenizer through its chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tunelab import cli, config, models
from tunelab.data import chat, check_messages, checks, clean, prepare, sources, tokens
from tunelab.data.schema import SOURCE_ROW
from tunelab.errors import DataSchemaError, DataValidationError
from tunelab.workspace import Workspace

CONFIGS = Path(__file__).parents[2] / "configs"

CONVERSATIONS = [
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "How long do I boil an egg?"},
        {"role": "assistant", "content": "About seven minutes for a set yolk."},
    ],
    [
        {"role": "user", "content": "Is my yeast still good?"},
        {"role": "assistant", "content": "Test it in warm water with sugar."},
        {"role": "user", "content": "And if it does not foam?"},
        {"role": "assistant", "content": "Then buy fresh yeast."},
    ],
]
SHAREGPT_NAMES = {"system": "system", "user": "human", "assistant": "gpt"}


def sharegpt(conversation):
    return [{"from": SHAREGPT_NAMES[m["role"]], "value": m["content"]} for m in conversation]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_cfg(source, *overrides: str):
    return config.load(
        None, ["data.name=chat-test", "data.task=chat", f"data.source={source}", *overrides]
    )


def loaded(source, *overrides: str) -> list[list[dict]]:
    frame = sources.ingest(chat_cfg(source, *overrides).data).frames[sources.WHOLE]
    assert list(frame.columns) == [chat.COLUMN, SOURCE_ROW]
    return [chat.loads(text) for text in frame[chat.COLUMN]]


# --- sources ---------------------------------------------------------------------------


def test_openai_and_sharegpt_sources_give_the_same_conversations(tmp_path):
    openai = write_jsonl(tmp_path / "openai.jsonl", [{"messages": c} for c in CONVERSATIONS])
    shared = write_jsonl(
        tmp_path / "sharegpt.jsonl", [{"conversations": sharegpt(c)} for c in CONVERSATIONS]
    )
    csv = tmp_path / "chat.csv"
    pd.DataFrame({"conversations": [json.dumps(sharegpt(c)) for c in CONVERSATIONS]}).to_csv(
        csv, index=False
    )
    parquet = tmp_path / "chat.parquet"
    pd.DataFrame({"messages": CONVERSATIONS}).to_parquet(parquet)

    assert loaded(openai) == CONVERSATIONS
    assert loaded(shared, "data.columns={conversations: messages}") == CONVERSATIONS
    assert loaded(csv, "data.columns={conversations: messages}") == CONVERSATIONS
    assert loaded(parquet) == CONVERSATIONS  # lists come back from Parquet as numpy arrays


def test_unmapped_sharegpt_column_says_how_to_map_it(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": sharegpt(CONVERSATIONS[1])}])
    with pytest.raises(DataSchemaError, match=r"data.columns: \{conversations: messages\}"):
        sources.ingest(chat_cfg(path).data)


def test_custom_role_names_map_onto_ours(tmp_path):
    names = {"system": "Instructions", "user": "Customer", "assistant": "Agent"}
    rows = [
        {"dialog": [{"from": names[m["role"]], "value": m["content"]} for m in c]}
        for c in CONVERSATIONS
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    got = loaded(
        path,
        "data.columns={dialog: messages}",
        "data.chat.format=sharegpt",
        "data.chat.roles={customer: user, agent: assistant, instructions: system}",
    )
    assert got == CONVERSATIONS


def test_role_map_must_target_known_roles():
    with pytest.raises(Exception, match="data.chat.roles"):
        chat_cfg("bundled:chat", "data.chat.roles={bot: robot}")


def test_content_parts_and_spacing_are_normalised():
    cell = chat.canonical_cell(
        [{"role": "user", "content": [{"type": "text", "text": "  Hi "}]}, {"role": "gpt"}]
    )
    assert json.loads(cell) == [{"role": "user", "content": "Hi"}, {"role": "assistant"}]
    assert chat.inspect(cell).problem.startswith("turn 2 has no content")


# --- the gate --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("chat-gate"))


def good(i: int, split: str) -> list[dict]:
    return [
        {"role": "user", "content": f"Question {i} from the {split} split?"},
        {"role": "assistant", "content": f"Answer {i} for the {split} split."},
    ]


def splits_with(bad: object | None = None, sizes=(12, 3, 3)) -> dict[str, pd.DataFrame]:
    """Valid canonical conversations in every split; ``bad`` (a raw cell) is train row 5."""
    out = {}
    for split, size in zip(("train", "validation", "test"), sizes, strict=True):
        cells = [chat.canonical_cell(good(i, split)) for i in range(size)]
        if bad is not None and split == "train":
            cells[4] = chat.canonical_cell(bad)
        frame = pd.DataFrame({chat.COLUMN: cells})
        frame[SOURCE_ROW] = range(1, len(frame) + 1)
        out[split] = frame
    return out


def gate(frames, workspace, *overrides, counter=None):
    cfg = config.load(None, ["data.name=chat-gate", "data.task=chat", *overrides])
    return checks.validate_splits(frames, cfg, workspace, counter)


def only_failure(outcome) -> check_messages.Failure:
    assert not outcome.success
    assert len(outcome.failures) == 1, check_messages.describe_failures(outcome)
    return outcome.failures[0]


def test_valid_conversations_pass(shared):
    outcome = gate(splits_with(), shared)
    assert outcome.success, check_messages.describe_failures(outcome)


BAD_ROWS = {
    "bad role": (
        [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}],
        "turn's role is system, user or assistant",
        "roles 'bot'",
        "data.chat.roles",
    ),
    "not alternating": (
        [
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": "Anyone?"},
            {"role": "assistant", "content": "Hello"},
        ],
        "turns alternate",
        "turn 2 is user after user; expected assistant",
        "merge consecutive turns",
    ),
    "late system turn": (
        [
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": "Be brief."},
            {"role": "assistant", "content": "Hello"},
        ],
        "turns alternate",
        "turn 2 is a system turn",
        "keep system turns first",
    ),
    "ends with user": (
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Thanks"},
        ],
        "ends with an assistant turn",
        "ends with a user turn; the last assistant turn is turn 2 of 3",
        "remove the turns after the last assistant reply",
    ),
    "no assistant": (
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "at least one assistant turn",
        "turns: system, user",
        "add the assistant's reply",
    ),
    "empty turn": (
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "   "}],
        "no turn is empty",
        "turn 2 empty",
        "data.clean.drop_empty=true",
    ),
    "empty conversation": ([], "no conversation is empty", "no turns", "drop_empty"),
    "long turn": (
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 30}],
        "each turn's text is 1 to 100 characters long",
        "turn 2: 149 characters",
        "raise data.checks.max_chars",
        ["data.checks.max_chars=100"],
    ),
    "not a list": (
        {"role": "user", "content": "Hi"},
        "list of turns",
        "not a list of turns (a JSON object)",
        "{role, content} (OpenAI) or {from, value} (ShareGPT",
    ),
    "missing key": (
        [{"role": "user"}, {"role": "assistant", "content": "Hello"}],
        "list of turns",
        "turn 1 has no content",
        "Fix or remove those rows in the source",
    ),
    "not json": (
        "user: hi / assistant: hello",
        "list of turns",
        "not a JSON list of turns",
        "JSON text",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_each_chat_problem_fails_the_gate_naming_the_row(shared, case):
    bad, check, detail, fix, *overrides = BAD_ROWS[case]
    outcome = gate(splits_with(bad), shared, *(overrides[0] if overrides else []))
    failure = only_failure(outcome)
    assert check in failure.check
    assert failure.observed.startswith("1 conversation ")
    assert f"train row 5 ({detail}" in failure.observed
    assert fix in failure.fix
    with pytest.raises(DataValidationError) as info:
        checks.raise_for_failures(outcome)
    assert "train row 5" in str(info.value) and "Fix: " in str(info.value)


def test_a_malformed_row_is_no_error_at_load_time(tmp_path, shared):
    rows = [{"messages": good(i, "x")} for i in range(20)]
    rows[6] = {"messages": "just some text"}
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    cfg = chat_cfg(path)
    cleaned = prepare.split(prepare.ingest(cfg), cfg)
    failure = only_failure(checks.validate_splits(cleaned.frames, cfg, shared))
    assert "row 7 (not a JSON list of turns: 'just some text')" in failure.observed


def test_repeated_and_leaked_conversations_are_found_by_their_turns(shared):
    frames = splits_with()
    same = [
        {"role": "user", "content": "QUESTION 2 from the  train split?"},
        {"role": "assistant", "content": "answer 2 for the train split."},
    ]
    frames["test"].loc[0, chat.COLUMN] = chat.canonical_cell(same)
    failure = only_failure(gate(frames, shared, "data.checks.max_duplicate_rate=0.1"))
    assert "1 example leak across splits" in failure.observed
    assert (
        "'user: Question 2 from the train split? | assistant: Answe...' in train and test "
        "(train row 3; test row 1)"
    ) in failure.observed

    frames = splits_with()
    frames["train"].loc[6, chat.COLUMN] = frames["train"].loc[1, chat.COLUMN]
    failure = only_failure(gate(frames, shared, "data.checks.max_duplicate_rate=0"))
    assert "repeat an earlier row" in failure.observed and "train rows 2, 7" in failure.observed


def test_a_different_turn_makes_a_different_conversation():
    one = chat.canonical_cell(good(1, "train"))
    other = chat.canonical_cell([*good(1, "train"), *good(2, "train")])
    assert chat.conversation_key(one) != chat.conversation_key(other)
    assert chat.conversation_key(one) == chat.conversation_key(one.replace("Question", "QUESTION"))


def test_cleaning_drops_empty_repeated_and_leaked_conversations():
    frames = splits_with([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}])
    frames["train"].loc[7, chat.COLUMN] = frames["train"].loc[1, chat.COLUMN]
    frames["train"].loc[8, chat.COLUMN] = frames["test"].loc[0, chat.COLUMN]
    frames["train"].loc[9, chat.COLUMN] = chat.canonical_cell("not a conversation")
    policy = config.CleanConfig(
        strip=True, drop_empty=True, drop_duplicates=True, drop_leaked="train"
    )
    out = clean.clean_splits(frames, "chat", policy)
    dropped = {(d.source_row, d.reason, d.detail) for d in out.cleaning.dropped}
    assert dropped == {
        (5, "empty", "empty turn 2"),
        (8, "duplicate", "repeats train row 2"),
        (9, "leaked", "also in test"),
    }
    assert out.cleaning.dropped[0].text.startswith("user: Hi | assistant:")
    # What is not a conversation stays for the gate to name.
    assert 10 in set(out.frames["train"][SOURCE_ROW])


# --- token lengths ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama():
    return models.load_tokenizer(models.resolve("tiny-llama"))


def test_chat_tokens_are_the_chat_template_tokens(tiny_llama):
    counter = tokens.load_counter("tiny-llama", None, False)
    assert counter.chat_template and "tiny-llama" in counter.label
    frame = pd.DataFrame({chat.COLUMN: [chat.dumps(c) for c in CONVERSATIONS]})
    expected = [
        len(tiny_llama.apply_chat_template(c, tokenize=True)["input_ids"]) for c in CONVERSATIONS
    ]
    assert counter.example_lengths("chat", frame).tolist() == expected
    # Generation data is framed as training frames it: a user turn and an assistant turn.
    pairs = pd.DataFrame({"prompt": ["How long?"], "response": ["Seven minutes."]})
    turns = [
        {"role": "user", "content": "How long?"},
        {"role": "assistant", "content": "Seven minutes."},
    ]
    assert counter.example_lengths("generation", pairs).tolist() == [
        len(tiny_llama.apply_chat_template(turns, tokenize=True)["input_ids"])
    ]
    assert counter.count("Seven minutes.") == len(
        tiny_llama("Seven minutes.", add_special_tokens=False)["input_ids"]
    )


def test_the_tokenizer_follows_the_model_unless_data_tokenizer_says_otherwise():
    cfg = config.load(None, ["model.name=tiny-llama"])
    assert tokens.for_config(cfg).label == "tokens of the 'tiny-llama' tokenizer"
    cfg = config.load(None, ["model.name=tiny-llama", "data.tokenizer=tiny-gpt2"])
    assert tokens.for_config(cfg).label == "tokens of the 'tiny-gpt2' tokenizer"
    cfg = config.load(None, ["model.name=tiny-llama", "data.tokenizer=whitespace"])
    assert tokens.for_config(cfg).label == tokens.WHITESPACE_LABEL
    # Loaded once per process.
    assert tokens.load_counter("tiny-llama", None, False) is tokens.load_counter(
        "tiny-llama", None, False
    )


def test_a_tokenizer_that_cannot_load_falls_back_and_says_so(workspace, capsys):
    rows = [{"messages": good(i, "x")} for i in range(20)]
    path = write_jsonl(workspace.root / "c.jsonl", rows)
    cfg = chat_cfg(path, "data.tokenizer=no-such-org/no-such-model")
    counter = tokens.for_config(cfg)
    assert counter.fallback and "no-such-org/no-such-model" in counter.fallback
    assert counter.label.startswith("whitespace tokens (approximation; the tokenizer of")

    prepared = prepare.prepare_dataset(cfg, workspace)
    assert prepared.token_counter_fallback == counter.fallback
    assert "Token lengths are whitespace estimates" in prepared.report.markdown
    assert counter.label in prepared.report.markdown
    cli._print_prepared([prepared])
    printed = " ".join(capsys.readouterr().out.split())
    assert f"chat-test: token lengths counted as {counter.label}; {counter.fallback}" in printed

    # A failed gate says so too.
    failing = chat_cfg(path, "data.tokenizer=no-such-org/no-such-model", "model.max_length=8")
    outcome = prepare.validate(prepare.split(prepare.ingest(failing), failing), failing, workspace)
    assert "Token lengths are whitespace estimates: the tokenizer of" in (
        check_messages.describe_failures(outcome)
    )


def test_the_tokenizer_changes_the_gate_but_not_the_version(workspace):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"question number {i} about eggs"},
                {"role": "assistant", "content": f"answer number {i} about eggs"},
            ]
        }
        for i in range(20)
    ]
    path = write_jsonl(workspace.root / "short.jsonl", rows)
    # 10 words each; through tiny-llama's template (role tokens, eos) far more than 12.
    estimate = chat_cfg(path, "data.tokenizer=whitespace", "model.max_length=12")
    first = prepare.prepare_dataset(estimate, workspace)
    assert first.validation.success

    real = chat_cfg(path, "model.name=tiny-llama", "model.max_length=12")
    cleaned = prepare.split(prepare.ingest(real), real)
    outcome = prepare.validate(cleaned, real, workspace)
    assert not outcome.success
    assert "through the chat template" in outcome.failures[0].check

    roomy = chat_cfg(path, "model.name=tiny-llama", "model.max_length=64")
    again = prepare.prepare_dataset(roomy, workspace)
    assert again.version_id == first.version_id and not again.changed
    assert "tokenizer" not in again.version.metadata["data_config"]
    assert "token_counter" not in again.version.metadata


# --- the bundled sample ----------------------------------------------------------------


def test_bundled_chat_passes_the_gate_with_its_config(workspace):
    cfg = config.load(CONFIGS / "chat.yaml", ["model.name=tiny-llama"])
    prepared = prepare.prepare_dataset(cfg, workspace)
    assert prepared.validation.success
    assert prepared.rows["train"] >= 150
    report = prepared.report
    assert report.summary["turns"]["all"]["min"] >= 3
    assert "## Conversations per split" in report.markdown and "## Turns" in report.markdown
    assert "through the chat template" in report.markdown
    assert "- **user:** " in report.markdown and "- **assistant:** " in report.markdown


def test_bundled_chat_is_a_coherent_sample():
    frame = sources.read_bundled("chat").frames[sources.WHOLE]
    conversations = [list(c) for c in frame["messages"]]
    assert len(conversations) >= 180
    assert len({json.dumps(c) for c in conversations}) == len(conversations)
    systems = sum(c[0]["role"] == "system" for c in conversations)
    assert 0 < systems < len(conversations)
    for conversation in conversations:
        turns = [m for m in conversation if m["role"] != "system"]
        assert 2 <= sum(m["role"] == "user" for m in turns) <= 4
        assert turns[-1]["role"] == "assistant"
        assert all(len(m["content"].split()) <= 50 for m in turns if m["role"] == "assistant")
