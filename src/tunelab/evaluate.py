"""Metrics as pure functions over predictions (no model code, no hub downloads).

The tables read here are the predictions tables training runs write, one row per test
example: classification ``reference``, ``prediction`` and optional ``prob_<label>``
columns; generation ``prompt``, ``reference``, ``prediction``; preference
``reward_margin``, ``reward_win``, ``loglik_win``, ``before_loglik_win`` (wins are 1, ties
0.5, losses 0: a policy that equals its reference has reward accuracy 0.5, not 0).

Paired tests are two-sided and their intervals invert them: a delta interval at ``level``
excludes 0 exactly when p <= 1 - level, so a gate at significance s reads both at 1 - s.

Resampling statistics (:func:`bootstrap_ci`, :func:`paired_bootstrap`) reduce a table once
to per-row arrays and evaluate all resamples on those arrays, so a thousand resamples cost
milliseconds rather than a thousand calls into scikit-learn or sacrebleu.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

TASKS = ("classification", "generation", "chat", "preference", "prompts")
# Chat runs answer the last assistant turn of each conversation: scored like generation.
SCORED_AS = {"chat": "generation"}
ROUGE_KINDS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "micro_f1")
CALIBRATION_METRICS = ("ece", "mean_confidence")
PER_CLASS_PREFIXES = ("precision_", "recall_", "f1_")
GENERATION_METRICS = (*ROUGE_KINDS, "bleu", "chrf", "mean_output_words", "mean_reference_words")
PREFERENCE_COLUMNS = {
    "reward_accuracy": "reward_win",
    "reward_margin": "reward_margin",
    "loglik_win_rate": "loglik_win",
    "before_loglik_win_rate": "before_loglik_win",
}
# A policy's held-out table (data.task=prompts, grpo.py): one row per prompt, a mean per
# column. Rewards are reward (the weighted total) and reward_<name>, each with _before.
PROMPTS_COLUMNS = {
    "reward": "reward",
    "reward_before": "reward_before",
    "kl": "kl",
    "completion_words": "words",
    "before_completion_words": "words_before",
}
PROB_PREFIX = "prob_"
SCORE_PREFIX = "_score_"

# Bound on resamples x rows held at once, so large tables do not build a huge index matrix.
_CHUNK_ELEMENTS = 1_000_000
# The smallest positive float (an underflowed p-value, a bound just off 0).
_TINY = math.ulp(0.0)

# Maps a (resamples, rows) matrix of row indices to one metric value per resample.
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PairedTest:
    """Outcome of a two-sided paired test of challenger against reference on a metric.

    ``ci_low``/``ci_high`` bound ``delta`` (challenger - reference) at the level the test
    was run with; the interval excludes 0 exactly when ``p_value <= 1 - level``.
    """

    test: str
    metric: str
    n: int
    challenger: float
    reference: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float


# Classification ------------------------------------------------------------------------


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str] | None = None,
    probabilities: np.ndarray | Sequence[Sequence[float]] | None = None,
) -> dict[str, float]:
    """Accuracy, macro / micro F1 and per-class precision, recall, F1 (scikit-learn).

    With ``probabilities`` (rows aligned to ``y_true``, columns to ``labels``) also the
    expected calibration error and mean confidence.
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    labels = list(labels) if labels is not None else sorted(set(y_true) | set(y_pred))
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "micro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)
        ),
    }
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    for i, label in enumerate(labels):
        metrics[f"precision_{label}"] = float(precision[i])
        metrics[f"recall_{label}"] = float(recall[i])
        metrics[f"f1_{label}"] = float(f1[i])
    if probabilities is not None:
        probs = _probabilities(probabilities, len(y_true), labels)
        metrics["ece"] = expected_calibration_error(y_true, probs, labels)
        metrics["mean_confidence"] = float(probs.max(axis=1).mean()) if len(probs) else 0.0
    return metrics


def expected_calibration_error(
    y_true: Sequence[str],
    probabilities: np.ndarray | Sequence[Sequence[float]],
    labels: Sequence[str],
    bins: int = 10,
) -> float:
    """Expected calibration error of the top-probability prediction over equal-width bins.

    scikit-learn has no ECE; this is the usual definition (Naeini et al. 2015, Guo et al.
    2017) with bins (0, 1/bins], ..., ((bins-1)/bins, 1].
    """
    labels = list(labels)
    probs = _probabilities(probabilities, len(y_true), labels)
    if len(probs) == 0:
        return 0.0
    statistic = _ece_statistic(np.asarray(y_true, dtype=object).astype(str), probs, labels, bins)
    return float(statistic(np.arange(len(probs))[None, :])[0])


