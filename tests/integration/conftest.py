from __future__ import annotations

import pytest
from services import MlflowServer


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (sqlite) for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "mlflow-server-root")
    server.root.mkdir()
    server.start()
    yield server
    server.stop()
