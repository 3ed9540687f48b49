"""What the flows ask Prefect at run time: this flow run's id and UI link, and where
persisted task results (the step cache) live."""

from __future__ import annotations

from tunelab.config import digest
from tunelab.workspace import Workspace


def flow_run_info() -> tuple[str | None, str | None]:
    """The current flow run's id and its UI URL (None without a UI to link to, e.g. a
    temporary local API)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    url = flow_run.ui_url if run_id else None
    return run_id, url if url and url.startswith("http") else None


def result_storage(workspace: Workspace):
    """Persisted results (the cache) live in the workspace, in a saved Prefect block."""
    from prefect.filesystems import LocalFileSystem

    folder = workspace.prefect_results_dir
    folder.mkdir(parents=True, exist_ok=True)
    block = LocalFileSystem(basepath=str(folder))
    block.save(f"tunelab-results-{digest(str(folder), length=12)}", overwrite=True)
    return block
