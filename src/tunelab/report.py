"""The milestone review: one page per pipeline run that compares every training method.

``write_review`` writes ``review.md`` and a self-contained ``review.html`` (its images
embedded as data URIs) into the folder it is given, with the PNGs the Markdown links by
relative path: ``comparison-<dataset>.png``, ``loss-<dataset>.png`` and
``confusion-<dataset>.png``.

Each method's numbers come from the files its run folder holds (``scorecard.json``,
``train_result.json``, ``predictions.parquet``), read as plain JSON and Parquet so this
module depends on no other part of tunelab. A method whose training failed, or whose
scorecard is missing or failed, is shown as failed with its error.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlparse
from tunelab.runs import PREDICTIONS_FILE, RESULT_FILE, SCORECARD_FILE

MARKDOWN_FILE = "review.md"
HTML_FILE = "review.html"
# Shown next to the primary metric, per task; a column nobody has is left out.
SECONDARY_METRICS = {
    "classification": ("accuracy", "ece"),
    "generation": ("rouge1", "bleu", "chrf"),
    "preference": ("reward_margin", "loglik_win_rate"),
}
ERROR_CHARS = 200
CLASSIFICATION_EXAMPLES = 5
CLASSIFICATION_INPUT_CHARS = 120
GENERATION_EXAMPLES = 3
GENERATION_CHARS = 200
NONE = "–"
# Metrics reported on a 0-100 scale get fewer decimals.
PERCENT_SCALE = {"bleu", "chrf"}
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; line-height: 1.45;
       max-width: 1200px; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; }
img { max-width: 100%; height: auto; }
"""


@dataclass
class DatasetEntry:
    name: str
    version: str  # data version id
    rows: dict[str, int]  # split -> rows
    validation: str  # one-line validation summary, e.g. "passed: 14 of 14 checks"
    data_docs: str | None  # path or URL of the Great Expectations Data Docs page
    report: str | None  # path of the dataset report (Markdown)


@dataclass
class MethodEntry:
    dataset: str
    method: str  # name in the milestone config: "majority", "lora", ...
    status: str  # "ok" | "failed"
    error: str | None = None
    run_dir: str | None = None  # run folder; None when training failed
    run_url: str | None = None  # MLflow run URL (None with a local store)
    run_id: str | None = None
    reused: list[str] = field(default_factory=list)  # steps taken from the cache
    model_name: str | None = None  # registered model name when registered
    version: str | None = None
    decision: dict | None = None  # the gate's Decision as a dict; None when not registered
    not_registered: str | None = None  # why not registered
    # Seconds spent inside the library per step (0 for a step reused from the cache).
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Review:
    title: str
    created: str  # ISO timestamp
    datasets: list[DatasetEntry]
    methods: list[MethodEntry]
    champions: dict[str, str | None]  # registered model name -> champion version (None = none)
    flow_run_url: str | None = None
    mlflow: str | None = None  # MLflow UI URL or the `mlflow ui ...` command line


@dataclass
class ReviewFiles:
    folder: Path
    markdown_path: Path
    html_path: Path
    markdown: str
    # One flat row per method, primitive values only (for a table artifact).
    table: list[dict]


@dataclass
class _Run:
    """One method of one dataset as the report sees it."""

    entry: MethodEntry
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
    def primary(self) -> float | None:
        return _number(self.card.get("primary")) if self.ok else None

    def metric(self, name: str) -> float | None:
        metrics = self.card.get("metrics") or {}
        return _number(metrics.get(f"test_{name}", metrics.get(name)))

    def cost(self, name: str) -> float | None:
        return _number((self.card.get("costs") or {}).get(name))

    def file(self, name: str) -> Path | None:
        return Path(self.entry.run_dir) / name if self.entry.run_dir else None


