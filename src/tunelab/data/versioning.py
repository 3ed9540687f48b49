"""Dataset versions: validated splits as Parquet under data/, tracked by DVC, one record each.

Layout in the workspace::

    data/<name>/<split>.parquet        the current splits of every dataset
    data.dvc                           DVC's pointer to the whole data/ directory
    .dvc/cache/files/md5/xx/yyy...     every file content ever added (xx = first 2 hex)
    .dvc/cache/files/md5/xx/yyy.dir    a manifest per data/ state: [{"relpath", "md5"}, ...]
    dvc-remote/files/md5/...           the same objects, pushed (the default local remote)
    data-versions/<name>/<version>/    version.json plus attachments (validation.json, ...)

A version id is a hash over the "relpath md5" lines of one dataset's files only, so
preparing one dataset never changes another's id, and unchanged data gets the same id.

Restoring a version with plain DVC
----------------------------------
``tunelab data checkout NAME VERSION`` restores one dataset and leaves the others alone.
With DVC alone you restore the whole data/ directory as it was when a version was saved:

* In a git workspace where data.dvc was committed::

      git checkout <rev> -- data.dvc && dvc checkout data.dvc
      # or `dvc pull data.dvc` when the cache lacks the files

* Without git: each version.json keeps ``data_md5``, the md5 data.dvc had then. Write it back
  and check out (or pull from the remote when the cache lacks the files)::

      printf 'outs:\\n- md5: <data_md5>\\n  hash: md5\\n  path: data\\n' > data.dvc
      dvc checkout data.dvc        # or: dvc pull data.dvc

  Both refuse to delete files the cache does not hold ("unsaved files"); add ``--force``
  to overwrite data/ anyway.

* One file: its content is ``.dvc/cache/files/md5/<md5[:2]>/<md5[2:]>`` (``files`` in
  version.json maps each relpath to its md5); copy it into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from tunelab.data.schema import SOURCE_ROW
from tunelab.errors import VersioningError
from tunelab.workspace import Workspace

REMOTE_NAME = "tunelab"
RECORD = "version.json"
ID_LENGTH = 12
SPLIT_ORDER = ("train", "validation", "test")
SUFFIX = ".parquet"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]*$")


@dataclass
class DataVersion:
    dataset: str
    version: str  # hash of this dataset's "relpath md5" lines, ID_LENGTH hex chars
    files: dict[str, str]  # relpath under data/ ("sentiment/train.parquet") -> md5
    data_md5: str  # md5 of the whole data/ directory in data.dvc ("....dir")
    rows: dict[str, int]  # rows per split
    created: str  # ISO-8601 UTC
    remote: str  # DVC remote the data was pushed to, as written in .dvc/config's terms
    changed: bool  # False when the files were already identical (nothing rewritten)
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataVersion:
        """Build from a record; unknown keys are ignored so older code reads newer records."""
        names = {f.name for f in fields(cls)}
        missing = names - set(data) - {"metadata", "changed"}
        if missing:
            raise VersioningError(f"Version record lacks {sorted(missing)}: {data!r:.200}")
        values = {k: v for k, v in data.items() if k in names}
        values.setdefault("changed", False)
        return cls(**values)


# --------------------------------------------------------------------------- public API


def save_version(
    name: str,
    splits: dict[str, pd.DataFrame],
    workspace: Workspace,
    remote: str | None = None,
    metadata: dict | None = None,
    attachments: dict[str, dict] | None = None,
) -> DataVersion:
    """Write the splits to data/<name>/, track data/ with DVC, push, and record the version.

    data/<name>/ ends up holding exactly one <split>.parquet per split: files whose bytes
    would not change are left alone, anything else in that folder is removed.
    """
    _check_name(name, "dataset name")
    if not splits:
        raise VersioningError(f"Dataset '{name}': no splits to version. Pass at least one split.")
    for split in splits:
        _check_name(split, f"split name of dataset '{name}'")
    _check_attachments(attachments or {})

    folder = workspace.data_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {
        f"{split}{SUFFIX}": _parquet_bytes(frame, f"{name}/{split}")
        for split, frame in splits.items()
    }
    changed = False
    for filename, data in wanted.items():
        changed |= _write_if_changed(folder / filename, data)
    changed |= _remove_others(folder, set(wanted))

    _ensure_dvc(workspace)
    remote_url = _ensure_remote(workspace, remote)
    dir_md5, files = _track(workspace, name, changed)

    expected = {f"{name}/{filename}" for filename in wanted}
    if set(files) != expected:
        raise VersioningError(
            f"DVC tracked {sorted(files)} for dataset '{name}' but {sorted(expected)} were "
            f"written to {folder}. A .dvcignore rule in {workspace.root} probably hides them; "
            f"remove that rule and run again."
        )
    version = version_id(files)
    existing = _read_record(workspace, name, version)
    if existing is not None:
        existing.changed = changed
        return existing

    record = DataVersion(
        dataset=name,
        version=version,
        files=files,
        data_md5=dir_md5,
        rows={split: int(len(frame)) for split, frame in splits.items()},
        created=datetime.now(UTC).isoformat(timespec="milliseconds"),
        remote=remote_url,
        changed=changed,
        metadata=dict(metadata or {}),
    )
    _write_record(workspace, record, attachments or {})
    return record


def candidate_version(name: str, splits: dict[str, pd.DataFrame]) -> str:
    """The version id these splits would get, computed without writing or tracking them.

    Same bytes as save_version writes, same md5s as DVC computes, same id: a scheduler
    can ask "has the data changed?" before it validates or trains anything.
    """
    files = {
        f"{name}/{split}{SUFFIX}": hashlib.md5(
            _parquet_bytes(frame, f"{name}/{split}"), usedforsecurity=False
        ).hexdigest()
        for split, frame in splits.items()
    }
    return version_id(files)


def list_versions(name: str, workspace: Workspace) -> list[DataVersion]:
    """Every recorded version of a dataset, oldest first; [] when there is none."""
    _check_name(name, "dataset name")
    folder = workspace.versions_dir / name
    if not folder.is_dir():
        return []
    records = [_load_record(path) for path in folder.glob(f"*/{RECORD}")]
    return sorted(records, key=lambda r: (r.created, r.version))


def list_datasets(workspace: Workspace) -> list[str]:
    """Names of datasets with at least one recorded version."""
    if not workspace.versions_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in workspace.versions_dir.iterdir()
        if p.is_dir() and any(p.glob(f"*/{RECORD}"))
    )


def current_version(name: str, workspace: Workspace) -> DataVersion | None:
    """The recorded version whose files are in data/<name>/ now; None if none matches."""
    _check_name(name, "dataset name")
    folder = workspace.data_dir / name
    if not folder.is_dir():
        return None
    files = {
        path.relative_to(workspace.data_dir).as_posix(): _md5_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    if not files:
        return None
    record = _read_record(workspace, name, version_id(files))
    if record is not None:
        record.changed = False
    return record


def checkout_version(name: str, version: str, workspace: Workspace) -> DataVersion:
    """Restore data/<name>/ to a recorded version; other datasets' files are not touched.

    Contents come from the DVC cache, fetched from the remote where the cache lacks them.
    Afterwards data.dvc is updated (dvc add) and pushed so it describes the workspace again.
    ``version`` may be a unique prefix of an id.
    """
    _check_name(name, "dataset name")
    record = _find_version(name, version, workspace)
    _ensure_dvc(workspace)
    remote_url = _ensure_remote(workspace, record.remote, keep_existing=True)

    cache = _cache_dir(workspace)
    missing = {
        rel: md5 for rel, md5 in record.files.items() if not _object_path(cache, md5).is_file()
    }
    if missing:
        _fetch_objects(workspace, missing)
        still = sorted(
            rel for rel, md5 in missing.items() if not _object_path(cache, md5).is_file()
        )
        if still:
            raise VersioningError(
                f"Dataset '{name}' version {record.version}: {still} are neither in the DVC "
                f"cache ({cache}) nor on the remote ({remote_url}). Point `dvc remote` at the "
                f"remote that holds them, or prepare the data again (`tunelab data prepare`)."
            )

    folder = workspace.data_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    changed = False
    for rel, md5 in record.files.items():
        target = workspace.data_dir / rel
        if target.is_file() and _md5_file(target) == md5:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace_bytes(target, _object_path(cache, md5).read_bytes())
        changed = True
    keep = {Path(rel).relative_to(name).as_posix() for rel in record.files}
    changed |= _remove_others(folder, keep)

    _, files = _track(workspace, name, changed)
    if files != record.files:
        raise VersioningError(
            f"After restoring dataset '{name}' version {record.version}, DVC tracks {files} "
            f"instead of {record.files}. Check {folder} and .dvcignore, then run again."
        )
    record.changed = changed
    return record


def load_splits(name: str, workspace: Workspace) -> dict[str, pd.DataFrame]:
    """Read data/<name>/<split>.parquet; train, validation, test first."""
    _check_name(name, "dataset name")
    folder = workspace.data_dir / name
    paths = {p.stem: p for p in folder.glob(f"*{SUFFIX}")} if folder.is_dir() else {}
    if not paths:
        known = list_datasets(workspace)
        raise VersioningError(
            f"Dataset '{name}' has no splits in {folder}. Known datasets: {known or 'none'}. "
            f"Run `tunelab data prepare` (or `tunelab data checkout {name} VERSION`)."
        )
    order = [s for s in SPLIT_ORDER if s in paths] + sorted(set(paths) - set(SPLIT_ORDER))
    frames = {}
    for split in order:
        try:
            frames[split] = pd.read_parquet(paths[split])
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise VersioningError(
                f"Cannot read {paths[split]}: {exc}. Restore it with "
                f"`tunelab data checkout {name} VERSION` (see `tunelab data show {name}`)."
            ) from exc
    return frames


def version_id(files: dict[str, str]) -> str:
    """Hash of sorted "relpath md5" lines: the id of one dataset's files."""
    lines = "".join(f"{rel} {md5}\n" for rel, md5 in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:ID_LENGTH]


