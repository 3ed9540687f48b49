"""DVC as tunelab uses it: `dvc` commands run in the workspace, its config, cache and remote.

DVC 3 hashes files with plain md5 and keeps each content at
``<cache>/files/md5/<md5[:2]>/<md5[2:]>``; the ``.dir`` object of data/ is a JSON manifest
``[{"relpath", "md5"}, ...]``. Reading those directly spares a `dvc` process (about a
second each) whenever nothing changed.

``.dvc/config`` is committed with the workspace, so a remote's credentials never go
there: user and password given in its URL move to DVC's local, untracked
``.dvc/config.local`` (what ``dvc remote modify --local`` writes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from tunelab.errors import VersioningError
from tunelab.redaction import redact
from tunelab.workspace import Workspace

REMOTE_NAME = "tunelab"
# DVC remote types that take a user and password from their config; http needs auth too.
USERINFO_SCHEMES = frozenset({"http", "https", "webdav", "webdavs", "ssh", "webhdfs"})
CREDENTIAL_OPTIONS = ("user", "password", "auth")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def run(workspace: Workspace, *args: str, hint: str = "") -> subprocess.CompletedProcess:
    """`dvc ARGS` in the workspace root; a failure raises VersioningError ending in ``hint``."""
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
        tail = redact("\n".join(lines[-8:])) or "(no output)"
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


def ensure_repo(workspace: Workspace) -> None:
    """`dvc init` in the workspace: plain at a git top level, --subdir below one, else --no-scm."""
    root = workspace.root
    if (root / ".dvc").is_dir():
        return
    root.mkdir(parents=True, exist_ok=True)
    top = _git_top(root)
    mode = [] if top == root else ["--subdir"] if top else ["--no-scm"]
    run(
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


def default_remote(workspace: Workspace) -> str:
    """The remote when the config names none: the team store's dvc/ folder when
    $TUNELAB_STORE is set, else dvc-remote/ in the workspace."""
    from tunelab.objectstore import configured

    store = configured()
    return store.dvc_url if store is not None else str(workspace.default_dvc_remote)


def _remote_arg(workspace: Workspace, remote: str | None) -> str:
    """The URL to give `dvc remote add` (run in the root): relative for folders in the root.

    DVC stores a relative local path relative to .dvc/ (e.g. ../dvc-remote), so the
    workspace can move; an absolute path is kept only when the user chose one outside.
    """
    chosen = str(remote) if remote is not None else default_remote(workspace)
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


def ensure_remote(workspace: Workspace, remote: str | None, keep_existing: bool = False) -> str:
    """Make the remote the default one (named 'tunelab'); returns its URL without credentials.

    With keep_existing, a default remote already configured wins (checkout must not
    re-point a workspace). A user and password in the URL go to DVC's local config.
    """
    config = _read_config(workspace)
    default = config.get("core", {}).get("remote")
    configured = config.get(f'remote "{default}"', {}).get("url") if default else None
    if keep_existing and configured:
        return _describe_remote(workspace, configured)
    wanted, credentials = split_credentials(_remote_arg(workspace, remote))
    same = False
    if default == REMOTE_NAME and configured is not None:
        here = _local_remote(workspace, configured)
        there = None if _SCHEME.match(wanted) else (workspace.root / wanted).resolve()
        same = configured == wanted or (here is not None and here == there)
    if not same:
        run(
            workspace,
            "remote",
            "add",
            "-d",
            "--force",
            REMOTE_NAME,
            wanted,
            hint=f"Check the remote {wanted!r} (data.remote in the config), then run again.",
        )
    # A re-pointed remote must not send the old remote's credentials to the new one.
    _store_credentials(workspace, credentials, replace=not same)
    return wanted


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its user-info, and the DVC options (user, password, auth) it held.

    Credentials DVC cannot take from its config for that kind of remote, or secrets in
    the query string, raise VersioningError rather than reach .dvc/config.
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    if not _SCHEME.match(url):
        return url, {}
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    credentials: dict[str, str] = {}
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, has_password, password = userinfo.partition(":")
        if scheme not in USERINFO_SCHEMES:
            _refuse_credentials(url)
        credentials["user"] = unquote(user)
        if has_password or scheme in ("http", "https"):
            credentials["password"] = unquote(password)
        if scheme in ("http", "https"):
            credentials["auth"] = "basic"
        url = urlunsplit(parts._replace(netloc=host))
    if redact(url) != url:
        _refuse_credentials(url)
    return url, credentials


def _refuse_credentials(url: str) -> NoReturn:
    raise VersioningError(
        f"The DVC remote {redact(url)!r} (data.remote) carries credentials in its URL; "
        f"DVC would write them into .dvc/config, which is committed with the workspace. "
        f"Give the URL without them and store them in DVC's local config instead, e.g. "
        f"`dvc remote modify --local {REMOTE_NAME} access_key_id ...` (the options of each "
        f"remote type: `dvc remote modify --help`), or in the environment the remote reads."
    )


def _store_credentials(workspace: Workspace, credentials: dict[str, str], replace: bool) -> None:
    """Write the remote's user/password into .dvc/config.local (untracked), if they differ."""
    if not credentials and not replace:
        return
    from configobj import ConfigObj

    path = workspace.root / ".dvc" / "config.local"
    section = f'remote "{REMOTE_NAME}"'
    current = (
        dict(ConfigObj(str(path), list_values=False).get(section, {})) if path.is_file() else {}
    )
    kept = {k: v for k, v in current.items() if k not in CREDENTIAL_OPTIONS or not replace}
    wanted = kept | credentials
    if wanted == current:
        return
    from dvc.config import Config, ConfigError

    try:
        with Config(dvc_dir=str(workspace.root / ".dvc")).edit("local") as conf:
            if wanted:
                conf["remote"][REMOTE_NAME] = wanted
            else:
                conf["remote"].pop(REMOTE_NAME, None)
    except ConfigError as exc:
        raise VersioningError(
            f"Could not store the DVC remote's credentials in {path}: {redact(str(exc))}. "
            f"Set them with `dvc remote modify --local {REMOTE_NAME} user ...` and run again."
        ) from None
    path.chmod(0o600)


