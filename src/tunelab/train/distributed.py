"""Training in several processes (train.distributed.processes > 1).

The training step alone runs in the ranks; everything around it stays in tunelab's own
process, so a distributed run writes the same run folder, record and MLflow run as a
single-process one:

1. :func:`check` refuses, before anything loads, what cannot work (a method without a
   Trainer, FSDP or DeepSpeed without CUDA, DeepSpeed without its package, more ranks
   than GPUs or CPU cores, a missing accelerate config file).
2. :func:`launch` writes the inputs of the ranks into ``<run>/distributed/`` (config,
   splits, where to write) and starts them with ``torch.distributed.run`` (ddp) or
   ``accelerate launch`` (fsdp, deepspeed, a config file), each running
   ``python -m tunelab.train.launched``. Their output goes to ``distributed/launch.log``.
3. Each rank runs the same ``tunelab.train.train`` in the role "rank": the Trainer trains
   (only rank 0 writes checkpoints, as the Trainer does), rank 0 sends the curve to the
   run's MLflow run and, once training ends, writes ``distributed/fit.json`` (the train
   output, the log history, the final checkpoint); then every rank stops before
   evaluation (:class:`FitDone`).
4. Back in tunelab's process, ``train`` runs again in the role "adopt": the Trainer is
   built as usual but, instead of training, takes the final checkpoint's weights and the
   ranks' record (:func:`adopt`); evaluation, saving, merging and the result follow on
   one process, as always. Rank 1 and up write nothing but their RNG state (the Trainer's
   checkpoints hold one per rank, so a resume restores each).

A killed run re-run unchanged launches again and every rank resumes from the last
checkpoint, as a single-process run does (tunelab.train.common.start_point).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.config import RunConfig
from tunelab.errors import ConfigError, TrainingError
from tunelab.files import write_json_atomic

if TYPE_CHECKING:
    import pandas as pd

    from tunelab.workspace import Workspace

FOLDER = "distributed"  # in the run folder
REQUEST_FILE = "request.json"
CONFIG_FILE = "config.json"
DATA_DIR = "data"
FIT_FILE = "fit.json"
ERROR_FILE = "error-rank{rank}.json"
LAUNCH_LOG = "launch.log"
# The environment variable that hands the MLflow tracking URI to rank 0 (never a file:
# it may carry credentials).
TRACKING_ENV = "TUNELAB_LIVE_TRACKING_URI"
# The launcher's process id: a rank whose launcher is gone stops (see watch_launcher).
LAUNCHER_ENV = "TUNELAB_LAUNCHER_PID"
DISTRIBUTED_METHODS = ("full", "lora", "prefix", "prompt", "ia3", "dpo", "reward")
LOG_TAIL_LINES = 25

# None in tunelab's process; "rank" in a launched rank; "adopt" while tunelab's process
# finishes a run its ranks trained.
_ROLE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tunelab_distributed_role", default=None
)


class FitDone(Exception):  # noqa: N818 - a signal, not an error
    """Raised in a rank once the Trainer finished: evaluation is the launcher's."""


def is_distributed(cfg: RunConfig) -> bool:
    return cfg.train.distributed.processes > 1


def role() -> str | None:
    return _ROLE.get()


@contextlib.contextmanager
def playing(name: str) -> Iterator[None]:
    """Run the block as a launched "rank", or as the launcher that "adopt"s their work."""
    token = _ROLE.set(name)
    try:
        yield
    finally:
        _ROLE.reset(token)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


# ---------------------------------------------------------------- before launch


