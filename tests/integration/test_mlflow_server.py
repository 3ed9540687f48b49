"""The same registry story through a real `mlflow server`, then the server goes down."""

from __future__ import annotations

import os

import pytest
from mlflow import MlflowClient
from registry_scenario import NAME, registry_target, run_registry_story, tfidf
from services import MlflowServer

from tunelab.errors import TrackingError
from tunelab.lifecycle import registry
from tunelab.pipeline import uptodate
from tunelab.pipeline.method import train_and_register

pytestmark = pytest.mark.integration


@pytest.fixture
def server_store(workspace, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    yield workspace
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_registry_story_through_a_real_server_and_a_server_outage(server_store, mlflow_server):
    run_registry_story(server_store)
    # Everything went to the server: its artifact store holds the models, the workspace
    # store was never created.
    assert any((mlflow_server.root / "artifacts").rglob("MLmodel"))
    assert not (server_store.mlruns_dir / "mlflow.db").exists()

    target = registry_target(server_store)
    aliases_before = registry.aliases(target, NAME)
    versions_before = registry.list_versions(target, NAME)
    # What `tunelab run` compares to tell that nothing changed: the aliases the server
    # reports over REST; an alias moved by anyone changes it, a stopped server has none.
    state = uptodate.store_state(mlflow_server.url, [NAME])
    assert state is not None and state == uptodate.store_state(mlflow_server.url, [NAME])
    MlflowClient(mlflow_server.url).set_registered_model_alias(NAME, "reviewed", "1")
    assert uptodate.store_state(mlflow_server.url, [NAME]) != state
    MlflowClient(mlflow_server.url).delete_registered_model_alias(NAME, "reviewed")
    assert uptodate.store_state(mlflow_server.url, [NAME]) == state

    mlflow_server.stop()
    assert uptodate.store_state(mlflow_server.url, [NAME]) is None
    with pytest.raises(TrackingError, match=f"{mlflow_server.url}.*did not answer"):
        train_and_register(tfidf(), server_store)

    # Back up on the same port and database: nothing was half-registered or moved.
    restarted = MlflowServer(mlflow_server.root, port=mlflow_server.port).start()
    try:
        assert registry.aliases(target, NAME) == aliases_before
        assert registry.list_versions(target, NAME) == versions_before
    finally:
        restarted.stop()