# --------------------------------------------------------------------------- files


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or name in {".", ".."}:
        raise VersioningError(
            f"Invalid {what} {name!r}: it becomes a folder or file name, so use letters, "
            f"digits and _ . = + - only, not starting with '.' or '-'."
        )


def _check_attachments(attachments: dict[str, dict]) -> None:
    for key in attachments:
        if key == RECORD or not _NAME.match(key) or key in {".", ".."}:
            raise VersioningError(
                f"Invalid attachment name {key!r}: use a plain file name such as "
                f"'validation.json' (not {RECORD!r})."
            )


def _parquet_bytes(frame: pd.DataFrame, where: str) -> bytes:
    """Same data -> same bytes, whatever the pandas dtypes (object vs str) or index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = frame.drop(columns=[SOURCE_ROW], errors="ignore").reset_index(drop=True)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise VersioningError(
            f"{where}: cannot be written as Parquet ({exc}). Make each column hold one type "
            f"(strings, or numbers), e.g. convert it with .astype(str)."
        ) from exc
    # pandas metadata records the dtype (object vs str), and str columns arrive as
    # large_string: drop the one and normalise the other so equal data gives equal bytes.
    schema = pa.schema(
        [
            pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type)
            for f in table.schema
        ]
    )
    table = table.replace_schema_metadata(None).cast(schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    _replace_bytes(path, data)
    return True


def _replace_bytes(path: Path, data: bytes) -> None:
    # A new inode: never write through a link into the DVC cache (cache.type symlink/hardlink).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_others(folder: Path, keep: set[str]) -> bool:
    """Remove everything in folder but the names in keep; True if anything went."""
    removed = False
    for path in sorted(folder.iterdir()):
        if path.name in keep and path.is_file():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed = True
    return removed


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _disk_files(workspace: Workspace) -> dict[str, str]:
    """relpath -> md5 of every file under data/, as DVC 3 hashes them (plain md5)."""
    return {
        path.relative_to(workspace.data_dir).as_posix(): _md5_file(path)
        for path in workspace.data_dir.rglob("*")
        if path.is_file() and not {".git", ".dvc"} & set(path.relative_to(workspace.data_dir).parts)
    }


# --------------------------------------------------------------------------- records


def _record_dir(workspace: Workspace, name: str, version: str) -> Path:
    return workspace.versions_dir / name / version


def _load_record(path: Path) -> DataVersion:
    try:
        return DataVersion.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, VersioningError) as exc:
        raise VersioningError(
            f"Version record {path} is unreadable ({exc}). Restore it from version control "
            f"or delete its folder {path.parent} and prepare the data again."
        ) from exc


def _read_record(workspace: Workspace, name: str, version: str) -> DataVersion | None:
    path = _record_dir(workspace, name, version) / RECORD
    return _load_record(path) if path.is_file() else None


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def _dump_json(data) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n").encode()


def _write_record(workspace: Workspace, record: DataVersion, attachments: dict[str, dict]) -> None:
    folder = _record_dir(workspace, record.dataset, record.version)
    folder.mkdir(parents=True, exist_ok=True)
    for key, content in attachments.items():
        _replace_bytes(folder / key, _dump_json(content))
    # version.json last: its presence means the record is complete.
    stored = record.to_dict()
    stored["changed"] = True  # a record is written only when its files were new
    _replace_bytes(folder / RECORD, _dump_json(stored))


def find_version(name: str, version: str, workspace: Workspace) -> DataVersion:
    """The record of one version (a unique prefix of 4+ characters also matches)."""
    return _find_version(name, version, workspace)


def _find_version(name: str, version: str, workspace: Workspace) -> DataVersion:
    versions = list_versions(name, workspace)
    if not versions:
        known = list_datasets(workspace)
        raise VersioningError(
            f"No versions recorded for dataset '{name}' in {workspace.versions_dir}. "
            f"Datasets with versions: {known or 'none'}. Run `tunelab data prepare` first."
        )
    matches = [v for v in versions if v.version == version] or [
        v for v in versions if len(version) >= 4 and v.version.startswith(version)
    ]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(f"{v.version} ({v.created})" for v in versions)
    what = "is ambiguous" if matches else "does not exist"
    raise VersioningError(
        f"Version '{version}' of dataset '{name}' {what}. Known versions, oldest first: "
        f"{listing}. See them with `tunelab data show {name}`."
    )


# --------------------------------------------------------------------------- DVC


def _dvc(workspace: Workspace, *args: str, hint: str = "") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dvc", *args]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    shown = "dvc " + " ".join(args)
    try:
        done = subprocess.run(
            command, cwd=workspace.root, env=env, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise VersioningError(f"Could not run `{shown}` in {workspace.root}: {exc}.") from exc
    if done.returncode != 0:
        # Not -q: DVC's quiet mode hides the ERROR line itself.
        lines = [
            line
            for line in f"{done.stdout}\n{done.stderr}".splitlines()
            if line.strip() and "Having any troubles?" not in line
        ]
        tail = "\n".join(lines[-8:]) or "(no output)"
        raise VersioningError(
            f"`{shown}` failed in {workspace.root} (exit {done.returncode}):\n{tail}\n"
            f"{hint or 'Fix the cause above (`dvc doctor` shows the setup) and run again.'}"
        )
    return done


def _git_top(root: Path) -> Path | None:
    for folder in (root, *root.parents):
        if (folder / ".git").exists():
            return folder
    return None


def _ensure_dvc(workspace: Workspace) -> None:
    """`dvc init` in the workspace: plain at a git top level, --subdir below one, else --no-scm."""
    root = workspace.root
    if (root / ".dvc").is_dir():
        return
    root.mkdir(parents=True, exist_ok=True)
    top = _git_top(root)
    mode = [] if top == root else ["--subdir"] if top else ["--no-scm"]
    _dvc(
        workspace,
        "init",
        *mode,
        hint=f"Initialise DVC yourself (`cd {root} && dvc init{' ' + mode[0] if mode else ''}`) "
        f"or fix the cause above, then run again.",
    )


def _read_config(workspace: Workspace):
    from configobj import ConfigObj  # DVC's own config parser (a dvc dependency)

    merged: dict = {}
    for name in ("config", "config.local"):
        path = workspace.root / ".dvc" / name
        if path.is_file():
            for section, values in ConfigObj(str(path), list_values=False).items():
                merged.setdefault(section, {}).update(values)
    return merged


def _remote_arg(workspace: Workspace, remote: str | None) -> str:
    """The URL to give `dvc remote add` (run in the root): relative for folders in the root.

    DVC stores a relative local path relative to .dvc/ (e.g. ../dvc-remote), so the
    workspace can move; an absolute path is kept only when the user chose one outside.
    """
    chosen = str(remote) if remote is not None else str(workspace.default_dvc_remote)
    if _SCHEME.match(chosen):
        return chosen
    path = Path(chosen).expanduser()
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(workspace.root).as_posix() or "."
    except ValueError:
        return str(path)


def _local_remote(workspace: Workspace, url: str) -> Path | None:
    """The folder of a local remote as configured in .dvc/config; None for cloud URLs."""
    if _SCHEME.match(url):
        return Path(url[len("file://") :]) if url.startswith("file://") else None
    path = Path(url).expanduser()
    return path if path.is_absolute() else (workspace.root / ".dvc" / path).resolve()


def _ensure_remote(workspace: Workspace, remote: str | None, keep_existing: bool = False) -> str:
    """Make the remote the default one (named 'tunelab'); returns it as given to DVC.

    With keep_existing, a default remote already configured wins (checkout must not
    re-point a workspace).
    """
    config = _read_config(workspace)
    default = config.get("core", {}).get("remote")
    configured = config.get(f'remote "{default}"', {}).get("url") if default else None
    if keep_existing and configured:
        return _describe_remote(workspace, configured)
    wanted = _remote_arg(workspace, remote)
    if default == REMOTE_NAME and configured is not None:
        here = _local_remote(workspace, configured)
        there = None if _SCHEME.match(wanted) else (workspace.root / wanted).resolve()
        if configured == wanted or (here is not None and here == there):
            return wanted
    _dvc(
        workspace,
        "remote",
        "add",
        "-d",
        "--force",
        REMOTE_NAME,
        wanted,
        hint=f"Check the remote {wanted!r} (data.remote in the config), then run again.",
    )
    return wanted


def _describe_remote(workspace: Workspace, configured: str) -> str:
    """A configured URL in the root's terms (relative folders are stored relative to .dvc/)."""
    local = _local_remote(workspace, configured)
    if local is None or Path(configured).is_absolute() or configured.startswith("file://"):
        return configured
    try:
        return local.relative_to(workspace.root).as_posix()
    except ValueError:
        return str(local)


