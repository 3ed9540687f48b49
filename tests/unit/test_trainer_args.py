"""train.trainer_args and train.lr_scheduler: checked against the real arguments class
before any model loads, then carried into the Trainer's arguments."""

from __future__ import annotations

import dataclasses
import math

import pytest
from transformers import TrainingArguments
from trl import DPOConfig, SFTConfig

from tunelab import config
from tunelab.errors import ConfigError
from tunelab.train import arguments, check_method, common
from tunelab.train import train as run_training
from tunelab.workspace import Workspace

CPU = common.DeviceChoice("cpu", "fp32")


def make_cfg(*overrides: str):
    # A model that does not exist: a check that passes never reaches a model load.
    return config.load(None, ["train.method=full", "model.name=no-such-model", *overrides])


def refused(*overrides: str) -> str:
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as err:
        check_method(cfg)
    return str(err.value)


def test_fitting_trainer_args_pass_the_early_check():
    check_method(make_cfg("train.trainer_args={optim: adamw_torch, adam_beta2: 0.95}"))
    check_method(make_cfg("train.trainer_args={label_smoothing_factor: 0.1}"))


def test_an_unknown_field_is_named_with_the_class_and_close_matches():
    message = refused("train.trainer_args={adam_beta: 0.9}")
    assert "train.trainer_args.adam_beta" in message
    assert "TrainingArguments" in message
    assert "adam_beta1" in message and "adam_beta2" in message


@pytest.mark.parametrize(
    ("field", "value", "instead"),
    [
        ("learning_rate", "0.1", "train.learning_rate"),
        ("num_train_epochs", "2", "train.epochs"),
        ("per_device_train_batch_size", "4", "train.batch_size"),
        ("seed", "1", "train.seed"),
        ("bf16", "true", "train.precision"),
        ("lr_scheduler_type", "cosine", "train.lr_scheduler"),
        ("output_dir", "elsewhere", "run folder"),
        ("report_to", "wandb", "MLflow"),
    ],
)
def test_a_field_tunelab_sets_says_which_key_to_use(field, value, instead):
    message = refused(f"train.trainer_args={{{field}: {value}}}")
    assert f"train.trainer_args.{field}" in message and instead in message


def test_a_wrong_type_names_the_key_and_the_expected_type():
    message = refused("train.trainer_args={adam_beta2: high}")
    assert "train.trainer_args.adam_beta2" in message and "float" in message


def test_what_the_class_itself_refuses_is_wrapped_naming_the_key():
    message = refused("train.trainer_args={adam_beta2: 0.9, optim: adamw_nope}")
    assert "train.trainer_args.optim='adamw_nope'" in message
    assert "refused by TrainingArguments" in message and "adamw_torch" in message


def test_the_class_follows_the_method_and_the_task():
    assert arguments.arguments_class(make_cfg()) is TrainingArguments
    assert arguments.arguments_class(make_cfg("data.task=generation")) is SFTConfig
    dpo = make_cfg("train.method=dpo", "data.task=preference")
    assert arguments.arguments_class(dpo) is DPOConfig
    # trl fields are accepted where trl trains, and those tunelab sets are refused.
    check_method(
        make_cfg("train.method=dpo", "data.task=preference", "train.trainer_args.ld_alpha=0.5")
    )
    message = refused("train.method=dpo", "data.task=preference", "train.trainer_args.beta=0.5")
    assert "train.dpo.beta" in message
    message = refused("data.task=generation", "train.trainer_args.max_length=64")
    assert "model.max_length" in message
    assert "has no field" in refused("train.trainer_args.ld_alpha=0.5")  # not for a classifier


def test_baseline_runs_ignore_trainer_args():
    cfg = config.load(None, ["train.method=baseline", "train.trainer_args.nonsense=1"])
    check_method(cfg)


def test_own_fields_are_the_ones_training_arguments_sets():
    own = arguments.own_arguments(make_cfg(), "out", CPU)
    assert set(arguments.OWN_FIELDS) == set(own) | {"gradient_checkpointing"}
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    assert set(arguments.OWN_FIELDS) <= fields


