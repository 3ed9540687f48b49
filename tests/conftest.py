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


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace; TUNELAB_WORKDIR points at it so nothing lands in the repo."""
    from tunelab.workspace import Workspace

    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.setenv("TUNELAB_WORKDIR", str(root))
    return Workspace(root)
