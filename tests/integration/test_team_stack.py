"""The team stack for real: `tunelab services start --stack team` starts PostgreSQL,
SeaweedFS, Prefect and MLflow on loopback ports; a tracked training run lands its
artifacts in the S3 store through the MLflow server and its registry rows in PostgreSQL;
a flow run lands in Prefect's PostgreSQL database; the S3 credentials stay out of every
record and log; `services stop` stops all four by PID."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from services import query, s3_port

pytestmark = [pytest.mark.integration, pytest.mark.scale]

ROOT = Path(__file__).resolve().parents[2]
TUNELAB = str(Path(sys.executable).parent / "tunelab")


def test_team_stack_holds_runs_registry_and_artifacts(team_workspace):
    ws = team_workspace
    from tunelab import stack
    from tunelab.services import status

    ports = {
        "--prefect-port": random.randint(44001, 47000),
        "--mlflow-port": random.randint(47001, 50000),
        "--postgres-port": random.randint(50001, 53000),
        "--s3-port": s3_port(),
    }
    env = {**os.environ, "TUNELAB_WORKDIR": str(ws)}
    start = [TUNELAB, "services", "start", "--stack", "team"]
    start += [str(x) for pair in ports.items() for x in pair]
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        exports = dict(
            pair.split("=", 1)
            for pair in started.stdout.split("export ", 1)[1].splitlines()[0].split()
        )
        team = stack.Team(
            ws / ".services",
            "127.0.0.1",
            stack.TeamPorts(
                *(
                    ports[k]
                    for k in ("--prefect-port", "--mlflow-port", "--postgres-port", "--s3-port")
                )
            ),
        )
        assert exports == team.client_env()
        rows = status(ws / ".services")
        assert {r["name"]: r["healthy"] for r in rows} == {
            "postgres": True,
            "seaweedfs": True,
            "prefect": True,
            "mlflow": True,
        }

        client_env = {**env, **exports}
        trained = subprocess.run(
            [TUNELAB, "train", str(ROOT / "configs/tiny/sentiment-tfidf.yaml"), "--json"],
            env=client_env,
            cwd=ws,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert trained.returncode == 0, trained.stdout + trained.stderr
        flow = "from prefect import flow\nflow(name='team-check')(lambda: 1)()\n"
        ran = subprocess.run(
            [sys.executable, "-c", flow], env=client_env, capture_output=True, timeout=300
        )
        assert ran.returncode == 0, ran.stderr.decode()[-2000:]

        keys = stack.s3_client(team).list_objects_v2(Bucket=stack.BUCKET).get("Contents", [])
        names = [k["Key"] for k in keys]
        # The run's files and the logged model, in the bucket under MLflow's prefix.
        assert any(n.startswith("mlflow/") and n.endswith("scorecard.json") for n in names), names
        assert any(n.startswith("mlflow/") and n.endswith("MLmodel") for n in names), names
        assert query(team, "mlflow", "SELECT name FROM registered_models") == [
            ("tiny-sentiment-classifier",)
        ]
        assert query(team, "mlflow", "SELECT count(*) FROM runs")[0][0] >= 1
        completed = "SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'"
        assert query(team, "prefect", completed) == [(1,)]

        # The store's secret is in its 0600 files only: no record, log or command line.
        secret = stack._credentials(team)["secret_key"]
        for path in (ws / ".services").glob("*.*"):
            if path.is_file():
                assert secret not in path.read_text(errors="replace"), path
        assert oct((ws / ".services" / "s3" / "credentials").stat().st_mode)[-3:] == "600"
    finally:
        stopped = subprocess.run(
            [TUNELAB, "services", "stop"], env=env, capture_output=True, text=True, timeout=180
        )
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert not any(r["alive"] for r in status(ws / ".services"))
