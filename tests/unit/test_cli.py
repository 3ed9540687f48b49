import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

CONFIGS = Path(__file__).parents[2] / "configs"

HEAVY = (
    "pandas",
    "prefect",
    "great_expectations",
    "dvc",
    "torch",
    "transformers",
    "mlflow",
    "datasets",
    "matplotlib",
)


def test_cli_import_pulls_in_no_heavy_library():
    """`tunelab --help` stays fast because the CLI imports heavy libraries inside commands."""
    code = f"import sys, tunelab.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_command_groups():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "data" in result.output and "config" in result.output


def test_config_show_prints_resolved_yaml():
    result = CliRunner().invoke(app, ["config", "show", "--set", "data.max_rows=7"])
    assert result.exit_code == 0
    assert "max_rows: 7" in result.output


def test_user_error_exits_2_without_traceback():
    result = CliRunner().invoke(app, ["config", "show", "--set", "data.task=nope"])
    assert result.exit_code == 2
    assert "data.task" in result.output and "Traceback" not in result.output


def test_debug_shows_the_exception():
    result = CliRunner().invoke(app, ["--debug", "config", "show", "--set", "data.task=nope"])
    assert result.exit_code == 1
    assert result.exception is not None


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[2] / "flows").glob("*.py")), ids=lambda p: p.name
)
def test_every_flow_module_imports(path):
    importlib.import_module(f"flows.{path.stem}")


def test_models_list_and_prepare(model_cache):
    listed = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    for alias in ("minilm-l6", "smollm2-135m-instruct", "tiny-gpt2", "tiny-bert"):
        assert alias in listed.output
    prepared = CliRunner().invoke(app, ["models", "prepare", "tiny-bert"])
    assert prepared.exit_code == 0 and "tiny-bert: ready in" in prepared.output
    unknown = CliRunner().invoke(app, ["models", "prepare", "tiny-gpt5"])
    assert unknown.exit_code == 2 and "Unknown alias" in unknown.output


def test_train_refuses_a_method_task_mismatch_without_traceback(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "--workdir",
            str(tmp_path),
            "train",
            str(CONFIGS / "sentiment.yaml"),
            "--set",
            "train.method=dpo",
        ],
    )
    assert result.exit_code == 4  # TrainingError: training cannot start
    assert "train.method=dpo cannot train classification" in result.output
    assert "Traceback" not in result.output


EXIT_CODES = {
    "ConfigError": 2,
    "DataValidationError": 3,
    "TrainingError": 4,
    "EvaluationError": 5,
    "TrackingError": 6,
    "PipelineError": 7,
    "WorkspaceBusyError": 8,
    "OrchestratorError": 9,
    "FileSystemError": 10,
}


@pytest.mark.parametrize(("name", "code"), EXIT_CODES.items())
def test_each_kind_of_failure_has_its_exit_code(tmp_path, monkeypatch, name, code):
    """Cron and CI tell a failed data gate from a failed training or a dead server."""
    from tunelab import errors
    from tunelab.pipeline import method

    def fail(cfg, workspace):
        raise getattr(errors, name)(f"{name} happened")

    monkeypatch.setattr(method, "train_and_register", fail)
    config = str(CONFIGS / "tiny" / "sentiment-majority.yaml")
    result = CliRunner().invoke(app, ["--workdir", str(tmp_path), "train", config])
    assert result.exit_code == code, result.output
    assert f"{name} happened" in result.output and "Traceback" not in result.output