def write_review(review: Review, folder: Path) -> ReviewFiles:
    """Write review.md, review.html and their PNGs into ``folder``; return what was written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    datasets = {d.name: d for d in review.datasets}
    names = list(datasets) + list(
        dict.fromkeys(m.dataset for m in review.methods if m.dataset not in datasets)
    )
    parts = [_header(review, folder)]
    table: list[dict] = []
    for name in names:
        runs = [_load_run(m) for m in review.methods if m.dataset == name]
        parts.append(_dataset_section(name, datasets.get(name), runs, folder))
        table += [_table_row(run) for run in runs]
    markdown = "\n\n".join(parts) + "\n"
    markdown_path = folder / MARKDOWN_FILE
    markdown_path.write_text(markdown, encoding="utf-8")
    html_path = folder / HTML_FILE
    html_path.write_text(render_html(markdown, review.title, folder), encoding="utf-8")
    return ReviewFiles(folder, markdown_path, html_path, markdown, table)


def render_html(markdown_text: str, title: str, folder: Path) -> str:
    """A standalone HTML page of the Markdown; local PNGs it shows become data URIs."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    body = re.sub(
        r'(<img\b[^>]*?\bsrc=")([^"]*)(")',
        lambda m: m.group(1) + _data_uri(m.group(2), Path(folder)) + m.group(3),
        body,
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _data_uri(src: str, folder: Path) -> str:
    """The PNG at ``src`` (relative to the folder) as a data URI; other sources unchanged."""
    target = unquote(html.unescape(src))
    if urlparse(target).scheme or not target.lower().endswith(".png"):
        return src
    path = (folder / target).resolve()
    if not path.is_file() or not path.is_relative_to(folder.resolve()):
        return src
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


# --- runs ---------------------------------------------------------------------------


def _load_run(entry: MethodEntry) -> _Run:
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


def _outcome(decision: dict | None) -> str | None:
    if not decision:
        return None
    if decision.get("forced"):
        return "promoted (forced)"
    return "promoted" if decision.get("promote") else "not promoted"


def _table_row(run: _Run) -> dict:
    entry = run.entry
    if entry.decision:
        decision = _outcome(entry.decision)
    elif entry.model_name:
        decision = "registered"
    else:
        decision = "not registered" if entry.not_registered else None
    return {
        "dataset": entry.dataset,
        "method": entry.method,
        "status": "ok" if run.ok else "failed",
        "primary_metric": run.card.get("primary_metric"),
        "primary": run.primary,
        "ci_low": _number(run.card.get("ci_low")) if run.ok else None,
        "ci_high": _number(run.card.get("ci_high")) if run.ok else None,
        "wall_seconds": run.cost("wall_seconds"),
        "peak_rss_mb": run.cost("peak_rss_mb"),
        "latency_p95_ms": run.cost("latency_p95_ms"),
        "decision": decision,
        "model_version": _model_version(entry),
        "error": None if run.ok else _short(" ".join(str(run.error).split()), ERROR_CHARS),
    }


def _model_version(entry: MethodEntry) -> str | None:
    if not entry.model_name:
        return None
    return f"{entry.model_name} v{entry.version}" if entry.version else entry.model_name


# --- sections -----------------------------------------------------------------------


def _header(review: Review, folder: Path) -> str:
    """Title, time, links and the champion of every registered model."""
    lines = [f"# {_inline(review.title)}", "", f"- **Created:** {_inline(review.created)}"]
    if review.flow_run_url:
        lines.append(f"- **Flow run:** {_link_md(review.flow_run_url, folder)}")
    if review.mlflow:
        if urlparse(review.mlflow).scheme in ("http", "https"):
            lines.append(f"- **MLflow:** {_link_md(review.mlflow, folder)}")
        else:
            lines.append(f"- **MLflow:** {_code(review.mlflow)}")
    lines += ["", "## Champions", ""]
    if review.champions:
        for name, version in review.champions.items():
            shown = f"version {_inline(str(version))}" if version else "none"
            lines.append(f"- {_code(name)}: {shown}")
    else:
        lines.append("No model is registered yet.")
    return "\n".join(lines)


def _dataset_section(name: str, data: DatasetEntry | None, runs: list[_Run], folder: Path) -> str:
    """Everything about one dataset: its data, the methods, charts, examples, decisions."""
    task = _task(runs)
    heading = f"## {_inline(name)}" + (f" ({task})" if task else "")
    parts = [heading, _data_part(data, folder), _best_line(runs)]
    parts.append(_methods_part(runs, task))
    parts.append(_comparison_part(name, runs, folder))
    parts.append(_loss_part(name, runs, folder))
    if task == "classification":
        parts.append(_confusion_part(name, runs, folder))
    if task in ("classification", "generation"):
        parts.append(_disagreements_part(runs, task))
    parts.append(_decisions_part(runs))
    return "\n\n".join(p for p in parts if p)