def _cache_dir(workspace: Workspace) -> Path:
    """DVC 3 keeps md5 objects under <cache>/files/md5; <cache> is .dvc/cache unless set."""
    configured = _read_config(workspace).get("cache", {}).get("dir")
    base = workspace.root / ".dvc" / "cache"
    if configured:
        base = (workspace.root / ".dvc" / Path(configured).expanduser()).resolve()
    return base / "files" / "md5"


def _object_path(objects: Path, md5: str) -> Path:
    return objects / md5[:2] / md5[2:]


def _tracked_dir_md5(workspace: Workspace) -> str | None:
    import yaml

    if not workspace.data_dvc.is_file():
        return None
    try:
        outs = yaml.safe_load(workspace.data_dvc.read_text(encoding="utf-8")).get("outs") or []
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise VersioningError(
            f"{workspace.data_dvc} is unreadable ({exc}). Delete it and run again to re-track "
            f"data/, or restore it from git."
        ) from exc
    for out in outs:
        md5 = str(out.get("md5", ""))
        if str(out.get("path", "")).rstrip("/") == "data" and md5.endswith(".dir"):
            return md5
    return None


def _manifest(workspace: Workspace, dir_md5: str | None) -> dict[str, str] | None:
    """relpath -> md5 from the .dir object DVC wrote for data/; None if not in the cache."""
    if not dir_md5:
        return None
    path = _object_path(_cache_dir(workspace), dir_md5)
    if not path.is_file():
        return None
    try:
        return {entry["relpath"]: entry["md5"] for entry in json.loads(path.read_text())}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VersioningError(
            f"DVC manifest {path} is unreadable ({exc}). Run `dvc add data` in "
            f"{workspace.root} to rebuild it (or `dvc pull`), then run again."
        ) from exc


