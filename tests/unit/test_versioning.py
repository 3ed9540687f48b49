"""Dataset versioning with real DVC on tmp_path workspaces (a local folder as remote)."""

from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest

from tunelab.data import dvc, versioning
from tunelab.data.schema import SOURCE_ROW
from tunelab.errors import VersioningError
from tunelab.workspace import Workspace


def frame(prefix: str, n: int = 4) -> pd.DataFrame:
    out = pd.DataFrame(
        {"text": [f"{prefix} text {i}" for i in range(n)], "label": ["pos", "neg"] * (n // 2)}
    ).astype(object)
    out[SOURCE_ROW] = range(1, n + 1)
    return out


def splits(prefix: str, names=("train", "validation", "test")) -> dict[str, pd.DataFrame]:
    return {name: frame(f"{prefix} {name}") for name in names}


def mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.fixture(autouse=True)
def dvc_site_cache(monkeypatch, tmp_path_factory):
    """DVC keeps per-repo state under /var/tmp/dvc unless told otherwise."""
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path_factory.mktemp("dvc-site")))


@pytest.fixture
def dvc_calls(monkeypatch):
    """Record every DVC command the module runs."""
    calls = []
    real = dvc.run

    def spy(workspace, *args, **kwargs):
        calls.append(args[0])
        return real(workspace, *args, **kwargs)

    monkeypatch.setattr(dvc, "run", spy)
    return calls


def git_init(path):
    subprocess.run(["git", "init", "-q", str(path)], check=True)


def test_unchanged_save_keeps_id_and_files_and_runs_no_dvc(tmp_path, dvc_calls):
    ws = Workspace(tmp_path)  # not a git repo: dvc init --no-scm
    first = versioning.save_version(
        "sentiment",
        splits("a"),
        ws,
        metadata={"source": "x"},
        attachments={"validation.json": {"success": True}},
    )
    assert dvc_calls == ["init", "remote", "add", "push"]
    assert first.changed and first.rows == {"train": 4, "validation": 4, "test": 4}
    assert len(first.version) == versioning.ID_LENGTH
    assert set(first.files) == {f"sentiment/{s}.parquet" for s in ("train", "validation", "test")}
    assert first.data_md5.endswith(".dir") and first.remote == "dvc-remote"
    assert ws.data_dvc.is_file() and first.data_md5 in ws.data_dvc.read_text()
    pushed = {p.name for p in ws.default_dvc_remote.rglob("*") if p.is_file()}
    assert {md5[2:] for md5 in first.files.values()} <= pushed
    config = (tmp_path / ".dvc" / "config").read_text()
    assert "no_scm = True" in config and "url = ../dvc-remote" in config
    assert str(tmp_path) not in config
    record = ws.versions_dir / "sentiment" / first.version
    assert (record / "validation.json").is_file()
    assert versioning.DataVersion.from_dict(first.to_dict()) == first

    folder = ws.data_dir / "sentiment"
    before, record_before = mtimes(folder), (record / "version.json").stat().st_mtime_ns
    dvc_before = ws.data_dvc.read_text()
    dvc_calls.clear()
    # Same data as a reloaded frame (str dtype, other index): still the same bytes.
    reloaded = {
        k: pd.read_parquet(folder / f"{k}.parquet").set_axis(range(10, 14))
        for k in ("train", "validation", "test")
    }
    again = versioning.save_version("sentiment", reloaded, ws)
    assert again.version == first.version and not again.changed
    assert dvc_calls == []
    assert mtimes(folder) == before and ws.data_dvc.read_text() == dvc_before
    assert (record / "version.json").stat().st_mtime_ns == record_before
    assert again.metadata == {"source": "x"}  # the record is kept, not rewritten
    assert [v.version for v in versioning.list_versions("sentiment", ws)] == [first.version]
    assert versioning.current_version("sentiment", ws).version == first.version
    assert versioning.list_datasets(ws) == ["sentiment"]

    loaded = versioning.load_splits("sentiment", ws)
    assert list(loaded) == ["train", "validation", "test"]
    assert SOURCE_ROW not in loaded["train"].columns
    assert loaded["train"]["text"].tolist() == frame("a train")["text"].tolist()

    with pytest.raises(VersioningError) as err:
        versioning.checkout_version("sentiment", "ffffffffffff", ws)
    assert first.version in str(err.value) and "tunelab data show sentiment" in str(err.value)


