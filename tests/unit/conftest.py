"""Fixtures several unit test files share."""

from __future__ import annotations

import pytest


@pytest.fixture
def memory_store(monkeypatch):
    """fsspec's in-memory file system, empty, as a team store's back end; no team store
    and no S3 endpoint unless a test sets them."""
    import fsspec

    from tunelab import objectstore

    for name in (objectstore.STORE_ENV, objectstore.ENDPOINT_ENV):
        monkeypatch.delenv(name, raising=False)
    memory = fsspec.filesystem("memory")

    def empty() -> None:
        memory.store.clear()
        memory.pseudo_dirs.clear()
        memory.pseudo_dirs.append("")

    empty()
    yield memory
    empty()
