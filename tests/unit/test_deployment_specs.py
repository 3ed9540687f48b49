"""Deployments find their project from where the command runs, not from where tunelab is
installed: $TUNELAB_PROJECT, else the nearest folder holding prefect.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab import deployments
from tunelab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_project_is_found_from_a_subfolder(monkeypatch):
    monkeypatch.delenv(deployments.PROJECT_ENV, raising=False)
    assert deployments.project_root(ROOT / "configs" / "tiny") == ROOT
    names = [spec.name for spec in deployments.specs(ROOT)]
    assert names == ["milestone-review", "scheduled-retraining"]
    assert deployments.specs(ROOT)[1].cron == "0 3 * * *"


def test_the_environment_names_the_project(monkeypatch, tmp_path):
    (tmp_path / "prefect.yaml").write_text((ROOT / "prefect.yaml").read_text())
    monkeypatch.setenv(deployments.PROJECT_ENV, str(tmp_path))
    assert deployments.project_root(ROOT) == tmp_path.resolve()


def test_outside_a_project_the_error_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv(deployments.PROJECT_ENV, raising=False)
    with pytest.raises(ConfigError, match="No prefect.yaml in .* or above it.*TUNELAB_PROJECT"):
        deployments.project_root(tmp_path)
    monkeypatch.setenv(deployments.PROJECT_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match="holds no prefect.yaml"):
        deployments.project_root()


def test_the_deployments_default_to_bundled_plans():
    from typing import get_args

    for spec in deployments.specs(ROOT):
        assert spec.parameters["config"] in get_args(deployments.BundledPlan), spec.name


def test_schedules_come_from_prefect_yaml_unless_overridden():
    milestone, retraining = deployments.specs(ROOT)
    assert milestone.schedule() is None and milestone.schedule_text("0 1 * * *") == "manual"
    assert retraining.schedule() == ("0 3 * * *", "UTC")
    assert retraining.schedule("0 5 * * 1", "Europe/Berlin") == ("0 5 * * 1", "Europe/Berlin")
    assert retraining.schedule_text() == "0 3 * * * (UTC)"
    assert retraining.entrypoint_in(ROOT) == f"{ROOT}/flows/retrain.py:scheduled_retraining"
