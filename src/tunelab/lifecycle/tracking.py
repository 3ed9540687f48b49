"""MLflow tracking: where runs go, what each run records, and its lineage.

The default store lives in the workspace: ``mlruns/mlflow.db`` (sqlite) with artifacts
under ``mlruns/artifacts``. ``MLFLOW_TRACKING_URI`` (or ``registry.tracking_uri`` in the
config) points at a real ``mlflow server`` instead. Nothing happens at import: call
:func:`setup` first; it fails fast, naming the URI, when a server cannot be reached.

One experiment per dataset, one run per trained method (nested under a parent run when
a pipeline trains several). No secrets reach MLflow: params, the logged config.yaml,
tags and messages pass through :func:`tunelab.redaction.redact`.

A run says what ran and when: its name is ``<dataset>/<method> <model> data-<version>``,
its Source the tunelab command line or the pipeline flow and method
(``mlflow.source.name``, type LOCAL or JOB), and it spans the work: a method's run starts
when its training starts (a baseline's run, logged after the fact, is dated back to it)
and ends when its registration and gate have finished; a pipeline's parent run is open
from before its first method until its review is attached.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tunelab.config import RunConfig
from tunelab.errors import TrackingError
from tunelab.lifecycle import packaging
from tunelab.redaction import URI_CREDENTIALS, redact, redact_text
from tunelab.runs import (
    PREDICTIONS_FILE,
    PROMPT_EXAMPLE_FILE,
    RESULT_FILE,
    SCORECARD_FILE,
    TrainResult,
    method_label,
    model_label,
)
from tunelab.scorecard import Scorecard, primary_metric
from tunelab.train.common import last_checkpoint, library_versions
from tunelab.workspace import Workspace

T = TypeVar("T")
ENV_URI = "MLFLOW_TRACKING_URI"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
TAG = "tunelab."  # prefix of tunelab's own tags
EVALUATION_DIR = "evaluation"  # the run's artifact folder of test predictions
# MLflow retries HTTP calls 7 times with backoff factor 2 by default (minutes of waiting
# on a dead server); tunelab bounds that unless the user set these themselves.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
FAILURE_TAG = f"{TAG}failure"  # why tunelab ended a run FAILED or KILLED (also its note)
# What MLflow shows as a run's Source, and its kind (LOCAL: a command; JOB: a flow run).
SOURCE_NAME_TAG, SOURCE_TYPE_TAG = "mlflow.source.name", "mlflow.source.type"
MAX_SOURCE_CHARS = 500


@dataclass(frozen=True)
class Tracking:
    """A resolved tracking target."""

    uri: str
    # Where the local store keeps artifacts (None for a server: it decides).
    artifact_root: str | None = None

    @property
    def is_server(self) -> bool:
        return self.uri.startswith(("http://", "https://"))

    @property
    def shown(self) -> str:
        """The URI without credentials, for messages and tags."""
        return redact(self.uri)

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        if not self.is_server:
            return None
        return f"{self.uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def ui_command(self) -> str:
        """The server's URL, or the command that opens the local store in the MLflow UI."""
        if self.is_server:
            return self.shown
        return (
            f"mlflow ui --backend-store-uri {self.uri} "
            f"--default-artifact-root {self.artifact_root} --host 127.0.0.1"
        )

    def ui_hint(self) -> str:
        return f"MLflow UI: {self.ui_command()}"


def resolve(workspace: Workspace, uri: str | None = None) -> Tracking:
    """Explicit URI, then $MLFLOW_TRACKING_URI, then the sqlite store in the workspace."""
    folder = workspace.mlruns_dir
    local = Tracking(
        f"sqlite:///{folder / DB_FILE}", artifact_root=(folder / ARTIFACTS_DIR).as_uri()
    )
    # mlflow.set_tracking_uri exports the URI to the environment: recognise our own store.
    chosen = uri or os.environ.get(ENV_URI)
    return Tracking(chosen) if chosen and chosen != local.uri else local


