"""What a finished run can serve, and how it is packaged for MLflow.

One ``Servable`` per run folder. The same object is logged to MLflow and used to time
per-example inference, so the size and latency in a run's scorecard are those of what gets
registered. A registered version is loaded back as a ``LoadedModel`` by tunelab's own
loaders (``safe_load``): its files are read as data, never run as code.

What gets logged:

- the TF-IDF baseline: tunelab's pyfunc (``pyfunc.py``, logged as code: no pickle) with
  its skops file;
- a language model: the transformers flavor (safetensors), its chat framing baked in as
  MLflow's ``prompt_template``;
- an adapter run (LoRA, IA3, prefix and prompt tuning, DPO with LoRA) can instead be
  registered as its *adapter package* (``registry.package``): the peft adapter folder
  (safetensors and the tokenizer) and a reference to the base model (the name as
  configured, its revision and weights id), served by ``adapter_pyfunc.py`` (logged as
  code), which resolves the base through ``tunelab.models`` and refuses a base whose
  weights changed. Merged chat models are served by the same pyfunc, so that a JSON
  conversation is rendered by the chat template for MLflow users too.

Runs with nothing to serve (majority class, prompting baselines) get ``servable() ->
None`` and a reason from ``why_not_servable``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pandas as pd

from tunelab import evaluate
from tunelab.lifecycle import model_card
from tunelab.runs import PREDICTIONS_FILE, TrainResult, input_column
from tunelab.scorecard import Scorecard

if TYPE_CHECKING:
    from tunelab.config import RunConfig

HF_TASKS = {
    ("classification", "encoder"): "text-classification",
    ("classification", "decoder"): "text-classification",
    ("classification", "seq2seq"): "text-classification",
    ("generation", "decoder"): "text-generation",
    ("generation", "seq2seq"): "text2text-generation",
    ("chat", "decoder"): "text-generation",
    ("preference", "decoder"): "text-generation",
    ("prompts", "decoder"): "text-generation",  # a GRPO policy
    # Reward models (method=reward on preference data): one raw score per text.
    ("reward", "decoder"): "text-classification",
    ("reward", "encoder"): "text-classification",
}
GENERATOR_DATA_TASKS = ("generation", "chat", "preference", "prompts")
# Generation settings of a served generator: greedy and bounded, as in evaluation.
# Read-only: MLflow's log_model adds keys to the model_config it is given.
GENERATION_CONFIG = MappingProxyType({"max_new_tokens": 64, "do_sample": False})
# A prompt rendered by the chat template holds its special tokens already: tokenized
# without adding more (a second bos), as training and evaluation tokenize it.
TEMPLATED = MappingProxyType({"add_special_tokens": False})
PROMPT_PLACEHOLDER = "{prompt}"
LATENCY_EXAMPLES = 32  # test inputs timed one by one for the latency costs
GENERATOR_TASKS = ("text-generation", "text2text-generation")
# The TF-IDF pyfunc, logged as code: MLflow copies this file into the model.
PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")
PIPELINE_ARTIFACT = "pipeline"  # the skops file, among the pyfunc's artifacts
# Adapter packages and merged chat models: the pyfunc that loads them, logged as code.
LM_PYFUNC_FILE = Path(__file__).with_name("adapter_pyfunc.py")
ADAPTER_ARTIFACT = "adapter"  # the peft adapter folder (with the tokenizer)
MODEL_ARTIFACT = "model"  # a full model folder (merged chat models)
PACKAGES = ("adapter", "merged")
# registry.package unset: adapter runs on bases above this many parameters register the
# adapter (a full copy per version would cost gigabytes), smaller ones the merged model.
ADAPTER_ABOVE_PARAMS = 1_000_000_000
# peft task types (adapter_config.json) -> model family, for adapter runs without a merge.
PEFT_FAMILIES = {"CAUSAL_LM": "decoder", "SEQ_2_SEQ_LM": "seq2seq", "SEQ_CLS": "encoder"}


@dataclass(frozen=True)
class BaseReference:
    """The base model an adapter applies to: the model name as configured (alias, hub id or
    local folder), its revision, and the weights id (``models.resolution.weights_id``) it
    had when the adapter was packaged, checked again whenever the adapter is loaded."""

    model: str
    revision: str | None
    weights_id: str

    def to_dict(self) -> dict[str, str | None]:
        return {"model": self.model, "revision": self.revision, "weights_id": self.weights_id}


@dataclass(frozen=True)
class Servable:
    """A model folder (or scikit-learn file) a run produced, and how to serve it."""

    kind: str  # "transformers" | "sklearn" | "adapter" (a peft folder on a base model)
    path: Path
    task: str  # what it serves: the run's data task, or "reward" (serving_task)
    hf_task: str | None = None  # transformers pipeline task
    base: BaseReference | None = None  # adapters: the model they apply to
    labels: tuple[str, ...] | None = None  # adapter classifiers: the head's labels, in order

    @property
    def is_generator(self) -> bool:
        return self.task in GENERATOR_DATA_TASKS

    @property
    def package(self) -> str:
        """What is registered: 'adapter', 'merged' (a full model folder) or 'sklearn'."""
        return {"adapter": "adapter", "transformers": "merged"}.get(self.kind, self.kind)

    @property
    def as_code(self) -> bool:
        """Logged as tunelab's language-model pyfunc (adapter_pyfunc.py) rather than the
        transformers flavor: adapters, and chat models (MLflow's prompt_template cannot
        render a conversation)."""
        return self.kind == "adapter" or (
            self.kind == "transformers" and self.task in ("chat", "reward")
        )

    def size_mb(self) -> float:
        """Bytes on disk of the served model (folder or file), in MiB."""
        return disk_mb(self.path)

    def pipeline(self):
        """The transformers pipeline of the served model (CPU; what MLflow logs or what the
        adapter package loads)."""
        from tunelab.lifecycle import safe_load

        if self.kind == "adapter":
            labels = list(self.labels) if self.labels else None
            return safe_load.load_adapter_pipeline(
                self.path, self.hf_task, self.base.to_dict(), labels
            )
        return safe_load.load_pipeline(self.path, self.path, self.hf_task)

    def prompt_template(self, pipe) -> str | None:
        """The chat framing the model was trained with, as MLflow's ``prompt_template``."""
        return prompt_template(pipe.tokenizer, self.task)

    def predictor(self):
        """A callable texts -> answers (labels or generations) for timing and checks."""
        if self.kind == "sklearn":
            from tunelab.lifecycle.safe_load import load_sklearn

            pipeline = load_sklearn(self.path)
            return lambda texts: [str(p) for p in pipeline.predict(list(texts))]
        return text_pipeline(self.pipeline(), self.task).predict


