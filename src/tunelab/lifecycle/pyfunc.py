"""The TF-IDF baseline as an MLflow pyfunc, logged as code ("models from code").

``packaging.log_model`` passes this file's path to ``mlflow.pyfunc.log_model``: MLflow
copies it into the logged model and runs it when someone calls
``mlflow.pyfunc.load_model``, so nothing is pickled. The pipeline itself is the skops
file among the model's artifacts, read against tunelab's allow-list. tunelab's own
loaders (gate, `tunelab predict`) never run this file.

Do not import this module: running it registers the model with ``set_model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class TextClassifierModel(PythonModel):
    """The TF-IDF baseline as a pyfunc: texts in, a label and its probability out.

    The plain sklearn flavor hands the pipeline a DataFrame, which TfidfVectorizer reads as
    an iterable of column names; this wrapper passes the text column itself.
    """

    def load_context(self, context) -> None:
        from tunelab.lifecycle.packaging import TextClassifier
        from tunelab.lifecycle.safe_load import load_sklearn

        self.classifier = TextClassifier(load_sklearn(Path(context.artifacts["pipeline"])))

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        from tunelab.lifecycle.packaging import strings_of

        return self.classifier.predict(strings_of(model_input, "text"))


mlflow.models.set_model(TextClassifierModel())
