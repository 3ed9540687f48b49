"""`tunelab init`: the task and columns detected from a data file, and the run config and
milestone plan written for it, which tunelab's own loaders (and the gate) accept."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tunelab import config, scaffold
from tunelab.data import prepare, sources
from tunelab.errors import ConfigError, DataSchemaError, DataSourceError
from tunelab.pipeline import plan as milestone

MOODS = ("negative", "neutral", "positive")
WORDS = {
    "negative": "awful broken slow rude",
    "neutral": "ordinary average plain usual",
    "positive": "lovely quick kind great",
}


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Run from tmp_path, as a user runs `tunelab init` in a project folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    return tmp_path


def reviews(per_label: int = 40) -> pd.DataFrame:
    rows = [
        (f"Review {i} of item {label[:3]}: {WORDS[label]} experience number {i}.", label)
        for label in MOODS
        for i in range(per_label)
    ]
    return pd.DataFrame(rows, columns=["review", "sentiment"])


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def comments(path) -> str:
    """The YAML comments of a written file as one line of words (they are wrapped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    said = [line.split("#", 1)[1] for line in lines if "#" in line]
    return " ".join(" ".join(said).split())


def loaded(result):
    """The written files through tunelab's loaders."""
    return config.load(result.config_path), milestone.load_plan(result.milestone_path)


def test_classification_csv_maps_columns_and_passes_the_gate(here, workspace):
    reviews().to_csv(here / "shop-reviews.csv", index=False)
    result = scaffold.init_project("shop-reviews.csv")

    assert result.config_path.name == "shop-reviews-lora.yaml"
    assert result.milestone_path.name == "shop-reviews-milestone.yaml"
    det = result.detection
    assert det.task == "classification"
    assert det.columns == {"review": "text", "sentiment": "label"}
    assert det.labels == list(MOODS)
    assert det.label_counts == {label: 40 for label in MOODS}

    cfg, plan = loaded(result)
    assert cfg.data.name == "shop-reviews"
    assert cfg.data.source == "shop-reviews.csv"  # relative to where tunelab runs
    assert cfg.data.columns == {"review": "text", "sentiment": "label"}
    assert cfg.data.labels == list(MOODS)
    assert (cfg.model.name, cfg.train.method) == ("minilm-l6", "lora")
    assert cfg.model.max_length == 64
    assert cfg.eval.primary_metric == "macro_f1"
    assert [m.name for m in plan.methods()] == ["majority", "tfidf", "lora"]
    kinds = [(m.cfg.train.method, m.cfg.train.baseline.kind) for m in plan.methods()]
    assert kinds[:2] == [("baseline", "majority"), ("baseline", "tfidf")]
    assert {m.cfg.data.model_dump_json() for m in plan.methods()} == {cfg.data.model_dump_json()}

    text = result.config_path.read_text(encoding="utf-8")
    assert "# Next:" in text and "tunelab data prepare shop-reviews-lora.yaml" in text
    said = comments(result.config_path)
    assert "'sentiment' holds 3 distinct short values" in said  # why this task
    assert "negative=40" in said  # the label counts
    assert "On a GPU" in said and "hub" in said
    assert result.next_commands[0] == "tunelab data prepare shop-reviews-lora.yaml"
    assert any("tunelab run shop-reviews-milestone.yaml" in line for line in result.summary)
    plain = json.loads(json.dumps(result.to_dict()))
    assert plain["task"] == "classification" and plain["config"] == "shop-reviews-lora.yaml"

    prepared = prepare.prepare_dataset(cfg, workspace)
    assert prepared.validation.success
    assert sum(prepared.rows.values()) == 120


def test_generation_jsonl_alpaca_columns(here):
    records = [
        {
            "instruction": f"Summarise note {i} in one line.",
            "input": f"Note {i}: the meeting moved to room {i}." if i % 3 == 0 else "",
            "output": f"Meeting {i} is now in room {i}.",
        }
        for i in range(30)
    ]
    write_jsonl(here / "notes.jsonl", records)
    result = scaffold.init_project(here / "notes.jsonl", name="notes")
    det = result.detection
    assert det.task == "generation"
    assert det.columns == {"instruction": "prompt", "output": "response"}
    assert det.unused == ["input"]
    assert any("column 'input'" in w and "one prompt" in w for w in det.warnings)

    cfg, plan = loaded(result)
    assert cfg.data.task == "generation"
    assert (cfg.model.name, cfg.train.method) == ("smollm2-135m-instruct", "lora")
    assert cfg.eval.primary_metric == "rougeL"
    zeroshot, lora = plan.methods()
    assert zeroshot.name == "zeroshot" and zeroshot.cfg.train.baseline.kind == "prompt"
    assert zeroshot.cfg.train.baseline.prompting.shots == 0
    assert lora.cfg.train.method == "lora"
    assert "Check: column 'input'" in comments(result.config_path)


def conversation(i: int, assistant: str = "assistant") -> list[dict]:
    return [
        {"role": "user", "content": f"How do I water plant {i}?"},
        {"role": assistant, "content": f"Water plant {i} once a week."},
        {"role": "user", "content": "And in winter?"},
        {"role": assistant, "content": f"Every two weeks for plant {i}."},
    ]


def test_chat_jsonl_messages(here):
    write_jsonl(here / "garden.jsonl", [{"id": i, "messages": conversation(i)} for i in range(25)])
    result = scaffold.init_project(here / "garden.jsonl")
    det = result.detection
    assert det.task == "chat" and det.columns == {} and det.kept == ["messages"]
    assert det.unused == ["id"]
    cfg, plan = loaded(result)
    assert cfg.data.task == "chat" and cfg.model.name == "smollm2-135m-instruct"
    assert [m.name for m in plan.methods()] == ["zeroshot", "lora"]
    assert len(sources.ingest(cfg.data).frames["all"]) == 25


def test_chat_in_csv_cells_with_other_role_names(here):
    rows = [
        {"dialog": json.dumps(conversation(i, assistant="bot")), "topic": "garden"}
        for i in range(20)
    ]
    pd.DataFrame(rows).to_csv(here / "support.csv", index=False)
    result = scaffold.init_project(here / "support.csv", out="configs")
    det = result.detection
    assert det.task == "chat" and det.columns == {"dialog": "messages"}
    assert det.chat_roles == {"bot": "assistant"}
    assert result.config_path.parent.name == "configs"
    cfg, _ = loaded(result)
    assert cfg.data.chat.roles["bot"] == "assistant"
    turns = json.loads(sources.ingest(cfg.data).frames["all"]["messages"][0])
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]


