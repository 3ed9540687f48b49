"""The milestone review: one page per pipeline run that compares every training method.

``write_review`` writes ``review.md`` and a self-contained ``review.html`` (its images
embedded as data URIs) into the folder it is given, with the PNGs the Markdown links by
relative path: ``comparison-<dataset>.png``, ``loss-<dataset>.png`` and
``confusion-<dataset>.png``. It also returns the same page for showing away from the
folder (a Prefect artifact): its images inline, its files linked where a server holds
them or named as text (``markdown.EmbeddedRefs``).

Each method's numbers come from the files its run folder holds (``scorecard.json``,
``train_result.json``, ``predictions.parquet``), read as plain JSON and Parquet so this
module depends on no other part of tunelab. A method whose training failed, or whose
scorecard is missing or failed, is shown as failed with its error.

Names, texts, predictions and errors come from data, models and configs: every one goes
through the escaping of ``markdown`` (never straight into the page), and errors are
redacted, so the review shows them as text and leaks no credential.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tunelab import markdown as md
from tunelab.data import chat
from tunelab.pipeline.records import MethodRecord, Registration
from tunelab.redaction import redact
from tunelab.runs import PREDICTIONS_FILE, RESULT_FILE, SCORECARD_FILE, input_column

MARKDOWN_FILE = "review.md"
HTML_FILE = "review.html"
# Shown next to the primary metric, per task; a column nobody has is left out.
SECONDARY_METRICS = {
    "classification": ("accuracy", "ece"),
    "generation": ("rouge1", "bleu", "chrf"),
    "chat": ("rouge1", "bleu", "chrf"),
    "preference": ("reward_margin", "loglik_win_rate"),
    "prompts": ("reward_before", "kl"),
}
POLICY_EXAMPLES = 3  # held-out prompts shown answered before and after RL
ERROR_CHARS = 200
CLASSIFICATION_EXAMPLES = 5
CLASSIFICATION_INPUT_CHARS = 120
GENERATION_EXAMPLES = 3
GENERATION_CHARS = 200
NONE = md.MISSING
# Metrics reported on a 0-100 scale get fewer decimals.
PERCENT_SCALE = {"bleu", "chrf"}


@dataclass
class DatasetEntry:
    name: str
    version: str  # data version id
    rows: dict[str, int]  # split -> rows
    validation: str  # one-line validation summary, e.g. "passed: 14 of 14 checks"
    data_docs: str | None  # path or URL of the Great Expectations Data Docs page
    report: str | None  # path of the dataset report (Markdown)


@dataclass
class Review:
    title: str
    created: str  # ISO timestamp
    datasets: list[DatasetEntry]
    methods: list[MethodRecord]
    champions: dict[str, str | None]  # registered model name -> champion version (None = none)
    flow_run_url: str | None = None
    mlflow: str | None = None  # MLflow UI URL or the `mlflow ui ...` command line


@dataclass
class ReviewFiles:
    folder: Path
    markdown_path: Path
    html_path: Path
    markdown: str
    # One flat row per method, primitive values only, numbers rounded (a table artifact).
    table: list[dict]
    # The page shown away from the folder (a Prefect artifact): see the module docstring.
    published: str = ""


@dataclass(frozen=True)
class _Figures:
    """The PNGs drawn (or copied) for one dataset; None where there is nothing to show."""

    comparison: Path | None = None
    loss: Path | None = None
    confusion: Path | None = None
    confusion_method: str = ""


@dataclass
class _Run:
    """One method of one dataset as the report sees it."""

    entry: MethodRecord
    card: dict
    error: str | None  # set when the method failed
    history: list[dict]

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def method(self) -> str:
        return self.entry.method

    @property
    def registration(self) -> Registration:
        return self.entry.registration or Registration()

    @property
    def primary(self) -> float | None:
        return _number(self.card.get("primary")) if self.ok else None

    def metric(self, name: str) -> float | None:
        metrics = self.card.get("metrics") or {}
        return _number(metrics.get(f"test_{name}", metrics.get(name)))

    def cost(self, name: str) -> float | None:
        return _number((self.card.get("costs") or {}).get(name))

    def file(self, name: str) -> Path | None:
        return Path(self.entry.run_dir) / name if self.entry.run_dir else None


def write_review(review: Review, folder: Path, published: md.FileRefs | None = None) -> ReviewFiles:
    """Write review.md, review.html and their PNGs into ``folder``; return what was written,
    with the page as ``published`` shows it (default: images inline, files named)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    datasets = {d.name: d for d in review.datasets}
    names = list(datasets) + list(
        dict.fromkeys(m.dataset for m in review.methods if m.dataset not in datasets)
    )
    loaded = {name: [_load_run(m) for m in review.methods if m.dataset == name] for name in names}
    # Drawn and read once; each form of the page only refers to them its own way.
    figures = {name: _draw(name, runs, folder) for name, runs in loaded.items()}
    differ = {name: _disagreements_part(runs, _task(runs)) for name, runs in loaded.items()}

    def page(refs: md.FileRefs) -> str:
        parts = [_header(review, refs)]
        for name, runs in loaded.items():
            data = datasets.get(name)
            parts.append(_dataset_section(name, data, runs, figures[name], differ[name], refs))
        return "\n\n".join(parts) + "\n"

    markdown = page(md.RelativeRefs(folder))
    markdown_path = folder / MARKDOWN_FILE
    markdown_path.write_text(markdown, encoding="utf-8")
    html_path = folder / HTML_FILE
    html_path.write_text(md.render_html(markdown, review.title, folder), encoding="utf-8")
    table = [_table_row(run) for runs in loaded.values() for run in runs]
    shown = page(published or md.EmbeddedRefs())
    return ReviewFiles(folder, markdown_path, html_path, markdown, table, shown)