def test_datasets_are_independent_and_old_versions_restore(tmp_path, dvc_calls):
    git_init(tmp_path)  # the workspace is a git top level: plain dvc init
    ws = Workspace(tmp_path)
    a1 = versioning.save_version("alpha", splits("v1"), ws)
    a1_bytes = {rel: (ws.data_dir / rel).read_bytes() for rel in a1.files}
    b1 = versioning.save_version("beta", splits("b"), ws)
    assert versioning.current_version("alpha", ws).version == a1.version
    assert "no_scm" not in (tmp_path / ".dvc" / "config").read_text()
    assert "/data" in (tmp_path / ".gitignore").read_text()

    # alpha changes (train differs, validation dropped): alpha's id moves, beta's does not.
    a2 = versioning.save_version("alpha", splits("v2", ("train", "test")), ws)
    assert a2.version != a1.version and a2.changed
    assert sorted(p.name for p in (ws.data_dir / "alpha").iterdir()) == [
        "test.parquet",
        "train.parquet",
    ]
    dvc_calls.clear()
    b_again = versioning.save_version("beta", splits("b"), ws)
    assert b_again.version == b1.version and not b_again.changed and dvc_calls == []
    assert [v.version for v in versioning.list_versions("alpha", ws)] == [a1.version, a2.version]
    assert versioning.current_version("alpha", ws).version == a2.version

    # Back to v1 from the cache; beta's files are not touched.
    beta_times = mtimes(ws.data_dir / "beta")
    restored = versioning.checkout_version("alpha", a1.version[:8], ws)
    assert restored.version == a1.version and restored.changed
    assert {rel: (ws.data_dir / rel).read_bytes() for rel in a1.files} == a1_bytes
    assert sorted(p.name for p in (ws.data_dir / "alpha").iterdir()) == [
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]
    assert mtimes(ws.data_dir / "beta") == beta_times
    assert versioning.current_version("alpha", ws).version == a1.version
    # data.dvc describes the workspace again.
    manifest = dvc.read_manifest(ws, dvc.tracked_dir_md5(ws))
    assert manifest == dvc.disk_files(ws)

    # Forward to v2 with an empty cache: the files come from the remote.
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    dvc_calls.clear()
    versioning.checkout_version("alpha", a2.version, ws)
    assert dvc_calls[0] == "fetch"
    assert versioning.current_version("alpha", ws).version == a2.version
    assert versioning.current_version("beta", ws).version == b1.version


def test_workspace_below_a_git_top_level_with_own_remote(tmp_path, dvc_calls):
    git_init(tmp_path)
    ws = Workspace(tmp_path / "project")
    saved = versioning.save_version("gen", splits("g", ("train",)), ws, remote="store")
    assert dvc_calls[0] == "init" and (ws.root / ".dvc").is_dir()
    assert not (tmp_path / ".dvc").exists()  # dvc init --subdir
    assert "url = ../store" in (ws.root / ".dvc" / "config").read_text()
    assert saved.remote == "store" and any((ws.root / "store").rglob("*.dir"))


