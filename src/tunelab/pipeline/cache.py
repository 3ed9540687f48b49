"""Cache keys of the pipeline's steps: a step's key is a hash of what its output depends
on (the data version, its config sections, the code version), so an unchanged step is
reused and a changed one is recomputed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig, digest

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def code_version() -> str:
    """Hash of the tunelab sources that run: editing the code invalidates cached steps."""
    files = sorted(SOURCE_ROOT.rglob("*.py"))
    return digest([[f.relative_to(SOURCE_ROOT).as_posix(), _sha(f)] for f in files])


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def step_key(step: str, *parts: Any) -> str:
    """A cache key: the step name and a hash of what the step's output depends on."""
    return f"{step}-{digest(list(parts), length=20)}"


def train_key(cfg: RunConfig, data_version: str, code: str) -> str:
    sections = {s: cfg.model_dump(mode="json")[s] for s in ("data", "model", "train")}
    return step_key("train", sections, data_version, code)


def evaluate_key(train: str, cfg: RunConfig) -> str:
    return step_key("evaluate", train, cfg.model_dump(mode="json")["eval"])


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