def test_preference_jsonl_trains_dpo_without_a_baseline(here):
    records = [
        {
            "prompt": f"Is {i} even?",
            "chosen": f"{i} is {'even' if i % 2 == 0 else 'odd'}.",
            "rejected": "Figure it out yourself.",
        }
        for i in range(30)
    ]
    write_jsonl(here / "prefs.jsonl", records)
    result = scaffold.init_project(here / "prefs.jsonl")
    assert result.detection.task == "preference"
    assert result.config_path.name == "prefs-dpo.yaml"
    cfg, plan = loaded(result)
    assert (cfg.train.method, cfg.model.name) == ("dpo", "smollm2-135m-instruct")
    assert cfg.data.truncation == "keep_end"
    assert cfg.eval.primary_metric == "reward_accuracy"
    assert [m.name for m in plan.methods()] == ["dpo"]
    assert "untrained reference policy" in comments(result.milestone_path)


def test_an_ambiguous_file_picks_the_likely_task_and_names_the_other(here):
    frame = pd.DataFrame(
        {
            "question": [f"What is the capital of country number {i}?" for i in range(40)],
            "answer": [f"The capital of country {i} is city {i}." for i in range(40)],
            "category": ["geography", "history"] * 20,
        }
    )
    frame.to_csv(here / "qa.csv", index=False)
    result = scaffold.init_project(here / "qa.csv")
    det = result.detection
    assert det.task == "generation"
    assert det.columns == {"question": "prompt", "answer": "response"}
    assert any(
        a.startswith("classification") and "--task classification" in a for a in det.alternatives
    )
    assert "It could also be classification" in comments(result.config_path)

    forced = scaffold.init_project(here / "qa.csv", name="qa-topics", task="classification")
    assert forced.detection.columns == {"question": "text", "category": "label"}
    assert forced.detection.labels == ["geography", "history"]
    loaded(forced)


def test_unknown_columns_are_refused_with_the_columns_and_the_flag(here):
    frame = pd.DataFrame(
        {
            "col_a": [f"Some long input sentence number {i} here." for i in range(20)],
            "col_b": [f"A different long output sentence {i} there." for i in range(20)],
        }
    )
    frame.to_csv(here / "mystery.csv", index=False)
    with pytest.raises(DataSchemaError) as info:
        scaffold.init_project(here / "mystery.csv")
    message = str(info.value)
    assert "col_a (text" in message and "col_b (text" in message and "--task" in message
    assert not list(here.glob("*.yaml"))

    result = scaffold.init_project(here / "mystery.csv", task="generation")
    assert result.detection.columns == {"col_a": "prompt", "col_b": "response"}
    assert any("guessed" in w for w in result.detection.warnings)
    loaded(result)

    with pytest.raises(DataSchemaError, match="as chat data"):
        scaffold.init_project(here / "mystery.csv", task="chat")


