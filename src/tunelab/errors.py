"""Errors a user can cause. The CLI prints their message without a traceback.

Every message says what was wrong, where (file, column, row, key) and what to do.
Each class carries the exit code the CLI ends with (README, "Exit codes"): scripts and
schedulers tell a failed data gate from a failed training or an unreachable server.
"""

from __future__ import annotations


class TunelabError(Exception):
    """Base class for errors caused by input, configuration or environment."""

    exit_code = 2  # the input or the request was wrong; click's usage errors use 2 too


class ConfigError(TunelabError):
    """A config file or override is invalid."""

    exit_code = 2


class DataSourceError(TunelabError):
    """A dataset could not be read: missing, unreadable, corrupt or unreachable."""


class DataSchemaError(TunelabError):
    """Rows could not be mapped to the canonical schema of the task."""


class SplitError(TunelabError):
    """The data cannot be split as configured."""


class DataValidationError(TunelabError):
    """The validation gate failed; nothing downstream runs."""

    exit_code = 3

    def __init__(self, message: str, failures: list | None = None, docs_path: str | None = None):
        super().__init__(message)
        self.failures = failures or []
        self.docs_path = docs_path


class VersioningError(TunelabError):
    """A DVC operation failed or a requested data version does not exist."""


class SourceUnreachableError(DataSourceError):
    """A remote source (the hub) could not be reached; worth retrying."""


class ModelError(TunelabError):
    """A model reference cannot be resolved, built, downloaded or loaded."""


class TrainingError(TunelabError):
    """Training cannot start or stopped: bad method/task/settings, divergence, out of memory."""

    exit_code = 4


class EvaluationError(TunelabError):
    """A run cannot be evaluated: no predictions, no test split, a non-finite metric."""

    exit_code = 5


class TrackingError(TunelabError):
    """The MLflow tracking server or store cannot be reached or refused a write."""

    exit_code = 6


class RegistryError(TunelabError):
    """A registry operation was refused: unknown model or alias, unevaluated run, bad gate."""


class PipelineError(TunelabError):
    """A pipeline finished with required steps failed (the review says which and why)."""

    exit_code = 7


class WorkspaceBusyError(TunelabError):
    """Another run held the workspace for longer than the lock timeout."""

    exit_code = 8


class OrchestratorError(TunelabError):
    """A flow lost its Prefect API; it stopped before its next side effect."""

    exit_code = 9


class FileSystemError(TunelabError):
    """A file or folder could not be read or written: permissions, a full or read-only
    disk, a missing folder."""

    exit_code = 10

    @classmethod
    def from_os_error(cls, exc: OSError) -> FileSystemError | None:
        """The user-facing error for an OSError about a path; None for other OSErrors
        (a network failure is not a file system problem)."""
        import errno

        about_files = isinstance(exc, PermissionError | FileNotFoundError | IsADirectoryError)
        about_files |= isinstance(exc, NotADirectoryError | FileExistsError)
        about_files |= exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
        if not about_files:
            return None
        where = exc.filename or "a file"
        fix = {
            errno.EACCES: "give this user write access, or choose another --workdir",
            errno.EPERM: "give this user write access, or choose another --workdir",
            errno.ENOSPC: "free disk space, or choose a --workdir on another disk",
            errno.EDQUOT: "free space in your quota, or choose another --workdir",
            errno.EROFS: "choose a --workdir on a writable disk",
        }.get(exc.errno, "check that the path exists and is the kind of entry expected")
        return cls(f"Cannot use {where}: {exc.strerror or exc}. To fix it, {fix}.")


class StoreError(TunelabError):
    """The team's object store ($TUNELAB_STORE) did not answer or refused a read or write."""

    exit_code = 11
