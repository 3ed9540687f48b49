"""A flow that loses its Prefect API stops before its next side effect; re-run once the
server is back, it completes from the cache and registers nothing twice. A real `prefect
server` on 127.0.0.1, killed by PID from within the first register step."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from services import free_port

from tunelab.lifecycle import registry, tracking

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NAME = "tiny-sentiment-classifier"
ROWS = "data.max_rows=300"


def two_method_plan(folder: Path) -> Path:
    """Two TF-IDF runs (seconds each) that each register a version of one model."""
    tfidf = str(CONFIGS / "tiny" / "sentiment-tfidf.yaml")
    plan = {
        "title": "Orchestrator loss",
        "datasets": {
            "tiny-sentiment": {
                "tfidf": {"config": tfidf, "set": [ROWS]},
                "tfidf-small": {"config": tfidf, "set": [ROWS, "train.learning_rate=1.0e-4"]},
            }
        },
    }
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


@pytest.fixture
def prefect_server(tmp_path):
    """A Prefect server this test can stop and start again on the same port and database."""
    from tunelab import services

    root = tmp_path / "prefect"
    root.mkdir()
    spec = services.prefect_spec(root, port=free_port())
    state = root / ".services"

    class Server:
        api = spec.ui_url + "/api"

        def start(self):
            services.start([spec], state, timeout_s=180)

        def stop(self):
            services.stop(state)

    server = Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def chain(exc: BaseException) -> list[BaseException]:
    found = []
    while exc is not None and exc not in found:
        found.append(exc)
        exc = exc.__cause__ or exc.__context__
    return found


def test_a_flow_that_loses_its_api_stops_and_its_rerun_registers_nothing_twice(
    workspace, tmp_path, prefect_server, monkeypatch
):
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from flows.milestone import milestone
    from tunelab.errors import OrchestratorError
    from tunelab.pipeline import method

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = two_method_plan(tmp_path)
    real_register = method.register_step
    registered = []

    def register_then_lose_the_server(*args, **kwargs):
        done = real_register(*args, **kwargs)
        registered.append(done.version)
        if len(registered) == 1:
            prefect_server.stop()
        return done

    monkeypatch.setattr(method, "register_step", register_then_lose_the_server)
    # One retry: the flow's report of its own end fails fast instead of after a minute.
    settings = {PREFECT_API_URL: prefect_server.api, PREFECT_CLIENT_MAX_RETRIES: 1}
    with temporary_settings(updates=settings), pytest.raises(Exception) as caught:
        milestone(str(plan), str(workspace.root))
    stopped = [e for e in chain(caught.value) if isinstance(e, OrchestratorError)]
    assert stopped, f"the flow did not stop on the lost API: {caught.value!r}"
    # Both methods trained and were scored; registrations follow in plan order, and the
    # flow stopped before the second one and the review: one version, no review written.
    assert "run the register step of tiny-sentiment/tfidf-small" in str(stopped[0])
    assert registered == ["1"]
    target = tracking.setup(workspace)
    assert [v["version"] for v in registry.list_versions(target, NAME)] == ["1"]
    assert not (workspace.reports_dir / "milestone").exists()

    prefect_server.start()
    monkeypatch.setattr(method, "register_step", real_register)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api}):
        summary = milestone(str(plan), str(workspace.root))
    first, second = summary.methods
    assert first.reused == ["train", "evaluate", "register"], first
    # Its train and evaluate steps finished before the API was lost: reused, not redone.
    assert second.ok and second.reused == ["train", "evaluate"], second
    versions = registry.list_versions(tracking.setup(workspace), NAME)
    assert sorted(v["version"] for v in versions) == ["1", "2"]
    runs = [registry.version_info(target, NAME, v["version"]).run_id for v in versions]
    assert len(set(runs)) == 2, "a run was registered twice"
    assert Path(summary.report).is_file()
