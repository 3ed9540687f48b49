"""The Trainer's arguments of a run: what tunelab sets from its config (:func:`own_arguments`),
the method's own fields, and ``train.trainer_args``, the pass-through checked against the
real fields of TrainingArguments, trl's SFTConfig or DPOConfig before any model loads
(:func:`check_trainer_args`); the learning-rate schedule and its arguments.

transformers and trl are imported inside functions: the CLI imports this package.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import types
import typing
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig, TrainConfig
from tunelab.errors import ConfigError
from tunelab.redaction import is_secret_key
from tunelab.train.common import DeviceChoice, show_progress

# Fields of the Trainer's arguments that tunelab sets from its own config, and what to set
# instead; train.trainer_args may not name them (own_arguments sets exactly these, and
# gradient_checkpointing, the deprecated name of activation_checkpointing).
OWN_FIELDS: dict[str, str] = {
    "output_dir": "the run folder is named by the run's fingerprint (runs/<dataset>/...)",
    "num_train_epochs": "use train.epochs",
    "max_steps": "use train.max_steps",
    "per_device_train_batch_size": "use train.batch_size",
    "per_device_eval_batch_size": "use train.batch_size",
    "gradient_accumulation_steps": "use train.grad_accum_steps",
    "learning_rate": "use train.learning_rate",
    "weight_decay": "use train.weight_decay",
    "warmup_steps": "use train.warmup_ratio",
    "max_grad_norm": "use train.max_grad_norm",
    "lr_scheduler_type": "use train.lr_scheduler",
    "lr_scheduler_kwargs": "use train.lr_scheduler_kwargs",
    "logging_strategy": "use train.logging_steps",
    "logging_steps": "use train.logging_steps",
    "logging_first_step": "the first step's loss is always logged",
    "eval_strategy": "use train.eval_steps (None = once per epoch)",
    "eval_steps": "use train.eval_steps",
    "save_strategy": "use train.save_steps",
    "save_steps": "use train.save_steps",
    "save_total_limit": "use train.save_total_limit",
    "resume_from_checkpoint": "use train.resume_from",
    "seed": "use train.seed",
    "data_seed": "use train.seed",
    "use_cpu": "use train.device",
    "bf16": "use train.precision",
    "fp16": "use train.precision",
    "activation_checkpointing": "use train.gradient_checkpointing",
    "gradient_checkpointing": "use train.gradient_checkpointing",
    "report_to": "tunelab logs the run to MLflow itself (registry.tracking_uri)",
    "dataloader_num_workers": "tunelab loads batches in the training process",
    "disable_tqdm": "set TUNELAB_PROGRESS=0 to hide progress bars",
    "ddp_backend": "use train.distributed.backend",
}
# Fields of trl's config classes that stand for tunelab keys.
TRL_FIELDS: dict[str, dict[str, str]] = {
    "SFTConfig": {
        "max_length": "use model.max_length",
        "trust_remote_code": "use model.trust_remote_code",
        "eval_packing": "validation is never packed, so its loss compares across runs",
        "assistant_only_loss": "the loss is on assistant turns of chat data already",
        "completion_only_loss": "the loss is on the responses already",
        "packing": "use train.packing",
    },
    "DPOConfig": {
        "beta": "use train.dpo.beta",
        "loss_type": "use train.dpo.loss_type",
        "max_length": "use train.dpo.max_length (None = model.max_length)",
        "truncation_mode": "use data.truncation",
        "trust_remote_code": "use model.trust_remote_code",
        "precompute_ref_log_probs": "reference log-probs are computed as training goes",
    },
}
_POLICY_FIELDS = {
    "num_generations": "use train.grpo.num_generations",
    "max_completion_length": "use train.grpo.max_completion_length",
    "temperature": "use train.grpo.temperature",
    "beta": "use train.grpo.beta",
    "reward_weights": "use the weight of each train.grpo.rewards entry",
    "trust_remote_code": "use model.trust_remote_code",
}
TRL_FIELDS["GRPOConfig"] = TRL_FIELDS["RLOOConfig"] = _POLICY_FIELDS
# Schedules that need one of these lr_scheduler_kwargs (their signature does not say so).
SCHEDULE_NEEDS_ONE_OF = {"cosine_with_min_lr": ("min_lr", "min_lr_rate")}


def own_arguments(
    cfg: RunConfig, output_dir: Path, device: DeviceChoice, has_validation: bool = True
) -> dict[str, Any]:
    """The Trainer arguments tunelab sets from the run config (OWN_FIELDS says from which key).

    Every field is set explicitly: trl's defaults target big GPUs (bf16, gradient
    checkpointing, lr 1e-6), so nothing is left to them.
    """
    t = cfg.train
    eval_strategy = ("steps" if t.eval_steps else "epoch") if has_validation else "no"
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        # transformers 5: a float in [0, 1) is a ratio of the total steps.
        warmup_steps=t.warmup_ratio,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type=t.lr_scheduler,
        lr_scheduler_kwargs=dict(t.lr_scheduler_kwargs),
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        # Not read by the Trainer: run_trainer starts from it when the folder has no run.
        resume_from_checkpoint=t.resume_from,
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=device.use_cpu,
        bf16=device.precision == "bf16",
        fp16=device.precision == "fp16",
        # transformers 5 renamed gradient_checkpointing (now a deprecated alias).
        activation_checkpointing=t.gradient_checkpointing,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=not show_progress(),
        # Read only in a rank of train.distributed (None: accelerate's choice, gloo on CPU).
        ddp_backend=None if t.distributed.backend == "auto" else t.distributed.backend,
    )


def training_arguments(
    cfg: RunConfig, output_dir: Path, device: DeviceChoice, args_class=None, **extra
):
    """TrainingArguments (or a subclass such as trl's DPOConfig) from the run config.

    The fields tunelab sets (:func:`own_arguments`), then the caller's ``extra`` (fields of
    the method, e.g. DPO's beta), then ``train.trainer_args``, which may name neither.
    """
    from transformers import TrainingArguments

    args_class = args_class or TrainingArguments
    has_validation = extra.pop("has_validation", True)
    fields = {**own_arguments(cfg, output_dir, device, has_validation), **extra}
    check_scheduler(cfg)
    check_fields(cfg, args_class, set_by_method=extra)
    return build_arguments(args_class, fields, cfg.train.trainer_args)


def arguments_class(cfg: RunConfig):
    """The class of the Trainer arguments for this run: trl's DPOConfig for dpo,
    RewardConfig for reward, GRPOConfig or RLOOConfig for grpo, SFTConfig for generation
    and chat data, else TrainingArguments."""
    if cfg.train.method == "dpo":
        from trl import DPOConfig

        return DPOConfig
    if cfg.train.method == "reward":
        from trl import RewardConfig

        return RewardConfig
    if cfg.train.method == "grpo":
        if cfg.train.grpo.algorithm == "rloo":
            from trl import RLOOConfig

            return RLOOConfig
        from trl import GRPOConfig

        return GRPOConfig
    if cfg.data.task in ("generation", "chat"):
        from trl import SFTConfig

        return SFTConfig
    from transformers import TrainingArguments

    return TrainingArguments


def check_trainer_args(cfg: RunConfig) -> None:
    """Refuse bad train.trainer_args and train.lr_scheduler_kwargs before any model loads.

    ``trainer_args`` are checked against the real fields of the run's arguments class
    (:func:`arguments_class`): unknown names (with close matches), fields tunelab sets
    itself, values of the wrong type, and whatever the class itself refuses. Imports
    transformers (and trl) only when there is something to check.
    """
    if cfg.train.method == "baseline":
        return  # no Trainer
    check_scheduler(cfg)
    if not cfg.train.trainer_args:
        return
    args_class = arguments_class(cfg)
    check_fields(cfg, args_class)
    # Built for the CPU: the class's own checks, without touching a device.
    fields = own_arguments(cfg, Path("tunelab-check"), DeviceChoice("cpu", "fp32"))
    build_arguments(args_class, fields, cfg.train.trainer_args)


def check_fields(cfg: RunConfig, args_class, set_by_method: dict | None = None) -> None:
    """Each train.trainer_args key is a field of ``args_class`` that tunelab leaves open,
    with a value of the field's type."""
    name = args_class.__name__
    names = sorted(f.name for f in dataclasses.fields(args_class) if f.init)
    hints = typing.get_type_hints(args_class)
    for key, value in cfg.train.trainer_args.items():
        where = f"train.trainer_args.{key}"
        if is_secret_key(key):
            raise ConfigError(
                f"{where} would hold a credential, and the run config is logged to MLflow: "
                "set it through environment variables instead (HF_TOKEN for the hub)."
            )
        if key not in names:
            near = difflib.get_close_matches(key, names, n=3)
            hint = f" Did you mean {' or '.join(near)}?" if near else ""
            raise ConfigError(
                f"{where}: {args_class.__module__.split('.')[0]}.{name} has no field "
                f"'{key}'.{hint} "
                f"train.trainer_args takes the fields of the arguments of this run's trainer "
                f"({name} for train.method={cfg.train.method} on {cfg.data.task} data)."
            )
        instead = _instead(key, name)
        if instead:
            raise ConfigError(f"{where}: tunelab sets {name}.{key} itself: {instead}.")
        if key in (set_by_method or {}):
            raise ConfigError(
                f"{where}: tunelab sets {name}.{key} itself for train.method="
                f"{cfg.train.method}; remove it from train.trainer_args."
            )
        hint = hints.get(key, Any)
        if not _fits(value, hint):
            raise ConfigError(
                f"{where}={value!r}: {name}.{key} takes {_type_name(hint)}, got "
                f"{type(value).__name__}. Fix the value in train.trainer_args."
            )


def build_arguments(args_class, fields: dict[str, Any], trainer_args: dict[str, Any]):
    """``args_class(**fields, **trainer_args)``; what the class refuses names its key."""
    try:
        return args_class(**fields, **trainer_args)
    except Exception as exc:
        if not trainer_args:
            raise
        error = exc
    name = args_class.__name__
    for key, value in trainer_args.items():
        try:
            args_class(**fields, **{key: value})
        except Exception as exc:
            raise ConfigError(
                f"train.trainer_args.{key}={value!r} was refused by {name}: {exc}"
            ) from None
    raise ConfigError(
        f"train.trainer_args {sorted(trainer_args)} together were refused by {name}: {error}"
    ) from None


def check_scheduler(cfg: RunConfig) -> None:
    """train.lr_scheduler_kwargs are arguments the schedule's function takes (and needs)."""
    t = cfg.train
    kwargs, schedule = t.lr_scheduler_kwargs, t.lr_scheduler
    if not kwargs and schedule not in SCHEDULE_NEEDS_ONE_OF and schedule != "warmup_stable_decay":
        return
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION
    from transformers.trainer_utils import SchedulerType

    params = inspect.signature(TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(schedule)]).parameters
    given = {"optimizer", "num_warmup_steps", "num_training_steps", "last_epoch"}
    variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    takes = [n for n, p in params.items() if n not in given and p.kind not in variadic]
    if schedule in ("constant", "constant_with_warmup"):
        takes = []  # transformers passes them no kwargs
    unknown = sorted(set(kwargs) - set(takes))
    if unknown:
        near = difflib.get_close_matches(unknown[0], takes, n=2)
        hint = f" Did you mean {' or '.join(near)}?" if near else ""
        raise ConfigError(
            f"train.lr_scheduler_kwargs {unknown}: the {schedule} schedule takes "
            f"{', '.join(takes) if takes else 'no arguments'}.{hint}"
        )
    needed = [n for n in takes if params[n].default is inspect.Parameter.empty]
    missing = [n for n in needed if n not in kwargs]
    one_of = SCHEDULE_NEEDS_ONE_OF.get(schedule, ())
    if one_of and not set(one_of) & set(kwargs):
        missing.append(" or ".join(one_of))
    if missing:
        example = f"--set train.lr_scheduler_kwargs.{missing[0].split()[0]}=..."
        raise ConfigError(
            f"train.lr_scheduler={schedule} needs train.lr_scheduler_kwargs "
            f"{', '.join(missing)}, e.g. {example}"
        )


def _instead(key: str, class_name: str) -> str | None:
    """What to set instead of a trainer_args field that stands for a tunelab key."""
    instead = OWN_FIELDS.get(key) or TRL_FIELDS.get(class_name, {}).get(key)
    if instead is None and key in TrainConfig.model_fields and key != "trainer_args":
        instead = f"use train.{key}"
    return instead


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value can fill a dataclass field typed ``hint`` (unknown types: yes)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arm) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    hint = origin or hint
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, str | hint)  # the class checks the name
    if hint in (list, tuple):
        return isinstance(value, list | tuple)
    if hint in (str, dict):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
