"""Recipe names (Hugging Face TrainingArguments, TRL, Axolotl) in a run config: flat, in
their section and in --set overrides, resolved to tunelab's own keys."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml
from typer.testing import CliRunner

from tunelab import config, config_aliases
from tunelab.errors import ConfigError

# A TRL-style SFT recipe, flat as published, plus the two sections tunelab needs.
TRL_RECIPE = """
model_name_or_path: tiny-gpt2
model_revision: main
max_length: 128
trust_remote_code: false
load_in_4bit: true
num_train_epochs: 3
per_device_train_batch_size: 4
gradient_accumulation_steps: 8
learning_rate: 2.0e-4
weight_decay: 0.01
warmup_ratio: 0.03
max_grad_norm: 0.3
max_steps: 500
lr_scheduler_type: cosine
lr_scheduler_kwargs: {num_cycles: 0.5}
logging_steps: 10
save_steps: 100
eval_steps: 50
seed: 7
gradient_checkpointing: true
bf16: true
fp16: false
lora_r: 16
lora_alpha: 32
lora_dropout: 0.1
lora_target_modules: [c_attn]
data: {name: instructions, task: generation, source: "bundled:instructions"}
train: {method: lora}
"""

# The same run in tunelab's names.
TUNELAB_CONFIG = """
data: {name: instructions, task: generation, source: "bundled:instructions"}
model:
  name: tiny-gpt2
  revision: main
  max_length: 128
  trust_remote_code: false
  quantization: 4bit
train:
  method: lora
  epochs: 3
  batch_size: 4
  grad_accum_steps: 8
  learning_rate: 2.0e-4
  weight_decay: 0.01
  warmup_ratio: 0.03
  max_grad_norm: 0.3
  max_steps: 500
  lr_scheduler: cosine
  lr_scheduler_kwargs: {num_cycles: 0.5}
  logging_steps: 10
  save_steps: 100
  eval_steps: 50
  seed: 7
  gradient_checkpointing: true
  precision: bf16
  adapter: {r: 16, alpha: 32, dropout: 0.1, target_modules: [c_attn]}
