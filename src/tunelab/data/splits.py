"""Deterministic, seeded train / validation / test splits.

Rows are grouped by their normalised text, so duplicates always land in the same
split. Within each label (classification) groups are ordered by a seeded hash and
cut by the configured fractions: the split is stratified, reproducible, and adding
rows moves few existing ones. The source's own splits are kept when it has them. A
per-split row cap samples after splitting, so the splits it does not name stay whole.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from tunelab.config import DataConfig
from tunelab.data.schema import SOURCE_ROW, example_keys
from tunelab.data.sources import WHOLE
from tunelab.errors import SplitError

SPLITS = ("train", "validation", "test")


def make_splits(frames: dict[str, pd.DataFrame], cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """Return train/validation/test frames from whatever splits the source had, capped
    per split when data.max_rows names splits."""
    fractions = cfg.splits
    if set(frames) == {WHOLE}:
        wanted = {
            "train": fractions.train,
            "validation": fractions.validation,
            "test": fractions.test,
        }
        return cap_splits(_split(frames[WHOLE], wanted, cfg, where="the dataset"), cfg)
    out = {name: frame.reset_index(drop=True) for name, frame in frames.items()}
    if "test" not in out:
        # Carve test (and validation, if missing too) out of train.
        wanted = {"train": fractions.train, "test": fractions.test}
        if "validation" not in out:
            wanted["validation"] = fractions.validation
        carved = _split(out.pop("train"), wanted, cfg, where="the train split")
        out.update(carved)
    elif "validation" not in out:
        if fractions.validation > 0:
            share = fractions.validation / (fractions.train + fractions.validation)
            wanted = {"train": 1 - share, "validation": share}
            out.update(_split(out.pop("train"), wanted, cfg, where="the train split"))
        else:
            out["validation"] = out["train"].iloc[0:0]
    return cap_splits({name: out[name] for name in SPLITS}, cfg)


def cap_splits(frames: dict[str, pd.DataFrame], cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """Apply a per-split data.max_rows ({train: N}) after splitting: splits it does not
    name stay whole. One number was already applied to the whole data set at ingest."""
    if not isinstance(cfg.max_rows, dict):
        return frames
    out = dict(frames)
    for name, cap in cfg.max_rows.items():
        if name in out and len(out[name]) > cap:
            out[name] = _sample(out[name], cap, cfg)
    return out


def _sample(frame: pd.DataFrame, n: int, cfg: DataConfig) -> pd.DataFrame:
    """n rows drawn with data.seed; for classification each label keeps its share."""
    if cfg.task != "classification":
        chosen = frame.sample(n=n, random_state=cfg.seed)
    else:
        strata = frame["label"].fillna("<null>")
        sizes = strata.value_counts().sort_index()
        quotas = _quotas(sizes, n)
        chosen = pd.concat(
            frame[strata == label].sample(n=quotas[label], random_state=cfg.seed)
            for label in sizes.index
            if quotas[label] > 0
        )
    return chosen.sort_values(SOURCE_ROW).reset_index(drop=True)


def _quotas(sizes: pd.Series, n: int) -> dict[str, int]:
    """Largest-remainder shares of n by label size; every label keeps a row while n allows."""
    exact = sizes * n / sizes.sum()
    quotas = exact.astype(int)
    for label in (exact - quotas).sort_values(ascending=False, kind="stable").index:
        if quotas.sum() >= n:
            break
        quotas[label] += 1
    for label in sizes.index:
        if quotas[label] == 0 and (quotas > 1).any():
            # A rare label would vanish from the capped split: take a row from the largest.
            quotas[quotas.idxmax()] -= 1
            quotas[label] = 1
    return {label: int(q) for label, q in quotas.items()}


def _split(
    frame: pd.DataFrame, wanted: dict[str, float], cfg: DataConfig, where: str
) -> dict[str, pd.DataFrame]:
    active = {name: share for name, share in wanted.items() if share > 0}
    keys = example_keys(frame, cfg.task)
    strata = frame["label"].fillna("<null>") if cfg.task == "classification" else None
    groups = pd.DataFrame({"key": keys, "stratum": strata if strata is not None else "all"})
    # One row per distinct example; its first label stands for the group.
    firsts = groups.drop_duplicates("key")
    assignment: dict[str, str] = {}
    for stratum, members in firsts.groupby("stratum", sort=True):
        ordered = sorted(members["key"], key=lambda k: _rank(cfg.seed, k))
        counts = _counts(len(ordered), active, stratum, cfg, where)
        start = 0
        for name, count in counts.items():
            for key in ordered[start : start + count]:
                assignment[key] = name
            start += count
    split_of_row = keys.map(assignment)
    result = {}
    for name in SPLITS:
        part = frame[split_of_row == name] if name in active else frame.iloc[0:0]
        result[name] = part.sort_values(SOURCE_ROW).reset_index(drop=True)
    return {name: result[name] for name in wanted}


def _counts(
    n: int, active: dict[str, float], stratum: str, cfg: DataConfig, where: str
) -> dict[str, int]:
    """Rows per split for one stratum: every active split gets at least one, train the rest."""
    if n < len(active):
        what = f"label '{stratum}'" if cfg.task == "classification" else "it"
        raise SplitError(
            f"Cannot split {where} of dataset '{cfg.name}': {what} has {n} distinct "
            f"example(s) but the splits {list(active)} need at least {len(active)} "
            "(one each). Add rows, or drop a split (e.g. data.splits.validation=0 with "
            "train=0.9)."
        )
    total = sum(active.values())
    counts = {
        name: max(1, round(n * share / total)) for name, share in active.items() if name != "train"
    }
    counts["train"] = n - sum(counts.values())
    if counts["train"] < 1:
        raise SplitError(
            f"Cannot split {where} of dataset '{cfg.name}': with {n} distinct examples"
            f"{f' of label {stratum!r}' if cfg.task == 'classification' else ''}, nothing is "
            "left for training. Add rows or lower the validation/test fractions."
        )
    return {"train": counts.pop("train"), **counts}


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()