# --- runs ---------------------------------------------------------------------------


def _load_run(entry: MethodRecord) -> _Run:
    """The method's scorecard and loss history; a failure anywhere becomes its error."""
    history = _read_history(entry.run_dir)
    if entry.status != "ok":
        return _Run(entry, {}, entry.error or f"status {entry.status!r}", history)
    if not entry.run_dir:
        return _Run(entry, {}, "no run folder was recorded", history)
    path = Path(entry.run_dir) / SCORECARD_FILE
    if not path.is_file():
        return _Run(entry, {}, f"{path} is missing: the run was not evaluated", history)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return _Run(entry, {}, f"{path} cannot be read: {exc}", history)
    if not isinstance(card, dict):
        return _Run(entry, {}, f"{path} does not hold a JSON object", history)
    if card.get("status", "ok") != "ok":
        return _Run(
            entry, card, card.get("error") or f"scorecard status {card['status']!r}", history
        )
    return _Run(entry, card, None, history)


def _read_history(run_dir: str | None) -> list[dict]:
    if not run_dir:
        return []
    path = Path(run_dir) / RESULT_FILE
    try:
        history = json.loads(path.read_text(encoding="utf-8")).get("history") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [row for row in history if isinstance(row, dict)]


def _task(runs: list[_Run]) -> str | None:
    return next((r.card["task"] for r in runs if r.card.get("task")), None)


def _table_row(run: _Run) -> dict:
    """Numbers rounded as the page shows them: a table artifact prints what it is given."""
    entry = run.entry
    metric = run.card.get("primary_metric")
    decision = run.registration.decision
    p_value = _number(decision.p_value) if decision else None
    return {
        "dataset": entry.dataset,
        "method": entry.method,
        "status": "ok" if run.ok else "failed",
        "primary_metric": metric,
        "primary": _round_metric(run.primary, metric),
        "ci_low": _round_metric(_number(run.card.get("ci_low")), metric) if run.ok else None,
        "ci_high": _round_metric(_number(run.card.get("ci_high")), metric) if run.ok else None,
        "wall_seconds": _round(run.cost("wall_seconds"), 1),
        "peak_rss_mb": _round(run.cost("peak_rss_mb"), 1),
        "latency_p95_ms": _round(run.cost("latency_p95_ms"), 2),
        "package": _package(run),
        "package_size_mb": _round(run.cost("model_size_mb"), 3),
        "decision": run.registration.outcome,
        "delta": _round_metric(_number(decision.delta), metric) if decision else None,
        "p_value": None if p_value is None else _p_text(p_value),
        "model_version": entry.model_version,
        "error": None if run.ok else _error(run.error),
    }


