"""Data options for real data sets: per-split row caps and column maps, clear errors for
colliding renames and undeclared labels."""

import pandas as pd
import pytest

from tunelab import config
from tunelab.data import sources
from tunelab.data.splits import make_splits
from tunelab.errors import DataSchemaError, DataValidationError

LABELS = ("neg", "neu", "pos")


def data_cfg(source, *overrides):
    return config.load(None, [f"data.source={source}", *overrides]).data


def prepare(cfg):
    return make_splits(sources.ingest(cfg).frames, cfg)


def write_rows(path, rows, header="text,label"):
    lines = [",".join(f'"{v}"' for v in row) for row in rows]
    path.write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def labelled(prefix, counts):
    return [
        (f"{prefix} {label} example {i}", label) for label, n in counts.items() for i in range(n)
    ]


def test_train_cap_keeps_the_given_test_split_whole(tmp_path):
    write_rows(tmp_path / "train.csv", labelled("train", {"neg": 40, "neu": 20, "pos": 40}))
    write_rows(tmp_path / "test.csv", labelled("test", {"neg": 7, "neu": 5, "pos": 7}))
    cfg = data_cfg(str(tmp_path), "data.max_rows={train: 30}")
    splits = prepare(cfg)
    uncapped = prepare(data_cfg(str(tmp_path)))
    assert len(splits["train"]) == 30
    assert len(splits["test"]) == 19
    pd.testing.assert_frame_equal(splits["test"], uncapped["test"])
    pd.testing.assert_frame_equal(splits["validation"], uncapped["validation"])
    # The capped train split is drawn from the uncapped one and keeps its class mix.
    assert set(splits["train"]["text"]) <= set(uncapped["train"]["text"])
    assert splits["train"]["label"].value_counts().to_dict() == {"neg": 12, "pos": 12, "neu": 6}


def test_train_cap_on_a_single_file_caps_after_splitting(tmp_path):
    path = write_rows(tmp_path / "d.csv", labelled("row", {"neg": 60, "neu": 30, "pos": 30}))
    splits = prepare(data_cfg(str(path), "data.max_rows={train: 24}"))
    uncapped = prepare(data_cfg(str(path)))
    assert len(splits["train"]) == 24
    pd.testing.assert_frame_equal(splits["test"], uncapped["test"])
    pd.testing.assert_frame_equal(splits["validation"], uncapped["validation"])
    assert splits["train"]["label"].value_counts().to_dict() == {"neg": 12, "neu": 6, "pos": 6}


def test_split_cap_is_seeded(tmp_path):
    path = write_rows(tmp_path / "d.csv", labelled("row", {"neg": 50, "pos": 50}))
    a = prepare(data_cfg(str(path), "data.max_rows={train: 20}"))["train"]
    b = prepare(data_cfg(str(path), "data.max_rows={train: 20}"))["train"]
    c = prepare(data_cfg(str(path), "data.max_rows={train: 20}", "data.seed=7"))["train"]
    pd.testing.assert_frame_equal(a, b)
    assert set(a["text"]) != set(c["text"])


def test_split_cap_keeps_a_rare_label():
    frame = pd.DataFrame(labelled("row", {"neg": 97, "pos": 3}), columns=["text", "label"])
    frame["source_row"] = range(1, 101)
    cfg = config.load(
        None, ["data.max_rows={train: 10}", "data.splits.validation=0", "data.splits.train=0.9"]
    ).data
    train = make_splits({"train": frame, "test": frame.head(2)}, cfg)["train"]
    assert len(train) == 10 and set(train["label"]) == {"neg", "pos"}


def test_one_number_still_caps_the_whole_data_set():
    raw = sources.ingest(data_cfg("bundled:sentiment", "data.max_rows=60"))
    assert len(raw.frames["all"]) == 60


def write_summaries(folder, test_column):
    write_rows(
        folder / "train.csv",
        [(f"article {i}", f"summary {i}") for i in range(20)],
        header="article,summary",
    )
    write_rows(
        folder / "test.csv",
        [(f"test article {i}", f"test summary {i}") for i in range(5)],
        header=f"article,{test_column}",
    )