def test_missing_things_raise_versioning_errors(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(VersioningError, match="tunelab data prepare"):
        versioning.checkout_version("nothing", "abc123", ws)
    with pytest.raises(VersioningError, match="no splits"):
        versioning.load_splits("nothing", ws)
    with pytest.raises(VersioningError, match="Invalid dataset name"):
        versioning.save_version("../escape", splits("x"), ws)
    assert versioning.list_versions("nothing", ws) == []
    assert versioning.current_version("nothing", ws) is None
    assert not (tmp_path / ".dvc").exists()


def test_parquet_bytes_ignore_dtype_index_and_source_row():
    base = frame("same")
    other = base.drop(columns=[SOURCE_ROW]).astype("str").set_axis(range(7, 11))
    assert versioning._parquet_bytes(base, "t") == versioning._parquet_bytes(other, "t")
    assert versioning._parquet_bytes(base, "t") != versioning._parquet_bytes(frame("diff"), "t")


def test_version_id_depends_only_on_the_dataset_files():
    files = {"a/train.parquet": "1" * 32, "a/test.parquet": "2" * 32}
    assert versioning.version_id(files) == versioning.version_id(dict(reversed(files.items())))
    assert versioning.version_id(files) != versioning.version_id({**files, "a/x.parquet": "3"})


def test_version_record_holds_no_credentials(tmp_path):
    ws = Workspace(tmp_path)
    token = "hf_" + "a1b2c3d4" * 4
    metadata = {
        "source": "https://bob:pw-one@example.org/rows.csv?token=tok-two",
        "data_config": {
            "source": "https://example.org/rows.csv?X-Amz-Signature=sig-three",
            "remote": "https://carol:pw-four@store.example.org/dvc",
            "hf_token": token,
            "max_rows": 10,
            "columns": {"token": "text"},
        },
    }
    saved = versioning.save_version("sentiment", splits("a"), ws, metadata=metadata)

    stored = (ws.versions_dir / "sentiment" / saved.version / "version.json").read_text()
    for secret in ("pw-one", "tok-two", "sig-three", "pw-four", token):
        assert secret not in stored and secret not in repr(saved)
    config = saved.metadata["data_config"]
    assert saved.metadata["source"] == "https://***@example.org/rows.csv?token=***"
    assert config["max_rows"] == 10 and config["columns"] == {"token": "text"}


def remote_sections(root):
    from configobj import ConfigObj

    def read(name):
        path = root / ".dvc" / name
        return dict(ConfigObj(str(path)).get('remote "tunelab"', {})) if path.is_file() else {}

    return read("config"), read("config.local")


def test_remote_credentials_go_to_the_untracked_local_config(tmp_path):
    git_init(tmp_path)
    ws = Workspace(tmp_path)
    dvc.ensure_repo(ws)
    # What earlier versions did: the whole URL, password included, in .dvc/config.
    dvc.run(ws, "remote", "add", "-d", "--force", "tunelab", "https://al:s3cr%40t@h.example/st")

    url = dvc.ensure_remote(ws, "https://al:s3cr%40t@h.example/st")

    assert url == "https://h.example/st"
    tracked, local = remote_sections(tmp_path)
    assert tracked == {"url": "https://h.example/st"}
    assert "s3cr" not in (tmp_path / ".dvc" / "config").read_text()
    assert local == {"user": "al", "password": "s3cr@t", "auth": "basic"}
    assert (tmp_path / ".dvc" / "config.local").stat().st_mode & 0o077 == 0
    ignored = subprocess.run(
        ["git", "-C", str(tmp_path), "check-ignore", "-q", ".dvc/config.local"], check=False
    )
    assert ignored.returncode == 0  # git never sees the credentials

    # Pointing the workspace at another remote drops the old one's credentials.
    assert dvc.ensure_remote(ws, "https://other.example/st") == "https://other.example/st"
    assert remote_sections(tmp_path) == ({"url": "https://other.example/st"}, {})


@pytest.mark.parametrize(
    "remote",
    [
        "https://h.example/st?sig=s3cr3t&sv=2024",
        "s3://AKEY:s3cr3t@bucket/path",
        "azure://container/path?sv=1&sig=s3cr3t",
    ],
)
def test_credentials_dvc_cannot_hold_locally_are_refused(tmp_path, remote):
    with pytest.raises(VersioningError, match="dvc remote modify --local") as caught:
        dvc.split_credentials(remote)
    assert "s3cr3t" not in str(caught.value)


def test_version_record_keeps_the_cleaning_policy_and_counts(tmp_path):
    ws = Workspace(tmp_path)
    cleaning = {
        "policy": {"strip": False, "drop_empty": True, "drop_duplicates": False},
        "dropped": {"train": {"empty": 2, "duplicate": 0, "leaked": 0}},
        "dropped_total": 2,
    }
    saved = versioning.save_version("sentiment", splits("c"), ws, cleaning=cleaning)
    assert saved.cleaning == cleaning
    (stored,) = versioning.list_versions("sentiment", ws)
    assert stored.cleaning == cleaning
    # Records written before the field existed still load.
    old = saved.to_dict()
    del old["cleaning"]
    assert versioning.DataVersion.from_dict(old).cleaning == {}