def prompt_template(tokenizer, task: str) -> str | None:
    """The chat framing of a generator's single-turn prompt, as MLflow's ``prompt_template``.

    Generators fine-tuned on chat-templated text must be prompted the same way; baking
    the template into the logged model makes ``models:/NAME@ALIAS`` do it for any caller.
    Chat models render each conversation instead (``TextPipeline.chat``): None for them.
    """
    if task not in GENERATOR_DATA_TASKS or task == "chat":
        return None
    if not getattr(tokenizer, "chat_template", None):
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


def text_pipeline(pipe, task: str, generation: Mapping | None = None) -> TextPipeline:
    """A transformers pipeline served as the run's ``task`` wants it: labels, rewards, or
    greedy generations in the chat framing the model was trained with."""
    return TextPipeline(
        pipe,
        task in GENERATOR_DATA_TASKS,
        prompt_template(pipe.tokenizer, task),
        chat=task == "chat",
        generation=dict(generation or GENERATION_CONFIG),
        reward=task == "reward",
    )


def serving_task(result: TrainResult) -> str:
    """What a run's model serves: its data task, except a reward model's ("reward")."""
    return "reward" if result.method == "reward" else result.task


def conversation(text: str) -> list[dict[str, str]]:
    """The messages of a chat input: a JSON conversation (a list of {"role", "content"}
    messages, as text), else the text as one user turn."""
    from tunelab.data import chat

    if text.lstrip().startswith("["):
        try:
            messages = chat.loads(text)
        except (ValueError, KeyError, TypeError):  # not a conversation: plain text
            messages = None
        if messages:
            return messages
    return [{"role": "user", "content": text}]


