"""Full fine-tuning (train.method=full): classification heads on encoders and decoders,
causal-LM SFT with response-only loss, seq2seq, artifacts, resume and clear failures.

Tiny random models and a few dozen rows: every run takes seconds on a CPU.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from echo_words import WORDS, echo_frame

from tunelab import config, models
from tunelab.errors import TrainingError
from tunelab.train import features, finetune
from tunelab.train import train as run_training
from tunelab.workspace import Workspace

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(autouse=True)
def short_answers(monkeypatch):
    # Answers here are one word: short greedy generations keep the tests fast.
    monkeypatch.setattr(finetune, "MAX_NEW_TOKENS", 8)


def make_cfg(*overrides: str):
    return config.load(None, list(overrides))


def classification_cfg(model: str, *extra: str):
    return make_cfg(
        "train.method=full",
        f"model.name={model}",
        "model.max_length=64",
        "data.task=classification",
        f"data.labels=[{', '.join(LABELS)}]",
        "train.batch_size=8",
        "train.logging_steps=1",
        *extra,
    )


def generation_cfg(model: str, *extra: str):
    return make_cfg(
        "train.method=full",
        f"model.name={model}",
        "model.max_length=64",
        "data.name=echo",
        "data.task=generation",
        "train.batch_size=8",
        "train.logging_steps=1",
        *extra,
    )


def small(splits: dict, train: int = 16, held_out: int = 6) -> dict:
    """A few rows of each split, every label present in train."""
    frame = splits["train"]
    per_label = max(train // frame["label"].nunique(), 1)
    head = frame.groupby("label", group_keys=False).head(per_label).head(train)
    return {
        "train": head.reset_index(drop=True),
        "validation": splits["validation"].head(held_out).reset_index(drop=True),
        "test": splits["test"].head(held_out).reset_index(drop=True),
    }


def echo_data(train: int = 16, held_out: int = 4) -> dict:
    """A learnable generation set: repeat the word in the prompt."""
    frame = echo_frame()
    return {
        "train": frame.iloc[:train].reset_index(drop=True),
        "validation": frame.iloc[train : train + held_out // 2].reset_index(drop=True),
        "test": frame.iloc[train : train + held_out].reset_index(drop=True),
    }


def losses(result) -> list[float]:
    return [row["loss"] for row in result.history if "loss" in row]


# ---------------------------------------------------------------- classification


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, sentiment_splits):
    """tiny-bert learns 16 sentences in 12 epochs of one step; shared by the tests below."""
    workspace = Workspace(tmp_path_factory.mktemp("ws"))
    cfg = classification_cfg(
        "tiny-bert", "train.epochs=12", "train.batch_size=16", "train.learning_rate=1e-2"
    )
    data = small(sentiment_splits)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELAB_PROGRESS", "0")
        result = run_training(cfg, data, workspace=workspace)
    return cfg, data, workspace, result


def test_full_classification_trains_every_weight_and_learns(bert_run):
    _, _, _, result = bert_run
    assert result.method == "full" and result.task == "classification"
    assert result.trainable_params == result.total_params > 100_000
    steps = losses(result)
    assert len(steps) == 12
    # The same 16 rows 12 times at a high learning rate: the training loss must collapse.
    assert steps[-1] < 0.5 * steps[0], steps
    assert result.metrics["train_steps"] == 12
    assert any("eval_loss" in row for row in result.history)
    for split in ("validation", "test"):
        for name in ("accuracy", "macro_f1", "micro_f1"):
            assert 0.0 <= result.metrics[f"{split}_{name}"] <= 1.0
    assert result.tokens_per_second and result.tokens_per_second > 0
    assert result.wall_seconds > 0 and result.peak_rss_mb > 0
    assert result.resumed_from is None


def test_full_classification_saves_model_predictions_and_record(bert_run):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, data, _, result = bert_run
    folder = result.artifact("model")
    assert result.artifacts["model"] == "model"
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.bin"))
    saved = json.loads((folder / "config.json").read_text())
    assert saved["id2label"] == {str(i): label for i, label in enumerate(LABELS)}

    predictions = pd.read_parquet(result.artifact("model").parent / "predictions.parquet")
    test = data["test"]
    assert len(predictions) == len(test)
    assert list(predictions["text"]) == list(test["text"])
    assert list(predictions["reference"]) == list(test["label"])
    assert set(predictions["prediction"]) <= set(LABELS)
    assert (predictions["correct"] == (predictions["reference"] == predictions["prediction"])).all()
    probs = predictions[[f"prob_{label}" for label in LABELS]].to_numpy()
    assert probs.sum(axis=1) == pytest.approx(1.0)
    assert result.metrics["test_accuracy"] == pytest.approx(predictions["correct"].mean())

    # The saved folder alone reproduces the predictions.
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = tokenizer(list(test["text"]), padding=True, truncation=True, max_length=64,
                      return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        ids = model(**batch).logits.argmax(-1).tolist()
    assert [model.config.id2label[i] for i in ids] == list(predictions["prediction"])

    record = json.loads((result.artifact("model").parent / "train_result.json").read_text())
    assert record["metrics"]["test_macro_f1"] == result.metrics["test_macro_f1"]


def test_rerun_of_a_finished_run_trains_it_again_from_scratch(bert_run):
    """A recomputed train step must train, not resume from the final checkpoint."""
    cfg, data, workspace, first = bert_run
    again = run_training(cfg, data, workspace=workspace)
    assert again.output_dir == first.output_dir
    assert again.resumed_from is None
    assert len(losses(again)) == 12 and again.tokens_per_second
    assert again.metrics["train_loss"] == pytest.approx(first.metrics["train_loss"])
    assert again.metrics["test_accuracy"] == first.metrics["test_accuracy"]


def test_decoder_classification_with_text_pairs(tmp_path, sentiment_splits):
    data = small(sentiment_splits, train=12, held_out=4)
    for frame in data.values():
        frame["text_pair"] = ["Is this review positive?"] * len(frame)
    cfg = classification_cfg("tiny-gpt2", "train.max_steps=4", "train.learning_rate=1e-3")
    result = run_training(cfg, data, workspace=Workspace(tmp_path))
    saved = json.loads((result.artifact("model") / "config.json").read_text())
    # GPT-2 has no pad token of its own: the head needs one to find the last real token.
    assert saved["pad_token_id"] is not None
    assert saved["architectures"] == ["GPT2ForSequenceClassification"]
    predictions = pd.read_parquet(result.artifact("model").parent / "predictions.parquet")
    assert list(predictions["text_pair"]) == ["Is this review positive?"] * 4
    assert 0.0 <= result.metrics["test_macro_f1"] <= 1.0


def test_text_pair_features_encoder_segments_decoder_joined():
    frame = pd.DataFrame({"text": ["good soup"], "text_pair": ["bad bread"], "label": ["positive"]})
    data = {"train": frame, "test": frame}
    bert = features.prepare(classification_cfg("tiny-bert"), data)
    row = bert.features["train"][0]
    assert row["labels"] == LABELS.index("positive")
    # The pair is a second segment: [CLS] text [SEP] pair [SEP].
    assert bert.tokenizer.decode(row["input_ids"]) == "[CLS] good soup [SEP] bad bread [SEP]"
    gpt2 = features.prepare(classification_cfg("tiny-gpt2"), data)
    assert gpt2.tokenizer.decode(gpt2.features["train"][0]["input_ids"]) == "good soup\nbad bread"


# ---------------------------------------------------------------- generation


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_causal_sft_learns_and_reports_generation_metrics(tmp_path, model):
    from transformers import AutoModelForCausalLM

    cfg = generation_cfg(model, "train.epochs=4", "train.learning_rate=1e-2")
    result = run_training(cfg, echo_data(), workspace=Workspace(tmp_path))
    steps = losses(result)
    assert len(steps) == 8
    assert steps[-1] < 0.75 * steps[0], steps
    metrics = result.metrics
    assert metrics["test_perplexity"] == pytest.approx(math.exp(metrics["test_loss"]))
    assert "validation_loss" in metrics
    assert 0.0 <= metrics["test_rougeL"] <= 1.0
    assert metrics["test_generated"] == 4
    predictions = pd.read_parquet(result.artifact("model").parent / "predictions.parquet")
    assert list(predictions.columns) == ["prompt", "reference", "prediction", "rougeL"]
    assert list(predictions["reference"]) == WORDS[16:20]
    assert metrics["test_rougeL"] == pytest.approx(predictions["rougeL"].mean())
    assert AutoModelForCausalLM.from_pretrained(str(result.artifact("model"))) is not None
    sft_note = next(note for note in result.notes if note.startswith("SFTTrainer"))
    assert ("chat template" in sft_note) == (model == "tiny-llama"), sft_note


def test_seq2seq_t5_labels_are_the_response(tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    data = echo_data()
    cfg = generation_cfg("tiny-t5", "train.max_steps=6", "train.learning_rate=3e-3")
    job = features.prepare(cfg, data)
    assert job.kind == "seq2seq"
    row = job.features["train"][0]
    assert job.tokenizer.decode(row["labels"], skip_special_tokens=True) == "apple"
    assert row["labels"][-1] == job.tokenizer.eos_token_id
    assert (
        job.tokenizer.decode(row["input_ids"], skip_special_tokens=True)
        == data["train"]["prompt"][0]
    )

    result = run_training(cfg, data, workspace=Workspace(tmp_path))
    assert result.metrics["train_steps"] == 6
    assert result.metrics["test_perplexity"] == pytest.approx(math.exp(result.metrics["test_loss"]))
    assert "test_rougeL" in result.metrics
    saved = AutoModelForSeq2SeqLM.from_pretrained(str(result.artifact("model")))
    assert saved.config.model_type == "t5"


# ---------------------------------------------------------------- failures


def test_prompts_longer_than_max_length_fail_with_a_count(tmp_path):
    data = echo_data()
    long = " ".join(["a much longer prompt than the model allows"] * 8)
    data["train"].loc[[1, 4, 7], "prompt"] = long
    cfg = generation_cfg("tiny-gpt2", "model.max_length=24", "train.max_steps=1")
    with pytest.raises(TrainingError, match=r"3 of 16 train prompts are longer than "
                       r"model.max_length=24"):  # fmt: skip
        run_training(cfg, data, workspace=Workspace(tmp_path))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("data.task=generation", "model.name=tiny-bert"), "is an encoder: it cannot generate"),
        (("data.task=classification", "model.name=tiny-t5"), "seq2seq"),
    ],
)
def test_unsupported_model_and_task_pairs_fail_clearly(tmp_path, overrides, message):
    data = echo_data()
    for frame in data.values():
        frame["text"], frame["label"] = frame["prompt"], "neutral"
    cfg = make_cfg("train.method=full", *overrides)
    with pytest.raises(TrainingError, match=message):
        run_training(cfg, data, workspace=Workspace(tmp_path))


def test_labels_outside_the_declared_set_fail(tmp_path, sentiment_splits):
    data = small(sentiment_splits, train=9, held_out=3)
    data["test"].loc[0, "label"] = "furious"
    with pytest.raises(TrainingError, match=r"test split has label\(s\) \['furious'\]"):
        run_training(classification_cfg("tiny-bert"), data, workspace=Workspace(tmp_path))


def test_job_kind_follows_task_and_family():
    cfg = generation_cfg("tiny-t5")
    assert features.job_kind(cfg, models.resolve("tiny-t5")) == "seq2seq"
    assert features.job_kind(cfg, models.resolve("tiny-gpt2")) == "causal"
    assert features.job_kind(classification_cfg("x"), models.resolve("tiny-gpt2")) == (
        "classification"
    )
