"""The TF-IDF baseline as served: its saved pipeline file and tunelab's MLflow pyfunc.

Its own module for two reasons: it imports mlflow at the top (seconds), so only logging,
loading or timing a TF-IDF model imports it; and MLflow pickles the class by its module
path, so every logged TF-IDF model needs ``tunelab.lifecycle.pyfunc.TextClassifierModel``
to load. Keep that path stable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd


def load_sklearn(path: Path):
    """A scikit-learn pipeline saved by the TF-IDF baseline (skops: no arbitrary code runs)."""
    if path.suffix == ".skops":
        import skops.io as sio

        return sio.load(path, trusted=sio.get_untrusted_types(file=path))
    import joblib

    return joblib.load(path)


class TextClassifierModel(mlflow.pyfunc.PythonModel):
    """The TF-IDF baseline as a pyfunc: texts in, a label and its probability out.

    The plain sklearn flavor hands the pipeline a DataFrame, which TfidfVectorizer reads as
    an iterable of column names; this wrapper passes the text column itself.
    """

    def load_context(self, context) -> None:
        self.pipeline = load_sklearn(Path(context.artifacts["pipeline"]))

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        proba = self.pipeline.predict_proba(texts_of(model_input))
        classes = [str(c) for c in self.pipeline.classes_]
        return pd.DataFrame(
            {
                "label": [classes[i] for i in proba.argmax(axis=1)],
                "score": proba.max(axis=1).astype(float),
            }
        )


def texts_of(model_input) -> list[str]:
    """Texts from what a pyfunc receives: a DataFrame (its 'text' or first column), list, str."""
    from tunelab.lifecycle.packaging import strings_of

    return strings_of(model_input, "text")
