"""The rewards a GRPO policy is tuned against (train.grpo.rewards), resolved and checked
before any model loads, then loaded once and scored on (prompt, completion) texts.

- ``model``: a reward model tunelab trained (train.method=reward), registered
  (NAME@ALIAS, NAME/VERSION, models:/...) or a run folder; its raw score of the prompt and
  completion, framed as it was trained (``packaging.reward_input``).
- ``classifier`` + ``label``: a registered classifier's probability of that label for the
  completion (e.g. sentiment-classifier@champion: positive, to write positive reviews).
- ``regex``: 1 when the completion matches, else 0 (a format rule).
- ``min_words``/``max_words``: 1 when the completion's word count is within the bounds.

Registered models are read through tunelab's own loaders, which never run code stored with
a model. What pins each reward (the registered version and its run, a folder's record, the
rule) is part of the run's fingerprint, so a moved alias trains a new run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import RewardSource, RunConfig
from tunelab.errors import TrainingError

MODELS_URI = "models:/"
# The version tag a registered classifier's labels are kept in (registry.register).
LABELS_TAG = "labels"


class RewardSourceError(TrainingError):
    """A reward of train.grpo.rewards names something that cannot be used."""


@dataclass(frozen=True)
class Reward:
    """One resolved reward: what the config named and exactly what it will use."""

    name: str  # metrics reward_<name>, trl's rewards/<name>/mean
    kind: str  # "model" | "classifier" | "regex" | "length"
    weight: float
    shown: str  # as configured, e.g. "sentiment-classifier@champion: positive"
    pin: str  # what it resolved to, e.g. "sentiment-classifier/3 (run 1a2b...)"
    source: RewardSource
    registered: tuple[str, str] | None = None  # (model name, version)
    folder: str | None = None  # a run folder's model (merged/ or model/)
    labels: tuple[str, ...] | None = None  # a registered classifier's, when recorded


def resolve(cfg: RunConfig) -> list[Reward]:
    """Every configured reward, its references checked (registry, folders, labels);
    RewardSourceError naming the reward and what to do. Loads no model."""
    sources = cfg.train.grpo.rewards
    if not sources:
        raise RewardSourceError(
            "train.method=grpo needs at least one reward in train.grpo.rewards, e.g. "
            "{classifier: sentiment-classifier@champion, label: positive}, "
            "{model: preferences-reward@champion}, {regex: '\\byes\\b'} or {max_words: 40}."
        )
    rewards = [_resolve_one(s, i) for i, s in enumerate(sources)]
    seen: dict[str, int] = {}
    named = []
    for reward in rewards:
        count = seen[reward.name] = seen.get(reward.name, 0) + 1
        name = reward.name if count == 1 else f"{reward.name}_{count}"
        named.append(_replace(reward, name=name))
    return named


def pins(cfg: RunConfig) -> list[str]:
    """What pins each reward, for the run's fingerprint."""
    return [f"{r.name}={r.pin}" for r in resolve(cfg)]


def _replace(reward: Reward, **changes: Any) -> Reward:
    from dataclasses import replace

    return replace(reward, **changes)


def _resolve_one(source: RewardSource, index: int) -> Reward:
    where = f"train.grpo.rewards[{index}]"
    kind = source.kind
    if kind == "regex":
        flags = "i" if source.ignore_case else ""
        return Reward(
            source.name or "format",
            kind,
            source.weight,
            f"regex {source.regex!r}",
            f"regex:{flags}:{source.regex}",
            source,
        )
    if kind == "length":
        bounds = f"{source.min_words or 0}-{source.max_words or 'inf'} words"
        return Reward(source.name or "length", kind, source.weight, bounds, bounds, source)
    reference = source.model if kind == "model" else source.classifier
    if kind == "model" and _is_folder(reference):
        folder, pin, dataset = _run_folder(reference, where)
        name = source.name or _slug(f"{dataset}-reward")
        return Reward(name, kind, source.weight, reference, pin, source, folder=folder)
    name, version, run_id, tags = _registered(reference, where)
    task, method = tags.get("task"), tags.get("method")
    if kind == "model" and method != "reward":
        raise RewardSourceError(
            f"{where}: {reference} is {name} version {version}, a {method or 'unknown'} model "
            f"on {task or 'unknown'} data, not a reward model (train.method=reward). Use "
            "`classifier:` with a label for a classifier, or name a reward model."
        )
    labels = None
    if kind == "classifier":
        if task != "classification":
            raise RewardSourceError(
                f"{where}: {reference} is {name} version {version}, trained on "
                f"{task or 'unknown'} data, not a classifier. Name a registered classifier "
                "(e.g. sentiment-classifier@champion), or use `model:` for a reward model."
            )
        labels = _labels(tags)
        if labels is not None and source.label not in labels:
            raise RewardSourceError(
                f"{where}: {reference} ({name} version {version}) has no label "
                f"'{source.label}'; its labels are {', '.join(labels)}. Set label to one "
                "of them."
            )
    shown = reference if kind == "model" else f"{reference}: {source.label}"
    default = name if kind == "model" else f"{name}-{source.label}"
    return Reward(
        source.name or _slug(default),
        kind,
        source.weight,
        shown,
        f"{name}/{version} (run {run_id})",
        source,
        registered=(name, version),
        labels=labels,
    )


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")
    return slug or "reward"


