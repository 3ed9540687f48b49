"""Deployments against real servers: `prefect server` and `mlflow server` on loopback,
both deployments created, a process worker, `scheduled-retraining` triggered through the
Prefect API; its state, artifact and the champion alias in the MLflow registry checked.
Servers and worker are stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from services import free_port

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEPLOYMENT = "scheduled-retraining/scheduled-retraining"


@pytest.fixture
def live_services(tmp_path, monkeypatch):
    """Prefect and MLflow servers started the way `make services` starts them."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tunelab import services

    root = tmp_path / "ws"
    root.mkdir()
    state = root / ".services"
    specs = [
        services.prefect_spec(root, port=free_port()),
        services.mlflow_spec(root, port=free_port()),
    ]
    try:
        rows = {row["name"]: row for row in services.start(specs, state, timeout_s=180)}
        api = rows["prefect"]["ui_url"] + "/api"
        monkeypatch.setenv("PREFECT_API_URL", api)  # for the worker process
        monkeypatch.setenv("MLFLOW_TRACKING_URI", rows["mlflow"]["ui_url"])
        monkeypatch.setenv("TUNELAB_WORKDIR", str(root))
        # In this process too, even if a test harness API is active in the session.
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield root
    finally:
        services.stop(state)


@pytest.fixture
def worker(live_services):
    log = open(live_services / "worker.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "tunelab"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        start_new_session=True,
    )
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    log.close()


def retrain_config(folder: Path) -> Path:
    """The bundled sentiment rows as a CSV source, retrained with TF-IDF (seconds)."""
    config = folder / "retrain.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "title": "Retraining",
                "datasets": {
                    "served-sentiment": {
                        "tfidf": {
                            "config": str(CONFIGS / "sentiment-tfidf.yaml"),
                            "set": ["data.name=served-sentiment"],
                        }
                    }
                },
            }
        )
    )
    return config


def latest_artifact(client, key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
        sort=ArtifactSort.CREATED_DESC,
        limit=1,
    )
    return found[0].data if found else ""


def test_deployments_worker_and_scheduled_retraining(live_services, worker):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from flows.deployments import deploy_all
    from tunelab.lifecycle import registry, tracking
    from tunelab.workspace import Workspace

    rows = deploy_all()
    assert {r["deployment"] for r in rows} == {
        "milestone/milestone-review",
        "scheduled-retraining/scheduled-retraining",
    }
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        assert deployment.schedules[0].schedule.cron == "0 3 * * *"
        assert client.read_work_pool("tunelab").type == "process"
        # The Custom run form: the bundled plans as choices, every parameter described.
        milestone = client.read_deployment_by_name("milestone/milestone-review")
        form = milestone.parameter_openapi_schema["properties"]
        choices = next(o["enum"] for o in form["config"]["anyOf"] if "enum" in o)
        assert "configs/tiny.yaml" in choices and form["config"]["default"] in choices
        assert all(form[name].get("description") for name in ("config", "workdir", "refresh"))

    parameters = {"config": str(retrain_config(live_services))}
    first = run_deployment(DEPLOYMENT, parameters=parameters, timeout=900)
    assert first.state.is_completed(), (live_services / "worker.log").read_text()[-3000:]

    target = tracking.setup(Workspace(live_services))
    assert target.is_server
    assert registry.aliases(target, "served-sentiment-classifier") == {"champion": "1"}
    # The review's plots are inline, each linked at full size to the MLflow server's copy,
    # which a browser can fetch.
    with get_client(sync_client=True) as client:
        review = latest_artifact(client, "retraining-review")
    assert "](data:image/png;base64," in review
    link = review.split(" [full size](", 1)[1].split(")", 1)[0]
    assert link.startswith(f"{target.uri.rstrip('/')}/get-artifact?path=milestone-review%2F")
    fetched = httpx.get(link, timeout=30)
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")

    second = run_deployment(DEPLOYMENT, parameters=parameters, timeout=900)
    assert second.state.is_completed()
    with get_client(sync_client=True) as client:
        artifact = latest_artifact(client, "retraining-decision")
    version = registry.champion_data_version(target, "served-sentiment-classifier")
    assert f"skipped: data unchanged (version {version})" in artifact
    assert len(registry.list_versions(target, "served-sentiment-classifier")) == 1
