"""Names from published fine-tuning recipes, accepted in a run config as aliases of tunelab's.

Recipes are written flat (``num_train_epochs: 3`` at the top of the file). Each name below
is accepted there, inside the section its field lives in or any section on the way
(``train.num_train_epochs``, ``train.lora_r``, ``train.adapter.lora_r``), and as a
``--set`` key. It is replaced by tunelab's own key before validation, so ``tunelab config
show``, the logged config and ``config_hash()`` only ever hold tunelab's names. A name that
is already a field of the section it sits in (``train.learning_rate``) is that field.

Where each name comes from (HF = transformers ``TrainingArguments``; TRL = trl's
``ModelConfig``, ``SFTConfig`` and ``DPOConfig``; Axolotl = its YAML configs; PEFT =
``LoraConfig``):

=============================  =================================  =========================
recipe name                    tunelab key                        from
=============================  =================================  =========================
model_name_or_path             model.name                         TRL, HF example scripts
base_model                     model.name                         Axolotl
model_revision                 model.revision                     TRL
revision                       model.revision                     HF from_pretrained
max_seq_length                 model.max_length                   older TRL SFTConfig
max_length                     model.max_length                   TRL SFTConfig, DPOConfig
sequence_len                   model.max_length                   Axolotl
trust_remote_code              model.trust_remote_code            TRL, Axolotl
load_in_4bit: true             model.quantization = 4bit          TRL, Axolotl
load_in_8bit: true             model.quantization = 8bit          TRL, Axolotl
num_train_epochs               train.epochs                       HF
num_epochs                     train.epochs                       Axolotl
per_device_train_batch_size    train.batch_size                   HF
micro_batch_size               train.batch_size                   Axolotl
gradient_accumulation_steps    train.grad_accum_steps             HF, Axolotl
learning_rate                  train.learning_rate                HF, Axolotl
weight_decay                   train.weight_decay                 HF, Axolotl
warmup_ratio                   train.warmup_ratio                 HF 4.x, Axolotl
max_grad_norm                  train.max_grad_norm                HF, Axolotl
max_steps                      train.max_steps                    HF, Axolotl
logging_steps                  train.logging_steps                HF, Axolotl
save_steps                     train.save_steps                   HF, Axolotl
save_total_limit               train.save_total_limit             HF, Axolotl
eval_steps                     train.eval_steps                   HF, Axolotl
seed                           train.seed                         HF, Axolotl
gradient_checkpointing         train.gradient_checkpointing       HF, Axolotl
resume_from_checkpoint         train.resume_from                  HF, Axolotl
lr_scheduler_type              train.lr_scheduler                 HF
lr_scheduler                   train.lr_scheduler                 Axolotl
lr_scheduler_kwargs            train.lr_scheduler_kwargs          HF, Axolotl
bf16: true (or auto)           train.precision = bf16 (auto)      HF, Axolotl
fp16: true                     train.precision = fp16             HF, Axolotl
lora_r                         train.adapter.r                    TRL, Axolotl
lora_alpha                     train.adapter.alpha                TRL, Axolotl
lora_dropout                   train.adapter.dropout              TRL, Axolotl
lora_target_modules            train.adapter.target_modules       TRL, Axolotl
target_modules                 train.adapter.target_modules       PEFT
num_virtual_tokens             train.adapter.num_virtual_tokens   PEFT
beta                           train.dpo.beta                     TRL DPOConfig
=============================  =================================  =========================

The switches (``bf16``, ``fp16``, ``load_in_4bit``, ``load_in_8bit``) set their value when
true; false or empty leaves the key to tunelab (``train.precision: auto``, no
quantisation), and is a conflict only next to the very value it switches off. An alias
and tunelab's key (or two aliases) given with different values are an error naming both;
equal values are fine. Other ``TrainingArguments`` / ``SFTConfig`` / ``DPOConfig`` fields
go under ``train.trainer_args``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import ConfigError

# The canonical field names of the section at a path (() = the top level).
FieldsAt = Callable[[tuple[str, ...]], list[str]]


@dataclass(frozen=True)
class Alias:
    name: str
    target: str  # tunelab's dotted key
    switch: dict[Any, Any] = field(default_factory=dict)  # value when on; empty = as given

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.target.split("."))


def _same_name(*pairs: tuple[str, str]) -> list[Alias]:
    return [Alias(name, target) for name, target in pairs]


ALIASES: tuple[Alias, ...] = (
    *_same_name(
        ("model_name_or_path", "model.name"),
        ("base_model", "model.name"),
        ("model_revision", "model.revision"),
        ("revision", "model.revision"),
        ("max_seq_length", "model.max_length"),
        ("max_length", "model.max_length"),
        ("sequence_len", "model.max_length"),
        ("trust_remote_code", "model.trust_remote_code"),
        ("num_train_epochs", "train.epochs"),
        ("num_epochs", "train.epochs"),
        ("per_device_train_batch_size", "train.batch_size"),
        ("micro_batch_size", "train.batch_size"),
        ("gradient_accumulation_steps", "train.grad_accum_steps"),
        ("learning_rate", "train.learning_rate"),
        ("weight_decay", "train.weight_decay"),
        ("warmup_ratio", "train.warmup_ratio"),
        ("max_grad_norm", "train.max_grad_norm"),
        ("max_steps", "train.max_steps"),
        ("logging_steps", "train.logging_steps"),
        ("save_steps", "train.save_steps"),
        ("save_total_limit", "train.save_total_limit"),
        ("eval_steps", "train.eval_steps"),
        ("seed", "train.seed"),
        ("gradient_checkpointing", "train.gradient_checkpointing"),
        ("resume_from_checkpoint", "train.resume_from"),
        ("lr_scheduler_type", "train.lr_scheduler"),
        ("lr_scheduler", "train.lr_scheduler"),
        ("lr_scheduler_kwargs", "train.lr_scheduler_kwargs"),
        ("lora_r", "train.adapter.r"),
        ("lora_alpha", "train.adapter.alpha"),
        ("lora_dropout", "train.adapter.dropout"),
        ("lora_target_modules", "train.adapter.target_modules"),
        ("target_modules", "train.adapter.target_modules"),
        ("num_virtual_tokens", "train.adapter.num_virtual_tokens"),
        ("beta", "train.dpo.beta"),
    ),
    Alias("bf16", "train.precision", {True: "bf16", "auto": "auto"}),
    Alias("fp16", "train.precision", {True: "fp16"}),
    Alias("load_in_4bit", "model.quantization", {True: "4bit"}),
    Alias("load_in_8bit", "model.quantization", {True: "8bit"}),
)
BY_NAME: dict[str, Alias] = {a.name: a for a in ALIASES}


def alias_at(node: tuple[str, ...], name: str, fields_at: FieldsAt) -> Alias | None:
    """The alias ``name`` stands for in the section at ``node``, if any."""
    alias = BY_NAME.get(name)
    if alias is None or alias.path[: len(node)] != node or len(node) >= len(alias.path):
        return None
    return None if name in fields_at(node) else alias


def names_at(node: tuple[str, ...], fields_at: FieldsAt) -> list[str]:
    """The recipe names accepted in the section at ``node``."""
    return [a.name for a in ALIASES if alias_at(node, a.name, fields_at)]


@dataclass(frozen=True)
class Given:
    """One value for a tunelab key, as written (``num_train_epochs=3``)."""

    key: str
    written: Any
    value: Any
    off: bool = False  # a switch turned off: the key must not end up at `value`

    def show(self) -> str:
        return f"{self.key}={json.dumps(self.written, default=str)}"


def translate(alias: Alias, key: str, value: Any, where: str = "config") -> Given:
    """The value ``alias`` (written as ``key``) gives its tunelab key."""
    if not alias.switch:
        return Given(key, value, value)
    for on, meant in alias.switch.items():
        if value is on or (isinstance(value, str) and value == on):
            return Given(key, value, meant)
    if value is False or value is None:
        return Given(key, value, alias.switch[True], off=True)
    choices = ", ".join(yaml_text(v) for v in (*alias.switch, False))
    raise ConfigError(
        f"Invalid config ({where}): {key}={value!r}, but {alias.name} takes one of {choices} "
        f"(it sets {alias.target})."
    )


def resolve(raw: dict[str, Any], fields_at: FieldsAt, where: str = "config") -> dict[str, Any]:
    """``raw`` with every recipe name replaced by tunelab's key; conflicts are errors."""
    out = copy.deepcopy(raw)
    given: dict[tuple[str, ...], list[Given]] = {}
    for alias in ALIASES:
        for depth in range(len(alias.path)):
            node_path = alias.path[:depth]
            node = node_at(out, node_path)
            if alias.name not in node or not alias_at(node_path, alias.name, fields_at):
                continue
            key = ".".join((*node_path, alias.name))
            value = translate(alias, key, node.pop(alias.name), where)
            given.setdefault(alias.path, []).append(value)
    for path, values in given.items():
        parent, leaf = node_at(out, path[:-1]), path[-1]
        if leaf in parent:
            values.insert(0, Given(".".join(path), parent[leaf], parent[leaf]))
        on = [g for g in values if not g.off]
        for other in on[1:]:
            if not _same(on[0].value, other.value):
                raise _conflict(where, path, on[0], other)
        if on:
            parent = node_at(out, path[:-1], create=True)
            parent[leaf] = on[0].value
            for off in (g for g in values if g.off):
                if _same(off.value, on[0].value):
                    raise _conflict(where, path, on[0], off)
    return out


def _conflict(where: str, path: tuple[str, ...], one: Given, other: Given) -> ConfigError:
    target = ".".join(path)
    return ConfigError(
        f"Invalid config ({where}): {one.show()} and {other.show()} disagree; both set "
        f"{target} (recipe names are aliases of tunelab's keys, see tunelab/config_aliases.py). "
        "Keep one of them."
    )


def yaml_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def node_at(raw: dict[str, Any], path: tuple[str, ...], create: bool = False) -> dict[str, Any]:
    """The section at ``path`` ({} when absent, created when ``create``)."""
    node = raw
    for part in path:
        child = node.get(part)
        if child is None and create:
            child = node[part] = {}
        if not isinstance(child, dict):
            return {}
        node = child
    return node