def _error(error: object) -> str:
    """An error on one line, credentials masked, cut to ERROR_CHARS."""
    return md.short(" ".join(redact(str(error)).split()), ERROR_CHARS)


# --- sections -----------------------------------------------------------------------


def _header(review: Review, refs: md.FileRefs) -> str:
    """Title, time, links and the champion of every registered model."""
    lines = [f"# {md.inline(review.title)}", "", f"- **Created:** {md.inline(review.created)}"]
    if review.flow_run_url:
        lines.append(f"- **Flow run:** {refs.link(review.flow_run_url)}")
    if review.mlflow:
        if urlparse(review.mlflow).scheme in ("http", "https"):
            lines.append(f"- **MLflow:** {refs.link(review.mlflow)}")
        else:
            lines.append(f"- **MLflow:** {md.code(review.mlflow)}")
    lines += ["", "## Champions", ""]
    if review.champions:
        for name, version in review.champions.items():
            shown = f"version {md.inline(str(version))}" if version else "none"
            lines.append(f"- {md.code(name)}: {shown}")
    else:
        lines.append("No model is registered yet.")
    return "\n".join(lines)


def _dataset_section(
    name: str,
    data: DatasetEntry | None,
    runs: list[_Run],
    figures: _Figures,
    disagreements: str,
    refs: md.FileRefs,
) -> str:
    """Everything about one dataset: its data, the methods, charts, examples, decisions."""
    task = _task(runs)
    heading = f"## {md.inline(name)}" + (f" ({md.inline(task)})" if task else "")
    parts = [heading, _data_part(data, refs), _best_line(runs)]
    parts.append(_methods_part(runs, task))
    parts.append(_comparison_part(name, figures, refs))
    parts.append(_loss_part(name, figures, refs))
    if task == "classification":
        parts.append(_confusion_part(figures, refs))
    parts.append(disagreements)  # empty for a task without comparable predictions
    parts.append(_decisions_part(runs))
    return "\n\n".join(p for p in parts if p)


def _data_part(data: DatasetEntry | None, refs: md.FileRefs) -> str:
    if data is None:
        return "### Data\n\nThis dataset was not prepared in this run."
    rows = ", ".join(f"{md.inline(str(split))} {n:,}" for split, n in data.rows.items())
    total = sum(data.rows.values())
    lines = [
        "### Data",
        "",
        f"- **Version:** {md.code(data.version)}",
        f"- **Rows:** {total:,} ({rows})" if data.rows else f"- **Rows:** {NONE}",
        f"- **Validation:** {md.inline(data.validation)}",
    ]
    if data.data_docs:
        lines.append(f"- **Data Docs:** {refs.link(data.data_docs)}")
    if data.report:
        lines.append(f"- **Dataset report:** {refs.link(data.report)}")
    return "\n".join(lines)


def _best_line(runs: list[_Run]) -> str:
    scored = [r for r in runs if r.primary is not None]
    failed = [r for r in runs if not r.ok]
    if not scored:
        return f"**No method finished** ({len(failed)} of {len(runs)} failed)." if runs else ""
    best = max(scored, key=lambda r: r.primary)
    metric = best.card.get("primary_metric")
    text = f"**Best:** {md.code(best.method)} with {md.inline(metric)} {_metric_ci(best)}"
    if failed:
        text += f"; {len(failed)} of {len(runs)} methods failed"
    return text + "."


