"""The records a method's steps fill, from the plan to the review: one typed record per
method (`MethodRecord`), what each step returns, and `tunelab train`'s `Outcome`.

Plain dataclasses with no heavy imports: the review, the CLI and the Prefect artifacts
read their attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunelab.redaction import redact

if TYPE_CHECKING:
    from tunelab.lifecycle.gate import Decision
    from tunelab.lifecycle.tracking import TrackedRun
    from tunelab.runs import TrainResult
    from tunelab.scorecard import Scorecard

STEPS = ("train", "evaluate", "register")


@dataclass(frozen=True)
class Trained:
    """What the train step returns (and the cache keeps)."""

    run_dir: str
    seconds: float


@dataclass(frozen=True)
class Evaluated:
    """What the evaluate step returns: the scorecard lies in the run folder."""

    status: str  # the scorecard's: "ok" | "failed"
    error: str | None
    seconds: float


@dataclass
class Registration:
    """What the register step did: the MLflow run, the registered version, the gate."""

    tracked: TrackedRun | None = None
    model_name: str | None = None
    version: str | None = None
    decision: Decision | None = None
    aliases: dict[str, str] | None = None
    # Why the run was not registered (baseline, evaluation failed, registering off).
    not_registered: str | None = None
    seconds: float = 0.0

    @property
    def run_id(self) -> str | None:
        return self.tracked.run_id if self.tracked else None

    @property
    def run_url(self) -> str | None:
        return self.tracked.run_url if self.tracked else None

    @property
    def outcome(self) -> str | None:
        """What happened to the model: the gate's verdict, or that there was none."""
        if self.decision is not None:
            return self.decision.outcome
        if self.model_name:
            return "registered"
        return "not registered" if self.not_registered else None


@dataclass
class MethodRecord:
    """One method of one dataset, from the plan to the review: the one record every
    stage fills and the CLI, the review and the Prefect artifacts read."""

    dataset: str
    method: str  # name in the milestone config: "majority", "lora", ...
    required: bool = True
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None  # "<step>: <what went wrong>"
    run_dir: str | None = None  # run folder; None when training failed
    reused: list[str] = field(default_factory=list)  # steps taken from the cache
    # Seconds spent inside the library per step (0 for a step reused from the cache).
    seconds: dict[str, float] = field(default_factory=dict)
    registration: Registration | None = None
    # The register step (a method.StepCall) of a trained and scored method, left for the
    # flow to run in plan order (method.register_pending); None once run or when not due.
    pending: Any = None

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.method}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def model_version(self) -> str | None:
        """'name vN' of the registered model, None when nothing was registered."""
        reg = self.registration
        if reg is None or not reg.model_name:
            return None
        return f"{reg.model_name} v{reg.version}" if reg.version else reg.model_name

    def fail(self, step: str, error: BaseException | str) -> MethodRecord:
        self.status = "failed"
        detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        # Error text goes to summary.json, the review and Prefect artifacts.
        self.error = f"{step}: {redact(detail)}"
        return self


@dataclass
class Outcome:
    """`tunelab train`'s result: the run, its scorecard and what registering did."""

    result: TrainResult
    card: Scorecard
    registration: Registration
