"""Load model files as data, never as code.

Anyone who can write the artifact store (or a run folder) controls these files, so
nothing here unpickles. The TF-IDF pipeline is read with skops, and only when every type
its file names is on :data:`SKLEARN_TYPES` (skops alone trusts every scikit-learn
estimator); language models are read from safetensors with remote code off, and so are
peft adapters, applied to a base model that tunelab resolves itself (``tunelab.models``)
and checks against the weights id recorded with the adapter. A file that does not pass
raises :class:`UntrustedModelError`, which says what file, what was found and what to do.

skops, sklearn, transformers and peft are imported inside functions: packaging imports this.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tunelab.errors import ModelError

# Every type a skops file of tunelab's TF-IDF baseline (train/baseline.py) names: its
# estimators, their arrays and dtype, the containers of their state (skops stores every
# JSON value as builtins.str). A new scikit-learn may add one: check it before adding it.
SKLEARN_TYPES = frozenset(
    {
        "sklearn.pipeline.Pipeline",
        "sklearn.feature_extraction.text.TfidfVectorizer",
        "sklearn.feature_extraction.text.TfidfTransformer",
        "sklearn.linear_model._logistic.LogisticRegression",
        "numpy.ndarray",
        "numpy.float64",
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.str",
    }
)
# skops node kinds that only build containers, arrays and estimators from their state.
# Functions, methods, partials and reduce-style constructors are refused outright.
SKOPS_LOADERS = frozenset(
    {"ObjectNode", "DictNode", "ListNode", "TupleNode", "JsonNode", "TypeNode", "NdArrayNode"}
)
# Weights or objects stored with pickle (torch.load, joblib): never read.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
MODEL_CLASSES = {  # transformers pipeline task -> the Auto class that loads its model
    "text-classification": "AutoModelForSequenceClassification",
    "text-generation": "AutoModelForCausalLM",
    "text2text-generation": "AutoModelForSeq2SeqLM",
}
# The files of a peft adapter folder (its tokenizer files lie next to them).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
RETRAIN = (
    "If you did not change it yourself, someone who can write the model store or run "
    "folder may have: do not load it anywhere. Retrain the model (`tunelab train CONFIG`) "
    "and register the new version."
)


class UntrustedModelError(ModelError):
    """A model file could run code when loaded, or is not what tunelab saved."""


class BaseModelChangedError(ModelError):
    """An adapter's base model no longer has the weights the adapter was trained on."""


# ---------------------------------------------------------------- scikit-learn (skops)


def load_sklearn(path: Path, shown: str | None = None):
    """The TF-IDF pipeline in a skops file, refused unless every type is allow-listed.

    ``shown`` names the file in errors (e.g. the model URI and the file inside it).
    """
    shown = shown or str(path)
    if path.suffix == ".joblib":
        raise UntrustedModelError(
            f"{shown} is a joblib (pickle) file saved by an older tunelab. tunelab no longer "
            "loads pickles: unpickling runs whatever code the file names. Retrain the TF-IDF "
            "baseline (`tunelab train CONFIG`); it is saved with skops now."
        )
    refused = sorted(untrusted_types(path, shown))
    if refused:
        raise UntrustedModelError(
            f"{shown} holds {', '.join(refused)}, which tunelab does not load from a TF-IDF "
            "model: it trusts only the types of its own TF-IDF pipeline "
            f"(tunelab.lifecycle.safe_load.SKLEARN_TYPES). {RETRAIN}"
        )
    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from skops.io.exceptions import UntrustedTypesFoundException

    try:  # skops audits the file again on its own
        pipeline = sio.load(path, trusted=sorted(SKLEARN_TYPES))
    except UntrustedTypesFoundException as exc:
        raise UntrustedModelError(f"{shown}: skops refused it ({exc}). {RETRAIN}") from None
    if not isinstance(pipeline, Pipeline):
        raise UntrustedModelError(
            f"{shown} holds a {type(pipeline).__name__}, not a scikit-learn Pipeline. {RETRAIN}"
        )
    return pipeline


def untrusted_types(path: Path, shown: str | None = None) -> set[str]:
    """The types (and skops node kinds) in a skops file that tunelab does not load.

    Reads only the file's JSON schema: nothing is imported or built.
    """
    shown = shown or str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        kind = "a pickle" if _looks_like_pickle(path) else "not a skops file"
        raise UntrustedModelError(
            f"{shown} is {kind} ({type(exc).__name__}: {exc}); tunelab saves TF-IDF models "
            f"with skops and loads nothing else. {RETRAIN}"
        ) from None
    found: set[str] = set()
    _collect(schema, found)
    return found