def _data_part(data: DatasetEntry | None, folder: Path) -> str:
    if data is None:
        return "### Data\n\nThis dataset was not prepared in this run."
    rows = ", ".join(f"{_inline(str(split))} {n:,}" for split, n in data.rows.items())
    total = sum(data.rows.values())
    lines = [
        "### Data",
        "",
        f"- **Version:** {_code(data.version)}",
        f"- **Rows:** {total:,} ({rows})" if data.rows else f"- **Rows:** {NONE}",
        f"- **Validation:** {_inline(data.validation)}",
    ]
    if data.data_docs:
        lines.append(f"- **Data Docs:** {_link_md(data.data_docs, folder)}")
    if data.report:
        lines.append(f"- **Dataset report:** {_link_md(data.report, folder)}")
    return "\n".join(lines)


def _best_line(runs: list[_Run]) -> str:
    scored = [r for r in runs if r.primary is not None]
    failed = [r for r in runs if not r.ok]
    if not scored:
        return f"**No method finished** ({len(failed)} of {len(runs)} failed)." if runs else ""
    best = max(scored, key=lambda r: r.primary)
    text = (
        f"**Best:** {_code(best.method)} with {best.card.get('primary_metric')} {_metric_ci(best)}"
    )
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
        f"{_cell(next(iter(primaries)))} [{level}]" if one_metric else f"primary [{level}]"
    )

    def primary_cell(run: _Run) -> str:
        if one_metric or not run.ok:
            return _metric_ci(run)
        return f"{_cell(run.card.get('primary_metric'))} {_metric_ci(run)}"

    columns: list[tuple[str, Callable[[_Run], str], bool]] = [
        ("method", lambda r: _code(r.method), True),
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
        ("model size MB", _size_cell, False),
        ("reused", lambda r: ", ".join(_cell(s) for s in r.entry.reused) or NONE, False),
        ("MLflow", _mlflow_cell, False),
    ]
    cells = [[fn(r) for r in runs] for _, fn, _ in columns]
    kept = [i for i, (_, _, always) in enumerate(columns) if always or set(cells[i]) != {NONE}]
    body = [[cells[i][row] for i in kept] for row in range(len(runs))]
    text = "### Methods\n\n" + _table([columns[i][0] for i in kept], body)
    failed = [r for r in runs if not r.ok]
    if failed:
        text += "\n\nFailed:\n\n" + "\n".join(
            f"- {_code(r.method)}: {_inline(_short(' '.join(str(r.error).split()), ERROR_CHARS))}"
            for r in failed
        )
    return text


def _comparison_part(name: str, runs: list[_Run], folder: Path) -> str:
    scored = [r for r in runs if r.primary is not None]
    if not scored:
        return "### Comparison\n\nNo method finished, so there is nothing to compare."
    path = _plot_comparison(name, scored, folder / f"comparison-{_slug(name)}.png")
    return f"### Comparison\n\n![Primary metric per method, {_inline(name)}]({path.name})"


def _loss_part(name: str, runs: list[_Run], folder: Path) -> str:
    curves = [
        r for r in runs if _loss_points(r.history, "loss") or _loss_points(r.history, "eval_loss")
    ]
    if not curves:
        return "### Loss curves\n\nNo method recorded a loss history."
    path = _plot_losses(name, curves, folder / f"loss-{_slug(name)}.png")
    return f"### Loss curves\n\n![Training loss per step, {_inline(name)}]({path.name})"


def _confusion_part(name: str, runs: list[_Run], folder: Path) -> str:
    """The confusion matrix of the best classifier, copied next to the report."""
    candidates = []
    for run in runs:
        plot = (run.card.get("plots") or {}).get("confusion_matrix")
        source = run.file(plot) if plot else None
        if run.primary is not None and source is not None and source.is_file():
            candidates.append((run.primary, run, source))
    if not candidates:
        return ""
    _, best, source = max(candidates, key=lambda c: c[0])
    target = folder / f"confusion-{_slug(name)}.png"
    shutil.copyfile(source, target)
    return (
        f"### Confusion matrix of the best classifier: {_code(best.method)}\n\n"
        f"![Confusion matrix, {_inline(best.method)}]({target.name})"
    )


