"""Errors a user can cause. The CLI prints their message without a traceback.

Every message says what was wrong, where (file, column, row, key) and what to do.
"""


class TunelabError(Exception):
    """Base class for errors caused by input, configuration or environment."""


class ConfigError(TunelabError):
    """A config file or override is invalid."""


class DataSourceError(TunelabError):
    """A dataset could not be read: missing, unreadable, corrupt or unreachable."""


class DataSchemaError(TunelabError):
    """Rows could not be mapped to the canonical schema of the task."""


class SplitError(TunelabError):
    """The data cannot be split as configured."""


class DataValidationError(TunelabError):
    """The validation gate failed; nothing downstream runs."""

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


class EvaluationError(TunelabError):
    """A run cannot be evaluated: no predictions, no test split, a non-finite metric."""


class TrackingError(TunelabError):
    """The MLflow tracking server or store cannot be reached or refused a write."""


class RegistryError(TunelabError):
    """A registry operation was refused: unknown model or alias, unevaluated run, bad gate."""


class PipelineError(TunelabError):
    """A pipeline finished with required steps failed (the review says which and why)."""
