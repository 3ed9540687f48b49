import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from tunelab import evaluate

LABELS = ["neg", "neu", "pos"]


def classification_table(n_right: int, n: int, seed: int = 0) -> pd.DataFrame:
    """n rows with exactly n_right correct predictions, in shuffled order."""
    rng = np.random.default_rng(seed)
    reference = rng.choice(LABELS, n)
    wrong = np.array([LABELS[(LABELS.index(r) + 1) % 3] for r in reference])
    right = np.zeros(n, dtype=bool)
    right[rng.permutation(n)[:n_right]] = True
    prediction = np.where(right, reference, wrong)
    return pd.DataFrame(
        {"reference": reference, "prediction": prediction, "correct": prediction == reference}
    )


def paired_tables(n: int, challenger_right: int, reference_right: int):
    """Row-aligned tables; the reference's correct rows are a subset of the challenger's."""
    reference = classification_table(0, n, seed=1)
    challenger = reference.copy()
    challenger.loc[: challenger_right - 1, "prediction"] = challenger["reference"]
    reference.loc[: reference_right - 1, "prediction"] = reference["reference"]
    return challenger, reference


@pytest.fixture
def mixed():
    rng = np.random.default_rng(3)
    reference = rng.choice(LABELS, 60)
    prediction = np.where(rng.random(60) < 0.6, reference, rng.choice(LABELS, 60))
    probs = rng.dirichlet([1, 1, 1], 60)
    return pd.DataFrame(
        {
            "reference": reference,
            "prediction": prediction,
            **{f"prob_{label}": probs[:, i] for i, label in enumerate(LABELS)},
        }
    )


def test_classification_metrics_match_sklearn_per_class(mixed):
    y_true, y_pred = mixed["reference"].tolist(), mixed["prediction"].tolist()
    metrics = evaluate.classification_metrics(y_true, y_pred, LABELS)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=LABELS, zero_division=0
    )
    for i, label in enumerate(LABELS):
        assert metrics[f"precision_{label}"] == pytest.approx(precision[i])
        assert metrics[f"recall_{label}"] == pytest.approx(recall[i])
        assert metrics[f"f1_{label}"] == pytest.approx(f1[i])
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert "ece" not in metrics


def test_classification_metrics_keeps_positional_labels_call():
    metrics = evaluate.classification_metrics(["a", "b", "a"], ["a", "a", "a"], ["a", "b"])
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert {"accuracy", "macro_f1", "micro_f1"} <= metrics.keys()
    assert metrics["recall_b"] == 0.0 and metrics["precision_b"] == 0.0


def test_classification_metrics_with_probabilities_adds_calibration():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    metrics = evaluate.classification_metrics(["a", "b"], ["a", "b"], ["a", "b"], probs)
    assert metrics["mean_confidence"] == pytest.approx(0.85)
    assert metrics["ece"] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="shape"):
        evaluate.classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "c"], probs)


def test_ece_is_zero_for_confident_right_answers():
    y_true = ["a", "b", "c", "a"]
    one_hot = np.eye(3)[[0, 1, 2, 0]]
    assert evaluate.expected_calibration_error(y_true, one_hot, ["a", "b", "c"]) == 0.0


def test_ece_matches_hand_computation():
    y_true = ["a", "a", "b", "b"]
    # Confidences 0.95 (right), 0.85 (wrong), 0.75 (right), 0.65 (wrong).
    probs = [[0.95, 0.05], [0.15, 0.85], [0.25, 0.75], [0.65, 0.35]]
    ten_bins = (0.05 + 0.85 + 0.25 + 0.65) / 4
    assert evaluate.expected_calibration_error(y_true, probs, ["a", "b"]) == pytest.approx(ten_bins)
    # Two bins: all four fall in (0.5, 1], accuracy 0.5 against mean confidence 0.8.
    assert evaluate.expected_calibration_error(y_true, probs, ["a", "b"], bins=2) == (
        pytest.approx(0.3)
    )


