"""The real bundled models: minilm-l6 as a classifier, smollm2 converted from GGUF and chatting."""

from __future__ import annotations

import json

import pytest

from tunelab import models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """smollm2-135m-instruct converted once into a cache of this module's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(models.CACHE_ENV, str(tmp_path_factory.mktemp("model-cache")))
        yield models.resolve("smollm2-135m-instruct")


def test_minilm_loads_for_classification_offline(monkeypatch, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "model-cache"))
    resolved = models.resolve("minilm-l6")
    assert (resolved.source, resolved.family) == ("alias", "encoder")
    assert list(resolved.path.glob("*.safetensors"))

    tokenizer = models.load_tokenizer(resolved)
    model = AutoModelForSequenceClassification.from_pretrained(resolved.path, num_labels=3)
    assert 22e6 < sum(p.numel() for p in model.parameters()) < 23.5e6
    batch = tokenizer(["Great value.", "It broke on day two."], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 3)


def test_smollm2_folder_is_plain_safetensors_with_a_chat_template(smollm2):
    folder = smollm2.path
    assert (smollm2.source, smollm2.family) == ("alias", "decoder")
    assert [p.name for p in folder.glob("*.safetensors")] == ["model.safetensors"]
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.gguf"))
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"

    tokenizer = models.load_tokenizer(smollm2)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id is not None
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_token_id
    assert generation["pad_token_id"] == tokenizer.pad_token_id


def test_smollm2_reloads_and_answers_with_its_chat_template(smollm2):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2.path)  # no gguf_file: a plain folder
    assert abs(sum(p.numel() for p in model.parameters()) - 134.5e6) < 0.2e6
    tokenizer = models.load_tokenizer(smollm2)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_smollm2_second_resolve_reuses_the_conversion(smollm2, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(smollm2.path.parent))
    marker = smollm2.path / models.MARKER
    stamp = marker.stat().st_mtime_ns
    assert models.resolve("smollm2-135m-instruct").path == smollm2.path
    assert marker.stat().st_mtime_ns == stamp
