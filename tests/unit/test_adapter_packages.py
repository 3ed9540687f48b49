"""Adapter-only packages: a LoRA run registered as its adapter plus a reference to the base
model predicts what its merged package predicts, through tunelab's loader and through
mlflow.pyfunc.load_model, at a fraction of the size; a changed base or a pickled adapter
is refused. Chat models take a user message or a JSON conversation.

One tiny-llama LoRA run (seconds) and a local MLflow store, shared by the module; the
tests that register versions in it are marked integration, as in test_safe_loading.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from echo_words import echo_frame

from tunelab import config, models, scorecard
from tunelab.data import chat
from tunelab.errors import ModelError
from tunelab.lifecycle import packaging, predict, safe_load, tracking
from tunelab.pipeline.records import MethodRecord
from tunelab.runs import TrainResult
from tunelab.train import train
from tunelab.workspace import Workspace

NAME = "echo-generator"
PROMPTS = ["Repeat the word: apple", "Repeat the word: castle", "Repeat the word: window"]


class Exploit:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def lora_cfg(*extra: str):
    return config.load(
        None,
        [
            "train.method=lora",
            "model.name=tiny-llama",
            "model.max_length=64",
            "data.name=echo",
            "data.task=generation",
            "train.batch_size=8",
            # Two small steps: the adapter moves the model, whose greedy answers stay long,
            # prompt-dependent strings (a sensitive comparison), not an immediate eos.
            "train.learning_rate=3e-3",
            "train.max_steps=2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_cache):
    """A tiny-llama LoRA run on the echo words (with its merged model) and its scorecard."""
    frame = echo_frame()
    data = {
        "train": frame.iloc[:16].reset_index(drop=True),
        "validation": frame.iloc[16:18].reset_index(drop=True),
        "test": frame.iloc[16:20].reset_index(drop=True),
    }
    workspace = Workspace(tmp_path_factory.mktemp("ws"))
    cfg = lora_cfg()
    result = train(cfg, data, workspace=workspace)
    card = scorecard.evaluate_run(result, cfg, workspace)
    assert card.ok, card.error
    return result, card


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A local MLflow store (sqlite + files) for the module."""
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    target = tracking.setup(Workspace(tmp_path_factory.mktemp("store")))
    yield target
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if previous is not None:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def register(target, result, card, cfg, alias: str, name: str = NAME) -> Path:
    """Log the run's model as ``cfg`` packages it, register it under ``alias``; returns the
    folder the store keeps its files in."""
    import mlflow

    with mlflow.start_run(experiment_id=tracking.experiment_for(target, result.dataset)):
        info = packaging.log_model(result, card, cfg)
    version = mlflow.register_model(info.model_uri, name).version
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    return Path(urlparse(mlflow.get_logged_model(info.model_id).artifact_location).path)


@pytest.fixture(scope="module")
def packages(run, store):
    """The run registered twice: @adapter-only (adapter package), @merged (merged model)."""
    result, card = run
    adapter = register(store, result, card, lora_cfg("registry.package=adapter"), "adapter-only")
    merged = register(store, result, card, lora_cfg("registry.package=merged"), "merged")
    return {"adapter-only": adapter, "merged": merged}


def _mlflow_predict(reference: str, texts: list[str]) -> list[str]:
    import mlflow

    return [str(answer) for answer in mlflow.pyfunc.load_model(reference).predict(texts)]


# ---------------------------------------------------------------- same answers, smaller


