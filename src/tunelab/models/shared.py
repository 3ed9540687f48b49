"""The team's copies of models in the team store ($TUNELAB_STORE, tunelab.objectstore):
built aliases and hub snapshots, so a worker neither converts again nor needs the hub.

    <store>/models/<alias>/<revision>/       a built alias (its marker file last)
    <store>/models/hub/<org>/<name>/<commit>/  a hub snapshot (config.json last)
    <store>/models/hub/<org>/<name>/refs/<revision>  the commit a branch or tag was

The copies save time and hub access, nothing more: a store that does not answer is
reported and the model is built or downloaded as without one. A hub id whose hub cannot
be reached resolves to the commit the team last saw for that revision, with a warning:
the run is keyed by that commit (tunelab.runs.fingerprint), never by the branch name.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tunelab.errors import StoreError
from tunelab.objectstore import ObjectStore, configured

log = logging.getLogger(__name__)

COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Hub snapshots this process has seen in the store: checked once, not at every resolve.
_SHARED: set[str] = set()


def fetch_alias(name: str, revision: str, target: Path, marker: str) -> bool:
    """The built alias from the store into ``target``; False without a copy there."""
    store = configured()
    if store is None:
        return False
    try:
        return store.fetch_whole(store.model_url(name, revision), target, needed=marker)
    except (StoreError, OSError) as exc:
        log.warning("Building %s here: the team's copy could not be read (%s)", name, exc)
        return False


def share_alias(name: str, revision: str, folder: Path, marker: str) -> None:
    """Send a built alias to the store (only what it lacks from this folder)."""
    store = configured()
    if store is None:
        return
    try:
        store.publish(folder, store.model_url(name, revision), last=(marker,))
    except StoreError as exc:
        log.warning("%s was built here but not shared with the team: %s", name, exc)


def share_snapshot(repo_id: str, revision: str | None, snapshot: Path) -> None:
    """Send a downloaded hub snapshot (a folder named after its commit) to the store and
    note which commit ``revision`` was."""
    store = configured()
    if store is None:
        return
    commit = snapshot.name
    url = _snapshot_url(store, repo_id, commit)
    ref = None if revision and COMMIT.match(revision) else _ref_url(store, repo_id, revision)
    try:
        if url not in _SHARED:
            # The HF cache is not ours to write a sync record into: a copy with its
            # config.json (sent last) is complete.
            if not store.exists(f"{url}/config.json"):
                store.publish(snapshot, url, last=("config.json",), record=False)
            _SHARED.add(url)
        if ref is not None and f"{ref}={commit}" not in _SHARED:
            store.write_text(ref, commit)
            _SHARED.add(f"{ref}={commit}")
    except StoreError as exc:
        log.warning("%s was downloaded here but not shared with the team: %s", repo_id, exc)


def fetch_snapshot(repo_id: str, revision: str | None, cache: Path) -> Path | None:
    """The team's copy of a hub snapshot (in ``cache``), for a worker that cannot reach
    the hub; None when the store holds none."""
    store = configured()
    if store is None:
        return None
    try:
        commit = revision if revision and COMMIT.match(revision) else None
        if commit is None:
            commit = store.read_text(_ref_url(store, repo_id, revision))
        if commit is None or not COMMIT.match(commit.strip()):
            return None
        commit = commit.strip()
        target = cache / "hub" / repo_id.replace("/", "--") / commit
        if (target / "config.json").is_file():
            return target
        fetched = store.fetch_whole(_snapshot_url(store, repo_id, commit), target, "config.json")
        return target if fetched else None
    except (StoreError, OSError) as exc:
        log.warning("The team's copy of %s could not be read: %s", repo_id, exc)
        return None


def _snapshot_url(store: ObjectStore, repo_id: str, commit: str) -> str:
    return store.child("models", "hub", repo_id, commit)


def _ref_url(store: ObjectStore, repo_id: str, revision: str | None) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in (revision or "main"))
    return store.child("models", "hub", repo_id, "refs", safe)
