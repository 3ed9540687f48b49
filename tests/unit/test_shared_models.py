"""Hub snapshots through the team store (tunelab.models.shared): a worker that downloads a
hub model shares it and notes which commit the revision was; a worker that cannot reach
the hub gets that commit from the store, with a warning, or the usual error when the team
has no copy. On fsspec's in-memory file system; the hub is a stand-in for
huggingface_hub.snapshot_download (these machines have no hub)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import huggingface_hub
import pytest

from tunelab import objectstore
from tunelab.errors import ModelError
from tunelab.models import resolution, shared

STORE = "memory://team"
REPO_ID = "org/tiny-decoder"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def team(memory_store, monkeypatch):
    monkeypatch.setenv(objectstore.STORE_ENV, STORE)
    monkeypatch.setattr(shared, "_SHARED", set())


def hub_snapshot(root: Path, commit: str = COMMIT) -> Path:
    """A snapshot folder as the Hugging Face cache holds one: named after its commit."""
    folder = root / "snapshots" / commit
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "tokenizer.json").write_text("{}")
    return folder


def online(monkeypatch, snapshot: Path) -> None:
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(snapshot))


def offline(monkeypatch) -> None:
    def unreachable(*args, **kwargs):
        raise OSError("the hub cannot be reached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)


def test_a_downloaded_snapshot_is_shared_with_the_commit_of_its_revision(
    monkeypatch, tmp_path, memory_store
):
    snapshot = hub_snapshot(tmp_path / "hf")
    online(monkeypatch, snapshot)
    model = resolution.resolve(REPO_ID)
    assert model.path == snapshot and model.revision == COMMIT
    base = f"/team/models/hub/{REPO_ID}"
    assert memory_store.cat_file(f"{base}/{COMMIT}/model.safetensors") == b"weights"
    assert memory_store.cat_file(f"{base}/refs/main") == COMMIT.encode()
    # The Hugging Face cache is left as it was: no record of ours inside.
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_a_worker_without_the_hub_gets_the_teams_commit(monkeypatch, tmp_path, caplog):
    online(monkeypatch, hub_snapshot(tmp_path / "hf"))
    resolution.resolve(REPO_ID, revision="v1")
    offline(monkeypatch)
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "worker-cache"))
    with caplog.at_level(logging.WARNING):
        model = resolution.resolve(REPO_ID, revision="v1")
    assert model.revision == COMMIT and model.family == "decoder"
    assert model.path.is_relative_to(tmp_path / "worker-cache")
    assert (model.path / "model.safetensors").read_bytes() == b"weights"
    assert "team store's copy of v1, commit " + COMMIT in caplog.text
    # The fingerprint pins the commit, not the branch: the same as with the hub.
    assert resolution.weights_id(REPO_ID, "v1") == f"hub:{COMMIT}"


def test_a_commit_is_fetched_without_a_ref(monkeypatch, tmp_path, memory_store):
    online(monkeypatch, hub_snapshot(tmp_path / "hf"))
    resolution.resolve(REPO_ID, revision=COMMIT)
    assert not memory_store.exists(f"/team/models/hub/{REPO_ID}/refs")
    offline(monkeypatch)
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "worker-cache"))
    assert resolution.resolve(REPO_ID, revision=COMMIT).revision == COMMIT


def test_without_a_team_copy_the_hub_error_stands(monkeypatch, tmp_path):
    offline(monkeypatch)
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "worker-cache"))
    with pytest.raises(ModelError, match="Could not get model 'org/tiny-decoder'"):
        resolution.resolve(REPO_ID, revision="v2")
    assert not (tmp_path / "worker-cache" / "hub").exists()
