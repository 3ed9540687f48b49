"""Real services for integration tests, started on 127.0.0.1 and stopped by PID, and the
small helpers several integration tests share (a tiny plan, a Prefect artifact by key,
free ports, a query in the team stack's PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = CONFIGS / "tiny.yaml"
TINY_SUBSET = {"tiny-sentiment": ["majority", "tfidf"]}  # seconds to train


def tiny_plan(folder: Path, subset: dict[str, list[str]] | None = TINY_SUBSET) -> Path:
    """configs/tiny.yaml with absolute config paths, optionally only some methods."""
    import yaml

    raw = yaml.safe_load(TINY.read_text())
    if subset:
        raw["datasets"] = {d: {m: raw["datasets"][d][m] for m in ms} for d, ms in subset.items()}
    for methods in raw["datasets"].values():
        for name, entry in methods.items():
            entry = {"config": entry} if isinstance(entry, str) else dict(entry)
            entry["config"] = str(CONFIGS / entry["config"])
            methods[name] = entry
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def newest_artifact(client, key: str):
    """The newest Prefect artifact with this key (a sync client), or None."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
        sort=ArtifactSort.CREATED_DESC,
        limit=1,
    )
    return found[0] if found else None


def latest_artifact(client, key: str) -> str:
    """The data of the newest Prefect artifact with this key; empty when there is none."""
    artifact = newest_artifact(client, key)
    return artifact.data if artifact else ""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def s3_port() -> int:
    """A port whose 3 successors and their +10000 gRPC twins are free too (SeaweedFS)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 44000)
        needed = [port, *(port + i for i in (1, 2, 3)), *(port + i + 10000 for i in (1, 2, 3))]
        if all(_free(p) for p in needed):
            return port
    raise RuntimeError("no free ports for SeaweedFS")


def query(team, database: str, sql: str) -> list[tuple]:
    """The rows of one query in one of the team stack's PostgreSQL databases."""
    import psycopg2

    from tunelab import stack

    connection = psycopg2.connect(
        host=team.host, port=team.ports.postgres, user=stack.DB_USER, dbname=database
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        connection.close()


class MlflowServer:
    """A real `mlflow server` (sqlite backend, local artifact store) on 127.0.0.1."""

    def __init__(self, root, port: int | None = None):
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout: float = 90.0) -> MlflowServer:
        import subprocess
        import sys
        import time
        import urllib.request

        mlflow_cli = Path(sys.executable).parent / "mlflow"
        self.log = open(self.root / "mlflow-server.log", "ab")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            [
                str(mlflow_cli),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole, by PID
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: see {self.root / 'mlflow-server.log'}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout}s")

    def stop(self) -> None:
        import os
        import signal

        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except Exception:  # noqa: BLE001 - escalate to SIGKILL
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log.close()
