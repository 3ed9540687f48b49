"""A run's fingerprint: everything its result depends on, one hash that names the run
folder and keys the cached train step. No training here: folders and a fake hub cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab import config, runs
from tunelab.models import resolution
from tunelab.pipeline import cache
from tunelab.workspace import Workspace

GPT2_CONFIG = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}


def lora(*extra: str):
    return config.load(None, ["train.method=lora", "model.name=tiny-gpt2", *extra])


def write_model(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(GPT2_CONFIG))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_the_run_folder_and_the_train_step_share_one_fingerprint(tmp_path):
    cfg = lora()
    key = runs.fingerprint(cfg, "v1", "code1")
    assert cache.train_key(cfg, "v1", "code1") == cache.step_key("train", key)
    assert runs.run_key(cfg, "v1") == runs.fingerprint(cfg, "v1", runs.code_version())[:10]
    assert runs.run_dir(cfg, Workspace(tmp_path), "v1").name.endswith(runs.run_key(cfg, "v1"))


def test_changed_code_gives_a_new_run_folder(tmp_path, monkeypatch):
    """A code change retrains the step, in a folder of its own, never resuming the old one."""
    ws, cfg = Workspace(tmp_path), lora()
    before = runs.run_dir(cfg, ws, "v1")
    monkeypatch.setattr(runs, "code_version", lambda: "edited")
    assert runs.run_dir(cfg, ws, "v1") != before


def test_the_code_version_covers_the_flows_package(tmp_path, monkeypatch):
    folders = runs.code_folders()
    assert runs.PACKAGE_ROOT in folders
    assert any(f.name == "flows" and (f / "milestone.py").is_file() for f in folders)

    package, flows = tmp_path / "tunelab", tmp_path / "flows"
    for folder in (package, flows):
        folder.mkdir()
        (folder / "__init__.py").write_text("")
    (flows / "milestone.py").write_text("RETRIES = 1\n")
    monkeypatch.setattr(runs, "code_folders", lambda: [package, flows])
    cfg = lora()
    code, key = runs.code_version(), runs.fingerprint(cfg, "v1")
    (flows / "milestone.py").write_text("RETRIES = 22\n")
    assert runs.code_version() != code
    assert runs.fingerprint(cfg, "v1") != key


def test_library_versions_are_part_of_it(monkeypatch):
    assert {"torch", "transformers", "peft", "trl", "accelerate"} <= set(runs.LIBRARIES)
    assert runs.library_versions()["transformers"]
    cfg = lora()
    key = cache.train_key(cfg, "v1", "code1")
    upgraded = {**runs.library_versions(), "transformers": "99.0.0"}
    monkeypatch.setattr(runs, "library_versions", lambda: upgraded)
    assert cache.train_key(cfg, "v1", "code1") != key


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding org/model at two commits; refs/main says which is main."""
    from huggingface_hub import constants

    root = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    repo = root / "models--org--model"
    commits = {"a" * 40: b"weights A", "b" * 40: b"weights B"}
    for commit, weights in commits.items():
        write_model(repo / "snapshots" / commit, weights)
    (repo / "refs").mkdir()

    def point(ref: str, commit: str) -> None:
        (repo / "refs" / ref).write_text(commit)

    point("main", "a" * 40)
    return point


def test_a_moving_hub_main_is_keyed_by_the_commit_it_resolves_to(hub_cache):
    cfg = config.load(None, ["train.method=lora", "model.name=org/model"])
    assert resolution.weights_id("org/model") == f"hub:{'a' * 40}"
    key = runs.fingerprint(cfg, "v1", "code1")
    hub_cache("main", "b" * 40)  # main moved on the hub and was fetched again
    assert resolution.weights_id("org/model") == f"hub:{'b' * 40}"
    assert runs.fingerprint(cfg, "v1", "code1") != key


def test_a_hub_revision_is_keyed_by_its_commit(hub_cache):
    hub_cache("v1", "b" * 40)
    pinned = config.load(None, ["train.method=lora", "model.name=org/model", "model.revision=v1"])
    assert resolution.weights_id("org/model", "v1") == f"hub:{'b' * 40}"
    moving = config.load(None, ["train.method=lora", "model.name=org/model"])
    assert runs.starting_point(pinned) != runs.starting_point(moving)


def test_a_hub_model_that_cannot_be_resolved_still_gets_a_key(hub_cache):
    assert resolution.weights_id("org/absent") == "unresolved:org/absent@None"


def test_a_local_model_folder_is_keyed_by_its_files(tmp_path):
    folder = write_model(tmp_path / "my-model", b"weights one")
    cfg = config.load(None, ["train.method=full", f"model.name={folder}"])
    key = runs.fingerprint(cfg, "v1", "code1")
    assert runs.fingerprint(cfg, "v1", "code1") == key
    # A run's checkpoints are its training state, not the model: they change nothing.
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "optimizer.pt").write_bytes(b"state")
    assert runs.fingerprint(cfg, "v1", "code1") == key
    (folder / "model.safetensors").write_bytes(b"weights two, longer")
    assert runs.fingerprint(cfg, "v1", "code1") != key


def test_a_file_is_hashed_once_while_it_is_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"x" * 10)
    first = resolution.file_digest(path)
    monkeypatch.setattr(resolution.hashlib, "sha256", None)  # hashing again would fail
    assert resolution.file_digest(path) == first


def test_a_dpo_run_from_an_earlier_run_follows_that_run(tmp_path):
    source = tmp_path / "runs" / "lora-x"
    write_model(source / "merged", b"merged")
    (source / runs.RESULT_FILE).write_text('{"wall_seconds": 1.0}')
    cfg = config.load(
        None, ["train.method=dpo", "data.task=preference", f"train.dpo.init_from={source}"]
    )
    key = runs.fingerprint(cfg, "v1", "code1")
    (source / runs.RESULT_FILE).write_text('{"wall_seconds": 2.5}')  # the source was retrained
    assert runs.fingerprint(cfg, "v1", "code1") != key


def test_sklearn_baselines_resolve_no_model(monkeypatch):
    def fail(*args):
        raise AssertionError("resolved a model")

    monkeypatch.setattr(runs, "weights_id", fail)
    assert runs.starting_point(config.load(None, ["train.baseline.kind=tfidf"])) == {}