def _track(workspace: Workspace, name: str, changed: bool) -> tuple[str, dict[str, str]]:
    """`dvc add data` unless data.dvc already describes data/, then make the remote complete.

    Returns data.dvc's md5 and the relpath -> md5 of the dataset's files.
    """
    dir_md5 = _tracked_dir_md5(workspace)
    manifest = None if changed else _manifest(workspace, dir_md5)
    if manifest is None or manifest != _disk_files(workspace):
        _dvc(
            workspace,
            "add",
            "data",
            hint="If data/ is tracked by git, untrack it (`git rm -r --cached data`); "
            "otherwise fix the cause above and run again.",
        )
        dir_md5 = _tracked_dir_md5(workspace)
        manifest = _manifest(workspace, dir_md5)
        if manifest is None:
            raise VersioningError(
                f"`dvc add data` ran in {workspace.root} but data.dvc or its manifest in "
                f"{_cache_dir(workspace)} is missing. Check .dvc/config (cache.dir) and rerun."
            )
    if not _remote_complete(workspace, dir_md5, manifest):
        _dvc(
            workspace,
            "push",
            "data.dvc",
            hint="Check that the DVC remote (`dvc remote list`) exists and is writable, "
            "then run again; the data is safe in the local cache meanwhile.",
        )
    prefix = f"{name}/"
    return dir_md5, {rel: md5 for rel, md5 in sorted(manifest.items()) if rel.startswith(prefix)}


