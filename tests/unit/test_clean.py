"""The recorded cleaning policy: what it drops, that the gate agrees, and the data stage."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tunelab import config
from tunelab.config import CleanConfig
from tunelab.data import prepare
from tunelab.data.check_messages import LEAKED, REPEATS
from tunelab.data.checks import _examples_frame
from tunelab.data.clean import clean_splits
from tunelab.data.schema import SOURCE_ROW
from tunelab.data.tokens import whitespace_counter
from tunelab.errors import DataValidationError
from tunelab.workspace import Workspace

ALL_ON = CleanConfig(strip=True, drop_empty=True, drop_duplicates=True, drop_leaked="train")
LABELS = ("negative", "neutral", "positive")


def rows_frame(rows, columns=("text", "label")) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=list(columns)).astype(object)
    out[SOURCE_ROW] = range(1, len(out) + 1)
    return out


def unique_rows(split: str, n: int) -> list[tuple[str, str]]:
    return [(f"{label} review {i} in {split}", label) for label in LABELS for i in range(n)]


def messy_rows(empty_label: bool = True) -> dict[str, list[tuple]]:
    """Unique rows plus: three empty rows, three repeats, two leaks."""
    train = unique_rows("train", 10)
    train[1] = ("", "negative")  # row 2
    train[4] = ("   ", "neutral")  # row 5 (blank)
    train[7] = ("a text without a label", None) if empty_label else ("", "positive")  # row 8
    train += [
        ("  Negative REVIEW 0 in train ", "negative"),  # row 31: repeats row 1
        ("negative review 0 in train", "negative"),  # row 32: repeats row 1
        ("positive review 9 in train", "positive"),  # row 33: repeats row 30
        ("Held out and leaked", "neutral"),  # row 34: also in validation
        ("held   out in test too", "positive"),  # row 35: also in test
    ]
    validation = unique_rows("validation", 2) + [("held out and LEAKED", "neutral")]
    test = unique_rows("test", 2) + [("Held out in test too", "positive")]
    return {"train": train, "validation": validation, "test": test}


def messy_frames() -> dict[str, pd.DataFrame]:
    return {split: rows_frame(rows) for split, rows in messy_rows().items()}


def gate_view(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The stacked frame the gate validates (pandas only, no GX)."""
    return _examples_frame(frames, "classification", 256, whitespace_counter())


def test_off_by_default_leaves_the_splits_alone():
    frames = messy_frames()
    cleaned = clean_splits(frames, "classification", config.load(None).data.clean)
    assert not cleaned.cleaning.active
    assert all(cleaned.frames[s] is frames[s] for s in frames)
    assert cleaned.cleaning.dropped == []
    assert (
        cleaned.cleaning.rows_after
        == cleaned.cleaning.rows_before
        == {
            "train": 35,
            "validation": 7,
            "test": 7,
        }
    )


def test_policy_drops_exactly_what_the_gate_counts():
    frames = messy_frames()
    before = gate_view(frames)
    cleaned = clean_splits(frames, "classification", ALL_ON)
    record = cleaned.cleaning

    dropped = [(d.split, d.reason, d.source_row, d.detail) for d in record.dropped]
    assert dropped == [
        ("train", "empty", 2, "empty text"),
        ("train", "empty", 5, "empty text"),
        ("train", "empty", 8, "empty label"),
        ("train", "duplicate", 31, "repeats train row 1"),
        ("train", "duplicate", 32, "repeats train row 1"),
        ("train", "duplicate", 33, "repeats train row 30"),
        ("train", "leaked", 34, "also in validation"),
        ("train", "leaked", 35, "also in test"),
    ]
    assert record.dropped[3].text == "Negative REVIEW 0 in train"  # stripped first
    assert record.counts()["train"] == {"empty": 3, "duplicate": 3, "leaked": 2}
    assert record.counts()["test"] == {"empty": 0, "duplicate": 0, "leaked": 0}
    assert record.rows_after == {"train": 27, "validation": 7, "test": 7}
    assert record.stripped == {"train": 2, "validation": 0, "test": 0}

    # Held-out splits stay whole; what the gate counted as repeats or leaks is gone.
    pd.testing.assert_frame_equal(cleaned.frames["test"], frames["test"])
    after = gate_view(cleaned.frames)
    assert int(after[REPEATS].sum()) == 0 and not after[LEAKED].any()
    assert int(before[REPEATS].sum()) == 5  # 3 within train + the 2 held-out copies
    assert int(before[LEAKED].sum()) == 4
    # Row order is kept: the train split reads as before, minus the dropped rows.
    gone = {d.source_row for d in record.dropped}
    assert list(cleaned.frames["train"][SOURCE_ROW]) == [
        r for r in frames["train"][SOURCE_ROW] if r not in gone
    ]


