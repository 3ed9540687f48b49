"""Reading milestone plans: the bundled ones load; mistakes are named with where and how."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunelab.errors import ConfigError
from tunelab.pipeline import cache
from tunelab.pipeline import plan as milestone

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    "name", ["milestone.yaml", "milestone-full.yaml", "tiny.yaml", "retrain.yaml"]
)
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
    assert dpo.init_from == "chat/lora"
    assert plan.find("chat/lora").cfg.data.task == "chat"
    assert [m.label for m in plan.dependent()] == ["preferences/dpo"]
    assert "preferences/dpo" not in {m.label for m in plan.independent()}


def test_a_dpo_method_starts_from_its_source_run_without_reparsing():
    plan = milestone.load_plan(CONFIGS / "milestone.yaml")
    dpo = plan.find("preferences/dpo")
    started = dpo.config_for("/runs/chat/lora-x")
    assert started.train.dpo.init_from == "/runs/chat/lora-x"
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
    with pytest.raises(ConfigError, match="describe its data differently") as err:
        milestone.load_plan(write(tmp_path, raw))
    assert "sentiment/lora differs from sentiment/tfidf in data.max_rows: None vs 100" in str(
        err.value
    )


def test_a_shared_data_section_is_stated_once_for_every_method():
    plan = milestone.load_plan(CONFIGS / "examples" / "shared-data.yaml")
    (dataset,) = plan.datasets
    data = [m.cfg.data for m in dataset.methods]
    assert all(d == data[0] for d in data)
    assert data[0].name == "reviews"  # the dataset's name, over the configs' tiny-sentiment
    assert data[0].max_rows == {"train": 300}
    majority = plan.find("reviews/majority")
    assert majority.config_path is None  # the defaults plus the shared sections
    assert majority.cfg.train.baseline.kind == "majority"
    lora = plan.find("reviews/lora")
    assert lora.cfg.model.name == "tiny-bert"  # the rest of its config file is kept
    assert lora.cfg.train.learning_rate == 1.0e-2
    assert all(m.cfg.eval.bootstrap_resamples == 500 for m in dataset.methods)


def test_shared_sections_apply_in_order_and_the_method_set_wins(tmp_path):
    raw = {
        "datasets": {
            "reviews": {
                "data": {"source": "bundled:sentiment", "seed": 5},
                "set": ["data.seed=6", "train.seed=1"],
                "methods": {"tfidf": entry("sentiment-tfidf.yaml", set=["data.seed=7"])},
            }
        }
    }
    (method,) = milestone.load_plan(write(tmp_path, raw)).methods()
    assert (method.cfg.data.seed, method.cfg.train.seed) == (7, 1)
    assert method.overrides == ("data.seed=6", "train.seed=1", "data.seed=7")
    assert method.cfg.data.labels == ["negative", "neutral", "positive"]  # merged, not replaced


def test_todays_format_and_methods_without_shared_sections_give_the_same_runs(tmp_path):
    methods = {
        "tfidf": entry("sentiment-tfidf.yaml"),
        "lora": entry("sentiment-lora.yaml", set=["train.epochs=2"]),
    }
    old = milestone.load_plan(write(tmp_path, {"datasets": {"sentiment": methods}}))
    new = milestone.load_plan(write(tmp_path, {"datasets": {"sentiment": {"methods": methods}}}))
    for before, after in zip(old.methods(), new.methods(), strict=True):
        assert before.cfg == after.cfg
        assert cache.StepKeys.of(before.cfg, "v", "c", "u") == cache.StepKeys.of(
            after.cfg, "v", "c", "u"
        )


def test_a_method_that_differs_from_the_shared_data_is_named(tmp_path):
    raw = {
        "datasets": {
            "sentiment": {
                "data": {"max_rows": {"train": 200}},
                "methods": {
                    "tfidf": entry("sentiment-tfidf.yaml"),
                    "lora": entry("sentiment-lora.yaml", set=["data.max_rows.test=20"]),
                },
            }
        }
    }
    with pytest.raises(
        ConfigError, match=r"sentiment/lora differs from sentiment/tfidf in data.max_rows.test"
    ):
        milestone.load_plan(write(tmp_path, raw))


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (
            {"data": {"colums": {}}, "methods": {"m": {}}},
            r"datasets.reviews.data: unknown keys \['colums'\]",
        ),
        ({"data": ["source"], "methods": {"m": {}}}, r"datasets.reviews.data must be a mapping"),
        (
            {"data": {"max_rows": {"trian": 5}}, "methods": {"m": {}}},
            r"(?s)datasets.reviews.data\).*unknown split\(s\) \['trian'\]",
        ),
        (
            {"data": {"task": "ranking"}, "methods": {"m": {}}},
            r"(?s)datasets.reviews.data\).*data.task",
        ),
        ({"set": "data.seed=1", "methods": {"m": {}}}, r"datasets.reviews.set must be a list"),
        ({"model": {}, "methods": {"m": {}}}, r"datasets.reviews: unknown keys \['model'\]"),
        (
            {"data": {"source": "bundled:sentiment"}, "m": entry("sentiment-tfidf.yaml")},
            r"datasets.reviews.data must be a config path.*list them under 'methods:'",
        ),
    ],
)
def test_a_wrong_shared_section_names_the_dataset_and_key(tmp_path, dataset, message):
    with pytest.raises(ConfigError, match=message):
        milestone.load_plan(write(tmp_path, {"datasets": {"reviews": dataset}}))


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


# Thresholds a real dataset may exceed: the starter config allows more than the defaults.
LOOSER = {"max_chars", "max_duplicate_rate", "max_imbalance_ratio", "max_too_long_share"}


def test_the_starter_config_parses_with_thresholds_looser_than_the_defaults():
    from tunelab import config

    path = CONFIGS / "examples" / "starter.yaml"
    starter = config.load(path).data
    default = config.CheckThresholds()
    strict = config.load(CONFIGS / "sentiment.yaml").data.checks
    # Every threshold is stated (with its comment) in the file, so a new one gets one too.
    assert set(yaml.safe_load(path.read_text())["data"]["checks"]) == set(default.model_fields)
    for name in default.model_fields:
        value, usual, bundled = (getattr(c, name) for c in (starter.checks, default, strict))
        if name.startswith("min_"):
            assert value <= usual and value <= bundled, name
        else:
            assert value >= usual and value >= bundled, name
            assert (value > usual) == (name in LOOSER), name
    assert isinstance(starter.max_rows, dict) and set(starter.max_rows) == {"train"}
    assert starter.clean.drop_leaked == "train"  # a leak is dropped from train, not fatal
