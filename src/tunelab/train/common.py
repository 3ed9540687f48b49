"""What every training method shares: the result record and its predictions file, devices,
seeds, chat prompts and linear layers, resource measurement, Trainer callbacks, where
training starts (resume), divergence and out-of-memory handling. The Trainer's arguments
are built in arguments.py.

torch and transformers are imported inside functions: the CLI imports this package.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.config import RunConfig
from tunelab.errors import TrainingError
from tunelab.runs import PREDICTIONS_FILE, RESULT_FILE, TrainResult, is_finished, library_versions

if TYPE_CHECKING:
    import pandas as pd


# ---------------------------------------------------------------- devices and seeds


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cpu" | "cuda"
    precision: str  # "fp32" | "bf16" | "fp16"

    @property
    def use_cpu(self) -> bool:
        return self.device == "cpu"

    @property
    def torch_dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
            self.precision
        ]


def pick_device(cfg: RunConfig) -> DeviceChoice:
    """CUDA when present (bf16 where supported, else fp16), the CPU otherwise; config may force."""
    import torch

    wanted = cfg.train.device
    has_cuda = torch.cuda.is_available()
    if wanted == "cuda" and not has_cuda:
        raise TrainingError(
            "train.device=cuda but no CUDA device is visible (torch "
            f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA). "
            "Set train.device=auto or cpu, or install a CUDA build of torch (README, GPU users)."
        )
    device = "cuda" if wanted == "cuda" or (wanted == "auto" and has_cuda) else "cpu"
    precision = cfg.train.precision
    if device == "cpu":
        if precision in ("bf16", "fp16"):
            raise TrainingError(
                f"train.precision={precision} needs a CUDA device; on the CPU use fp32 or auto."
            )
        return DeviceChoice("cpu", "fp32")
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return DeviceChoice("cuda", precision)


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and CUDA) seeds: same config + data + CPU = same metrics."""
    from transformers import set_seed

    set_seed(seed)


# ---------------------------------------------------------------- the result and its files


def new_result(
    cfg: RunConfig,
    output_dir: Path,
    data_version: str | None,
    method: str | None = None,
    model: str | None = None,
    **fields: Any,
) -> TrainResult:
    """A TrainResult for this run: the configured method and model unless named."""
    return TrainResult(
        method=method or cfg.train.method,
        model=model or cfg.model.name,
        dataset=cfg.data.name,
        task=cfg.data.task,
        output_dir=str(output_dir),
        data_version=data_version,
        **fields,
    )


def save_predictions(
    table: pd.DataFrame,
    output_dir: Path,
    result: TrainResult | None = None,
    source: pd.DataFrame | None = None,
) -> None:
    """Write the test predictions table (``predictions.parquet``), named in ``result``'s
    artifacts when given. The ``source`` split's source_row, when it has one, goes first:
    paired comparisons between runs join on it."""
    if source is not None and "source_row" in source.columns:
        table.insert(0, "source_row", source["source_row"].to_numpy())
    table.to_parquet(Path(output_dir) / PREDICTIONS_FILE, index=False)
    if result is not None:
        result.artifacts["predictions"] = PREDICTIONS_FILE


# ---------------------------------------------------------------- models and tokenizers


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer, messages: list[dict[str, str]] | str) -> str:
    """The chat-template text of a conversation (or of one user message), ending where
    the assistant's answer starts."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def linear_layers(model) -> list[tuple[str, Any]]:
    """(name, module) of every linear layer: torch Linear and GPT-2's Conv1D (stored
    transposed), in module order."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D)
    ]


# ---------------------------------------------------------------- measuring