def test_cleaning_is_deterministic():
    one = clean_splits(messy_frames(), "classification", ALL_ON)
    two = clean_splits(messy_frames(), "classification", ALL_ON)
    assert one.cleaning.to_dict() == two.cleaning.to_dict()
    for split in one.frames:
        pd.testing.assert_frame_equal(one.frames[split], two.frames[split])
    json.dumps(one.cleaning.to_dict(), allow_nan=False)  # the record is plain JSON


def test_each_option_alone_and_preference_keys():
    only_leaks = clean_splits(messy_frames(), "classification", CleanConfig(drop_leaked="train"))
    assert [d.source_row for d in only_leaks.cleaning.dropped] == [34, 35]

    columns = ("prompt", "chosen", "rejected")
    frames = {
        "train": rows_frame(
            [("q1?", "good", "bad"), ("Q1?", "fine", "worse"), ("q2?", "", "bad")], columns
        ),
        "test": rows_frame([("q3?", "good", "bad")], columns),
    }
    cleaned = clean_splits(frames, "preference", ALL_ON)
    assert [(d.reason, d.source_row, d.detail) for d in cleaned.cleaning.dropped] == [
        ("empty", 3, "empty chosen"),
        ("duplicate", 2, "repeats train row 1"),
    ]


@pytest.fixture
def messy_source(tmp_path, monkeypatch):
    """A folder of CSV files (the source's own splits) with the messy rows."""
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    folder = tmp_path / "source"
    folder.mkdir()
    # Ingest refuses labels outside data.labels, an empty one included: empty texts here.
    for split, rows in messy_rows(empty_label=False).items():
        pd.DataFrame(rows, columns=["text", "label"]).to_csv(folder / f"{split}.csv", index=False)
    return folder


def test_the_data_stage_fails_without_the_policy_and_passes_with_it(messy_source, tmp_path):
    workspace = Workspace(tmp_path / "ws")
    base = [
        "data.name=messy",
        f"data.source={messy_source}",
        f"data.labels=[{', '.join(LABELS)}]",
    ]
    with pytest.raises(DataValidationError) as info:
        prepare.prepare_dataset(config.load(None, base), workspace)
    message = str(info.value)
    for option in (
        "data.clean.drop_empty=true",
        "data.clean.drop_duplicates=true",
        "data.checks.max_duplicate_rate",
        "data.clean.drop_leaked=train",
    ):
        assert option in message, message
    assert not (workspace.versions_dir / "messy").exists()

    policy = [
        "data.clean.drop_empty=true",
        "data.clean.drop_duplicates=true",
        "data.clean.drop_leaked=train",
    ]
    prepared = prepare.prepare_dataset(config.load(None, base + policy), workspace)
    assert prepared.validation.success
    assert prepared.rows == {"train": 27, "validation": 7, "test": 7}

    record = workspace.versions_dir / "messy" / prepared.version_id
    stored = json.loads((record / "version.json").read_text(encoding="utf-8"))
    assert stored["cleaning"]["policy"]["drop_leaked"] == "train"
    assert stored["cleaning"]["dropped"]["train"] == {"empty": 3, "duplicate": 3, "leaked": 2}
    assert stored["cleaning"]["dropped_total"] == 8
    listed = json.loads((record / "cleaning.json").read_text(encoding="utf-8"))["rows"]
    assert len(listed) == 8 and listed[-1]["detail"] == "also in test"

    markdown = prepared.report.markdown
    section = markdown.split("## Cleaning", 1)[1].split("\n## ", 1)[0]
    assert "Dropped rows (8)" in section
    assert "| train | leaked | 35 | held   out in test too | also in test |" in section
    assert prepared.report.summary["cleaning"]["dropped_total"] == 8
