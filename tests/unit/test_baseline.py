"""Baselines: majority class, TF-IDF + logistic regression (baseline.py), zero/k-shot
prompting (prompting.py) and the LM engine it runs on (engine.py)."""

from __future__ import annotations

import json
import random
import sys

import pandas as pd
import pytest

from tunelab import config, evaluate
from tunelab.errors import TrainingError
from tunelab.runs import RESULT_FILE, TrainResult
from tunelab.train import train
from tunelab.train.common import DeviceChoice
from tunelab.train.prompting import _demonstrations, load_engine
from tunelab.workspace import Workspace

LABELS = ["negative", "neutral", "positive"]
CPU = DeviceChoice("cpu", "fp32")
CLASSIFICATION = [
    "train.method=baseline",
    "data.task=classification",
    "data.labels=[negative, neutral, positive]",
]


def _run(tmp_path, data, *overrides, name="ws"):
    cfg = config.load(None, list(overrides))
    return train(cfg, data, workspace=Workspace(tmp_path / name))


def _predictions(result: TrainResult) -> pd.DataFrame:
    return pd.read_parquet(result.artifact("predictions"))


def _toy_sentiment(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Learnable on purpose: each label has its own words, wrapped in shared filler."""
    words = {
        "negative": ["awful", "broken", "terrible", "refund", "disappointing"],
        "neutral": ["arrived", "tuesday", "package", "weighs", "colour"],
        "positive": ["wonderful", "love", "excellent", "perfect", "delighted"],
    }
    filler = ["the", "item", "it", "was", "this", "really", "my", "order"]
    rng = random.Random(seed)

    def rows(n_per_label: int, offset: int) -> pd.DataFrame:
        out = []
        for label, vocab in words.items():
            # The majority class is "negative" in every split (more rows).
            count = n_per_label * (2 if label == "negative" else 1)
            for _ in range(count):
                text = rng.sample(filler, 4) + rng.sample(vocab, 2)
                rng.shuffle(text)
                out.append({"text": " ".join(text), "label": label})
        frame = pd.DataFrame(out).sample(frac=1, random_state=seed).reset_index(drop=True)
        frame["source_row"] = range(offset, offset + len(frame))
        return frame

    return {"train": rows(30, 0), "validation": rows(3, 1000), "test": rows(5, 2000)}


# ---------------------------------------------------------------- majority and tfidf


def test_majority_predicts_the_most_frequent_train_label(tmp_path, sentiment_splits):
    result = _run(tmp_path, sentiment_splits, *CLASSIFICATION, "train.baseline.kind=majority")
    majority = sentiment_splits["train"]["label"].value_counts().idxmax()
    test = sentiment_splits["test"]
    predictions = _predictions(result)
    assert set(predictions["prediction"]) == {majority}
    assert predictions["reference"].tolist() == test["label"].tolist()
    share = (test["label"] == majority).mean()
    assert result.metrics["test_accuracy"] == pytest.approx(share)
    assert result.metrics["validation_accuracy"] == pytest.approx(
        (sentiment_splits["validation"]["label"] == majority).mean()
    )
    assert result.trainable_params == 0
    # The record on disk is the one returned.
    folder = tmp_path / "ws" / "runs" / "sentiment"
    (run,) = folder.iterdir()
    assert (run / RESULT_FILE).is_file() and (run / "predictions.parquet").is_file()
    assert TrainResult.load(run).metrics == result.metrics


def test_tfidf_beats_majority_on_learnable_data(tmp_path):
    data = _toy_sentiment()
    majority = _run(tmp_path, data, *CLASSIFICATION, "train.baseline.kind=majority", name="a")
    tfidf = _run(tmp_path, data, *CLASSIFICATION, "train.baseline.kind=tfidf", name="b")
    assert majority.metrics["test_accuracy"] == pytest.approx(0.5)  # 10 of 20 are negative
    assert tfidf.metrics["test_accuracy"] >= 0.9
    assert tfidf.metrics["test_macro_f1"] > majority.metrics["test_macro_f1"] + 0.4
    predictions = _predictions(tfidf)
    assert predictions["correct"].mean() == pytest.approx(tfidf.metrics["test_accuracy"])
    assert predictions["score"].between(0, 1).all()
    assert predictions["source_row"].tolist() == data["test"]["source_row"].tolist()
    # Coefficients: one row per class over the vocabulary, plus the intercepts.
    assert tfidf.trainable_params > 0 and tfidf.trainable_params % 3 == 0
    assert tfidf.artifact("model").is_file()


def test_tfidf_is_saved_with_skops_or_not_at_all(tmp_path, monkeypatch):
    """Never a pickle (joblib): loading one runs whatever code the file names."""
    data = _toy_sentiment()
    saved = _run(tmp_path, data, *CLASSIFICATION, "train.baseline.kind=tfidf", name="a")
    assert saved.artifacts["model"] == "model.skops"
    monkeypatch.setitem(sys.modules, "skops.io", None)  # skops not installed
    with pytest.raises(TrainingError, match=r"skops.*pip install skops"):
        _run(tmp_path, data, *CLASSIFICATION, "train.baseline.kind=tfidf", name="b")
    assert not list((tmp_path / "b").rglob("*.joblib"))


def test_tfidf_reads_text_pair(tmp_path):
    """The label lives only in text_pair, so high accuracy proves the pair is used."""
    data = _toy_sentiment(seed=1)
    for frame in data.values():
        frame["text_pair"] = frame["text"]
        frame["text"] = "same first sentence for every row"
    result = _run(tmp_path, data, *CLASSIFICATION, "train.baseline.kind=tfidf")
    assert result.metrics["test_accuracy"] >= 0.9
    assert _predictions(result)["input"].str.contains("[SEP]", regex=False).all()


# ---------------------------------------------------------------- prompting: classification

PROMPT = [*CLASSIFICATION, "train.baseline.kind=prompt", "model.max_length=512"]


@pytest.mark.parametrize(
    ("model", "shots"), [("tiny-gpt2", 0), ("tiny-llama", 0), ("tiny-llama", 3)]
)
def test_prompt_scoring_predicts_only_valid_labels_and_is_deterministic(
    tmp_path, sentiment_splits, model, shots
):
    overrides = [*PROMPT, f"model.name={model}", f"train.baseline.prompting.shots={shots}"]
    first = _run(tmp_path, sentiment_splits, *overrides, name="a")
    second = _run(tmp_path, sentiment_splits, *overrides, name="b")
    one, two = _predictions(first), _predictions(second)
    assert len(one) == len(sentiment_splits["test"])
    assert set(one["prediction"]) <= set(LABELS)
    pd.testing.assert_frame_equal(one, two)
    assert first.metrics == second.metrics
    assert 0 <= first.metrics["test_accuracy"] <= 1
    assert first.metrics["test_accuracy"] == pytest.approx(one["correct"].mean())
    # The prediction is the argmax of the per-label scores.
    for _, row in one.iterrows():
        scores = json.loads(row["label_scores"])
        assert set(scores) == set(LABELS)
        assert row["prediction"] == max(scores, key=scores.get)
    assert first.trainable_params == 0 and first.total_params > 0
    assert first.tokens_per_second and first.tokens_per_second > 0
    example = first.artifact("prompt_example").read_text(encoding="utf-8")
    assert sentiment_splits["test"]["text"].iloc[0] in example
    if model == "tiny-llama":  # it has a chat template: demonstrations are earlier turns
        assert example.count("<|user|>") == shots + 1
        assert example.count("<|assistant|>") == shots + 1


def test_k_shot_demonstrations_come_from_train_and_cover_the_labels(tmp_path, sentiment_splits):
    result = _run(
        tmp_path,
        sentiment_splits,
        *PROMPT,
        "model.name=tiny-gpt2",
        "train.baseline.prompting.shots=3",
        'train.baseline.prompting.pattern="Review: {text}\\nSentiment:"',
    )
    example = result.artifact("prompt_example").read_text(encoding="utf-8")
    train_rows = sentiment_splits["train"]
    shown = train_rows[train_rows["text"].map(lambda t: f"Review: {t}\n" in example)]
    assert len(shown) == 3
    assert sorted(shown["label"]) == LABELS  # round-robin over the labels
    for label in shown["label"]:  # each demonstration is followed by its answer
        assert f"Sentiment: {label}" in example
    for split in ("validation", "test"):
        others = sentiment_splits[split]["text"].iloc[1:]
        assert not any(f"Review: {t}\n" in example for t in others)


def test_demonstrations_are_seeded_and_round_robin():
    frame = pd.DataFrame({"label": ["a"] * 8 + ["b"] * 3 + ["c"] * 1})
    picked = _demonstrations(frame, 5, seed=7, task="classification", labels=["a", "b", "c"])
    assert picked == _demonstrations(frame, 5, 7, "classification", ["a", "b", "c"])
    assert len(set(picked)) == 5
    labels = frame["label"].iloc[picked].tolist()
    assert sorted(labels) == ["a", "a", "b", "b", "c"]
    other_seeds = {
        tuple(_demonstrations(frame, 5, s, "classification", ["a", "b", "c"])) for s in range(6)
    }
    assert len(other_seeds) > 1
    assert _demonstrations(frame, 0, 7, "classification", ["a", "b", "c"]) == []


def test_verbalizer_missing_a_label_is_refused(tmp_path, sentiment_splits):
    with pytest.raises(TrainingError) as info:
        _run(
            tmp_path,
            sentiment_splits,
            *PROMPT,
            "model.name=tiny-gpt2",
            "train.baseline.prompting.verbalizer={negative: bad, positive: good}",
        )
    assert "'neutral'" in str(info.value)
    assert "train.baseline.prompting.verbalizer" in str(info.value)


def test_verbalizer_words_are_scored_but_labels_predicted(tmp_path, sentiment_splits):
    result = _run(
        tmp_path,
        sentiment_splits,
        *PROMPT,
        "model.name=tiny-gpt2",
        "train.baseline.prompting.verbalizer={negative: bad, neutral: okay, positive: good}",
        "train.baseline.prompting.max_examples=5",
    )
    predictions = _predictions(result)
    assert len(predictions) == 5  # max_examples caps the scored test rows
    assert set(predictions["prediction"]) <= set(LABELS)
    example = result.artifact("prompt_example").read_text(encoding="utf-8")
    assert "as bad, okay, good." in example  # {choices} are the verbalizations
    assert "' okay'" in example


def test_unknown_pattern_field_is_refused(tmp_path, sentiment_splits):
    with pytest.raises(TrainingError, match=r"\{review\}"):
        _run(
            tmp_path,
            sentiment_splits,
            *PROMPT,
            "model.name=tiny-gpt2",
            "train.baseline.prompting.pattern='Review: {review}'",
        )


# ---------------------------------------------------------------- prompting: generation, preference


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-t5"])
def test_generate_mode_gives_strings_and_rouge(tmp_path, instruction_splits, model):
    result = _run(
        tmp_path,
        instruction_splits,
        "train.method=baseline",
        "data.task=generation",
        "data.name=instructions",
        "train.baseline.kind=prompt",
        "train.baseline.prompting.mode=generate",
        "train.baseline.prompting.max_new_tokens=6",
        "model.max_length=512",
        f"model.name={model}",
    )
    predictions = _predictions(result)
    test = instruction_splits["test"]
    assert len(predictions) == len(test)
    assert predictions["reference"].tolist() == test["response"].tolist()
    assert all(isinstance(p, str) for p in predictions["prediction"])
    assert any(p for p in predictions["prediction"])  # something was generated
    # Only new tokens are decoded: the answer does not repeat the prompt.
    for prompt, answer in zip(predictions["input"], predictions["prediction"], strict=True):
        assert not answer.startswith(prompt[:40])
    for split in ("test", "validation"):
        for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            assert 0 <= result.metrics[f"{split}_{kind}"] <= 1
    assert predictions["score"].between(0, 1).all()


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-t5"])
def test_preference_prompting_gives_a_loglik_win_rate(tmp_path, preference_splits, model):
    result = _run(
        tmp_path,
        preference_splits,
        "train.method=baseline",
        "data.task=preference",
        "data.name=preferences",
        "train.baseline.kind=prompt",
        "model.max_length=512",
        f"model.name={model}",
    )
    rate = result.metrics["test_loglik_win_rate"]
    assert 0 <= rate <= 1
    assert 0 <= result.metrics["validation_loglik_win_rate"] <= 1
    predictions = _predictions(result)
    assert len(predictions) == len(preference_splits["test"])
    assert rate == pytest.approx((predictions["score"] > 0).mean())
    assert (predictions["correct"] == (predictions["score"] > 0)).all()
    assert (tmp_path / "ws").joinpath("runs", "preferences").is_dir()


def test_prompt_needs_a_text_model(tmp_path, sentiment_splits):
    with pytest.raises(TrainingError, match="encoder"):
        _run(tmp_path, sentiment_splits, *PROMPT, "model.name=tiny-bert")


def test_too_long_prompts_are_refused_not_cut(tmp_path, sentiment_splits):
    with pytest.raises(TrainingError, match="model.max_length"):
        _run(
            tmp_path,
            sentiment_splits,
            *CLASSIFICATION,
            "train.baseline.kind=prompt",
            "model.name=tiny-gpt2",
            "model.max_length=16",
        )


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_shared_prompt_scoring_matches_scoring_each_pair(model):
    """Scoring choices from one cached prompt pass gives the per-pair log-likelihoods."""
    lm, _ = load_engine(config.load(None, [f"model.name={model}"]), CPU)
    lm.batch_size = 2  # batches of different prompt lengths: padding must not leak in
    texts = ["The movie was great. Sentiment:", "Bad.", "a much longer prompt than the others are"]
    prompts = [lm.encode_prompt(t) for t in texts]
    choices = [lm.encode_continuation(t) for t in [" positive", " not good at all", " okay"]]
    assert len({len(c) for c in choices}) > 1
    pairwise = lm.logprobs([(p, c) for p in prompts for c in choices], "pairs")
    shared = [score for row in lm.choice_logprobs(prompts, choices, "shared") for score in row]
    for (a, n), (b, m) in zip(pairwise, shared, strict=True):
        assert n == m
        assert a == pytest.approx(b, abs=1e-3)
        assert a < 0


def test_calibration_subtracts_one_prior_per_label(tmp_path, sentiment_splits):
    """Calibrated label scores = raw scores minus a per-label constant (the content-free prior)."""
    common = [*PROMPT, "model.name=tiny-gpt2"]
    raw = _run(tmp_path, sentiment_splits, *common, name="raw")
    calibrated = _run(
        tmp_path, sentiment_splits, *common, "train.baseline.prompting.calibrate=true", name="cal"
    )
    before = _predictions(raw)["label_scores"].map(json.loads)
    after = _predictions(calibrated)["label_scores"].map(json.loads)
    for label in LABELS:
        shift = [b[label] - a[label] for b, a in zip(before, after, strict=True)]
        assert max(shift) - min(shift) < 2e-3, label  # the same prior for every example
    priors = [before[0][label] - after[0][label] for label in LABELS]
    spread = calibrated.metrics["test_calibration_prior_spread"]
    assert spread == pytest.approx(max(priors) - min(priors), abs=2e-3)
    assert set(_predictions(calibrated)["prediction"]) <= set(LABELS)


# ---------------------------------------------------------------- the LM engine


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_sequence_scoring_is_pair_scoring_from_the_response_start(model):
    lm, _ = load_engine(config.load(None, [f"model.name={model}"]), CPU)
    lm.batch_size = 2
    prompts = [lm.encode_prompt(t) for t in ["Say yes:", "A longer prompt, to pad the others:"]]
    answers = [lm.encode_continuation(t) for t in [" yes", " no thanks"]]
    pairs = [(p, a) for p in prompts for a in answers]
    sequences = [(p + a, len(p)) for p, a in pairs]
    assert lm.sequence_logprobs(sequences) == lm.logprobs(pairs)
    # The first token has nothing to be predicted from: it is never scored.
    whole = lm.sequence_logprobs([(prompts[1], 0)])
    assert whole == lm.logprobs([(prompts[1][:1], prompts[1][1:])])


def test_generation_leaves_the_model_in_its_mode_and_counts_tokens():
    lm, _ = load_engine(config.load(None, ["model.name=tiny-gpt2"]), CPU)
    lm.model.train()
    prompts = [lm.encode_prompt(t) for t in ["Hello there", "Hi"]]
    in_order = lm.generate(prompts, 4, longest_first=False)
    assert lm.model.training  # eval while generating, training mode restored afterwards
    assert lm.tokens > sum(len(p) for p in prompts) and lm.seconds > 0
    assert len(in_order) == 2 and all(isinstance(a, str) for a in in_order)
    # Decoder prompts are left-padded: each row continues at the last position.
    ids, mask = lm.pad([[5, 6, 7], [8]], "left")
    assert ids[1].tolist()[-1] == 8 and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = lm.pad([[5, 6, 7], [8]], "right")
    assert ids[1].tolist()[0] == 8 and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_loglik_margin_metrics_count_a_tie_as_half():
    metrics = evaluate.loglik_margin_metrics([1.0, 0.0, -2.0, 3.0], [1.0, -1.0, -1.0, 0.0])
    assert metrics == {
        "loglik_win_rate": 2.5 / 4,
        "loglik_win_rate_sum": 1.5 / 4,
        "mean_loglik_margin": 0.5,
    }
    assert evaluate.invalid_rate(["a", "", "b", ""]) == 0.5