def _disagreements_part(runs: list[_Run], task: str) -> str:
    """Test rows where the finished methods predict differently (rows aligned by position)."""
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
        text_column = next((c for c in ("text", "input") if c in first.columns), None)
        headers = ["row", *(["input"] if text_column else []), "reference", *map(_code, methods)]
        body = []
        for row in differ.index[:CLASSIFICATION_EXAMPLES]:
            cells = [str(row)]
            if text_column:
                cells.append(_cell(first.at[row, text_column], CLASSIFICATION_INPUT_CHARS))
            cells.append(_cell(reference[row]))
            for method in methods:
                guess = predictions.at[row, method]
                cells.append(_cell(guess) + (" ✓" if guess == reference[row] else ""))
            body.append(cells)
        return f"{heading}\n\n{note} The first {len(body)} (✓ = correct):\n\n" + _table(
            headers, body
        )
    # Generation: the prompts whose outputs differ most, one small table each.
    ranked = sorted(differ.index, key=lambda i: (-distinct[i], i))[:GENERATION_EXAMPLES]
    prompt_column = "prompt" if "prompt" in first.columns else None
    blocks = [f"{heading}\n\n{note} The {len(ranked)} with the most distinct outputs:"]
    for row in ranked:
        body = []
        if prompt_column:
            body.append(["prompt", _cell(first.at[row, prompt_column], GENERATION_CHARS)])
        body.append(["reference", _cell(reference[row], GENERATION_CHARS)])
        body += [[_code(m), _cell(predictions.at[row, m], GENERATION_CHARS)] for m in methods]
        blocks.append(f"Test row {row}:\n\n" + _table(["", "text"], body))
    return "\n\n".join(blocks)


def _decisions_part(runs: list[_Run]) -> str:
    """The promotion gate's verdict for every registered method, and why others were not."""
    registered = [r for r in runs if r.entry.model_name or r.entry.decision]
    skipped = [r for r in runs if r.entry.not_registered and r not in registered]
    if not registered and not skipped:
        return ""
    lines = ["### Promotion decisions"]
    if registered:
        headers = ["method", "model", "outcome", "versus", "metric: challenger / reference"]
        headers += ["delta [CI]", "test, p"]
        body = [_decision_cells(r) for r in registered]
        lines += ["", _table(headers, body), ""]
        for run in registered:
            decision = run.entry.decision or {}
            reason = decision.get("reason") or "No gate decision was recorded."
            limits = decision.get("limits") or {}
            if limits:
                reason += " Limits: " + "; ".join(f"{k}: {v}" for k, v in limits.items()) + "."
            lines.append(f"- {_code(run.method)}: {_inline(reason)}")
    if skipped:
        lines += ["", "Not registered:", ""]
        lines += [f"- {_code(r.method)}: {_inline(r.entry.not_registered)}" for r in skipped]
    return "\n".join(lines)


