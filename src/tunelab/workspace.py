"""Where a run writes: everything lives under one workspace directory.

The workspace is the current directory unless ``--workdir`` or ``TUNELAB_WORKDIR``
says otherwise. Nothing here creates folders at import time.

One writer at a time: whatever writes to a workspace (a pipeline run, `tunelab train`,
`tunelab data prepare`) holds :meth:`Workspace.lock` while it does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ENV_VAR = "TUNELAB_WORKDIR"
LOCK_TIMEOUT_ENV = "TUNELAB_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 3600.0  # longer than a whole milestone run on CPU

log = logging.getLogger(__name__)

# Locks this process holds, by path, with how deep they are nested: the flows a command
# starts, and their tasks in other threads, enter the same lock again.
_held: dict[str, list] = {}
_held_guard = threading.Lock()


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, workdir: str | os.PathLike | None = None) -> Workspace:
        """Pick the workspace: explicit argument, then $TUNELAB_WORKDIR, then the cwd."""
        chosen = workdir or os.environ.get(ENV_VAR) or os.getcwd()
        return cls(Path(chosen).expanduser().resolve())

    @property
    def data_dir(self) -> Path:
        """DVC-tracked validated splits, one folder per dataset."""
        return self.root / "data"

    @property
    def data_dvc(self) -> Path:
        return self.root / "data.dvc"

    @property
    def default_dvc_remote(self) -> Path:
        """The local folder used as DVC remote unless the config names another."""
        return self.root / "dvc-remote"

    @property
    def versions_dir(self) -> Path:
        """One record per dataset version: files, hashes, validation results."""
        return self.root / "data-versions"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def gx_dir(self) -> Path:
        """Great Expectations file context; Data Docs under uncommitted/data_docs."""
        return self.root / "gx"

    @property
    def mlruns_dir(self) -> Path:
        return self.root / "mlruns"

    @property
    def prefect_results_dir(self) -> Path:
        return self.root / ".prefect-results"

    @property
    def lock_path(self) -> Path:
        return self.root / ".tunelab" / "workspace.lock"

    @property
    def lock_owner_path(self) -> Path:
        """Who holds the lock (pid, since when), for the message of a waiter."""
        return self.root / ".tunelab" / "workspace.lock.json"

    def ensure(self) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    @contextlib.contextmanager
    def lock(
        self, timeout_s: float | None = None, notify: Callable[[str], None] | None = None
    ) -> Iterator[Workspace]:
        """Hold the workspace for one writer; another process waits up to ``timeout_s``
        (default $TUNELAB_LOCK_TIMEOUT, else an hour), then WorkspaceBusyError.

        Re-entrant within a process. The operating system releases the lock when its
        holder exits, even when it is killed, so a stale lock never blocks a run.
        """
        key = str(self.lock_path)
        with _held_guard:
            if key in _held:
                _held[key][1] += 1
                held = _held[key]
            else:
                held = None
        if held is not None:
            try:
                yield self
            finally:
                with _held_guard:
                    held[1] -= 1
            return
        file_lock = self._acquire(lock_timeout(timeout_s), notify or log.warning)
        with _held_guard:
            _held[key] = [file_lock, 1]
        try:
            yield self
        finally:
            with _held_guard:
                # A nested holder in another thread may still be inside: release last.
                _held[key][1] -= 1
                last = _held[key][1] <= 0
                if last:
                    del _held[key]
            if last:
                self.lock_owner_path.unlink(missing_ok=True)
                file_lock.release()

    def _acquire(self, timeout_s: float, notify: Callable[[str], None]):
        from filelock import FileLock, Timeout

        from tunelab.errors import WorkspaceBusyError
        from tunelab.files import write_json_atomic

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        file_lock = FileLock(self.lock_path, thread_local=False)
        started = time.monotonic()
        try:
            file_lock.acquire(timeout=0)
        except Timeout:
            notify(
                f"{self.holder()} holds the workspace {self.root}; waiting up to "
                f"{timeout_s:g} s for it to finish..."
            )
            try:
                file_lock.acquire(timeout=timeout_s)
            except Timeout:
                raise WorkspaceBusyError(
                    f"{self.holder()} still holds the workspace {self.root} after "
                    f"{time.monotonic() - started:.0f} s of waiting. Nothing was written. "
                    f"Let it finish and run again, wait longer with --lock-timeout "
                    f"(or ${LOCK_TIMEOUT_ENV}), or use another workspace (--workdir)."
                ) from None
        try:
            # No command line: it may carry credentials (--set ...tracking_uri=...).
            since = datetime.now(UTC).isoformat(timespec="seconds")
            write_json_atomic(self.lock_owner_path, {"pid": os.getpid(), "since": since})
        except BaseException:
            file_lock.release()
            raise
        return file_lock

    def holder(self) -> str:
        """The holder of the lock, in words, from its owner record."""
        try:
            owner = json.loads(self.lock_owner_path.read_text())
            return f"another tunelab run (pid {owner['pid']}, since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another tunelab run"


def lock_timeout(timeout_s: float | None = None) -> float:
    """The lock timeout in seconds: the argument, else $TUNELAB_LOCK_TIMEOUT, else an hour."""
    if timeout_s is not None:
        return float(timeout_s)
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        return float(raw)
    except ValueError:
        from tunelab.errors import ConfigError

        raise ConfigError(
            f"${LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds. Set it to e.g. 600."
        ) from None
