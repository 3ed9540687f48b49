"""The prepare-data flow end to end: real GX, real DVC (local remote), real Prefect API."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from tunelab import config
from tunelab.data import versioning

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def small(name: str, task: str, *extra: str):
    overrides = [
        f"data.name={name}",
        f"data.task={task}",
        f"data.source=bundled:{name}",
        "data.max_rows=120",
        "data.checks.min_rows_per_class=5",
        *extra,
    ]
    return config.load(None, overrides)


def write_csv(path, rows):
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def good_rows(prefix=""):
    labels = ("negative", "positive")
    return [
        (f"{prefix}{label} sample text {i} with a few words", label)
        for label in labels
        for i in range(15)
    ]


def test_flow_prepares_versions_and_reports_every_bundled_dataset(workspace):
    from prefect.client.orchestration import get_client

    from flows.data import prepare_data

    cfgs = [
        small("sentiment", "classification"),
        small("preferences", "preference"),
        small("instructions", "generation"),
    ]
    rows = prepare_data(cfgs, str(workspace.root))
    assert [r.name for r in rows] == ["sentiment", "preferences", "instructions"]
    assert workspace.data_dvc.is_file()
    assert any(workspace.default_dvc_remote.rglob("*")), "DVC remote holds no files"
    for row in rows:
        assert sum(row.rows[s] for s in ("train", "validation", "test")) == 120
        assert (workspace.data_dir / row.name / "test.parquet").is_file()
        assert row.data_docs.endswith(".html")
        report = workspace.reports_dir / "data" / row.name / row.version_id / "report.md"
        assert report.is_file() and row.version_id in report.read_text()
        assert row.report_path == str(report)
        record = workspace.versions_dir / row.name / row.version_id
        assert (record / "validation.json").is_file()
    sentiment = versioning.current_version("sentiment", workspace)
    assert sentiment.metadata["labels"] == ["negative", "neutral", "positive"]

    import anyio

    async def artifact_keys():
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts()}

    keys = anyio.run(artifact_keys)
    assert {"data-report-sentiment", "data-versions"} <= keys

    # Unchanged data: same ids, nothing rewritten.
    parquet = workspace.data_dir / "sentiment" / "train.parquet"
    mtime = parquet.stat().st_mtime_ns
    again = prepare_data(cfgs, str(workspace.root))
    assert [r.version_id for r in again] == [r.version_id for r in rows]
    assert not any(r.changed for r in again)
    assert parquet.stat().st_mtime_ns == mtime


def run_cli(*args):
    """Run the real `tunelab` command in a subprocess against the test Prefect API.

    A subprocess, not CliRunner: it checks the real exit code, and Prefect's log
    handlers would otherwise keep writing to the closed streams of an earlier invoke.
    """
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


def test_cli_bad_inputs_fail_clearly_and_keep_the_earlier_version(workspace, tmp_path):
    good = write_csv(tmp_path / "good.csv", good_rows())
    cfg_path = tmp_path / "reviews.yaml"
    cfg_path.write_text(
        "data:\n  name: reviews\n  task: classification\n  checks: {min_rows_per_class: 3}\n"
    )
    code, out = run_cli("data", "prepare", str(cfg_path), "--set", f"data.source={good}")
    assert code == 0, out
    first = versioning.current_version("reviews", workspace)

    # A CSV whose label column is missing.
    missing = tmp_path / "missing.csv"
    pd.DataFrame({"text": ["a b c"] * 3}).to_csv(missing, index=False)
    code, out = run_cli("data", "prepare", str(cfg_path), "--set", f"data.source={missing}")
    assert code == 2
    assert "missing required column(s) ['label']" in out and "missing.csv" in out
    assert "Traceback" not in out

    # Given splits that share a text: leakage.
    splits_dir = tmp_path / "leaky"
    splits_dir.mkdir()
    rows = good_rows("changed ")
    write_csv(splits_dir / "train.csv", rows)
    write_csv(splits_dir / "test.csv", rows[:4] + rows[-4:])
    code, out = run_cli("data", "prepare", str(cfg_path), "--set", f"data.source={splits_dir}")
    assert code == 3  # the data gate failed
    assert "leak" in out.lower() and "Data Docs" in out

    # Nothing was lost: the first version is current, listed, and restorable.
    assert versioning.current_version("reviews", workspace).version == first.version
    code, out = run_cli("data", "show", "reviews")
    assert code == 0 and first.version in out
    code, out = run_cli("data", "checkout", "reviews", first.version)
    assert code == 0, out


def test_cli_checkout_unknown_version(workspace):
    code, out = run_cli("data", "checkout", "nothing", "abc123")
    assert code == 2 and "Traceback" not in out
