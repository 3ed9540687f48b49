"""A team's setup end to end: SeaweedFS, PostgreSQL, Prefect and MLflow on loopback (the
team stack), `tunelab deploy`, and a process worker whose workspace is a fresh empty
folder. `configs/tiny.yaml` through the deployment puts the data in the S3 DVC remote,
the models in S3 through the MLflow server, the registry in PostgreSQL and the step cache
in S3; a second run in another empty folder reuses every step from S3; `dvc pull` in a
fresh clone restores the data; the store killed mid-run fails the flow with an error that
names its endpoint, and the same run after a restart completes with nothing lost."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from services import free_port, query, s3_port

pytestmark = [pytest.mark.integration, pytest.mark.scale]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEPLOYMENT = "milestone/milestone-review"
STEPS = ("train", "evaluate", "register")


@pytest.fixture
def team(team_workspace, monkeypatch):
    """The team stack on free loopback ports; this process and its children use it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tunelab import services, stack

    ports = stack.TeamPorts(free_port(), free_port(), free_port(), s3_port())
    try:
        _, team = stack.start(team_workspace, ports=ports)
        for name, value in team.client_env().items():
            monkeypatch.setenv(name, value)
        with temporary_settings(updates={PREFECT_API_URL: team.client_env()["PREFECT_API_URL"]}):
            yield team
    finally:
        services.stop(team_workspace / ".services")


@pytest.fixture
def worker(team, team_workspace, monkeypatch):
    """A process worker on the pool `team`, whose flow runs use workspace/ (empty)."""
    workspace = team_workspace / "workspace"
    workspace.mkdir()
    monkeypatch.setenv("TUNELAB_WORKDIR", str(workspace))
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    deployed = subprocess.run(
        [str(BIN / "tunelab"), "deploy", "--pool-type", "process", "--pool", "team"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    log = open(team_workspace / "worker.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "team"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield workspace
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


def run(parameters: dict, timeout: float = 900):
    from prefect.deployments import run_deployment

    return run_deployment(
        DEPLOYMENT, parameters={"config": "configs/tiny.yaml", **parameters}, timeout=timeout
    )


def step_states(flow_run_id) -> dict[str, str]:
    """'train tiny-sentiment/tfidf' -> its state name, for every step of a flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {r.name: r.state.name for r in runs if r.name.split(" ")[0] in STEPS}


def bucket(team) -> list[str]:
    from tunelab import stack

    keys = stack.s3_client(team).get_paginator("list_objects_v2")
    return [o["Key"] for page in keys.paginate(Bucket=stack.BUCKET) for o in page["Contents"]]


def aliases(team) -> set[tuple]:
    return set(query(team, "mlflow", "SELECT name, alias, version FROM registered_model_aliases"))


def files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_tiny_plan_through_a_deployment_on_the_team_stack(team, team_workspace, worker):
    from tunelab import services, stack

    logs = team_workspace / "worker.log"
    first = run({})
    assert first.state.is_completed(), logs.read_text()[-4000:]
    steps = step_states(first.id)
    assert len(steps) == 33 and "Cached" not in steps.values(), steps

    # The data in the S3 DVC remote, the cache and the run folders in S3, not on this disk.
    assert "url = s3://tunelab/dvc" in (worker / ".dvc" / "config").read_text()
    assert not (worker / ".prefect-results").exists() and not (worker / "dvc-remote").exists()
    keys = bucket(team)
    dir_hash = (worker / "data.dvc").read_text().split("md5: ", 1)[1].split(".dir")[0]
    assert f"dvc/files/md5/{dir_hash[:2]}/{dir_hash[2:]}.dir" in keys
    assert sum(k.startswith("prefect-results/") for k in keys) >= 33
    assert any(k.startswith("runs/tiny-sentiment/") and k.endswith("scorecard.json") for k in keys)
    # The built tiny models, once for the team (a worker that lacks them fetches them).
    assert any(k.startswith("models/tiny-bert/") and k.endswith(".safetensors") for k in keys)
    # The registry in PostgreSQL; every registered model's files in S3 through MLflow.
    versions = query(team, "mlflow", "SELECT name, storage_location FROM model_versions")
    assert {name for name, _ in versions} >= {
        "tiny-sentiment-classifier",
        "tiny-preferences-policy",
        "tiny-prompts-policy",
    }
    for _, location in versions:
        prefix = "mlflow/" + location.split("mlflow-artifacts:/", 1)[1]
        assert f"{prefix}/MLmodel" in keys, location
    assert ("tiny-sentiment-classifier", "champion", 1) in aliases(team)
    flows = "SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED' AND name IS NOT NULL"
    assert query(team, "prefect", flows)[0][0] >= 2  # milestone and its prepare-data

    # Another worker's empty workspace: every step comes from the cache in S3.
    second = run({"workdir": str(team_workspace / "second")})
    assert second.state.is_completed(), logs.read_text()[-4000:]
    assert set(step_states(second.id).values()) == {"Cached"}
    review = next((team_workspace / "second" / "reports" / "milestone").rglob("review.md"))
    assert "tfidf" in review.read_text()

    # `dvc pull` in a fresh clone of a repository that holds data.dvc and the remote.
    origin = team_workspace / "origin"
    origin.mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    for command in (
        ["git", "init", "-q"],
        [*dvc, "init", "-q"],
        [*dvc, "remote", "add", "-d", "team", "s3://tunelab/dvc"],
    ):
        subprocess.run(command, cwd=origin, check=True, capture_output=True)
    (origin / "data.dvc").write_bytes((worker / "data.dvc").read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "add", "-A"], cwd=origin, check=True)
    subprocess.run([*git, "commit", "-qm", "data"], cwd=origin, check=True)
    clone = team_workspace / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    pulled = subprocess.run([*dvc, "pull"], cwd=clone, capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert files(clone / "data") == files(worker / "data")

    # The store dies mid-run: the flow fails naming its endpoint; nothing is lost.
    before = aliases(team)
    third = run({"workdir": str(team_workspace / "third"), "refresh": True}, timeout=0)
    deadline = time.monotonic() + 300
    while "Completed" not in step_states(third.id).values():
        assert time.monotonic() < deadline, logs.read_text()[-4000:]
        time.sleep(1)
    store = next(r for r in services.status(team.state_dir) if r["name"] == "seaweedfs")
    os.killpg(store["pid"], signal.SIGKILL)
    ended = wait_final(third.id)
    assert ended.state.is_failed(), ended.state
    assert team.s3_endpoint in ended.state.message, ended.state.message

    stack.start(team_workspace, ports=team.ports)  # the store again; the rest still runs
    fourth = run({"workdir": str(team_workspace / "third")})
    assert fourth.state.is_completed(), logs.read_text()[-4000:]
    assert aliases(team) >= {a for a in before if a[1] == "champion"}
    assert set(keys) <= set(bucket(team))  # every object stored before is still there


def wait_final(flow_run_id, timeout_s: float = 600):
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state.is_final() or time.monotonic() > deadline:
                return flow_run
            time.sleep(2)
