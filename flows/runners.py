"""Prefect task runners by name (thread | dask | ray) and the GPU slot of a training step.

The names, their checks and which steps need a GPU are tunelab's
(tunelab.pipeline.runner); this module only builds the Prefect objects.
"""

from __future__ import annotations

import contextlib

from tunelab.config import RunConfig
from tunelab.pipeline.runner import (
    GPU_LIMIT,
    gpu_slots,
    missing_extra,
    needs_gpu_slot,
    runner_spec,
    worker_threads,
)


def task_runner(kind: str = "thread", address: str | None = None, workers: int = 1):
    """A Prefect task runner: threads here, or a Dask / Ray cluster (``address``, else a
    local one of ``workers`` single-threaded worker processes on loopback)."""
    spec = runner_spec(kind, "runner", address=address, workers=workers)
    workers = spec.workers or 1
    if spec.kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if spec.kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise missing_extra("dask", "prefect-dask") from None
        if spec.address:
            return DaskTaskRunner(address=spec.address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,  # one method per process: torch uses the cores
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": None,
                "env": worker_threads(workers),  # torch's threads: the cores shared out
            },
        )
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise missing_extra("ray", "prefect-ray") from None
    if spec.address:
        return RayTaskRunner(address=spec.address)
    return RayTaskRunner(
        init_kwargs={
            "num_cpus": workers,
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
        }
    )


@contextlib.contextmanager
def shared_api(kind: str, address: str | None = None):
    """Worker processes report to this flow's Prefect API. A temporary local API has no
    URL in the settings the workers receive, so each worker would start its own (seconds
    each, on the machine's busy CPUs): name it while the runner is in use."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if kind == "thread" or PREFECT_API_URL.value():
        yield
        return
    from prefect import get_run_logger
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        url = str(client.api_url)
    if address:
        get_run_logger().warning(
            "The methods run on the cluster at %s but report to this process's temporary "
            "Prefect API (%s), which only this machine can reach. For a remote cluster, "
            "start a Prefect server (`tunelab services start`) and set PREFECT_API_URL.",
            address,
            url,
        )
    with temporary_settings({PREFECT_API_URL: url}):
        yield


def ensure_gpu_limit(slots: int | None = None) -> int:
    """The ``gpu`` global concurrency limit exists (created with ``slots``, default the GPU
    count here, when missing; an existing one is left as set); returns its slots, 0 when
    there are no GPUs (nothing is created)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    slots = gpu_slots() if slots is None else slots
    if slots <= 0:
        return 0
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(GPU_LIMIT).limit
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):  # another flow created it meanwhile
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots)
            )
    return slots


def gpu_slot(cfg: RunConfig):
    """Inside a training task: hold one slot of ``gpu`` while it trains on a GPU; nothing
    for baselines and CPU-only runs."""
    if not needs_gpu_slot(cfg, gpu_slots()):
        return contextlib.nullcontext()
    from prefect.concurrency.sync import concurrency

    ensure_gpu_limit()  # a worker on a cluster may see GPUs the flow's machine lacks
    return concurrency(GPU_LIMIT, occupy=1, strict=True)
