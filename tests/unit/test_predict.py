"""Model references and batch files of `tunelab predict` (the registry part is integration)."""

from __future__ import annotations

import pandas as pd
import pytest

from tunelab.errors import RegistryError
from tunelab.lifecycle import predict
from tunelab.lifecycle.packaging import LoadedModel


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("sentiment-classifier@champion", ("sentiment-classifier", "champion", None)),
        ("sentiment-classifier/3", ("sentiment-classifier", None, "3")),
        (" instructions-generator@challenger ", ("instructions-generator", "challenger", None)),
    ],
)
def test_references_parse(reference, expected):
    assert predict.parse(reference) == expected


@pytest.mark.parametrize("reference", ["sentiment-classifier", "a@", "a/b", "@champion", "a@b@c"])
def test_bad_references_say_what_a_reference_looks_like(reference):
    with pytest.raises(RegistryError, match="NAME@ALIAS"):
        predict.parse(reference)


class Upper:
    """A stand-in pyfunc: upper-cases its inputs, or fails after ``fail_after`` calls."""

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

    def predict(self, texts):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("model crashed")
        return pd.DataFrame({"label": [t.upper() for t in texts], "score": 1.0})


def test_predict_file_adds_a_prediction_column(tmp_path):
    source, target = tmp_path / "in.csv", tmp_path / "out" / "pred.csv"
    pd.DataFrame({"id": [1, 2, 3], "prompt": ["a", "b", None]}).to_csv(source, index=False)
    loaded = LoadedModel("m", "1", "models:/m/1", Upper())
    seen = []
    count = predict.predict_file(loaded, source, target, batch_size=2, progress=seen.append)
    assert count == 3 and seen == [2, 1]
    out = pd.read_csv(target, keep_default_na=False)
    assert out["prediction"].tolist() == ["A", "B", ""]


def test_a_failing_batch_leaves_no_output_file(tmp_path):
    source, target = tmp_path / "in.csv", tmp_path / "pred.csv"
    pd.DataFrame({"text": list("abcdef")}).to_csv(source, index=False)
    loaded = LoadedModel("m", "1", "models:/m/1", Upper(fail_after=1))
    with pytest.raises(RuntimeError, match="model crashed"):
        predict.predict_file(loaded, source, target, batch_size=2)
    assert not target.exists() and not list(tmp_path.glob("*.partial"))


def test_missing_input_column_is_named(tmp_path):
    source = tmp_path / "in.csv"
    pd.DataFrame({"review": ["x"]}).to_csv(source, index=False)
    loaded = LoadedModel("m", "1", "models:/m/1", Upper())
    with pytest.raises(RegistryError, match=r"none of the input columns.*review.*--column"):
        predict.predict_file(loaded, source, tmp_path / "o.csv")
    with pytest.raises(RegistryError, match="no column 'body'"):
        predict.predict_file(loaded, source, tmp_path / "o.csv", column="body")
    assert predict.predict_file(loaded, source, tmp_path / "o.csv", column="review") == 1