def confusion_matrix_plot(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
    path: Path | str,
    title: str,
) -> Path:
    """Write a confusion matrix PNG (rows true, columns predicted) and return its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    labels = list(labels)
    side = max(4.0, 0.6 * len(labels) + 2.0)
    # A bare Agg figure: no pyplot state, no GUI backend, nothing left open to close.
    figure = Figure(figsize=(side, side))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ConfusionMatrixDisplay.from_predictions(
        list(y_true), list(y_pred), labels=labels, ax=ax, colorbar=False, xticks_rotation=45
    )
    ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    figure.clear()
    return path


# Generation ----------------------------------------------------------------------------


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measures (rouge-score, offline)."""
    scores = _rouge_arrays(predictions, references, ROUGE_KINDS)
    return {kind: float(values.mean()) if len(values) else 0.0 for kind, values in scores.items()}


def per_example_rouge(
    predictions: Sequence[str], references: Sequence[str], kind: str = "rougeL"
) -> list[float]:
    """ROUGE F-measure of each prediction against its reference."""
    if kind not in ROUGE_KINDS:
        raise ValueError(f"Unknown ROUGE kind {kind!r}; use one of {', '.join(ROUGE_KINDS)}.")
    return _rouge_arrays(predictions, references, (kind,))[kind].tolist()


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE F-measures, corpus BLEU and chrF (sacrebleu, 0-100) and mean lengths."""
    import sacrebleu

    predictions = [str(p) for p in predictions]
    references = [str(r) for r in references]
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "pass one prediction per reference."
        )
    if not predictions:
        return dict.fromkeys(GENERATION_METRICS, float("nan"))
    metrics = rouge_scores(predictions, references)
    metrics["bleu"] = float(sacrebleu.corpus_bleu(predictions, [references]).score)
    metrics["chrf"] = float(sacrebleu.corpus_chrf(predictions, [references]).score)
    metrics["mean_output_words"] = float(np.mean([len(p.split()) for p in predictions]))
    metrics["mean_reference_words"] = float(np.mean([len(r.split()) for r in references]))
    return metrics


def perplexity(loss: float) -> float:
    """exp(mean token loss); inf where that overflows a float."""
    return math.exp(loss) if loss < 700 else math.inf


# Preference ----------------------------------------------------------------------------


def preference_metrics(table: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """Reward accuracy (ties half) and margin, log-likelihood win rate and mean log-ratios
    of a DPO predictions table (``reward_margin``, ``loglik_win`` and the
    ``logp_{chosen,rejected}_{policy,ref}`` columns); non-finite values are left out."""
    if table.empty:
        return {}
    metrics = {
        "reward_accuracy": metric_value(table, "reward_accuracy", "preference"),
        "reward_margin": table["reward_margin"].mean(),
        "loglik_win_rate": table["loglik_win"].mean(),
        "chosen_logratio": (table["logp_chosen_policy"] - table["logp_chosen_ref"]).mean(),
        "rejected_logratio": (table["logp_rejected_policy"] - table["logp_rejected_ref"]).mean(),
        "pairs": len(table),
    }
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def win_scores(margins: Sequence[float] | np.ndarray) -> np.ndarray:
    """1.0 where a margin is positive, 0.5 where it is 0 (a tie), 0.0 where negative."""
    values = np.asarray(margins, dtype=float)
    return np.where(values > 0, 1.0, np.where(values == 0, 0.5, 0.0))


def loglik_margin_metrics(
    margins: Sequence[float], sum_margins: Sequence[float]
) -> dict[str, float]:
    """How often chosen beats rejected by its log-likelihood margin (mean per token, and
    summed: ``_sum``), a tie counting half, and the mean per-token margin."""

    def win_rate(values: Sequence[float]) -> float:
        return sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in values) / len(values)

    return {
        "loglik_win_rate": win_rate(margins),
        "loglik_win_rate_sum": win_rate(sum_margins),
        "mean_loglik_margin": sum(margins) / len(margins),
    }


def invalid_rate(predictions: Sequence[str]) -> float:
    """Share of empty predictions (answers in which no label was found)."""
    return sum(pred == "" for pred in predictions) / len(predictions)


# Tables ---------------------------------------------------------------------------------


def table_metrics(
    table: pd.DataFrame, task: str, labels: Sequence[str] | None = None
) -> dict[str, float]:
    """All metrics of a predictions table for ``task``."""
    task = _check_task(task)
    if task == "classification":
        y_true = _strings(table, "reference", task)
        y_pred = _strings(table, "prediction", task)
        if labels is None:
            metrics = classification_metrics(y_true, y_pred)
            prob_labels = _prob_labels(table)
        else:
            labels = list(labels)
            metrics = classification_metrics(y_true, y_pred, labels)
            complete = all(f"{PROB_PREFIX}{label}" in table.columns for label in labels)
            prob_labels = labels if complete else []
        if prob_labels:
            probs = table[[f"{PROB_PREFIX}{label}" for label in prob_labels]].to_numpy(float)
            metrics["ece"] = expected_calibration_error(y_true, probs, prob_labels)
            metrics["mean_confidence"] = float(probs.max(axis=1).mean()) if len(probs) else 0.0
        return metrics
    if task == "generation":
        return generation_metrics(
            _strings(table, "prediction", task), _strings(table, "reference", task)
        )
    if task == "prompts":
        names = [*PROMPTS_COLUMNS, *_reward_columns(table)]
        metrics = {
            name: metric_value(table, name, task)
            for name in names
            if _prompts_column(table, name) in table
        }
        metrics["prompts"] = float(len(table))
        return metrics
    # A DPO table has every column; a reward model's has no log-likelihoods.
    metrics = {
        name: metric_value(table, name, task)
        for name, column in PREFERENCE_COLUMNS.items()
        if column in table.columns or (name == "reward_accuracy" and "reward_margin" in table)
    }
    metrics["pairs"] = float(len(table))
    return metrics


def metric_value(table: pd.DataFrame, metric: str, task: str) -> float:
    """One metric of a predictions table.

    ROUGE metrics use a precomputed ``_score_<metric>`` column when the table has one
    (see :func:`add_example_scores`). Classification F1 here is over the labels that occur
    in the table, as scikit-learn does when no label list is given.
    """
    statistic = _statistic(table, metric, task)
    if len(table) == 0:
        return float("nan")
    return float(statistic(np.arange(len(table))[None, :])[0])


def add_example_scores(table: pd.DataFrame, metrics: Sequence[str] = ROUGE_KINDS) -> pd.DataFrame:
    """A copy of a generation table with ``_score_<kind>`` columns, to score ROUGE once."""
    unknown = [m for m in metrics if m not in ROUGE_KINDS]
    if unknown:
        raise ValueError(
            f"Per-example scores exist for {', '.join(ROUGE_KINDS)}, not {', '.join(unknown)}."
        )
    scores = _rouge_arrays(
        _strings(table, "prediction", "generation"),
        _strings(table, "reference", "generation"),
        tuple(metrics),
    )
    out = table.copy()
    for kind, values in scores.items():
        out[f"{SCORE_PREFIX}{kind}"] = values
    return out


# Resampling ----------------------------------------------------------------------------


def bootstrap_ci(
    table: pd.DataFrame,
    metric: str,
    task: str,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric over resampled rows."""
    statistic = _statistic(table, metric, task)
    n = _nonempty(table, metric)
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [statistic(idx) for idx in _index_chunks(rng, n, _positive(resamples, "resamples"))]
    )
    low, high = _percentiles(values, level)
    return low, high


