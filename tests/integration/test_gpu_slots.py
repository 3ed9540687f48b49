"""GPU slots under a real Prefect API: with one slot, two training steps that need a GPU
run one after the other even on a parallel task runner; baselines never wait."""

from __future__ import annotations

import time

import pytest

from tunelab import config
from tunelab.pipeline.runner import GPU_LIMIT, GPU_SLOTS_ENV

pytestmark = pytest.mark.integration

HOLD_S = 1.0


def overlap(spans: list[tuple[float, float]]) -> bool:
    (a0, a1), (b0, b1) = sorted(spans)
    return b0 < a1


@pytest.fixture
def one_gpu_slot(prefect_harness, monkeypatch):
    """$TUNELAB_GPU_SLOTS=1 on this CPU machine; the `gpu` limit removed afterwards."""
    from prefect.client.orchestration import get_client

    monkeypatch.setenv(GPU_SLOTS_ENV, "1")
    yield
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(GPU_LIMIT)


def test_one_gpu_slot_runs_training_steps_one_at_a_time(one_gpu_slot):
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.runners import gpu_slot

    @task
    def step(cfg) -> tuple[float, float]:
        with gpu_slot(cfg):
            began = time.monotonic()
            time.sleep(HOLD_S)
            return began, time.monotonic()

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def two_steps(method: str) -> list[tuple[float, float]]:
        cfg = config.load(None, [f"train.method={method}"])
        return [f.result() for f in [step.submit(cfg), step.submit(cfg)]]

    assert not overlap(two_steps("lora"))  # both need the one GPU
    assert overlap(two_steps("baseline"))  # no GPU: they run side by side
