"""Scheduled retraining under a Prefect test API, on a CSV source that grows: unchanged
data is skipped with an artifact; changed data is retrained and promoted only through
the gate (the champion is re-scored on the new test split)."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tunelab.lifecycle import registry, tracking

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NAME = "fresh-sentiment-classifier"


def bundled_rows() -> pd.DataFrame:
    text = resources.files("tunelab.data").joinpath("samples/sentiment.jsonl").read_text()
    return pd.DataFrame([json.loads(line) for line in text.splitlines() if line.strip()])


def latest_artifact(key: str = "retraining-decision") -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return found[0].data if found else ""


@pytest.fixture
def retrain_setup(workspace, tmp_path, prefect_harness):
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    source = tmp_path / "reviews.csv"
    bundled_rows().iloc[:400].to_csv(source, index=False)
    config = tmp_path / "retrain.yaml"
    overrides = [
        "data.name=fresh-sentiment",
        f"data.source={source}",
        "data.checks.min_rows_per_class=20",
    ]
    config.write_text(
        yaml.safe_dump(
            {
                "title": "Retraining test",
                "datasets": {
                    "fresh-sentiment": {
                        "tfidf": {"config": str(CONFIGS / "sentiment-tfidf.yaml"), "set": overrides}
                    }
                },
            }
        )
    )
    yield workspace, config, source
    if previous is not None:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def test_retraining_skips_unchanged_data_and_gates_changed_data(retrain_setup):
    from flows.retrain import scheduled_retraining

    workspace, config, source = retrain_setup
    target = tracking.setup(workspace)

    first = scheduled_retraining(str(config), str(workspace.root))
    assert first.retrained == ["fresh-sentiment"]
    assert registry.aliases(target, NAME) == {"champion": "1"}
    champion_data = registry.champion_data_version(target, NAME)
    # Its review is published under the retraining flow's own keys, not the milestone's.
    review = latest_artifact("retraining-review")
    assert review.startswith("# Retraining test") and "](data:image/png;base64," in review
    assert "fresh-sentiment" in latest_artifact("retraining-review-table")
    assert "# Retraining test" not in latest_artifact("milestone-review")

    unchanged = scheduled_retraining(str(config), str(workspace.root))
    assert unchanged.retrained == [] and unchanged.skipped == ["fresh-sentiment"]
    artifact = latest_artifact()
    assert f"skipped: data unchanged (version {champion_data})" in artifact
    assert len(registry.list_versions(target, NAME)) == 1

    # New rows arrive: a new data version, a new test split.
    pd.concat([pd.read_csv(source), bundled_rows().iloc[400:600]]).to_csv(source, index=False)
    changed = scheduled_retraining(str(config), str(workspace.root))
    assert changed.retrained == ["fresh-sentiment"]
    assert "retraining" in latest_artifact()
    row = changed.methods[0]
    assert row.registration.version == "2"
    v2 = registry.version_info(target, NAME, "2")
    assert v2.tags["data_version"] != champion_data
    # Judged against the champion re-scored on the new test split, then promoted only
    # if the gate said so.
    assert "re-scored on this test split" in v2.tags["gate.versus"]
    promoted = v2.tags["gate.decision"] == "promoted"
    aliases = registry.aliases(target, NAME)
    if promoted:
        assert aliases == {"champion": "2", "previous": "1"}
        assert float(v2.tags["gate.p_value"]) <= 0.05 and float(v2.tags["gate.delta"]) > 0
    else:
        assert aliases == {"champion": "1", "challenger": "2"}


def test_retraining_waits_for_a_run_that_holds_the_workspace(retrain_setup, monkeypatch):
    """A scheduled run while another run writes: it waits, then fails clearly, untouched."""
    import subprocess
    import sys

    from flows.retrain import scheduled_retraining
    from tunelab.errors import WorkspaceBusyError

    workspace, config, _ = retrain_setup
    hold = (
        "import sys, time\nfrom tunelab.workspace import Workspace\n"
        "with Workspace.resolve(sys.argv[1]).lock():\n    print('held', flush=True)\n"
        "    time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(workspace.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("TUNELAB_LOCK_TIMEOUT", "1")
        with pytest.raises(WorkspaceBusyError, match=f"pid {holder.pid}"):
            scheduled_retraining(str(config), str(workspace.root))
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not workspace.mlruns_dir.exists() and not workspace.data_dir.exists()