def _methods_part(runs: list[_Run], task: str | None) -> str:
    """One row per method; columns nobody has a value for are left out."""
    if not runs:
        return "### Methods\n\nNo method was trained on this dataset."
    primaries = {r.card.get("primary_metric") for r in runs if r.ok}
    levels = {_number(r.card.get("ci_level")) for r in runs if r.ok} - {None}
    level = f"{levels.pop():.0%} CI" if len(levels) == 1 else "CI"
    one_metric = len(primaries) == 1
    primary_header = (
        f"{md.cell(next(iter(primaries)))} [{level}]" if one_metric else f"primary [{level}]"
    )

    def primary_cell(run: _Run) -> str:
        if one_metric or not run.ok:
            return _metric_ci(run)
        return f"{md.cell(run.card.get('primary_metric'))} {_metric_ci(run)}"

    columns: list[tuple[str, Callable[[_Run], str], bool]] = [
        ("method", lambda r: md.code(r.method), True),
        ("status", lambda r: "ok" if r.ok else "**failed**", True),
        (primary_header, primary_cell, True),
    ]
    for metric in SECONDARY_METRICS.get(task or "", ()):
        if metric not in primaries:
            columns.append((metric, lambda r, m=metric: _fmt_metric(r.metric(m), m), False))
    columns += [
        ("trainable / total params", _params_cell, False),
        ("wall time", lambda r: _fmt_seconds(r.cost("wall_seconds")), False),
        ("peak memory MB", _memory_cell, False),
        ("tokens/s", lambda r: _fmt_number(r.cost("tokens_per_second")), False),
        ("latency p50 / p95 ms", _latency_cell, False),
        ("package size MB", _size_cell, False),
        ("reused", lambda r: ", ".join(md.cell(s) for s in r.entry.reused) or NONE, False),
        ("MLflow", _mlflow_cell, False),
    ]
    cells = [[fn(r) for r in runs] for _, fn, _ in columns]
    kept = [i for i, (_, _, always) in enumerate(columns) if always or set(cells[i]) != {NONE}]
    body = [[cells[i][row] for i in kept] for row in range(len(runs))]
    text = "### Methods\n\n" + md.table([columns[i][0] for i in kept], body)
    failed = [r for r in runs if not r.ok]
    if failed:
        text += "\n\nFailed:\n\n" + "\n".join(
            f"- {md.code(r.method)}: {md.inline(_error(r.error))}" for r in failed
        )
    return text


def _draw(name: str, runs: list[_Run], folder: Path) -> _Figures:
    """The dataset's plots as PNGs in ``folder``: drawn once, shown by every page form."""
    stem = md.slug(name, "dataset")
    scored = [r for r in runs if r.primary is not None]
    comparison = (
        _plot_comparison(name, scored, folder / f"comparison-{stem}.png") if scored else None
    )
    curves = [
        r for r in runs if _loss_points(r.history, "loss") or _loss_points(r.history, "eval_loss")
    ]
    loss = _plot_losses(name, curves, folder / f"loss-{stem}.png") if curves else None
    if _task(runs) != "classification":
        return _Figures(comparison, loss)
    # The confusion matrix of the best classifier, copied next to the report.
    candidates = []
    for run in runs:
        plot = (run.card.get("plots") or {}).get("confusion_matrix")
        source = run.file(plot) if plot else None
        if run.primary is not None and source is not None and source.is_file():
            candidates.append((run.primary, run, source))
    if not candidates:
        return _Figures(comparison, loss)
    _, best, source = max(candidates, key=lambda c: c[0])
    confusion = folder / f"confusion-{stem}.png"
    shutil.copyfile(source, confusion)
    return _Figures(comparison, loss, confusion, best.method)


def _comparison_part(name: str, figures: _Figures, refs: md.FileRefs) -> str:
    if figures.comparison is None:
        return "### Comparison\n\nNo method finished, so there is nothing to compare."
    shown = refs.image(figures.comparison, f"Primary metric per method, {name}")
    return f"### Comparison\n\n{shown}"


def _loss_part(name: str, figures: _Figures, refs: md.FileRefs) -> str:
    if figures.loss is None:
        return "### Loss curves\n\nNo method recorded a loss history."
    return f"### Loss curves\n\n{refs.image(figures.loss, f'Training loss per step, {name}')}"


def _confusion_part(figures: _Figures, refs: md.FileRefs) -> str:
    if figures.confusion is None:
        return ""
    method = figures.confusion_method
    return (
        f"### Confusion matrix of the best classifier: {md.code(method)}\n\n"
        f"{refs.image(figures.confusion, f'Confusion matrix, {method}')}"
    )


