"""Deployments against real servers: `prefect server` and `mlflow server` on loopback,
both deployments created, a process worker, `scheduled-retraining` triggered through the
Prefect API; its state, artifact and the champion alias in the MLflow registry checked.
Servers and worker are stopped by PID."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from services import latest_artifact

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEPLOYMENT = "scheduled-retraining/scheduled-retraining"


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