def paired_bootstrap(
    challenger_table: pd.DataFrame,
    reference_table: pd.DataFrame,
    metric: str,
    task: str,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedTest:
    """Two-sided paired bootstrap test of the challenger's metric against the reference's.

    Both tables are resampled with the same row indices, so per-example difficulty cancels.
    The p-value and the percentile interval come from the same resampled deltas: with k the
    number of deltas on the far side of 0 (0 counts for both sides), p = 2 (k + 1) / (B + 1),
    never 0; the interval is the set of shifts such a test would not reject at
    ``1 - level``, so it excludes 0 exactly when p <= 1 - level.
    """
    n = _check_aligned(challenger_table, reference_table)
    challenger_stat = _statistic(challenger_table, metric, task)
    reference_stat = _statistic(reference_table, metric, task)
    _nonempty(challenger_table, metric)
    everything = np.arange(n)[None, :]
    challenger = float(challenger_stat(everything)[0])
    reference = float(reference_stat(everything)[0])
    rng = np.random.default_rng(seed)
    deltas = np.concatenate(
        [
            challenger_stat(idx) - reference_stat(idx)
            for idx in _index_chunks(rng, n, _positive(resamples, "resamples"))
        ]
    )
    p_value = _bootstrap_p(deltas, 0.0)
    low, high = _bootstrap_interval(deltas, _alpha(level))
    return PairedTest(
        test="paired_bootstrap",
        metric=metric,
        n=n,
        challenger=challenger,
        reference=reference,
        delta=challenger - reference,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
    )


def mcnemar(
    challenger_correct: Sequence[bool],
    reference_correct: Sequence[bool],
    level: float = 0.95,
    metric: str = "accuracy",
) -> PairedTest:
    """Exact two-sided McNemar test of the challenger's accuracy against the reference's.

    Only the discordant pairs count: b (challenger right, reference wrong) is binomial with
    m = b + c and 1/2 under H0, so p = min(1, 2 P(X >= max(b, c))). The interval is the
    exact (Clopper-Pearson) interval of b / m at ``level``, the one this test inverts,
    mapped to the accuracy difference delta = m / n (2 b / m - 1): it excludes 0 exactly when
    p <= 1 - level.
    """
    from scipy.stats import beta, binom

    challenger = np.asarray(challenger_correct, dtype=bool)
    reference = np.asarray(reference_correct, dtype=bool)
    if challenger.shape != reference.shape:
        raise ValueError(
            f"Challenger has {challenger.size} results and reference {reference.size}; "
            "McNemar needs one pair of results per test example."
        )
    n = int(challenger.size)
    if n == 0:
        raise ValueError("McNemar needs at least one test example; both inputs are empty.")
    b = int(np.sum(challenger & ~reference))
    c = int(np.sum(~challenger & reference))
    m = b + c
    alpha = _alpha(level)
    if m == 0:
        p_value, low, high = 1.0, 0.0, 0.0
    else:
        tail = float(binom.sf(max(b, c) - 1, m, 0.5))
        # 2^-m underflows for thousands of discordant pairs; the p-value is still above 0.
        p_value = min(1.0, max(2.0 * tail, _TINY))
        pi_low = float(beta.ppf(alpha / 2, b, m - b + 1)) if b > 0 else 0.0
        pi_high = float(beta.ppf(1 - alpha / 2, b + 1, m - b)) if b < m else 1.0
        low, high = (m / n) * (2 * pi_low - 1), (m / n) * (2 * pi_high - 1)
        # At p == alpha the exact bound is 0 itself; round-off must not split test and interval.
        if p_value <= alpha:
            low, high = (max(low, _TINY), high) if b > c else (low, min(high, -_TINY))
        else:
            low, high = min(low, 0.0), max(high, 0.0)
    return PairedTest(
        test="mcnemar",
        metric=metric,
        n=n,
        challenger=float(challenger.mean()),
        reference=float(reference.mean()),
        delta=float((b - c) / n),
        ci_low=float(low),
        ci_high=float(high),
        p_value=float(p_value),
    )


def paired_test(
    challenger_table: pd.DataFrame,
    reference_table: pd.DataFrame,
    metric: str,
    task: str,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedTest:
    """McNemar for classification accuracy (exact, cheap), the paired bootstrap otherwise."""
    if task == "classification" and metric == "accuracy":
        _check_aligned(challenger_table, reference_table)
        return mcnemar(
            _correct(challenger_table), _correct(reference_table), level=level, metric=metric
        )
    return paired_bootstrap(challenger_table, reference_table, metric, task, resamples, level, seed)


# Latency -------------------------------------------------------------------------------


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Median, 95th percentile and mean latency in milliseconds."""
    values = np.asarray(seconds, dtype=float) * 1000.0
    if values.size == 0:
        nan = float("nan")
        return {
            "latency_p50_ms": nan,
            "latency_p95_ms": nan,
            "latency_mean_ms": nan,
            "latency_examples": 0,
        }
    return {
        "latency_p50_ms": float(np.percentile(values, 50)),
        "latency_p95_ms": float(np.percentile(values, 95)),
        "latency_mean_ms": float(values.mean()),
        "latency_examples": int(values.size),
    }


# Internals -----------------------------------------------------------------------------


def _statistic(table: pd.DataFrame, metric: str, task: str) -> Statistic:
    """Reduce a table to arrays once; the result maps row-index matrices to metric values."""
    task = _check_task(task)
    if task == "classification":
        return _classification_statistic(table, metric)
    if task == "generation":
        return _generation_statistic(table, metric)
    if task == "prompts":
        column = _prompts_column(table, metric)
        if column not in table.columns:
            _unknown_metric(table, metric, task)
        return _mean_statistic(table[column].to_numpy(dtype=float))
    column = PREFERENCE_COLUMNS.get(metric)
    if column is None:
        _unknown_metric(table, metric, task)
    if metric == "reward_accuracy" and "reward_margin" in table.columns:
        # From the margin, so tables whose reward_win counted ties as losses score the same.
        return _mean_statistic(win_scores(table["reward_margin"].to_numpy(dtype=float)))
    if column not in table.columns:
        raise ValueError(
            f"Metric {metric!r} needs a {column!r} column in the preference predictions "
            f"table; it has {', '.join(map(str, table.columns)) or 'no columns'}."
        )
    return _mean_statistic(table[column].to_numpy(dtype=float))


def _classification_statistic(table: pd.DataFrame, metric: str) -> Statistic:
    task = "classification"
    if metric in CALIBRATION_METRICS:
        prob_labels = _prob_labels(table)
        if not prob_labels:
            _unknown_metric(table, metric, task)
        probs = table[[f"{PROB_PREFIX}{label}" for label in prob_labels]].to_numpy(float)
        if metric == "mean_confidence":
            return _mean_statistic(probs.max(axis=1))
        return _ece_statistic(np.asarray(_strings(table, "reference", task)), probs, prob_labels)
    y_true = np.asarray(_strings(table, "reference", task))
    y_pred = np.asarray(_strings(table, "prediction", task))
    if metric in ("accuracy", "micro_f1"):
        # Single-label, every label counted: micro F1 equals accuracy.
        return _mean_statistic((y_true == y_pred).astype(float))
    labels, codes = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    true_codes, pred_codes = codes[: len(y_true)], codes[len(y_true) :]
    k = len(labels)
    if metric == "macro_f1":

        def macro_f1(idx: np.ndarray) -> np.ndarray:
            true, predicted, hits = _class_counts(true_codes, pred_codes, k, idx)
            support = true + predicted
            present = support > 0
            f1 = np.divide(2 * hits, support, out=np.zeros_like(hits), where=present)
            return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)

        return macro_f1
    for prefix in PER_CLASS_PREFIXES:
        if metric.startswith(prefix) and metric[len(prefix) :] in labels:
            column = int(np.searchsorted(labels, metric[len(prefix) :]))
            kind = prefix[:-1]

            def per_class(idx: np.ndarray, column: int = column, kind: str = kind) -> np.ndarray:
                true, predicted, hits = _class_counts(true_codes, pred_codes, k, idx)
                tp = hits[:, column]
                base = {
                    "precision": predicted[:, column],
                    "recall": true[:, column],
                    "f1": true[:, column] + predicted[:, column],
                }[kind]
                scale = 2.0 if kind == "f1" else 1.0
                return np.divide(scale * tp, base, out=np.zeros_like(tp), where=base > 0)

            return per_class
    _unknown_metric(table, metric, task)


def _generation_statistic(table: pd.DataFrame, metric: str) -> Statistic:
    task = "generation"
    if metric not in GENERATION_METRICS:
        _unknown_metric(table, metric, task)
    if metric in ROUGE_KINDS:
        cached = f"{SCORE_PREFIX}{metric}"
        if cached in table.columns:
            return _mean_statistic(table[cached].to_numpy(dtype=float))
        return _mean_statistic(
            _rouge_arrays(
                _strings(table, "prediction", task), _strings(table, "reference", task), (metric,)
            )[metric]
        )
    if metric == "mean_output_words":
        return _mean_statistic(_word_counts(_strings(table, "prediction", task)))
    if metric == "mean_reference_words":
        return _mean_statistic(_word_counts(_strings(table, "reference", task)))
    from sacrebleu.metrics import BLEU, CHRF

    scorer = BLEU() if metric == "bleu" else CHRF()
    predictions = _strings(table, "prediction", task)
    references = _strings(table, "reference", task)
    if not predictions:
        return lambda idx: np.full(len(idx), np.nan)
    # Corpus BLEU / chrF are functions of summed per-segment statistics; sacrebleu's own
    # paired tests resample these the same way (sacrebleu.significance).
    segments = np.asarray(scorer._extract_corpus_statistics(predictions, [references]))

    def corpus_score(idx: np.ndarray) -> np.ndarray:
        sums = segments[idx].sum(axis=1)
        return np.array([scorer._compute_score_from_stats(row).score for row in sums])

    return corpus_score


def _mean_statistic(values: np.ndarray) -> Statistic:
    values = np.asarray(values, dtype=float)
    return lambda idx: values[idx].mean(axis=1)


def _class_counts(
    true_codes: np.ndarray, pred_codes: np.ndarray, k: int, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-resample true, predicted and correct counts per class, shape (resamples, k)."""
    m = idx.shape[0]
    # Offsetting each resample's codes by k * row lets one bincount count all resamples.
    offset = (np.arange(m) * k)[:, None]
    true = (true_codes[idx] + offset).ravel()
    pred = (pred_codes[idx] + offset).ravel()
    size = m * k
    hits = np.bincount(true[true == pred], minlength=size).reshape(m, k).astype(float)
    true_counts = np.bincount(true, minlength=size).reshape(m, k).astype(float)
    pred_counts = np.bincount(pred, minlength=size).reshape(m, k).astype(float)
    return true_counts, pred_counts, hits


def _ece_statistic(
    y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], bins: int = 10
) -> Statistic:
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}.")
    confidence = probs.max(axis=1)
    right = (np.asarray(labels, dtype=object)[probs.argmax(axis=1)] == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left" puts a confidence equal to an edge in the lower bin: bins are (a, b].
    bin_of = np.searchsorted(edges[1:-1], confidence, side="left")

    def ece(idx: np.ndarray) -> np.ndarray:
        m, n = idx.shape
        slots = (bin_of[idx] + (np.arange(m) * bins)[:, None]).ravel()
        conf_sum = np.bincount(slots, confidence[idx].ravel(), minlength=m * bins)
        right_sum = np.bincount(slots, right[idx].ravel(), minlength=m * bins)
        # ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)| = sum_m |sum right - sum conf| / n
        return np.abs(right_sum - conf_sum).reshape(m, bins).sum(axis=1) / n

    return ece


def _rouge_arrays(
    predictions: Sequence[str], references: Sequence[str], kinds: Sequence[str]
) -> dict[str, np.ndarray]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    values = {kind: [] for kind in kinds}
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(str(ref), str(pred))
        for kind in kinds:
            values[kind].append(scores[kind].fmeasure)
    return {kind: np.asarray(v, dtype=float) for kind, v in values.items()}


def _word_counts(texts: Sequence[str]) -> np.ndarray:
    return np.array([len(t.split()) for t in texts], dtype=float)


def _index_chunks(rng: np.random.Generator, n: int, resamples: int):
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        yield rng.integers(0, n, size=(min(chunk, resamples - start), n))


def _bootstrap_p(deltas: np.ndarray, null: float) -> float:
    """Two-sided p of ``null`` against resampled deltas: 2 (k + 1) / (B + 1), k the fewer of
    the deltas at or below and at or above it."""
    below = int(np.count_nonzero(deltas <= null))
    above = int(np.count_nonzero(deltas >= null))
    return min(1.0, 2.0 * (min(below, above) + 1) / (deltas.size + 1))


def _bootstrap_interval(deltas: np.ndarray, alpha: float) -> tuple[float, float]:
    """The shifts whose :func:`_bootstrap_p` exceeds ``alpha``: order statistics of the deltas.

    A shift x has p > alpha iff at least j - 1 deltas lie at or below x and at or above it,
    j the smallest count with 2 j / (B + 1) > alpha (the same expression as the p-value).
    """
    size = deltas.size
    j = max(1, math.floor(alpha * (size + 1) / 2) - 1)
    while 2.0 * j / (size + 1) <= alpha:
        j += 1
    if j == 1:
        # Too few resamples to reject at alpha: no shift is excluded.
        return -math.inf, math.inf
    ordered = np.sort(deltas)
    return float(ordered[j - 2]), float(ordered[size - j + 1])


def _alpha(level: float) -> float:
    # 1 - level as the user wrote it: 1 - 0.95 is 0.050000000000000044 in floats.
    return round(1.0 - _check_level(level), 12)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - _check_level(level)) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}.")
    return float(level)


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}.")
    return int(value)