def _disagreements_part(runs: list[_Run], task: str | None) -> str:
    """Test rows where the finished methods predict differently (rows aligned by position)."""
    if task == "preference":
        return _agreement_part(runs)
    if task == "prompts":
        return _policy_part(runs)
    if task not in ("classification", "generation", "chat"):
        return ""
    import pandas as pd

    tables: dict[str, pd.DataFrame] = {}
    for run in runs:
        path = run.file(PREDICTIONS_FILE) if run.ok else None
        if path is None or not path.is_file():
            continue
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError):  # an unreadable table only drops that method here
            continue
        if {"reference", "prediction"} <= set(frame.columns):
            tables[run.method] = frame.reset_index(drop=True)
    heading = "### Where methods disagree"
    if not tables:
        return ""
    first = next(iter(tables.values()))
    reference = first["reference"].astype(str)
    aligned = {
        m: t
        for m, t in tables.items()
        if len(t) == len(first) and t["reference"].astype(str).equals(reference)
    }
    if len(aligned) < 2:
        return f"{heading}\n\nFewer than two finished methods predicted the same test rows."
    predictions = pd.DataFrame({m: t["prediction"].astype(str) for m, t in aligned.items()})
    distinct = predictions.nunique(axis=1)
    differ = distinct[distinct > 1]
    if differ.empty:
        return f"{heading}\n\nAll {len(aligned)} methods agree on every test row."
    methods = list(aligned)
    note = f"{len(differ):,} of {len(first):,} test rows get different predictions."
    if task == "classification":
        text_column = input_column(first.columns)
        headers = ["row", *(["input"] if text_column else []), "reference", *map(md.code, methods)]
        body = []
        for row in differ.index[:CLASSIFICATION_EXAMPLES]:
            cells = [str(row)]
            if text_column:
                cells.append(md.cell(first.at[row, text_column], CLASSIFICATION_INPUT_CHARS))
            cells.append(md.cell(reference[row]))
            for method in methods:
                guess = predictions.at[row, method]
                cells.append(md.cell(guess) + (" ✓" if guess == reference[row] else ""))
            body.append(cells)
        return f"{heading}\n\n{note} The first {len(body)} (✓ = correct):\n\n" + md.table(
            headers, body
        )
    # Generation: the prompts whose outputs differ most, one small table each.
    ranked = sorted(differ.index, key=lambda i: (-distinct[i], i))[:GENERATION_EXAMPLES]
    prompt_column = input_column(first.columns)
    blocks = [f"{heading}\n\n{note} The {len(ranked)} with the most distinct outputs:"]
    for row in ranked:
        body = []
        if prompt_column and task == "chat":
            turns = chat.loads(str(first.at[row, prompt_column]))
            last = next((m["content"] for m in reversed(turns) if m["role"] == "user"), "")
            body.append([f"last user turn (of {len(turns)})", md.cell(last, GENERATION_CHARS)])
        elif prompt_column:
            body.append(["prompt", md.cell(first.at[row, prompt_column], GENERATION_CHARS)])
        body.append(["reference", md.cell(reference[row], GENERATION_CHARS)])
        body += [[md.code(m), md.cell(predictions.at[row, m], GENERATION_CHARS)] for m in methods]
        blocks.append(f"Test row {row}:\n\n" + md.table(["", "text"], body))
    return "\n\n".join(blocks)


def _agreement_part(runs: list[_Run]) -> str:
    """How far the rewards of a dataset's preference methods agree on the same held-out
    pairs (a DPO policy's implicit reward, a reward model's score): per two methods, the
    share of pairs both order the same way and the rank correlation of their margins."""
    import pandas as pd
    from scipy.stats import spearmanr

    margins: dict[str, pd.DataFrame] = {}
    for run in runs:
        path = run.file(PREDICTIONS_FILE) if run.ok else None
        try:
            frame = pd.read_parquet(path) if path is not None and path.is_file() else None
        except (OSError, ValueError):
            frame = None
        if frame is not None and {"prompt", "reward_margin"} <= set(frame.columns):
            margins[run.method] = frame.reset_index(drop=True)
    methods = list(margins)
    rows = []
    for i, first in enumerate(methods):
        for second in methods[i + 1 :]:
            a, b = margins[first], margins[second]
            if len(a) != len(b) or not a["prompt"].astype(str).equals(b["prompt"].astype(str)):
                continue  # not the same pairs: nothing to compare
            x, y = a["reward_margin"].to_numpy(float), b["reward_margin"].to_numpy(float)
            same = float(((x > 0) == (y > 0)).mean())
            rho = spearmanr(x, y).statistic if len(x) > 2 else float("nan")
            rho_text = "n/a" if math.isnan(rho) else f"{rho:+.2f}"  # NaN: a constant margin
            rows.append(
                [f"{md.code(first)} / {md.code(second)}", f"{same:.0%}", rho_text, str(len(x))]
            )
    if not rows:
        return ""
    return (
        "### Do the rewards agree?\n\nOn the same held-out pairs: the share both order the "
        "same way (chosen above rejected, or not) and the rank correlation of their margins "
        "(a DPO policy's implicit reward, a reward model's score).\n\n"
        + md.table(["methods", "same order", "Spearman of margins", "pairs"], rows)
    )


