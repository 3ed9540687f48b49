"""The validation gate: real GX suites over tiny frames, one failure per test."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tunelab import config
from tunelab.data import check_messages, checks
from tunelab.data.schema import SOURCE_ROW
from tunelab.data.tokens import TokenCounter
from tunelab.errors import DataValidationError
from tunelab.workspace import Workspace

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    """One GX project reused by the failure tests, as a workspace is across runs."""
    return Workspace(tmp_path_factory.mktemp("gate"))


def cfg(name: str, *overrides: str):
    return config.load(None, [f"data.name={name}", *overrides])


def rows_frame(rows, columns=("text", "label")) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=list(columns))
    out[SOURCE_ROW] = range(1, len(out) + 1)
    return out


def classification(train=10, validation=2, test=2, per_label=None):
    """Unique texts, every label in every split; per_label overrides the train count."""
    per_label = per_label or {}
    sizes = {"train": train, "validation": validation, "test": test}
    out = {}
    for split, size in sizes.items():
        rows = [
            (f"{label} review {i} from the {split} split", label)
            for label in LABELS
            for i in range(per_label.get(label, size) if split == "train" else size)
        ]
        out[split] = rows
    return out


def frames(rows: dict) -> dict[str, pd.DataFrame]:
    return {split: rows_frame(r) for split, r in rows.items()}


def validate(rows, workspace, name, *overrides, labels=True, **kwargs):
    label_set = [f"data.labels=[{', '.join(LABELS)}]"] if labels else []
    run_cfg = cfg(name, *label_set, *overrides)
    data = rows if isinstance(next(iter(rows.values())), pd.DataFrame) else frames(rows)
    return checks.validate_splits(data, run_cfg, workspace, **kwargs)


def only_failure(outcome) -> check_messages.Failure:
    assert not outcome.success
    assert len(outcome.failures) == 1, check_messages.describe_failures(outcome)
    return outcome.failures[0]


def gate_message(outcome) -> str:
    with pytest.raises(DataValidationError) as info:
        checks.raise_for_failures(outcome)
    assert info.value.failures == outcome.failures
    assert info.value.docs_path == outcome.docs_path
    return str(info.value)


def test_clean_classification_passes_and_writes_data_docs(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    outcome = validate(classification(), workspace, "clean")
    assert outcome.success, check_messages.describe_failures(outcome)
    assert outcome.failures == []
    stats = outcome.statistics
    assert stats["evaluated"] == stats["successful"] > 10 and stats["unsuccessful"] == 0
    checks.raise_for_failures(outcome)  # no error
    assert "passed" in check_messages.describe_failures(outcome)

    docs = Path(outcome.docs_path)
    assert docs.is_file() and docs.suffix == ".html"
    assert docs.is_relative_to(workspace.gx_dir)
    pages = list((workspace.gx_dir / "uncommitted" / "data_docs").rglob("*.html"))
    assert any("clean-examples" in str(p) for p in pages)
    assert any("clean-classes" in str(p) for p in pages)
    assert not (workspace.gx_dir / "gx").exists(), "GX nested its own gx/ folder"
    # Data Docs read in plain words.
    page = next(p for p in pages if "validations" in p.parts and "clean-examples" in str(p))
    assert "labels are in the declared set" in page.read_text(encoding="utf-8")

    results = json.loads(json.dumps(outcome.results, allow_nan=False))
    assert results["success"] is True
    assert set(results["validations"]) == {"examples", "classes"}
    assert results["token_counter"].startswith("whitespace tokens")


def test_null_texts_and_labels_are_named(shared):
    rows = classification()
    rows["train"][3] = (None, "neutral")
    data = frames(rows)
    data["train"].loc[7, "text"] = float("nan")
    data["train"].loc[8, "label"] = None
    outcome = validate(data, shared, "nulls")
    by_check = {f.check: f for f in outcome.failures}
    text = by_check["every row has a text"]
    assert text.observed == "2 rows with no text (null): train rows 4, 8"
    assert text.split == "train"
    assert text.threshold == "allowed: no missing values"
    assert by_check["every row has a label"].observed.endswith("train row 9")
    message = gate_message(outcome)
    assert "every row has a text" in message and "train rows 4, 8" in message
    assert "Data Docs" in message and outcome.docs_path in message
    assert "Nothing was versioned" in message


def test_empty_text_is_reported_once(shared):
    rows = classification()
    rows["test"][1] = ("", "negative")
    rows["test"][2] = ("   ", "negative")
    failure = only_failure(validate(rows, shared, "empty"))
    assert failure.check == "no text is empty or blank"
    assert failure.observed == "2 rows with an empty or blank text: test rows 2, 3"
    assert failure.threshold == "allowed: no empty strings"
    assert "data.clean.drop_empty=true" in failure.fix


def test_unknown_label(shared):
    rows = classification()
    rows["train"][4] = ("a mixed review", "mixed")
    rows["train"][9] = ("another mixed one", "mixed")
    outcome = validate(rows, shared, "unknown-label")
    failure = only_failure(outcome)
    assert failure.check == "labels are in the declared set"
    assert failure.observed == "2 rows with labels outside the set: 'mixed' (train rows 5, 10)"
    assert failure.threshold == "allowed: negative, neutral, positive"
    assert "'mixed'" in gate_message(outcome)


def test_leakage_between_splits_names_examples_and_splits(shared):
    rows = classification()
    leaked_text = rows["train"][0][0]
    rows["test"][1] = (leaked_text.upper() + "  ", "negative")  # same after normalisation
    outcome = validate(rows, shared, "leaky")
    failure = only_failure(outcome)
    assert "leak" in failure.check
    assert failure.observed == (
        f"1 example leak across splits (2 rows): '{leaked_text}' in train and test "
        "(train row 1; test row 2)"
    )
    message = gate_message(outcome)
    assert "leak" in message.lower() and "Data Docs" in message
    assert "Fix: data.clean.drop_leaked=train" in message


def test_duplicate_heavy_data(shared):
    rows = classification()
    original = rows["train"][0]
    rows["train"] += [(f"  {original[0].title()} ", original[1])] * 5
    failure = only_failure(validate(rows, shared, "dupes"))
    assert "repeat an earlier row" in failure.check
    assert failure.observed.startswith("10.6% of rows (5 of 47) repeat an earlier row: ")
    assert f"'{original[0]}' x6 (train rows 1, 31, 32, 33 and 2 more)" in failure.observed
    assert failure.threshold == "at most 5.0% of rows"
    assert "data.clean.drop_duplicates=true" in failure.fix
    assert "data.checks.max_duplicate_rate" in failure.fix


def test_label_missing_from_a_split(shared):
    rows = classification()
    rows["test"] = [r for r in rows["test"] if r[1] != "neutral"]
    failure = only_failure(validate(rows, shared, "missing-label"))
    assert failure.check == "every label has rows in the test split"
    assert failure.split == "test"
    assert failure.observed == "no test rows for label(s) 'neutral' (the test split has 4 rows)"


def test_empty_validation_split_is_allowed(shared):
    rows = classification(validation=0)
    outcome = validate(rows, shared, "no-validation")
    assert outcome.success, check_messages.describe_failures(outcome)


def test_too_few_rows_per_class(shared):
    rows = classification(validation=1, test=1, per_label={"neutral": 1})
    failure = only_failure(validate(rows, shared, "small-class"))
    assert failure.check == "every label has at least 5 rows overall"
    assert failure.observed == "label 'neutral' has 3 rows"
    assert failure.threshold == "at least 5 rows per label"


def test_imbalance(shared):
    rows = classification(per_label={"positive": 80})
    failure = only_failure(validate(rows, shared, "imbalanced"))
    assert failure.check == "the largest class is at most 5 times the smallest"
    assert failure.observed == (
        "largest/smallest = 6.00: label 'positive' has 84 rows, label 'negative' has 14"
    )
    assert failure.threshold == "largest/smallest class at most 5"


def test_preference_chosen_equal_to_rejected(shared):
    rows = [(f"question {i}?", f"good answer {i}", f"bad answer {i}") for i in range(8)]
    rows[2] = ("question 2?", "Yes, sure.", "yes,   SURE.")
    data = {
        "train": rows_frame(rows, ("prompt", "chosen", "rejected")),
        "validation": rows_frame([], ("prompt", "chosen", "rejected")),
        "test": rows_frame([("held out?", "fine", "worse")], ("prompt", "chosen", "rejected")),
    }
    failure = only_failure(validate(data, shared, "prefs", "data.task=preference", labels=False))
    assert failure.check == "chosen and rejected responses differ"
    assert failure.observed == "1 row where chosen equals rejected: train row 3"
    assert failure.split == "train"


def test_too_long_share_names_the_token_counter(shared):
    rows = classification()
    long_text = " ".join(["word"] * 12)
    rows["train"][0] = (long_text, "negative")
    rows["train"][1] = (long_text + " more", "negative")
    rows["train"][2] = (long_text + " and more", "negative")
    failure = only_failure(validate(rows, shared, "long", "model.max_length=8"))
    assert "longer than 8 tokens" in failure.check
    assert failure.observed == (
        "7.1% of examples (3 of 42) are longer than 8 tokens, counted as whitespace tokens "
        "(approximation; no tokenizer); longest: train row 3 (14 tokens), train row 2 "
        "(13 tokens), train row 1 (12 tokens)"
    )
    assert "whitespace tokens" in failure.threshold
    assert "model.max_length" in failure.fix and "data.truncation" not in failure.fix
    # A real tokenizer's label travels into the results too.
    chars = TokenCounter(count=len, label="characters (test counter)")
    outcome = validate(rows, shared, "long", "model.max_length=2000", token_counter=chars)
    assert outcome.success
    assert outcome.results["token_counter"] == "characters (test counter)"


def test_missing_required_column_fails_without_crashing(shared):
    rows = {split: rows_frame(r).drop(columns="label") for split, r in classification().items()}
    failure = only_failure(validate(rows, shared, "no-label", labels=False))
    assert failure.check == "column 'label' exists"
    assert "missing" in failure.observed


def test_generation_data_passes(shared):
    def part(n, tag):
        return rows_frame(
            [(f"{tag} instruction {i}", f"response {i} for {tag}") for i in range(n)],
            ("prompt", "response"),
        )

    data = {"train": part(12, "train"), "validation": part(2, "val"), "test": part(2, "test")}
    outcome = validate(data, shared, "instructions", "data.task=generation", labels=False)
    assert outcome.success, check_messages.describe_failures(outcome)
    assert set(outcome.results["validations"]) == {"examples"}
    assert Path(outcome.docs_path).is_file()


def test_single_class_is_rejected(shared):
    rows = {
        split: [(f"only positive {split} text {i}", "positive") for i in range(6)]
        for split in ("train", "validation", "test")
    }
    failure = only_failure(validate(rows, shared, "single", labels=False))
    assert failure.check == "the dataset has at least two labels"
    assert "1 label found ('positive')" in failure.observed


def test_fixes_name_the_option_for_the_task():
    seen = check_messages.Seen("preference", pd.DataFrame(), None, TokenCounter(len, "c"), 8)
    assert check_messages.fix_for("too_long", seen).startswith("data.truncation=")
    assert "data.checks.max_imbalance_ratio" in check_messages.fix_for("imbalance", seen)
    assert check_messages.fix_for("no-such-check", seen) is None


def test_leaks_between_held_out_splits_need_the_source(shared):
    rows = classification()
    rows["test"][0] = (rows["validation"][0][0], rows["validation"][0][1])
    failure = only_failure(validate(rows, shared, "held-out-leak"))
    assert failure.fix.startswith("data.clean.drop_leaked=train")
    assert "validation and test must be fixed in the source" in failure.fix


def mojibake_rows(broken: int):
    rows = classification()
    samples = ["The cafÃ© was great", "I donâ€™t like it", "schÃ¶n und gut", "Â£5 well spent"]
    for i in range(broken):
        label = rows["train"][i][1]
        rows["train"][i] = (f"{samples[i % len(samples)]} ({i})", label)
    return rows


def test_mojibake_below_the_share_is_a_warning(shared):
    outcome = validate(
        mojibake_rows(1), shared, "mojibake-ok", "data.checks.max_mojibake_share=0.05"
    )
    assert outcome.success, check_messages.describe_failures(outcome)
    (warning,) = outcome.warnings
    assert warning.startswith("1 of 42 rows (2.4%) show mojibake")
    assert "train row 1 'The cafÃ© was great (0)'" in warning
    assert "re-read the source with the right encoding" in warning
    assert outcome.results["warnings"] == [warning]


def test_mojibake_above_the_share_fails_the_gate(shared):
    outcome = validate(mojibake_rows(3), shared, "mojibake")
    failure = only_failure(outcome)
    assert "mojibake" in failure.check
    assert failure.observed.startswith("3 of 42 rows (7.1%) show mojibake")
    assert "train row 2 'I donâ€™t like it (1)'" in failure.observed
    assert failure.threshold.startswith("at most 1.0% of rows")
    assert "re-read the source with the right encoding" in failure.fix
    assert "data.checks.max_mojibake_share" in failure.fix


def test_clean_text_with_accents_and_quotes_is_not_mojibake(shared):
    rows = classification()
    fine = ["Café über naïve façade", "It’s “quoted” — fine…", "São Paulo, ÀÉÎ", "£5 and ©"]
    for i, text in enumerate(fine):
        rows["train"][i] = (text, rows["train"][i][1])
    outcome = validate(rows, shared, "accents")
    assert outcome.success and outcome.warnings == []
