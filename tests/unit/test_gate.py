"""The promotion gate's decisions on hand-made prediction tables (no MLflow here)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from tunelab import config
from tunelab.lifecycle import gate
from tunelab.scorecard import Scorecard

LABELS = ["negative", "neutral", "positive"]
SPLIT = "test-split-md5"


def classification_table(n: int, correct: int, seed: int = 0) -> pd.DataFrame:
    """n rows over three labels; the first ``correct`` rows (in a fixed shuffle) are right."""
    import numpy as np

    rng = np.random.default_rng(seed)
    reference = [LABELS[i % 3] for i in range(n)]
    right = np.zeros(n, dtype=bool)
    right[rng.permutation(n)[:correct]] = True
    prediction = [
        ref if ok else LABELS[(LABELS.index(ref) + 1) % 3]
        for ref, ok in zip(reference, right, strict=True)
    ]
    return pd.DataFrame(
        {"reference": reference, "prediction": prediction, "correct": right.tolist()}
    )


def better_by(table: pd.DataFrame, extra: int) -> pd.DataFrame:
    """The same table with ``extra`` more rows right (the first wrong ones fixed)."""
    out = table.copy()
    wrong = out.index[~out["correct"]][:extra]
    out.loc[wrong, "prediction"] = out.loc[wrong, "reference"]
    out["correct"] = out["reference"] == out["prediction"]
    return out


def card_for(tmp_path, table: pd.DataFrame, task="classification", metric="macro_f1", **kw):
    table.to_parquet(tmp_path / "predictions.parquet")
    fields = {
        "dataset": "sentiment",
        "method": "lora",
        "task": task,
        "model": "m",
        "run_dir": str(tmp_path),
        "data_version": "v1",
        "test_split": SPLIT,
        "primary_metric": metric,
        "majority_label": "negative",
    }
    fields.update(kw)
    return Scorecard(**fields)


def cfg_with(*overrides: str) -> config.RunConfig:
    return config.load(None, ["eval.bootstrap_resamples=1000", *overrides])


def champion(table: pd.DataFrame, split: str = SPLIT) -> gate.Reference:
    return gate.Reference("champion v1 (tfidf)", table, split, version="1")


def test_a_worse_challenger_is_not_promoted(tmp_path):
    reigning = classification_table(70, 50)
    worse = classification_table(70, 30)
    decision = gate.decide(card_for(tmp_path, worse), worse, cfg_with(), champion(reigning), [])
    assert not decision.promote
    assert decision.delta < 0
    assert "not better" in decision.reason
    assert decision.versus == "champion v1 (tfidf)"


def test_a_better_but_not_significant_challenger_is_not_promoted(tmp_path):
    reigning = classification_table(20, 12)
    slightly = better_by(reigning, 1)  # one more right answer out of 20
    decision = gate.decide(
        card_for(tmp_path, slightly, metric="accuracy"),
        slightly,
        cfg_with("eval.primary_metric=accuracy"),
        champion(reigning),
        [],
    )
    assert decision.delta == pytest.approx(0.05)
    assert decision.test == "mcnemar"
    assert decision.p_value > 0.05
    assert not decision.promote
    assert "not significant" in decision.reason


def test_a_clearly_better_challenger_is_promoted(tmp_path):
    reigning = classification_table(70, 30)
    clearly = better_by(reigning, 25)
    decision = gate.decide(card_for(tmp_path, clearly), clearly, cfg_with(), champion(reigning), [])
    assert decision.promote, decision.reason
    assert decision.delta > 0.2
    assert decision.p_value < 0.01
    assert decision.test == "paired_bootstrap"


def test_min_improvement_blocks_a_significant_but_small_gain(tmp_path):
    reigning = classification_table(400, 200)
    gain = better_by(reigning, 40)  # +0.10 accuracy on 400 rows: significant
    cfg = cfg_with("eval.primary_metric=accuracy", "registry.min_improvement=0.2")
    decision = gate.decide(
        card_for(tmp_path, gain, metric="accuracy"), gain, cfg, champion(reigning), []
    )
    assert decision.p_value < 0.01
    assert not decision.promote
    assert "min_improvement=0.2" in decision.reason


def test_a_latency_limit_blocks_promotion(tmp_path):
    reigning = classification_table(70, 30)
    clearly = better_by(reigning, 25)
    card = card_for(tmp_path, clearly, costs={"latency_p95_ms": 80.0})
    decision = gate.decide(
        card, clearly, cfg_with("registry.max_latency_p95_ms=50"), champion(reigning), []
    )
    assert not decision.promote
    assert decision.limits["latency p95 (ms)"].startswith("exceeded: 80")


def test_another_test_split_cannot_be_compared(tmp_path):
    table = classification_table(70, 60)
    decision = gate.decide(
        card_for(tmp_path, table), table, cfg_with(), champion(table, split="other"), []
    )
    assert not decision.promote
    assert "Cannot compare" in decision.reason and "other" in decision.reason


def test_tables_of_different_rows_cannot_be_compared(tmp_path):
    table = classification_table(70, 60)
    shuffled = table.sample(frac=1.0, random_state=1).reset_index(drop=True)
    decision = gate.decide(card_for(tmp_path, table), table, cfg_with(), champion(shuffled), [])
    assert not decision.promote
    assert "not scored on the same test rows" in decision.reason


def test_first_version_must_beat_the_best_baseline(tmp_path):
    challenger = classification_table(70, 45)
    strong_baseline = gate.Reference("baseline-tfidf (run x)", classification_table(70, 47), SPLIT)
    weak_baseline = gate.Reference("baseline-prompt (run y)", classification_table(70, 20), SPLIT)
    decision = gate.decide(
        card_for(tmp_path, challenger),
        challenger,
        cfg_with(),
        None,
        [weak_baseline, strong_baseline],
    )
    assert decision.versus == "baseline-tfidf (run x)"
    assert not decision.promote


def test_first_version_beats_the_built_in_majority_baseline(tmp_path):
    challenger = classification_table(70, 55)
    decision = gate.decide(card_for(tmp_path, challenger), challenger, cfg_with(), None, [])
    assert decision.versus.startswith("majority class 'negative'")
    assert decision.reference < 0.2  # macro-F1 of always answering one of three labels
    assert decision.promote, decision.reason


def test_a_baseline_on_another_split_is_ignored(tmp_path):
    challenger = classification_table(70, 55)
    elsewhere = gate.Reference("baseline-tfidf (run z)", classification_table(70, 70), "other")
    decision = gate.decide(
        card_for(tmp_path, challenger), challenger, cfg_with(), None, [elsewhere]
    )
    assert "built in" in decision.versus


def test_preference_first_version_is_judged_against_the_reference_policy(tmp_path):
    n = 40
    table = pd.DataFrame(
        {
            "prompt": [f"p{i}" for i in range(n)],
            "reward_margin": [0.5] * 34 + [-0.2] * 6,
            "reward_win": [True] * 34 + [False] * 6,
            "loglik_win": [False] * n,
            "before_loglik_win": [False] * n,
        }
    )
    card = card_for(tmp_path, table, task="preference", metric="reward_accuracy")
    decision = gate.decide(card, table, cfg_with(), None, [])
    assert decision.versus == "the untrained reference policy (built in)"
    assert decision.reference == 0.5  # every pair a tie: half a win each
    assert decision.challenger == pytest.approx(34 / 40)
    assert decision.min_improvement == 0.1  # the preference default
    assert decision.promote


def test_generation_first_version_is_judged_against_echoing_the_prompt(tmp_path):
    table = pd.DataFrame(
        {
            "prompt": ["summarise: the cat sat on the mat"] * 10,
            "reference": ["the cat sat"] * 10,
            "prediction": ["the cat sat"] * 10,
        }
    )
    card = card_for(tmp_path, table, task="generation", metric="rougeL")
    decision = gate.decide(card, table, cfg_with(), None, [])
    assert decision.versus == "echo the prompt (built in)"
    assert decision.challenger == pytest.approx(1.0)
    assert decision.reference < decision.challenger


def test_decision_records_render(tmp_path):
    reigning = classification_table(70, 30)
    clearly = better_by(reigning, 25)
    decision = gate.decide(card_for(tmp_path, clearly), clearly, cfg_with(), champion(reigning), [])
    tags = decision.to_tags()
    assert tags["gate.decision"] == "promoted"
    assert float(tags["gate.p_value"]) == pytest.approx(decision.p_value, rel=1e-5)
    note = decision.to_markdown("sentiment-classifier", "2")
    assert "version 2: **promoted**" in note and "champion v1" in note


def test_recorded_baselines_take_the_place_of_the_built_in_one(tmp_path):
    """Echoing the prompt can score well on ROUGE; the bar is the baseline that was run."""
    table = pd.DataFrame(
        {
            "prompt": [f"summarise: the cat sat on mat {i}" for i in range(10)],
            "reference": [f"the cat sat on mat {i}" for i in range(10)],
            "prediction": ["a cat"] * 10,
        }
    )
    zero_shot = table.assign(prediction=["a dog"] * 10)
    card = card_for(tmp_path, table, task="generation", metric="rougeL")
    recorded = gate.Reference("baseline-prompt (run z)", zero_shot, SPLIT)
    decision = gate.decide(card, table, cfg_with(), None, [recorded])
    assert decision.versus == "baseline-prompt (run z)"
    assert decision.delta > 0


def preference_table(wins: int, losses: int, ties: int = 0) -> pd.DataFrame:
    n = wins + losses + ties
    margins = [0.3] * wins + [-0.3] * losses + [0.0] * ties
    return pd.DataFrame(
        {
            "prompt": [f"p{i}" for i in range(n)],
            "reward_margin": margins,
            "reward_win": [m > 0 for m in margins],  # as older runs wrote it
            "loglik_win": [0.5] * n,
            "before_loglik_win": [0.5] * n,
        }
    )


@pytest.mark.parametrize(
    ("wins", "losses", "ties"),
    [(0, 0, 40), (3, 0, 37), (21, 19, 0), (5, 1, 0), (26, 14, 0)],
)
def test_a_policy_no_better_than_a_coin_flip_is_not_promoted(tmp_path, wins, losses, ties):
    """The reference policy ties every pair (0.5): a handful of wins or a coin flip's
    share is no gain over it."""
    table = preference_table(wins, losses, ties)
    card = card_for(tmp_path, table, task="preference", metric="reward_accuracy")
    decision = gate.decide(card, table, cfg_with(), None, [])
    assert decision.reference == 0.5
    assert not decision.promote, decision.reason


def test_preference_needs_a_real_margin_over_the_reference_policy(tmp_path):
    table = preference_table(1160, 840)  # 0.58 on 2,000 pairs: significant, but small
    card = card_for(tmp_path, table, task="preference", metric="reward_accuracy")
    decision = gate.decide(card, table, cfg_with(), None, [])
    assert decision.p_value < 0.01 and decision.delta == pytest.approx(0.08)
    assert not decision.promote
    assert "registry.min_improvement=0.1" in decision.reason
    explicit = gate.decide(card, table, cfg_with("registry.min_improvement=0"), None, [])
    assert explicit.promote, explicit.reason


def test_a_shorter_champion_table_is_an_error_naming_both_lengths(tmp_path):
    reigning = classification_table(70, 30)
    clearly = better_by(reigning, 25)
    with pytest.raises(ValueError, match="70 rows and the reference's 60"):
        gate.align(clearly, reigning.iloc[:60])
    decision = gate.decide(
        card_for(tmp_path, clearly), clearly, cfg_with(), champion(reigning.iloc[:60]), []
    )
    assert not decision.promote
    assert "70 rows" in decision.reason and "60" in decision.reason
    baseline = gate.Reference("baseline-tfidf (run x)", reigning.iloc[:60], SPLIT)
    decision = gate.decide(card_for(tmp_path, clearly), clearly, cfg_with(), None, [baseline])
    assert not decision.promote
    assert "baseline-tfidf (run x)" in decision.reason and "60" in decision.reason


@pytest.mark.parametrize("significance", [0.05, 0.2])
def test_promoted_deltas_have_intervals_that_exclude_zero(tmp_path, significance):
    """p <= registry.significance exactly when the gate's delta interval excludes 0."""
    cfg = cfg_with(f"registry.significance={significance}")
    outcomes = set()
    for extra in range(0, 16):
        reigning = classification_table(70, 30, seed=extra)
        challenger = better_by(reigning, extra)
        for metric in ("macro_f1", "accuracy"):
            card = card_for(tmp_path, challenger, metric=metric)
            decision = gate.decide(card, challenger, cfg, champion(reigning), [])
            excludes_zero = decision.delta_ci_low > 0 or decision.delta_ci_high < 0
            assert (decision.p_value <= significance) == excludes_zero, decision
            if decision.promote:
                assert decision.delta_ci_low > 0
            shown = re.search(r"p[=<]([0-9.e+-]+) ", decision.reason)
            assert shown and float(shown.group(1)) > 0, decision.reason
            outcomes.add(decision.promote)
    assert outcomes == {True, False}
    note = decision.to_markdown("m", "1")
    assert f"delta ({100 * (1 - significance):g}% CI)" in note
