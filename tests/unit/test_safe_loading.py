"""Model files are read as data, never run as code: the TF-IDF pipeline through skops and
an allow-list, language models from safetensors, registered versions by tunelab's own
loader (gate and `tunelab predict`), never mlflow.pyfunc.load_model."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tunelab import config, models
from tunelab.errors import ModelError
from tunelab.lifecycle import packaging
from tunelab.train import train
from tunelab.workspace import Workspace

LABELS = {"negative", "neutral", "positive"}
NAME = "toy-classifier"
TFIDF = [
    "train.method=baseline",
    "data.task=classification",
    "data.labels=[negative, neutral, positive]",
    "train.baseline.kind=tfidf",
]


class Payload:
    """Stands for attacker code: any class tunelab did not put in its pipeline."""


class Exploit:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def tfidf(tmp_path, sentiment_splits):
    cfg = config.load(None, TFIDF)
    workspace = Workspace(tmp_path / "ws")
    return cfg, workspace, train(cfg, sentiment_splits, workspace=workspace)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local MLflow store (sqlite + files) in tmp_path."""
    from tunelab.lifecycle import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    target = tracking.setup(Workspace(tmp_path / "store"))
    yield target
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def _fitted(result):
    import skops.io as sio

    return sio.load(result.artifact("model"))  # a file this test just trained: trusted


def _sklearn(path: Path) -> packaging.Servable:
    return packaging.Servable("sklearn", path, "classification")


def _register(target, log) -> tuple[str, Path]:
    """Log a model into a run, register it as version 1 of NAME (alias champion); returns
    the URI and the folder the store keeps its files in (to tamper with)."""
    import mlflow

    from tunelab.lifecycle import tracking

    with mlflow.start_run(experiment_id=tracking.experiment_for(target, "sentiment")):
        info = log()
    version = mlflow.register_model(info.model_uri, NAME).version
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", version)
    location = mlflow.get_logged_model(info.model_id).artifact_location
    return f"models:/{NAME}/{version}", Path(urlparse(location).path)


def _no_mlflow_pyfunc(monkeypatch):
    import mlflow.pyfunc

    def refuse(*args, **kwargs):
        raise AssertionError("mlflow.pyfunc.load_model runs code stored with the model")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", refuse)


# ---------------------------------------------------------------- TF-IDF files (skops)


def test_a_trained_tfidf_model_loads_through_the_allow_list(tfidf):
    from tunelab.lifecycle import safe_load

    _, _, result = tfidf
    path = result.artifact("model")
    assert path.suffix == ".skops"
    assert safe_load.untrusted_types(path) == set()
    assert set(_sklearn(path).predictor()(["I loved it", "Awful"])) <= LABELS


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        # attacker code: a class of its own inside the estimator
        (lambda p: setattr(p.named_steps["logreg"], "hook_", Payload()), "Payload"),
        # a builtin that runs code, stored as a function reference
        (lambda p: setattr(p.named_steps["logreg"], "hook_", eval), "builtins.eval"),
        # trusted by skops itself, but not part of tunelab's pipeline
        (lambda p: p.steps.insert(0, ("step", _function_transformer())), "FunctionTransformer"),
    ],
    ids=["custom-class", "eval", "skops-default-type"],
)
def test_a_skops_file_with_a_type_off_the_allow_list_is_refused(tfidf, tmp_path, tamper, named):
    import skops.io as sio

    _, _, result = tfidf
    pipeline = _fitted(result)
    tamper(pipeline)
    path = tmp_path / "model.skops"
    sio.dump(pipeline, path)
    with pytest.raises(ModelError) as refused:
        _sklearn(path).predictor()
    message = str(refused.value)
    assert str(path) in message and named in message
    assert "Retrain" in message


def _function_transformer():
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer()


def test_a_pickle_in_place_of_the_skops_file_is_never_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.skops"
    path.write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(ModelError, match=r"model\.skops is a pickle.*Retrain"):
        _sklearn(path).predictor()
    assert not marker.exists()


def test_an_old_joblib_model_is_refused_with_a_retrain_hint(tmp_path, tfidf):
    _, _, result = tfidf
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.joblib"
    path.write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(ModelError, match=r"model\.joblib is a joblib \(pickle\).*Retrain"):
        _sklearn(path).predictor()
    assert not marker.exists()
    result.artifacts["model"] = "model.joblib"  # a run an older tunelab trained
    assert "retrain" in packaging.why_not_servable(result)


# ---------------------------------------------------------------- language models (safetensors)


