"""Turn a model reference (alias, local folder or hub id) into a local folder, its tokenizer
and what pins its weights."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ModelError
from tunelab.models import shared
from tunelab.models.aliases import (
    ALIASES,
    alias_path,
    alias_revision,
    cache_dir,
    choices,
    prepare_alias,
)

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
FAMILIES = ("encoder", "decoder", "seq2seq")
# Files worth fetching from a hub repository; weights from safetensors only unless
# the repository has none.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "merges*"]
HUB_LEGACY_WEIGHTS = ["pytorch_model*.bin"]
# (path, size, mtime_ns) -> sha256: a file is read once per process while it is unchanged.
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made concrete: a local folder holding config, weights and tokenizer."""

    reference: str  # what the config said
    path: Path  # local HF folder (config.json, safetensors weights, tokenizer files)
    source: str  # "alias" | "path" | "hub"
    family: str  # "encoder" | "decoder" | "seq2seq"
    # What pins the weights: the hub commit, the package version of a packaged
    # alias, the recipe of a tiny alias; None for a local folder.
    revision: str | None


def resolve(reference: str, revision: str | None = None, prepare: bool = True) -> ResolvedModel:
    """Turn ``model.name`` into a local folder: an alias, an existing folder, else a hub id.

    With ``prepare=False`` nothing is built or downloaded: an alias that is not built
    yet points at the folder it will be built in, and a hub id must already be in the
    local Hugging Face cache.
    """
    reference = reference.strip()
    if not reference:
        raise ModelError(f"model.name is empty. {choices()}")
    local = Path(reference).expanduser()
    if revision is not None and (reference in ALIASES or local.exists()):
        log.warning("model.revision=%s is ignored: '%s' is not a hub id.", revision, reference)
    if reference in ALIASES:
        return _resolve_alias(reference, prepare)
    if local.exists():
        return _resolve_path(reference, local)
    if HUB_ID.match(reference):
        return _resolve_hub(reference, revision, prepare)
    if _looks_like_path(reference):
        raise ModelError(f"Model folder '{reference}' does not exist. {choices()}")
    raise ModelError(f"Unknown model '{reference}'. {choices()}")


def weights_id(reference: str, revision: str | None = None) -> str:
    """What pins the weights a model reference stands for, to key runs and cached steps.

    An alias: its package version or build recipe (its folder is built from them, and
    rebuilt when the recipe changes). A hub id: the commit it resolves to, fetched as
    training fetches it, so a moving branch such as ``main`` is keyed by what is used. A
    local folder: a hash of its files. Never raises: a reference that does not resolve is
    keyed by its text, and training reports why it fails.
    """
    reference = reference.strip()
    try:
        if reference in ALIASES:
            return f"alias:{alias_revision(reference)}"
        resolved = resolve(reference, revision, prepare=True)
        if resolved.source == "hub":
            return f"hub:{resolved.revision}"
        return f"path:{folder_digest(resolved.path)}"
    except (ModelError, OSError):
        return f"unresolved:{reference}@{revision}"


def folder_digest(folder: Path) -> str:
    """Hash of a folder's files (relative names and contents). Hidden entries and
    checkpoint-* folders (a run's training state, not its model) are left out."""
    folder = Path(folder)
    lines = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith((".", "checkpoint-"))]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root) / name
            lines.append(f"{path.relative_to(folder).as_posix()} {file_digest(path)}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes; remembered by path, size and modification time."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    found = _FILE_DIGESTS.get(key)
    if found is None:
        sha = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                sha.update(block)
        found = _FILE_DIGESTS[key] = sha.hexdigest()
    return found


def load_tokenizer(model: ResolvedModel, trust_remote_code: bool = False):
    """AutoTokenizer for a resolved model, with a pad token (eos for decoders that lack one)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(model.path), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"Could not load a tokenizer from {model.path} (model '{model.reference}'): {exc}. "
            "The folder needs tokenizer files (tokenizer.json or tokenizer_config.json "
            "with its vocabulary)."
        ) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise ModelError(
                f"The tokenizer of '{model.reference}' ({model.path}) has no pad, eos or unk "
                "token to pad batches with. Add a pad token to its tokenizer_config.json."
            )
    return tokenizer


def read_family(path: Path) -> str:
    """encoder / decoder / seq2seq, from a folder's config.json."""
    config_file = Path(path) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"Cannot read {config_file}: {exc}") from None
    family = family_from_config(config)
    if family is None:
        raise ModelError(
            f"Cannot tell whether the model in {path} is an encoder, a decoder or a seq2seq "
            f"model (model_type={config.get('model_type')!r}, "
            f"architectures={config.get('architectures')}). Use a model whose config.json "
            "names a known architecture, or a bundled alias."
        )
    return family


