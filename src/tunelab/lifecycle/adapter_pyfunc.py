"""tunelab's language models as an MLflow pyfunc, logged as code ("models from code"):
adapter packages (a peft adapter and a reference to its base model) and merged chat models.

``packaging.log_model`` passes this file's path to ``mlflow.pyfunc.log_model``: MLflow
copies it into the logged model and runs it when someone calls
``mlflow.pyfunc.load_model``, so nothing is pickled. The model is built by
``packaging.load_package``, the same function tunelab's own loaders (gate, `tunelab
predict`) call without running this file: the base model is resolved through
``tunelab.models`` (never from the folder peft recorded at training) and refused when its
weights changed since, weights are read from safetensors only.

Texts in, one answer per text out: a label (classifiers) or a greedy generation; a chat
model takes a user message or a JSON conversation and answers with the next assistant turn.

Do not import this module: running it registers the model with ``set_model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class LanguageModel(PythonModel):
    """An adapter package or a merged chat model as a pyfunc."""

    def load_context(self, context) -> None:
        from tunelab.lifecycle.packaging import load_package

        artifacts = {name: Path(path) for name, path in context.artifacts.items()}
        self.model = load_package(context.model_config, artifacts, "this MLflow model")

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        from tunelab.lifecycle.packaging import strings_of

        return self.model.predict(strings_of(model_input, "text"))


mlflow.models.set_model(LanguageModel())