@pytest.fixture
def classifier_dir(tmp_path):
    """A tiny BERT classifier saved as a run saves it (safetensors)."""
    from transformers import AutoModelForSequenceClassification

    source = models.resolve("tiny-bert")
    labels = sorted(LABELS)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source.path),
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    folder = tmp_path / "classifier"
    model.save_pretrained(str(folder))
    models.load_tokenizer(source).save_pretrained(str(folder))
    return folder


def _as_pickled_weights(folder: Path) -> None:
    """Swap safetensors for a torch.save (pickle) file, as a tampered store would hold."""
    import torch
    from safetensors.torch import load_file

    (weights,) = folder.glob("*.safetensors")
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()


def test_a_run_folder_with_pickled_weights_is_refused(classifier_dir):
    served = packaging.Servable(
        "transformers", classifier_dir, "classification", "text-classification"
    )
    assert set(served.predictor()(["I loved it"])) <= LABELS
    _as_pickled_weights(classifier_dir)
    with pytest.raises(ModelError, match=r"pytorch_model\.bin.*safetensors.*Retrain"):
        served.predictor()


@pytest.mark.integration
def test_a_registered_language_model_loads_from_safetensors_without_remote_code(
    classifier_dir, store, monkeypatch
):
    import mlflow
    import transformers

    served = packaging.Servable(
        "transformers", classifier_dir, "classification", "text-classification"
    )
    uri, stored = _register(
        store,
        lambda: mlflow.transformers.log_model(
            transformers_model=served.pipeline(),
            name="model",
            task="text-classification",
            pip_requirements=["transformers"],
        ),
    )
    _no_mlflow_pyfunc(monkeypatch)
    seen = []
    original = transformers.AutoModelForSequenceClassification.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", spy)
    loaded = packaging.load_registered(NAME, "1", uri)
    assert set(loaded.predict(["I loved it", "Awful"])) <= LABELS
    assert seen == [{"use_safetensors": True, "trust_remote_code": False}]

    _as_pickled_weights(stored / "model")
    with pytest.raises(ModelError, match=rf"{uri} holds pytorch_model\.bin"):
        packaging.load_registered(NAME, "1", uri)


# ---------------------------------------------------------------- registered TF-IDF versions


def _log_tfidf(cfg, workspace, result):
    from tunelab import scorecard

    card = scorecard.evaluate_run(result, cfg, workspace)
    return card, lambda: packaging.log_model(result, card)


@pytest.mark.integration
def test_tfidf_is_logged_as_code_and_loaded_by_tunelab_without_mlflow_pyfunc(
    tfidf, store, monkeypatch
):
    import mlflow

    from tunelab.lifecycle import evidence, predict

    card, log = _log_tfidf(*tfidf)
    uri, stored = _register(store, log)
    assert not [p.name for p in stored.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]
    flavor = mlflow.models.Model.load(str(stored)).flavors["python_function"]
    assert flavor["model_code_path"].endswith("pyfunc.py")
    # What any MLflow user does still works: it runs tunelab's logged code, not a pickle.
    answers = mlflow.pyfunc.load_model(uri).predict(["I loved it", "Awful"])
    assert set(answers["label"]) <= LABELS

    _no_mlflow_pyfunc(monkeypatch)  # tunelab itself runs no code stored with the model
    loaded = predict.load(store, f"{NAME}@champion")
    assert set(loaded.predict(["I loved it", "Awful"])) <= LABELS
    rescored = evidence.rescore(store, NAME, "1", card)
    assert rescored["prediction"].tolist() == card.predictions()["prediction"].tolist()


@pytest.mark.integration
def test_a_tampered_champion_is_refused_by_the_gate_and_predict(tfidf, store, tmp_path):
    import skops.io as sio

    from tunelab.lifecycle import evidence, predict

    cfg, workspace, result = tfidf
    card, log = _log_tfidf(cfg, workspace, result)
    uri, stored = _register(store, log)
    (artifact,) = stored.rglob("model.skops")
    pipeline = _fitted(result)
    pipeline.named_steps["logreg"].hook_ = Payload()
    sio.dump(pipeline, artifact)
    with pytest.raises(ModelError) as refused:
        evidence.rescore(store, NAME, "1", card)
    message = str(refused.value)
    assert uri in message and "model.skops" in message and "Payload" in message
    assert "Retrain" in message

    marker = tmp_path / "code-ran"
    artifact.write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(ModelError, match=r"is a pickle"):
        predict.load(store, f"{NAME}@champion")
    assert not marker.exists()
