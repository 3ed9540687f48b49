"""`tunelab run` with nothing changed shows the last complete run instead of running the
flow: only when every input and everything that run left is as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunelab.pipeline import uptodate
from tunelab.pipeline.plan import load_plan
from tunelab.workspace import Workspace

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write_plan(folder: Path, source: str, extra_set: tuple[str, ...] = ()) -> Path:
    """A one-dataset plan: TF-IDF on ``source``; ``extra_set``: more overrides."""
    raw = {
        "title": "Up-to-date check",
        "datasets": {
            "reviews": {
                "tfidf": {
                    "config": str(CONFIGS / "tiny" / "sentiment-tfidf.yaml"),
                    "set": [f"data.source={source}", "data.name=reviews", *extra_set],
                }
            }
        },
    }
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def setup(tmp_path):
    """A workspace a complete run left: data, version records, cache, a run folder, the
    review and a sqlite store; the plan it ran, on a local CSV file."""
    root = tmp_path / "ws"
    workspace = Workspace(root)
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\ngreat,positive\nawful,negative\n")
    plan = load_plan(write_plan(tmp_path, str(csv)))
    for name in ("data/reviews/train.parquet", "data-versions/reviews/abc/version.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    (root / ".prefect-results").mkdir()
    (root / ".prefect-results" / "train-123").write_text("result")
    run_dir = root / "runs" / "reviews" / "tfidf-sklearn-1"
    run_dir.mkdir(parents=True)
    (run_dir / "scorecard.json").write_text("{}")
    review = root / "reports" / "milestone" / "20261129T120000Z" / "review.md"
    review.parent.mkdir(parents=True)
    review.write_text("# review")
    store = root / "mlruns" / "mlflow.db"
    store.parent.mkdir()
    store.write_bytes(b"sqlite")
    summary = {
        "ok": True,
        "title": plan.title,
        "review": {"markdown": str(review), "html": str(review.with_suffix(".html"))},
        "champions": {"reviews-classifier": "1"},
        "methods": [
            {"dataset": "reviews", "method": "tfidf", "status": "ok", "run_dir": str(run_dir)}
        ],
    }
    uri = f"sqlite:///{store}"
    assert uptodate.save(workspace, uri, summary, uptodate.check(plan, workspace, uri).inputs)
    return workspace, plan, uri, summary, csv


def test_a_run_with_nothing_changed_is_up_to_date(setup):
    workspace, plan, uri, summary, _ = setup
    found = uptodate.check(plan, workspace, uri)
    assert found.up_to_date and found.reason == ""
    assert found.summary == summary and found.finished


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda root: (root / "data/reviews/train.parquet").write_text("other"), "data folders"),
        (lambda root: (root / "data.dvc").write_text("outs: []"), "data.dvc"),
        (lambda root: (root / "mlruns/mlflow.db").write_bytes(b"sqlite+"), "MLflow store"),
        (lambda root: (root / "mlruns/mlflow.db-wal").write_bytes(b"w"), "MLflow store"),
        (lambda root: (root / ".prefect-results/train-123").unlink(), "step cache"),
        (
            lambda root: next(root.glob("runs/reviews/*/scorecard.json")).unlink(),
            "a run folder",
        ),
        (lambda root: next(root.glob("reports/milestone/*/review.md")).unlink(), "the review"),
        (
            lambda root: (root / "data-versions/reviews/abc/version.json").unlink(),
            "version records",
        ),
    ],
)
def test_anything_the_run_left_that_changed_runs_the_flow(setup, change, named):
    workspace, plan, uri, _, _ = setup
    change(workspace.root)
    found = uptodate.check(plan, workspace, uri)
    assert not found.up_to_date and named in found.reason


def test_changed_inputs_run_the_flow_and_say_which(setup, tmp_path, monkeypatch):
    workspace, plan, uri, _, csv = setup
    other_config = load_plan(write_plan(tmp_path, str(csv), ("train.seed=7",)))
    assert "the plan or a run config" in uptodate.check(other_config, workspace, uri).reason
    assert "tracking target" in uptodate.check(plan, workspace, uri + "x").reason
    monkeypatch.setattr(uptodate, "code_version", lambda: "another")
    assert "tunelab's code changed" in uptodate.check(plan, workspace, uri).reason
    monkeypatch.undo()
    csv.write_text("text,label\ngreat,positive\nawful,negative\nfine,positive\n")
    assert "a data source changed" in uptodate.check(plan, workspace, uri).reason


def test_a_hub_source_counts_only_when_a_commit_pins_it(tmp_path):
    branch = load_plan(write_plan(tmp_path, "hf:org/reviews", ("data.hf_revision=main",)))
    reason = uptodate.inputs(branch, "sqlite:////tmp/x.db")
    assert isinstance(reason, str) and "hf:org/reviews" in reason
    commit = "0123456789abcdef0123456789abcdef01234567"
    pinned = load_plan(write_plan(tmp_path, "hf:org/reviews", (f"data.hf_revision={commit}",)))
    assert isinstance(uptodate.inputs(pinned, "sqlite:////tmp/x.db"), dict)


def test_a_run_with_a_failed_method_is_not_recorded_and_clears_the_last(setup):
    workspace, plan, uri, summary, _ = setup
    failed = json.loads(json.dumps(summary))
    failed["methods"][0]["status"] = "failed"
    assert not uptodate.save(workspace, uri, failed, uptodate.inputs(plan, uri))
    assert not uptodate.record_path(workspace).exists()
    assert "no complete run" in uptodate.check(plan, workspace, uri).reason


def test_a_store_whose_state_cannot_be_read_is_never_up_to_date(setup):
    workspace, plan, _, summary, _ = setup
    uri = "postgresql://tunelab@127.0.0.1/mlflow"
    assert not uptodate.save(workspace, uri, summary, uptodate.inputs(plan, uri))
    assert not uptodate.check(plan, workspace, uri).up_to_date


def test_a_run_is_recorded_with_the_inputs_it_started_from(setup, tmp_path):
    """A source edited while the run ran: the record keeps the inputs checked before, so
    the next run sees the edit and runs the flow."""
    workspace, plan, uri, summary, csv = setup
    started = uptodate.check(plan, workspace, uri).inputs
    csv.write_text("text,label\nedited,positive\nwhile,negative\n")
    assert uptodate.save(workspace, uri, summary, started)
    assert "a data source changed" in uptodate.check(plan, workspace, uri).reason


def test_an_unreadable_record_runs_the_flow(setup):
    workspace, plan, uri, _, _ = setup
    uptodate.record_path(workspace).write_text("{not json")
    found = uptodate.check(plan, workspace, uri)
    assert not found.up_to_date and "could not be read" in found.reason
