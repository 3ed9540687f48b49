"""MLflow pyfunc models tunelab writes itself. Imported only when logging or loading one
(it imports mlflow at the top, which takes seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from tunelab.serving import load_sklearn


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
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return model_input[column].astype(str).tolist()
    if isinstance(model_input, str):
        return [model_input]
    return [str(t) for t in model_input]
