"""Reading milestone plans: the bundled ones load; mistakes are named with where and how."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunelab.errors import ConfigError
from tunelab.pipeline import cache
from tunelab.pipeline import plan as milestone

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["milestone.yaml", "tiny.yaml", "retrain.yaml"])
def test_bundled_plans_load(name):
    plan = milestone.load_plan(CONFIGS / name)
    assert plan.datasets and all(d.methods for d in plan.datasets)
    for cfg, dataset in zip(plan.data_configs(), plan.datasets, strict=True):
        assert cfg.data.name == dataset.name


def test_the_milestone_covers_every_method_family():
    plan = milestone.load_plan(CONFIGS / "milestone.yaml")
    methods = {m.cfg.train.method for m in plan.methods()}
    assert {"baseline", "full", "lora", "dpo"} <= methods
    dpo = plan.find("preferences/dpo")
    assert dpo.init_from == "instructions/lora"
    assert [m.label for m in plan.dependent()] == ["preferences/dpo"]
    assert "preferences/dpo" not in {m.label for m in plan.independent()}


def test_a_dpo_method_starts_from_its_source_run_without_reparsing():
    plan = milestone.load_plan(CONFIGS / "milestone.yaml")
    dpo = plan.find("preferences/dpo")
    started = dpo.config_for("/runs/instructions/lora-x")
    assert started.train.dpo.init_from == "/runs/instructions/lora-x"
    assert dpo.cfg.train.dpo.init_from is None  # the plan's config is left as it was
    assert started.train.max_steps == dpo.cfg.train.max_steps == 10  # the plan's `set:`
    assert dpo.config_for(None) is dpo.cfg


def write(tmp_path, raw) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # the order of methods matters
    return path


def entry(name: str, **extra) -> dict:
    return {"config": str(CONFIGS / name), **extra}


def test_a_config_listed_under_another_dataset_is_refused(tmp_path):
    path = write(tmp_path, {"datasets": {"instructions": {"tfidf": entry("sentiment-tfidf.yaml")}}})
    with pytest.raises(ConfigError, match=r"trains dataset 'sentiment', not 'instructions'"):
        milestone.load_plan(path)


def test_init_from_must_name_an_earlier_method(tmp_path):
    raw = {
        "datasets": {
            "preferences": {"dpo": entry("preferences-dpo.yaml", init_from="instructions/lora")},
            "instructions": {"lora": entry("instructions-lora.yaml")},
        }
    }
    with pytest.raises(ConfigError, match=r"init_from=instructions/lora.*listed before"):
        milestone.load_plan(write(tmp_path, raw))


def test_unknown_keys_and_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown keys \['retries'\]"):
        milestone.load_plan(write(tmp_path, {"retries": 2, "datasets": {}}))
    bad = {"datasets": {"sentiment": {"lora": entry("sentiment-lora.yaml", epochs=3)}}}
    with pytest.raises(ConfigError, match=r"datasets.sentiment.lora: unknown keys \['epochs'\]"):
        milestone.load_plan(write(tmp_path, bad))
    missing = {"datasets": {"sentiment": {"lora": entry("nope.yaml")}}}
    with pytest.raises(
        ConfigError, match=r"sentiment/lora: Config file .*nope.yaml does not exist"
    ):
        milestone.load_plan(write(tmp_path, missing))
    with pytest.raises(ConfigError, match="does not exist"):
        milestone.load_plan(tmp_path / "absent.yaml")


def test_methods_of_one_dataset_must_share_its_data(tmp_path):
    raw = {
        "datasets": {
            "sentiment": {
                "tfidf": entry("sentiment-tfidf.yaml"),
                "lora": entry("sentiment-lora.yaml", set=["data.max_rows=100"]),
            }
        }
    }
    with pytest.raises(ConfigError, match="describe its data differently"):
        milestone.load_plan(write(tmp_path, raw))


def test_cache_keys_follow_what_a_step_depends_on():
    from tunelab import config

    cfg = config.load(CONFIGS / "sentiment-lora.yaml")
    key = cache.train_key(cfg, "v1", "code1")
    assert key == cache.train_key(config.load(CONFIGS / "sentiment-lora.yaml"), "v1", "code1")
    assert key != cache.train_key(cfg, "v2", "code1")  # new data
    assert key != cache.train_key(cfg, "v1", "code2")  # new code
    changed = config.load(CONFIGS / "sentiment-lora.yaml", ["train.adapter.r=4"])
    assert key != cache.train_key(changed, "v1", "code1")
    # The gate's settings do not retrain, they only re-judge.
    gate_only = config.load(CONFIGS / "sentiment-lora.yaml", ["registry.significance=0.01"])
    assert key == cache.train_key(gate_only, "v1", "code1")
    evaluate = cache.evaluate_key(key, cfg)
    assert cache.register_key(evaluate, cfg, "uri") != cache.register_key(
        evaluate, gate_only, "uri"
    )
    assert len(cache.code_version()) == 16