def render_chat(tokenizer, text: str) -> str:
    """A chat input rendered by the tokenizer's chat template, up to the next assistant turn."""
    return tokenizer.apply_chat_template(
        conversation(text), tokenize=False, add_generation_prompt=True
    )


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
    """A transformers pipeline as served: a label, or a greedy generation, per text.

    A chat model (``chat``) takes a user message or a JSON conversation per text and
    answers with the next assistant turn, rendered by the tokenizer's chat template.
    """

    pipe: Any  # transformers.Pipeline
    is_generator: bool
    template: str | None = None  # chat framing, PROMPT_PLACEHOLDER where the text goes
    chat: bool = False
    generation: Mapping = field(default_factory=lambda: dict(GENERATION_CONFIG))
    reward: bool = False  # a reward model: the raw score of each text (reward_input)

    def prompt(self, text: str) -> str:
        """What the model is given for one input text."""
        if self.chat:
            return render_chat(self.pipe.tokenizer, text)
        return self.template.replace(PROMPT_PLACEHOLDER, text) if self.template else text

    def predict(self, texts: list[str]) -> list[str]:
        if self.reward:
            return [self.score(t) for t in texts]
        if not self.is_generator:
            return [row["label"] for row in self.pipe(list(texts))]
        prompts = [self.prompt(t) for t in texts]
        settings = {**(TEMPLATED if self.chat or self.template else {}), **self.generation}
        outputs = self.pipe(prompts, return_full_text=False, **settings)
        return [out[0]["generated_text"].strip() for out in outputs]

    def score(self, text: str) -> float:
        """A reward model's raw score (no sigmoid) of one input (see reward_input)."""
        given, settings = reward_input(self.pipe.tokenizer, text)
        out = self.pipe(given, function_to_apply="none", **settings)
        return float((out[0] if isinstance(out, list) else out)["score"])


def reward_input(tokenizer, text: str) -> tuple[Any, dict]:
    """What a reward model scores, as it was trained: a JSON conversation ending with the
    assistant's response goes through the chat template (decoders with one) or becomes a
    text pair, prompt and response (encoders); any other text is scored as it is."""
    messages = conversation(text)
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        return text, {}
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        return rendered, dict(TEMPLATED)
    prompt = "\n".join(m["content"] for m in messages[:-1])
    if tokenizer.eos_token is None:  # an encoder: [CLS] prompt [SEP] response [SEP]
        return {"text": prompt, "text_pair": messages[-1]["content"]}, {}
    return f"{prompt}\n{messages[-1]['content']}{tokenizer.eos_token}", {}


def package_of(result: TrainResult, wanted: str | None = None) -> str:
    """What a run registers: 'adapter' or 'merged' for a run that trained an adapter
    (``wanted``, i.e. registry.package, else adapter above ADAPTER_ABOVE_PARAMS parameters
    or when nothing was merged), 'model' for any other run (its one model)."""
    if "adapter" not in result.artifacts:
        return "model"
    if result.method == "reward":
        return wanted or "merged"  # served with its score head: the merged model
    if wanted is not None:
        return wanted
    if "merged" not in result.artifacts or result.total_params > ADAPTER_ABOVE_PARAMS:
        return "adapter"
    return "merged"


