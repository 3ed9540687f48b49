"""Live tracking: a method's MLflow run is open while it trains.

Before training, :func:`tracked` opens the method's run (the experiment, name, Source,
parent and lineage tags of tracking.log_run), so the run starts when training does, and
writes its id to the run folder (``live_run.json``, copied into every checkpoint). While
the Trainer runs, a callback sends each logging step's metrics to it (curve/train_loss,
curve/learning_rate, curve/grad_norm, curve/validation_loss, curve/rewards/...,
curve/epoch) from a background thread, and MLflow's SystemMetricsMonitor samples CPU,
memory, disk and network (GPU with pynvml) as system/... metrics. After evaluation,
tracking.log_run logs the results into the same run and ends it FINISHED; the gate's
decision on its registered model then moves its end to when the decision was applied
(tunelab.lifecycle.registry.apply_decision).

An interrupted run that resumes from its checkpoint continues the MLflow run that
checkpoint was logged to, so its curve goes on; a run folder trained again from the start
gets a new MLflow run, and the one it replaces, if still RUNNING, is ended KILLED.

Only MlflowClient calls with explicit run ids: methods train in threads. An MLflow hiccup
while training costs a warning and some points (tracking.log_run adds the missing loss
points later), never the training.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig
from tunelab.files import write_json_atomic
from tunelab.lifecycle import tracking
from tunelab.lifecycle.tracking import FAILURE_TAG, NOTE_TAG, PARENT_TAG, Tracking
from tunelab.redaction import redact_text
from tunelab.runs import is_finished
from tunelab.train.common import last_checkpoint, training_callbacks

log = logging.getLogger(__name__)

LIVE_FILE = "live_run.json"
# Seconds between system metric samples (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL wins).
SYSTEM_METRICS_INTERVAL_S = 5.0
MAX_BATCH = 1000  # MLflow's limit on metrics in one log_batch
MAX_TAGS = 100  # and on tags
SEND_ATTEMPTS = 3
CLOSE_TIMEOUT_S = 30.0  # how long the end of training waits for unsent points

# The target and run of the tracked() block this code runs in: a distributed launch
# (tunelab.train.distributed) hands them to its rank 0, which sends the curve.
_CURRENT: contextvars.ContextVar[tuple[Tracking, LiveRun] | None] = contextvars.ContextVar(
    "tunelab_live_run", default=None
)


def follows(cfg: RunConfig) -> bool:
    """Whether the method trains with a Trainer (the baselines fit or prompt at once)."""
    return cfg.train.method != "baseline"


@dataclass(frozen=True)
class LiveRun:
    """The MLflow run a run folder's training is logged to; saved as live_run.json."""

    run_id: str
    experiment_id: str
    tracking: str  # the target's URI without credentials: the store that holds the run
    resumed: bool = False  # continues the run of an interrupted attempt

    def save(self, folder: str | Path) -> Path:
        return write_json_atomic(Path(folder) / LIVE_FILE, asdict(self))

    @classmethod
    def read(cls, folder: str | Path) -> LiveRun | None:
        try:
            return cls(**json.loads((Path(folder) / LIVE_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


# ---------------------------------------------------------------- opening and ending


@contextlib.contextmanager
def tracked(
    cfg: RunConfig,
    target: Tracking,
    output_dir: str | Path,
    data_version: str | None,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Iterator[LiveRun]:
    """Every Trainer built inside the block logs to the run folder's MLflow run.

    An exception ends the run FAILED with the (redacted) error, an interrupt KILLED;
    otherwise the run stays RUNNING for tracking.log_run to finish.
    """
    live = open_run(cfg, target, output_dir, data_version, parent_run_id, extra_tags)
    sender = MetricSender(target, live.run_id)
    monitor = start_system_metrics(target, live.run_id, resumed=live.resumed)
    token = _CURRENT.set((target, live))
    try:
        with training_callbacks(metrics_callback(sender, live)):
            yield live
    except BaseException as exc:
        _stop(sender, monitor)
        if isinstance(exc, Exception):
            end_run(target, live.run_id, "FAILED", f"Training failed: {type(exc).__name__}: {exc}")
        else:  # KeyboardInterrupt, SystemExit: stopped from outside
            end_run(target, live.run_id, "KILLED", f"Training was stopped ({type(exc).__name__}).")
        raise
    finally:
        _CURRENT.reset(token)
    _stop(sender, monitor)


def current() -> tuple[Tracking, LiveRun] | None:
    """The target and run of the tracked() block around the caller, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def following(target: Tracking, live: LiveRun) -> Iterator[None]:
    """Every Trainer built inside the block sends its curve to ``live`` (a run another
    process opened, e.g. the launcher of a distributed run); the run is left as it is."""
    sender = MetricSender(target, live.run_id)
    try:
        with training_callbacks(metrics_callback(sender, live)):
            yield
    finally:
        sender.close()


def open_run(
    cfg: RunConfig,
    target: Tracking,
    output_dir: str | Path,
    data_version: str | None,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> LiveRun:
    """The run folder's MLflow run, RUNNING: the interrupted attempt's when training
    resumes from its checkpoint, else a new one (see the module docstring)."""
    output_dir = Path(output_dir)
    client = _client(target)
    experiment_id = tracking.experiment_for(target, cfg.data.name)
    tags = tracking.training_tags(cfg, data_version, output_dir.name, extra_tags)
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    earlier = resumable(output_dir, target)
    if earlier is not None and _reopen(target, client, earlier.run_id, experiment_id, tags):
        live = LiveRun(earlier.run_id, experiment_id, target.shown, resumed=True)
    else:
        run_id = _create(target, client, cfg, data_version, experiment_id, tags)
        live = LiveRun(run_id, experiment_id, target.shown)
        previous = LiveRun.read(output_dir)
        if previous and previous.tracking == target.shown and previous.run_id != live.run_id:
            end_run(
                target,
                previous.run_id,
                "KILLED",
                f"Not finished: its run folder was trained again from the start, in run "
                f"{live.run_id}.",
                only_running=True,
            )
    live.save(output_dir)
    return live


def resumable(output_dir: Path, target: Tracking) -> LiveRun | None:
    """The MLflow run of the checkpoint an interrupted run resumes from (the choice of
    tunelab.train.common.start_point, made without its side effects), None when training
    starts from scratch or that checkpoint was not tracked in this store."""
    if is_finished(output_dir):  # retrained from the start: its checkpoints are removed
        return None
    checkpoint = last_checkpoint(output_dir)
    if checkpoint is None:
        return None
    found = LiveRun.read(checkpoint)
    record = Path(output_dir) / LIVE_FILE
    if found is None and record.is_file():
        # Killed between writing the checkpoint and marking it: it is the folder's current
        # attempt's when it is newer than that attempt's record.
        state = Path(checkpoint) / "trainer_state.json"
        if state.stat().st_mtime >= record.stat().st_mtime:
            found = LiveRun.read(output_dir)
    return found if found and found.tracking == target.shown else None


def _reopen(target: Tracking, client, run_id: str, experiment_id: str, tags: dict) -> bool:
    from mlflow.entities import RunTag

    run = tracking.open_run(target, client, run_id, experiment_id)
    if run is None:
        return False
    tracking.clear_failure(client, run)
    items = [RunTag(key, value) for key, value in tags.items()]
    for start in range(0, len(items), MAX_TAGS):
        batch = items[start : start + MAX_TAGS]
        tracking.call(
            target, "tag the resumed run", lambda b=batch: client.log_batch(run_id, tags=b)
        )
    tracking.call(target, "reopen the run", lambda: client.update_run(run_id, status="RUNNING"))
    return True


def _create(target: Tracking, client, cfg: RunConfig, data_version, experiment_id, tags) -> str:
    # The user, source and git tags that mlflow.start_run adds to a run it creates.
    from mlflow.tracking.context.registry import resolve_tags

    run = tracking.call(
        target,
        "start the training run",
        lambda: client.create_run(
            experiment_id,
            run_name=tracking.mlflow_run_name(cfg, data_version),
            tags=resolve_tags(tags),
        ),
    )
    return run.info.run_id


def end_run(
    target: Tracking, run_id: str, status: str, note: str, only_running: bool = False
) -> None:
    """End a run with a note saying why (redacted); best effort: a warning on failure."""
    client = _client(target)
    try:
        if only_running and client.get_run(run_id).info.status != "RUNNING":
            return
        text = redact_text(note)[:5000]
        client.set_tag(run_id, FAILURE_TAG, text)
        client.set_tag(run_id, NOTE_TAG, text)
        client.set_terminated(run_id, status)
    except Exception as exc:  # noqa: BLE001 - a tracking hiccup must not hide the real error
        log.warning(
            "Could not mark MLflow run %s %s at %s: %s",
            run_id,
            status,
            target.shown,
            redact_text(str(exc))[:300],
        )


def end_unlogged(run_dir: str | Path, tracking_uri: str, why: str) -> None:
    """A trained run that will not be logged (its evaluation failed): its live MLflow
    run, if still RUNNING, ends FAILED saying why. Nothing to do for an untracked run."""
    live = LiveRun.read(run_dir)
    target = Tracking(tracking_uri)
    if live is not None and live.tracking == target.shown:
        end_run(target, live.run_id, "FAILED", f"Not logged: {why}", only_running=True)


def _client(target: Tracking):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=target.uri)


# ---------------------------------------------------------------- while training


def step_metrics(logs: dict[str, Any], step: int) -> list:
    """The MLflow metric points of one Trainer log (finite numbers, at the global step);
    none for the end-of-training summary."""
    from mlflow.entities import Metric

    if "train_runtime" in logs:
        return []
    now = int(time.time() * 1000)
    return [
        Metric(tracking.curve_name(key), float(value), now, int(step))
        for key, value in logs.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ]


class MetricSender:
    """Sends metric points to one run from a background thread, in batches: training
    never waits on MLflow. A failed batch is retried, then dropped; one warning."""

    def __init__(self, target: Tracking, run_id: str):
        self.target, self.run_id = target, run_id
        self.sent = self.dropped = 0
        self._pending: list = []
        self._closed = self._warned = False
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="tunelab-live", daemon=True)
        self._thread.start()

    def put(self, metrics: list) -> None:
        if metrics:
            with self._ready:
                self._pending.extend(metrics)
                self._ready.notify()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is pending (waiting at most ``timeout`` seconds), then stop."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join(timeout)
        with self._ready:
            left = len(self._pending)
            self._pending.clear()
        if left or self._thread.is_alive():
            log.warning(
                "%d metric points of MLflow run %s were not sent to %s in time.",
                left,
                self.run_id,
                self.target.shown,
            )

    def _loop(self) -> None:
        client = _client(self.target)
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if not self._pending:
                    return
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
            self._send(client, batch)

    def _send(self, client, batch: list) -> None:
        for attempt in range(SEND_ATTEMPTS):
            try:
                client.log_batch(self.run_id, metrics=batch)
                self.sent += len(batch)
                return
            except Exception as exc:  # noqa: BLE001 - never fail training over a curve
                self._warn(exc)
                if attempt < SEND_ATTEMPTS - 1:
                    time.sleep(2**attempt)
        self.dropped += len(batch)

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "Live logging to MLflow run %s at %s failed (%s); training goes on. The "
                "loss points it missed are added when the run is logged after evaluation.",
                self.run_id,
                self.target.shown,
                redact_text(f"{type(exc).__name__}: {exc}")[:300],
            )


def metrics_callback(sender: MetricSender, live: LiveRun):
    """A TrainerCallback: each log's metrics to the sender, the run's id into each
    checkpoint (so that a resume from it continues this run)."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class LiveMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero:
                sender.put(step_metrics(logs or {}, state.global_step))

        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if state.is_world_process_zero and checkpoint.is_dir():
                live.save(checkpoint)

    return LiveMetrics()


def start_system_metrics(target: Tracking, run_id: str, resumed: bool = False):
    """MLflow's SystemMetricsMonitor on the run (None, with a warning, if it cannot start)."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run_id,
            sampling_interval=SYSTEM_METRICS_INTERVAL_S,
            resume_logging=resumed,
            tracking_uri=target.uri,
        )
        monitor.start()
    except Exception as exc:  # noqa: BLE001 - system metrics are a nice-to-have
        log.warning("MLflow system metrics are off: %s", redact_text(str(exc))[:300])
        return None
    return monitor


def _stop(sender: MetricSender, monitor) -> None:
    sender.close()
    if monitor is not None:
        try:
            monitor.finish()
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow system metrics did not stop cleanly: %s", exc)