def check(cfg: RunConfig) -> None:
    """Refuse a distributed setting that cannot work here, before anything loads."""
    d = cfg.train.distributed
    if d.processes <= 1:
        return
    key = "train.distributed"
    method = cfg.train.method
    if method not in DISTRIBUTED_METHODS:
        why = (
            "fits or prompts at once, without a Trainer"
            if method == "baseline"
            else "generates with its policy and reward models in one process"
        )
        raise ConfigError(
            f"{key}.processes={d.processes} but train.method={method} {why}: it cannot be "
            f"split over processes. Set {key}.processes=1, or use one of "
            f"{', '.join(DISTRIBUTED_METHODS)}."
        )
    if d.config is not None and not Path(d.config).expanduser().is_file():
        raise ConfigError(
            f"{key}.config={d.config!r} is not a file (looked for from {Path.cwd().name}/). "
            "Point it at an accelerate config, e.g. configs/accelerate/fsdp.yaml, or remove "
            "it for the strategy's defaults."
        )
    cuda = _cuda_devices() if cfg.train.device != "cpu" else 0
    if cfg.train.device == "cuda" and cuda == 0:
        return  # common.pick_device says what is missing, in the same words as always
    if d.strategy in ("fsdp", "deepspeed") and cuda == 0:
        raise ConfigError(
            f"{key}.strategy={d.strategy} shards the model across GPUs and needs CUDA, but "
            f"none is visible (train.device={cfg.train.device}). On the CPU use "
            f"{key}.strategy=ddp (gloo), or run on a machine with GPUs."
        )
    if d.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            f"{key}.strategy=deepspeed needs the deepspeed package, which is not installed. "
            "pip install deepspeed (on a CUDA machine), or use strategy=fsdp or ddp."
        )
    if d.backend == "nccl" and cuda == 0:
        raise ConfigError(
            f"{key}.backend=nccl runs on CUDA only, and no GPU is in use "
            f"(train.device={cfg.train.device}). Set {key}.backend=auto or gloo."
        )
    if cuda:
        if d.processes > cuda:
            raise ConfigError(
                f"{key}.processes={d.processes} but only {cuda} CUDA device(s) are visible: "
                f"each rank needs its own GPU. Set {key}.processes={cuda} or fewer (or "
                "CUDA_VISIBLE_DEVICES to show more)."
            )
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if d.processes > (cores or 1):
        raise ConfigError(
            f"{key}.processes={d.processes} on the CPU but this machine gives tunelab "
            f"{cores} core(s): each rank needs its own core, else they only wait on each "
            f"other. Set {key}.processes={cores} or fewer."
        )


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ---------------------------------------------------------------- launching


def launch(
    cfg: RunConfig,
    data: dict[str, pd.DataFrame],
    workspace: Workspace,
    data_version: str | None,
    output_dir: Path,
) -> Path:
    """Train in ``train.distributed.processes`` ranks; returns the folder that holds their
    record (fit.json), read by :func:`adopt`. A failed rank is a TrainingError."""
    from tunelab.train import common

    check(cfg)
    # Here, once, not in every rank at the same time: a finished folder's checkpoints are
    # removed (retrained from the start), a named resume_from is checked.
    common.start_point(output_dir, cfg.train.resume_from)
    folder = output_dir / FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    (folder / DATA_DIR).mkdir(parents=True)
    write_json_atomic(folder / CONFIG_FILE, cfg.model_dump(mode="json"))
    for split, frame in data.items():
        frame.to_parquet(folder / DATA_DIR / f"{split}.parquet", index=False)
    request = {
        "workspace": str(workspace.root),
        "data_version": data_version,
        "output_dir": str(output_dir),
        "splits": sorted(data),
    }
    write_json_atomic(folder / REQUEST_FILE, request)
    command = launch_command(cfg, folder)
    log_path = folder / LAUNCH_LOG
    with open(log_path, "w", encoding="utf-8") as log_file:
        returncode = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=rank_environment(cfg),
            check=False,
        ).returncode
    shutil.rmtree(folder / DATA_DIR, ignore_errors=True)
    if returncode != 0 or not (folder / FIT_FILE).is_file():
        raise rank_failure(cfg, folder, returncode)
    return folder


def launch_command(cfg: RunConfig, folder: Path) -> list[str]:
    """torch.distributed.run for plain DDP; accelerate launch for FSDP, DeepSpeed or a
    config file. Both start ``python -m tunelab.train.launched <folder>`` per rank."""
    d = cfg.train.distributed
    entry = ["-m", "tunelab.train.launched", str(folder)]
    if d.strategy == "ddp" and d.config is None:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={d.processes}",
            *entry,
        ]
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if d.config is not None:
        command += ["--config_file", str(Path(d.config).expanduser().resolve())]
    elif d.strategy == "fsdp":
        command += ["--use_fsdp"]
    elif d.strategy == "deepspeed":
        command += ["--use_deepspeed", "--zero_stage", "2"]
    command += [
        "--num_processes",
        str(d.processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port()),
    ]
    return [*command, *entry]