@pytest.mark.parametrize(
    "split_columns", ["{test: {summary1: response}}", "{test: {summary1: summary}}"]
)
def test_split_columns_map_a_column_named_differently_per_file(tmp_path, split_columns):
    write_summaries(tmp_path, "summary1")
    cfg = data_cfg(
        str(tmp_path),
        "data.task=generation",
        "data.columns={article: prompt, summary: response}",
        f"data.split_columns={split_columns}",
    )
    raw = sources.ingest(cfg)
    assert raw.frames["test"]["response"].tolist()[0] == "test summary 0"
    assert raw.frames["train"]["response"].tolist()[0] == "summary 0"
    splits = make_splits(raw.frames, cfg)
    assert len(splits["test"]) == 5


def test_without_split_columns_the_differing_file_is_named(tmp_path):
    write_summaries(tmp_path, "summary1")
    cfg = data_cfg(
        str(tmp_path), "data.task=generation", "data.columns={article: prompt, summary: response}"
    )
    with pytest.raises(DataSchemaError, match=r"\[test\].*maps \['summary'\]"):
        sources.ingest(cfg)


def test_split_columns_on_a_single_file_says_use_columns(tmp_path):
    path = write_rows(tmp_path / "d.csv", labelled("row", {"neg": 5, "pos": 5}), "review,label")
    with pytest.raises(DataSchemaError, match="not split yet.*data.columns"):
        sources.ingest(data_cfg(str(path), "data.split_columns={test: {review: text}}"))


def hub_like_file(tmp_path):
    rows = [(f"text {i}", str(i % 2), ["negative", "positive"][i % 2]) for i in range(40)]
    return write_rows(tmp_path / "hub.csv", rows, header="text,label,label_text")


def test_rename_onto_an_existing_column_is_a_clear_error(tmp_path):
    cfg = data_cfg(str(hub_like_file(tmp_path)), "data.columns={label_text: label}")
    with pytest.raises(DataSchemaError) as err:
        prepare(cfg)
    message = str(err.value)
    assert "hub.csv" in message and "['label_text']" in message
    assert "already has a 'label' column" in message
    assert "label: label_original, label_text: label" in message


def test_renames_apply_together(tmp_path):
    cfg = data_cfg(
        str(hub_like_file(tmp_path)), "data.columns={label: label_id, label_text: label}"
    )
    splits = prepare(cfg)
    assert set(splits["train"]["label"]) == {"negative", "positive"}


def test_two_columns_mapped_to_one_is_a_clear_error(tmp_path):
    path = write_rows(tmp_path / "d.csv", [("a", "b", "pos")], header="title,body,label")
    with pytest.raises(DataSchemaError, match=r"\['title', 'body'\] are all mapped to 'text'"):
        sources.ingest(data_cfg(str(path), "data.columns={title: text, body: text}"))


def test_rare_undeclared_label_is_reported_as_undeclared(tmp_path):
    rows = labelled("row", {"neg": 20, "neu": 20, "pos": 20})
    rows[5:5] = [("a mixed review", "mixed"), ("another mixed one", "mixed")]
    path = write_rows(tmp_path / "d.csv", rows)
    with pytest.raises(DataValidationError) as err:
        prepare(data_cfg(str(path), "data.labels=[neg, neu, pos]"))
    message = str(err.value)
    assert "d.csv" in message and "outside data.labels [neg, neu, pos]" in message
    assert "'mixed' (2 rows, e.g. row 6: 'a mixed review')" in message
    assert "Add them to data.labels" in message
    assert "need at least" not in message


def test_a_blank_label_is_left_to_the_gate_and_cleaning(tmp_path):
    """Not an undeclared label: the gate's null checks name it, drop_empty can drop it."""
    rows = labelled("row", {"neg": 20, "neu": 20, "pos": 20})
    rows.append(("a review nobody labelled", ""))
    path = write_rows(tmp_path / "d.csv", rows)
    ingested = sources.ingest(data_cfg(str(path), "data.labels=[neg, neu, pos]"))
    assert sum(len(frame) for frame in ingested.frames.values()) == 61


def test_labels_of_the_wrong_column_suggest_mapping_another(tmp_path):
    with pytest.raises(DataValidationError, match="label_text: label"):
        sources.ingest(data_cfg(str(hub_like_file(tmp_path)), "data.labels=[negative, positive]"))