def test_numeric_scores_are_flagged_as_not_classes(here):
    frame = pd.DataFrame(
        {"text": [f"Product text {i}" for i in range(60)], "label": [i / 7 for i in range(60)]}
    )
    frame.to_csv(here / "scores.csv", index=False)
    result = scaffold.init_project(here / "scores.csv")
    warnings = " ".join(result.detection.warnings)
    assert "regression" in warnings and "free text or an id" in warnings
    cfg, _ = loaded(result)
    assert cfg.data.labels is None


def test_star_ratings_are_classes_in_numeric_order(here):
    stars = [str(1 + i % 10) for i in range(100)]
    frame = pd.DataFrame({"review": [f"Review text {i}" for i in range(100)], "stars": stars})
    frame.to_csv(here / "stars.csv", index=False)
    det = scaffold.init_project(here / "stars.csv").detection
    assert det.labels == [str(n) for n in range(1, 11)]
    assert any("are numbers" in w for w in det.warnings)


def test_existing_files_are_never_overwritten_without_force(here):
    reviews().to_csv(here / "r.csv", index=False)
    first = scaffold.init_project(here / "r.csv")
    first.config_path.write_text("# edited by hand\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"r-lora\.yaml.*--force") as info:
        scaffold.init_project(here / "r.csv")
    assert "r-milestone.yaml" in str(info.value)
    assert first.config_path.read_text(encoding="utf-8") == "# edited by hand\n"

    again = scaffold.init_project(here / "r.csv", force=True)
    loaded(again)
    assert not list(here.glob(".tunelab-init-*"))  # no scratch folder left


def test_a_folder_of_splits_keeps_them_and_drops_leaks(here):
    folder = here / "split-data"
    folder.mkdir()
    frame = reviews(20)
    frame.iloc[:45].to_csv(folder / "train.csv", index=False)
    pd.concat([frame.iloc[45:], frame.iloc[:2]]).to_csv(folder / "test.csv", index=False)
    result = scaffold.init_project(folder)
    assert result.detection.has_splits and result.detection.leaked_rows == 2
    cfg, _ = loaded(result)
    assert cfg.data.name == "split-data" and cfg.data.clean.drop_leaked == "train"


def test_names_and_yaml_values():
    assert scaffold.default_name("Data/My Reviews (2024).csv") == "my-reviews-2024"
    assert scaffold.default_name("bundled:sentiment") == "sentiment"
    with pytest.raises(ConfigError, match="not a dataset name"):
        scaffold.init_project("x.csv", name="Bad Name")
    assert yaml.safe_load(scaffold._y(["1", "2"])) == ["1", "2"]
    assert yaml.safe_load(scaffold._y("a: b")) == "a: b"
    assert scaffold._y(None) == "null"


def test_a_missing_file_is_named(here):
    with pytest.raises(DataSourceError, match=r"nope\.csv does not exist"):
        scaffold.init_project("nope.csv")


def test_a_bundled_source_works_too(here):
    result = scaffold.init_project("bundled:sentiment", name="mine")
    assert result.detection.task == "classification"
    assert result.detection.labels == list(MOODS)
    cfg, _ = loaded(result)
    assert cfg.data.source == "bundled:sentiment" and cfg.data.columns == {}


def test_a_file_of_prompts_alone_reads_as_prompts(here):
    records = [
        {"id": i, "query": f"Write a short review of the cafe on street {i}."} for i in range(30)
    ]
    write_jsonl(here / "asks.jsonl", records)
    det = scaffold.detect(here / "asks.jsonl")
    assert det.task == "prompts"
    assert det.columns == {"query": "prompt"} and det.unused == ["id"]
    assert "GRPO" in det.why and det.alternatives == []
    assert scaffold.detect("bundled:prompts").task == "prompts"


def test_a_response_beside_the_prompt_keeps_it_generation(here):
    det = scaffold.detect("bundled:instructions")
    assert det.task == "generation" and det.alternatives == []
    forced = scaffold.detect("bundled:instructions", task="prompts")
    assert forced.task == "prompts" and forced.kept == ["prompt"]
    assert forced.unused == ["response"]


def test_init_on_prompts_says_what_to_write_instead(here):
    write_jsonl(
        here / "asks.jsonl", [{"question": f"Describe shop {i} briefly."} for i in range(20)]
    )
    with pytest.raises(ConfigError) as info:
        scaffold.init_project(here / "asks.jsonl")
    message = str(info.value)
    assert message.startswith("asks.jsonl: read as prompts data (prompt <- 'question')")
    assert "train.grpo.rewards" in message and "configs/prompts.yaml" in message
    assert "data.columns: {question: prompt}" in message
    assert not list(here.glob("*.yaml"))