def _is_folder(reference: str) -> bool:
    """A run folder rather than a registry reference: a path that exists, or one that
    looks like a path (absolute, ./, ../, ~)."""
    if reference.startswith(MODELS_URI):
        return False
    return Path(reference).expanduser().is_dir() or reference.startswith(("/", ".", "~"))


def _run_folder(reference: str, where: str) -> tuple[str, str, str]:
    """The reward model in a run folder (merged/, else model/), what pins it, and the
    dataset it was trained on."""
    from tunelab.runs import RESULT_FILE, TrainResult
    from tunelab.runs import _folder_id as folder_id

    folder = Path(reference).expanduser()
    if not (folder / RESULT_FILE).is_file():
        raise RewardSourceError(
            f"{where}: model={reference} is not a finished tunelab run folder (no "
            f"{RESULT_FILE}). Name a run folder of train.method=reward, or a registered "
            "reward model (NAME@ALIAS)."
        )
    result = TrainResult.load(folder)
    if result.method != "reward":
        raise RewardSourceError(
            f"{where}: {reference} holds a {result.method} run on {result.task} data, not a "
            "reward model (train.method=reward)."
        )
    for name in ("merged", "model"):
        if name in result.artifacts and (folder / name / "config.json").is_file():
            return str(folder / name), folder_id(folder, RESULT_FILE), result.dataset
    raise RewardSourceError(
        f"{where}: the reward run in {reference} saved no merged or full model (only "
        f"{', '.join(result.artifacts) or 'nothing'}); re-train it with "
        "train.adapter.merge=true."
    )


def _registered(reference: str, where: str) -> tuple[str, str, str, dict[str, str]]:
    """(name, version, run id, version tags) of a registry reference, or a clear error."""
    import mlflow

    from tunelab.errors import RegistryError
    from tunelab.lifecycle.predict import resolve
    from tunelab.lifecycle.tracking import Tracking

    try:
        mv = resolve(Tracking(mlflow.get_registry_uri()), reference.removeprefix(MODELS_URI))
    except RegistryError as exc:  # no such reference, model, alias or version
        raise RewardSourceError(f"{where}: {exc}") from None
    return mv.name, str(mv.version), str(mv.run_id), dict(mv.tags or {})


def _labels(tags: dict[str, str]) -> tuple[str, ...] | None:
    import json

    text = tags.get(LABELS_TAG)
    if not text:
        return None
    try:
        return tuple(str(label) for label in json.loads(text))
    except ValueError:
        return None


# ---------------------------------------------------------------- scoring


@dataclass
class Scorers:
    """The loaded rewards: ``score`` gives each reward's value per (prompt, completion)."""

    rewards: list[Reward]
    _models: dict[str, Any] = field(default_factory=dict)

    def score(self, prompts: list[str], completions: list[str]) -> dict[str, list[float]]:
        return {r.name: self.score_one(r, prompts, completions) for r in self.rewards}

    def total(self, scores: dict[str, list[float]]) -> list[float]:
        """The weighted sum the policy is trained on, per completion."""
        n = len(next(iter(scores.values()))) if scores else 0
        return [sum(r.weight * scores[r.name][i] for r in self.rewards) for i in range(n)]

    def score_one(self, reward: Reward, prompts: list[str], completions: list[str]) -> list[float]:
        source = reward.source
        if reward.kind == "regex":
            flags = re.IGNORECASE if source.ignore_case else 0
            pattern = re.compile(source.regex, flags)
            return [1.0 if pattern.search(c) else 0.0 for c in completions]
        if reward.kind == "length":
            low, high = source.min_words or 0, source.max_words
            return [
                1.0 if low <= len(c.split()) and (high is None or len(c.split()) <= high) else 0.0
                for c in completions
            ]
        model = self._models[reward.name]
        if reward.kind == "model":
            return _reward_model_scores(model, prompts, completions)
        return _label_probabilities(model, completions, source.label, reward)


