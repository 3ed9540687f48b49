"""Where a run writes: everything lives under one workspace directory.

The workspace is the current directory unless ``--workdir`` or ``TUNELAB_WORKDIR``
says otherwise. Nothing here creates folders at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "TUNELAB_WORKDIR"


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

    def ensure(self) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        return self