class ResourceMeter:
    """Wall time, peak resident memory (sampled) and CUDA max allocated of a block."""

    _open = 0  # meters currently measuring in this process

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.wall_seconds = 0.0
        self.peak_rss_mb = 0.0
        self.cuda_max_allocated_mb: float | None = None
        self._stop = threading.Event()

    def __enter__(self) -> ResourceMeter:
        import psutil
        import torch

        self._process = psutil.Process()
        self._cuda = torch.cuda.is_available()
        # Meters nest (a run's, then its trainer.train()'s): only the outermost resets the
        # CUDA peak, so the run's peak still covers loading and quantising the model.
        if self._cuda and ResourceMeter._open == 0:
            torch.cuda.reset_peak_memory_stats()
        ResourceMeter._open += 1
        self.peak_rss_mb = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self.wall_seconds = time.perf_counter() - self._started
        ResourceMeter._open -= 1
        self._stop.set()
        self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, self._rss())
        if self._cuda:
            self.cuda_max_allocated_mb = torch.cuda.max_memory_allocated() / 2**20

    def _rss(self) -> float:
        return self._process.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss_mb = max(self.peak_rss_mb, self._rss())


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def finish(
    result: TrainResult, meter: ResourceMeter, device: DeviceChoice, plot: bool = True
) -> TrainResult:
    """Fill in the measured and environment fields, plot the loss curve, save the record."""
    result.wall_seconds = round(meter.wall_seconds, 3)
    result.peak_rss_mb = round(meter.peak_rss_mb, 1)
    result.cuda_max_allocated_mb = (
        round(meter.cuda_max_allocated_mb, 1) if meter.cuda_max_allocated_mb is not None else None
    )
    result.device, result.precision = device.device, device.precision
    result.versions = library_versions()
    if plot and result.history:
        path = plot_loss(result.history, Path(result.output_dir) / "loss.png", result)
        result.artifacts["loss_plot"] = path.name
    result.save()
    return result


# ---------------------------------------------------------------- plots


def plot_loss(history: list[dict], path: Path, result: TrainResult) -> Path:
    """Training and validation loss per step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "train"), ("eval_loss", "validation")):
        points = [(h["step"], h[key]) for h in history if key in h and _finite(h[key])]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(f"{result.dataset}: {result.method} on {result.model}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# ---------------------------------------------------------------- the transformers Trainer


# Callbacks the caller adds to every Trainer of this context (e.g. live MLflow logging):
# set by :func:`training_callbacks`, read by :func:`callbacks`.
_EXTRA_CALLBACKS: contextvars.ContextVar[tuple] = contextvars.ContextVar(
    "tunelab_training_callbacks", default=()
)


@contextlib.contextmanager
def training_callbacks(*extra):
    """Add TrainerCallbacks to every Trainer built inside the block (this thread/task)."""
    token = _EXTRA_CALLBACKS.set((*_EXTRA_CALLBACKS.get(), *extra))
    try:
        yield
    finally:
        _EXTRA_CALLBACKS.reset(token)


def callbacks() -> list:
    """The callbacks of a Trainer: the divergence guard, then those of training_callbacks."""
    return [divergence_guard(), *_EXTRA_CALLBACKS.get()]


def show_progress() -> bool:
    """Progress bars unless TUNELAB_PROGRESS=0 (tests, logs)."""
    return os.environ.get("TUNELAB_PROGRESS", "1") != "0"


def divergence_guard():
    """A TrainerCallback that stops at the first NaN/inf loss, naming the step.

    Raising inside on_log ends training before the next checkpoint is written, so the
    last checkpoint on disk is the last good one.
    """
    from transformers import TrainerCallback

    class DivergenceGuard(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "eval_loss"):
                value = (logs or {}).get(key)
                if value is not None and not math.isfinite(value):
                    last = last_checkpoint(Path(args.output_dir))
                    raise TrainingError(
                        f"The {key.replace('_', ' ')} became {value} at step "
                        f"{state.global_step}: training diverged and was stopped. "
                        + (
                            f"The last good checkpoint is {last}. "
                            if last
                            else "No checkpoint was written before it. "
                        )
                        + "Lower train.learning_rate, keep train.max_grad_norm, or use "
                        "train.precision=fp32."
                    )

    return DivergenceGuard()


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint in output_dir, or None.

    The Trainer writes trainer_state.json last, so a job killed while saving leaves a
    folder without a readable one; that folder is skipped, not resumed from.
    """
    if not output_dir.is_dir():
        return None
    found = []
    for folder in output_dir.glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if step.isdigit() and _readable_json(folder / "trainer_state.json"):
            found.append((int(step), folder))
    return str(max(found)[1]) if found else None


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def run_trainer(trainer, output_dir: Path) -> tuple[Any, str | None]:
    """trainer.train() from where this run starts (see :func:`start_point`).

    Returns the TrainOutput, its train_loss over every step of the run (also those before
    a resume), and the checkpoint resumed from (None for a fresh start). Out-of-memory
    becomes a TrainingError that says what to change.
    """
    import torch

    from tunelab.train import distributed

    role = distributed.role()
    if role == "adopt":  # the launched ranks trained: take their outcome
        return distributed.adopt(trainer, output_dir)
    if role == "rank":
        trainer.add_callback(distributed.final_save_callback())
    named = getattr(getattr(trainer, "args", None), "resume_from_checkpoint", None)
    resume = start_point(output_dir, named)
    # Read before training: the Trainer may delete that checkpoint (save_total_limit).
    earlier = loss_before(resume)
    try:
        with ResourceMeter() as meter:
            output = trainer.train(resume_from_checkpoint=resume)
    except torch.OutOfMemoryError as exc:
        raise out_of_memory(exc) from None
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise out_of_memory(exc) from None
        raise
    output = whole_run_loss(output, earlier)
    output.metrics["train_peak_rss_mb"] = round(meter.peak_rss_mb, 1)
    if role == "rank":
        distributed.record_fit(trainer, output_dir, output, resume)  # raises FitDone
    return output, resume


