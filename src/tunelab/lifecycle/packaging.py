"""What a finished run can serve, and how it is packaged for MLflow.

One ``Servable`` per run folder. The same object is logged to MLflow (transformers
flavor for language models, tunelab's pyfunc for the TF-IDF baseline, logged as code: no
pickle) and used to time per-example inference, so the latency in a run's scorecard is the
latency of what gets registered. A registered version is loaded back as a ``LoadedModel``
by tunelab's own loaders (``safe_load``): its files are read as data, never run as code.

Runs with nothing to serve (majority class, prompting baselines, prefix/prompt tuning
that cannot be merged) get ``servable() -> None`` and a reason from ``why_not_servable``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from tunelab import evaluate
from tunelab.lifecycle import model_card
from tunelab.runs import TrainResult, input_column
from tunelab.scorecard import Scorecard

HF_TASKS = {
    ("classification", "encoder"): "text-classification",
    ("classification", "decoder"): "text-classification",
    ("classification", "seq2seq"): "text-classification",
    ("generation", "decoder"): "text-generation",
    ("generation", "seq2seq"): "text2text-generation",
    ("preference", "decoder"): "text-generation",
}
# Generation settings of a served generator: greedy and bounded, as in evaluation.
# Read-only: MLflow's log_model adds keys to the model_config it is given.
GENERATION_CONFIG = MappingProxyType({"max_new_tokens": 64, "do_sample": False})
PROMPT_PLACEHOLDER = "{prompt}"
LATENCY_EXAMPLES = 32  # test inputs timed one by one for the latency costs
GENERATOR_TASKS = ("text-generation", "text2text-generation")
# The TF-IDF pyfunc, logged as code: MLflow copies this file into the model.
PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")
PIPELINE_ARTIFACT = "pipeline"  # the skops file, among the pyfunc's artifacts


@dataclass(frozen=True)
class Servable:
    """A model folder (or scikit-learn file) a run produced, and how to serve it."""

    kind: str  # "transformers" | "sklearn"
    path: Path
    task: str  # the run's data task: classification | generation | preference
    hf_task: str | None = None  # transformers pipeline task

    @property
    def is_generator(self) -> bool:
        return self.task in ("generation", "preference")

    def size_mb(self) -> float:
        """Bytes on disk of the served model (folder or file), in MiB."""
        return disk_mb(self.path)

    def pipeline(self):
        """The transformers pipeline over the saved folder (CPU; what MLflow logs)."""
        from tunelab.lifecycle import safe_load

        return safe_load.load_pipeline(self.path, self.path, self.hf_task)

    def prompt_template(self, pipe) -> str | None:
        """The chat framing the model was trained with, as MLflow's ``prompt_template``.

        Generators fine-tuned on chat-templated text must be prompted the same way; baking
        the template into the logged model makes ``models:/NAME@ALIAS`` do it for any caller.
        """
        tokenizer = pipe.tokenizer
        if not self.is_generator or not getattr(tokenizer, "chat_template", None):
            return None
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPT_PLACEHOLDER}],
            tokenize=False,
            add_generation_prompt=True,
        )
        # MLflow formats the template with str.format-like rules: other braces would break it.
        stripped = rendered.replace(PROMPT_PLACEHOLDER, "")
        if "{" in stripped or "}" in stripped or PROMPT_PLACEHOLDER not in rendered:
            return None
        return rendered

    def predictor(self):
        """A callable texts -> answers (labels or generations) for timing and checks."""
        if self.kind == "sklearn":
            from tunelab.lifecycle.safe_load import load_sklearn

            pipeline = load_sklearn(self.path)
            return lambda texts: [str(p) for p in pipeline.predict(list(texts))]
        pipe = self.pipeline()
        return TextPipeline(pipe, self.is_generator, self.prompt_template(pipe)).predict


@dataclass(frozen=True)
class TextClassifier:
    """The TF-IDF pipeline as served: texts in, a label and its probability out."""

    pipeline: Any  # sklearn.pipeline.Pipeline

    def predict(self, texts: list[str]) -> pd.DataFrame:
        proba = self.pipeline.predict_proba(list(texts))
        classes = [str(c) for c in self.pipeline.classes_]
        return pd.DataFrame(
            {
                "label": [classes[i] for i in proba.argmax(axis=1)],
                "score": proba.max(axis=1).astype(float),
            }
        )


@dataclass(frozen=True)
class TextPipeline:
    """A transformers pipeline as served: a label, or a greedy generation, per text."""

    pipe: Any  # transformers.Pipeline
    is_generator: bool
    template: str | None = None  # chat framing, PROMPT_PLACEHOLDER where the text goes

    def predict(self, texts: list[str]) -> list[str]:
        if not self.is_generator:
            return [row["label"] for row in self.pipe(list(texts))]
        template = self.template
        prompts = [template.replace(PROMPT_PLACEHOLDER, t) if template else t for t in texts]
        outputs = self.pipe(prompts, return_full_text=False, **GENERATION_CONFIG)
        return [out[0]["generated_text"].strip() for out in outputs]


def servable(result: TrainResult) -> Servable | None:
    """The run's servable model, or None (see ``why_not_servable``)."""
    from tunelab import models

    if why_not_servable(result):
        return None
    folder = Path(result.output_dir)
    if result.method == "baseline":
        return Servable("sklearn", folder / result.artifacts["model"], result.task)
    name = "merged" if "merged" in result.artifacts else "model"
    path = folder / result.artifacts[name]
    family = models.read_family(path)
    return Servable("transformers", path, result.task, HF_TASKS.get((result.task, family)))


