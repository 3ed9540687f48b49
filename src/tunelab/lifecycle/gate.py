"""The promotion gate: may a challenger replace the champion? Pure logic, no MLflow.

A challenger is compared with one reference on the same frozen test split, row by row:
the champion if there is one, else the best baseline: the best recorded baseline run on
the same test split, or, when none was run, the trivial one built in (majority class,
echoing the prompt, the untrained reference policy, a policy before its RL). It is promoted
only if its primary metric beats the reference by at least ``registry.min_improvement``
(None: the task's default, :data:`DEFAULT_MIN_IMPROVEMENT`), a two-sided paired test
(exact McNemar for accuracy, paired bootstrap otherwise) gives p <= ``registry.significance``,
and it meets the optional limits on latency and size (and a policy's KL budget). The delta
interval is at level 1 - ``registry.significance``, so a promoted challenger's interval
excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd

from tunelab import evaluate
from tunelab.config import RunConfig
from tunelab.scorecard import Scorecard

# registry.min_improvement when the config leaves it unset. A policy equal to its reference
# ties every pair (reward accuracy 0.5), and a noise-trained one wins about half by chance:
# a DPO policy must order at least 10 more pairs in 100 right than that.
DEFAULT_MIN_IMPROVEMENT = {"preference": 0.1}
# Resamples beyond each end of the bootstrap interval, so small significances stay reachable.
_TAIL_RESAMPLES = 10


@dataclass
class Reference:
    """What a challenger is compared with."""

    label: str  # "champion v3", "baseline-tfidf (run 1a2b3c)", "majority class (built in)"
    table: pd.DataFrame
    test_split: str | None
    version: str | None = None
    run_id: str | None = None


@dataclass
class Decision:
    promote: bool
    reason: str
    metric: str
    versus: str = ""
    challenger: float = math.nan
    reference: float = math.nan
    delta: float = math.nan
    p_value: float = math.nan
    test: str = ""
    n: int = 0
    delta_ci_low: float = math.nan
    delta_ci_high: float = math.nan
    min_improvement: float = 0.0
    significance: float = 0.05
    limits: dict[str, str] = field(default_factory=dict)
    forced: bool = False

    @property
    def outcome(self) -> str:
        if self.forced:
            return "promoted (forced)"
        return "promoted" if self.promote else "not promoted"

    def to_dict(self) -> dict:
        return asdict(self)

    def to_tags(self) -> dict[str, str]:
        tags = {
            "gate.decision": self.outcome,
            "gate.reason": self.reason[:5000],
            "gate.metric": self.metric,
            "gate.versus": self.versus,
        }
        for key in ("challenger", "reference", "delta", "p_value"):
            value = getattr(self, key)
            if isinstance(value, float) and math.isfinite(value):
                tags[f"gate.{key}"] = f"{value:.6g}"
        if self.test:
            tags["gate.test"] = self.test
        return tags

    def to_markdown(self, name: str, version: str) -> str:
        def f(x: float) -> str:
            return f"{x:.4f}" if isinstance(x, float) and math.isfinite(x) else "n/a"

        p = format_p(self.p_value) if math.isfinite(self.p_value) else "n/a"
        lines = [
            f"### Promotion gate: {name} version {version}: **{self.outcome}**",
            "",
            self.reason,
            "",
            "| | value |",
            "|---|---|",
            f"| compared with | {self.versus or 'n/a'} |",
            f"| {self.metric} challenger / reference | {f(self.challenger)} / "
            f"{f(self.reference)} |",
            f"| delta ({interval_level(self.significance)} CI) | {f(self.delta)} "
            f"({f(self.delta_ci_low)} to {f(self.delta_ci_high)}) |",
            f"| paired test (two-sided), p | {self.test or 'n/a'}, {p} (n={self.n}) |",
            f"| required | delta >= {self.min_improvement:g} and p <= {self.significance:g} |",
        ]
        for limit, verdict in self.limits.items():
            lines.append(f"| {limit} | {verdict} |")
        return "\n".join(lines) + "\n"


def implicit_baseline(card: Scorecard, table: pd.DataFrame) -> Reference | None:
    """The trivial baseline of the task, scored on the challenger's own test rows."""
    if card.task == "classification" and card.majority_label is not None:
        base = table.copy()
        base["prediction"] = card.majority_label
        base["correct"] = base["reference"].astype(str) == card.majority_label
        for column in [c for c in base.columns if c.startswith("prob_")]:
            base[column] = (column == f"prob_{card.majority_label}") * 1.0
        label = f"majority class '{card.majority_label}' (built in)"
    elif card.task == "generation" and "prompt" in table.columns:
        base = table.copy()
        base["prediction"] = base["prompt"]
        label = "echo the prompt (built in)"
    elif card.task == "chat" and "prompt" in table.columns:
        base = table.copy()
        base["prediction"] = [_last_user_turn(text) for text in base["prompt"]]
        label = "echo the last user turn (built in)"
    elif card.task == "preference" and "reward_margin" in table.columns:
        # Before training the policy is the reference: every implicit reward is 0, every
        # pair a tie (half a win).
        base = table.copy()
        base["reward_margin"] = 0.0
        base["reward_win"] = 0.5
        if "before_loglik_win" in base.columns:
            base["loglik_win"] = base["before_loglik_win"]
        label = (
            "a reward that ties every pair (built in)"
            if card.method == "reward"
            else "the untrained reference policy (built in)"
        )
    elif card.task == "prompts" and "reward_before" in table.columns:
        # The same held-out prompts answered by the policy before training.
        base = table.copy()
        for column in [c for c in table.columns if str(c).endswith("_before")]:
            base[column.removesuffix("_before")] = base[column]
        base["kl"] = 0.0
        label = "the policy before training (built in)"
    else:
        return None
    return Reference(label, base.drop(columns=_cached_scores(base)), card.test_split)


