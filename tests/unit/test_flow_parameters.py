"""What the Prefect UI shows of the flows: the deployments' run form (typed parameters
with descriptions and the bundled plans as choices), one artifact key per flow, and a
data subflow whose parameters stay small."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from tunelab import config
from tunelab.deployments import BundledPlan
from tunelab.pipeline.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]


def form(flow) -> dict:
    """The parameter schema Prefect stores with a deployment (its Custom run form)."""
    return flow.parameters.model_dump_for_openapi()


def test_the_bundled_plan_choices_are_the_plans_in_configs():
    plans = {
        f"configs/{path.name}"
        for path in (ROOT / "configs").glob("*.yaml")
        if "datasets" in (config.read_mapping(path) or {})
    }
    assert set(get_args(BundledPlan)) == plans
    for choice in get_args(BundledPlan):
        assert load_plan(ROOT / choice).methods()


@pytest.mark.parametrize(
    ("entrypoint", "default", "fields"),
    [
        (
            "flows.milestone:milestone",
            "configs/milestone.yaml",
            ["config", "workdir", "refresh", "runner", "address", "workers"],
        ),
        (
            "flows.retrain:scheduled_retraining",
            "configs/retrain.yaml",
            ["config", "workdir", "runner", "address", "workers"],
        ),
    ],
)
def test_the_run_form_offers_the_plans_and_describes_every_parameter(entrypoint, default, fields):
    import importlib

    module, name = entrypoint.split(":")
    schema = form(getattr(importlib.import_module(module), name))
    properties = schema["properties"]
    assert list(properties) == fields
    for name in fields:
        assert len(properties[name].get("description") or "") > 20, name
    plan = properties["config"]
    assert plan["default"] == default
    choices = [option for option in plan["anyOf"] if "enum" in option]
    assert [c["enum"] for c in choices] == [list(get_args(BundledPlan))]
    assert {o.get("title") for o in plan["anyOf"]} == {"bundled plan", "path of a plan"}
    assert "bundled in configs/" in " ".join(plan["description"].split())
    if "refresh" in properties:
        assert properties["refresh"]["type"] == "boolean"
        assert properties["refresh"]["default"] is False


def test_a_path_or_a_bundled_plan_is_accepted_and_nothing_else(tmp_path):
    from prefect.exceptions import ParameterTypeError

    from flows.milestone import milestone

    given = str(tmp_path / "plan.yaml")
    assert milestone.validate_parameters({"config": given})["config"] == given
    assert milestone.validate_parameters({"config": "configs/tiny.yaml"})["config"] == (
        "configs/tiny.yaml"
    )
    with pytest.raises(ParameterTypeError):
        milestone.validate_parameters({"config": ""})
    with pytest.raises(ParameterTypeError):
        milestone.validate_parameters({"refresh": "often"})


def test_each_flow_publishes_its_review_under_its_own_stable_keys():
    from flows.milestone import review_keys

    milestone, retraining = review_keys("milestone"), review_keys("retraining")
    assert milestone == ("milestone-review", "milestone-review-table")
    assert retraining == ("retraining-review", "retraining-review-table")
    assert review_keys("milestone") == milestone  # the same on every run: one history


def test_the_data_subflow_takes_small_parameters():
    from flows.data import DatasetSpec, prepare_data

    plan = load_plan(ROOT / "configs" / "milestone.yaml")
    cfgs = plan.data_configs()
    specs = [DatasetSpec.of(cfg) for cfg in cfgs]
    recorded = prepare_data.serialize_parameters({"datasets": specs})
    whole = prepare_data.serialize_parameters({"datasets": cfgs})
    size, whole_size = len(json.dumps(recorded)), len(json.dumps(whole))
    assert size < 400 * len(specs) and size * 5 < whole_size, (size, whole_size)
    first = recorded["datasets"][0]
    assert set(first) == {"data", "model"}
    assert first["data"]["name"] == cfgs[0].data.name
    # What is recorded is enough to rebuild what the data stage reads.
    again = DatasetSpec.model_validate(first)
    assert again == specs[0]
    assert again.run_config().data == cfgs[0].data and again.run_config().model == cfgs[0].model


def test_the_data_flow_still_takes_whole_run_configs():
    from flows.data import prepare_data

    cfg = config.load(None, ["data.name=movies", "model.max_length=64"])
    validated = prepare_data.validate_parameters({"datasets": [cfg]})["datasets"]
    assert validated[0].data == cfg.data and validated[0].model.max_length == 64
