"""The data stage as plain functions: ingest -> split (and clean) -> validate -> version ->
report.

The Prefect flow (flows/data.py) wraps each step in a task; `prepare_dataset` runs
them in order without Prefect, for library users and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tunelab.config import RunConfig, digest
from tunelab.data import checks, clean, report, sources, splits, tokens, versioning
from tunelab.data.check_messages import describe_failures
from tunelab.data.tokens import TokenCounter
from tunelab.errors import DataValidationError
from tunelab.workspace import Workspace


@dataclass
class PreparedDataset:
    """One dataset after the data stage: its version, the gate's outcome, its report."""

    version: versioning.DataVersion
    validation: checks.ValidationOutcome
    report: report.DataReport

    @property
    def name(self) -> str:
        return self.version.dataset

    @property
    def version_id(self) -> str:
        return self.version.version

    @property
    def rows(self) -> dict[str, int]:
        return dict(self.version.rows)

    @property
    def changed(self) -> bool:
        return self.version.changed

    @property
    def report_path(self) -> str:
        return str(self.report.markdown_path)

    @property
    def data_docs(self) -> str | None:
        return self.validation.docs_path or None

    @property
    def token_counter(self) -> str:
        """What counted the tokens of the gate's length check and the report."""
        return str(self.validation.results.get("token_counter", ""))

    @property
    def token_counter_fallback(self) -> str | None:
        """Why the whitespace estimate stood in for the tokenizer asked for; None if not."""
        return self.validation.results.get("token_counter_fallback")

    @property
    def validation_summary(self) -> str:
        stats = self.validation.statistics
        return f"passed: {stats['successful']} of {stats['evaluated']} checks"

    def table_row(self) -> dict:
        """A flat row for a table artifact or the CLI."""
        return {
            "dataset": self.name,
            "version": self.version_id,
            "changed": self.changed,
            **{f"rows_{k}": v for k, v in self.rows.items()},
            "report": self.report_path,
            "data_docs": self.data_docs or "",
            "validation": self.validation_summary,
        }


def token_counter(cfg: RunConfig) -> TokenCounter:
    """The tokenizer of data.tokenizer, else of model.name (tokens.for_config; cached per
    process), or the whitespace estimate saying why."""
    return tokens.for_config(cfg)


def versioned_data_config(cfg: RunConfig) -> dict:
    """The data section as a version records it: how the bytes were made. data.tokenizer
    only changes how the gate counts, so it is left out (same bytes, same record)."""
    return cfg.data.model_dump(mode="json", exclude={"tokenizer"})


def label_set(cfg: RunConfig, frames: dict[str, pd.DataFrame]) -> list[str] | None:
    """The declared labels, else the labels found; None for tasks without labels."""
    if cfg.data.task != "classification":
        return None
    if cfg.data.labels:
        return list(cfg.data.labels)
    found = pd.concat([f["label"] for f in frames.values()]).dropna().unique()
    return sorted(str(v) for v in found)


def ingest(cfg: RunConfig) -> sources.RawDataset:
    return sources.ingest(cfg.data)


def split(raw: sources.RawDataset, cfg: RunConfig) -> clean.CleanedSplits:
    """The splits after the recorded cleaning policy (data.clean; off by default, then the
    splits pass through untouched): the gate, the version and the report all see these."""
    return clean.clean_splits(
        splits.make_splits(raw.frames, cfg.data), cfg.data.task, cfg.data.clean
    )


def validate(
    cleaned: clean.CleanedSplits, cfg: RunConfig, workspace: Workspace
) -> checks.ValidationOutcome:
    return checks.validate_splits(cleaned.frames, cfg, workspace, token_counter(cfg))


def save_version(
    cleaned: clean.CleanedSplits,
    cfg: RunConfig,
    origin: str,
    outcome: checks.ValidationOutcome,
    workspace: Workspace,
) -> versioning.DataVersion:
    """Version validated splits; the gate must have passed."""
    checks.raise_for_failures(outcome)
    frames = cleaned.frames
    data_config = versioned_data_config(cfg)
    # What counted tokens is a property of the gate's run, kept in validation.json, not
    # of the data: a version record is the same whichever tokenizer validated it.
    metadata = {
        "source": origin,
        "task": cfg.data.task,
        "labels": label_set(cfg, frames),
        "data_config": data_config,
        "data_config_hash": digest(data_config),
        "validation": outcome.statistics,
    }
    return versioning.save_version(
        cfg.data.name,
        frames,
        workspace,
        remote=cfg.data.remote,
        metadata=metadata,
        attachments={
            "validation.json": outcome.results,
            "cleaning.json": cleaned.cleaning.to_dict(),
        },
        cleaning=cleaned.cleaning.summary(),
    )


def write_report(
    cleaned: clean.CleanedSplits,
    cfg: RunConfig,
    version: versioning.DataVersion,
    outcome: checks.ValidationOutcome,
    workspace: Workspace,
) -> report.DataReport:
    stats = outcome.statistics
    counter = token_counter(cfg)
    warnings = list(outcome.warnings)
    if counter.fallback:
        warnings.append(
            f"Token lengths are whitespace estimates: {counter.fallback}. Set data.tokenizer "
            "to a model whose tokenizer loads here (or 'whitespace' to choose the estimate)."
        )
    summary = (
        f"passed: {stats.get('successful', '?')} of {stats.get('evaluated', '?')} expectations"
        if outcome.success
        else "failed"
    )
    return report.write_report(
        cfg.data.name,
        cfg.data.task,
        version.version,
        cleaned.frames,
        workspace,
        token_counter=counter,
        validation_summary=summary,
        docs_path=outcome.docs_path,
        seed=cfg.data.seed,
        cleaning=cleaned.cleaning,
        warnings=warnings,
    )


def table_rows(prepared: list[PreparedDataset]) -> list[dict]:
    return [p.table_row() for p in prepared]


def require_passed(outcomes: list[checks.ValidationOutcome]) -> None:
    """The gate: raise DataValidationError naming every failed dataset (nothing is
    versioned unless every dataset passed)."""
    failures = [o for o in outcomes if not o.success]
    if len(failures) == 1:
        checks.raise_for_failures(failures[0])
    if failures:
        raise DataValidationError("\n\n".join(describe_failures(o) for o in failures))


def candidate_versions(cfgs: list[RunConfig]) -> dict[str, str]:
    """dataset -> the version id its source's data would get now (nothing is written)."""
    return {
        cfg.data.name: versioning.candidate_version(cfg.data.name, split(ingest(cfg), cfg).frames)
        for cfg in cfgs
    }


def prepare_dataset(cfg: RunConfig, workspace: Workspace) -> PreparedDataset:
    """Run the whole data stage for one dataset; raises DataValidationError at the gate."""
    raw = ingest(cfg)
    cleaned = split(raw, cfg)
    outcome = validate(cleaned, cfg, workspace)
    version = save_version(cleaned, cfg, raw.origin, outcome, workspace)
    return PreparedDataset(
        version, outcome, write_report(cleaned, cfg, version, outcome, workspace)
    )


def bundled_configs() -> list[RunConfig]:
    """One default config per bundled sample: what `tunelab data prepare` runs with no file."""
    from tunelab.config import from_dict

    return [
        from_dict(
            {
                "data": {
                    "name": name,
                    "task": info["task"],
                    "source": f"bundled:{name}",
                    "labels": info["labels"],
                },
                **({"model": info["model"]} if "model" in info else {}),
            },
            where=f"bundled:{name}",
        )
        for name, info in sources.BUNDLED.items()
    ]
