"""Run folders between workers: a step may run on another machine than the one before it.

With a team store ($TUNELAB_STORE, tunelab.objectstore) each step publishes the run
folder it wrote (train: the model and its record; evaluate: the scorecard) and a step
that needs a run folder its workspace lacks fetches it. A run folder's name is its
fingerprint, so the copy a worker fetches is the one any worker would have trained.
Without a store, run folders are the paths the steps return, as before.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.config import RunConfig
from tunelab.errors import PipelineError
from tunelab.objectstore import configured
from tunelab.pipeline.records import MethodRecord
from tunelab.runs import RESULT_FILE, SCORECARD_FILE
from tunelab.workspace import Workspace

# Written last: a folder in the store with its record is complete up to that step.
RECORDS = (RESULT_FILE, SCORECARD_FILE)


def publish(run_dir: str | Path) -> None:
    """Send what a step wrote in the run folder to the team store (nothing without one)."""
    store = configured()
    if store is None:
        return
    folder = Path(run_dir)
    store.publish(folder, store.run_url(folder.parent.name, folder.name), last=RECORDS)


def local(run_dir: str, workspace: Workspace, records_only: bool = False) -> str:
    """The run folder in this workspace, fetched from the team store where this workspace
    lacks it or holds less of it (a step that ran on another worker). Without a store:
    ``run_dir`` as it is. With ``records_only``, only its top-level files (records,
    plots, predictions), not the model it saved."""
    store = configured()
    if store is None:
        return run_dir
    source = Path(run_dir)
    folder = workspace.root / "runs" / source.parent.name / source.name
    url = store.run_url(source.parent.name, source.name)
    fetched = store.fetch(url, folder, needed=RESULT_FILE, top_level=records_only)
    if not fetched and not (folder / RESULT_FILE).is_file():
        raise PipelineError(
            f"The run folder {source.parent.name}/{source.name} is neither in this workspace "
            f"({workspace.root}) nor in the team store ({url}). Run the pipeline again with "
            "refresh to train it anew."
        )
    return str(folder)


def localize(records: list[MethodRecord], workspace: Workspace) -> None:
    """Point each method record at its run folder in this workspace, fetched from the team
    store when the steps ran elsewhere or came from the cache: what the review reads (its
    records, plots and predictions), not the model."""
    for record in records:
        if record.run_dir:
            record.run_dir = local(record.run_dir, workspace, records_only=True)


def local_config(cfg: RunConfig, workspace: Workspace) -> RunConfig:
    """The run config with the run folders it starts from (a DPO or GRPO init_from, a
    GRPO reward model) in this workspace."""
    if configured() is None:
        return cfg
    train = cfg.train
    updates = {}
    for section in ("dpo", "grpo"):
        settings = getattr(train, section)
        if settings.init_from and _is_run(settings.init_from):
            start = local(settings.init_from, workspace)
            updates[section] = settings.model_copy(update={"init_from": start})
    grpo = updates.get("grpo", train.grpo)
    rewards = [
        r.model_copy(update={"model": local(r.model, workspace)})
        if r.kind == "model" and r.model and _is_run(r.model)
        else r
        for r in grpo.rewards
    ]
    if rewards != list(grpo.rewards):
        updates["grpo"] = grpo.model_copy(update={"rewards": rewards})
    if not updates:
        return cfg
    return cfg.model_copy(update={"train": train.model_copy(update=updates)})


def _is_run(reference: str) -> bool:
    """A run folder of a pipeline (runs/<dataset>/<run>), not a hub id or registered model."""
    path = Path(reference)
    return path.is_absolute() and len(path.parts) >= 3 and path.parent.parent.name == "runs"
