"""Baselines: always start with a stupid model.

- ``majority``: predict the most frequent training label (classification).
- ``tfidf``: TF-IDF word 1-2 grams + logistic regression (classification).

Zero/few-shot prompting of an instruct LM (``kind=prompt``) lives in prompting.py and
shares the classification helpers here.

Every kind evaluates on the test split (and validation when present), writes the test
predictions to ``predictions.parquet`` and ends with :func:`common.finish`.

scikit-learn is imported inside functions: the CLI imports this package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tunelab import evaluate
from tunelab.config import RunConfig
from tunelab.errors import TrainingError
from tunelab.runs import TrainResult
from tunelab.train.common import DeviceChoice, ResourceMeter, finish, new_result, save_predictions

EVAL_SPLITS = ("test", "validation")
PAIR_SEPARATOR = " [SEP] "
MODEL_NAMES = {"majority": "majority-class", "tfidf": "tfidf-logreg"}
MODEL_FILE = "model.skops"  # the TF-IDF pipeline


def train(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, data_version: str | None
) -> TrainResult:
    """Fit the configured scikit-learn baseline and evaluate it; see the module doc."""
    kind = cfg.train.baseline.kind
    task = cfg.data.task
    if kind not in MODEL_NAMES:  # kind=prompt
        from tunelab.train import prompting

        return prompting.train(cfg, data, output_dir, data_version)
    if task != "classification":
        raise TrainingError(
            f"train.baseline.kind={kind} needs classification data, but '{cfg.data.name}' is "
            f"{task} data. Use train.baseline.kind=prompt."
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = new_result(cfg, output_dir, data_version, method="baseline", model=MODEL_NAMES[kind])
    # The scikit-learn baselines always run on the CPU, whatever train.device says.
    device = DeviceChoice("cpu", "fp32")
    with ResourceMeter() as meter:
        if kind == "majority":
            _majority(cfg, data, output_dir, result)
        else:
            _tfidf(cfg, data, output_dir, result)
    return finish(result, meter, device)


# ---------------------------------------------------------------- shared with prompting


def eval_splits(data: dict[str, pd.DataFrame]) -> list[str]:
    """The splits scored, test first: those of EVAL_SPLITS present and not empty."""
    return [s for s in EVAL_SPLITS if s in data and not data[s].empty]


def classification_inputs(frame: pd.DataFrame) -> list[str]:
    """The classification input as one string: text, plus text_pair when present."""
    texts = frame["text"].astype(str).tolist()
    if "text_pair" not in frame.columns:
        return texts
    pairs = frame["text_pair"].tolist()
    return [
        t if p is None or (isinstance(p, float) and pd.isna(p)) else f"{t}{PAIR_SEPARATOR}{p}"
        for t, p in zip(texts, pairs, strict=True)
    ]


def label_set(cfg: RunConfig, data: dict[str, pd.DataFrame]) -> list[str]:
    """Declared labels, else every label seen in any split (sorted, so the order is stable)."""
    if cfg.data.labels:
        return list(cfg.data.labels)
    seen: set[str] = set()
    for frame in data.values():
        if "label" in frame.columns:
            seen.update(frame["label"].astype(str))
    return sorted(seen)


def record_classification(
    result: TrainResult,
    split: str,
    frame: pd.DataFrame,
    predictions: Sequence[str],
    labels: Sequence[str],
    output_dir: Path,
    extra: dict[str, Sequence[Any]] | None = None,
) -> None:
    """Metrics of one split into the result; the test split's predictions to disk."""
    y_true = frame["label"].astype(str).tolist()
    metric_labels = list(labels) + sorted(set(y_true) - set(labels))
    for name, value in evaluate.classification_metrics(y_true, predictions, metric_labels).items():
        result.metrics[f"{split}_{name}"] = value
    if split == "test":
        columns = {
            "input": classification_inputs(frame),
            "reference": y_true,
            "prediction": list(predictions),
            "correct": [t == p for t, p in zip(y_true, predictions, strict=True)],
            **(extra or {}),
        }
        save_predictions(pd.DataFrame(columns), output_dir, result, source=frame)


# ---------------------------------------------------------------- majority class


def _majority(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, result: TrainResult
) -> None:
    counts = data["train"]["label"].astype(str).value_counts()
    # Ties go to the label that sorts first, so the choice never depends on row order.
    label = min(counts.index, key=lambda lab: (-counts[lab], lab))
    labels = label_set(cfg, data)
    (output_dir / "model.json").write_text(
        json.dumps({"kind": "majority", "label": label, "train_counts": counts.to_dict()}),
        encoding="utf-8",
    )
    result.artifacts["model"] = "model.json"
    result.notes.append(
        f"majority class '{label}': {counts[label]} of {int(counts.sum())} training rows."
    )
    for split in eval_splits(data):
        frame = data[split]
        record_classification(result, split, frame, [label] * len(frame), labels, output_dir)


# ---------------------------------------------------------------- TF-IDF + logistic regression


def _tfidf(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, result: TrainResult
) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    train_frame = data["train"]
    y = train_frame["label"].astype(str).tolist()
    if len(set(y)) < 2:
        raise TrainingError(
            f"train.baseline.kind=tfidf needs at least two labels in the training split of "
            f"'{cfg.data.name}', found only {sorted(set(y))}. Use train.baseline.kind=majority."
        )
    pipeline = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
            ("logreg", LogisticRegression(max_iter=5000, random_state=cfg.train.seed)),
        ]
    )
    started = time.perf_counter()
    pipeline.fit(classification_inputs(train_frame), y)
    fit_seconds = time.perf_counter() - started
    model_file = _save_sklearn(pipeline, output_dir)
    result.artifacts["model"] = model_file
    logreg = pipeline.named_steps["logreg"]
    n_coef = int(logreg.coef_.size + logreg.intercept_.size)
    result.trainable_params = result.total_params = n_coef
    vocab = len(pipeline.named_steps["tfidf"].vocabulary_)
    result.notes.append(
        f"TF-IDF vocabulary of {vocab} uni/bigrams; logistic regression fitted in "
        f"{fit_seconds:.2f}s ({n_coef} coefficients)."
    )
    labels = label_set(cfg, data)
    for split in eval_splits(data):
        frame = data[split]
        predictions = [str(p) for p in pipeline.predict(classification_inputs(frame))]
        extra = None
        if split == "test":
            proba = pipeline.predict_proba(classification_inputs(frame))
            extra = {"score": proba.max(axis=1).tolist()}  # probability of the predicted label
            # One column per label (0 for labels the model never saw): calibration metrics.
            classes = [str(c) for c in pipeline.classes_]
            for label in labels:
                column = proba[:, classes.index(label)] if label in classes else [0.0] * len(frame)
                extra[f"prob_{label}"] = list(column)
        record_classification(result, split, frame, predictions, labels, output_dir, extra)


def _save_sklearn(pipeline, output_dir: Path) -> str:
    """Always skops, never joblib/pickle: tunelab loads the file back as data, against an
    allow-list of the pipeline's types (lifecycle/safe_load.py), so no code runs."""
    try:
        import skops.io as sio
    except ImportError:
        raise TrainingError(
            "train.baseline.kind=tfidf saves its model with skops, which is not installed. "
            "Install it (`pip install skops`); tunelab never saves models with pickle."
        ) from None
    sio.dump(pipeline, output_dir / MODEL_FILE)
    return MODEL_FILE
