"""Shared fixtures: offline, quiet, and every test in its own workspace."""

from __future__ import annotations

import os

import pytest

# Offline and quiet before any library is imported by a test module.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TUNELAB_PROGRESS", "0")  # no progress bars in test output


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace; TUNELAB_WORKDIR points at it so nothing lands in the repo."""
    from tunelab.workspace import Workspace

    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.setenv("TUNELAB_WORKDIR", str(root))
    return Workspace(root)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Tiny aliases are built once per test session, never into the user's cache."""
    from tunelab import models

    root = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get(models.CACHE_ENV)
    os.environ[models.CACHE_ENV] = str(root)
    yield root
    if previous is None:
        os.environ.pop(models.CACHE_ENV, None)
    else:
        os.environ[models.CACHE_ENV] = previous


def bundled_splits(name: str, rows: int, seed: int = 13) -> dict:
    """A small, stratified train/validation/test sample of a bundled dataset."""
    from tunelab import config
    from tunelab.data import sources, splits

    task = sources.BUNDLED[name]["task"]
    cfg = config.load(
        None,
        [
            f"data.name={name}",
            f"data.task={task}",
            f"data.source=bundled:{name}",
            f"data.max_rows={rows}",
            f"data.seed={seed}",
        ],
    )
    raw = sources.ingest(cfg.data)
    return splits.make_splits(raw.frames, cfg.data)


@pytest.fixture(scope="session")
def sentiment_splits():
    return bundled_splits("sentiment", 120)


@pytest.fixture(scope="session")
def instruction_splits():
    return bundled_splits("instructions", 60)


@pytest.fixture(scope="session")
def preference_splits():
    return bundled_splits("preferences", 60)


@pytest.fixture(scope="session")
def bundled():
    """The bundled_splits factory, for tests that need other sizes."""
    return bundled_splits