def why_not_servable(result: TrainResult) -> str | None:
    """Why a run has no model to register, or None when it has one."""
    from tunelab import models

    model_file = result.artifacts.get("model", "")
    if result.method == "baseline":
        if model_file.endswith(".skops"):
            return None
        if model_file.endswith(".joblib"):
            return (
                "its TF-IDF model was saved with joblib (pickle) by an older tunelab, and "
                "loading a pickle can run code: retrain it (it is saved with skops now)"
            )
        return (
            "baselines other than TF-IDF (majority class, prompting) are compared against, "
            "not served"
        )
    if "merged" not in result.artifacts and "model" not in result.artifacts:
        return (
            f"{result.method} produced an adapter but no merged model (prefix/prompt tuning "
            "cannot be merged, or train.adapter.merge=false)"
        )
    name = "merged" if "merged" in result.artifacts else "model"
    family = models.read_family(Path(result.output_dir) / result.artifacts[name])
    if (result.task, family) not in HF_TASKS:
        return f"no transformers pipeline serves {result.task} with a {family} model"
    return None


def disk_mb(path: Path) -> float:
    """Size on disk of a file or a folder (all files below it), in MiB."""
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def time_per_example(predict, texts: list[str], budget_s: float = 15.0) -> list[float]:
    """Seconds per single-example call, after one warm-up call, within a time budget.

    One example per call is what an online caller sees; the budget keeps big generators
    on the CPU from timing for minutes (at least three calls are always made).
    """
    if not texts:
        return []
    predict(texts[:1])  # warm-up: lazy init, first-call allocations
    seconds: list[float] = []
    started = time.perf_counter()
    for i, text in enumerate(texts):
        if i >= 3 and time.perf_counter() - started > budget_s:
            break
        t0 = time.perf_counter()
        predict([text])
        seconds.append(time.perf_counter() - t0)
    return seconds


# ---------------------------------------------------------------- serving costs


def measure_serving_costs(
    card: Scorecard, result: TrainResult, measure_latency: bool = True
) -> None:
    """Fill the scorecard's servable fields, size on disk and per-example latency of the
    model that would be registered, then save it. Call it on a scorecard that is ok."""
    card.not_servable = why_not_servable(result)
    served = servable(result) if card.not_servable is None else None
    card.servable = served is not None
    if "adapter" in result.artifacts:
        card.costs["adapter_size_mb"] = round(disk_mb(result.artifact("adapter")), 3)
    if served is not None:
        card.costs["model_size_mb"] = round(served.size_mb(), 3)
        if measure_latency:
            texts = _inputs(card.predictions())[:LATENCY_EXAMPLES]
            seconds = time_per_example(served.predictor(), texts)
            card.costs.update(evaluate.latency_summary(seconds))
    card.save()


def _inputs(table: pd.DataFrame | None) -> list[str]:
    if table is None:
        return []
    column = input_column(table.columns)
    return table[column].astype(str).tolist() if column else []


# ---------------------------------------------------------------- logging to MLflow


def pip_requirements(names: list[str]) -> list[str]:
    """Pinned requirements from the installed versions (no network lookups by MLflow)."""
    from importlib import metadata

    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned


def log_model(result: TrainResult, card: Scorecard):
    """Log the servable model into the active run; returns MLflow's ModelInfo.

    The transformers flavor (safetensors) for language models; for TF-IDF, the pyfunc in
    ``pyfunc.py`` logged as code (MLflow copies the file: nothing is pickled) with the
    skops file as its artifact.
    """
    import mlflow

    served = servable(result)
    example = _input_example(card)
    if served.kind == "sklearn":
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            artifacts={PIPELINE_ARTIFACT: str(served.path)},
            input_example=[example],
            pip_requirements=pip_requirements(["scikit-learn", "skops", "pandas", "mlflow"]),
        )
    from huggingface_hub import ModelCard

    pipe = served.pipeline()
    # The pipeline's name_or_path is a local cache folder: record the model reference instead.
    pipe.model.name_or_path = result.model
    return mlflow.transformers.log_model(
        transformers_model=pipe,
        name="model",
        task=served.hf_task,
        input_example=[example],
        pip_requirements=pip_requirements(["transformers", "torch", "accelerate", "safetensors"]),
        model_config=dict(GENERATION_CONFIG) if served.is_generator else None,
        prompt_template=served.prompt_template(pipe),
        model_card=ModelCard(model_card.render(result, card)),
    )


def _input_example(card: Scorecard) -> str:
    table = card.predictions()
    column = input_column(table.columns) if table is not None else None
    if column and len(table):
        return str(table[column].iloc[0])[:500]
    return "An example input."


# ---------------------------------------------------------------- loading a registered model


@dataclass(frozen=True)
class LoadedModel:
    """A registered version, loaded by tunelab (``model`` is a TextClassifier or
    TextPipeline: anything whose ``predict`` takes a list of texts)."""

    name: str
    version: str
    uri: str
    model: Any

    def predict(self, texts: list[str]) -> list[str]:
        """Labels (classifiers) or generated text (generators), one per input."""
        return strings_of(self.model.predict(list(texts)), "label")


def strings_of(value, column: str) -> list[str]:
    """Strings from what a pyfunc takes or gives: a DataFrame (its ``column``, else its
    first), one string, or a list."""
    if isinstance(value, pd.DataFrame):
        chosen = column if column in value.columns else value.columns[0]
        return value[chosen].astype(str).tolist()
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def load_registered(name: str, version: str, uri: str) -> LoadedModel:
    """Version ``version`` of ``name``, its files loaded by tunelab's own loaders.

    Not through ``mlflow.pyfunc.load_model``, which unpickles or runs the code stored with
    the model: whoever can write the artifact store would run code here.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    source = ModelsArtifactRepository.get_underlying_uri(f"models:/{name}/{version}")
    local = urlparse(source).scheme in ("", "file")  # read in place: no copy, no write
    with tempfile.TemporaryDirectory(prefix="tunelab-model-") as tmp:
        folder = download_artifacts(artifact_uri=source, dst_path=None if local else tmp)
        return LoadedModel(name, str(version), uri, load_logged(Path(folder), uri))


def load_logged(folder: Path, shown: str) -> TextClassifier | TextPipeline:
    """A model tunelab logged, from its downloaded folder (``shown`` names it in errors):
    the skops file of a TF-IDF pyfunc, or a transformers model's safetensors."""
    from mlflow.models import Model

    from tunelab.lifecycle import safe_load

    meta = Model.load(str(folder))  # the MLmodel file: YAML
    transformers = meta.flavors.get("transformers")
    if transformers is not None:
        task = transformers.get("task")
        model_dir = safe_load.inside(folder, transformers.get("model_binary"), shown)
        tokenizer_dir = safe_load.inside(folder, "components/tokenizer", shown)
        if not tokenizer_dir.is_dir():
            tokenizer_dir = model_dir
        pipe = safe_load.load_pipeline(model_dir, tokenizer_dir, task, shown)
        template = (meta.metadata or {}).get("prompt_template")
        return TextPipeline(pipe, task in GENERATOR_TASKS, template)
    artifacts = meta.flavors.get("python_function", {}).get("artifacts") or {}
    if PIPELINE_ARTIFACT in artifacts:
        relative = artifacts[PIPELINE_ARTIFACT].get("path")
        path = safe_load.inside(folder, relative, shown)
        return TextClassifier(safe_load.load_sklearn(path, f"{shown} ({relative})"))
    raise safe_load.UntrustedModelError(
        f"{shown} is not a model tunelab logged (flavors: {', '.join(meta.flavors)}); "
        "tunelab loads only its transformers and TF-IDF models. Load it with MLflow if you "
        "trust whoever can write the model store."
    )
