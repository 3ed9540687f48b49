"""Tiny random models for tests, each built from a recipe with a tokenizer trained on the samples.

A build is deterministic: the same recipe, seed and corpus samples (CORPUS_SAMPLES) give the
same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tunelab.errors import ModelError

TINY_SEED = 1234
MAX_LENGTH = 512  # positions of every tiny model, and its tokenizer's model_max_length
# The bundled samples the tiny tokenizers are trained on, in this order. A fixed list, not
# every sample: a new sample would change every tiny model's bytes (and its fingerprint).
CORPUS_SAMPLES = ("chat.jsonl", "instructions.jsonl", "preferences.jsonl", "sentiment.jsonl")

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyRecipe:
    """One tiny alias: what it is for, how its tokenizer is trained, and the model built on it."""

    description: str
    tasks: tuple[str, ...]
    family: str  # "encoder" | "decoder" | "seq2seq"
    vocabulary: str  # how the tokenizer is trained: a key of _VOCABULARIES
    vocab_size: int
    special_tokens: tuple[str, ...]  # trained in first, so they take ids 0, 1, ...
    roles: dict[str, str]  # the tokenizer's bos_token, eos_token, pad_token, ... (in this order)
    config_class: str  # transformers class names, imported only when building
    config: dict[str, object]  # the model's shape; vocab_size and token_ids are added
    token_ids: dict[str, str]  # config field -> the special token whose id it holds
    model_class: str
    # (single, pair) post-processing template, e.g. "[CLS] $A [SEP]"; None adds no tokens.
    template: tuple[str, str] | None = None
    additional_special_tokens: tuple[str, ...] = ()
    token_type_ids: bool = False  # only BERT's tokenizer returns them
    chat_template: str | None = None


_CHAT_ROLES = ("<|system|>", "<|user|>", "<|assistant|>")

RECIPES: dict[str, TinyRecipe] = {
    "tiny-gpt2": TinyRecipe(
        description="random 2-layer GPT-2 (hidden 64), byte-level BPE trained on the bundled "
        "samples; for tests",
        tasks=("classification", "generation", "preference", "prompts"),
        family="decoder",
        vocabulary="byte-level-bpe",
        vocab_size=1500,
        special_tokens=("<|endoftext|>",),
        # Like GPT-2: one special token for bos/eos/unk and no pad token (load_tokenizer adds one).
        roles={
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
        },
        config_class="GPT2Config",
        config={"n_positions": MAX_LENGTH, "n_embd": 64, "n_layer": 2, "n_head": 2, "n_inner": 128},
        token_ids={"bos_token_id": "<|endoftext|>", "eos_token_id": "<|endoftext|>"},
        model_class="GPT2LMHeadModel",
    ),
    "tiny-llama": TinyRecipe(
        description="random 2-layer Llama (hidden 64) with bos/eos/pad and a chat template; "
        "for tests",
        tasks=("classification", "generation", "preference", "prompts"),
        family="decoder",
        vocabulary="byte-level-bpe",
        vocab_size=1500,
        special_tokens=("<s>", "</s>", "<pad>", "<unk>", *_CHAT_ROLES),
        roles={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
        # Like Llama: plain text starts with bos; chat templates are tokenized without it.
        template=("<s> $A", "<s> $A <s> $B:1"),
        additional_special_tokens=_CHAT_ROLES,
        chat_template=TINY_CHAT_TEMPLATE,
        config_class="LlamaConfig",
        config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": MAX_LENGTH,
            "tie_word_embeddings": False,
        },
        token_ids={"bos_token_id": "<s>", "eos_token_id": "</s>", "pad_token_id": "<pad>"},
        model_class="LlamaForCausalLM",
    ),
    "tiny-t5": TinyRecipe(
        description="random 2-layer T5 (d_model 64), Unigram tokenizer; for tests",
        tasks=("generation", "preference"),
        family="seq2seq",
        vocabulary="metaspace-bpe",
        vocab_size=1500,
        special_tokens=("<pad>", "</s>", "<unk>"),
        roles={"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
        # Like T5: every sequence ends with </s>, there is no bos.
        template=("$A </s>", "$A </s> $B:1 </s>:1"),
        config_class="T5Config",
        config={
            "d_model": 64,
            "d_kv": 32,
            "d_ff": 128,
            "num_layers": 2,
            "num_decoder_layers": 2,
            "num_heads": 2,
        },
        token_ids={
            "pad_token_id": "<pad>",
            "eos_token_id": "</s>",
            "decoder_start_token_id": "<pad>",
        },
        model_class="T5ForConditionalGeneration",
    ),
    "tiny-bert": TinyRecipe(
        description="random 2-layer BERT (hidden 64), WordPiece tokenizer; for tests",
        tasks=("classification",),
        family="encoder",
        vocabulary="wordpiece",
        vocab_size=800,
        special_tokens=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
        roles={
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        },
        template=("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1"),
        token_type_ids=True,
        config_class="BertConfig",
        config={
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": MAX_LENGTH,
        },
        token_ids={"pad_token_id": "[PAD]"},
        # A bare encoder with its pooler, like minilm-l6: task heads are added when loading.
        model_class="BertModel",
    ),
}


def build(name: str, work: Path) -> None:
    """Build the tiny alias ``name`` into the folder ``work``: its tokenizer, then its model."""
    import transformers
    from tokenizers import processors

    recipe = RECIPES[name]
    raw = _VOCABULARIES[recipe.vocabulary](recipe)
    if recipe.template is not None:
        single, pair = recipe.template
        template = processors.TemplateProcessing(
            single=single,
            pair=pair,
            special_tokens=[
                (token, raw.token_to_id(token))
                for token in recipe.special_tokens
                if token in single.split()
            ],
        )
        before = raw.post_processor
        raw.post_processor = template if before is None else processors.Sequence([before, template])

    extra: dict[str, object] = {}
    if recipe.additional_special_tokens:
        extra["additional_special_tokens"] = list(recipe.additional_special_tokens)
    extra["model_max_length"] = MAX_LENGTH
    if not recipe.token_type_ids:
        extra["model_input_names"] = ["input_ids", "attention_mask"]
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, **recipe.roles, **extra)
    if recipe.chat_template is not None:
        tokenizer.chat_template = recipe.chat_template

    config = getattr(transformers, recipe.config_class)(
        vocab_size=raw.get_vocab_size(),
        **recipe.config,
        **{key: raw.token_to_id(token) for key, token in recipe.token_ids.items()},
    )
    model_class = getattr(transformers, recipe.model_class)
    model = _seeded_model(lambda: model_class(config))
    model.save_pretrained(str(work))
    tokenizer.save_pretrained(str(work))


def corpus_hash() -> str:
    """Short digest of the tokenizers' corpus: part of a tiny alias's recipe."""
    digest = hashlib.sha256("\n".join(_corpus()).encode("utf-8")).hexdigest()
    return digest[:12]


def _corpus() -> list[str]:
    """Every text field of the CORPUS_SAMPLES, in that order: the tiny tokenizers' corpus."""
    lines: list[str] = []
    samples = resources.files("tunelab.data").joinpath("samples")
    for name in CORPUS_SAMPLES:
        entry = samples.joinpath(name)
        if not entry.is_file():
            # Skipping it would quietly give every tiny model other bytes.
            raise ModelError(
                f"The bundled sample tunelab/data/samples/{name} that the tiny tokenizers are "
                "trained on is missing. Reinstall tunelab (pip install --force-reinstall)."
            )
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
            "No bundled samples (tunelab/data/samples: "
            f"{', '.join(CORPUS_SAMPLES)}) to train a tokenizer on."
        )
    return lines


