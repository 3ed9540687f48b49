"""The model card of a registered version, rendered from the run's own records, and the
registry's other descriptions.

The same card goes into the logged model (README.md of the transformers artifact) and
into the registry version's description, so the two never disagree; once the gate has
decided, the version's description starts with the decision and its evidence in one
line (:func:`decision_line`). The registered model's description (:func:`describe_model`)
says what its versions are for, how one is promoted and where the review is. Labels,
notes and names come from data and configs: they are escaped, so the MLflow UI shows
them as text. p-values are written by tunelab.markdown.p_value: never as 0.
"""

from __future__ import annotations

import math

from tunelab import markdown as md
from tunelab.config import RunConfig
from tunelab.lifecycle import gate
from tunelab.runs import TrainResult
from tunelab.scorecard import Scorecard, primary_metric

INTENDED_USE = {
    "classification": "Labels a short text with one of: {labels}.",
    "generation": "Answers an instruction or prompt with generated text.",
    "chat": "Answers the next assistant turn of a conversation (system, user and assistant "
    "messages) through its chat template.",
    "preference": "Generates answers tuned towards the preferred responses of a "
    "preference dataset (chosen over rejected).",
    # method=reward on preference data
    "reward": "Scores a response to a prompt (a higher reward: more like the preferred "
    "responses of its preference dataset), e.g. to rank answers or as the reward of RL.",
    # method=grpo on prompts data
    "prompts": "Answers prompts like those of its prompts dataset, tuned by reinforcement "
    "learning towards higher rewards (see the rewards in the run's notes); kept within a KL "
    "budget of the model it started from.",
}
GATE_LINE = "**Promotion gate:"  # how a version description's decision line starts
REVIEW_KEY = "milestone-review"  # the review's Prefect artifact and parent-run folder
TEST_NAMES = {"mcnemar": "exact McNemar test", "paired_bootstrap": "paired bootstrap"}
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
    labels = labels_of(card)
    shown = ", ".join(md.inline(label) for label in labels) if labels else "its labels"
    use = INTENDED_USE["reward" if card.method == "reward" else card.task].format(labels=shown)
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


def labels_of(card: Scorecard) -> list[str] | None:
    """A classifier's labels, as its test predictions name them (None for other tasks)."""
    table = card.predictions()
    if table is None or "reference" not in table.columns or card.task != "classification":
        return None
    return sorted(set(table["reference"].astype(str)))


# ---------------------------------------------------------------- registry descriptions


def decision_line(decision: gate.Decision, alias: str | None) -> str:
    """A version's gate decision and its evidence on one Markdown line, e.g.
    ``**Promotion gate: promoted** (alias champion): macro_f1 0.8100 vs 0.6000 for ...,
    delta +0.2100 (95% CI +0.1000 to +0.3000), paired bootstrap p < 0.001 (n=120);
    required delta >= 0 and p <= 0.05.``"""
    head = f"{GATE_LINE} {md.inline(decision.outcome)}**" + (
        f" (alias {md.code(alias)})" if alias else ""
    )
    if decision.forced or not math.isfinite(decision.delta):
        return f"{head}: {md.inline(decision.reason)}"

    def f(x: float, sign: str = "") -> str:
        return f"{x:{sign}.4f}" if math.isfinite(x) else "n/a"

    test = TEST_NAMES.get(decision.test, decision.test or "paired test")
    evidence = (
        f"{md.inline(decision.metric)} {f(decision.challenger)} vs {f(decision.reference)} "
        f"for {md.inline(decision.versus)}, delta {f(decision.delta, '+')} "
        f"({gate.interval_level(decision.significance)} CI {f(decision.delta_ci_low, '+')} "
        f"to {f(decision.delta_ci_high, '+')}), {md.inline(test)} "
        f"p {_p_text(decision.p_value)} (n={decision.n})"
    )
    required = f"required delta >= {decision.min_improvement:g} and p <= {decision.significance:g}"
    failed = [
        f"{md.inline(k)} {md.inline(v)}"
        for k, v in decision.limits.items()
        if v.startswith("exceeded")
    ]
    if failed:
        required += "; limits " + ", ".join(failed)
    return f"{head}: {evidence}; {required}."