def test_training_arguments_carry_the_schedule_and_the_pass_through(tmp_path):
    cfg = make_cfg(
        "lr_scheduler_type=cosine",
        "train.lr_scheduler_kwargs={num_cycles: 0.25}",
        "train.trainer_args={optim: adamw_torch, adam_beta2: 0.95}",
    )
    args = arguments.training_arguments(cfg, tmp_path, CPU)
    assert isinstance(args, TrainingArguments)
    assert args.lr_scheduler_type == "cosine"
    assert args.lr_scheduler_kwargs == {"num_cycles": 0.25}
    assert args.optim == "adamw_torch" and args.adam_beta2 == 0.95
    assert args.learning_rate == cfg.train.learning_rate  # tunelab's own fields stay


def test_a_field_the_method_sets_cannot_be_overridden(tmp_path):
    cfg = make_cfg("train.trainer_args={remove_unused_columns: true}")
    check_method(cfg)  # a plain TrainingArguments field...
    with pytest.raises(ConfigError, match="train.trainer_args.remove_unused_columns"):
        arguments.training_arguments(cfg, tmp_path, CPU, remove_unused_columns=False)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("train.lr_scheduler_kwargs={num_cycle: 2}", "train.lr_scheduler=cosine"), "num_cycles"),
        (("train.lr_scheduler_kwargs={num_cycles: 2}",), "linear schedule takes no arguments"),
        (("train.lr_scheduler=cosine_with_min_lr",), "min_lr or min_lr_rate"),
        (("train.lr_scheduler=warmup_stable_decay",), "num_decay_steps"),
    ],
)
def test_scheduler_kwargs_are_checked_against_the_schedule(overrides, expected):
    assert expected in refused(*overrides)


def test_a_scheduler_outside_the_list_is_a_config_error():
    with pytest.raises(ConfigError, match="train.lr_scheduler"):
        make_cfg("train.lr_scheduler=reduce_lr_on_plateau")


def test_a_tiny_run_trains_on_the_cosine_schedule_with_the_pass_through(
    tmp_path, sentiment_splits, monkeypatch
):
    trainers = []
    run_trainer = common.run_trainer

    def keep(trainer, output_dir):
        trainers.append(trainer)
        return run_trainer(trainer, output_dir)

    monkeypatch.setattr(common, "run_trainer", keep)
    steps, peak = 4, 1e-3
    cfg = config.load(
        None,
        [
            "train.method=full",
            "model.name=tiny-gpt2",
            "model.max_length=64",
            "data.labels=[negative, neutral, positive]",
            "per_device_train_batch_size=4",
            f"max_steps={steps}",
            f"learning_rate={peak}",
            "logging_steps=1",
            "lr_scheduler_type=cosine",
            "train.trainer_args={optim: adamw_torch, adam_beta2: 0.95}",
        ],
    )
    data = {name: split.head(8).reset_index(drop=True) for name, split in sentiment_splits.items()}
    run_training(cfg, data, workspace=Workspace(tmp_path))
    (trainer,) = trainers
    assert trainer.args.lr_scheduler_type == "cosine"
    assert trainer.args.optim == "adamw_torch" and trainer.args.adam_beta2 == 0.95
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    logged = {
        row["step"]: row["learning_rate"]
        for row in trainer.state.log_history
        if "learning_rate" in row
    }
    # Step s trains at the rate the schedule gives after s - 1 steps: for cosine
    # peak * (1 + cos(pi * (s - 1) / steps)) / 2, 0.854 * peak at step 2 (linear: 0.75).
    assert sorted(logged) == [1, 2, 3, 4]
    for step, rate in logged.items():
        assert rate == pytest.approx(peak * (1 + math.cos(math.pi * (step - 1) / steps)) / 2)
    assert logged[2] == pytest.approx(0.8536 * peak, rel=1e-3)
