"""Whether a pipeline run would change nothing, decided before the flow starts.

`tunelab run` with nothing changed would reuse every step from the cache and still spend
half a minute: starting a Prefect API, running the data gate again to learn the data
versions, writing a new review. As `make` skips an up-to-date target, it shows the last
complete run's results instead, when both hold:

- its inputs are the same: the plan and every run config, tunelab's code, the library
  versions, the bytes of every data source (file hashes, or a pinned hub commit), the
  weights each method starts from, and the tracking target;
- what it left is untouched: the MLflow store (its sqlite file, or the aliases a server
  reports), the data folders, data.dvc and the version records, the step cache, every
  run folder and the review.

Anything that cannot be pinned without reading it (a hub dataset on a branch, a
tracking store other than sqlite or an MLflow server) means the flow runs. The record of
the last complete run is .tunelab/last-run.json in the workspace.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from tunelab.config import digest
from tunelab.data.sources import source_identity
from tunelab.files import write_json_atomic
from tunelab.models.resolution import weights_id
from tunelab.objectstore import STORE_ENV
from tunelab.pipeline.plan import Plan
from tunelab.redaction import URI_CREDENTIALS
from tunelab.runs import code_version, library_versions, starting_point
from tunelab.workspace import Workspace

log = logging.getLogger(__name__)

RECORD_VERSION = 1
# Libraries the pipeline's steps depend on besides those of training (runs.LIBRARIES):
# the data gate, versioning, tracking and orchestration.
PIPELINE_LIBRARIES = ("mlflow", "prefect", "great-expectations", "dvc", "pandas", "pyarrow")
# What each input is called in the reason the flow runs.
INPUT_NAMES = {
    "plan": "the plan or a run config",
    "code": "tunelab's code",
    "libraries": "a library version",
    "data": "a data source",
    "weights": "the weights a method starts from",
    "tracking": "the tracking target",
}


@dataclass(frozen=True)
class Check:
    """The last complete run's summary when nothing changed since; else why the flow runs.
    ``inputs``: the inputs as they were when checked (a reason when they cannot be
    pinned), to record with the run that follows."""

    summary: dict | None
    reason: str
    inputs: dict[str, str] | str
    finished: str | None = None  # when that run ended (ISO time)

    @property
    def up_to_date(self) -> bool:
        return self.summary is not None


def record_path(workspace: Workspace) -> Path:
    return workspace.root / ".tunelab" / "last-run.json"


def check(plan: Plan, workspace: Workspace, tracking_uri: str) -> Check:
    """Compare the inputs now and the workspace's state with the last complete run's.
    Call it before the run starts: a config or file edited while it runs must not be
    recorded as what it ran on."""
    now = inputs(plan, tracking_uri)
    try:
        record = json.loads(record_path(workspace).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Check(None, "no complete run is recorded in this workspace", now)
    except (OSError, ValueError) as exc:
        return Check(None, f"the record of the last run could not be read ({exc})", now)
    if record.get("version") != RECORD_VERSION:
        return Check(None, "the record of the last run has another format", now)
    if isinstance(now, str):
        return Check(None, now, now)
    before = record.get("inputs", {})
    changed = [INPUT_NAMES[key] for key in INPUT_NAMES if now.get(key) != before.get(key)]
    if changed:
        return Check(None, f"{', '.join(changed)} changed since the last complete run", now)
    summary = record.get("summary") or {}
    state = workspace_state(workspace, tracking_uri, summary)
    if state is None:
        return Check(None, "the tracking store's state cannot be read without MLflow", now)
    touched = [name for name, sig in state.items() if record.get("state", {}).get(name) != sig]
    if touched:
        return Check(None, f"{', '.join(touched)} changed since the last complete run", now)
    return Check(summary, "", now, record.get("finished"))


def save(
    workspace: Workspace, tracking_uri: str, summary: dict, inputs: dict[str, str] | str
) -> bool:
    """Record a run that ended with every method done (its CLI summary, ``run --json``'s
    form), with the ``inputs`` checked before it started (``Check.inputs``), as the one a
    later unchanged run may show; any other run clears the record, so its failures are
    retried. Call it once the flow has ended, holding the workspace. Returns whether it
    was recorded."""
    path = record_path(workspace)
    complete = summary.get("ok") and all(m["status"] == "ok" for m in summary["methods"])
    pinned = complete and isinstance(inputs, dict)
    state = workspace_state(workspace, tracking_uri, summary) if pinned else None
    if state is None:
        path.unlink(missing_ok=True)
        return False
    record = {
        "version": RECORD_VERSION,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": inputs,
        "state": state,
        "summary": summary,
    }
    write_json_atomic(path, record)
    return True


# ------------------------------------------------------------------------------ inputs


def inputs(plan: Plan, tracking_uri: str) -> dict[str, str] | str:
    """A digest per input of the plan's run (see INPUT_NAMES); a reason (str) when one
    cannot be pinned without running."""
    methods = plan.methods()
    sources = {}
    for cfg in plan.data_configs():
        identity = source_identity(cfg.data)
        if identity is None:
            return f"the source of {cfg.data.name} ({cfg.data.source}) is only known by reading it"
        sources[cfg.data.name] = identity
    # Registered rewards are not looked up here: the registry's aliases are compared below.
    weights = {m.label: starting_point(m.cfg, rewards=False) for m in methods}
    for cfg in plan.data_configs():
        if cfg.data.tokenizer and cfg.data.tokenizer != "whitespace":
            weights[f"{cfg.data.name} tokenizer"] = {"model": weights_id(cfg.data.tokenizer)}
    shape = {
        "title": plan.title,
        "concurrency": plan.concurrency,
        "methods": [
            [m.label, m.required, m.waits_for, m.cfg.model_dump(mode="json")] for m in methods
        ],
    }
    return {
        "plan": digest(shape),
        "code": code_version(),
        "libraries": digest({**library_versions(), **_pipeline_libraries()}),
        "data": digest(sources),
        "weights": digest(weights),
        "tracking": digest(tracking_uri),
    }


def _pipeline_libraries() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PIPELINE_LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


# ------------------------------------------------------------------------ what a run left


def workspace_state(workspace: Workspace, tracking_uri: str, summary: dict) -> dict | None:
    """A signature per part of the workspace a run leaves (None when the tracking store's
    state cannot be read here)."""
    store = store_state(tracking_uri, list(summary.get("champions", {})))
    if store is None:
        return None
    root = workspace.root
    review = summary.get("review", {}).get("markdown")
    runs = {m["run_dir"]: _folder_signature(Path(m["run_dir"])) for m in summary["methods"]}
    return {
        "the MLflow store": store,
        "the data folders": _folder_signature(workspace.data_dir),
        "data.dvc": digest(_file_signature(workspace.data_dvc)),
        "the data version records": _folder_signature(workspace.versions_dir),
        "the step cache": _folder_signature(workspace.prefect_results_dir),
        # The cache and run folders of a team store are not in the workspace: another
        # store (or none) is another run.
        "the team store": os.environ.get(STORE_ENV, ""),
        "a run folder": digest(runs),
        "the review": _folder_signature(Path(review).parent) if review else "none",
        "the workspace": str(root),
    }


def store_state(tracking_uri: str, model_names: list[str]) -> str | None:
    """The tracking store's state: a local sqlite file's size and modification time (any
    write changes them), or the aliases an MLflow server reports for the registered
    models; None for other stores or a server that does not answer."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(urllib.parse.unquote(tracking_uri.removeprefix("sqlite:///")))
        path = path if path.is_absolute() else Path("/") / path
        names = [path, *(path.with_name(path.name + s) for s in ("-wal", "-journal"))]
        return digest([_file_signature(p) for p in names])
    if tracking_uri.startswith(("http://", "https://")):
        try:
            return digest({name: _server_aliases(tracking_uri, name) for name in model_names})
        except (OSError, ValueError) as exc:
            log.info("MLflow server did not report the aliases: %s", exc)
            return None
    return None