@pytest.mark.integration
def test_adapter_and_merged_packages_answer_alike_through_tunelab_and_mlflow(run, store, packages):
    import mlflow

    result, card = run
    answers = {}
    for alias in packages:
        answers[f"tunelab @{alias}"] = predict.load(store, f"{NAME}@{alias}").predict(PROMPTS)
        answers[f"mlflow @{alias}"] = _mlflow_predict(f"models:/{NAME}@{alias}", PROMPTS)
    assert len({tuple(a) for a in answers.values()}) == 1, answers
    served = answers["tunelab @adapter-only"]
    assert len(set(served)) == len(PROMPTS) and min(map(len, served)) > 20, served
    # ... and not what the base model answers: the adapter is applied.
    base = models.resolve("tiny-llama").path
    plain = packaging.text_pipeline(
        safe_load.load_pipeline(base, base, "text-generation"), "generation"
    )
    assert plain.predict(PROMPTS) != served

    # What is served is what was evaluated: the adapter on its base, in the chat framing.
    table = card.predictions()
    evaluated = dict(zip(table["prompt"], table["prediction"], strict=True))
    window = PROMPTS[2]
    assert answers["tunelab @adapter-only"][2] == evaluated[window].strip()

    adapter_flavor = mlflow.models.Model.load(str(packages["adapter-only"])).flavors
    pyfunc = adapter_flavor["python_function"]
    assert "transformers" not in adapter_flavor
    assert pyfunc["model_code_path"].endswith("adapter_pyfunc.py")
    assert pyfunc["config"]["base"] == {
        "model": "tiny-llama",
        "revision": None,
        "weights_id": packaging.base_of(result).weights_id,
    }
    stored = packages["adapter-only"] / "artifacts" / "adapter"
    assert (stored / "adapter_model.safetensors").is_file()
    assert not list(packages["adapter-only"].rglob("model.safetensors"))  # no base copy
    adapter_mb = packaging.disk_mb(packages["adapter-only"])
    merged_mb = packaging.disk_mb(packages["merged"])
    assert adapter_mb * 5 < merged_mb, (adapter_mb, merged_mb)


def test_serving_costs_measure_the_package_that_is_registered(run):
    result, card = run
    card = replace(card, costs=dict(card.costs))
    packaging.measure_serving_costs(card, result, cfg=lora_cfg("registry.package=adapter"))
    costs = dict(card.costs)
    assert card.servable and costs["adapter_only"] == 1.0
    assert costs["model_size_mb"] == costs["adapter_size_mb"] < costs["merged_size_mb"] / 5
    assert costs["latency_p95_ms"] > 0

    packaging.measure_serving_costs(card, result, measure_latency=False)  # auto: 278k params
    assert card.costs["adapter_only"] == 0.0
    assert card.costs["model_size_mb"] == card.costs["merged_size_mb"]


# ---------------------------------------------------------------- refused


@pytest.mark.integration
def test_a_changed_base_model_is_refused(packages, store, monkeypatch):
    from tunelab.models import resolution

    # The tiny-llama recipe changed: the alias now stands for other weights.
    monkeypatch.setattr(resolution, "alias_revision", lambda name: "tunelab-v9-other-recipe")
    expected = r"the base model changed since training.*merged package"
    with pytest.raises(safe_load.BaseModelChangedError, match=expected) as refused:
        predict.load(store, f"{NAME}@adapter-only")
    assert "tiny-llama" in str(refused.value)
    with pytest.raises(ModelError, match=expected):
        _mlflow_predict(f"models:/{NAME}@adapter-only", PROMPTS[:1])
    # The merged package does not depend on the base.
    assert predict.load(store, f"{NAME}@merged").predict(PROMPTS[:1])


@pytest.mark.integration
def test_a_pickled_adapter_is_never_unpickled(run, store, tmp_path):
    result, card = run
    marker = tmp_path / "code-ran"
    folder = tmp_path / "run"
    shutil.copytree(result.output_dir, folder)
    weights = folder / "adapter" / "adapter_model.safetensors"
    weights.unlink()
    (folder / "adapter" / "adapter_model.bin").write_bytes(pickle.dumps(Exploit(marker)))
    tampered = replace(result, output_dir=str(folder))
    adapter = lora_cfg("registry.package=adapter")

    # Refused when packaging a run folder...
    served = packaging.servable(tampered, adapter)
    with pytest.raises(safe_load.UntrustedModelError, match=r"adapter_model\.bin.*safetensors"):
        served.predictor()
    # ... and when loading a registered version whose store was tampered with.
    stored = register(store, result, card, adapter, "tampered", name="echo-tampered")
    (stored / "artifacts" / "adapter" / "adapter_model.safetensors").unlink()
    (stored / "artifacts" / "adapter" / "adapter_model.bin").write_bytes(
        pickle.dumps(Exploit(marker))
    )
    with pytest.raises(safe_load.UntrustedModelError, match=r"adapter_model\.bin") as refused:
        predict.load(store, "echo-tampered@tampered")
    assert "models:/echo-tampered@tampered" in str(refused.value)
    with pytest.raises(ModelError, match=r"adapter_model\.bin"):
        _mlflow_predict("models:/echo-tampered@tampered", PROMPTS[:1])
    assert not marker.exists()


# ---------------------------------------------------------------- chat