def setup(workspace: Workspace, uri: str | None = None, attempts: int = 3) -> Tracking:
    """Point MLflow at the tracking target; a server must answer /health within the retries."""
    tracking = resolve(workspace, uri)
    for key, value in HTTP_BOUNDS.items():
        os.environ.setdefault(key, value)
    if tracking.is_server:
        check_reachable(tracking, attempts=attempts)
    else:
        (workspace.mlruns_dir / ARTIFACTS_DIR).mkdir(parents=True, exist_ok=True)
    import mlflow

    user_set = ENV_URI in os.environ
    mlflow.set_tracking_uri(tracking.uri)
    mlflow.set_registry_uri(tracking.uri)
    if not user_set:
        # MLflow exports the URI to the environment; a later setup for another workspace
        # in the same process must not mistake it for the user's choice.
        os.environ.pop(ENV_URI, None)
    return tracking


def check_reachable(tracking: Tracking, attempts: int = 3, backoff_s: float = 0.5) -> None:
    """GET <server>/health with exponential backoff; TrackingError naming the URI if down."""
    # urllib cannot take user:pass@ in a URL; /health needs no credentials anyway.
    url = URI_CREDENTIALS.sub(lambda m: m["scheme"], tracking.uri).rstrip("/") + "/health"
    error: Exception | None = None
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http(s) only
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            error = exc
        if attempt < attempts - 1:
            time.sleep(backoff_s * 2**attempt)
    raise TrackingError(
        f"The MLflow tracking server at {tracking.shown} did not answer after {attempts} "
        f"attempts ({error}). Nothing was trained, logged or registered. Start it "
        "(`make services`, or `mlflow server --host 127.0.0.1 ...`), or unset "
        f"{ENV_URI} to use the local store in the workspace's mlruns/."
    )


def call(tracking: Tracking, what: str, fn: Callable[[], T], attempts: int = 3) -> T:
    """Run one MLflow call, retrying connection failures with backoff, then TrackingError.

    Errors that are not about the connection (a refused write, a missing model) pass
    through unchanged on the first attempt.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return fn()
        except (MlflowException, OSError) as exc:
            if not _is_connection_error(exc):
                raise
            if attempt == attempts - 1:
                raise TrackingError(
                    f"MLflow at {tracking.shown} failed while trying to {what} after "
                    f"{attempts} attempts: {redact(str(exc))[:300]}. Check that the server "
                    "is running and reachable; registry aliases were not changed."
                ) from None
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def mlflow_client():
    """An MlflowClient for the target that :func:`setup` chose."""
    from mlflow import MlflowClient

    return MlflowClient()


def _is_connection_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        marker in text
        for marker in ("connection", "max retries", "timed out", "unreachable", "refused")
    )


# ---------------------------------------------------------------- params


def flat_params(cfg: RunConfig) -> dict[str, str]:
    """The resolved config as dotted params (train.adapter.r = 8), redacted."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            out[prefix] = str(node)[:MAX_PARAM_CHARS]

    walk(redact(cfg.to_dict()), "")
    return out


# ---------------------------------------------------------------- what ran


def mlflow_run_name(cfg: RunConfig, data_version: str | None) -> str:
    """``<dataset>/<method> <model> data-<version[:8]>``: a method's MLflow run name,
    e.g. ``sentiment/lora tiny-bert data-1a2b3c4d``."""
    version = data_version[:8] if data_version else "unversioned"
    return f"{cfg.data.name}/{method_label(cfg)} {model_label(cfg)} data-{version}"