def test_confusion_matrix_plot_writes_png(tmp_path):
    path = evaluate.confusion_matrix_plot(
        ["a", "b", "a"], ["a", "a", "a"], ["a", "b"], tmp_path / "plots" / "cm.png", "Test"
    )
    assert path.exists() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a model is only as good as the data it was trained on",
]


def test_generation_metrics_identical_text_scores_perfectly():
    metrics = evaluate.generation_metrics(SENTENCES, SENTENCES)
    assert metrics["rougeL"] == pytest.approx(1.0)
    assert metrics["bleu"] == pytest.approx(100.0)
    assert metrics["chrf"] == pytest.approx(100.0)
    assert metrics["mean_output_words"] == metrics["mean_reference_words"] == 11.0


def test_generation_metrics_disjoint_text_scores_near_zero():
    metrics = evaluate.generation_metrics(["zebra xylophone quartz"] * 2, SENTENCES)
    assert metrics["rougeL"] == pytest.approx(0.0)
    assert metrics["bleu"] == pytest.approx(0.0, abs=1.0)
    assert metrics["chrf"] < 10.0


def test_generation_metrics_accept_empty_predictions():
    metrics = evaluate.generation_metrics(["", ""], SENTENCES)
    assert metrics["rougeL"] == 0.0 and metrics["bleu"] == 0.0
    assert metrics["mean_output_words"] == 0.0
    assert evaluate.per_example_rouge(["", SENTENCES[1]], SENTENCES) == [0.0, 1.0]


def test_rouge_scores_still_average_per_example():
    scores = evaluate.rouge_scores(["the quick fox", SENTENCES[1]], SENTENCES)
    per_example = evaluate.per_example_rouge(["the quick fox", SENTENCES[1]], SENTENCES)
    assert scores["rougeL"] == pytest.approx(np.mean(per_example))


def test_table_metric_values_agree_with_full_metrics(mixed):
    full = evaluate.table_metrics(mixed, "classification")
    for metric in ["accuracy", "macro_f1", "micro_f1", "ece", "mean_confidence", "f1_pos"]:
        assert evaluate.metric_value(mixed, metric, "classification") == pytest.approx(full[metric])
    generation = pd.DataFrame(
        {
            "prompt": ["p1", "p2", "p3"],
            "reference": [*SENTENCES, "short answer here"],
            "prediction": ["the quick fox jumps", "", "short answer"],
        }
    )
    full = evaluate.table_metrics(generation, "generation")
    for metric in evaluate.GENERATION_METRICS:
        assert evaluate.metric_value(generation, metric, "generation") == pytest.approx(
            full[metric]
        )
    cached = evaluate.add_example_scores(generation, ["rougeL"])
    assert "_score_rougeL" not in generation.columns
    assert evaluate.metric_value(cached, "rougeL", "generation") == pytest.approx(full["rougeL"])


def test_preference_table_metrics():
    table = pd.DataFrame(
        {
            "reward_margin": [0.5, -0.25, 1.0, 0.75],
            "reward_win": [True, False, True, True],
            "loglik_win": [True, False, False, True],
            "before_loglik_win": [False, False, False, True],
        }
    )
    metrics = evaluate.table_metrics(table, "preference")
    assert metrics == pytest.approx(
        {
            "reward_accuracy": 0.75,
            "reward_margin": 0.5,
            "loglik_win_rate": 0.5,
            "before_loglik_win_rate": 0.25,
            "pairs": 4.0,
        }
    )
    assert "before_loglik_win_rate" not in evaluate.table_metrics(
        table.drop(columns="before_loglik_win"), "preference"
    )


def test_unknown_metric_names_metric_and_alternatives(mixed):
    with pytest.raises(ValueError, match=r"'acc'.*classification.*accuracy, macro_f1"):
        evaluate.metric_value(mixed, "acc", "classification")
    with pytest.raises(ValueError, match="rougeL"):
        evaluate.metric_value(mixed, "bluerouge", "generation")
    with pytest.raises(ValueError, match="Unknown task"):
        evaluate.metric_value(mixed, "accuracy", "ranking")


