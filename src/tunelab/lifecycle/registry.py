"""The MLflow model registry: register evaluated runs, list versions, move aliases.

Aliases: ``challenger`` (the newest version that was not promoted), ``champion`` (what
``models:/NAME@champion`` serves), ``previous`` (the champion before the last promotion,
for rollback). Alias moves are always the last step of an operation and are read back;
a failure before them leaves every alias where it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.config import RunConfig
from tunelab.errors import RegistryError
from tunelab.lifecycle import gate, model_card
from tunelab.lifecycle.tracking import TrackedRun, Tracking, call, mlflow_client
from tunelab.runs import TrainResult
from tunelab.scorecard import Scorecard

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
ROLE = {"classification": "classifier", "generation": "generator", "preference": "policy"}


def model_name(cfg: RunConfig) -> str:
    """registry.model_name, else '<dataset>-<role>' (sentiment-classifier, ...)."""
    return cfg.registry.model_name or f"{cfg.data.name}-{ROLE[cfg.data.task]}"


# ---------------------------------------------------------------- registering


def register(
    tracking: Tracking,
    cfg: RunConfig,
    result: TrainResult,
    card: Scorecard,
    tracked: TrackedRun,
) -> str:
    """Create a new version of the run's model (with tags and model card); returns it.

    Refused for runs whose evaluation failed or that have no servable model.
    """
    name = model_name(cfg)
    if not card.ok:
        raise RegistryError(
            f"Refusing to register the {card.method} run {tracked.run_id} as {name}: its "
            f"evaluation failed ({card.error}). Fix the run and train it again."
        )
    if tracked.model_uri is None:
        raise RegistryError(
            f"Refusing to register the {card.method} run {tracked.run_id} as {name}: it has "
            f"no servable model ({card.not_servable or 'no model was logged'})."
        )
    client = mlflow_client()
    _ensure_registered_model(tracking, name, cfg)
    level = round(card.ci_level * 100)
    tags = {
        "method": card.method,
        "base_model": result.model,
        "data_version": result.data_version or "unrecorded",
        "test_split": card.test_split or "unrecorded",
        "run_id": tracked.run_id,
        "primary_metric": card.primary_metric,
        card.primary_metric: f"{card.primary:.6g}",
        f"{card.primary_metric}_ci{level}": f"[{card.ci_low:.4g}, {card.ci_high:.4g}]",
    }
    description = model_card.render(result, card, run_id=tracked.run_id)
    version = call(
        tracking,
        f"register a version of {name}",
        lambda: client.create_model_version(
            name,
            source=tracked.model_uri,
            run_id=tracked.run_id,
            tags=tags,
            description=description,
            run_link=tracked.run_url,
            model_id=tracked.model_id,
        ),
    )
    return str(version.version)


def _ensure_registered_model(tracking: Tracking, name: str, cfg: RunConfig) -> None:
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    try:
        call(tracking, f"look up {name}", lambda: client.get_registered_model(name))
    except MlflowException:
        call(
            tracking,
            f"create registered model {name}",
            lambda: client.create_registered_model(
                name,
                tags={"dataset": cfg.data.name, "task": cfg.data.task},
                description=f"{cfg.data.task} models trained on dataset '{cfg.data.name}' "
                f"by tunelab. Serve `models:/{name}@{CHAMPION}`.",
            ),
        )


# ---------------------------------------------------------------- reading


def aliases(tracking: Tracking, name: str) -> dict[str, str]:
    """alias -> version of a registered model; RegistryError listing models if unknown."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    try:
        model = call(tracking, f"read {name}", lambda: client.get_registered_model(name))
    except MlflowException:
        known = [m.name for m in call(tracking, "list models", client.search_registered_models)]
        raise RegistryError(
            f"No registered model named '{name}' at {tracking.shown}. Registered models: "
            f"{', '.join(sorted(known)) or 'none yet (train a model first)'}."
        ) from None
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


# ---------------------------------------------------------------- alias moves


@dataclass(frozen=True)
class AliasChange:
    name: str
    version: str
    before: dict[str, str]
    after: dict[str, str]


def apply_decision(
    tracking: Tracking, name: str, version: str, run_id: str, decision: gate.Decision
) -> AliasChange:
    """Record the decision (version tags, a note in the run), then move aliases last.

    Promoted: champion <- version, previous <- the old champion, challenger cleared.
    Not promoted: challenger <- version.
    """
    client = mlflow_client()
    before = aliases(tracking, name)
    for key, value in decision.to_tags().items():
        call(
            tracking,
            "tag the version",
            lambda k=key, v=value: client.set_model_version_tag(name, version, k, v),
        )
    note = decision.to_markdown(name, version)
    call(
        tracking,
        "write the decision note",
        lambda: client.set_tag(run_id, "mlflow.note.content", note),
    )
    call(
        tracking,
        "log the decision",
        lambda: client.log_dict(run_id, decision.to_dict(), "promotion/decision.json"),
    )
    if decision.promote or decision.forced:
        moves = {CHAMPION: version}
        if before.get(CHAMPION) and before[CHAMPION] != version:
            moves[PREVIOUS] = before[CHAMPION]
    else:
        moves = {CHALLENGER: version}
    after = _move_aliases(tracking, name, moves)
    if (decision.promote or decision.forced) and CHALLENGER in after:
        # The challenger lost its chance: a newer or better version now holds champion.
        call(
            tracking,
            "clear challenger",
            lambda: client.delete_registered_model_alias(name, CHALLENGER),
        )
        after.pop(CHALLENGER)
    return AliasChange(name, version, before, after)