"""

AXOLOTL_RECIPE = """
base_model: tiny-gpt2
sequence_len: 128
load_in_8bit: true
num_epochs: 2
micro_batch_size: 2
gradient_accumulation_steps: 4
lr_scheduler: cosine
learning_rate: 0.0002
bf16: auto
fp16:
lora_r: 8
lora_alpha: 16
lora_dropout: 0.05
lora_target_modules: [c_attn]
train: {method: lora}
"""


def write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_trl_recipe_resolves_to_the_same_run_config_as_tunelab_names(tmp_path):
    recipe = config.load(write(tmp_path, TRL_RECIPE, "recipe.yaml"))
    ours = config.load(write(tmp_path, TUNELAB_CONFIG, "ours.yaml"))
    assert recipe == ours
    assert recipe.config_hash() == ours.config_hash()
    assert recipe.train.lr_scheduler == "cosine"
    assert recipe.model.quantization == "4bit"
    assert recipe.train.adapter.r == 16
    assert recipe.data.seed == 13  # a recipe's seed is the training seed


def test_an_axolotl_recipe_resolves(tmp_path):
    cfg = config.load(write(tmp_path, AXOLOTL_RECIPE))
    assert cfg.model.name == "tiny-gpt2" and cfg.model.max_length == 128
    assert cfg.model.quantization == "8bit"
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.grad_accum_steps) == (2, 2, 4)
    assert cfg.train.lr_scheduler == "cosine"
    assert cfg.train.precision == "auto"  # bf16: auto, fp16 empty
    assert (cfg.train.adapter.r, cfg.train.adapter.alpha) == (8, 16)


def test_recipe_names_inside_their_section(tmp_path):
    path = write(
        tmp_path,
        """
        model: {model_name_or_path: tiny-bert, max_seq_length: 64, load_in_8bit: true}
        train:
          num_train_epochs: 2
          per_device_train_batch_size: 4
          lr_scheduler_type: constant
          lora_r: 4
          beta: 0.3
          adapter: {lora_alpha: 8, target_modules: [query]}
        """,
    )
    cfg = config.load(path)
    assert (cfg.model.name, cfg.model.max_length, cfg.model.quantization) == (
        "tiny-bert",
        64,
        "8bit",
    )
    assert (cfg.train.epochs, cfg.train.batch_size) == (2, 4)
    assert cfg.train.lr_scheduler == "constant"
    assert (cfg.train.adapter.r, cfg.train.adapter.alpha) == (4, 8)
    assert cfg.train.adapter.target_modules == ["query"]
    assert cfg.train.dpo.beta == 0.3


def test_set_overrides_take_recipe_names_and_win_over_the_file(tmp_path):
    path = write(tmp_path, "train: {epochs: 1, precision: fp32, adapter: {r: 8}}\n")
    cfg = config.load(
        path,
        [
            "num_train_epochs=5",
            "train.lora_r=32",
            "train.adapter.lora_dropout=0.2",
            "bf16=true",
            "train.lr_scheduler_type=cosine_with_restarts",
            "lr_scheduler_kwargs={num_cycles: 2}",
            "model_name_or_path=tiny-llama",
            "load_in_4bit=true",
        ],
    )
    assert cfg.train.epochs == 5
    assert cfg.train.adapter.r == 32 and cfg.train.adapter.dropout == 0.2
    assert cfg.train.precision == "bf16"
    assert cfg.train.lr_scheduler == "cosine_with_restarts"
    assert cfg.train.lr_scheduler_kwargs == {"num_cycles": 2}
    assert cfg.model.name == "tiny-llama" and cfg.model.quantization == "4bit"


def test_a_switch_set_off_goes_back_to_the_default():
    assert config.load(None, ["bf16=true", "bf16=false"]).train.precision == "auto"
    assert config.load(None, ["fp16=true", "bf16=false"]).train.precision == "fp16"
    assert config.load(None, ["load_in_4bit=true", "load_in_4bit=false"]).model.quantization is None


def test_a_files_recipe_names_win_over_its_base(tmp_path):
    write(tmp_path, "train: {epochs: 1, learning_rate: 0.1}\n", "base.yaml")
    cfg = config.load(write(tmp_path, "base: base.yaml\nnum_train_epochs: 4\n"))
    assert cfg.train.epochs == 4 and cfg.train.learning_rate == 0.1


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("num_train_epochs: 3\ntrain: {epochs: 1}\n", ["num_train_epochs=3", "train.epochs=1"]),
        ("num_epochs: 3\nnum_train_epochs: 2\n", ["num_epochs=3", "num_train_epochs=2"]),
        ("lora_r: 4\ntrain: {adapter: {r: 8}}\n", ["lora_r=4", "train.adapter.r=8"]),
        ("bf16: true\nfp16: true\n", ["bf16=true", "fp16=true"]),
        ("bf16: false\ntrain: {precision: bf16}\n", ["bf16=false", 'train.precision="bf16"']),
        ("load_in_4bit: true\nload_in_8bit: true\n", ["load_in_4bit=true", "load_in_8bit=true"]),
    ],
)
def test_an_alias_and_its_key_with_different_values_is_an_error_naming_both(tmp_path, text, keys):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    for key in keys:
        assert key in message
    assert str(path) in message and "Keep one" in message


def test_an_alias_and_its_key_with_the_same_value_are_fine(tmp_path):
    path = write(
        tmp_path, "num_train_epochs: 3\nbf16: true\ntrain: {epochs: 3.0, precision: bf16}\n"
    )
    cfg = config.load(path)
    assert cfg.train.epochs == 3 and cfg.train.precision == "bf16"


def test_a_switch_takes_only_switch_values(tmp_path):
    with pytest.raises(ConfigError, match=r"bf16=.*sometimes.*true, auto, false"):
        config.load(write(tmp_path, "bf16: sometimes\n"))


def test_an_unknown_flat_key_still_fails_and_mentions_recipe_names(tmp_path):
    path = write(tmp_path, "num_train_epoch: 3\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert "unknown key 'num_train_epoch'" in message
    assert "Did you mean num_train_epochs" in message
    assert "config_aliases" in message and "train.trainer_args" in message


def test_a_name_that_is_a_field_of_its_section_is_that_field():
    # train.seed is tunelab's own key; data.seed is not the training seed's alias.
    cfg = config.load(None, ["data.seed=3", "train.learning_rate=0.5"])
    assert (cfg.data.seed, cfg.train.seed, cfg.train.learning_rate) == (3, 42, 0.5)
    with pytest.raises(ConfigError, match="unknown key 'data.num_train_epochs'"):
        config.load(None, ["data.num_train_epochs=3"])


def test_config_show_prints_tunelab_names_only(tmp_path):
    from tunelab.cli import app

    result = CliRunner().invoke(
        app, ["config", "show", str(write(tmp_path, TRL_RECIPE)), "--set", "micro_batch_size=2"]
    )
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert list(shown) == ["data", "model", "train", "eval", "registry"]
    assert shown["train"]["epochs"] == 3 and shown["train"]["batch_size"] == 2
    assert shown["train"]["precision"] == "bf16" and shown["model"]["quantization"] == "4bit"

    def recipe_names(node: dict, path: tuple[str, ...] = ()) -> list[str]:
        found = [k for k in node if config_aliases.alias_at(path, k, config._fields_at)]
        for key, value in node.items():
            if isinstance(value, dict) and key in config._fields_at(path):
                found += recipe_names(value, (*path, key))
        return found

    assert recipe_names(shown) == []


def test_every_alias_names_a_real_key_and_is_documented():
    doc = config_aliases.__doc__
    for alias in config_aliases.ALIASES:
        *section, leaf = alias.path
        assert leaf in config._allowed_keys(tuple(section)), alias
        assert re.search(rf"\n{alias.name}[ :]", doc), alias.name


def test_the_new_fields_default_to_todays_behaviour():
    cfg = config.RunConfig()
    assert cfg.model.quantization is None
    assert cfg.train.lr_scheduler == "linear"
    assert cfg.train.lr_scheduler_kwargs == {} and cfg.train.trainer_args == {}


def test_credentials_in_trainer_args_are_refused_without_echoing_them():
    token = "hf_" + "a" * 30
    with pytest.raises(ConfigError) as err:
        config.load(None, [f"train.trainer_args={{hub_token: {token}}}"])
    message = str(err.value)
    assert "hub_token" in message and "environment variables" in message
    assert token not in message