def _policy_part(runs: list[_Run]) -> str:
    """What RL did to each policy on the held-out prompts: the reward (in total and per
    reward) and length before and after, the KL to the reference, and a few prompts
    answered before and after."""
    import pandas as pd

    blocks = []
    for run in runs:
        path = run.file(PREDICTIONS_FILE) if run.ok else None
        try:
            table = pd.read_parquet(path) if path is not None and path.is_file() else None
        except (OSError, ValueError):
            table = None
        if table is None or not {"reward", "reward_before", "completion"} <= set(table.columns):
            continue
        rewards = ["reward"] + [
            c for c in table.columns if str(c).startswith("reward_") and f"{c}_before" in table
        ]
        rows = [
            [
                md.code(name),
                _with_ci(run, f"before_test_{name}", table[f"{name}_before"].mean()),
                _with_ci(run, f"test_{name}", table[name].mean()),
            ]
            for name in rewards
        ]
        rows.append(
            ["words", f"{table['words_before'].mean():.1f}", f"{table['words'].mean():.1f}"]
        )
        rows.append(
            [
                "KL to the reference (nats per answer)",
                "0",
                _with_ci(run, "test_kl", table["kl"].mean()),
            ]
        )
        examples = []
        for i in range(min(POLICY_EXAMPLES, len(table))):
            row = table.iloc[i]
            examples.append(
                [
                    md.cell(row["prompt"], GENERATION_CHARS),
                    md.cell(row["completion_before"], GENERATION_CHARS)
                    + f" ({row['reward_before']:.2f})",
                    md.cell(row["completion"], GENERATION_CHARS) + f" ({row['reward']:.2f})",
                ]
            )
        blocks.append(
            f"### What RL changed: {md.code(run.method)}\n\nMeans over {len(table)} held-out "
            "prompts, each answered by sampling before and after training, with bootstrap "
            "intervals over the prompts (the total reward is the weighted sum of the rewards):\n\n"
            + md.table(["", "before", "after"], rows)
            + "\n\nThe first held-out prompts, answered before and after (reward):\n\n"
            + md.table(["prompt", "before", "after"], examples)
        )
    return "\n\n".join(blocks)


def _with_ci(run: _Run, metric: str, mean: float) -> str:
    """A held-out mean with its interval from the run's metrics (when recorded)."""
    metrics = run.card.get("metrics") or {}
    low, high = _number(metrics.get(f"{metric}_ci_low")), _number(metrics.get(f"{metric}_ci_high"))
    text = f"{mean:.3f}"
    return text if low is None or high is None else f"{text} [{low:.3f}-{high:.3f}]"


def _decisions_part(runs: list[_Run]) -> str:
    """The promotion gate's verdict for every registered method, and why others were not."""
    registered = [r for r in runs if r.registration.model_name or r.registration.decision]
    skipped = [r for r in runs if r.registration.not_registered and r not in registered]
    if not registered and not skipped:
        return ""
    lines = ["### Promotion decisions"]
    if registered:
        headers = ["method", "model", "outcome", "versus", "metric: challenger / reference"]
        headers += ["delta [CI]", "test, p"]
        body = [_decision_cells(r) for r in registered]
        lines += ["", md.table(headers, body), ""]
        for run in registered:
            decision = run.registration.decision
            reason = (decision.reason if decision else "") or "No gate decision was recorded."
            limits = decision.limits if decision else {}
            if limits:
                reason += " Limits: " + "; ".join(f"{k}: {v}" for k, v in limits.items()) + "."
            lines.append(f"- {md.code(run.method)}: {md.inline(reason)}")
    if skipped:
        lines += ["", "Not registered:", ""]
        lines += [
            f"- {md.code(r.method)}: {md.inline(r.registration.not_registered)}" for r in skipped
        ]
    return "\n".join(lines)