def _train(tokenizer, trainer):
    """Train on the corpus. Only BPE without a continuing-subword prefix is used: its
    merges and ids are the same every run, while the WordPiece and Unigram trainers
    number pieces in hash-map order."""
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _byte_level_bpe(recipe: TinyRecipe):
    """GPT-2's and Llama's: byte-level BPE, so no text is ever unknown."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        min_frequency=2,
        special_tokens=list(recipe.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer = _train(tokenizer, trainer)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _metaspace_bpe(recipe: TinyRecipe):
    """T5 uses a SentencePiece model; a BPE over "▁"-marked words behaves the same way."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=recipe.roles["unk_token"]))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=list(recipe.special_tokens),
        show_progress=False,
    )
    return _train(tokenizer, trainer)


def _wordpiece(recipe: TinyRecipe):
    """BERT's uncased WordPiece, its vocabulary from stable BPE pieces: each piece word-initial
    and as "##" continuation (the WordPiece trainer's own vocabulary changes from run to run)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    unk = recipe.roles["unk_token"]
    special = list(recipe.special_tokens)
    bpe = Tokenizer(models.BPE(unk_token=unk))
    bpe.normalizer = normalizers.BertNormalizer(lowercase=True)
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bpe = _train(
        bpe,
        trainers.BpeTrainer(
            vocab_size=recipe.vocab_size, special_tokens=special, show_progress=False
        ),
    )
    by_id = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    pieces = [token for token, _ in by_id if token not in special]
    vocab: dict[str, int] = {}
    for token in [*special, *pieces, *(f"##{p}" for p in pieces)]:
        vocab.setdefault(token, len(vocab))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


_VOCABULARIES: dict[str, Callable[[TinyRecipe], object]] = {
    "byte-level-bpe": _byte_level_bpe,
    "metaspace-bpe": _metaspace_bpe,
    "wordpiece": _wordpiece,
}


def _seeded_model(build: Callable[[], object]):
    """Build a model under a fixed seed without touching the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = build()
    return model.eval()
