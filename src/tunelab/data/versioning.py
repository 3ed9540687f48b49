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

The `dvc` commands, the DVC config, cache and remote are handled in ``dvc``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from tunelab.data import dvc
from tunelab.data.schema import SOURCE_ROW
from tunelab.errors import VersioningError
from tunelab.redaction import redact
from tunelab.workspace import Workspace

RECORD = "version.json"
ID_LENGTH = 12
SPLIT_ORDER = ("train", "validation", "test")
SUFFIX = ".parquet"

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]*$")


@dataclass
class DataVersion:
    dataset: str
    version: str  # hash of this dataset's "relpath md5" lines, ID_LENGTH hex chars
    files: dict[str, str]  # relpath under data/ ("sentiment/train.parquet") -> md5
    data_md5: str  # md5 of the whole data/ directory in data.dvc ("....dir")
    rows: dict[str, int]  # rows per split
    created: str  # ISO-8601 UTC
    remote: str  # DVC remote the data was pushed to, as in .dvc/config (no credentials)
    changed: bool  # False when the files were already identical (nothing rewritten)
    metadata: dict = field(default_factory=dict)
    # The cleaning policy and rows dropped per split and reason (clean.CleaningRecord.summary)
    cleaning: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataVersion:
        """Build from a record; unknown keys are ignored so older code reads newer records."""
        names = {f.name for f in fields(cls)}
        missing = names - set(data) - {"metadata", "changed", "cleaning"}
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
    cleaning: dict | None = None,
) -> DataVersion:
    """Write the splits to data/<name>/, track data/ with DVC, push, and record the version.

    data/<name>/ ends up holding exactly one <split>.parquet per split: files whose bytes
    would not change are left alone, anything else in that folder is removed. The record
    is versioned with the workspace: credentials in ``remote`` or ``metadata`` (a source
    URL's password, a hub token) are masked in it. ``cleaning`` records what the cleaning
    policy dropped before these splits were validated (policy, counts per split and reason).
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

    dvc.ensure_repo(workspace)
    remote_url = dvc.ensure_remote(workspace, remote)
    dir_md5, files = dvc.track(workspace, name, changed)

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
        remote=redact(remote_url),
        changed=changed,
        metadata=redact(dict(metadata or {})),
        cleaning=dict(cleaning or {}),
    )
    _write_record(workspace, record, attachments or {})
    return record


def candidate_version(name: str, splits: dict[str, pd.DataFrame]) -> str:
    """The version id these splits would get, computed without writing or tracking them.

    Same bytes as save_version writes, same md5s as DVC computes, same id: a scheduler
    can ask "has the data changed?" before it validates or trains anything.
    """
    files = {
        f"{name}/{split}{SUFFIX}": dvc.md5_bytes(_parquet_bytes(frame, f"{name}/{split}"))
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
        path.relative_to(workspace.data_dir).as_posix(): dvc.md5_file(path)
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
    dvc.ensure_repo(workspace)
    remote_url = dvc.ensure_remote(workspace, record.remote, keep_existing=True)

    cache = dvc.cache_dir(workspace)
    missing = {
        rel: md5 for rel, md5 in record.files.items() if not dvc.object_path(cache, md5).is_file()
    }
    if missing:
        dvc.fetch_objects(workspace, missing)
        still = sorted(
            rel for rel, md5 in missing.items() if not dvc.object_path(cache, md5).is_file()
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
        if target.is_file() and dvc.md5_file(target) == md5:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace_bytes(target, dvc.object_path(cache, md5).read_bytes())
        changed = True
    keep = {Path(rel).relative_to(name).as_posix() for rel in record.files}
    changed |= _remove_others(folder, keep)

    _, files = dvc.track(workspace, name, changed)
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
