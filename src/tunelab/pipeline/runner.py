"""Where the methods of a plan run (a Prefect task runner) and which steps hold a GPU slot.

The names and their checks live here, in plain Python: the plan's ``runner:`` key and
``tunelab run --runner/--address/--workers`` both end as a :class:`RunnerSpec`; the flows
turn it into a Prefect task runner (flows/runners.py).

```yaml
runner: dask                          # thread (default) | dask | ray
runner: {kind: dask, workers: 2}      # a local cluster of 2 worker processes
runner: {kind: dask, address: tcp://10.0.0.5:8786}   # an existing cluster
```

GPU slots: a training step of a method that trains a torch model takes one slot of the
Prefect global concurrency limit ``gpu`` (as many slots as GPUs), so that parallel
methods never share a device; baselines and CPU-only runs do not wait for one.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace
from typing import Any, Literal

from tunelab.config import RunConfig
from tunelab.errors import ConfigError

RunnerChoice = Literal["thread", "dask", "ray"]  # a flow parameter: the run form's choices
RUNNERS = ("thread", "dask", "ray")
RUNNER_KEYS = {"kind", "address", "workers"}
GPU_LIMIT = "gpu"  # the Prefect global concurrency limit training steps take a slot of
GPU_SLOTS_ENV = "TUNELAB_GPU_SLOTS"  # slots of `gpu`, overriding the detected GPU count
EXTRAS = {"ray": "pip install 'tunelab[ray]'", "dask": "pip install prefect-dask"}


@dataclass(frozen=True)
class RunnerSpec:
    """A Prefect task runner by name: thread (in the flow's process), dask or ray."""

    kind: str = "thread"
    address: str | None = None  # an existing cluster; None: a local one (dask, ray)
    workers: int | None = None  # None: see resolve()

    def resolve(self, concurrency: int, methods: int) -> RunnerSpec:
        """``workers`` filled in: the plan's concurrency for threads; for a local cluster,
        the CPU count, at most one per method that can run at once (at least 1)."""
        if self.workers is not None:
            return self
        if self.kind == "thread" or self.address:
            return replace(self, workers=concurrency)
        return replace(self, workers=max(1, min(os.cpu_count() or 1, methods)))

    def arguments(self) -> tuple[str, str | None, int]:
        """(kind, address, workers) for flows.runners.task_runner."""
        return self.kind, self.address, self.workers or 1

    def parameters(self) -> dict[str, Any]:
        """The milestone and retraining flows' parameters that choose this runner."""
        return {"runner": self.kind, "address": self.address, "workers": self.workers}

    def describe(self) -> str:
        if self.kind == "thread":
            return f"thread pool, {self.workers} at a time"
        where = self.address or f"local cluster of {self.workers} worker processes"
        return f"{self.kind} ({where})"


def runner_spec(
    raw: Any, where: str, address: str | None = None, workers: int | None = None
) -> RunnerSpec:
    """Check a runner: a name, or a mapping {kind, address, workers}; ``address`` and
    ``workers`` given here (the CLI's) win over the mapping's."""
    if raw is None:
        raw = {}
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: runner must be one of {', '.join(RUNNERS)} or a mapping "
            f"{{kind, address, workers}}, got {type(raw).__name__}."
        )
    unknown = sorted(set(raw) - RUNNER_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: runner: unknown keys {unknown}; allowed: {sorted(RUNNER_KEYS)}."
        )
    kind = str(raw.get("kind", "thread")).lower()
    if kind not in RUNNERS:
        raise ConfigError(
            f"{where}: runner kind '{raw.get('kind')}' is not one of {', '.join(RUNNERS)}. "
            "thread runs the methods in the flow's process; dask and ray on a cluster."
        )
    address = address or raw.get("address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ConfigError(f"{where}: runner address must be a URL, e.g. tcp://127.0.0.1:8786.")
    if address and kind == "thread":
        raise ConfigError(
            f"{where}: runner address '{address}' is for a dask or ray cluster; the thread "
            "runner has none. Set the kind to dask or ray, or drop the address."
        )
    workers = workers if workers is not None else raw.get("workers")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ConfigError(f"{where}: runner workers must be a whole number >= 1, got {workers!r}.")
    return RunnerSpec(kind, address.strip() if address else None, workers)


def worker_threads(workers: int) -> dict[str, str]:
    """The thread settings of each local worker process: the machine's cores shared out.
    Dask's nanny sets OMP_NUM_THREADS=1 (and MKL/OpenBLAS) in every worker, which would
    leave torch one thread per method however many cores there are."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    return {
        name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }


def missing_extra(kind: str, module: str) -> ConfigError:
    """The error for a runner whose Prefect integration is not installed."""
    return ConfigError(
        f"The {kind} runner needs the {module} package, which is not installed. "
        f"Install it with `{EXTRAS[kind]}`, or run with --runner thread."
    )


def gpu_slots() -> int:
    """Slots of the ``gpu`` limit: $TUNELAB_GPU_SLOTS when set (also on a machine without
    CUDA, e.g. to test), else the number of CUDA devices here."""
    forced = os.environ.get(GPU_SLOTS_ENV, "").strip()
    if forced:
        try:
            slots = int(forced)
        except ValueError:
            slots = -1
        if slots < 0:
            raise ConfigError(
                f"${GPU_SLOTS_ENV} must be a whole number >= 0 (0 turns GPU slots off), "
                f"got {forced!r}."
            )
        return slots
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def needs_gpu_slot(cfg: RunConfig, slots: int) -> bool:
    """Whether this run's training step takes a GPU slot: it trains a torch model (not a
    baseline) on a GPU (train.device is not cpu) and there are slots (GPUs) at all."""
    return slots > 0 and cfg.train.method != "baseline" and cfg.train.device != "cpu"


def chosen_runner(
    plan_runner: RunnerSpec,
    kind: str | None,
    address: str | None,
    workers: int | None,
    where: str = "tunelab run",
) -> RunnerSpec:
    """The plan's runner with what the command line (or a flow run's parameters) chose
    over it; a new kind starts from that kind's defaults, not the plan's address."""
    spec = plan_runner
    if kind is not None or address is not None or workers is not None:
        base = plan_runner
        if kind is not None and kind.lower() != plan_runner.kind:
            base = RunnerSpec(kind.lower())
        raw = {"kind": base.kind, "address": base.address, "workers": base.workers}
        spec = runner_spec({k: v for k, v in raw.items() if v is not None}, where, address, workers)
    module = {"dask": "prefect_dask", "ray": "prefect_ray"}.get(spec.kind)
    if module and importlib.util.find_spec(module) is None:
        raise missing_extra(spec.kind, module.replace("_", "-"))
    return spec