def test_bootstrap_ci_contains_estimate_is_deterministic_and_shrinks_with_rows():
    small, large = classification_table(14, 20), classification_table(140, 200)
    low, high = evaluate.bootstrap_ci(small, "accuracy", "classification", seed=7)
    assert low <= 0.7 <= high
    assert evaluate.bootstrap_ci(small, "accuracy", "classification", seed=7) == (low, high)
    large_low, large_high = evaluate.bootstrap_ci(large, "accuracy", "classification", seed=7)
    assert large_low <= 0.7 <= large_high
    assert large_high - large_low < high - low


def test_bootstrap_macro_f1_resamples_match_sklearn(mixed):
    statistic = evaluate._statistic(mixed, "macro_f1", "classification")
    idx = np.random.default_rng(0).integers(0, len(mixed), size=(5, len(mixed)))
    expected = [
        f1_score(mixed["reference"].iloc[row], mixed["prediction"].iloc[row], average="macro")
        for row in idx
    ]
    assert statistic(idx) == pytest.approx(expected)


def test_paired_bootstrap_detects_clearly_better_challenger():
    challenger, reference = paired_tables(70, 60, 30)
    result = evaluate.paired_bootstrap(challenger, reference, "accuracy", "classification")
    assert result.delta == pytest.approx(30 / 70)
    assert result.p_value < 0.01
    assert result.ci_low <= result.delta <= result.ci_high and result.ci_low > 0


def test_paired_bootstrap_identical_and_worse_challengers_are_not_significant():
    table = classification_table(40, 70)
    same = evaluate.paired_bootstrap(table, table.copy(), "macro_f1", "classification")
    assert same.delta == 0.0 and same.p_value >= 0.5
    challenger, reference = paired_tables(70, 30, 60)
    worse = evaluate.paired_bootstrap(challenger, reference, "accuracy", "classification")
    # Two-sided: clearly worse is a significant difference, in the wrong direction.
    assert worse.delta < 0 and worse.ci_high < 0 and worse.p_value < 0.01


def test_paired_bootstrap_one_extra_right_answer_of_twenty_is_not_significant():
    challenger, reference = paired_tables(20, 11, 10)
    result = evaluate.paired_bootstrap(challenger, reference, "accuracy", "classification")
    assert result.delta == pytest.approx(0.05)
    assert result.p_value > 0.05


def test_paired_bootstrap_rejects_misaligned_tables():
    table = classification_table(10, 20)
    with pytest.raises(ValueError, match="20 rows.*19"):
        evaluate.paired_bootstrap(table, table.iloc[:19], "accuracy", "classification")
    other_split = table.copy()
    other_split.loc[3, "reference"] = "unseen"
    with pytest.raises(ValueError, match="not row-aligned.*row 3"):
        evaluate.paired_bootstrap(table, other_split, "accuracy", "classification")
    with pytest.raises(ValueError, match="not row-aligned"):
        evaluate.paired_test(table, other_split, "accuracy", "classification")


def test_mcnemar_matches_hand_computed_binomial():
    # b = 6 challenger-only right, c = 2 reference-only right, 12 agree.
    challenger = [True] * 6 + [False] * 2 + [True] * 7 + [False] * 5
    reference = [False] * 6 + [True] * 2 + [True] * 7 + [False] * 5
    result = evaluate.mcnemar(challenger, reference)
    p = 2 * sum(math.comb(8, k) for k in range(6, 9)) / 2**8  # two-sided
    assert result.p_value == pytest.approx(p)
    assert result.p_value == pytest.approx(binomtest(6, 8, 0.5).pvalue)
    assert result.delta == pytest.approx(4 / 20) and result.n == 20
    assert result.ci_low < result.delta < result.ci_high
    assert evaluate.mcnemar([True, False], [True, False]).p_value == 1.0


def test_paired_test_picks_mcnemar_for_accuracy_only():
    challenger, reference = paired_tables(30, 20, 15)
    assert evaluate.paired_test(challenger, reference, "accuracy", "classification").test == (
        "mcnemar"
    )
    assert evaluate.paired_test(challenger, reference, "macro_f1", "classification").test == (
        "paired_bootstrap"
    )