def _move_aliases(tracking: Tracking, name: str, moves: dict[str, str]) -> dict[str, str]:
    """Set aliases (previous first, champion last) and verify them by reading back."""
    client = mlflow_client()
    order = [a for a in (PREVIOUS, CHALLENGER, CHAMPION) if a in moves]
    for alias in order:
        call(
            tracking,
            f"set alias {alias}",
            lambda a=alias: client.set_registered_model_alias(name, a, moves[a]),
        )
    after = aliases(tracking, name)
    wrong = {a: v for a, v in moves.items() if after.get(a) != v}
    if wrong:
        raise RegistryError(
            f"Alias moves on {name} did not stick: wanted {wrong}, the registry says "
            f"{after}. Check the registry with `tunelab registry list {name}`."
        )
    return after


def promote(tracking: Tracking, name: str, version: str, reason: str) -> AliasChange:
    """A manual promotion (--force): logged as such on the version and its run."""
    mv = version_info(tracking, name, version)
    decision = gate.Decision(
        promote=True,
        reason=f"Promoted by hand: {reason}",
        metric=mv.tags.get("primary_metric", ""),
        versus="manual decision",
        forced=True,
    )
    return apply_decision(tracking, name, version, mv.run_id, decision)


def rollback(tracking: Tracking, name: str) -> AliasChange:
    """champion <- previous; the demoted champion becomes the new 'previous'."""
    before = aliases(tracking, name)
    if PREVIOUS not in before:
        raise RegistryError(
            f"{name} has no 'previous' version to roll back to (aliases: {before or 'none'}). "
            f"Promote a version by hand with `tunelab registry promote {name} VERSION --force`."
        )
    target, demoted = before[PREVIOUS], before.get(CHAMPION)
    client = mlflow_client()
    call(
        tracking,
        "tag the rollback",
        lambda: client.set_model_version_tag(
            name, target, "gate.decision", f"restored by rollback (replacing v{demoted})"
        ),
    )
    moves = {CHAMPION: target}
    if demoted:
        moves[PREVIOUS] = demoted
    after = _move_aliases(tracking, name, moves)
    return AliasChange(name, target, before, after)


def version_info(tracking: Tracking, name: str, version: str):
    from mlflow.exceptions import MlflowException

    aliases(tracking, name)  # a clear error for an unknown model
    try:
        return call(
            tracking,
            f"read {name} v{version}",
            lambda: mlflow_client().get_model_version(name, str(version)),
        )
    except MlflowException:
        versions = [v.version for v in mlflow_client().search_model_versions(f"name = '{name}'")]
        raise RegistryError(
            f"{name} has no version {version}. Versions: {', '.join(sorted(versions, key=int))}."
        ) from None


def list_versions(tracking: Tracking, name: str | None = None) -> list[dict]:
    """One row per version: model, version, aliases, method, primary metric, decision."""
    client = mlflow_client()
    names = (
        [name]
        if name
        else [m.name for m in call(tracking, "list models", client.search_registered_models)]
    )
    rows = []
    for model in sorted(names):
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases(tracking, model).items():
            by_version.setdefault(version, []).append(alias)
        versions = call(
            tracking,
            f"list versions of {model}",
            lambda m=model: client.search_model_versions(f"name = '{m}'"),
        )
        for mv in sorted(versions, key=lambda v: int(v.version)):
            metric = mv.tags.get("primary_metric", "")
            rows.append(
                {
                    "model": model,
                    "version": str(mv.version),
                    "aliases": ", ".join(sorted(by_version.get(str(mv.version), []))),
                    "method": mv.tags.get("method", ""),
                    "metric": f"{metric} {mv.tags.get(metric, '')}".strip(),
                    "data_version": mv.tags.get("data_version", ""),
                    "decision": mv.tags.get("gate.decision", ""),
                    "run_id": mv.run_id or "",
                }
            )
    return rows


def champion_data_version(tracking: Tracking, name: str) -> str | None:
    """The data version the current champion was trained on (None: no model or champion)."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    try:
        mv = call(
            tracking,
            f"read {name}@{CHAMPION}",
            lambda: client.get_model_version_by_alias(name, CHAMPION),
        )
    except MlflowException:
        return None
    return mv.tags.get("data_version")
