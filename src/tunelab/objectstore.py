"""The team's object store: one S3 (or any fsspec) folder shared by every worker.

Set ``$TUNELAB_STORE`` (e.g. ``s3://tunelab``; `tunelab services start --stack team`
prints it) and tunelab keeps there what workers on other machines need:

    <store>/dvc/               the DVC remote, when the config names none
    <store>/prefect-results/   the step cache (Prefect's persisted task results)
    <store>/runs/<dataset>/<run>/   run folders, so a step may run on another worker
    <store>/models/<alias>/<revision>/   built aliases, converted once per team

Without it everything stays in the workspace, as before. The endpoint and credentials
are the tools' own: ``AWS_ENDPOINT_URL``, ``AWS_PROFILE`` / ``AWS_SHARED_CREDENTIALS_FILE``
or the ``AWS_ACCESS_KEY_ID`` pair; none of them enters a config, a record or a log.

Every failure to reach the store becomes a StoreError that names the endpoint: stopping
the store mid-run fails the step that needed it, and the same command run again after it
is back completes (finished steps come from the cache).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ConfigError, StoreError
from tunelab.files import write_json_atomic

STORE_ENV = "TUNELAB_STORE"
ENDPOINT_ENV = "AWS_ENDPOINT_URL"
# What a folder's copy at a store URL was made from (size and mtime of each file, per
# URL), so a second publish uploads only what changed.
SYNC_RECORD = ".tunelab-sync.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectStore:
    url: str  # scheme://bucket[/prefix], no trailing slash

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def endpoint(self) -> str:
        """Where the store answers, for messages: the endpoint URL, else the scheme's
        default service."""
        return os.environ.get(ENDPOINT_ENV) or f"the default {self.scheme.upper()} endpoint"

    def child(self, *parts: str) -> str:
        return "/".join([self.url, *(p.strip("/") for p in parts if p)])

    @property
    def dvc_url(self) -> str:
        return self.child("dvc")

    @property
    def results_url(self) -> str:
        return self.child("prefect-results")

    def run_url(self, dataset: str, name: str) -> str:
        return self.child("runs", dataset, name)

    def model_url(self, alias: str, revision: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_.=" else "-" for c in revision)
        return self.child("models", alias, safe)

    def filesystem(self, probe: bool = False):
        """The fsspec file system of the store; with ``probe``, one that gives up on an
        endpoint that does not answer within seconds instead of retrying for a minute."""
        import fsspec

        # No listings cache (another worker may have written since), no instance cache (the
        # endpoint and credentials are read from the environment when one is made).
        options: dict = {"use_listings_cache": False, "skip_instance_cache": True}
        if probe and self.scheme in ("s3", "s3a"):
            options["config_kwargs"] = {"connect_timeout": 5, "retries": {"max_attempts": 1}}
        try:
            return fsspec.filesystem(self.scheme, **options)
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"${STORE_ENV}={self.url}: no file system for '{self.scheme}://' ({exc}). "
                "Install tunelab[team] for S3 (s3fs), or use another URL."
            ) from None

    @contextlib.contextmanager
    def reaching(self, doing: str) -> Iterator[None]:
        """Turn a failure to reach the store while ``doing`` into a StoreError naming it."""
        try:
            yield
        except StoreError:
            raise
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise self.error(doing, exc) from exc
        except Exception as exc:  # botocore and aiohttp raise their own types
            if type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp"):
                raise self.error(doing, exc) from exc
            raise

    def error(self, doing: str, exc: BaseException) -> StoreError:
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(".")
        return StoreError(
            f"The object store at {self.endpoint} ({self.url}) could not {doing}: {reason}. "
            f"Check that it runs and answers there (`tunelab services status` for the team "
            f"stack), then run the same command again: finished steps are reused and "
            "nothing already stored is lost."
        )

    def check(self, before: str) -> None:
        """StoreError unless the store answers: a flow stops before its next step
        (``before``) rather than half-way through it."""
        fs = self.filesystem(probe=True)
        with self.reaching(f"be reached before it would {before}"):
            # info, not exists: exists() answers False when the endpoint does not answer.
            fs.info(self.url.split("://", 1)[1].split("/", 1)[0])

    # ------------------------------------------------------------ folders

    def publish(
        self, folder: Path, url: str, last: tuple[str, ...] = (), record: bool = True
    ) -> int:
        """Upload the files of ``folder`` that changed since its last publish (checkpoint
        folders aside: training state, not results); the files named in ``last`` go last,
        so a reader that finds them finds the rest. Returns how many files were sent.
        Without ``record`` nothing is written into the folder (and everything is sent)."""
        folder = Path(folder)
        sent = _read_sync(folder, url) if record else {}
        files = _files(folder)
        changed = [n for n in files if sent.get(n) != _stamp(folder / n)]
        changed.sort(key=lambda n: (n in last, n))
        fs = self.filesystem()
        with self.reaching(f"store {folder.name} at {url}"):
            for name in changed:
                fs.put_file(str(folder / name), f"{url}/{name}")
                sent[name] = _stamp(folder / name)
        if record:
            _write_sync(folder, url, sent)
        return len(changed)

    def exists(self, url: str) -> bool:
        fs = self.filesystem()
        with self.reaching(f"look up {url}"):
            return fs.exists(url)

    def read_text(self, url: str) -> str | None:
        """A small text object; None when there is none."""
        fs = self.filesystem()
        with self.reaching(f"read {url}"):
            try:
                return fs.cat_file(url).decode("utf-8")
            except FileNotFoundError:
                return None

    def write_text(self, url: str, text: str) -> None:
        fs = self.filesystem()
        with self.reaching(f"write {url}"):
            fs.pipe_file(url, text.encode("utf-8"))

    def fetch(
        self, url: str, folder: Path, needed: str | None = None, top_level: bool = False
    ) -> bool:
        """Download what the store holds at ``url`` and ``folder`` lacks, holds in another
        size, or fetched before the store's copy was stored again. False when the store
        holds nothing there (or not ``needed``). With ``top_level``, files in subfolders
        (a run's model weights) are left in the store."""
        fs = self.filesystem()
        folder = Path(folder)
        with self.reaching(f"read {url}"):
            remote = _remote_files(fs, url)
            if not remote or (needed is not None and needed not in remote):
                return False
            sent = _read_sync(folder, url)
            seen = _read_sync(folder, f"fetched:{url}")
            # ``needed`` last: a folder holding it holds everything it was stored with.
            for name, (size, version) in sorted(remote.items(), key=lambda i: i[0] == needed):
                if top_level and "/" in name:
                    continue
                local = folder / name
                same = local.is_file() and local.stat().st_size == size
                if same and seen.get(name, version) == version:
                    continue  # ours, or fetched before and not stored again since
                local.parent.mkdir(parents=True, exist_ok=True)
                part = local.with_name(f".{local.name}.part")
                fs.get_file(f"{url}/{name}", str(part))
                part.replace(local)
                sent[name], seen[name] = _stamp(local), version
        _write_sync(folder, url, sent)
        _write_sync(folder, f"fetched:{url}", seen)
        return True

    def fetch_whole(self, url: str, target: Path, needed: str) -> bool:
        """Download a folder into a temporary sibling and move it into place complete:
        an interrupted download never leaves a folder that looks ready."""
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}-fetch-", dir=target.parent))
        try:
            if not self.fetch(url, work, needed):
                return False
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
            return True
        finally:
            shutil.rmtree(work, ignore_errors=True)