def test_latency_summary_in_milliseconds():
    summary = evaluate.latency_summary([0.1, 0.2, 0.3, 0.4])
    assert summary["latency_p50_ms"] == pytest.approx(250.0)
    assert summary["latency_mean_ms"] == pytest.approx(250.0)
    assert summary["latency_p95_ms"] == pytest.approx(np.percentile([100, 200, 300, 400], 95))
    assert summary["latency_examples"] == 4


def test_mcnemar_is_two_sided_and_its_interval_is_exact():
    challenger = [True] * 9 + [False] * 1 + [True] * 10
    reference = [False] * 9 + [True] * 1 + [True] * 10
    better = evaluate.mcnemar(challenger, reference)
    worse = evaluate.mcnemar(reference, challenger)
    assert better.p_value == pytest.approx(worse.p_value)
    assert (better.ci_low, better.ci_high) == pytest.approx((-worse.ci_high, -worse.ci_low))
    # Clopper-Pearson for b = 9 of m = 10 discordant pairs, scaled by m / n = 1 / 2.
    assert better.ci_low == pytest.approx(0.5 * (2 * 0.554983882 - 1), abs=1e-6)
    assert better.p_value == pytest.approx(2 * 11 / 2**10) and better.ci_low > 0


def test_p_values_are_never_zero():
    challenger, reference = paired_tables(70, 70, 0)
    bootstrap = evaluate.paired_bootstrap(
        challenger, reference, "accuracy", "classification", resamples=1000
    )
    assert bootstrap.p_value == pytest.approx(2 / 1001)  # (k + 1) / (B + 1), two-sided
    many = [True] * 2000
    assert 0 < evaluate.mcnemar(many, [False] * 2000).p_value < 1e-300


def test_reward_accuracy_counts_a_tie_as_half_a_win():
    assert evaluate.win_scores([0.3, 0.0, -0.1]).tolist() == [1.0, 0.5, 0.0]
    # reward_win as older runs wrote it, ties counted as losses: the margin decides.
    table = pd.DataFrame(
        {
            "reward_margin": [0.0, 0.0, 0.2, -0.2],
            "reward_win": [False, False, True, False],
            "loglik_win": [0.5, 0.5, 1.0, 0.0],
        }
    )
    assert evaluate.metric_value(table, "reward_accuracy", "preference") == 0.5
    untrained = table.assign(reward_margin=0.0)
    assert evaluate.table_metrics(untrained, "preference")["reward_accuracy"] == 0.5


def random_pair(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two row-aligned classification tables whose accuracies differ by a random amount."""
    n = int(rng.integers(8, 80))
    reference = rng.choice(LABELS, n)
    right_a = rng.random(n) < rng.uniform(0.3, 0.9)
    right_b = rng.random(n) < rng.uniform(0.3, 0.9)

    def table(right):
        wrong = rng.choice(LABELS, n)
        return pd.DataFrame(
            {"reference": reference, "prediction": np.where(right, reference, wrong)}
        )

    return table(right_a), table(right_b)


@pytest.mark.parametrize("level", [0.95, 0.9, 0.99])
def test_p_value_and_interval_agree_on_random_tables(level):
    """p <= 1 - level exactly when the delta interval at ``level`` excludes 0, for both tests."""
    rng = np.random.default_rng(int(level * 100))
    alpha = round(1 - level, 12)
    seen = {True: 0, False: 0}
    for trial in range(120):
        a, b = random_pair(rng)
        for metric in ("accuracy", "macro_f1"):
            test = evaluate.paired_test(
                a, b, metric, "classification", resamples=300, level=level, seed=trial
            )
            excludes_zero = test.ci_low > 0 or test.ci_high < 0
            assert (test.p_value <= alpha) == excludes_zero, test
            assert 0 < test.p_value <= 1
            seen[excludes_zero] += 1
    assert min(seen.values()) > 20  # both outcomes were exercised