def _cached_scores(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("_score_") or c == "rougeL"]


def align(challenger: pd.DataFrame, reference: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables, row i the same test example; ValueError when they differ in length or rows."""
    n = len(challenger)
    if len(reference) != n:
        # Comparing a prefix would judge the challenger on rows the reference never saw.
        raise ValueError(
            f"the challenger's prediction table has {n} rows and the reference's "
            f"{len(reference)}: they were not scored on the same test rows"
        )
    a = challenger.reset_index(drop=True)
    b = reference.reset_index(drop=True)
    for column in ("reference", "prompt", "source_row"):
        both = column in a.columns and column in b.columns
        if both and not (a[column].astype(str) == b[column].astype(str)).all():
            raise ValueError(
                f"the two prediction tables disagree in column '{column}': they were not "
                "scored on the same test rows"
            )
    if "reward_sources" in a.columns and "reward_sources" in b.columns:
        mine, theirs = str(a["reward_sources"].iloc[0]), str(b["reward_sources"].iloc[0])
        if mine != theirs:
            raise ValueError(
                f"the two policies were scored by different rewards ({mine} vs {theirs}), so "
                "their rewards are not comparable"
            )
    if n == 0:
        raise ValueError("no test rows in common")
    return a, b


def decide(
    card: Scorecard,
    table: pd.DataFrame,
    cfg: RunConfig,
    champion: Reference | None,
    baselines: list[Reference],
) -> Decision:
    """The gate's decision for a challenger (its scorecard and predictions table)."""
    r = cfg.registry
    decision = Decision(
        promote=False,
        reason="",
        metric=card.primary_metric,
        min_improvement=min_improvement(cfg, card.task),
        significance=r.significance,
    )
    if champion is not None:
        candidates = [champion]
        if champion.test_split != card.test_split:
            decision.versus = champion.label
            decision.reason = (
                f"Cannot compare with {champion.label}: it was evaluated on another test split "
                f"(md5 {champion.test_split}) than the challenger ({card.test_split}). The gate "
                "compares on one frozen test split only; evaluate both on the same data version "
                "or decide by hand with `tunelab registry promote NAME VERSION --force`."
            )
            return decision
    else:
        candidates = [b for b in baselines if b.test_split == card.test_split]
        built_in = implicit_baseline(card, table)
        if not candidates and built_in is not None:
            # No baseline was run on this split: the trivial one of the task stands in.
            candidates.append(built_in)
        if not candidates:
            decision.reason = (
                "There is no champion and no baseline on this test split to beat, so the first "
                "version cannot be judged. Train a baseline (e.g. train.method=baseline) on the "
                "same data version first."
            )
            return decision
    scored, skipped = [], []
    for candidate in candidates:
        try:
            a, b = align(table, candidate.table)
        except ValueError as exc:
            if champion is not None:
                decision.versus = candidate.label
                decision.reason = f"Cannot compare with {candidate.label}: {exc}."
                return decision
            skipped.append(f"{candidate.label}: {exc}")  # skipped, not fatal
            continue
        value = evaluate.metric_value(b, card.primary_metric, card.task)
        scored.append((value, candidate, a, b))
    if not scored:
        decision.reason = (
            "No baseline was scored on the challenger's test rows (" + "; ".join(skipped) + ")."
        )
        return decision
    # The strongest reference: with no champion, the best baseline is the bar.
    _, ref, a, b = max(scored, key=lambda item: item[0])
    test = evaluate.paired_test(
        a,
        b,
        card.primary_metric,
        card.task,
        resamples=max(
            cfg.eval.bootstrap_resamples, math.ceil(2 * _TAIL_RESAMPLES / r.significance)
        ),
        # The interval the test inverts: it excludes 0 exactly when p <= significance.
        level=1.0 - r.significance,
        seed=cfg.train.seed,
    )
    decision.versus = ref.label
    decision.challenger, decision.reference = test.challenger, test.reference
    decision.delta, decision.p_value, decision.test, decision.n = (
        test.delta,
        test.p_value,
        test.test,
        test.n,
    )
    decision.delta_ci_low, decision.delta_ci_high = test.ci_low, test.ci_high
    decision.limits = check_limits(card, cfg)
    failed_limits = [k for k, v in decision.limits.items() if v.startswith("exceeded")]
    better = test.delta > 0 and test.delta >= decision.min_improvement
    significant = test.p_value <= r.significance
    decision.promote = better and significant and not failed_limits
    decision.reason = _reason(decision, better, significant, failed_limits)
    return decision


def min_improvement(cfg: RunConfig, task: str) -> float:
    """registry.min_improvement, or the task's default when it is unset."""
    chosen = cfg.registry.min_improvement
    return chosen if chosen is not None else DEFAULT_MIN_IMPROVEMENT.get(task, 0.0)


def interval_level(significance: float) -> str:
    """The level of the gate's delta interval, e.g. '95%' for significance 0.05."""
    return f"{100 * (1 - significance):.4g}%"


def format_p(p: float) -> str:
    """A p-value as text; never 'p=0' (resampled and exact p-values are above 0)."""
    return f"p={p:.3g}" if p >= 0.001 else "p<0.001"


def check_limits(card: Scorecard, cfg: RunConfig) -> dict[str, str]:
    """Optional limits (registry.max_latency_p95_ms, registry.max_model_size_mb), and a
    policy's KL budget (train.grpo.kl_budget: its held-out KL to the reference)."""
    limits = {}
    if card.task == "prompts":
        budget = cfg.train.grpo.kl_budget
        kl = card.metrics.get("test_kl")
        if kl is None or not math.isfinite(kl):
            limits["KL to the reference (nats per answer)"] = (
                f"exceeded: not measured (budget {budget:g})"
            )
        elif kl > budget:
            limits["KL to the reference (nats per answer)"] = f"exceeded: {kl:.4g} > {budget:g}"
        else:
            limits["KL to the reference (nats per answer)"] = f"ok: {kl:.4g} <= {budget:g}"
    for name, cost_key, limit in (
        ("latency p95 (ms)", "latency_p95_ms", cfg.registry.max_latency_p95_ms),
        ("model size (MB)", "model_size_mb", cfg.registry.max_model_size_mb),
    ):
        if limit is None:
            continue
        value = card.costs.get(cost_key)
        if value is None:
            limits[name] = f"exceeded: not measured (limit {limit:g})"
        elif value > limit:
            limits[name] = f"exceeded: {value:.4g} > {limit:g}"
        else:
            limits[name] = f"ok: {value:.4g} <= {limit:g}"
    return limits


def _reason(d: Decision, better: bool, significant: bool, failed_limits: list[str]) -> str:
    head = (
        f"{d.metric} {d.challenger:.4f} vs {d.reference:.4f} for {d.versus}: "
        f"delta {d.delta:+.4f} ({interval_level(d.significance)} CI {d.delta_ci_low:+.4f} to "
        f"{d.delta_ci_high:+.4f}), two-sided {d.test} {format_p(d.p_value)} (n={d.n})."
    )
    if d.promote:
        return f"{head} Better by at least {d.min_improvement:g} and significant: promoted."
    why = []
    if not better:
        why.append(
            "not better"
            if d.delta <= 0
            else f"gain below registry.min_improvement={d.min_improvement:g}"
        )
    if not significant:
        why.append(f"not significant (p > registry.significance={d.significance:g})")
    if failed_limits:
        why.append("limits exceeded: " + ", ".join(failed_limits))
    return f"{head} Not promoted: {'; '.join(why)}."


def _last_user_turn(conversation: str) -> str:
    """The text of the last user message of a JSON conversation ("" when there is none)."""
    from tunelab.data import chat

    users = [m["content"] for m in chat.loads(conversation) if m["role"] == "user"]
    return users[-1] if users else ""
