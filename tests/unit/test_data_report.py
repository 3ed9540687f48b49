import json

import pandas as pd
import pytest

from tunelab.data.report import write_report
from tunelab.data.schema import SOURCE_ROW
from tunelab.data.tokens import TokenCounter
from tunelab.workspace import Workspace

PNG = b"\x89PNG\r\n\x1a\n"


def classification_splits():
    pos = [
        "a wonderful film",
        "wonderful acting and story",
        "truly wonderful",
        "great fun",
        "wonderful cast, great fun",
    ]
    neg = [
        "a dreadful film",
        "dreadful acting and story",
        "truly dreadful",
        "boring plot",
        "dreadful cast, boring plot",
    ]
    train = pd.DataFrame({"text": pos + neg, "label": ["pos"] * 5 + ["neg"] * 5})
    train[SOURCE_ROW] = range(1, len(train) + 1)
    # "Truly  WONDERFUL" repeats "truly wonderful" once its key is normalised.
    test = pd.DataFrame(
        {"text": ["Truly  WONDERFUL", "boring and dreadful"], "label": ["pos", "neg"]}
    )
    validation = train.iloc[0:0][["text", "label"]]
    return {"train": train, "validation": validation, "test": test}


def table_rows(markdown, heading):
    """The pipe-table rows (header and separator dropped) of the section under heading."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return rows[2:]


def cells(row):
    """Split a table row on unescaped pipes."""
    parts, current, escaped = [], "", False
    for char in row.strip()[1:-1]:
        if char == "|" and not escaped:
            parts.append(current.strip())
            current = ""
        else:
            current += char
        escaped = char == "\\"
    return [*parts, current.strip()]


@pytest.fixture
def classification(tmp_path):
    return write_report(
        "movies",
        "classification",
        "v1",
        classification_splits(),
        Workspace(tmp_path),
        validation_summary="passed: 12 of 12 expectations",
        docs_path=str(tmp_path / "gx" / "docs" / "index.html"),
        seed=3,
    )


def test_classification_report_lands_in_the_workspace(classification, tmp_path):
    directory = tmp_path / "reports" / "data" / "movies" / "v1"
    assert classification.directory == directory
    assert classification.markdown_path == directory / "report.md"
    assert classification.markdown_path.read_text(encoding="utf-8") == classification.markdown
    head = classification.markdown.split("\n## ", 1)[0]
    assert "movies @ v1" in head and "classification" in head and "12" in head
    assert "passed: 12 of 12 expectations" in head
    assert "[" in head and "(../../../../gx/docs/index.html)" in head
    assert "whitespace tokens (approximation; no tokenizer)" in classification.markdown


def test_summary_counts_rows_labels_and_duplicates(classification):
    summary = classification.summary
    json.dumps(summary)  # plain JSON, nothing numpy
    assert summary["rows"] == {"train": 10, "validation": 0, "test": 2, "total": 12}
    assert summary["labels"]["train"] == {"neg": 5, "pos": 5}
    assert summary["labels"]["test"] == {"neg": 1, "pos": 1}
    assert summary["labels"]["all"] == {"neg": 6, "pos": 6}
    assert summary["duplicates"]["rows"] == 1
    assert summary["duplicates"]["share"] == pytest.approx(1 / 12, abs=1e-4)
    assert summary["duplicates"]["within_split"] == {"train": 0, "validation": 0, "test": 0}
    assert summary["duplicates"]["in_more_than_one_split"] == 2
    assert summary["vocabulary"]["train"] == len(
        {
            "a",
            "wonderful",
            "film",
            "acting",
            "and",
            "story",
            "truly",
            "great",
            "fun",
            "cast",
            "dreadful",
            "boring",
            "plot",
        }
    )
    assert summary["vocabulary"]["all"] == summary["vocabulary"]["train"]
    text = summary["lengths"]["text"]
    assert text["all"]["characters"]["min"] == len("great fun")
    assert text["all"]["characters"]["max"] == len("wonderful acting and story")
    assert text["train"]["tokens"] == {"min": 2, "median": 3, "p95": 4, "max": 4}
    assert text["validation"]["tokens"]["median"] is None


def test_length_table_has_the_non_empty_splits(classification):
    rows = [cells(r) for r in table_rows(classification.markdown, "Lengths")]
    assert [r[:2] for r in rows] == [["text", "train"], ["text", "test"], ["text", "all"]]
    assert rows[0][2:] == ["9", "15.5", "26", "26", "2", "3", "4", "4"]


def test_label_and_row_tables(classification):
    md = classification.markdown
    rows = {cells(r)[0]: cells(r)[1:] for r in table_rows(md, "Rows per split")}
    assert rows["train"][0] == "10" and rows["validation"][0] == "0" and rows["test"][0] == "2"
    labels = {cells(r)[0]: cells(r)[1:] for r in table_rows(md, "Label balance")}
    assert labels["pos"] == ["5 (50.0%)", "0 (–)", "1 (50.0%)", "6 (50.0%)"]
    assert "![Label share per split](labels.png)" in md
    dups = {cells(r)[0]: cells(r)[1] for r in table_rows(md, "Duplicates")}
    assert dups["all splits together"] == "1"


def test_distinctive_ngrams_belong_to_their_class(classification):
    ngrams = classification.summary["ngrams"]
    assert [g for g, _ in ngrams["pos"]][0] == "wonderful"
    assert [g for g, _ in ngrams["neg"]][0] == "dreadful"
    assert all(len(top) <= 8 for top in ngrams.values())
    # Shared words are not distinctive for either class.
    assert not {"film", "acting", "truly"} & {g for top in ngrams.values() for g, _ in top}
    rows = {
        cells(r)[0]: cells(r)[1]
        for r in table_rows(classification.markdown, "Distinctive n-grams per class")
    }
    assert rows["pos"].startswith("wonderful (") and "dreadful" not in rows["pos"]
    assert rows["neg"].startswith("dreadful (") and "boring plot" in rows["neg"]


def test_plots_are_pngs_linked_relatively(classification):
    names = sorted(p.name for p in classification.plots)
    assert names == ["labels.png", "lengths-text.png"]
    for plot in classification.plots:
        assert plot.parent == classification.directory
        data = plot.read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000
        assert f"]({plot.name})" in classification.markdown


def test_examples_per_class_are_seeded(classification, tmp_path):
    rows = table_rows(classification.markdown, "Examples")
    labels = [cells(r)[1] for r in rows]
    assert labels.count("pos") == 3 and labels.count("neg") == 3
    again = write_report(
        "movies", "classification", "v2", classification_splits(), Workspace(tmp_path), seed=3
    )
    other = write_report(
        "movies", "classification", "v3", classification_splits(), Workspace(tmp_path), seed=1
    )
    assert table_rows(again.markdown, "Examples") == rows
    assert table_rows(other.markdown, "Examples") != rows


def test_pipes_newlines_and_long_texts_stay_inside_their_cell(tmp_path):
    nasty = "left | right\nsecond line\r\nthird <b>bold</b> " + "x" * 300
    frame = pd.DataFrame({"prompt": [nasty, "plain prompt"], "response": ["a | b", "fine\nanswer"]})
    report = write_report(
        "chat",
        "generation",
        "v1",
        {"train": frame, "validation": frame.iloc[0:0], "test": frame.iloc[:1]},
        Workspace(tmp_path),
    )
    rows = table_rows(report.markdown, "Examples")
    assert len(rows) == 3
    for row in rows:
        assert len(cells(row)) == 3  # split, prompt, response
    long_cell = next(cells(r)[1] for r in rows if "left" in r)
    assert long_cell.startswith("left \\| right<br>second line<br>third &lt;b&gt;bold")
    assert long_cell.endswith("…") and long_cell.count("x") < 200
    assert "\r" not in report.markdown


def test_generation_report_sections(tmp_path):
    frame = pd.DataFrame(
        {
            "prompt": ["Say hi", "Count to three", "Name a colour", "Say hi"],
            "response": ["hi", "one two three", "blue", "hello"],
        }
    )
    report = write_report(
        "chat",
        "generation",
        "v1",
        {"train": frame.iloc[:3], "validation": frame.iloc[0:0], "test": frame.iloc[3:]},
        Workspace(tmp_path),
    )
    md = report.markdown
    for heading in ("Rows per split", "Lengths", "Vocabulary", "Duplicates", "Examples"):
        assert f"\n## {heading}\n" in md
    assert "Label balance" not in md and "n-grams" not in md
    assert report.summary["duplicates"]["rows"] == 1  # "Say hi" prompt in train and test
    assert set(report.summary["lengths"]) == {"prompt", "response"}
    assert report.summary["lengths"]["response"]["all"]["tokens"]["max"] == 3
    assert sorted(p.name for p in report.plots) == ["lengths-prompt.png", "lengths-response.png"]
    assert all(p.read_bytes().startswith(PNG) for p in report.plots)


def test_chat_report_describes_conversations(tmp_path):
    from tunelab.data import chat

    def conversation(*texts, system=None):
        turns = [{"role": "system", "content": system}] if system else []
        roles = ("user", "assistant")
        return chat.dumps(
            turns + [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]
        )

    train = pd.DataFrame(
        {
            "messages": [
                conversation("Boil an egg?", "Seven *minutes*.", system="Be brief."),
                conversation("Rice?", "Rinse it.", "Water?", "One and a half cups."),
                conversation("Tea?", "Steep three minutes."),
            ]
        }
    )
    test = pd.DataFrame({"messages": [conversation("rice?", "Rinse  it.", "Water?", "Less.")]})
    counter = TokenCounter(
        count=lambda t: len(t.split()),
        label="words (test)",
        # Each turn costs its words plus two template tokens.
        examples=lambda task, frame: [
            sum(len(m["content"].split()) + 2 for m in chat.loads(v)) for v in frame["messages"]
        ],
        chat_template=True,
    )
    report = write_report(
        "chat",
        "chat",
        "v1",
        {"train": train, "validation": train.iloc[0:0], "test": test},
        Workspace(tmp_path),
        token_counter=counter,
    )
    md = report.markdown
    for heading in ("Conversations per split", "Turns", "Lengths", "Duplicates", "Examples"):
        assert f"\n## {heading}\n" in md
    assert report.summary["rows"] == {"train": 3, "validation": 0, "test": 1, "total": 4}
    turns = report.summary["turns"]
    assert (turns["train"]["min"], turns["train"]["max"], turns["all"]["median"]) == (2, 4, 3.5)
    assert turns["train"]["with_system_turn"] == round(1 / 3, 4)
    assert report.summary["turn_tokens"]["assistant"]["max"] == 5
    # Conversation tokens are the gate's: through the (test) template, not the JSON text.
    assert report.summary["lengths"]["conversation"]["train"]["tokens"]["max"] == 17
    assert "the whole conversation through the chat template" in md
    assert report.summary["duplicates"]["rows"] == 0  # a different last turn: not a repeat
    assert sorted(p.name for p in report.plots) == ["lengths-conversation.png", "turns.png"]
    assert "### Conversation 1 (" in md and "\n- **assistant:** " in md
    assert "Seven *minutes*" not in md  # texts from the data are escaped
    assert '"role"' not in md  # conversations are shown turn by turn, never as JSON


def test_preference_report_compares_chosen_and_rejected(tmp_path):
    frame = pd.DataFrame(
        {
            "prompt": ["q1", "q2", "q3", "q4"],
            "chosen": ["a long and careful answer", "also quite a long answer", "short", "same"],
            "rejected": ["no", "nope", "a much longer rejected answer", "same"],
        }
    )
    counter = TokenCounter(count=lambda t: len(t), label="characters as tokens (test)")
    report = write_report(
        "prefs",
        "preference",
        "v1",
        {"train": frame, "validation": frame.iloc[0:0], "test": frame.iloc[0:0]},
        Workspace(tmp_path),
        token_counter=counter,
    )
    md = report.markdown
    assert "\n## Chosen vs rejected length\n" in md
    assert "characters as tokens (test)" in md
    comparison = report.summary["chosen_vs_rejected"]
    assert comparison["pairs"] == 4
    assert (
        comparison["chosen_longer"],
        comparison["rejected_longer"],
        comparison["same_length"],
    ) == (2, 1, 1)
    rows = {cells(r)[0]: cells(r)[1:] for r in table_rows(md, "Chosen vs rejected length")}
    assert rows["chosen longer"] == ["2", "50.0%"]
    assert set(report.summary["lengths"]) == {"prompt", "chosen", "rejected"}
    assert "chosen-vs-rejected.png" in {p.name for p in report.plots}
    header = cells(table_rows(md, "Examples")[0].replace("| ---", "|x"))
    assert len(header) == 4


def test_hostile_rows_and_labels_are_shown_as_text(tmp_path):
    from html_check import HOSTILE, assert_inert

    from tunelab import markdown

    frame = pd.DataFrame(
        {
            "text": [HOSTILE, "a plain row", "another plain row", "[y](data:text/html,z)"],
            "label": [HOSTILE, "plain", "plain", HOSTILE],
        }
    )
    report = write_report(
        "hostile",
        "classification",
        "v1",
        {"train": frame, "test": frame.iloc[:2]},
        Workspace(tmp_path),
        seed=1,
    )
    page = markdown.render_html(report.markdown, "data", report.directory)

    assert_inert(page)
    assert "<script" not in page and '<img src="http' not in page
    assert 'href="javascript' not in page and 'href="data' not in page
    assert "[x](javascript:alert(1)) ![](http://evil.example/x.png) &lt;script&gt;" in page
    assert "[y](data:text/html,z)" in page


def test_cleaning_and_warnings_sections(tmp_path):
    from tunelab.config import CleanConfig
    from tunelab.data.clean import clean_splits

    splits = classification_splits()
    # "Truly  WONDERFUL" in test already leaks train row 3.
    splits["train"].loc[10] = ["Truly wonderful", "pos", 11]  # repeats train row 3
    splits["train"].loc[11] = ["<b>boring and dreadful</b> | x", "neg", 12]
    splits["test"].loc[2] = ["<b>boring and dreadful</b> | x", "neg"]
    policy = CleanConfig(drop_duplicates=True, drop_leaked="train")
    cleaned = clean_splits(splits, "classification", policy)
    warning = "1 of 12 rows (8.3%) show mojibake: train row 1 'cafÃ©'"
    report = write_report(
        "movies",
        "classification",
        "v2",
        cleaned.frames,
        Workspace(tmp_path),
        cleaning=cleaned.cleaning,
        warnings=[warning],
    )
    markdown = report.markdown
    assert markdown.index("## Warnings") < markdown.index("## Rows per split")
    assert markdown.index("## Rows per split") < markdown.index("## Cleaning")
    assert report.summary["warnings"] == [warning]

    assert [cells(r) for r in table_rows(markdown, "Cleaning")][:3] == [
        ["train", "12", "0", "1", "2", "9", "0"],
        ["validation", "0", "0", "0", "0", "0", "0"],
        ["test", "3", "0", "0", "0", "3", "0"],
    ]
    dropped = [cells(r) for r in table_rows(markdown, "Cleaning")[3:]]
    assert dropped[0] == ["split", "reason", "source row", "text", "detail"]
    assert dropped[2:] == [
        ["train", "duplicate", "11", "Truly wonderful", "repeats train row 3"],
        ["train", "leaked", "3", "truly wonderful", "also in test"],
        ["train", "leaked", "12", "&lt;b&gt;boring and dreadful&lt;/b&gt; \\| x", "also in test"],
    ]
    assert report.summary["cleaning"]["dropped"]["train"] == {
        "empty": 0,
        "duplicate": 1,
        "leaked": 2,
    }
    assert report.summary["rows"]["train"] == 9


def test_cleaning_off_says_so(tmp_path):
    from tunelab.config import CleanConfig
    from tunelab.data.clean import clean_splits

    cleaned = clean_splits(classification_splits(), "classification", CleanConfig())
    report = write_report(
        "movies",
        "classification",
        "v3",
        cleaned.frames,
        Workspace(tmp_path),
        cleaning=cleaned.cleaning,
    )
    section = report.markdown.split("## Cleaning\n", 1)[1].split("\n## ", 1)[0]
    assert section.strip().startswith("Off (data.clean: strip=False")
    assert "## Warnings" not in report.markdown
    assert report.summary["cleaning"]["dropped_total"] == 0
