import importlib
import subprocess
import sys
from pathlib import Path

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