def load(rewards: list[Reward]) -> Scorers:
    """Load every model a reward needs (on the CPU), checking a classifier's labels."""
    from tunelab.lifecycle import packaging, safe_load

    scorers = Scorers(rewards)
    for reward in rewards:
        if reward.kind not in ("model", "classifier"):
            continue
        if reward.folder is not None:
            pipe = safe_load.load_pipeline(
                Path(reward.folder), Path(reward.folder), "text-classification", reward.shown
            )
            model = packaging.text_pipeline(pipe, "reward")
        else:
            name, version = reward.registered
            model = packaging.load_registered(name, version, f"models:/{name}/{version}").model
        if reward.kind == "classifier":
            labels = classifier_labels(model)
            if reward.source.label not in labels:
                raise RewardSourceError(
                    f"{reward.shown}: the classifier has no label '{reward.source.label}'; its "
                    f"labels are {', '.join(labels)}. Set label to one of them."
                )
        scorers._models[reward.name] = model
    return scorers


def classifier_labels(model) -> list[str]:
    """The labels of a loaded classifier (TF-IDF pipeline or transformers pipeline)."""
    pipeline = getattr(model, "pipeline", None)
    if pipeline is not None:  # packaging.TextClassifier
        return [str(c) for c in pipeline.classes_]
    id2label = model.pipe.model.config.id2label or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def _label_probabilities(model, texts: list[str], label: str, reward: Reward) -> list[float]:
    pipeline = getattr(model, "pipeline", None)
    if pipeline is not None:
        classes = [str(c) for c in pipeline.classes_]
        proba = pipeline.predict_proba(list(texts))
        return [float(p) for p in proba[:, classes.index(label)]]
    outputs = model.pipe(list(texts), top_k=None, truncation=True)
    scores = []
    for row in outputs:
        found = {str(item["label"]): float(item["score"]) for item in row}
        if label not in found:
            raise RewardSourceError(f"{reward.shown}: the classifier gave no '{label}' score.")
        scores.append(found[label])
    return scores


def _reward_model_scores(model, prompts: list[str], completions: list[str]) -> list[float]:
    """The reward model's raw score of each prompt and completion, framed as a conversation
    the way it was trained (``packaging.reward_input``), in one batch per framing."""
    from tunelab.lifecycle.packaging import reward_example, reward_input

    framed = [
        reward_input(model.pipe.tokenizer, reward_example(p, c))
        for p, c in zip(prompts, completions, strict=True)
    ]
    scores = [0.0] * len(framed)
    groups: dict[str, list[int]] = {}
    for i, (_, settings) in enumerate(framed):
        groups.setdefault(repr(sorted(settings.items())), []).append(i)
    for rows in groups.values():
        settings = framed[rows[0]][1]
        inputs = [framed[i][0] for i in rows]
        out = model.pipe(inputs, function_to_apply="none", batch_size=len(inputs), **settings)
        for i, item in zip(rows, out, strict=True):
            scores[i] = float((item[0] if isinstance(item, list) else item)["score"])
    return scores


# ---------------------------------------------------------------- trl's reward functions


def trl_functions(scorers: Scorers) -> list:
    """One function per reward in trl's form ``f(prompts, completions, **kw) -> list``,
    named after the reward (trl logs rewards/<name>/mean); weights go to trl's
    reward_weights, so trl's total is the weighted sum tunelab evaluates."""
    return [_TrlReward(scorers, reward) for reward in scorers.rewards]


class _TrlReward:
    def __init__(self, scorers: Scorers, reward: Reward):
        self.scorers, self.reward = scorers, reward
        self.__name__ = reward.name

    def __call__(self, prompts, completions, **_: Any) -> list[float]:
        return self.scorers.score_one(
            self.reward, [text_of(p, "user") for p in prompts], [text_of(c) for c in completions]
        )


def text_of(value, role: str = "assistant") -> str:
    """Plain text of a trl prompt or completion: a string, or the last message of ``role``
    in a conversation."""
    if isinstance(value, str):
        return value
    messages = [m for m in value if m.get("role") == role] or list(value)
    return str(messages[-1]["content"]) if messages else ""
