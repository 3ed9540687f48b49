"""The model card of a registered version, rendered from the run's own records.

The same text goes into the logged model (README.md of the transformers artifact) and
into the registry version's description, so the two never disagree. Labels, notes and
names come from data and configs: they are escaped, so the MLflow UI shows them as text.
"""

from __future__ import annotations

import math

from tunelab import markdown as md
from tunelab.runs import TrainResult
from tunelab.scorecard import Scorecard

INTENDED_USE = {
    "classification": "Labels a short text with one of: {labels}.",
    "generation": "Answers an instruction or prompt with generated text.",
    "chat": "Answers the next assistant turn of a conversation (system, user and assistant "
    "messages) through its chat template.",
    "preference": "Generates answers tuned towards the preferred responses of a "
    "preference dataset (chosen over rejected).",
}
LIMITATIONS = [
    "Trained and evaluated on one small dataset; scores on other text may be much lower.",
    "The test split is small: read the confidence interval, not just the point estimate.",
    "Not evaluated for bias, toxicity or safety.",
]


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return "n/a" if value is None else str(value)


def _metric_rows(card: Scorecard) -> list[list[str]]:
    """The primary metric with its interval first, then the other test metrics by name."""
    level = round(card.ci_level * 100)
    primary = (
        f"**{_fmt(card.primary)}** ({level}% CI {_fmt(card.ci_low)} to {_fmt(card.ci_high)}, "
        f"{card.resamples} bootstrap resamples)"
    )
    rows = [[f"**{md.cell(card.primary_metric)}** (primary)", primary]]
    for key in sorted(card.metrics):
        if key.startswith("test_") and key != f"test_{card.primary_metric}":
            rows.append([md.cell(key.removeprefix("test_")), md.cell(_fmt(card.metrics[key]))])
    return rows


def render(result: TrainResult, card: Scorecard, run_id: str | None = None) -> str:
    """Markdown: intended use, data, metrics, costs, limitations, lineage."""
    labels = _labels(card)
    shown = ", ".join(md.inline(label) for label in labels) if labels else "its labels"
    use = INTENDED_USE[card.task].format(labels=shown)
    lines = [
        f"# {md.inline(result.dataset)}: {md.inline(card.method)} on {md.inline(result.model)}",
        "",
        "## Intended use",
        use,
        "",
        "## Data",
        f"- dataset {md.code(result.dataset)}, "
        f"data version {md.code(result.data_version or 'unrecorded')}",
        f"- evaluated on the frozen test split (md5 {md.code(card.test_split or 'unrecorded')}, "
        f"{card.test_rows} rows)",
        "",
        "## Metrics (test split)",
        md.table(["metric", "value"], _metric_rows(card)),
        "",
        "## Costs",
        md.table(
            ["", ""],
            [[md.cell(k), md.cell(_fmt(v))] for k, v in card.costs.items() if v is not None],
        ),
        "",
        "## Limitations",
        *[f"- {item}" for item in LIMITATIONS],
    ]
    for note in result.notes:
        lines.append(f"- {md.inline(note)}")
    lines += [
        "",
        "## Lineage",
        f"- method {md.code(card.method)}, base model {md.code(result.model)}, "
        f"device {md.inline(result.device)} ({md.inline(result.precision)})",
        f"- run folder {md.code(result.output_dir.rsplit('/', 1)[-1])}"
        + (f", MLflow run {md.code(run_id)}" if run_id else ""),
        "- library versions: "
        + ", ".join(md.inline(f"{k} {v}") for k, v in sorted((result.versions or {}).items())),
    ]
    return "\n".join(lines) + "\n"


def _labels(card: Scorecard) -> list[str] | None:
    table = card.predictions()
    if table is None or "reference" not in table.columns or card.task != "classification":
        return None
    return sorted(set(table["reference"].astype(str)))
