"""The milestone plan: which methods run on which datasets, read from one YAML file.

```yaml
title: Milestone review
concurrency: 1                 # methods of one dataset trained at once (1 on a CPU)
runner: thread                 # or dask / ray, or {kind, address, workers}: pipeline.runner
datasets:
  sentiment:
    majority: sentiment-majority.yaml          # a run config, relative to this file
    lora: {config: sentiment-lora.yaml, set: [train.epochs=2], required: true}
  preferences:
    dpo: {config: preferences-dpo.yaml, init_from: instructions/lora}
    reward: preferences-reward.yaml
  prompts:                     # RL from the SFT run against the reward model above
    grpo:
      config: prompts-grpo.yaml
      init_from: instructions/lora
      reward_from: preferences/reward
  reviews:                     # shared sections: list the methods under `methods:`
    data: {source: bundled:sentiment, max_rows: {train: 300}}
    set: [train.seed=7]
    methods:
      tfidf: sentiment-tfidf.yaml
      lora: {config: sentiment-lora.yaml, set: [train.epochs=2]}
```

Top-level keys starting with ``x-`` are ignored: they hold YAML anchors to reuse.
``init_from: DATASET/METHOD`` starts a DPO or GRPO policy from that method's run output
(an SFT or LoRA run listed earlier); ``reward_from: DATASET/METHOD`` rewards a GRPO policy
with that reward model's run (train.method=reward, listed earlier), in place of the
config's ``model:`` reward (or as one more reward when it has none). ``required: false``
lets the pipeline end Completed when that method fails. A dataset's shared ``data``
section is merged over each method's config (its ``name`` defaults to the dataset's),
then the shared ``set`` and the method's own ``set`` apply, in that order; a method
listed there may have no ``config`` (it starts from the defaults). Each method's run
config is parsed once, here, and travels with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tunelab import config as config_mod
from tunelab.config import DataConfig, RunConfig
from tunelab.errors import ConfigError
from tunelab.pipeline.runner import RunnerSpec, runner_spec

METHOD_KEYS = {"config", "set", "required", "init_from", "reward_from"}
DATASET_KEYS = {"data", "set", "methods"}
TOP_KEYS = {"title", "concurrency", "runner", "datasets"}


@dataclass(frozen=True)
class MethodSpec:
    dataset: str
    name: str
    config_path: Path | None  # None: the defaults plus the dataset's shared sections
    cfg: RunConfig  # the run config with the plan's overrides applied, parsed once
    overrides: tuple[str, ...] = ()
    required: bool = True
    init_from: str | None = None  # "dataset/method"
    reward_from: str | None = None  # "dataset/method", a reward model for GRPO

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.name}"

    @property
    def waits_for(self) -> list[str]:
        """The methods whose runs this one needs (init_from, reward_from)."""
        return [m for m in (self.init_from, self.reward_from) if m]

    def config_for(self, init_dir: str | None, reward_dir: str | None = None) -> RunConfig:
        """The run config; a policy starts from ``init_dir`` (its init_from's run), a GRPO
        policy is rewarded by ``reward_dir`` (its reward_from's run)."""
        train = self.cfg.train
        updates = {}
        if init_dir is not None:
            section = "grpo" if train.method == "grpo" else "dpo"
            updates[section] = getattr(train, section).model_copy(update={"init_from": init_dir})
        if reward_dir is not None:
            grpo = updates.get("grpo", train.grpo)
            updates["grpo"] = grpo.model_copy(update={"rewards": _with_reward(grpo, reward_dir)})
        if not updates:
            return self.cfg
        return self.cfg.model_copy(update={"train": train.model_copy(update=updates)})


@dataclass(frozen=True)
class DatasetPlan:
    name: str
    methods: list[MethodSpec]


@dataclass(frozen=True)
class Plan:
    path: Path
    title: str
    concurrency: int
    datasets: list[DatasetPlan] = field(default_factory=list)
    runner: RunnerSpec = RunnerSpec()  # where the methods run; the CLI may override it

    def methods(self) -> list[MethodSpec]:
        return [m for d in self.datasets for m in d.methods]

    def independent(self) -> list[MethodSpec]:
        """Methods that start from a model: they may all run at once."""
        return [m for m in self.methods() if not m.waits_for]

    def dependent(self) -> list[MethodSpec]:
        """Methods that need another method's run (init_from, reward_from): they wait."""
        return [m for m in self.methods() if m.waits_for]

    def data_configs(self) -> list[RunConfig]:
        """One config per dataset (its first method's) for the data preparation step."""
        return [d.methods[0].cfg for d in self.datasets]

    def subset(self, names: list[str]) -> Plan:
        """The plan restricted to the named datasets (in plan order)."""
        return replace(self, datasets=[d for d in self.datasets if d.name in names])

    def find(self, label: str) -> MethodSpec:
        for method in self.methods():
            if method.label == label:
                return method
        raise ConfigError(f"{self.path}: no method '{label}'. Methods: {self._labels()}.")

    def _labels(self) -> str:
        return ", ".join(m.label for m in self.methods())


def load_plan(path: str | Path) -> Plan:
    """Read and check a milestone YAML: every config exists, names its dataset, loads."""
    path = Path(path)
    raw = config_mod.read_mapping(path, "Milestone config", "configs/milestone.yaml")
    if not isinstance(raw.get("datasets"), dict):
        raise ConfigError(
            f"Milestone config {path} needs a 'datasets' mapping: dataset name -> methods "
            "(method name -> run config). See configs/milestone.yaml."
        )
    # Keys starting with "x-" hold YAML anchors for reuse (as in compose files).
    unknown = {k for k in raw if not str(k).startswith("x-")} - TOP_KEYS
    if unknown:
        raise ConfigError(
            f"Milestone config {path}: unknown keys {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}."
        )
    concurrency = raw.get("concurrency", 1)
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"{path}: concurrency must be a whole number >= 1, got {concurrency!r}.")
    datasets = [_dataset(path, name, entry) for name, entry in raw["datasets"].items()]
    runner = runner_spec(raw.get("runner"), f"Milestone config {path}")
    plan = Plan(path, str(raw.get("title", "Milestone review")), concurrency, datasets, runner)
    _check(plan)
    return plan


@dataclass(frozen=True)
class _Shared:
    """What a dataset states once for all its methods."""

    data: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()


def _dataset(path: Path, name: str, raw: Any) -> DatasetPlan:
    where = f"{path}: datasets.{name}"
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where} needs a mapping of method name -> run config.")
    if not _has_shared_sections(raw):
        return DatasetPlan(name, _methods(path, name, raw, _Shared()))
    unknown = set(raw) - DATASET_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)}; with 'methods:' a dataset allows "
            f"{sorted(DATASET_KEYS)} (list every method under 'methods')."
        )
    return DatasetPlan(name, _methods(path, name, raw["methods"], _shared(where, name, raw)))