def servable(result: TrainResult, cfg: RunConfig | None = None) -> Servable | None:
    """The run's servable model, or None (see ``why_not_servable``).

    ``cfg`` is the run's config: its registry.package chooses between an adapter run's
    packages, its model.revision (and a DPO run's init_from) name the adapter's base.
    Without it the package is chosen as for registry.package unset.
    """
    from tunelab import models

    if why_not_servable(result, cfg):
        return None
    folder = Path(result.output_dir)
    if result.method == "baseline":
        return Servable("sklearn", folder / result.artifacts["model"], result.task)
    package = package_of(result, _wanted(cfg))
    task = serving_task(result)
    if package == "adapter":
        path = result.artifact("adapter")
        family = adapter_family(result)
        hf_task = HF_TASKS.get((task, family))
        labels = tuple(labels_of(result)) if result.task == "classification" else None
        return Servable("adapter", path, task, hf_task, base_of(result, cfg), labels)
    path = folder / result.artifacts["merged" if package == "merged" else "model"]
    family = models.read_family(path)
    return Servable("transformers", path, task, HF_TASKS.get((task, family)))


def why_not_servable(result: TrainResult, cfg: RunConfig | None = None) -> str | None:
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
    package = package_of(result, _wanted(cfg))
    if package == "merged" and "merged" not in result.artifacts:
        return (
            f"registry.package=merged, but {result.method} produced no merged model (prefix "
            "and prompt tuning cannot be merged; LoRA and IA3 merge with "
            "train.adapter.merge=true): set registry.package=adapter, or leave it unset"
        )
    if package == "adapter" and result.method == "reward":
        return (
            "registry.package=adapter, but a reward model is registered as its merged model "
            "(the adapter alone lacks the trained score head's loader): leave it unset"
        )
    if package == "adapter":
        family = adapter_family(result)
        if family is None:
            return f"its adapter ({result.artifacts['adapter']}) has no readable peft config"
        if result.task == "classification" and not labels_of(result):
            return (
                "its adapter classifier's labels are not recorded (no merged model and no "
                "prob_<label> columns in its predictions); retrain it"
            )
    elif "model" not in result.artifacts and "merged" not in result.artifacts:
        return f"{result.method} saved no model"
    else:
        name = "merged" if package == "merged" else "model"
        family = models.read_family(Path(result.output_dir) / result.artifacts[name])
    task = serving_task(result)
    if (task, family) not in HF_TASKS:
        return f"no transformers pipeline serves {task} with a {family} model"
    hf_task = HF_TASKS[(task, family)]
    if not _has_pipeline(hf_task):
        return (
            f"the installed transformers has no {hf_task} pipeline (transformers 5 removed "
            f"it), which serves {task} with a {family} model"
        )
    return None


def _has_pipeline(hf_task: str) -> bool:
    from transformers.pipelines import SUPPORTED_TASKS

    return hf_task in SUPPORTED_TASKS


def _wanted(cfg: RunConfig | None) -> str | None:
    return cfg.registry.package if cfg is not None else None


