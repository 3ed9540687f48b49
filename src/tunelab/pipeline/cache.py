"""Cache keys of the pipeline's steps: a step's key is a hash of what its output depends
on, so an unchanged step is reused and a changed one is recomputed. The train step's key
is the run's fingerprint (tunelab.runs.fingerprint: config, data version, code, library
versions, starting weights), the same one that names its run folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.config import RunConfig, digest
from tunelab.runs import code_version, fingerprint

__all__ = ["StepKeys", "code_version", "evaluate_key", "register_key", "step_key", "train_key"]


def step_key(step: str, *parts: Any) -> str:
    """A cache key: the step name and a hash of what the step's output depends on."""
    return f"{step}-{digest(list(parts), length=20)}"


def train_key(cfg: RunConfig, data_version: str, code: str) -> str:
    return step_key("train", fingerprint(cfg, data_version, code))


def evaluate_key(train: str, cfg: RunConfig) -> str:
    # The serving costs measured with the scorecard are those of the package registered.
    raw = cfg.model_dump(mode="json")
    return step_key("evaluate", train, raw["eval"], raw["registry"]["package"])


def register_key(evaluate: str, cfg: RunConfig, tracking_uri: str) -> str:
    return step_key("register", evaluate, cfg.model_dump(mode="json")["registry"], tracking_uri)


@dataclass(frozen=True)
class StepKeys:
    train: str
    evaluate: str
    register: str

    @classmethod
    def of(cls, cfg: RunConfig, data_version: str, code: str, tracking_uri: str) -> StepKeys:
        """Each step's key builds on the one before: a retrained run is re-evaluated."""
        train = train_key(cfg, data_version, code)
        evaluate = evaluate_key(train, cfg)
        return cls(train, evaluate, register_key(evaluate, cfg, tracking_uri))
