import pandas as pd
import pytest

from tunelab import config
from tunelab.data.schema import SOURCE_ROW, example_keys
from tunelab.data.splits import make_splits
from tunelab.errors import SplitError


def frame(n_per_label=20, labels=("neg", "neu", "pos")):
    rows = [(f"{label} example number {i}", label) for label in labels for i in range(n_per_label)]
    out = pd.DataFrame(rows, columns=["text", "label"])
    out[SOURCE_ROW] = range(1, len(out) + 1)
    return out


def cfg(*overrides):
    return config.load(None, list(overrides)).data


def test_split_is_deterministic_and_stratified():
    a = make_splits({"all": frame()}, cfg())
    b = make_splits({"all": frame()}, cfg())
    for name in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(a[name], b[name])
    assert [len(a[s]) for s in ("train", "validation", "test")] == [48, 6, 6]
    for name in ("train", "validation", "test"):
        counts = a[name]["label"].value_counts()
        assert counts.nunique() == 1, f"{name} is not stratified: {counts.to_dict()}"


def test_seed_changes_the_split():
    a = make_splits({"all": frame()}, cfg("data.seed=1"))
    b = make_splits({"all": frame()}, cfg("data.seed=2"))
    assert set(a["test"]["text"]) != set(b["test"]["text"])


def test_duplicates_land_in_one_split():
    data = frame()
    dup = data.iloc[[0, 1, 2]].copy()
    dup["text"] = dup["text"].str.upper() + "  "  # same after normalisation
    dup[SOURCE_ROW] = range(1000, 1003)
    splits = make_splits({"all": pd.concat([data, dup])}, cfg())
    where = {}
    for name, part in splits.items():
        for key in example_keys(part, "classification"):
            where.setdefault(key, set()).add(name)
    assert all(len(names) == 1 for names in where.values())


def test_adding_rows_keeps_most_test_rows():
    before = make_splits({"all": frame(20)}, cfg())["test"]
    after = make_splits({"all": frame(22)}, cfg())["test"]
    kept = set(before["text"]) & set(after["text"])
    assert len(kept) >= len(before) - 3


def test_given_train_and_test_keep_test_and_carve_validation():
    train, test = frame(20), frame(3, labels=("neg", "neu", "pos"))
    test["text"] = "held out " + test["text"]
    splits = make_splits({"train": train, "test": test}, cfg())
    assert splits["test"]["text"].tolist() == test["text"].tolist()
    assert len(splits["validation"]) > 0
    assert len(splits["train"]) + len(splits["validation"]) == len(train)


def test_zero_validation_fraction_gives_empty_validation():
    splits = make_splits(
        {"all": frame()}, cfg("data.splits={train: 0.9, validation: 0, test: 0.1}")
    )
    assert len(splits["validation"]) == 0 and len(splits["test"]) == 6


def test_too_few_rows_for_the_splits():
    with pytest.raises(SplitError) as err:
        make_splits({"all": frame(2)}, cfg())
    assert "label 'neg' has 2 distinct example(s)" in str(err.value)
    assert "data.splits.validation=0" in str(err.value)


def test_generation_split_without_labels():
    data = pd.DataFrame({"prompt": [f"p{i}" for i in range(30)], "response": ["r"] * 30})
    data[SOURCE_ROW] = range(1, 31)
    splits = make_splits({"all": data}, cfg("data.task=generation"))
    assert sum(len(p) for p in splits.values()) == 30
