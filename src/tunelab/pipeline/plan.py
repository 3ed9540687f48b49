"""The milestone plan: which methods run on which datasets, read from one YAML file.

```yaml
title: Milestone review
concurrency: 1                 # methods of one dataset trained at once (1 on a CPU)
datasets:
  sentiment:
    majority: sentiment-majority.yaml          # a run config, relative to this file
    lora: {config: sentiment-lora.yaml, set: [train.epochs=2], required: true}
  preferences:
    dpo: {config: preferences-dpo.yaml, init_from: instructions/lora}
```

Top-level keys starting with ``x-`` are ignored: they hold YAML anchors to reuse.
``init_from: DATASET/METHOD`` starts a DPO policy from that method's run output (an SFT
or LoRA run listed earlier). ``required: false`` lets the pipeline end Completed when
that method fails. Each method's run config is parsed once, here, and travels with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tunelab import config as config_mod
from tunelab.config import RunConfig
from tunelab.errors import ConfigError

METHOD_KEYS = {"config", "set", "required", "init_from"}
TOP_KEYS = {"title", "concurrency", "datasets"}


@dataclass(frozen=True)
class MethodSpec:
    dataset: str
    name: str
    config_path: Path
    cfg: RunConfig  # the run config with the plan's overrides applied, parsed once
    overrides: tuple[str, ...] = ()
    required: bool = True
    init_from: str | None = None  # "dataset/method"

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.name}"

    def config_for(self, init_dir: str | None) -> RunConfig:
        """The run config; a DPO method starts from ``init_dir`` (its init_from's run)."""
        if init_dir is None:
            return self.cfg
        dpo = self.cfg.train.dpo.model_copy(update={"init_from": init_dir})
        return self.cfg.model_copy(update={"train": self.cfg.train.model_copy(update={"dpo": dpo})})


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

    def methods(self) -> list[MethodSpec]:
        return [m for d in self.datasets for m in d.methods]

    def independent(self) -> list[MethodSpec]:
        """Methods that start from a model: they may all run at once."""
        return [m for m in self.methods() if not m.init_from]

    def dependent(self) -> list[MethodSpec]:
        """Methods that start from another method's run (DPO's init_from): they wait."""
        return [m for m in self.methods() if m.init_from]

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
    datasets = [
        DatasetPlan(name, _methods(path, name, methods))
        for name, methods in raw["datasets"].items()
    ]
    plan = Plan(path, str(raw.get("title", "Milestone review")), concurrency, datasets)
    _check(plan)
    return plan


def _methods(path: Path, dataset: str, raw: Any) -> list[MethodSpec]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{path}: dataset '{dataset}' needs a mapping of method name -> run config."
        )
    specs = []
    for name, entry in raw.items():
        where = f"{path}: datasets.{dataset}.{name}"
        if isinstance(entry, str):
            entry = {"config": entry}
        if not isinstance(entry, dict) or "config" not in entry:
            raise ConfigError(f"{where} must be a config path or a mapping with 'config'.")
        unknown = set(entry) - METHOD_KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(METHOD_KEYS)}."
            )
        overrides = entry.get("set") or []
        if not isinstance(overrides, list):
            raise ConfigError(f"{where}.set must be a list of section.key=value strings.")
        config_path = (path.parent / entry["config"]).resolve()
        overrides = tuple(str(o) for o in overrides)
        try:
            cfg = config_mod.load(config_path, list(overrides))
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
            )
        )
    return specs


def _check(plan: Plan) -> None:
    """Every config loads and trains the dataset it is listed under; init_from is earlier."""
    seen: set[str] = set()
    for method in plan.methods():
        cfg = method.cfg
        if cfg.data.name != method.dataset:
            raise ConfigError(
                f"{plan.path}: method {method.label} uses {method.config_path.name}, which "
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
            if cfg.train.method != "dpo":
                raise ConfigError(
                    f"{plan.path}: init_from is for DPO methods; {method.label} trains "
                    f"{cfg.train.method}."
                )
        seen.add(method.label)
    for dataset in plan.datasets:
        first = dataset.methods[0].cfg.data
        for method in dataset.methods[1:]:
            if method.cfg.data != first:
                raise ConfigError(
                    f"{plan.path}: the methods of dataset '{dataset.name}' describe its data "
                    f"differently ({dataset.methods[0].label} vs {method.label}): every "
                    "method of a dataset must train on the same prepared data."
                )