def _describe_remote(workspace: Workspace, configured: str) -> str:
    """A configured URL in the root's terms (relative folders are stored relative to .dvc/)."""
    local = _local_remote(workspace, configured)
    if local is None or Path(configured).is_absolute() or configured.startswith("file://"):
        return redact(configured)
    try:
        return local.relative_to(workspace.root).as_posix()
    except ValueError:
        return str(local)


def cache_dir(workspace: Workspace) -> Path:
    """DVC 3 keeps md5 objects under <cache>/files/md5; <cache> is .dvc/cache unless set."""
    configured = _read_config(workspace).get("cache", {}).get("dir")
    base = workspace.root / ".dvc" / "cache"
    if configured:
        base = (workspace.root / ".dvc" / Path(configured).expanduser()).resolve()
    return base / "files" / "md5"


def object_path(objects: Path, md5: str) -> Path:
    """Where an object lives under a ``files/md5`` folder of a cache or a local remote."""
    return objects / md5[:2] / md5[2:]


def tracked_dir_md5(workspace: Workspace) -> str | None:
    """The md5 data.dvc records for the data/ directory ("....dir"); None if untracked."""
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


def read_manifest(workspace: Workspace, dir_md5: str | None) -> dict[str, str] | None:
    """relpath -> md5 from the .dir object DVC wrote for data/; None if not in the cache."""
    if not dir_md5:
        return None
    path = object_path(cache_dir(workspace), dir_md5)
    if not path.is_file():
        return None
    try:
        return {entry["relpath"]: entry["md5"] for entry in json.loads(path.read_text())}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VersioningError(
            f"DVC manifest {path} is unreadable ({exc}). Run `dvc add data` in "
            f"{workspace.root} to rebuild it (or `dvc pull`), then run again."
        ) from exc


def track(workspace: Workspace, name: str, changed: bool) -> tuple[str, dict[str, str]]:
    """`dvc add data` unless data.dvc already describes data/, then make the remote complete.

    Returns data.dvc's md5 and the relpath -> md5 of the dataset's files.
    """
    dir_md5 = tracked_dir_md5(workspace)
    manifest = None if changed else read_manifest(workspace, dir_md5)
    if manifest is None or manifest != disk_files(workspace):
        run(
            workspace,
            "add",
            "data",
            hint="If data/ is tracked by git, untrack it (`git rm -r --cached data`); "
            "otherwise fix the cause above and run again.",
        )
        dir_md5 = tracked_dir_md5(workspace)
        manifest = read_manifest(workspace, dir_md5)
        if manifest is None:
            raise VersioningError(
                f"`dvc add data` ran in {workspace.root} but data.dvc or its manifest in "
                f"{cache_dir(workspace)} is missing. Check .dvc/config (cache.dir) and rerun."
            )
    if not _remote_complete(workspace, dir_md5, manifest):
        run(
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
    return all(object_path(objects, md5).is_file() for md5 in {dir_md5, *manifest.values()})


def fetch_objects(workspace: Workspace, wanted: dict[str, str]) -> None:
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
        run(
            workspace,
            "fetch",
            Path(tmp).name,
            hint="Check that the DVC remote (`dvc remote list`) is reachable, then run again.",
        )
    finally:
        Path(tmp).unlink(missing_ok=True)


def md5_bytes(data: bytes) -> str:
    """The md5 DVC gives a file holding ``data``."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path) -> str:
    """The md5 DVC gives the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def disk_files(workspace: Workspace) -> dict[str, str]:
    """relpath -> md5 of every file under data/, as DVC 3 hashes them (plain md5)."""
    return {
        path.relative_to(workspace.data_dir).as_posix(): md5_file(path)
        for path in workspace.data_dir.rglob("*")
        if path.is_file() and not {".git", ".dvc"} & set(path.relative_to(workspace.data_dir).parts)
    }