def rank_environment(cfg: RunConfig) -> dict[str, str]:
    """The ranks' environment: cores shared out (one thread pool per rank, not one per
    core each), quiet progress, and the tracking URI for rank 0's curve."""
    from tunelab.lifecycle import live

    env = dict(os.environ)
    d = cfg.train.distributed
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env.setdefault("OMP_NUM_THREADS", str(max(1, (cores or 1) // d.processes)))
    env["TUNELAB_PROGRESS"] = "0"
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env[LAUNCHER_ENV] = str(os.getpid())
    env.pop(TRACKING_ENV, None)
    followed = live.current() if live.follows(cfg) else None
    if followed is not None:
        env[TRACKING_ENV] = followed[0].uri
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_failure(cfg: RunConfig, folder: Path, returncode: int) -> TrainingError:
    """A tunelab error a rank raised, as it was; otherwise the launcher's last lines."""
    for path in sorted(folder.glob(ERROR_FILE.format(rank="*"))):
        with contextlib.suppress(OSError, ValueError):
            error = json.loads(path.read_text(encoding="utf-8"))
            return TrainingError(f"Rank {error['rank']} of the distributed run: {error['message']}")
    tail = _tail(folder / LAUNCH_LOG, LOG_TAIL_LINES)
    return TrainingError(
        f"The {cfg.train.distributed.processes} training processes "
        f"(train.distributed.strategy={cfg.train.distributed.strategy}) failed with exit code "
        f"{returncode}. The last lines of {folder / LAUNCH_LOG}:\n{tail}\n"
        "Re-run unchanged to resume from the last checkpoint once the cause is fixed, or "
        "set train.distributed.processes=1 to train in one process."
    )


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(no output)"


# ---------------------------------------------------------------- in a rank


def watch_launcher(interval: float = 0.5) -> None:
    """Stop this rank as soon as tunelab's launching process is gone.

    torch.distributed.run starts each rank in a session of its own, so a launcher killed
    with SIGKILL (or the OOM killer) would leave its ranks training on, writing
    checkpoints into the folder the re-run resumes from.
    """
    pid = int(os.environ.get(LAUNCHER_ENV) or 0)
    if pid <= 0:
        return

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        with contextlib.suppress(OSError, IndexError):  # a zombie: dead, not yet reaped
            stat = Path(f"/proc/{pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] == "Z"
        return False

    def watch() -> None:
        while not gone():
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="tunelab-launcher-watch", daemon=True).start()


def final_save_callback():
    """A TrainerCallback that checkpoints the last step whatever save_steps says: the
    launcher takes the trained weights from that checkpoint."""
    from transformers import TrainerCallback

    class FinalSave(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = True
            return control

    return FinalSave()


def record_fit(trainer, output_dir: Path, output, resumed: str | None) -> None:
    """Rank 0: what the launcher needs to finish the run (fit.json); every rank: stop."""
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        step = int(trainer.state.global_step)
        checkpoint = Path(output_dir) / f"checkpoint-{step}"
        if not (checkpoint / "trainer_state.json").is_file():
            raise TrainingError(
                f"The distributed run ended at step {step} without its final checkpoint "
                f"({checkpoint}); re-run it to resume, or set train.distributed.processes=1."
            )
        record = {
            "global_step": step,
            "training_loss": float(output.training_loss),
            "metrics": dict(output.metrics or {}),
            "resumed_from": resumed,
            "checkpoint": str(checkpoint),
            "log_history": list(trainer.state.log_history),
            "total_train_tokens": getattr(trainer, "_total_train_tokens", None),
            "world_size": int(trainer.args.world_size),
        }
        write_json_atomic(Path(output_dir) / FOLDER / FIT_FILE, record)
    raise FitDone


def record_error(folder: Path, exc: BaseException) -> None:
    """A rank's tunelab error, for the launcher to raise as it is."""
    write_json_atomic(
        folder / ERROR_FILE.format(rank=rank()),
        {"rank": rank(), "type": type(exc).__name__, "message": str(exc)},
    )


# ---------------------------------------------------------------- back in the launcher


def adopt(trainer, output_dir: Path) -> tuple[Any, str | None]:
    """The ranks' training as if this Trainer had done it: the final checkpoint's weights,
    its state with the ranks' whole log history, and their TrainOutput."""
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    record = json.loads((Path(output_dir) / FOLDER / FIT_FILE).read_text(encoding="utf-8"))
    checkpoint = record["checkpoint"]
    # The Trainer's own loader knows every checkpoint layout (full, sharded, peft adapter).
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    trainer.state.log_history = record["log_history"]
    if record.get("total_train_tokens"):
        trainer._total_train_tokens = record["total_train_tokens"]
    metrics = {**record["metrics"], "train_processes": float(record["world_size"])}
    output = TrainOutput(record["global_step"], record["training_loss"], metrics)
    return output, record["resumed_from"]


def note(cfg: RunConfig) -> str:
    """The result's note on how it was trained."""
    d = cfg.train.distributed
    backend = d.backend if d.backend != "auto" else None
    return (
        f"Trained by {d.processes} processes (train.distributed.strategy={d.strategy}"
        + (f", backend {backend}" if backend else "")
        + f"), each with train.batch_size={cfg.train.batch_size}: "
        f"{d.processes * cfg.train.batch_size * cfg.train.grad_accum_steps} examples per "
        "optimizer step; evaluated in one process."
    )
