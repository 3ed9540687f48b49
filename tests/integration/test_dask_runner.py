"""The milestone flow on a real local Dask cluster (2 worker processes): two independent
methods train at the same time, each tracked and registered from its worker; a second
run reuses every step from the cache the workers wrote."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.scale]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def two_methods(folder: Path) -> Path:
    """Two tiny classifiers of one dataset that train a torch model (seconds each)."""
    rows = ["data.max_rows=300"]
    raw = {
        "title": "Two methods at once",
        "datasets": {
            "tiny-sentiment": {
                "lora": {"config": str(CONFIGS / "tiny" / "sentiment-lora.yaml"), "set": rows},
                "full": {"config": str(CONFIGS / "tiny" / "sentiment-full.yaml"), "set": rows},
            }
        },
    }
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_spans(flow_run_id) -> dict[str, tuple]:
    """Task run name -> (start, end) of the flow run's train steps, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="train ")),
        )
    return {r.name: (r.start_time, r.end_time) for r in runs}


def test_two_methods_train_at_once_on_a_local_dask_cluster(tmp_path, prefect_harness):
    from flows.milestone import milestone
    from tunelab.workspace import Workspace

    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        plan, root = str(two_methods(tmp_path)), str(Workspace(tmp_path / "ws").ensure().root)
        state = milestone(plan, root, runner="dask", workers=2, return_state=True)
        summary = state.result()
        assert [m.ok for m in summary.methods] == [True, True], summary.methods
        assert all(m.registration is not None for m in summary.methods)

        spans = train_spans(state.state_details.flow_run_id)
        assert sorted(spans) == ["train tiny-sentiment/full", "train tiny-sentiment/lora"]
        (a0, a1), (b0, b1) = sorted(spans.values())
        assert b0 < a1, f"the train steps did not overlap: {spans}"
        print(f"train steps overlapped {(min(a1, b1) - b0).total_seconds():.1f} s: {spans}")

        again = milestone(plan, root, runner="dask", workers=2)
        assert [sorted(m.reused) for m in again.methods] == [["evaluate", "register", "train"]] * 2
    finally:
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