def _nonempty(table: pd.DataFrame, metric: str) -> int:
    if len(table) == 0:
        raise ValueError(f"Cannot resample {metric!r} over an empty predictions table.")
    return len(table)


def _check_task(task: str) -> str:
    """The task whose metrics score ``task`` (chat: generation), or a ValueError."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; use one of {', '.join(TASKS)}.")
    return SCORED_AS.get(task, task)


def _check_aligned(challenger: pd.DataFrame, reference: pd.DataFrame) -> int:
    """Paired tests compare row i with row i: same length and, where known, same examples."""
    if len(challenger) != len(reference):
        raise ValueError(
            f"Challenger table has {len(challenger)} rows and reference table "
            f"{len(reference)}; paired tests need predictions on the same test split, "
            "one row per example in the same order."
        )
    for column in ("source_row", "reference"):
        if column in challenger.columns and column in reference.columns:
            left = challenger[column].astype(str).to_numpy()
            right = reference[column].astype(str).to_numpy()
            mismatch = np.flatnonzero(left != right)
            if mismatch.size:
                row = int(mismatch[0])
                raise ValueError(
                    f"Tables are not row-aligned: column {column!r} differs at row {row} "
                    f"({left[row]!r} vs {right[row]!r}) and {mismatch.size - 1} more rows; "
                    "compare predictions on the same test split in the same order."
                )
    return len(challenger)


def _correct(table: pd.DataFrame) -> np.ndarray:
    task = "classification"
    return np.asarray(_strings(table, "reference", task)) == np.asarray(
        _strings(table, "prediction", task)
    )


def _strings(table: pd.DataFrame, column: str, task: str) -> list[str]:
    if column not in table.columns:
        raise ValueError(
            f"A {task} predictions table needs a {column!r} column; it has "
            f"{', '.join(map(str, table.columns)) or 'no columns'}."
        )
    # Empty predictions come back as NaN from CSV; they are empty strings.
    return table[column].fillna("").astype(str).tolist()


def _prob_labels(table: pd.DataFrame) -> list[str]:
    return [c[len(PROB_PREFIX) :] for c in table.columns if str(c).startswith(PROB_PREFIX)]


def _probabilities(
    probabilities: np.ndarray | Sequence[Sequence[float]], n: int, labels: Sequence[str]
) -> np.ndarray:
    probs = np.asarray(probabilities, dtype=float)
    if probs.shape != (n, len(labels)):
        raise ValueError(
            f"probabilities have shape {probs.shape}; expected ({n}, {len(labels)}): "
            "one row per example, one column per label in the order of `labels`."
        )
    return probs


def _available(table: pd.DataFrame, task: str) -> list[str]:
    if task == "classification":
        names = list(CLASSIFICATION_METRICS)
        if _prob_labels(table):
            names += CALIBRATION_METRICS
        present = set()
        for column in ("reference", "prediction"):
            if column in table.columns:
                present |= set(table[column].fillna("").astype(str))
        names += [f"{prefix}{label}" for prefix in PER_CLASS_PREFIXES for label in sorted(present)]
        return names
    if task == "generation":
        return list(GENERATION_METRICS)
    if task == "prompts":
        return [
            m
            for m in (*PROMPTS_COLUMNS, *_reward_columns(table))
            if _prompts_column(table, m) in table
        ]
    return list(PREFERENCE_COLUMNS)


def _reward_columns(table: pd.DataFrame) -> list[str]:
    """The per-reward columns of a policy's table: reward_<name> and reward_<name>_before."""
    return [
        str(c)
        for c in table.columns
        if str(c).startswith("reward_") and str(c) not in PROMPTS_COLUMNS and c != "reward_sources"
    ]


def _prompts_column(table: pd.DataFrame, metric: str) -> str:
    """The column a policy metric averages (its own name for the per-reward ones)."""
    return PROMPTS_COLUMNS.get(metric, metric)


def _unknown_metric(table: pd.DataFrame, metric: str, task: str) -> NoReturn:
    raise ValueError(
        f"Unknown metric {metric!r} for task {task!r}; this table has: "
        f"{', '.join(_available(table, task)) or 'none'}."
    )