def _remote_complete(workspace: Workspace, dir_md5: str, manifest: dict[str, str]) -> bool:
    """True when a local default remote already holds every object (skips a ~1 s push)."""
    config = _read_config(workspace)
    default = config.get("core", {}).get("remote")
    url = config.get(f'remote "{default}"', {}).get("url") if default else None
    folder = _local_remote(workspace, url) if url else None
    if folder is None:
        return False
    objects = folder / "files" / "md5"
    return all(_object_path(objects, md5).is_file() for md5 in {dir_md5, *manifest.values()})


def _fetch_objects(workspace: Workspace, wanted: dict[str, str]) -> None:
    """Fetch single objects into the cache through a throwaway .dvc file naming them."""
    import yaml

    outs = [
        {"md5": md5, "hash": "md5", "path": f".tunelab-fetch/{rel}"}
        for rel, md5 in sorted(wanted.items())
    ]
    handle, tmp = tempfile.mkstemp(dir=workspace.root, prefix=".tunelab-fetch-", suffix=".dvc")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            yaml.safe_dump({"outs": outs}, out, sort_keys=False)
        _dvc(
            workspace,
            "fetch",
            Path(tmp).name,
            hint="Check that the DVC remote (`dvc remote list`) is reachable, then run again.",
        )
    finally:
        Path(tmp).unlink(missing_ok=True)
