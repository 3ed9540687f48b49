"""Run folders and aliases between workers through the team store: a step publishes the
run folder it wrote, another workspace fetches it (tunelab.pipeline.exchange), the run
keys do not depend on where a start folder lies, built aliases are shared once per team,
and the DVC remote defaults to the store. On fsspec's in-memory file system."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import fsspec
import pytest

from tunelab import config, models, objectstore, runs
from tunelab.data import dvc
from tunelab.errors import PipelineError
from tunelab.models import aliases
from tunelab.pipeline import exchange
from tunelab.pipeline.records import MethodRecord
from tunelab.runs import RESULT_FILE, SCORECARD_FILE, TrainResult
from tunelab.workspace import Workspace

pytestmark = pytest.mark.usefixtures("memory_store")

STORE = "memory://team"
REPO = Path(__file__).resolve().parents[2]
TINY_DPO = REPO / "configs" / "tiny" / "preferences-dpo.yaml"


@pytest.fixture
def team(monkeypatch):
    monkeypatch.setenv(objectstore.STORE_ENV, STORE)


def trained(root: Path, dataset: str = "tiny-preferences", name: str = "lora-abc123") -> Path:
    """A finished run folder <root>/runs/<dataset>/<name>: its record, scorecard and model."""
    folder = root / "runs" / dataset / name
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.safetensors").write_bytes(b"weights")
    (folder / SCORECARD_FILE).write_text('{"accuracy": 0.75}')
    TrainResult(
        method="lora",
        model="tiny-llama",
        dataset=dataset,
        task="preference",
        output_dir=str(folder),
        artifacts={"model": "model"},
    ).save()
    return folder


def dpo_from(init_from: str):
    """The tiny DPO config starting from ``init_from``, as MethodSpec.config_for makes it."""
    cfg = config.load(TINY_DPO)
    assert cfg.train.method == "dpo"
    dpo = cfg.train.dpo.model_copy(update={"init_from": init_from})
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"dpo": dpo})})


# ------------------------------------------------------------------ run folders


def test_a_published_run_folder_is_fetched_into_another_workspace(team, tmp_path, memory_store):
    folder = trained(tmp_path / "ws1")
    exchange.publish(folder)
    assert f"/team/runs/tiny-preferences/lora-abc123/{RESULT_FILE}" in memory_store.store

    second = Workspace(tmp_path / "ws2")
    found = exchange.local(str(folder), second)
    assert found == str(tmp_path / "ws2" / "runs" / "tiny-preferences" / "lora-abc123")
    for name in (RESULT_FILE, SCORECARD_FILE, "model/model.safetensors"):
        assert (Path(found) / name).read_bytes() == (folder / name).read_bytes()
    assert TrainResult.load(found).output_dir == found
    # Already there: the same folder, nothing to fetch.
    assert exchange.local(str(folder), second) == found


def test_the_records_are_published_last(team, tmp_path, monkeypatch):
    folder = trained(tmp_path / "ws1")
    memory = fsspec.filesystem("memory")
    put, sent = memory.put_file, []

    def put_file(local, remote, **kwargs):
        sent.append(Path(remote).name)
        return put(local, remote, **kwargs)

    monkeypatch.setattr(memory, "put_file", put_file)
    monkeypatch.setattr(objectstore.ObjectStore, "filesystem", lambda self, probe=False: memory)
    exchange.publish(folder)
    assert sent[0] == "model.safetensors"
    assert sorted(sent[1:]) == sorted([RESULT_FILE, SCORECARD_FILE])


def test_a_later_step_publishes_its_scorecard(team, tmp_path):
    folder = trained(tmp_path / "ws1")
    exchange.publish(folder)
    (folder / SCORECARD_FILE).write_text('{"accuracy": 0.5, "f1": 0.4}')
    exchange.publish(folder)
    found = exchange.local(str(folder), Workspace(tmp_path / "ws2"))
    assert (Path(found) / SCORECARD_FILE).read_text() == '{"accuracy": 0.5, "f1": 0.4}'


def test_a_file_stored_again_in_the_same_size_is_fetched_again(team, tmp_path):
    """A re-evaluation on one worker changes the scorecard's numbers, not its length: a
    worker that fetched the old one gets the new one (the store's version tells)."""
    folder = trained(tmp_path / "ws1")
    exchange.publish(folder)
    second = Workspace(tmp_path / "ws2")
    found = Path(exchange.local(str(folder), second))
    assert (found / SCORECARD_FILE).read_text() == '{"accuracy": 0.75}'
    time.sleep(0.01)  # the memory store's version is its creation time
    (folder / SCORECARD_FILE).write_text('{"accuracy": 0.80}')
    exchange.publish(folder)
    assert (Path(exchange.local(str(folder), second)) / SCORECARD_FILE).read_text() == (
        '{"accuracy": 0.80}'
    )


def test_the_review_fetches_the_records_not_the_model(team, tmp_path):
    folder = trained(tmp_path / "ws1")
    exchange.publish(folder)
    record = MethodRecord("tiny-preferences", "lora", run_dir=str(folder))
    exchange.localize([record], Workspace(tmp_path / "ws2"))
    fetched = Path(record.run_dir)
    assert fetched.is_relative_to(tmp_path / "ws2")
    assert (fetched / SCORECARD_FILE).is_file() and (fetched / RESULT_FILE).is_file()
    assert not (fetched / "model").exists()
    # A later step that needs the model gets the rest.
    exchange.local(str(folder), Workspace(tmp_path / "ws2"))
    assert (fetched / "model" / "model.safetensors").read_bytes() == b"weights"


def test_without_a_store_run_folders_stay_where_they_are(tmp_path, memory_store):
    folder = trained(tmp_path / "ws1")
    exchange.publish(folder)
    assert memory_store.store == {}
    elsewhere = str(tmp_path / "ws1" / "runs" / "x" / "not-there")
    assert exchange.local(elsewhere, Workspace(tmp_path / "ws2")) == elsewhere
    cfg = dpo_from(str(folder))
    assert exchange.local_config(cfg, Workspace(tmp_path / "ws2")) is cfg


def test_a_run_folder_in_neither_place_is_an_error(team, tmp_path):
    missing = tmp_path / "ws1" / "runs" / "tiny-preferences" / "dpo-gone"
    with pytest.raises(PipelineError, match="tiny-preferences/dpo-gone") as caught:
        exchange.local(str(missing), Workspace(tmp_path / "ws2"))
    assert "memory://team/runs/tiny-preferences/dpo-gone" in str(caught.value)


def test_a_run_folder_already_in_the_workspace_needs_no_store_copy(team, tmp_path):
    folder = trained(tmp_path / "ws2")  # trained here, never published
    found = exchange.local(
        str(tmp_path / "ws1" / "runs" / folder.parent.name / folder.name),
        Workspace(tmp_path / "ws2"),
    )
    assert found == str(folder)


def test_the_start_of_a_dpo_run_is_fetched_into_this_workspace(team, tmp_path):
    folder = trained(tmp_path / "ws1")
    exchange.publish(folder)
    second = Workspace(tmp_path / "ws2")
    cfg = exchange.local_config(dpo_from(str(folder)), second)
    expected = tmp_path / "ws2" / "runs" / "tiny-preferences" / "lora-abc123"
    assert cfg.train.dpo.init_from == str(expected)
    assert (expected / RESULT_FILE).is_file()
    assert cfg.train.policy_init_from == str(expected)


@pytest.mark.parametrize("start", ["org/sft-model", "tiny-llama", "{tmp}/models/sft"])
def test_hub_ids_and_other_folders_are_left_alone(team, tmp_path, start):
    start = start.format(tmp=tmp_path)
    cfg = dpo_from(start)
    assert exchange.local_config(cfg, Workspace(tmp_path / "ws2")) is cfg
    assert cfg.train.dpo.init_from == start


# ------------------------------------------------------------------ run keys


def test_the_run_key_does_not_depend_on_where_the_start_folder_lies(tmp_path):
    first = trained(tmp_path / "ws1")
    copy = tmp_path / "ws2" / "runs" / first.parent.name / first.name
    shutil.copytree(first, copy)
    key = runs.fingerprint(dpo_from(str(first)), "v1", code="c")
    assert runs.fingerprint(dpo_from(str(copy)), "v1", code="c") == key

    # Another start (another record) is another run.
    record = copy / RESULT_FILE
    record.write_text(record.read_text().replace('"lora"', '"full"'))
    assert runs.fingerprint(dpo_from(str(copy)), "v1", code="c") != key


def test_a_moved_run_folder_is_loaded_from_where_it_is(tmp_path):
    first = trained(tmp_path / "ws1")
    copy = tmp_path / "ws2" / "runs" / first.parent.name / first.name
    shutil.copytree(first, copy)
    result = TrainResult.load(copy)
    assert result.output_dir == str(copy.resolve())
    assert result.artifact("model") == copy.resolve() / "model"
    assert TrainResult.load(first).output_dir == str(first)


# ------------------------------------------------------------------ aliases and DVC


def test_a_built_alias_is_shared_and_fetched_instead_of_built(team, tmp_path, monkeypatch):
    name = "tiny-bert"
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache-a"))
    built = models.prepare_alias(name)
    assert built == tmp_path / "cache-a" / name
    store = objectstore.configured()
    url = store.model_url(name, f"{aliases.alias_revision(name)}-{aliases._recipe(name)}")
    assert url.startswith(f"{STORE}/models/{name}/")
    memory = fsspec.filesystem("memory")
    assert memory.isfile(f"{url}/{aliases.MARKER}")
    assert memory.isfile(f"{url}/config.json")

    def refuse(work):
        raise AssertionError("built again instead of fetched from the team store")

    monkeypatch.setitem(aliases._BUILDERS, name, refuse)
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache-b"))
    fetched = models.prepare_alias(name)
    assert fetched == tmp_path / "cache-b" / name
    assert aliases._is_ready(name, fetched)
    for path in built.rglob("*"):
        if path.is_file() and path.name != objectstore.SYNC_RECORD:
            assert (fetched / path.relative_to(built)).read_bytes() == path.read_bytes()


def test_the_dvc_remote_defaults_to_the_store(tmp_path, monkeypatch):
    workspace = Workspace(tmp_path)
    assert dvc.default_remote(workspace) == str(tmp_path / "dvc-remote")
    monkeypatch.setenv(objectstore.STORE_ENV, "s3://tunelab/team/")
    assert dvc.default_remote(workspace) == "s3://tunelab/team/dvc"