def _p_text(p: float) -> str:
    """'= 0.0123' or '< 0.001' (after a 'p')."""
    shown = md.p_value(p)
    return shown if shown.startswith("<") else f"= {shown}"


def with_decision(description: str | None, line: str) -> str:
    """A version description with ``line`` as its first paragraph, replacing an earlier
    decision line (a rollback after a promotion): the model card below stays."""
    text = description or ""
    if text.startswith(GATE_LINE):
        text = text.partition("\n\n")[2]
    return f"{line}\n\n{text}" if text else line + "\n"


def describe_model(
    name: str, cfg: RunConfig, base_models: list[str], labels: list[str] | None = None
) -> str:
    """The registered model's description: what its versions are for (task, dataset,
    base models), how a version is promoted (the gate's metric, test and thresholds;
    the aliases) and where the review is."""
    task, dataset = cfg.data.task, cfg.data.name
    shown = ", ".join(md.inline(label) for label in labels) if labels else "its labels"
    metric = primary_metric(cfg)
    test = (
        TEST_NAMES["mcnemar"]
        if task == "classification" and metric == "accuracy"
        else TEST_NAMES["paired_bootstrap"]
    )
    r = cfg.registry
    limits = [
        f"latency p95 <= {r.max_latency_p95_ms:g} ms" if r.max_latency_p95_ms is not None else "",
        f"model size <= {r.max_model_size_mb:g} MB" if r.max_model_size_mb is not None else "",
    ]
    limits_text = " and ".join(x for x in limits if x)
    models = ", ".join(_base_model(m) for m in sorted(set(base_models))) or "none yet"
    champion, previous, challenger = md.code("champion"), md.code("previous"), md.code("challenger")
    least = gate.min_improvement(cfg, task)
    margin = f" by at least {least:g}" if least > 0 else ""
    paragraphs = [
        f"# {md.inline(name)}",
        f"**What it is for.** {md.inline(task.capitalize())} models for dataset "
        f"{md.code(dataset)}, "
        f"trained, evaluated and registered by tunelab. {INTENDED_USE[task].format(labels=shown)}",
        f"**Base models so far:** {models}.",
        f"**How a version is promoted.** On the frozen test split of its data version, its "
        f"{md.code(metric)} must beat the current {champion} (before the first champion: the "
        f"best baseline on that split){margin}, and a two-sided {test} must give "
        f"p <= {r.significance:g}"
        + (f", within {limits_text}" if limits_text else "")
        + f". Promoted, it becomes {champion} and the old champion {previous}; otherwise it "
        f"becomes {challenger}. Each version's description starts with its decision and "
        "evidence; its `gate.*` tags and its run's note hold the details.",
        f"**Serve** {md.code(f'models:/{name}@champion')}; roll back with "
        f"{md.code(f'tunelab registry rollback {name}')}.",
        "**Review.** A pipeline's review (every method, its scores and the gate decisions) is "
        f"written to {md.code('reports/milestone/<UTC time>/review.md')} (and review.html) in "
        f"the tunelab workspace, logged to MLflow as {md.code(REVIEW_KEY + '/')} on the "
        f"pipeline's parent run (named {md.code('<dataset>/<pipeline>')}), and published as "
        f"the Prefect artifact {md.code(REVIEW_KEY)} of its flow run.",
    ]
    return "\n\n".join(paragraphs) + "\n"


def _base_model(model: str) -> str:
    """A base model with its family: 'tiny-bert' (encoder), 'tfidf-logreg' (scikit-learn)."""
    from tunelab.models import ALIASES
    from tunelab.train.baseline import MODEL_NAMES

    family = "scikit-learn" if model in MODEL_NAMES.values() else None
    if model in ALIASES:
        family = ALIASES[model].family
    return md.code(model) + (f" ({family})" if family else "")
