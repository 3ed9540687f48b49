"""The team store (tunelab.objectstore): the $TUNELAB_STORE URL, folders published to and
fetched from it, and failures to reach it turned into a StoreError naming the endpoint.
On fsspec's in-memory file system; one check against an S3 endpoint nobody answers."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import fsspec
import pytest

from tunelab import objectstore
from tunelab.errors import ConfigError, StoreError
from tunelab.objectstore import ObjectStore

pytestmark = pytest.mark.usefixtures("memory_store")

STORE = "memory://team"


@pytest.fixture
def store(monkeypatch) -> ObjectStore:
    monkeypatch.setenv(objectstore.STORE_ENV, STORE)
    found = objectstore.configured()
    assert found is not None
    return found


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def run_folder(root: Path) -> Path:
    return write(
        root,
        {
            "model/model.safetensors": "weights",
            "model/config.json": "{}",
            "train_result.json": '{"method": "lora"}',
            "scorecard.json": '{"accuracy": 1.0}',
            "checkpoint-4/optimizer.pt": "state",
            ".hidden": "not for the team",
            "sub/.cache/x": "not either",
        },
    )


class Recording:
    """A file system that passes everything on and records the files it was given."""

    def __init__(self, fs, fail_get_after: int | None = None):
        self.fs, self.put, self.got, self.fail_get_after = fs, [], [], fail_get_after

    def put_file(self, local, remote, **kwargs):
        self.put.append(remote)
        return self.fs.put_file(local, remote, **kwargs)

    def get_file(self, remote, local, **kwargs):
        if self.fail_get_after is not None and len(self.got) >= self.fail_get_after:
            raise ConnectionResetError("the store went away")
        self.got.append(remote)
        return self.fs.get_file(remote, local, **kwargs)

    def __getattr__(self, name):
        return getattr(self.fs, name)


def recording(monkeypatch, **options) -> Recording:
    wrapper = Recording(fsspec.filesystem("memory"), **options)
    monkeypatch.setattr(ObjectStore, "filesystem", lambda self, probe=False: wrapper)
    return wrapper


# ------------------------------------------------------------------ the URL


def test_no_store_without_the_variable(monkeypatch):
    assert objectstore.configured() is None
    monkeypatch.setenv(objectstore.STORE_ENV, "  ")
    assert objectstore.configured() is None


def test_the_url_loses_its_trailing_slash(monkeypatch):
    monkeypatch.setenv(objectstore.STORE_ENV, "s3://tunelab/team/")
    assert objectstore.configured() == ObjectStore("s3://tunelab/team")


@pytest.mark.parametrize("raw", ["/srv/store", "store", "file:///srv/store"])
def test_a_folder_is_not_a_store(monkeypatch, raw):
    monkeypatch.setenv(objectstore.STORE_ENV, raw)
    with pytest.raises(ConfigError, match="not an object store URL"):
        objectstore.configured()


@pytest.mark.parametrize("raw", ["s3://alice:s3cr3tpw@tunelab", "s3://alice@tunelab/x"])
def test_credentials_in_the_url_are_refused_without_repeating_them(monkeypatch, raw):
    monkeypatch.setenv(objectstore.STORE_ENV, raw)
    with pytest.raises(ConfigError, match="holds credentials") as caught:
        objectstore.configured()
    assert "s3cr3tpw" not in str(caught.value)
    assert "alice" not in str(caught.value)


def test_the_folders_of_the_store():
    store = ObjectStore("s3://tunelab/team")
    assert store.scheme == "s3"
    assert store.dvc_url == "s3://tunelab/team/dvc"
    assert store.results_url == "s3://tunelab/team/prefect-results"
    assert store.run_url("news", "lora-abc") == "s3://tunelab/team/runs/news/lora-abc"
    assert store.child("/runs/", "", "x/") == "s3://tunelab/team/runs/x"
    assert (
        store.model_url("tiny-bert", "v1-seed13") == "s3://tunelab/team/models/tiny-bert/v1-seed13"
    )
    # A revision is one folder name: slashes, spaces and the like become dashes.
    assert store.model_url("minilm-l6", "gt-all==1.0 a/b:c") == (
        "s3://tunelab/team/models/minilm-l6/gt-all==1.0-a-b-c"
    )


def test_the_endpoint_comes_from_the_environment(monkeypatch):
    store = ObjectStore("s3://tunelab")
    assert store.endpoint == "the default S3 endpoint"
    monkeypatch.setenv(objectstore.ENDPOINT_ENV, "http://minio.lan:9000")
    assert store.endpoint == "http://minio.lan:9000"


def test_an_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="no file system"):
        ObjectStore("nosuchscheme://bucket").filesystem()


# ------------------------------------------------------------------ folders


def test_a_published_folder_comes_back_in_another(store, tmp_path, memory_store):
    source = run_folder(tmp_path / "a")
    url = store.run_url("news", "lora-abc")
    assert store.publish(source, url) == 4
    assert sorted(memory_store.store) == [
        "/team/runs/news/lora-abc/model/config.json",
        "/team/runs/news/lora-abc/model/model.safetensors",
        "/team/runs/news/lora-abc/scorecard.json",
        "/team/runs/news/lora-abc/train_result.json",
    ]
    target = tmp_path / "b"
    assert store.fetch(url, target, needed="train_result.json") is True
    got = sorted(
        p.relative_to(target).as_posix()
        for p in target.rglob("*")
        if p.is_file() and p.name != objectstore.SYNC_RECORD
    )
    assert got == [
        "model/config.json",
        "model/model.safetensors",
        "scorecard.json",
        "train_result.json",
    ]
    for name in got:
        assert (target / name).read_bytes() == (source / name).read_bytes()
    assert not list(target.rglob("*.part"))


def test_a_second_publish_sends_only_what_changed(store, tmp_path):
    source = run_folder(tmp_path / "a")
    url = store.run_url("news", "lora-abc")
    assert store.publish(source, url) == 4
    assert store.publish(source, url) == 0
    (source / "scorecard.json").write_text('{"accuracy": 0.5, "f1": 0.25}')
    (source / "checkpoint-4" / "optimizer.pt").write_text("more state")
    assert store.publish(source, url) == 1
    assert fsspec.filesystem("memory").cat(f"{url}/scorecard.json") == (
        b'{"accuracy": 0.5, "f1": 0.25}'
    )
    # What was sent where is kept per URL: another URL gets everything.
    assert store.publish(source, store.run_url("news", "copy")) == 4


def test_the_records_are_sent_last(store, tmp_path, monkeypatch):
    source = run_folder(tmp_path / "a")
    write(source, {"zz-late.txt": "z", "a-early.txt": "a"})
    fs = recording(monkeypatch)
    url = store.run_url("news", "lora-abc")
    assert store.publish(source, url, last=("train_result.json", "scorecard.json")) == 6
    names = [remote[len(url) + 1 :] for remote in fs.put]
    assert sorted(names[-2:]) == ["scorecard.json", "train_result.json"]
    assert set(names[:-2]) == {
        "a-early.txt",
        "model/config.json",
        "model/model.safetensors",
        "zz-late.txt",
    }


def test_fetch_finds_nothing(store, tmp_path):
    target = tmp_path / "b"
    assert store.fetch(store.run_url("news", "none"), target) is False
    assert not target.exists()
    url = store.run_url("news", "half")
    store.publish(write(tmp_path / "a", {"model/config.json": "{}"}), url)
    # The record a complete folder has is not there yet: nothing is fetched.
    assert store.fetch(url, target, needed="train_result.json") is False
    assert not target.exists()
    assert store.fetch(url, target, needed="model/config.json") is True
    assert (target / "model" / "config.json").read_text() == "{}"


def test_fetch_whole_leaves_no_folder_when_there_is_nothing(store, tmp_path):
    target = tmp_path / "models" / "tiny-bert"
    assert store.fetch_whole(store.model_url("tiny-bert", "v1"), target, "marker") is False
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_fetch_whole_never_leaves_half_a_folder(store, tmp_path, monkeypatch):
    url = store.model_url("tiny-bert", "v1")
    store.publish(run_folder(tmp_path / "a"), url, last=("train_result.json",))
    fs = recording(monkeypatch, fail_get_after=2)
    target = tmp_path / "models" / "tiny-bert"
    with pytest.raises(StoreError, match="the store went away"):
        store.fetch_whole(url, target, "train_result.json")
    assert len(fs.got) == 2  # it failed half-way, with files already downloaded
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary folder either

    monkeypatch.undo()
    monkeypatch.setenv(objectstore.STORE_ENV, STORE)
    assert store.fetch_whole(url, target, "train_result.json") is True
    assert (target / "train_result.json").read_text() == '{"method": "lora"}'
    assert (target / "model" / "model.safetensors").read_text() == "weights"
    assert [p.name for p in target.parent.iterdir()] == ["tiny-bert"]


def test_fetch_whole_replaces_an_older_folder(store, tmp_path):
    url = store.model_url("tiny-bert", "v1")
    store.publish(write(tmp_path / "a", {"marker": "new", "w": "1"}), url)
    target = write(tmp_path / "models" / "tiny-bert", {"stale": "x"})
    assert store.fetch_whole(url, target, "marker") is True
    assert (target / "marker").read_text() == "new"
    assert not (target / "stale").exists()


# ------------------------------------------------------------------ reaching it


class BotoLike(Exception):
    pass


BotoLike.__module__ = "botocore.exceptions"


@pytest.mark.parametrize(
    "failure",
    [
        OSError("disk"),
        ConnectionRefusedError("refused"),
        TimeoutError("slow"),
        BotoLike("Could not connect to the endpoint URL"),
    ],
)
def test_failing_to_reach_the_store_names_the_endpoint(monkeypatch, failure):
    monkeypatch.setenv(objectstore.ENDPOINT_ENV, "http://minio.lan:9000")
    store = ObjectStore("s3://tunelab")
    with pytest.raises(StoreError) as caught, store.reaching("read the runs"):
        raise failure
    message = str(caught.value)
    assert "http://minio.lan:9000" in message
    assert "s3://tunelab" in message
    assert "could not read the runs" in message
    assert str(failure) in message
    assert caught.value.__cause__ is failure


@pytest.mark.parametrize("failure", [ValueError("bad"), TypeError("wrong"), KeyError("k")])
def test_other_failures_are_left_alone(failure):
    store = ObjectStore("s3://tunelab")
    with pytest.raises(type(failure)) as caught, store.reaching("read the runs"):
        raise failure
    assert caught.value is failure


def test_a_store_error_passes_through_unchanged():
    first = StoreError("already said")
    with pytest.raises(StoreError) as caught, ObjectStore("s3://tunelab").reaching("x"):
        raise first
    assert caught.value is first


def test_check_fails_on_a_missing_bucket(store, tmp_path):
    with pytest.raises(StoreError, match="before it would run the train step") as caught:
        store.check("run the train step")
    assert STORE in str(caught.value)
    store.publish(write(tmp_path / "a", {"x": "1"}), store.child("dvc"))
    store.check("run the train step")  # the bucket exists now


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_check_gives_up_on_an_s3_endpoint_that_does_not_answer(monkeypatch, tmp_path):
    pytest.importorskip("s3fs")
    port = free_port()
    monkeypatch.setenv(objectstore.STORE_ENV, "s3://tunelab")
    monkeypatch.setenv(objectstore.ENDPOINT_ENV, f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "tunelab-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "tunelab-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = objectstore.configured()
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.check("run the train step")
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3://tunelab" in message
    assert "tunelab-test-secret" not in message
