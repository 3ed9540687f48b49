"""QLoRA's refusals: each comes before any model is loaded, and says what to change."""

from __future__ import annotations

import builtins

import pytest

from tunelab import config
from tunelab.errors import TrainingError
from tunelab.train import check_method, quantization


def cfg_with(*overrides: str):
    return config.load(
        None, ["model.name=tiny-llama", "data.task=generation", "train.method=lora", *overrides]
    )


def test_quantization_without_cuda_is_refused_before_loading(monkeypatch):
    import torch

    from tunelab.train import finetune

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loads = []
    monkeypatch.setattr(finetune, "load_model", lambda *a, **k: loads.append(a))
    with pytest.raises(TrainingError, match="needs an NVIDIA GPU.*Remove model.quantization"):
        check_method(cfg_with("model.quantization=4bit"))
    assert loads == []


def test_quantized_weights_cannot_be_trained_directly():
    with pytest.raises(TrainingError, match="train.method=full is not possible"):
        quantization.check(cfg_with("model.quantization=8bit", "train.method=full"), True)


def test_cpu_device_is_refused_even_with_a_gpu():
    with pytest.raises(TrainingError, match="train.device=cpu"):
        quantization.check(cfg_with("model.quantization=4bit", "train.device=cpu"), True)


def test_missing_bitsandbytes_names_the_install(monkeypatch):
    real_import = builtins.__import__

    def no_bitsandbytes(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bitsandbytes)
    with pytest.raises(TrainingError, match=r"tunelab\[qlora\]"):
        quantization.check(cfg_with("model.quantization=4bit"), True)


def test_no_quantization_changes_nothing():
    quantization.check(cfg_with(), False)
    assert quantization.load_kwargs(cfg_with(), None) == {}


def test_the_4bit_recipe_is_nf4_with_double_quantization_and_bf16_compute(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    kwargs = quantization.load_kwargs(cfg_with("model.quantization=4bit"), torch.bfloat16)
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert kwargs["device_map"] == {"": 0}
    eight = quantization.load_kwargs(cfg_with("model.quantization=8bit"), torch.bfloat16)
    assert eight["quantization_config"].load_in_8bit
