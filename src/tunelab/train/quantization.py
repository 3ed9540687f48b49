"""QLoRA: the base model loaded quantised by bitsandbytes (model.quantization: 4bit or
8bit), an adapter trained on top in bf16 (fp16 where bf16 is missing).

- :func:`check` refuses what cannot work before anything loads: no CUDA device, a
  method that trains the quantised weights themselves, bitsandbytes missing.
- :func:`load_kwargs` gives ``from_pretrained`` its ``quantization_config``: 4-bit NF4 with
  double quantisation and bf16 compute (the QLoRA recipe), or 8-bit LLM.int8.
- :func:`prepare` readies the quantised model for training (peft's
  ``prepare_model_for_kbit_training``: norms in fp32, input gradients for checkpointing).

A quantised model cannot be merged in place: adapters.py merges the adapter into the
de-quantised (full-precision) base and verifies that merge like any LoRA merge.
"""

from __future__ import annotations

from typing import Any

from tunelab.config import RunConfig
from tunelab.errors import TrainingError

# Methods whose trainable weights sit outside the quantised base (peft adapters).
METHODS = ("lora", "ia3")
INSTALL = "pip install 'tunelab[qlora]' (bitsandbytes)"


def check(cfg: RunConfig, cuda_available: bool | None = None) -> None:
    """A clear error for a quantised run that cannot happen here (before any loading)."""
    bits = cfg.model.quantization
    if bits is None:
        return
    method = cfg.train.method
    if method not in METHODS:
        raise TrainingError(
            f"model.quantization={bits} quantises the base weights, so they cannot be "
            f"trained: train.method={method} is not possible on them. Use train.method=lora "
            "(QLoRA) or ia3, or remove model.quantization."
        )
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available or cfg.train.device == "cpu":
        where = "train.device=cpu" if cfg.train.device == "cpu" else "no CUDA device is visible"
        raise TrainingError(
            f"model.quantization={bits} needs an NVIDIA GPU (bitsandbytes kernels), but "
            f"{where}. Remove model.quantization to train LoRA in full precision here, or run "
            "on a machine with CUDA."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainingError(
            f"model.quantization={bits} needs the bitsandbytes package: {INSTALL}."
        ) from None


def load_kwargs(cfg: RunConfig, compute_dtype) -> dict[str, Any]:
    """``from_pretrained`` arguments of a quantised load; empty without quantisation."""
    bits = cfg.model.quantization
    if bits is None:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    if bits == "4bit":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    else:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    # Everything on the current GPU: bitsandbytes layers cannot be moved afterwards.
    return {
        "quantization_config": quantization,
        "device_map": {"": torch.cuda.current_device()},
        "dtype": compute_dtype,
    }


def prepare(model, gradient_checkpointing: bool):
    """peft's preparation of a quantised model for adapter training."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False))