def adapter_family(result: TrainResult) -> str | None:
    """encoder / decoder / seq2seq of an adapter run, from its merged model's config, else
    from the adapter's peft task type (a classifier counts as an encoder: any family's
    classifier is served alike); None when neither can be read."""
    from tunelab import models
    from tunelab.lifecycle.safe_load import ADAPTER_CONFIG

    if "merged" in result.artifacts:
        return models.read_family(result.artifact("merged"))
    try:
        config = json.loads((result.artifact("adapter") / ADAPTER_CONFIG).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return PEFT_FAMILIES.get(str(config.get("task_type")))


def labels_of(result: TrainResult) -> list[str]:
    """An adapter classifier's labels in head order: its merged model's id2label, else the
    prob_<label> columns its test predictions were written with (in label order)."""
    if "merged" in result.artifacts:
        config_file = result.artifact("merged") / "config.json"
        try:
            id2label = json.loads(config_file.read_text("utf-8")).get("id2label") or {}
            return [id2label[k] for k in sorted(id2label, key=int)]
        except (OSError, ValueError, KeyError):
            return []
    predictions = Path(result.output_dir) / PREDICTIONS_FILE
    if not predictions.is_file():
        return []
    columns = pd.read_parquet(predictions).columns
    return [str(c).removeprefix("prob_") for c in columns if str(c).startswith("prob_")]


def base_of(result: TrainResult, cfg: RunConfig | None = None) -> BaseReference:
    """The base model an adapter run trained on: ``model.name`` and ``model.revision``,
    or the folder a DPO or GRPO run started from (its init_from), with its weights id."""
    from tunelab.models.resolution import weights_id

    reference, revision = result.model, None
    if cfg is not None:
        revision = cfg.model.revision
        if cfg.train.policy_init_from:
            from tunelab.train.preference import policy_source

            reference, revision = str(policy_source(cfg).path), None
    return BaseReference(reference, revision, weights_id(reference, revision))


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
    card: Scorecard,
    result: TrainResult,
    measure_latency: bool = True,
    cfg: RunConfig | None = None,
) -> None:
    """Fill the scorecard's servable fields, size on disk and per-example latency of the
    model that would be registered, then save it. Call it on a scorecard that is ok.

    ``model_size_mb`` and the latency are those of the package ``cfg`` registers (see
    ``servable``): an adapter package is timed as it is loaded, on its base model.
    ``adapter_size_mb`` and ``merged_size_mb`` are the sizes of an adapter run's two
    packages, ``adapter_only`` is 1 when the adapter package is the one registered.
    """
    card.not_servable = why_not_servable(result, cfg)
    served = servable(result, cfg) if card.not_servable is None else None
    card.servable = served is not None
    if "adapter" in result.artifacts:
        card.costs["adapter_size_mb"] = round(disk_mb(result.artifact("adapter")), 3)
        if "merged" in result.artifacts:
            card.costs["merged_size_mb"] = round(disk_mb(result.artifact("merged")), 3)
        if served is not None:
            card.costs["adapter_only"] = 1.0 if served.kind == "adapter" else 0.0
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
    if {"reward_chosen", "chosen"} <= set(table.columns):  # a reward model's: conversations
        return [reward_example(p, c) for p, c in table[["prompt", "chosen"]].itertuples(False)]
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


def log_model(result: TrainResult, card: Scorecard, cfg: RunConfig | None = None):
    """Log the servable model into the active run; returns MLflow's ModelInfo.

    The transformers flavor (safetensors) for language models; for TF-IDF, the pyfunc in
    ``pyfunc.py`` logged as code (MLflow copies the file: nothing is pickled) with the
    skops file as its artifact; for adapter packages and chat models, the pyfunc in
    ``adapter_pyfunc.py``, logged as code too. ``cfg`` chooses the package (see
    ``servable``).
    """
    import mlflow

    served = servable(result, cfg)
    example = _input_example(card)
    mlflow.set_tag("tunelab.package", served.package)
    if served.as_code:
        return _log_language_pyfunc(served, example)
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
    template = served.prompt_template(pipe)
    settings = {**GENERATION_CONFIG, **(TEMPLATED if template else {})}
    return mlflow.transformers.log_model(
        transformers_model=pipe,
        name="model",
        task=served.hf_task,
        input_example=[example],
        pip_requirements=pip_requirements(["transformers", "torch", "accelerate", "safetensors"]),
        model_config=settings if served.is_generator else None,
        prompt_template=template,
        model_card=ModelCard(model_card.render(result, card)),
    )


def _log_language_pyfunc(served: Servable, example: str):
    """An adapter package (the adapter folder and the base-model reference) or a merged
    chat model, as tunelab's language-model pyfunc logged as code."""
    import mlflow

    from tunelab.lifecycle import safe_load

    config: dict[str, Any] = {
        "package": served.package,
        "task": served.task,
        "hf_task": served.hf_task,
        "generation": dict(GENERATION_CONFIG),
    }
    if served.kind == "adapter":
        safe_load.check_adapter(served.path)
        config["base"] = served.base.to_dict()
        if served.labels:
            config["labels"] = list(served.labels)
        artifacts = {ADAPTER_ARTIFACT: str(served.path)}
        requirements = ["transformers", "torch", "peft", "accelerate", "safetensors", "mlflow"]
    else:
        safe_load.check_weights(served.path)
        artifacts = {MODEL_ARTIFACT: str(served.path)}
        requirements = ["transformers", "torch", "accelerate", "safetensors", "mlflow"]
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(LM_PYFUNC_FILE),
        artifacts=artifacts,
        model_config=config,
        input_example=[example],
        pip_requirements=pip_requirements(requirements),
    )


