import json

import pandas as pd
import pytest

from tunelab import config
from tunelab.data import sources
from tunelab.data.schema import SOURCE_ROW
from tunelab.errors import DataSchemaError, DataSourceError


def data_cfg(source, *overrides):
    return config.load(None, [f"data.source={source}", *overrides]).data


def write_csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name", list(sources.BUNDLED))
def test_bundled_samples_load_in_canonical_form(name):
    info = sources.BUNDLED[name]
    cfg = data_cfg(f"bundled:{name}", f"data.task={info['task']}")
    raw = sources.ingest(cfg)
    frame = raw.frames[sources.WHOLE]
    minimum = {
        "sentiment": 600,
        "preferences": 300,
        "instructions": 150,
        "chat": 180,
        "prompts": 200,
    }[name]
    assert len(frame) >= minimum
    assert frame.notna().all().all()
    if info["labels"]:
        assert set(frame["label"]) == set(info["labels"])


def test_bundled_sentiment_is_roughly_balanced():
    frame = sources.ingest(data_cfg("bundled:sentiment")).frames[sources.WHOLE]
    counts = frame["label"].value_counts()
    assert counts.max() / counts.min() < 1.3


def test_unknown_bundled_name_lists_known_ones():
    with pytest.raises(DataSourceError, match="Bundled datasets: sentiment"):
        sources.ingest(data_cfg("bundled:sentimnet"))


def test_csv_with_column_mapping(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["good,pos", "bad,neg"], header="review,stars")
    raw = sources.ingest(data_cfg(str(path), "data.columns={review: text, stars: label}"))
    frame = raw.frames["all"]
    assert list(frame.columns) == ["text", "label", SOURCE_ROW]
    assert frame["text"].tolist() == ["good", "bad"]


def test_missing_file_says_where_and_what_to_do(tmp_path):
    with pytest.raises(DataSourceError) as err:
        sources.ingest(data_cfg(str(tmp_path / "missing.csv")))
    assert "missing.csv does not exist" in str(err.value)
    assert "bundled:" in str(err.value)


def test_missing_required_column_is_named(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["good,x"], header="text,sentiment")
    with pytest.raises(DataSchemaError) as err:
        sources.ingest(data_cfg(str(path)))
    assert "['label']" in str(err.value) and "d.csv" in str(err.value)
    assert "data.columns" in str(err.value)


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nok,pos\ncaf\xe9 au lait,neg\n".encode("latin-1"))
    with pytest.raises(DataSourceError, match=r"latin.csv: line 3 .*not UTF-8"):
        sources.ingest(data_cfg(str(path)))


def test_corrupt_csv(tmp_path):
    path = write_csv(tmp_path / "bad.csv", ['"unclosed quote,pos', "x,y"])
    with pytest.raises(DataSourceError, match="bad.csv: not a readable CSV"):
        sources.ingest(data_cfg(str(path)))


def test_ragged_csv(tmp_path):
    path = write_csv(tmp_path / "ragged.csv", ["a,pos", "b,neg,extra,fields"])
    with pytest.raises(DataSourceError, match="ragged.csv"):
        sources.ingest(data_cfg(str(path)))


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    pd.DataFrame({"text": ["a"] * 50, "label": ["x"] * 50}).to_parquet(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataSourceError, match="broken.parquet: not a readable Parquet"):
        sources.ingest(data_cfg(str(path)))


def test_bad_jsonl_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", label}\n')
    with pytest.raises(DataSourceError, match="d.jsonl: line 2 is not valid JSON"):
        sources.ingest(data_cfg(str(path)))


def test_empty_csv_cell_stays_empty_for_the_gate(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["hello,pos", ",neg"])
    frame = sources.ingest(data_cfg(str(path))).frames["all"]
    assert frame["text"].tolist() == ["hello", ""]


def test_folder_with_split_files(tmp_path):
    for split in ("train", "dev", "test"):
        write_csv(tmp_path / f"{split}.csv", [f"{split} text,pos"])
    raw = sources.ingest(data_cfg(str(tmp_path)))
    assert set(raw.frames) == {"train", "validation", "test"}


def test_folder_with_unknown_split_name(tmp_path):
    write_csv(tmp_path / "train.csv", ["a,pos"])
    write_csv(tmp_path / "holdout.csv", ["b,pos"])
    with pytest.raises(DataSourceError, match="which split 'holdout'"):
        sources.ingest(data_cfg(str(tmp_path)))


def test_source_splits_mapping(tmp_path):
    write_csv(tmp_path / "train.csv", ["a,pos"])
    write_csv(tmp_path / "holdout.csv", ["b,pos"])
    raw = sources.ingest(
        data_cfg(str(tmp_path), "data.source_splits={train: train, test: holdout}")
    )
    assert raw.frames["test"]["text"].tolist() == ["b"]


def test_max_rows_caps_proportionally():
    raw = sources.ingest(data_cfg("bundled:sentiment", "data.max_rows=60"))
    assert len(raw.frames["all"]) == 60


def test_jsonl_integer_labels_become_strings(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": i}) for i, t in enumerate("ab")))
    frame = sources.ingest(data_cfg(str(path))).frames["all"]
    assert frame["label"].tolist() == ["0", "1"]


def test_hub_offline_says_hub_unreachable_and_how_to_use_a_file():
    with pytest.raises(DataSourceError) as err:
        sources.ingest(data_cfg("hf:mteb/tweet_sentiment_extraction"))
    message = str(err.value)
    assert "mteb/tweet_sentiment_extraction" in message
    assert "hub may be unreachable" in message
    assert "data.source to that file" in message
