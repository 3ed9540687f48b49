"""Flow `scheduled-retraining`: retrain when the data changed, through the same gate.

For each dataset of the config (milestone format, usually one dataset and the method(s)
that serve it): ingest and split the source, compute the data version it would get, and
compare it with the data version of each registered model's champion. Unchanged: record
"skipped: data unchanged (version ...)" as an artifact and end Completed. Changed (or no
champion yet): validate (the gate), retrain, evaluate, register, promote only through
the promotion gate, and write a review.
"""

from __future__ import annotations

import time
from dataclasses import replace

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.data import io_retries, prepare_data
from flows.milestone import champions_of, finish, run_datasets, write_review
from tunelab.pipeline import plan as plan_mod
from tunelab import registry, tracking
from tunelab.workspace import Workspace

DECISION_KEY = "retraining-decision"


@task(name="candidate-version", cache_policy=NO_CACHE, **io_retries)
def candidate_version(cfg) -> str:
    """The version id the source's data would get now (nothing is written)."""
    from tunelab.data import prepare, versioning

    frames = prepare.split(prepare.ingest(cfg), cfg)
    return versioning.candidate_version(cfg.data.name, frames)


@flow(name="scheduled-retraining")  # log_prints off: see flows/data.py
def scheduled_retraining(config: str = "configs/retrain.yaml", workdir: str | None = None) -> dict:
    started = time.perf_counter()
    workspace = Workspace.resolve(workdir).ensure()
    plan = plan_mod.load_plan(config)
    target = tracking.setup(workspace)
    changed, lines = [], []
    for dataset in plan.datasets:
        cfgs = [m.load() for m in dataset.methods]
        candidate = candidate_version(cfgs[0])
        names = sorted({registry.model_name(c) for c in cfgs})
        served = {name: registry.champion_data_version(target, name) for name in names}
        if served and all(v == candidate for v in served.values()):
            lines.append(f"- `{dataset.name}`: skipped: data unchanged (version {candidate})")
        else:
            changed.append(dataset)
            was = ", ".join(f"{n}: {v or 'no champion'}" for n, v in served.items())
            lines.append(
                f"- `{dataset.name}`: data version {candidate} differs from the champions' "
                f"({was}): retraining"
            )
    message = "\n".join(lines)
    get_run_logger().info(message)
    create_markdown_artifact(
        key=DECISION_KEY,
        markdown=f"# Scheduled retraining\n\n{message}\n",
        description="Retrain or skip, per dataset",
    )
    if not changed:
        return {"retrained": [], "skipped": [d.name for d in plan.datasets], "decision": message}
    subset = replace(plan, datasets=changed)
    data_rows = prepare_data(subset.data_configs(), str(workspace.root))
    versions = {row["dataset"]: row["version"] for row in data_rows}
    entries, parents = run_datasets(subset, workspace, versions, target, False, "retraining")
    champions = champions_of(entries, target)
    files = write_review(
        workspace, data_rows, entries, champions, parents, target, f"{plan.title} (retraining)"
    )
    summary = finish(subset, entries, files, champions, started)
    summary.update(
        retrained=[d.name for d in changed],
        skipped=[d.name for d in plan.datasets if d not in changed],
        decision=message,
    )
    return summary