def _server_aliases(uri: str, name: str) -> dict[str, str]:
    """A registered model's aliases, read with MLflow's REST API (no client import)."""
    plain = URI_CREDENTIALS.sub(lambda m: m["scheme"], uri).rstrip("/")
    query = urllib.parse.urlencode({"name": name})
    request = urllib.request.Request(f"{plain}/api/2.0/mlflow/registered-models/get?{query}")
    auth = _authorization(uri)
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http(s)
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # not registered (any more): a state of its own
            return {}
        raise
    aliases = body.get("registered_model", {}).get("aliases", [])
    return {a["alias"]: a["version"] for a in aliases}


def _authorization(uri: str) -> str | None:
    """The header MLflow's client would send: a token, or basic credentials."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return f"Bearer {token}"
    match = URI_CREDENTIALS.match(uri)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if match and not user:
        user, _, password = urllib.parse.unquote(match["cred"]).partition(":")
    if not user:
        return None
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _file_signature(path: Path) -> list:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return [path.name, None]
    return [path.name, stat.st_size, stat.st_mtime_ns]


def _folder_signature(folder: Path) -> str:
    """Every file's relative name, size and modification time (absent: 'absent')."""
    if not folder.is_dir():
        return "absent"
    entries = []
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(current) / name
            entries.append([path.relative_to(folder).as_posix(), *_file_signature(path)[1:]])
    return digest(entries)
