from pathlib import Path

import pytest

from tunelab import config
from tunelab.errors import ConfigError

CONFIGS_DIR = Path(__file__).parents[2] / "configs"
# Run configs; milestone plans (a `datasets:` mapping) are tested in test_milestone_plan,
# accelerate's launch configs (configs/accelerate/) in test_distributed.
CONFIGS = sorted(
    p
    for p in CONFIGS_DIR.rglob("*.yaml")
    if "datasets:" not in p.read_text() and "accelerate" not in p.relative_to(CONFIGS_DIR).parts
)


def test_a_milestone_plan_given_as_a_run_config_says_what_it_is():
    with pytest.raises(ConfigError, match=r"milestone plan.*tunelab run"):
        config.load(CONFIGS_DIR / "milestone.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(CONFIGS_DIR).as_posix())
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    cfg = config.load(path)
    assert cfg.data.name
    dumped = tmp_path / path.name
    dumped.write_text(cfg.to_yaml())
    assert config.load(dumped) == cfg


def test_overrides_parse_values_as_yaml():
    cfg = config.load(None, ["data.max_rows=200", "data.labels=[a, b]", "train.epochs=0.5"])
    assert cfg.data.max_rows == 200
    assert cfg.data.labels == ["a", "b"]
    assert cfg.train.epochs == 0.5


def test_unknown_key_names_key_and_allowed_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  nmae: x\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert "data.nmae" in message
    assert "name" in message and "source" in message
    assert str(path) in message


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        config.load(None, ["trian.epochs=1"])


def test_invalid_value_names_allowed_values():
    with pytest.raises(ConfigError) as err:
        config.load(None, ["data.task=regression"])
    assert "data.task" in str(err.value)
    assert "'classification', 'generation', 'chat', 'preference' or 'prompts'" in str(err.value)


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="add up to 1"):
        config.load(None, ["data.splits={train: 0.5, validation: 0.1, test: 0.1}"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        config.load(None, ["data.max_rows"])


def test_base_is_merged_section_by_section(tmp_path):
    (tmp_path / "base.yaml").write_text("data:\n  name: one\n  max_rows: 10\ntrain:\n  epochs: 2\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ndata:\n  name: two\n")
    cfg = config.load(tmp_path / "child.yaml")
    assert (cfg.data.name, cfg.data.max_rows, cfg.train.epochs) == ("two", 10, 2)


def test_base_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        config.load(tmp_path / "a.yaml")


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        config.load("nope.yaml")


def test_section_hash_changes_only_with_its_section():
    a = config.load(None)
    b = config.load(None, ["train.epochs=3"])
    assert a.section_hash("data") == b.section_hash("data")
    assert a.section_hash("train") != b.section_hash("train")


def test_every_field_has_help_text():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no help text"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, config.BaseModel):
                walk(annotation)

    walk(config.RunConfig)