def _decision_cells(run: _Run) -> list[str]:
    decision = run.registration.decision
    model = md.code(run.entry.model_version) if run.entry.model_version else NONE
    if decision is None:
        return [md.code(run.method), model, "registered (no gate decision)", *[NONE] * 4]
    metric = decision.metric or ""
    compared = (
        f"{md.cell(metric)}: {_fmt_metric(_number(decision.challenger), metric)} / "
        f"{_fmt_metric(_number(decision.reference), metric)}"
    )
    delta = _number(decision.delta)
    low, high = _number(decision.delta_ci_low), _number(decision.delta_ci_high)
    delta_text = NONE if delta is None else f"{delta:+.4f}"
    if delta is not None and low is not None and high is not None:
        delta_text += f" [{low:+.4f}, {high:+.4f}]"
    p_value = _number(decision.p_value)
    test = decision.test or NONE
    n = decision.n
    tested = f"{md.cell(test)}, {_fmt_p(p_value)}" + (f" (n={n})" if n else "")
    outcome = f"**{md.inline(decision.outcome)}**"
    return [
        md.code(run.method),
        model,
        outcome,
        md.cell(decision.versus or NONE),
        compared,
        delta_text,
        tested,
    ]


# --- table cells --------------------------------------------------------------------


def _metric_ci(run: _Run) -> str:
    value = run.primary
    if value is None:
        return NONE
    metric = run.card.get("primary_metric")
    low, high = _number(run.card.get("ci_low")), _number(run.card.get("ci_high"))
    if low is None or high is None:
        return _fmt_metric(value, metric)
    return f"{_fmt_metric(value, metric)} [{_fmt_metric(low, metric)}, {_fmt_metric(high, metric)}]"


def _params_cell(run: _Run) -> str:
    trainable, total = run.cost("trainable_params"), run.cost("total_params")
    if trainable is None and not total:
        return NONE
    text = f"{_fmt_count(trainable)} / {_fmt_count(total)}"
    if trainable is not None and total:
        text += f" ({trainable / total:.2%})"
    return text


def _memory_cell(run: _Run) -> str:
    return _cost_cell(run, "peak_rss_mb", "cuda_max_allocated_mb", "GPU")


def _cost_cell(run: _Run, main: str, extra: str, label: str) -> str:
    """A cost with a second one in brackets when there is one: '812 (GPU 1,024)'."""
    value, more = run.cost(main), run.cost(extra)
    if value is None and more is None:
        return NONE
    return _fmt_number(value) + (f" ({label} {_fmt_number(more)})" if more else "")


def _latency_cell(run: _Run) -> str:
    p50, p95 = run.cost("latency_p50_ms"), run.cost("latency_p95_ms")
    if p50 is None and p95 is None:
        return NONE
    return f"{_fmt_number(p50)} / {_fmt_number(p95)}"


def _package(run: _Run) -> str | None:
    """What an adapter run registers (its scorecard's ``adapter_only``): 'adapter' (the
    adapter and a base-model reference) or 'merged'; None for other runs."""
    only = run.cost("adapter_only")
    return None if only is None else "adapter" if only else "merged"


def _size_cell(run: _Run) -> str:
    """Size on disk of the registered package; for an adapter run which one it is, with the
    other's size in brackets: '0.35 adapter (merged 513)'."""
    size, adapter, merged = (
        run.cost(k) for k in ("model_size_mb", "adapter_size_mb", "merged_size_mb")
    )
    package = _package(run)
    if package is None:
        if size is None and adapter is None:
            return NONE
        return _fmt_size(size) + (f" (adapter {_fmt_size(adapter)})" if adapter else "")
    other = ("merged", merged) if package == "adapter" else ("adapter", adapter)
    text = f"{_fmt_size(size)} {package}"
    return text + (f" ({other[0]} {_fmt_size(other[1])})" if other[1] is not None else "")