def family_from_config(config: dict) -> str | None:
    """Family from a config.json dict: is_encoder_decoder, then architectures, then model_type."""
    if config.get("is_encoder_decoder"):
        return "seq2seq"
    architectures = config.get("architectures") or []
    for arch in architectures:
        if arch.endswith(("ForConditionalGeneration", "ForSeq2SeqLM")):
            return "seq2seq"
        if arch.endswith(("ForCausalLM", "LMHeadModel")) and "Bert" not in arch:
            return "decoder"
        if arch.endswith(("ForMaskedLM", "ForPreTraining")):
            return "encoder"
    model_type = config.get("model_type")
    if not model_type:
        return None
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    if model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return "seq2seq"
    # Checked before causal LM: BERT-like encoders also have an LM-head class there.
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    return None


def _resolve_alias(name: str, prepare: bool) -> ResolvedModel:
    path = prepare_alias(name) if prepare else alias_path(name)
    return ResolvedModel(name, path, "alias", ALIASES[name].family, alias_revision(name))


def _resolve_path(reference: str, path: Path) -> ResolvedModel:
    path = path.resolve()
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelError(
            f"Model folder '{reference}' ({path}) has no config.json. A local model must be a "
            f"Hugging Face folder (config.json, weights, tokenizer files). {choices()}"
        )
    return ResolvedModel(reference, path, "path", read_family(path), None)


def _resolve_hub(repo_id: str, revision: str | None, prepare: bool) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    def fetch(patterns: list[str]) -> Path:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=patterns, local_files_only=not prepare
            )
        )

    try:
        path = fetch(HUB_FILES)
        if not any(path.glob("*.safetensors")):
            path = fetch(HUB_FILES + HUB_LEGACY_WEIGHTS)
    except Exception as exc:  # noqa: BLE001 - every failure means the same to the user
        path = shared.fetch_snapshot(repo_id, revision, cache_dir()) if prepare else None
        if path is None:
            raise ModelError(_hub_failure(repo_id, revision, prepare, exc)) from None
        log.warning(
            "%s: the hub could not be reached (%s); using the team store's copy of %s, commit %s.",
            repo_id,
            type(exc).__name__,
            revision or "main",
            path.name,
        )
    else:
        shared.share_snapshot(repo_id, revision, path)  # workers without the hub get it
    if not (path / "config.json").is_file():
        raise ModelError(
            f"Hub repository '{repo_id}' has no config.json: it is not a transformers model. "
            f"{choices()}"
        )
    # The snapshot folder is named after the commit it holds.
    return ResolvedModel(repo_id, path, "hub", read_family(path), path.name)


def _hub_failure(repo_id: str, revision: str | None, prepare: bool, exc: Exception) -> str:
    at = f" at revision '{revision}'" if revision else ""
    if not prepare:
        why = "it is not in the local Hugging Face cache and downloading was not allowed"
    elif os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        why = "HF_HUB_OFFLINE is set, so the hub cannot be reached, and it is not cached locally"
    else:
        why = "the Hugging Face hub is unreachable, or the id or revision is wrong (or gated)"
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return (
        f"Could not get model '{repo_id}'{at} from the Hugging Face hub: {why} "
        f"({type(exc).__name__}: {detail}). There is no local folder '{repo_id}' either. "
        f"Check the id and your network, or use a bundled alias or a local folder instead. "
        f"{choices()}"
    )


def _looks_like_path(reference: str) -> bool:
    return (
        reference.startswith((".", "/", "~"))
        or os.sep in reference
        or "/" in reference
        or (os.altsep is not None and os.altsep in reference)
    )
