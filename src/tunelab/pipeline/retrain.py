"""Scheduled retraining's decision: retrain a dataset only when its data changed.

The version id the source's data would get now is compared with the data version of
each registered model's champion. Unchanged everywhere: skip. Changed (or no champion
yet): the dataset goes through the whole pipeline, promoted only through the gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from tunelab.lifecycle import registry, tracking
from tunelab.pipeline.plan import Plan
from tunelab.pipeline.summary import PipelineSummary


@dataclass(frozen=True)
class RetrainDecision:
    plan: Plan  # the whole plan
    retrain: list[str]  # datasets whose data changed (or that have no champion)
    lines: list[str]  # one line per dataset: what was decided and why

    @property
    def skipped(self) -> list[str]:
        return [d.name for d in self.plan.datasets if d.name not in self.retrain]

    @property
    def message(self) -> str:
        return "\n".join(self.lines)

    @property
    def markdown(self) -> str:
        return f"# Scheduled retraining\n\n{self.message}\n"

    def apply(self, run: Callable[[Plan], PipelineSummary]) -> PipelineSummary:
        """Run the pipeline on the changed datasets, if any; the summary says what was
        retrained and what skipped."""
        if self.retrain:
            subset = self.plan.subset(self.retrain)
            summary = run(replace(subset, title=f"{subset.title} (retraining)"))
        else:
            summary = PipelineSummary(self.plan.title, "", "", 0.0, {}, [], {})
        summary.retrained, summary.skipped, summary.decision = (
            list(self.retrain),
            self.skipped,
            self.message,
        )
        return summary


def decide(plan: Plan, candidates: dict[str, str], target: tracking.Tracking) -> RetrainDecision:
    """``candidates``: dataset -> the version id its source's data would get now."""
    retrain, lines = [], []
    for dataset in plan.datasets:
        candidate = candidates[dataset.name]
        names = sorted({registry.model_name(m.cfg) for m in dataset.methods})
        served = {name: registry.champion_data_version(target, name) for name in names}
        if served and all(v == candidate for v in served.values()):
            lines.append(f"- `{dataset.name}`: skipped: data unchanged (version {candidate})")
            continue
        retrain.append(dataset.name)
        was = ", ".join(f"{n}: {v or 'no champion'}" for n, v in served.items())
        lines.append(
            f"- `{dataset.name}`: data version {candidate} differs from the champions' "
            f"({was}): retraining"
        )
    return RetrainDecision(plan, retrain, lines)