def _collect(node, found: set[str]) -> None:
    if isinstance(node, dict):
        if "__class__" in node or "__loader__" in node:
            name = f"{node.get('__module__')}.{node.get('__class__')}"
            if name not in SKLEARN_TYPES:
                found.add(name)
            loader = node.get("__loader__")
            if loader not in SKOPS_LOADERS:
                found.add(f"{name} (loaded by skops' {loader})")
        for value in node.values():
            _collect(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect(value, found)


def _looks_like_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(1) == b"\x80"  # the pickle protocol opcode (protocols 2 and up)


# ---------------------------------------------------------------- transformers (safetensors)


def check_weights(folder: Path, shown: str | None = None) -> None:
    """Refuse a model folder with pickle-based files or without safetensors weights."""
    shown = shown or str(folder)
    if not folder.is_dir():
        raise UntrustedModelError(f"{shown} has no model folder {folder.name}. {RETRAIN}")
    _refuse_pickles(folder, shown)
    if not any(folder.glob("*.safetensors")):
        raise UntrustedModelError(f"{shown} has no .safetensors weights. {RETRAIN}")


def load_pipeline(model_dir: Path, tokenizer_dir: Path, task: str, shown: str | None = None):
    """A transformers pipeline (CPU) from safetensors weights; remote code stays off."""
    shown = shown or str(model_dir)
    if task not in MODEL_CLASSES:
        raise UntrustedModelError(
            f"{shown} is a '{task}' model; tunelab serves only {', '.join(MODEL_CLASSES)}."
        )
    check_weights(model_dir, shown)
    _refuse_pickles(tokenizer_dir, shown)
    import transformers

    auto = getattr(transformers, MODEL_CLASSES[task])
    model = auto.from_pretrained(str(model_dir), use_safetensors=True, trust_remote_code=False)
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(tokenizer_dir), trust_remote_code=False
    )
    return transformers.pipeline(task, model=model, tokenizer=tokenizer, device="cpu")


def _refuse_pickles(folder: Path, shown: str) -> None:
    pickled = sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES
    )
    if pickled:
        raise UntrustedModelError(
            f"{shown} holds {', '.join(pickled)}: pickle-based files, which tunelab never "
            f"loads (unpickling can run code); it reads weights only from safetensors. {RETRAIN}"
        )


def inside(folder: Path, relative: str | None, shown: str) -> Path:
    """``folder/relative``, refused when the model's metadata points outside the folder."""
    if not relative:
        raise UntrustedModelError(f"{shown}: its MLmodel names no file to load. {RETRAIN}")
    root = folder.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise UntrustedModelError(
            f"{shown}: its MLmodel points at {relative}, outside the model. {RETRAIN}"
        )
    return path


# ---------------------------------------------------------------- peft adapters (safetensors)


def check_adapter(folder: Path, shown: str | None = None) -> None:
    """Refuse an adapter folder with pickle-based files or without safetensors weights."""
    shown = shown or str(folder)
    if not folder.is_dir():
        raise UntrustedModelError(f"{shown} has no adapter folder {folder.name}. {RETRAIN}")
    _refuse_pickles(folder, shown)
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (folder / n).is_file()]
    if missing:
        raise UntrustedModelError(
            f"{shown} has no {' or '.join(missing)} in its adapter folder: tunelab loads "
            f"adapters only from peft's safetensors files. {RETRAIN}"
        )


def resolve_base(base: dict, shown: str):
    """The base model an adapter package names, resolved through ``tunelab.models`` (never
    from peft's ``base_model_name_or_path``: a folder of the training machine) and checked
    against the weights id recorded when the adapter was packaged."""
    from tunelab.models import resolution

    reference, revision = base.get("model"), base.get("revision")
    expected = base.get("weights_id")
    if not reference or not expected:
        raise UntrustedModelError(
            f"{shown} is an adapter package without a complete base-model reference "
            f"({base!r}). {RETRAIN}"
        )
    at = f" at revision {revision}" if revision else ""
    found = resolution.weights_id(reference, revision)
    if found.startswith("unresolved:"):
        try:
            resolution.resolve(reference, revision)
        except ModelError as exc:
            raise ModelError(
                f"{shown} is an adapter for the base model '{reference}'{at}, which cannot be "
                f"loaded here: {exc}"
            ) from None
    if found != expected:
        raise BaseModelChangedError(
            f"{shown} is an adapter for the base model '{reference}'{at}, and the base model "
            f"changed since training (its weights were {expected}, they are {found} here): "
            "the adapter would be applied to other weights. Retrain it on the current base "
            "model, or use the merged package (registry.package=merged)."
        )
    return resolution.resolve(reference, revision)


def load_adapter_pipeline(
    adapter_dir: Path,
    task: str,
    base: dict,
    labels: list[str] | None = None,
    shown: str | None = None,
):
    """A transformers pipeline (CPU) of a peft adapter applied to its base model.

    The base is resolved by :func:`resolve_base` and read from safetensors in fp32, as
    training loaded it; LoRA and IA3 adapters are then merged into it (the merged package's
    weights, computed the same way), prefix and prompt tuning stay a peft model. The
    tokenizer is the one saved with the adapter. ``labels`` (classifiers) name the head's
    outputs in order.
    """
    shown = shown or str(adapter_dir)
    if task not in MODEL_CLASSES:
        raise UntrustedModelError(
            f"{shown} is a '{task}' model; tunelab serves only {', '.join(MODEL_CLASSES)}."
        )
    check_adapter(adapter_dir, shown)
    resolved = resolve_base(base, shown)
    import torch
    import transformers
    from peft import PeftModel

    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(adapter_dir), trust_remote_code=False
    )
    head = {}
    if labels:
        head = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }
    auto = getattr(transformers, MODEL_CLASSES[task])
    try:
        model = auto.from_pretrained(
            str(resolved.path),
            use_safetensors=True,
            trust_remote_code=False,
            dtype=torch.float32,
            **head,
        )
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{shown}: its base model '{resolved.reference}' ({resolved.path}) could not be "
            f"loaded from safetensors: {str(exc)[:300]}"
        ) from None
    # Training set these (decoders find a row's last token through the pad id).
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    if not model.peft_config["default"].is_prompt_learning:
        model = model.merge_and_unload()
    model.eval()
    return transformers.pipeline(task, model=model, tokenizer=tokenizer, device="cpu")