def _has_shared_sections(raw: dict[str, Any]) -> bool:
    # Today's format lists methods directly; a method could itself be called "methods".
    methods = raw.get("methods")
    return isinstance(methods, dict) and "config" not in methods


def _shared(where: str, dataset: str, raw: dict[str, Any]) -> _Shared:
    data = raw.get("data") or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}.data must be a mapping of data keys (source, task, columns, max_rows, "
            f"...), got {type(data).__name__}."
        )
    unknown = sorted(set(data) - set(DataConfig.model_fields))
    if unknown:
        raise ConfigError(
            f"{where}.data: unknown keys {unknown}; allowed: {', '.join(DataConfig.model_fields)}."
        )
    # Check the values alone; a partial `splits` only adds up once merged with a method's.
    data = {"name": dataset, **data}
    alone = {
        k: v for k, v in data.items() if k != "splits" or not isinstance(v, dict) or len(v) == 3
    }
    config_mod.from_dict({"data": alone}, where=f"{where}.data")
    overrides = raw.get("set") or []
    if not isinstance(overrides, list):
        raise ConfigError(f"{where}.set must be a list of section.key=value strings.")
    return _Shared(data, tuple(str(o) for o in overrides))


def _methods(path: Path, dataset: str, raw: Any, shared: _Shared) -> list[MethodSpec]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{path}: dataset '{dataset}' needs a mapping of method name -> run config."
        )
    specs = []
    for name, entry in raw.items():
        where = f"{path}: datasets.{dataset}.{name}"
        if isinstance(entry, str):
            entry = {"config": entry}
        config_optional = bool(shared.data)  # listed under `methods:`
        if entry is None and config_optional:
            entry = {}
        if not isinstance(entry, dict) or ("config" not in entry and not config_optional):
            hint = ""
            if name in {"data", "set"}:
                hint = f" To share '{name}' among the methods, list them under 'methods:'."
            raise ConfigError(f"{where} must be a config path or a mapping with 'config'.{hint}")
        unknown = set(entry) - METHOD_KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(METHOD_KEYS)}."
            )
        overrides = entry.get("set") or []
        if not isinstance(overrides, list):
            raise ConfigError(f"{where}.set must be a list of section.key=value strings.")
        config_path = (path.parent / entry["config"]).resolve() if "config" in entry else None
        overrides = (*shared.overrides, *(str(o) for o in overrides))
        try:
            cfg = _run_config(config_path, shared.data, overrides, f"datasets.{dataset}")
        except ConfigError as exc:
            raise ConfigError(f"{path}: method {dataset}/{name}: {exc}") from None
        specs.append(
            MethodSpec(
                dataset=dataset,
                name=str(name),
                config_path=config_path,
                cfg=cfg,
                overrides=overrides,
                required=bool(entry.get("required", True)),
                init_from=entry.get("init_from"),
                reward_from=entry.get("reward_from"),
            )
        )
    return specs