@pytest.mark.integration
def test_chat_models_answer_a_message_or_a_json_conversation(run, store, tmp_path):
    result, card = run
    # The same weights as a chat model: the user turn -> assistant turn it was trained on.
    chat_run = replace(result, task="chat")
    chat_card = replace(card, task="chat")
    single = chat.dumps([{"role": "user", "content": PROMPTS[0]}])
    longer = chat.dumps(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Repeat the word: river"},
            {"role": "assistant", "content": "river"},
            {"role": "user", "content": PROMPTS[0]},
        ]
    )
    texts = [PROMPTS[0], single, longer]
    for package in ("adapter", "merged"):
        cfg = lora_cfg("data.task=chat", f"registry.package={package}")
        served = packaging.servable(chat_run, cfg)
        assert served.as_code  # MLflow's prompt_template cannot render a conversation
        alias = f"chat-{package}"
        register(store, chat_run, chat_card, cfg, alias, name="echo-chat")
        loaded = predict.load(store, f"echo-chat@{alias}")
        prompts = [loaded.model.prompt(t) for t in texts]
        assert prompts[0] == prompts[1]  # a plain message is one user turn
        assert prompts[2].count("<|user|>") == 2 and prompts[2].endswith("<|assistant|>\n")
        answers = loaded.predict(texts)
        assert answers[0] == answers[1]
        assert _mlflow_predict(f"models:/echo-chat@{alias}", texts) == answers

        source, target = tmp_path / "in.csv", tmp_path / f"{package}.csv"
        pd.DataFrame({"id": [1, 2], "messages": [single, longer]}).to_csv(source, index=False)
        assert predict.predict_file(loaded, source, target) == 2
        assert pd.read_csv(target)["prediction"].fillna("").tolist() == answers[1:]


@pytest.mark.parametrize(
    ("text", "messages"),
    [
        ("hello", [{"role": "user", "content": "hello"}]),
        ("[not json", [{"role": "user", "content": "[not json"}]),
        ('["a", "b"]', [{"role": "user", "content": '["a", "b"]'}]),
        (
            json.dumps([{"role": "user", "content": "hi", "name": "x"}]),
            [{"role": "user", "content": "hi"}],
        ),
    ],
)
def test_a_chat_input_is_a_conversation_or_one_user_turn(text, messages):
    assert packaging.conversation(text) == messages


# ---------------------------------------------------------------- which package


def _result(**changes) -> TrainResult:
    fields = {
        "method": "lora",
        "model": "tiny-llama",
        "dataset": "echo",
        "task": "generation",
        "output_dir": "run",
        "total_params": 300_000,
        "artifacts": {"adapter": "adapter", "merged": "merged"},
    }
    return TrainResult(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "wanted", "package"),
    [
        ({}, None, "merged"),  # a small base: a full copy is cheap
        ({"total_params": 1_300_000_000}, None, "adapter"),  # above 1B: the adapter
        ({"total_params": 1_300_000_000}, "merged", "merged"),
        ({}, "adapter", "adapter"),
        ({"method": "prefix", "artifacts": {"adapter": "adapter"}}, None, "adapter"),
        ({"method": "full", "artifacts": {"model": "model"}}, "adapter", "model"),
    ],
)
def test_the_package_follows_registry_package_else_the_base_size(changes, wanted, package):
    assert packaging.package_of(_result(**changes), wanted) == package


def test_prefix_tuning_cannot_be_registered_merged():
    cfg = lora_cfg("train.method=prefix", "registry.package=merged")
    reason = packaging.why_not_servable(_result(artifacts={"adapter": "adapter"}), cfg)
    assert "registry.package=merged" in reason and "registry.package=adapter" in reason


def test_the_review_shows_the_size_of_each_package(tmp_path):
    from tunelab import report

    def size(costs: dict) -> str:
        entry = MethodRecord(dataset="echo", method="lora", run_dir=str(tmp_path))
        return report._size_cell(report._Run(entry, {"costs": costs}, None, []))

    sizes = {"adapter_size_mb": 0.35, "merged_size_mb": 513.2}
    assert (
        size({**sizes, "model_size_mb": 0.35, "adapter_only": 1.0}) == "0.35 adapter (merged 513)"
    )
    assert (
        size({**sizes, "model_size_mb": 513.2, "adapter_only": 0.0}) == "513 merged (adapter 0.35)"
    )
    assert size({"model_size_mb": 87.0}) == "87.0"