def _decision_cells(run: _Run) -> list[str]:
    entry, decision = run.entry, run.entry.decision or {}
    model = _code(_model_version(entry)) if entry.model_name else NONE
    if not decision:
        return [_code(run.method), model, "registered (no gate decision)", *[NONE] * 4]
    metric = decision.get("metric") or ""
    compared = (
        f"{_cell(metric)}: {_fmt_metric(_number(decision.get('challenger')), metric)} / "
        f"{_fmt_metric(_number(decision.get('reference')), metric)}"
    )
    delta = _number(decision.get("delta"))
    low, high = _number(decision.get("delta_ci_low")), _number(decision.get("delta_ci_high"))
    delta_text = NONE if delta is None else f"{delta:+.4f}"
    if delta is not None and low is not None and high is not None:
        delta_text += f" [{low:+.4f}, {high:+.4f}]"
    p_value = _number(decision.get("p_value"))
    test = decision.get("test") or NONE
    n = decision.get("n")
    tested = f"{_cell(test)}, p = {_fmt_p(p_value)}" + (f" (n={n})" if n else "")
    outcome = f"**{_outcome(decision)}**"
    return [
        _code(run.method),
        model,
        outcome,
        _cell(decision.get("versus") or NONE),
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
    rss, cuda = run.cost("peak_rss_mb"), run.cost("cuda_max_allocated_mb")
    if rss is None and cuda is None:
        return NONE
    text = _fmt_number(rss)
    return text + (f" (GPU {_fmt_number(cuda)})" if cuda else "")


def _latency_cell(run: _Run) -> str:
    p50, p95 = run.cost("latency_p50_ms"), run.cost("latency_p95_ms")
    if p50 is None and p95 is None:
        return NONE
    return f"{_fmt_number(p50)} / {_fmt_number(p95)}"


def _size_cell(run: _Run) -> str:
    size, adapter = run.cost("model_size_mb"), run.cost("adapter_size_mb")
    if size is None and adapter is None:
        return NONE
    text = _fmt_number(size)
    return text + (f" (adapter {_fmt_number(adapter)})" if adapter else "")


def _mlflow_cell(run: _Run) -> str:
    entry = run.entry
    if entry.run_url:
        label = entry.run_id[:8] if entry.run_id else "run"
        return f"[{_cell(label)}]({_url(entry.run_url)})"
    return _code(entry.run_id) if entry.run_id else NONE


# --- plots --------------------------------------------------------------------------


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


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
    fig = _figure(7.0, max(2.2, 0.5 * len(ordered) + 1.2))
    ax = fig.subplots()
    positions = list(range(len(ordered)))
    ax.barh(positions, values, xerr=[below, above], capsize=4, color="#4c72b0", alpha=0.85)
    ax.set_yticks(positions, [_short(r.method, 30) for r in ordered])
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
    fig.savefig(path, format="png")
    return path


def _loss_points(history: list[dict], key: str) -> list[tuple[float, float]]:
    points = []
    for row in history:
        step, value = _number(row.get("step")), _number(row.get(key))
        if step is not None and value is not None:
            points.append((step, value))
    return points


def _plot_losses(name: str, runs: list[_Run], path: Path) -> Path:
    """Training loss per step, one colour per method; validation loss dashed."""
    fig = _figure(7.5, 4.2)
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
    fig.savefig(path, format="png")
    return path


# --- formatting ---------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown pipe table; cells must already be escaped."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object, width: int = 10_000) -> str:
    """Text safe inside a table cell: cut to ``width``, HTML and pipes escaped, newlines <br>."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    text = html.escape(_short(str(value), width), quote=False).replace("|", "\\|")
    return re.sub(r"\r\n|\r|\n", "<br>", text)


def _inline(value: object) -> str:
    """Text safe on one Markdown line (and in a table cell)."""
    return html.escape(" ".join(str(value).split()), quote=False).replace("|", "\\|")


def _code(value: object) -> str:
    """A code span; backticks inside are dropped rather than escaped (Markdown can't)."""
    text = " ".join(str(value).replace("`", "'").split())
    return f"`{text.replace('|', chr(92) + '|')}`"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _url(target: str) -> str:
    return quote(target, safe=":/?#[]@!$&'()*+,;=%~")


def _link_md(target: str, folder: Path) -> str:
    """A Markdown link; local paths (as seen from the working directory) are made relative
    to the report so the link survives moving the workspace."""
    parsed = urlparse(target)
    if parsed.scheme in ("http", "https"):
        return f"[{_inline(target)}]({_url(target)})"
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(target)
    path = Path(os.path.relpath(path.resolve(), folder.resolve()))
    return f"[{_inline(path.name or target)}]({quote(path.as_posix())})"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "dataset"


def _number(value: object) -> float | None:
    """A finite float, or None for anything else (missing, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt_metric(value: float | None, metric: str | None = None) -> str:
    if value is None:
        return NONE
    return f"{value:.2f}" if metric in PERCENT_SCALE else f"{value:.3f}"


def _fmt_p(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:.3g}" if value >= 0.001 else "< 0.001"


def _fmt_number(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


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