def _run_config(
    config_path: Path | None, data: dict[str, Any], overrides: tuple[str, ...], dataset: str
) -> RunConfig:
    """The method's config file (or the defaults), the shared data over it, then `set`."""
    if not data:
        return config_mod.load(config_path, list(overrides))
    raw = config_mod.merge(config_mod.load(config_path).to_dict(), {"data": data})
    config_mod.apply_overrides(raw, list(overrides))
    source = config_path.name if config_path else "defaults"
    return config_mod.from_dict(raw, where=f"{source} with the shared data of {dataset}")


def _check(plan: Plan) -> None:
    """Every config loads and trains the dataset it is listed under; init_from is earlier."""
    seen: set[str] = set()
    for method in plan.methods():
        cfg = method.cfg
        if cfg.data.name != method.dataset:
            source = method.config_path.name if method.config_path else "the defaults"
            raise ConfigError(
                f"{plan.path}: method {method.label} uses {source}, which "
                f"trains dataset '{cfg.data.name}', not '{method.dataset}'. List it under "
                f"'{cfg.data.name}' or set data.name."
            )
        if method.init_from:
            if method.init_from not in seen:
                raise ConfigError(
                    f"{plan.path}: method {method.label} has init_from={method.init_from}, "
                    "which must name a method listed before it (DATASET/METHOD). Listed "
                    f"before it: {sorted(seen) or 'none'}."
                )
            if cfg.train.method not in ("dpo", "grpo"):
                raise ConfigError(
                    f"{plan.path}: init_from is for policy methods (dpo, grpo); "
                    f"{method.label} trains {cfg.train.method}."
                )
        if method.reward_from:
            _check_reward_from(plan, method, seen)
        seen.add(method.label)
    for dataset in plan.datasets:
        first = dataset.methods[0]
        for method in dataset.methods[1:]:
            differences = _differences(first.cfg.data, method.cfg.data)
            if differences:
                raise ConfigError(
                    f"{plan.path}: the methods of dataset '{dataset.name}' describe its data "
                    f"differently: {method.label} differs from {first.label} in "
                    f"{'; '.join(differences)}. Every method of a dataset must train on the "
                    "same prepared data: state it once in the dataset's shared 'data:' "
                    "section (methods listed under 'methods:')."
                )


def _check_reward_from(plan: Plan, method: MethodSpec, seen: set[str]) -> None:
    if method.cfg.train.method != "grpo":
        raise ConfigError(
            f"{plan.path}: reward_from is for GRPO methods; {method.label} trains "
            f"{method.cfg.train.method}."
        )
    if method.reward_from not in seen:
        raise ConfigError(
            f"{plan.path}: method {method.label} has reward_from={method.reward_from}, which "
            "must name a method listed before it (DATASET/METHOD). Listed before it: "
            f"{sorted(seen) or 'none'}."
        )
    source = plan.find(method.reward_from)
    if source.cfg.train.method != "reward":
        raise ConfigError(
            f"{plan.path}: method {method.label} has reward_from={method.reward_from}, which "
            f"trains {source.cfg.train.method}, not a reward model (train.method=reward)."
        )


def _with_reward(grpo, reward_dir: str) -> list:
    """The GRPO rewards with every ``model:`` reward pointing at ``reward_dir`` (one is
    added, weight 1, when there is none)."""
    from tunelab.config import RewardSource

    rewards = [
        r.model_copy(update={"model": reward_dir}) if r.kind == "model" else r for r in grpo.rewards
    ]
    if not any(r.kind == "model" for r in rewards):
        rewards.append(RewardSource(model=reward_dir))
    return rewards


def _differences(first: DataConfig, other: DataConfig) -> list[str]:
    """The data keys two configs disagree on, e.g. ``data.max_rows: None vs 100``."""
    return _diff(first.model_dump(mode="json"), other.model_dump(mode="json"), "data.")


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str) -> list[str]:
    found = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += _diff(left, right, f"{prefix}{key}.")
        elif left != right:
            found.append(f"{prefix}{key}: {left!r} vs {right!r}")
    return found
