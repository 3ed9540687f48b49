"""What the flows ask at run time: this flow run's id and UI link, where persisted task
results (the step cache) live, whether the Prefect API and the team store still answer; the
workspace lock, its waiting message in the flow run's log."""

from __future__ import annotations

from tunelab import objectstore
from tunelab.config import digest
from tunelab.errors import OrchestratorError
from tunelab.workspace import Workspace

HEALTH_TIMEOUT_S = 10.0


def flow_run_info() -> tuple[str | None, str | None]:
    """The current flow run's id and its UI URL (None without a UI to link to, e.g. a
    temporary local API)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    url = flow_run.ui_url if run_id else None
    return run_id, url if url and url.startswith("http") else None


def result_storage(workspace: Workspace):
    """Where persisted results (the step cache) live, as a saved Prefect block: the team
    store's prefect-results/ folder when $TUNELAB_STORE is set (every worker reuses what
    any worker computed), else the workspace."""
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    store = objectstore.configured()
    if store is not None:
        store.check("keep the step cache")
        block = RemoteFileSystem(basepath=store.results_url)
        block.save(f"tunelab-results-{digest(store.results_url, length=12)}", overwrite=True)
        return block
    folder = workspace.prefect_results_dir
    folder.mkdir(parents=True, exist_ok=True)
    block = LocalFileSystem(basepath=str(folder))
    block.save(f"tunelab-results-{digest(str(folder), length=12)}", overwrite=True)
    return block


def require_store(before: str) -> None:
    """StoreError unless the team store answers (when one is set): a step that needs it
    fails at once, naming the endpoint, instead of half-way."""
    store = objectstore.configured()
    if store is not None:
        store.check(before)


def require_api(before: str) -> None:
    """OrchestratorError unless the Prefect API answers: a flow that lost it stops before
    its next side effect (``before``) instead of going on unrecorded."""
    from prefect.client.orchestration import get_client

    # Its own client (other settings than the run's): a refused connection fails at once
    # instead of being retried for a minute, as the run's client does once connected.
    with get_client(sync_client=True, httpx_settings={"timeout": HEALTH_TIMEOUT_S}) as client:
        error = client.api_healthcheck()
        url = client.api_url
    if error is not None:
        raise OrchestratorError(
            f"The Prefect API at {url} stopped answering ({type(error).__name__}: {error}), so "
            f"the flow stopped before it would {before}. Start the Prefect server again and "
            "re-run the same command: finished steps are reused from the cache and nothing is "
            "registered twice."
        )


def workspace_lock(workspace: Workspace):
    """The workspace held for this flow run; a second writer waits, saying so in its log."""
    from prefect import get_run_logger

    return workspace.lock(notify=get_run_logger().warning)