def test_train_exits_5_when_evaluation_failed(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from tunelab import cli
    from tunelab.pipeline import method

    card = SimpleNamespace(ok=False, error="no predictions.parquet in the run folder")
    outcome = SimpleNamespace(result=None, card=card, registration=None)
    monkeypatch.setattr(method, "train_and_register", lambda cfg, workspace: outcome)
    monkeypatch.setattr(cli, "_print_result", lambda result: None)
    monkeypatch.setattr(cli, "_print_outcome", lambda outcome: print("Evaluation failed"))
    config = str(CONFIGS / "tiny" / "sentiment-majority.yaml")
    result = CliRunner().invoke(app, ["--workdir", str(tmp_path), "train", config])
    assert result.exit_code == 5, result.output
    assert "Evaluation failed" in result.output


def test_train_exits_6_when_the_tracking_server_is_unreachable(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = str(CONFIGS / "tiny" / "sentiment-majority.yaml")
    result = CliRunner().invoke(
        app,
        ["--workdir", str(tmp_path), "train", config],
        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"},
    )
    assert result.exit_code == 6, result.output
    assert "did not answer" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_readme_documents_every_exit_code():
    from tunelab import errors

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for name, code in EXIT_CODES.items():
        assert getattr(errors, name).exit_code == code
        assert f"| {code} |" in table and f"`{name}`" in table, name


def test_a_flow_that_lost_its_api_exits_9_without_traceback(tmp_path, monkeypatch):
    """The flow's own end cannot be reported either: Prefect raises a connection error
    whose context holds the error that stopped the flow."""
    import httpx

    import flows.milestone
    from tunelab.errors import OrchestratorError

    def lost(*args):
        try:
            raise OrchestratorError("The Prefect API at http://127.0.0.1:1/api stopped answering")
        except OrchestratorError:
            raise httpx.ConnectError("[Errno 111] Connection refused") from None

    monkeypatch.setattr(flows.milestone, "milestone", lost)
    args = ["--workdir", str(tmp_path), "run", str(CONFIGS / "tiny.yaml")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 9, result.output
    assert "stopped answering" in result.output and "Traceback" not in result.output

    def lost_at_the_end(*args):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(flows.milestone, "milestone", lost_at_the_end)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 9 and "lost its Prefect API" in result.output


def test_version():
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"tunelab {version('tunelab')}"


@pytest.mark.parametrize(
    ("error", "fix"),
    [
        (PermissionError(13, "Permission denied", "/srv/ws/reports/milestone"), "write access"),
        (OSError(28, "No space left on device", "/srv/ws/reports/milestone"), "disk space"),
    ],
)
def test_a_file_system_error_is_one_clear_error_naming_the_path(tmp_path, monkeypatch, error, fix):
    from tunelab.pipeline import method

    def fail(cfg, workspace):
        raise error

    monkeypatch.setattr(method, "train_and_register", fail)
    config = str(CONFIGS / "tiny" / "sentiment-majority.yaml")
    result = CliRunner().invoke(app, ["--workdir", str(tmp_path), "train", config])
    assert result.exit_code == 10, result.output
    assert "Traceback" not in result.output
    assert result.output.count("/srv/ws/reports/milestone") == 1 and fix in result.output


def test_other_os_errors_are_not_called_file_system_errors(tmp_path, monkeypatch):
    from tunelab.pipeline import method

    def fail(cfg, workspace):
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(method, "train_and_register", fail)
    config = str(CONFIGS / "tiny" / "sentiment-majority.yaml")
    result = CliRunner().invoke(app, ["--workdir", str(tmp_path), "train", config])
    assert result.exit_code != 10 and isinstance(result.exception, ConnectionResetError)


# ---------------------------------------------------------------- quiet runs, tables, JSON


def _summary(tmp_path):
    """A finished milestone as `tunelab run` gets it from the flow: a long-named dataset,
    a promoted method (p below 0.001), a baseline and an optional method that failed."""
    import json
    from dataclasses import dataclass, field

    from tunelab.lifecycle.gate import Decision
    from tunelab.pipeline.records import MethodRecord, Registration

    run_dir = tmp_path / "runs" / "lora"
    run_dir.mkdir(parents=True)
    card = {"status": "ok", "primary_metric": "macro_f1", "primary": 0.7923}
    card |= {"ci_low": 0.7011, "ci_high": 0.8604, "ci_level": 0.95}
    (run_dir / "scorecard.json").write_text(json.dumps(card))
    dataset = "customer-support-tickets"
    decision = Decision(promote=True, reason="better", metric="macro_f1", p_value=0.0)
    promoted = Registration(model_name=f"{dataset}-classifier", version="12", decision=decision)
    methods = [
        MethodRecord(dataset, "lora-all-linear", run_dir=str(run_dir), registration=promoted),
        MethodRecord(dataset, "majority", run_dir=str(run_dir), reused=["train", "evaluate"]),
        MethodRecord(dataset, "dpo", required=False).fail("train", "TrainingError: diverged"),
    ]
    methods[1].registration = Registration(not_registered="a baseline")

    @dataclass
    class Summary:
        methods: list
        title: str = "Milestone review (tiny models)"
        report: str = "reports/milestone/20261129T104500Z/review.md"
        html: str = "reports/milestone/20261129T104500Z/review.html"
        wall_seconds: float = 61.5
        reused_steps: int = 2
        finished_steps: int = 6
        champions: dict = field(default_factory=lambda: {f"{dataset}-classifier": "12"})

        def failed_required(self):
            return [m for m in self.methods if not m.ok and m.required]

    return Summary(methods)


def _fake_milestone(summary):
    from tunelab import console

    def milestone(config, workdir, refresh):
        print("{'loss': 0.69, 'grad_norm': 1.2, 'epoch': 1.0}")  # a Trainer log dict
        for record in summary.methods:
            call = SimpleNamespace(label=record.label, step="train")
            console.step_started(call)
            value = SimpleNamespace(run_dir=record.run_dir, seconds=1.0)
            console.step_finished(call, SimpleNamespace(value=value, failed=False, reused=False))
        return summary

    return milestone


def tiny_methods() -> int:
    """How many methods tiny.yaml lists: the N of the progress lines' "k/N"."""
    from tunelab.pipeline.plan import load_plan

    return len(load_plan(CONFIGS / "tiny.yaml").methods())


def _run_args(tmp_path, *extra):
    return ["--workdir", str(tmp_path), "run", str(CONFIGS / "tiny.yaml"), *extra]


def test_run_prints_a_final_table_that_fits_80_columns(tmp_path, monkeypatch):
    import flows.milestone

    summary = _summary(tmp_path)
    monkeypatch.setattr(flows.milestone, "milestone", _fake_milestone(summary))
    monkeypatch.delenv("COLUMNS", raising=False)
    result = CliRunner().invoke(app, _run_args(tmp_path))
    assert result.exit_code == 0, result.output
    table = result.stdout
    assert max(len(line) for line in table.splitlines()) <= 80, table
    for name in ("customer-support-tickets", "lora-all-linear", "majority", "not registered"):
        assert name in table, f"{name} was split:\n{table}"
    assert "0.792" in table and "0.70-0.86" in table and "promoted" in table
    assert "< 0.001" in table and "failed (train)" in table
    assert "customer-support-tickets/dpo: train: TrainingError: diverged" in table
    # Progress on stderr: one line per finished step, "method k of N"; the chatter is logged.
    shown = f"[1/{tiny_methods()}] customer-support-tickets/lora-all-linear train 1.0 s"
    assert shown in result.stderr
    assert "grad_norm" not in result.output
    logs = list((tmp_path / ".tunelab" / "logs").glob("*-run.log"))
    assert len(logs) == 1 and "grad_norm" in logs[0].read_text()
    assert result.stderr.count(f"Log: {logs[0]}") == 2  # at the start and at the end


RUN_METHOD_KEYS = {
    "dataset",
    "method",
    "required",
    "status",
    "error",
    "reused",
    "seconds",
    "run_dir",
    "primary",
    "mlflow_run_id",
    "outcome",
    "registered",
    "aliases",
    "gate",
}


def test_run_json_is_the_only_thing_on_stdout(tmp_path, monkeypatch):
    import json

    import flows.milestone

    monkeypatch.setattr(flows.milestone, "milestone", _fake_milestone(_summary(tmp_path)))
    result = CliRunner().invoke(app, _run_args(tmp_path, "--json"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {
        "ok",
        "up_to_date",
        "last_run",
        "title",
        "wall_seconds",
        "steps",
        "review",
        "log",
        "champions",
        "methods",
    }
    assert data["ok"] is True and data["steps"] == {"reused": 2, "finished": 6}
    assert data["up_to_date"] is False and data["last_run"] is None
    assert data["champions"] == {"customer-support-tickets-classifier": "12"}
    lora, majority, dpo = data["methods"]
    assert all(set(m) == RUN_METHOD_KEYS for m in data["methods"])
    assert lora["primary"] == {
        "name": "macro_f1",
        "value": 0.7923,
        "ci_low": 0.7011,
        "ci_high": 0.8604,
        "ci_level": 0.95,
    }
    assert lora["outcome"] == "promoted" and lora["gate"]["p_value"] == 0.0
    assert lora["registered"] == {"model": "customer-support-tickets-classifier", "version": "12"}
    assert majority["outcome"] == "not registered" and majority["gate"] is None
    assert dpo["status"] == "failed" and dpo["primary"] is None
    assert f"[1/{tiny_methods()}]" in result.stderr


def test_a_run_with_nothing_changed_shows_the_last_one_without_running_the_flow(
    tmp_path, monkeypatch
):
    import json

    import flows.milestone

    summary = _summary(tmp_path)
    summary.methods = summary.methods[:2]  # every method done: the run is recorded
    calls = []
    fake = _fake_milestone(summary)
    monkeypatch.setattr(flows.milestone, "milestone", lambda *a: calls.append(a) or fake(*a))
    first = CliRunner().invoke(app, _run_args(tmp_path))
    assert first.exit_code == 0 and len(calls) == 1, first.output
    again = CliRunner().invoke(app, _run_args(tmp_path, "--json"))
    assert again.exit_code == 0 and len(calls) == 1, again.output
    data = json.loads(again.stdout)
    assert data["up_to_date"] is True and data["last_run"]
    assert data["steps"] == {"reused": 6, "finished": 6} and data["log"] is None
    assert [m["reused"] for m in data["methods"]] == [["train", "evaluate", "register"]] * 2
    assert data["methods"][0]["primary"]["value"] == 0.7923
    shown = CliRunner().invoke(app, _run_args(tmp_path))
    assert shown.exit_code == 0 and len(calls) == 1
    assert "Nothing changed since the run that ended" in " ".join(shown.stdout.split())
    assert "0.792" in shown.stdout and "Log:" not in shown.output  # no log: nothing ran
    # --rerun and --refresh run the flow; so does any change, e.g. to the MLflow store.
    assert CliRunner().invoke(app, _run_args(tmp_path, "--rerun")).exit_code == 0
    assert CliRunner().invoke(app, _run_args(tmp_path, "--refresh")).exit_code == 0
    assert len(calls) == 3
    store = tmp_path / "mlruns" / "mlflow.db"
    store.parent.mkdir(exist_ok=True)
    store.write_bytes(b"written by another process")
    assert CliRunner().invoke(app, _run_args(tmp_path)).exit_code == 0 and len(calls) == 4


def test_a_failure_is_printed_once_and_the_libraries_copies_go_to_the_log(tmp_path, monkeypatch):
    """Prefect's task and flow run loggers report the failure too; only the CLI prints it."""
    import json
    import logging

    import flows.milestone
    from tunelab.errors import DataValidationError

    message = "Data gate failed for tiny-sentiment: 3 rows leak from train into test"

    def failing(config, workdir, refresh):
        logging.getLogger("prefect.task_runs").error("Task run failed: %s", message)
        logging.getLogger("prefect.flow_runs").error("Finished in state Failed(%r)", message)
        print(f"DataValidationError: {message}")
        raise DataValidationError(message)

    monkeypatch.setattr(flows.milestone, "milestone", failing)
    result = CliRunner().invoke(app, _run_args(tmp_path))
    assert result.exit_code == 3, result.output
    assert result.output.count(message) == 1 and "Traceback" not in result.output
    (log,) = (tmp_path / ".tunelab" / "logs").glob("*-run.log")
    assert log.read_text().count(message) == 3

    result = CliRunner().invoke(app, _run_args(tmp_path, "--json"))
    assert result.exit_code == 3
    error = json.loads(result.stdout)
    assert error == {
        "ok": False,
        "error": {"type": "DataValidationError", "message": message, "exit_code": 3},
    }
    assert result.stderr.count(message) == 1


def test_a_failed_data_gate_is_printed_once_by_data_prepare(tmp_path, monkeypatch):
    import logging

    import flows.data
    from tunelab.errors import DataValidationError

    message = "Dataset 'tiny-sentiment' failed the validation gate: 1 of 19 checks failed."

    def failing(cfgs, workdir):
        logging.getLogger("prefect.task_runs").error("Task run failed: %s", message)
        logging.getLogger("prefect.flow_runs").error("Finished in state Failed(%r)", message)
        raise DataValidationError(message)

    monkeypatch.setattr(flows.data, "prepare_data", failing)
    config = str(CONFIGS / "tiny" / "sentiment-tfidf.yaml")
    result = CliRunner().invoke(app, ["--workdir", str(tmp_path), "data", "prepare", config])
    assert result.exit_code == 3, result.output
    assert result.output.count(message) == 1 and "Traceback" not in result.output
    (log,) = (tmp_path / ".tunelab" / "logs").glob("*-data-prepare.log")
    assert log.read_text().count(message) == 2


def test_a_read_only_reports_folder_is_one_error_and_nothing_is_lost(tmp_path, monkeypatch):
    """The review cannot be written: exit 10, one line naming the folder; earlier reviews
    and the runs stay as they were."""
    import os

    import flows.milestone

    folder = tmp_path / "reports" / "milestone"
    earlier = folder / "20261128T090000Z" / "review.md"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("the earlier review")
    run_file = tmp_path / "runs" / "tiny-sentiment" / "lora" / "scorecard.json"
    run_file.parent.mkdir(parents=True)
    run_file.write_text("{}")

    def milestone(config, workdir, refresh):
        review = folder / "20261129T104500Z"
        if os.access(folder, os.W_OK):  # root: the mode does not stop it, so simulate it
            raise PermissionError(13, "Permission denied", str(review))
        review.mkdir()
        (review / "review.md").write_text("never written")

    monkeypatch.setattr(flows.milestone, "milestone", milestone)
    for path in (earlier.parent, folder, folder.parent):
        path.chmod(0o555)
    try:
        result = CliRunner().invoke(app, _run_args(tmp_path))
    finally:
        for path in (folder.parent, folder, earlier.parent):
            path.chmod(0o755)
    assert result.exit_code == 10, result.output
    assert result.output.count("Error:") == 1 and "Traceback" not in result.output
    assert result.output.count(str(folder / "20261129T104500Z")) == 1
    assert "write access" in result.output and "What finished is kept" in result.output
    assert earlier.read_text() == "the earlier review" and run_file.read_text() == "{}"
    assert sorted(p.name for p in folder.iterdir()) == ["20261128T090000Z"]


def test_train_json(tmp_path, monkeypatch):
    import json

    from tunelab.lifecycle.gate import Decision
    from tunelab.pipeline import method
    from tunelab.pipeline.records import Registration

    result_ = SimpleNamespace(
        dataset="sentiment",
        method="lora",
        model="minilm-l6",
        output_dir=str(tmp_path / "runs" / "lora"),
        metrics={"train_loss": 0.5},
        trainable_params=74883,
        total_params=22_700_000,
        wall_seconds=3.2,
        device="cpu",
        precision="fp32",
    )
    card = SimpleNamespace(
        ok=True,
        error=None,
        primary_metric="macro_f1",
        primary=0.79,
        ci_low=0.7,
        ci_high=0.86,
        ci_level=0.95,
        test_rows=70,
        metrics={"macro_f1": 0.79, "accuracy": 0.8},
    )
    decision = Decision(promote=False, reason="not significant", metric="macro_f1", p_value=0.086)
    done = Registration(model_name="sentiment-classifier", version="3", decision=decision)
    outcome = SimpleNamespace(result=result_, card=card, registration=done)
    monkeypatch.setattr(method, "train_and_register", lambda cfg, workspace: outcome)
    config = str(CONFIGS / "tiny" / "sentiment-majority.yaml")
    result = CliRunner().invoke(app, ["--workdir", str(tmp_path), "train", config, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["primary"]["value"] == 0.79
    assert data["outcome"] == "not promoted" and data["gate"]["p_value"] == 0.086
    assert data["params"] == {"trainable": 74883, "total": 22_700_000}
    assert data["log"].endswith("-train.log")


def test_registry_list_json_and_80_columns(tmp_path, monkeypatch):
    import json

    from tunelab import cli
    from tunelab.lifecycle import registry

    name = "customer-support-tickets-classifier"
    rows = [
        {
            "model": name,
            "version": str(v),
            "aliases": "champion, previous" if v == 2 else "",
            "method": "lora-all-linear",
            "metric": f"macro_f1 0.7{v}23456",
            "data_version": "0123456789abcdef0123",
            "decision": "promoted" if v == 2 else "not promoted",
            "run_id": f"run{v}",
        }
        for v in (1, 2)
    ]
    monkeypatch.setattr(cli, "_tracking", lambda: SimpleNamespace(shown="sqlite:///mlflow.db"))
    monkeypatch.setattr(registry, "list_versions", lambda target, name: rows)
    monkeypatch.delenv("COLUMNS", raising=False)
    result = CliRunner().invoke(app, ["registry", "list"])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
    assert name in result.stdout and "champion, previous" in result.stdout
    result = CliRunner().invoke(app, ["registry", "list", "--json"])
    data = json.loads(result.stdout)
    assert data["tracking"] == "sqlite:///mlflow.db"
    assert data["versions"][1] == {
        "model": name,
        "version": "2",
        "aliases": ["champion", "previous"],
        "method": "lora-all-linear",
        "metric": "macro_f1",
        "value": 0.7223456,
        "data_version": "0123456789abcdef0123",
        "decision": "promoted",
        "run_id": "run2",
    }


def test_data_show_and_models_list_json(tmp_path, monkeypatch):
    import json

    from tunelab import models
    from tunelab.data import versioning

    version = SimpleNamespace(
        version="20261129-abcdef12",
        created="2026-11-29T10:00:00+00:00",
        rows={"train": 240, "validation": 30, "test": 30},
        metadata={"source": "bundled:sentiment"},
    )
    monkeypatch.setattr(versioning, "list_datasets", lambda workspace: ["sentiment"])
    monkeypatch.setattr(versioning, "list_versions", lambda name, workspace: [version])
    monkeypatch.setattr(versioning, "current_version", lambda name, workspace: version)
    result = CliRunner().invoke(app, ["--workdir", str(tmp_path), "data", "show", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["datasets"] == [
        {
            "name": "sentiment",
            "current": "20261129-abcdef12",
            "versions": [
                {
                    "version": "20261129-abcdef12",
                    "current": True,
                    "created": "2026-11-29T10:00:00+00:00",
                    "rows": {"train": 240, "validation": 30, "test": 30},
                    "source": "bundled:sentiment",
                }
            ],
        }
    ]
    row = {"name": "tiny-bert", "description": "a tiny random BERT", "tasks": ["classification"]}
    row |= {"family": "bert", "path": None, "ready": False}
    monkeypatch.setattr(models, "alias_status", lambda: [row])
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"models": [row]}


def test_init_writes_a_project_and_refuses_to_overwrite(tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    rows = ["prompt,response"] + [f"Repeat {w},{w}" for w in ("apple", "river", "stone") * 10]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    first = CliRunner().invoke(app, ["init", "pairs.csv", "--name", "pairs", "--json"])
    assert first.exit_code == 0, first.output
    made = json.loads(first.stdout)
    assert made["task"] == "generation" and made["method"] == "lora"
    assert Path(made["config"]).is_file() and Path(made["milestone"]).is_file()
    again = CliRunner().invoke(app, ["init", "pairs.csv", "--name", "pairs"])
    assert again.exit_code == 2 and "already exist" in again.output
