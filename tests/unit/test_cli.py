import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app

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