def source_tags(cfg: RunConfig, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The run's Source in MLflow: ``flow <pipeline>: <dataset>/<method>`` (JOB) for a
    pipeline's method, else the tunelab command line (LOCAL)."""
    what = f"{cfg.data.name}/{method_label(cfg)}"
    pipeline = (extra or {}).get(f"{TAG}pipeline")
    if pipeline:
        return {SOURCE_NAME_TAG: f"flow {pipeline}: {what}", SOURCE_TYPE_TAG: "JOB"}
    return {SOURCE_NAME_TAG: command_line() or f"tunelab: {what}", SOURCE_TYPE_TAG: "LOCAL"}


def command_line(argv: list[str] | None = None) -> str | None:
    """The tunelab command this process runs (``tunelab train configs/x.yaml``), redacted;
    None when the process is not the tunelab CLI (a test, a notebook, another program)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return None
    program = Path(argv[0])
    is_cli = program.stem == "tunelab" or (
        program.name in ("cli.py", "__main__.py") and program.parent.name == "tunelab"
    )
    if not is_cli:
        return None
    return redact_text(shlex.join(["tunelab", *argv[1:]]))[:MAX_SOURCE_CHARS]


def training_started_ms(result: TrainResult) -> int | None:
    """When the result's training started (ms since the epoch), for a run logged after
    the fact: its record was saved as training ended, ``wall_seconds`` after the start.
    None when the record is not on disk."""
    try:
        ended = (Path(result.output_dir) / RESULT_FILE).stat().st_mtime
    except OSError:
        return None
    started = int((ended - (result.wall_seconds or 0.0)) * 1000)
    return started if started <= time.time() * 1000 else None


# ---------------------------------------------------------------- lineage


def git_state(path: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding ``path``; (None, None) outside git."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, bool(status)


def code_location() -> Path:
    """The folder of the tunelab code that runs (its git state is the code version)."""
    return Path(__file__).resolve().parent


def training_tags(
    cfg: RunConfig,
    data_version: str | None,
    run_dir_name: str,
    extra: dict[str, str] | None = None,
    versions: dict[str, str] | None = None,
) -> dict[str, str]:
    """The lineage tags known before training: what log_run sets, less what only the
    trained and evaluated run can tell (device, test split, evaluation)."""
    commit, dirty = git_state(code_location())
    tags = {
        f"{TAG}dataset": cfg.data.name,
        f"{TAG}task": cfg.data.task,
        f"{TAG}method": method_label(cfg),
        f"{TAG}role": "baseline" if cfg.train.method == "baseline" else "candidate",
        f"{TAG}data_version": data_version or "unrecorded",
        f"{TAG}config_hash": cfg.config_hash(),
        f"{TAG}seed": str(cfg.train.seed),
        f"{TAG}primary_metric": primary_metric(cfg),
        f"{TAG}run_dir": run_dir_name,
        f"{TAG}git_commit": commit or "unknown",
        f"{TAG}git_dirty": "unknown" if dirty is None else str(dirty).lower(),
    }
    if model_label(cfg) != "sklearn":
        tags[f"{TAG}model"] = cfg.model.name
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update(source_tags(cfg, extra))
    for name, version in (versions or library_versions()).items():
        tags[f"{TAG}version.{name}"] = version
    for key, value in (extra or {}).items():
        tags[key] = str(value)
    return {k: redact(v, k) for k, v in tags.items()}


def lineage_tags(
    cfg: RunConfig,
    result: TrainResult,
    card: Scorecard,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    run_dir_name = Path(result.output_dir).name
    tags = training_tags(cfg, result.data_version, run_dir_name, extra, result.versions)
    tags.update(
        {
            f"{TAG}dataset": result.dataset,
            f"{TAG}task": result.task,
            f"{TAG}method": card.method,
            f"{TAG}role": card.role,
            f"{TAG}model": result.model,
            f"{TAG}test_split": card.test_split or "unrecorded",
            f"{TAG}device": f"{result.device} ({result.precision})",
            f"{TAG}primary_metric": card.primary_metric,
            f"{TAG}evaluation": card.status,
        }
    )
    tags.update({k: str(v) for k, v in (extra or {}).items()})  # the caller's word wins
    return {k: redact(v, k) for k, v in tags.items()}


# ---------------------------------------------------------------- logging a run


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    experiment_id: str
    run_url: str | None
    model_uri: str | None  # models:/<model id> of the logged model, None if none
    model_id: str | None = None  # MLflow 3 LoggedModel id (a server needs it to register)


def experiment_for(tracking: Tracking, dataset: str) -> str:
    """The experiment of a dataset (created on first use; local artifacts under mlruns/)."""
    client = mlflow_client()
    found = call(
        tracking,
        f"look up experiment {dataset}",
        lambda: client.get_experiment_by_name(dataset),
    )
    if found is not None:
        return found.experiment_id
    location = f"{tracking.artifact_root}/{dataset}" if tracking.artifact_root else None
    return call(
        tracking,
        f"create experiment {dataset}",
        lambda: client.create_experiment(dataset, artifact_location=location),
    )


def start_parent(tracking: Tracking, dataset: str, pipeline: str, tags: dict[str, str]) -> str:
    """A pipeline's parent run of a dataset's method runs, named ``<dataset>/<pipeline>``
    with the Source ``flow <pipeline>: <dataset>``; returns its id (ended by end_parent)."""
    from mlflow.tracking.context.registry import resolve_tags

    experiment_id = experiment_for(tracking, dataset)
    tags = {
        **tags,
        SOURCE_NAME_TAG: f"flow {pipeline}: {dataset}",
        SOURCE_TYPE_TAG: "JOB",
    }
    tags = {k: redact(v, k) for k, v in tags.items()}
    run = call(
        tracking,
        "start the parent run",
        lambda: mlflow_client().create_run(
            experiment_id, run_name=f"{dataset}/{pipeline}", tags=resolve_tags(tags)
        ),
    )
    return run.info.run_id


def end_parent(tracking: Tracking, run_id: str, failed: bool = False) -> None:
    status = "FAILED" if failed else "FINISHED"
    call(tracking, "end the parent run", lambda: mlflow_client().set_terminated(run_id, status))


def log_folder(tracking: Tracking, run_id: str, folder: Path, artifact_path: str) -> None:
    """Attach a folder of files (a report) to an existing run. A run that has already
    ended keeps its status; its end moves to now, so its duration covers the report."""
    call(
        tracking,
        f"log {folder.name} to run {run_id}",
        lambda: mlflow_client().log_artifacts(run_id, str(folder), artifact_path),
    )
    extend_run(tracking, run_id)


def extend_run(tracking: Tracking, run_id: str) -> None:
    """Move an ended run's end time to now, its status kept: work that belongs to it (the
    registration and gate of its model, a pipeline's review) finished after it ended.
    A run still open is left to whoever ends it."""
    client = mlflow_client()
    info = call(tracking, f"read run {run_id}", lambda: client.get_run(run_id)).info
    if info.status in ("RUNNING", "SCHEDULED"):
        return
    now = int(time.time() * 1000)
    call(
        tracking,
        f"set the end of run {run_id}",
        lambda: client.set_terminated(run_id, info.status, end_time=now),
    )


def log_run(
    cfg: RunConfig,
    result: TrainResult,
    card: Scorecard,
    workspace: Workspace,
    tracking: Tracking,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> TrackedRun:
    """The MLflow run of a trained and evaluated method: params, metrics, curves,
    artifacts, dataset inputs, lineage tags and (when it has one) its servable model.

    A run followed live while it trained (``result.mlflow_run_id``, see
    tunelab.lifecycle.live) takes them and is ended; otherwise a new run is created,
    dated back to when the training started (baselines fit at once, without a live run).
    """
    import mlflow

    experiment_id = experiment_for(tracking, result.dataset)
    tags = lineage_tags(cfg, result, card, extra_tags)
    if parent_run_id:  # the pipeline run that logs it (a resumed live run's too)
        tags[PARENT_TAG] = parent_run_id
    live = live_run_for(tracking, result, experiment_id, tags)
    live_id = live.info.run_id if live else None
    if live:
        clear_failure(mlflow_client(), live)  # an earlier attempt's, now superseded
        where = {"run_id": live_id, "log_system_metrics": False}
    else:
        created = create_run(tracking, cfg, result, experiment_id, tags)
        where = {"run_id": created}

    def write() -> TrackedRun:
        with mlflow.start_run(**where, tags=tags) as run:
            _log_params(cfg)
            _log_metrics(result, card, live=live_id is not None)
            _log_artifacts(result, card, workspace)
            _log_inputs(result, workspace)
            logged = packaging.log_model(result, card, cfg) if card.ok and card.servable else None
            model_uri = logged.model_uri if logged else None
            if model_uri:
                mlflow.set_tag(f"{TAG}model_uri", model_uri)
            if not card.ok:
                mlflow.set_tag(NOTE_TAG, redact(f"Evaluation failed: {card.error}"))
            info = run.info
        return TrackedRun(
            info.run_id,
            experiment_id,
            tracking.run_url(experiment_id, info.run_id),
            model_uri,
            logged.model_id if logged else None,
        )

    return call(tracking, f"log the {card.method} run", write, attempts=1)


def create_run(
    tracking: Tracking,
    cfg: RunConfig,
    result: TrainResult,
    experiment_id: str,
    tags: dict[str, str],
) -> str:
    """A new run for a result that no live run followed, started when its training did
    (the user and git tags mlflow.start_run would add included; ours win)."""
    from mlflow.tracking.context.registry import resolve_tags

    run = call(
        tracking,
        "start the run",
        lambda: mlflow_client().create_run(
            experiment_id,
            start_time=training_started_ms(result),
            run_name=mlflow_run_name(cfg, result.data_version),
            tags=resolve_tags(tags),
        ),
    )
    return run.info.run_id


def live_run_for(tracking: Tracking, result: TrainResult, experiment_id: str, tags: dict[str, str]):
    """The run that followed this result's training live, if it may take its results:
    it still exists in this store and experiment, is not ended FINISHED (an earlier
    registration's, e.g. under another registry config), and no other registration key
    claimed it (a failed attempt of the same registration is taken over)."""
    from tunelab.lifecycle.registry import KEY_TAG

    if not result.mlflow_run_id:
        return None
    run = open_run(tracking, mlflow_client(), result.mlflow_run_id, experiment_id)
    if run is None or run.data.tags.get(KEY_TAG, tags.get(KEY_TAG)) != tags.get(KEY_TAG):
        return None
    return run


def open_run(tracking: Tracking, client, run_id: str, experiment_id: str):
    """The run if it may still be logged to: it exists in this store and experiment, is
    active (not deleted) and was not ended FINISHED; else None."""
    from mlflow.exceptions import MlflowException

    try:
        run = call(tracking, f"look up run {run_id}", lambda: client.get_run(run_id))
    except MlflowException:  # not in this store (another tracking target, or deleted)
        return None
    info = run.info
    if (
        info.experiment_id != experiment_id
        or info.lifecycle_stage != "active"
        or info.status == "FINISHED"
    ):
        return None
    return run


def clear_failure(client, run) -> None:
    """Remove the failure tunelab noted on a run (and its note) that goes on after all."""
    if FAILURE_TAG in run.data.tags:
        for key in (FAILURE_TAG, NOTE_TAG):
            if key in run.data.tags:
                client.delete_tag(run.info.run_id, key)


def _log_params(cfg: RunConfig) -> None:
    import mlflow

    params = flat_params(cfg)
    items = list(params.items())
    for start in range(0, len(items), 90):  # MLflow takes at most 100 params per batch
        mlflow.log_params(dict(items[start : start + 90]))
    mlflow.log_text(redact_yaml(cfg), "config.yaml")


def redact_yaml(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(redact(cfg.to_dict()), sort_keys=False)


def _numeric(values: dict[str, Any]) -> dict[str, float]:
    import math

    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[_metric_key(key)] = float(value)
    return out


def _metric_key(key: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and space."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key)


def curve_name(key: str) -> str:
    """The MLflow metric of a Trainer log key: loss and eval_loss by what they measure,
    the others (learning_rate, grad_norm, rewards/chosen, ...) under curve/ as named."""
    name = {"loss": "curve/train_loss", "eval_loss": "curve/validation_loss"}.get(
        key, f"curve/{key}"
    )
    return _metric_key(name)


def _log_metrics(result: TrainResult, card: Scorecard, live: bool = False) -> None:
    """Final metrics, the primary metric's interval, costs, and the step-wise curves
    (for a live run only the points it has not received yet)."""
    import mlflow
    from mlflow.entities import Metric

    metrics = _numeric(card.metrics)
    metrics.update(_numeric(card.costs))
    if card.ok:
        metrics[f"test_{card.primary_metric}"] = card.primary
        metrics[f"test_{card.primary_metric}_ci_low"] = card.ci_low
        metrics[f"test_{card.primary_metric}_ci_high"] = card.ci_high
    mlflow.log_metrics(_numeric(metrics))
    run_id, client = mlflow.active_run().info.run_id, mlflow_client()
    now = int(time.time() * 1000)
    curve, present = [], {}
    for row in result.history:
        step = int(row.get("step") or 0)
        for key, value in row.items():
            if key in ("step", "epoch") or not isinstance(value, int | float):
                continue
            name = curve_name(key)
            if live and name not in present:
                present[name] = {m.step for m in client.get_metric_history(run_id, name)}
            if step not in present.get(name, ()):
                curve.append(Metric(name, float(value), now, step))
    for start in range(0, len(curve), 900):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=curve[start : start + 900])


def _log_artifacts(result: TrainResult, card: Scorecard, workspace: Workspace) -> None:
    import mlflow

    run_dir = Path(result.output_dir)
    files = {
        RESULT_FILE: "",
        SCORECARD_FILE: "",
        PREDICTIONS_FILE: EVALUATION_DIR,
        PROMPT_EXAMPLE_FILE: EVALUATION_DIR,
    }
    for name, folder in files.items():
        if (run_dir / name).is_file():
            mlflow.log_artifact(str(run_dir / name), folder or None)
    for plot in card.plots.values():
        if (run_dir / plot).is_file():
            mlflow.log_artifact(str(run_dir / plot), "plots")
    checkpoint = last_checkpoint(run_dir)
    if checkpoint and (Path(checkpoint) / "trainer_state.json").is_file():
        mlflow.log_artifact(str(Path(checkpoint) / "trainer_state.json"), "training")
    if "adapter" in result.artifacts:
        mlflow.log_artifacts(str(result.artifact("adapter")), "adapter")
    if result.data_version:
        record_dir = workspace.versions_dir / result.dataset / result.data_version
        if (record_dir / "validation.json").is_file():
            mlflow.log_artifact(str(record_dir / "validation.json"), "data")
        report_dir = workspace.reports_dir / "data" / result.dataset / result.data_version
        if report_dir.is_dir():
            mlflow.log_artifacts(str(report_dir), "data/report")


def _log_inputs(result: TrainResult, workspace: Workspace) -> None:
    """mlflow.log_input for each split of the trained data version (with MLflow's digest)."""
    import mlflow

    from tunelab.data import versioning

    current = versioning.current_version(result.dataset, workspace)
    if current is None or current.version != result.data_version:
        return  # the files on disk are another version: do not mislabel them
    splits = versioning.load_splits(result.dataset, workspace)
    for split, frame in splits.items():
        if frame.empty:
            continue
        with warnings.catch_warnings():
            # A local path "can be interpreted in multiple ways" by MLflow: all the same one.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                frame,
                # The DVC-tracked file; its content hash is the data version named below.
                source=str(workspace.data_dir / result.dataset / f"{split}.parquet"),
                name=f"{result.dataset}-{split}@{result.data_version}",
                targets="label" if "label" in frame.columns else None,
            )
        mlflow.log_input(dataset, context=split, tags={"data_version": result.data_version})