def configured() -> ObjectStore | None:
    """The store $TUNELAB_STORE names, or None (everything stays in the workspace)."""
    raw = os.environ.get(STORE_ENV, "").strip().rstrip("/")
    if not raw:
        return None
    if "://" not in raw or raw.startswith("file://"):
        raise ConfigError(
            f"${STORE_ENV}={raw!r} is not an object store URL. Set it to e.g. s3://tunelab "
            "(the endpoint comes from AWS_ENDPOINT_URL), or unset it to keep everything in "
            "the workspace."
        )
    from urllib.parse import urlsplit

    if urlsplit(raw).username or urlsplit(raw).password:
        raise ConfigError(
            f"${STORE_ENV} holds credentials. Give it only the bucket URL; credentials come "
            "from AWS_PROFILE / AWS_SHARED_CREDENTIALS_FILE or the AWS_ACCESS_KEY_ID pair."
        )
    return ObjectStore(raw)


def _files(folder: Path) -> list[str]:
    names = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or relative.name == SYNC_RECORD:
            continue
        if any(part.startswith(("checkpoint-", ".")) for part in relative.parts):
            continue
        names.append(relative.as_posix())
    return names


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _read_sync(folder: Path, url: str) -> dict[str, list[int]]:
    try:
        return json.loads((folder / SYNC_RECORD).read_text(encoding="utf-8")).get(url, {})
    except (OSError, ValueError, AttributeError):
        return {}


def _write_sync(folder: Path, url: str, sent: dict[str, list[int]]) -> None:
    if not folder.is_dir():
        return
    path = folder / SYNC_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    write_json_atomic(path, {**record, url: sent})


def _remote_files(fs, url: str) -> dict[str, tuple[int, str]]:
    """Relative name -> (size, version) of every file under ``url`` (empty when there is
    none); the version (ETag, else modification time) tells a file stored again."""
    base = fs._strip_protocol(url).rstrip("/")  # as the file system names its paths
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        return {}
    return {
        path[len(base) + 1 :]: (int(info.get("size") or 0), _version(info))
        for path, info in found.items()
        if info.get("type") == "file" and path.startswith(base + "/")
    }


def _version(info: dict) -> str:
    for key in ("ETag", "etag", "LastModified", "mtime", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""
