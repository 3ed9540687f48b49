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
    assert result.exit_code == 2
    assert "train.method=dpo cannot train classification" in result.output
    assert "Traceback" not in result.output