def run_trl_trainer(trainer, output_dir: Path, result: TrainResult):
    """Train with a trl trainer (DPO, reward) and record what it did in ``result``:
    parameters, resume point, history, train loss, tokens/s and seconds per step of this
    session. Returns the trained model, unwrapped."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    result.trainable_params, result.total_params = count_parameters(model)
    output, resumed = run_trainer(trainer, output_dir)
    result.resumed_from = resumed
    record_trainer_output(result, output)
    result.history = history_from(trainer.state.log_history)
    result.metrics["train_loss"] = float(output.training_loss)
    runtime = (output.metrics or {}).get("train_runtime")
    # trl's DPO and reward trainers count the (unpadded) tokens of the batches this
    # session trained on; its GRPO and RLOO trainers count prompt and completion tokens
    # in the state (num_tokens), from the run's start.
    tokens = getattr(trainer, "_total_train_tokens", None) or session_tokens(trainer, resumed)
    if runtime and tokens:
        result.tokens_per_second = round(tokens / runtime, 1)
    steps = trainer.state.global_step - checkpoint_step(resumed)
    if runtime and steps > 0:
        result.metrics["train_seconds_per_step"] = round(runtime / steps, 4)
    return model


def session_tokens(trainer, resumed: str | None) -> int:
    """Input tokens the Trainer's state counted in this session (num_input_tokens_seen,
    less what the checkpoint it resumed from had counted)."""
    seen = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    if resumed:
        try:
            state = json.loads((Path(resumed) / "trainer_state.json").read_text("utf-8"))
            seen -= int(state.get("num_input_tokens_seen") or 0)
        except (OSError, ValueError):
            return 0  # unknown: no tokens/s rather than a wrong one
    return max(seen, 0)


def checkpoint_step(checkpoint: str | None) -> int:
    """The global step a checkpoint-N folder was saved at (0 for a fresh start)."""
    if not checkpoint:
        return 0
    tail = Path(checkpoint).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def start_point(output_dir: Path, named: str | None = None) -> str | None:
    """The checkpoint training resumes from: the last one of an interrupted run in
    output_dir, else ``named`` (train.resume_from), else None (from scratch).

    A folder holding a finished run is being retrained (its step was recomputed): its
    checkpoints are that run's end, so they and its record are removed, never resumed.
    """
    output_dir = Path(output_dir)
    if is_finished(output_dir):
        for folder in output_dir.glob("checkpoint-*"):
            shutil.rmtree(folder, ignore_errors=True)
        (output_dir / RESULT_FILE).unlink(missing_ok=True)
    own = last_checkpoint(output_dir)
    if own is not None or named is None:
        return own
    if not _readable_json(Path(named).expanduser() / "trainer_state.json"):
        raise TrainingError(
            f"train.resume_from={named!r} is not a checkpoint (no readable "
            "trainer_state.json in it). Point it at a checkpoint-N folder of an earlier run, "
            "or remove it to train from scratch."
        )
    return str(Path(named).expanduser())


@dataclass(frozen=True)
class EarlierLoss:
    """The training loss logged before a resume: up to ``start``, ``steps`` of them
    summed to ``total`` (a step after the checkpoint's last log is not among them)."""

    start: int = 0
    total: float = 0.0
    steps: int = 0


def loss_before(checkpoint: str | None) -> EarlierLoss:
    """The losses a checkpoint's trainer_state.json logged (each the mean since the
    previous log); nothing for a fresh start."""
    if not checkpoint:
        return EarlierLoss()
    try:
        path = Path(checkpoint) / "trainer_state.json"
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return EarlierLoss()
    start = int(state.get("global_step") or 0)
    return EarlierLoss(start, *logged_loss(state.get("log_history") or [], start))


def whole_run_loss(output, earlier: EarlierLoss):
    """The TrainOutput with train_loss over every step of the run: the Trainer averages
    only the steps of its own train() call, so the steps before a resume are added."""
    steps = output.global_step - earlier.start
    if earlier.steps <= 0 or steps < 0:
        return output
    loss = (earlier.total + output.training_loss * steps) / (earlier.steps + steps)
    metrics = {**(output.metrics or {}), "train_loss": loss}
    return output._replace(training_loss=loss, metrics=metrics)


def logged_loss(log_history: list[dict], upto: int) -> tuple[float, int]:
    """(sum of the per-step losses, steps covered) of the loss logs up to step ``upto``."""
    rows = sorted(
        (int(e["step"]), float(e["loss"]))
        for e in log_history
        if "loss" in e and e.get("step") is not None and int(e["step"]) <= upto
    )
    total, previous = 0.0, 0
    for step, loss in rows:
        total += loss * (step - previous)
        previous = step
    return total, previous


def record_trainer_output(result: TrainResult, output) -> None:
    """Copy the Trainer's own runtime and step count into the result."""
    result.train_seconds = round(float((output.metrics or {}).get("train_runtime", 0.0)), 3)
    result.train_steps = int(output.global_step)
    result.train_peak_rss_mb = (output.metrics or {}).get("train_peak_rss_mb")


def out_of_memory(exc: BaseException) -> TrainingError:
    return TrainingError(
        f"Out of memory while training ({type(exc).__name__}: {str(exc)[:200]}). "
        "Try train.method=lora (far fewer trainable weights), a smaller train.batch_size "
        "with train.grad_accum_steps to keep the effective batch, "
        "train.gradient_checkpointing=true, or a shorter model.max_length."
    )


# What trl's RewardTrainer logs per step besides the loss.
REWARD_MODEL_LOGS = ("accuracy", "margin", "eval_accuracy", "eval_margin")
# What trl's GRPO and RLOO trainers log per step: the mean reward of the sampled
# completions (and per reward: rewards/<name>/mean), the KL to the reference, lengths.
POLICY_LOGS = ("reward", "reward_std", "kl", "entropy", "completions/mean_length")


def history_from(log_history: list[dict]) -> list[dict]:
    """Keep the per-step losses of Trainer.state.log_history (drop the summary row), with
    DPO's rewards and log-probs, a reward model's pairwise accuracy and margin, and a
    GRPO policy's rewards, KL and completion lengths."""
    rows = []
    for entry in log_history:
        if "train_loss" in entry:  # the end-of-training summary row
            continue
        row = {"step": entry.get("step"), "epoch": entry.get("epoch")}
        for key, value in entry.items():
            if key in ("loss", "eval_loss", *REWARD_MODEL_LOGS, *POLICY_LOGS) or key.startswith(
                ("rewards/", "logps/", "eval_rewards/", "eval_logps/")
            ):
                row[key] = value
        if len(row) > 2:
            rows.append(row)
    return rows


TRUNCATION_KEY = "data.truncation"


def check_prompt_lengths(
    tokenizer,
    prompts: list[str],
    max_length: int,
    where: str,
    reserve: int = 1,
    key: str = "model.max_length",
    truncation_key: str | None = None,
) -> None:
    """Fail when prompts leave no room for the response within max_length tokens."""
    lengths = prompt_lengths(tokenizer, prompts)
    too_long = [i for i, n in enumerate(lengths) if n > max_length - reserve]
    if too_long:
        fix = f"Raise {key} to at least {max(lengths) + 16}"
        if truncation_key:
            fix += f", set {truncation_key} (keep_end, keep_start or drop)"
        raise TrainingError(
            f"{len(too_long)} of {len(prompts)} {where} prompts are longer than "
            f"{key}={max_length} tokens (longest: {max(lengths)} tokens, e.g. row "
            f"{too_long[0]}), so their responses would be cut off entirely. {fix} "
            "or shorten those prompts."
        )


def prompt_lengths(tokenizer, prompts: list[str]) -> list[int]:
    """Token counts of rendered prompts, special tokens included."""
    return [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]


@dataclass
class PromptFit:
    """What :func:`fit_prompts` did to one split's prompts."""

    prompts: list[str]  # every prompt, the cut ones replaced (dropped ones too, unchanged)
    keep: list[bool]  # False = the row is left out (mode drop)
    cut: int = 0
    dropped: int = 0


def fit_prompts(
    tokenizer,
    prompts: list[str],
    render,
    max_length: int,
    mode: str,
    room: list[int],
    reserve: int = 1,
) -> PromptFit:
    """Cut or drop the prompts whose rendered form leaves fewer than ``reserve`` tokens of
    ``max_length``: the ones check_prompt_lengths refuses.

    ``render`` maps raw prompts to what the model sees (chat template); the raw text is cut,
    so the template stays whole. A cut prompt leaves ``room[i]`` tokens for its response.
    keep_end keeps the last tokens, keep_start the first; drop marks the row as left out.
    """
    rendered = prompt_lengths(tokenizer, render(prompts))
    fit = PromptFit(prompts=list(prompts), keep=[True] * len(prompts))
    for i, n in enumerate(rendered):
        if n <= max_length - reserve:
            continue
        if mode == "drop":
            fit.keep[i] = False
            fit.dropped += 1
            continue
        budget = max_length - max(room[i], reserve)
        fit.prompts[i] = _cut(tokenizer, prompts[i], n, budget, render, keep_end=mode == "keep_end")
        fit.cut += 1
    return fit


def _cut(tokenizer, prompt: str, rendered: int, budget: int, render, keep_end: bool) -> str:
    """The prompt's first or last tokens, as many as keep its rendered form within budget."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    overhead = rendered - len(ids)  # template and special tokens around the prompt
    keep = budget - overhead
    # Decoding a slice and tokenizing it again can merge or split tokens: shrink until it fits.
    for _ in range(8):
        if keep <= 0:
            break
        text = tokenizer.decode(ids[-keep:] if keep_end else ids[:keep])
        excess = prompt_lengths(tokenizer, render([text]))[0] - budget
        if excess <= 0:
            return text
        keep -= excess
    raise TrainingError(
        f"A prompt's template alone takes {overhead} of the {budget} tokens left for prompts "
        "after the response, so no part of the prompt fits. Raise the max length."
    )