def reward_example(prompt: str, response: str) -> str:
    """A reward model's input: the prompt and a response as a JSON conversation."""
    from tunelab.data import chat

    return chat.dumps(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    )


def _input_example(card: Scorecard) -> str:
    table = card.predictions()
    if table is not None and len(table) and "reward_chosen" in table.columns:
        return _inputs(table.head(1))[0]
    column = input_column(table.columns) if table is not None else None
    if column and len(table):
        text = str(table[column].iloc[0])
        if card.task == "chat" and len(text) > 500:
            # A cut JSON conversation is no conversation: keep its last turn, as plain text.
            return conversation(text)[-1]["content"][:500]
        return text[:500]
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
    the skops file of a TF-IDF pyfunc, a transformers model's safetensors, or the files of
    a language-model pyfunc (an adapter package or a merged chat model)."""
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
        settings = _generation(meta.flavors.get("python_function", {}).get("config"))
        return TextPipeline(pipe, task in GENERATOR_TASKS, template, generation=settings)
    pyfunc = meta.flavors.get("python_function", {})
    artifacts = pyfunc.get("artifacts") or {}
    config = pyfunc.get("config") or {}
    if config.get("package") in PACKAGES:
        paths = {
            name: safe_load.inside(folder, (spec or {}).get("path"), shown)
            for name, spec in artifacts.items()
            if name in (ADAPTER_ARTIFACT, MODEL_ARTIFACT)
        }
        return load_package(config, paths, shown)
    if PIPELINE_ARTIFACT in artifacts:
        relative = artifacts[PIPELINE_ARTIFACT].get("path")
        path = safe_load.inside(folder, relative, shown)
        return TextClassifier(safe_load.load_sklearn(path, f"{shown} ({relative})"))
    raise safe_load.UntrustedModelError(
        f"{shown} is not a model tunelab logged (flavors: {', '.join(meta.flavors)}); "
        "tunelab loads only its transformers and TF-IDF models. Load it with MLflow if you "
        "trust whoever can write the model store."
    )


def _generation(settings) -> dict:
    """The generation settings a model was logged with (greedy, bounded), else tunelab's."""
    if not isinstance(settings, dict) or not settings:
        return dict(GENERATION_CONFIG)
    return {k: v for k, v in settings.items() if k in (*GENERATION_CONFIG, *TEMPLATED)}


def load_package(config: dict, artifacts: dict[str, Path], shown: str) -> TextPipeline:
    """A language-model pyfunc's model from its config and artifact folders: the adapter
    on its base model (resolved through ``tunelab.models``, its weights id checked), or a
    merged model folder. What ``adapter_pyfunc.py`` and tunelab's own loader both run."""
    from tunelab.lifecycle import safe_load

    package, task, hf_task = config.get("package"), config.get("task"), config.get("hf_task")
    wanted = ADAPTER_ARTIFACT if package == "adapter" else MODEL_ARTIFACT
    if wanted not in artifacts:
        raise safe_load.UntrustedModelError(
            f"{shown} is a tunelab {package} package without its '{wanted}' folder. "
            f"{safe_load.RETRAIN}"
        )
    if package == "adapter":
        pipe = safe_load.load_adapter_pipeline(
            artifacts[wanted], hf_task, config.get("base") or {}, config.get("labels"), shown
        )
    else:
        pipe = safe_load.load_pipeline(artifacts[wanted], artifacts[wanted], hf_task, shown)
    return text_pipeline(pipe, str(task), _generation(config.get("generation")))