def _mlflow_cell(run: _Run) -> str:
    done = run.registration
    if done.run_url:
        label = done.run_id[:8] if done.run_id else "run"
        return md.web_link(done.run_url, label)
    return md.code(done.run_id) if done.run_id else NONE


# --- plots --------------------------------------------------------------------------


def _plot_comparison(name: str, runs: list[_Run], path: Path) -> Path:
    """Horizontal bars of the primary metric, best on top, with the bootstrap interval."""
    ordered = sorted(runs, key=lambda r: r.primary)
    values = [r.primary for r in ordered]
    below, above = [], []
    for run, value in zip(ordered, values, strict=True):
        low, high = _number(run.card.get("ci_low")), _number(run.card.get("ci_high"))
        below.append(max(0.0, value - low) if low is not None else 0.0)
        above.append(max(0.0, high - value) if high is not None else 0.0)
    metrics = list(dict.fromkeys(str(r.card.get("primary_metric")) for r in ordered))
    fig = md.figure(7.0, max(2.2, 0.5 * len(ordered) + 1.2))
    ax = fig.subplots()
    positions = list(range(len(ordered)))
    ax.barh(positions, values, xerr=[below, above], capsize=4, color="#4c72b0", alpha=0.85)
    ax.set_yticks(positions, [md.short(r.method, 30) for r in ordered])
    for y, run, value, extra in zip(positions, ordered, values, above, strict=True):
        ax.annotate(
            _fmt_metric(value, run.card.get("primary_metric")),
            (value + extra, y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    levels = {_number(r.card.get("ci_level")) for r in ordered} - {None}
    level = f"{levels.pop():.0%} CI" if len(levels) == 1 else "CI"
    ax.set_xlabel(f"{' / '.join(metrics)} on test (error bars: {level})")
    ax.set_title(f"{name}: methods compared")
    ax.margins(x=0.15)
    ax.grid(axis="x", alpha=0.3)
    return md.save_figure(fig, path)


def _loss_points(history: list[dict], key: str) -> list[tuple[float, float]]:
    points = []
    for row in history:
        step, value = _number(row.get("step")), _number(row.get(key))
        if step is not None and value is not None:
            points.append((step, value))
    return points


def _plot_losses(name: str, runs: list[_Run], path: Path) -> Path:
    """Training loss per step, one colour per method; validation loss dashed."""
    fig = md.figure(7.5, 4.2)
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for run, colour in zip(runs, colours, strict=True):
        for key, style, label in (("loss", "-", run.method), ("eval_loss", "--", None)):
            points = _loss_points(run.history, key)
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            shown = label or f"{run.method} (validation)"
            marker = "o" if len(points) < 30 else None
            ax.plot(steps, values, style, color=colour, marker=marker, markersize=3, label=shown)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    dashed = any(_loss_points(r.history, "eval_loss") for r in runs)
    ax.set_title(f"{name}: loss per step" + (" (dashed: validation)" if dashed else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return md.save_figure(fig, path)


# --- formatting ---------------------------------------------------------------------


def _number(value: object) -> float | None:
    """A finite float, or None for anything else (missing, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _round_metric(value: float | None, metric: str | None) -> float | None:
    """As many decimals as the page shows, and one more."""
    return _round(value, 3 if metric in PERCENT_SCALE else 4)


def _fmt_metric(value: float | None, metric: str | None = None) -> str:
    if value is None:
        return NONE
    return f"{value:.2f}" if metric in PERCENT_SCALE else f"{value:.3f}"


def _fmt_p(value: float | None) -> str:
    """'p = 0.0123', or 'p < 0.001' below that: a p-value is never shown as 0."""
    text = _p_text(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _p_text(value: float | None) -> str:
    """'0.0123', or '< 0.001' below that."""
    if value is None:
        return NONE
    return f"{value:.3g}" if value >= 0.001 else "< 0.001"


def _fmt_number(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _fmt_size(value: float | None) -> str:
    """MB on disk: adapters weigh fractions of a megabyte, merged models hundreds."""
    if value is None:
        return NONE
    return f"{value:.2f}" if abs(value) < 1 else _fmt_number(value)


def _fmt_count(value: float | None) -> str:
    if value is None:
        return NONE
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return NONE
    if value < 60:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 3600 else f"{value / 3600:.2f} h"
