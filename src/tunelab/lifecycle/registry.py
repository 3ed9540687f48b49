"""The MLflow model registry: register evaluated runs, list versions, move aliases.

Aliases: ``challenger`` (the newest version that was not promoted), ``champion`` (what
``models:/NAME@champion`` serves), ``previous`` (the champion before the last promotion,
for rollback).

What the registry shows: the registered model's description says what it is for, how a
version is promoted and where the review is (rewritten only when that text changes);
each version carries its run's lineage as tags (dataset, method, base model, data
version, config hash, git commit, run folder), and once judged, its description starts
with the gate's decision and evidence in one line.

Every move is safe to retry and leaves a recognisable state if it stops half-way.
A version is created once per run (found again by run id and source, never created
twice on a lost response) with ``gate.state=pending``. The decision is tagged on the
version, then ``gate.state`` records the intended alias moves in one write, e.g.
``moving: gate decision at 2026-...; previous=1, champion=2; before champion=1``;
aliases move last, in an order that keeps ``champion`` valid and the rollback target
recorded; then ``gate.state`` says ``done: ...``. :func:`doctor` finds what stopped
between these steps and finishes or reverts it; :func:`recover` does the safe part of
that before every registration.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime

from tunelab import markdown as md
from tunelab.config import RunConfig
from tunelab.errors import RegistryError, TrackingError
from tunelab.lifecycle import gate, model_card
from tunelab.lifecycle.tracking import (
    TAG,
    TrackedRun,
    Tracking,
    call,
    extend_run,
    mlflow_client,
)
from tunelab.redaction import redact
from tunelab.runs import TrainResult
from tunelab.scorecard import Scorecard

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
ROLE = {
    "classification": "classifier",
    "generation": "generator",
    "chat": "assistant",
    "preference": "policy",
    "prompts": "policy",
}
# Methods whose model has a role of its own, whatever the data: a reward model trained on
# preference pairs is not a policy.
METHOD_ROLE = {"reward": "reward"}
# Where a version is in its registration (one version tag, so one write changes it):
# pending -> moving (with the intended moves) -> done; "abandoned" (never judged) and
# "superseded" (its moves were overtaken) are doctor's verdicts on ones that stopped.
STATE = "gate.state"
PENDING, MOVING, DONE, ABANDONED, SUPERSEDED = (
    "pending",
    "moving",
    "done",
    "abandoned",
    "superseded",
)
DECISION = "gate.decision"
LABELS_TAG = "labels"  # a classifier version's labels, as a JSON list
DECISION_ARTIFACT = "promotion/decision.json"
# A registration's run: the same trained and evaluated run has the same key.
KEY_TAG = f"{TAG}registration_key"
# An unjudged version younger than this may belong to a registration still running
# (judging can re-score a champion for minutes): doctor leaves it alone.
PENDING_AFTER_S = 3600.0
CREATE_ATTEMPTS = 3
# The run's lineage tags (tunelab.<key>) a version carries too, under these names.
VERSION_LINEAGE = {
    "dataset": "dataset",
    "task": "task",
    "method": "method",
    "model": "base_model",
    "data_version": "data_version",
    "test_split": "test_split",
    "config_hash": "config_hash",
    "git_commit": "git_commit",
    "git_dirty": "git_dirty",
    "run_dir": "run_folder",
    "seed": "seed",
    "pipeline": "pipeline",
    "prefect_flow_run_id": "prefect_flow_run_id",
}
# The gate's numbers, logged as metrics of the version's run (full precision).
GATE_METRICS = ("challenger", "reference", "delta", "p_value")
MAX_DESCRIPTION = 5000  # what MLflow's SQL stores keep of a description


def model_name(cfg: RunConfig) -> str:
    """registry.model_name, else '<dataset>-<role>' (sentiment-classifier,
    preferences-policy, preferences-reward, ...)."""
    role = METHOD_ROLE.get(cfg.train.method) or ROLE[cfg.data.task]
    return cfg.registry.model_name or f"{cfg.data.name}-{role}"


# ---------------------------------------------------------------- registering


def register(
    tracking: Tracking,
    cfg: RunConfig,
    result: TrainResult,
    card: Scorecard,
    tracked: TrackedRun,
) -> str:
    """The version of the run's model: the one an earlier attempt created for the same
    run and source, else a new one (lineage tags, model card, ``gate.state=pending``).
    The registered model is created, or its description brought up to date, first.

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
    describe_registered_model(tracking, name, cfg, result, card)
    existing = find_version(tracking, name, tracked.run_id, tracked.model_uri)
    if existing is not None:
        return existing
    level = round(card.ci_level * 100)
    tags = {
        **version_lineage(tracking, result, card, tracked),
        "run_id": tracked.run_id,
        "primary_metric": card.primary_metric,
        card.primary_metric: f"{card.primary:.6g}",
        f"{card.primary_metric}_ci{level}": f"[{card.ci_low:.4g}, {card.ci_high:.4g}]",
        STATE: PENDING,
    }
    labels = classifier_labels(card)
    if labels:
        # What a GRPO reward can check before loading the classifier (train/rewards.py).
        tags[LABELS_TAG] = json.dumps(labels)
    description = model_card.render(result, card, run_id=tracked.run_id)
    return _create_version(tracking, name, tracked, tags, description)


def classifier_labels(card: Scorecard) -> list[str] | None:
    """Every label a classifier can give: its test predictions' probability columns
    (prob_<label>, one per class of the model), else the labels its test rows name."""
    if card.task != "classification":
        return None
    table = card.predictions()
    if table is None:
        return None
    probs = [str(c).removeprefix("prob_") for c in table.columns if str(c).startswith("prob_")]
    return probs or model_card.labels_of(card)


def version_lineage(
    tracking: Tracking, result: TrainResult, card: Scorecard, tracked: TrackedRun
) -> dict[str, str]:
    """The version's lineage tags: the run's own (VERSION_LINEAGE), redacted as the run's
    are, plus the run folder's key (the run's fingerprint, short)."""
    run = call(
        tracking, f"read run {tracked.run_id}", lambda: mlflow_client().get_run(tracked.run_id)
    )
    folder = result.output_dir.replace("\\", "/").rsplit("/", 1)[-1]
    tags = {
        "dataset": result.dataset,
        "task": result.task,
        "method": card.method,
        "base_model": result.model,
        "data_version": result.data_version or "unrecorded",
        "test_split": card.test_split or "unrecorded",
        "run_folder": folder,
    }
    for key, name in VERSION_LINEAGE.items():
        value = run.data.tags.get(f"{TAG}{key}")
        if value:
            tags[name] = value
    key = folder.rsplit("-", 1)[-1]
    if re.fullmatch(r"[0-9a-f]{10}", key):  # runs/<dataset>/<method>-<model>-<key>
        tags["run_key"] = key
    return {k: redact(v, k) for k, v in tags.items()}


def find_version(tracking: Tracking, name: str, run_id: str, source: str) -> str | None:
    """The (first) version of ``name`` registered from this run and source, if any."""
    client = mlflow_client()
    found = call(
        tracking,
        f"look up versions of {name} from run {run_id}",
        lambda: client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"),
    )
    versions = sorted(int(v.version) for v in found if v.source == source)
    return str(versions[0]) if versions else None


def _create_version(
    tracking: Tracking, name: str, tracked: TrackedRun, tags: dict, description: str
) -> str:
    """create_model_version is not idempotent: after a connection error the request may
    still have reached the server, so look the version up before asking again."""
    client = mlflow_client()
    for attempt in range(CREATE_ATTEMPTS):
        try:
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
                attempts=1,
            )
            return str(version.version)
        except TrackingError as exc:
            found = find_version(tracking, name, tracked.run_id, tracked.model_uri)
            if found is not None:
                return found
            if attempt == CREATE_ATTEMPTS - 1:
                raise TrackingError(
                    f"{exc} Tried {CREATE_ATTEMPTS} times, each time checking that no "
                    "version had been created."
                ) from None
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def describe_registered_model(
    tracking: Tracking, name: str, cfg: RunConfig, result: TrainResult, card: Scorecard
) -> None:
    """Create the registered model with its description (model_card.describe_model), or
    bring the description up to date: it is written only when its text changes (a new
    base model, other gate settings). Another run creating the model at the same time
    (RESOURCE_ALREADY_EXISTS) is as good."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    try:
        model = call(tracking, f"look up {name}", lambda: client.get_registered_model(name))
    except MlflowException:
        model = None
    versions = _versions(tracking, name) if model is not None else []
    bases = [v.tags.get("base_model") for v in versions if v.tags.get("base_model")]
    text = model_card.describe_model(name, cfg, [*bases, result.model], model_card.labels_of(card))
    text = redact(text)[:MAX_DESCRIPTION]
    if model is None:
        try:
            call(
                tracking,
                f"create registered model {name}",
                lambda: client.create_registered_model(
                    name,
                    tags={"dataset": cfg.data.name, "task": cfg.data.task},
                    description=text,
                ),
            )
            return
        except MlflowException as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
        model = call(tracking, f"look up {name}", lambda: client.get_registered_model(name))
    if (model.description or "") != text:
        call(
            tracking,
            f"describe {name}",
            lambda: client.update_registered_model(name, description=text),
        )


def tracked_run(tracking: Tracking, dataset: str, key: str) -> TrackedRun | None:
    """The finished run an earlier attempt logged under this registration key, if any
    (the oldest: the one a version was first created from)."""
    client = mlflow_client()
    experiment = call(
        tracking,
        f"look up experiment {dataset}",
        lambda: client.get_experiment_by_name(dataset),
    )
    if experiment is None:
        return None
    experiment_id = experiment.experiment_id
    runs = call(
        tracking,
        "look up an earlier attempt's run",
        lambda: client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        ),
    )
    if not runs:
        return None
    run_id = runs[0].info.run_id
    model_uri = runs[0].data.tags.get(f"{TAG}model_uri")
    model_id = (
        model_uri.removeprefix("models:/")
        if model_uri and model_uri.startswith("models:/") and model_uri.count("/") == 1
        else None
    )
    return TrackedRun(
        run_id, experiment_id, tracking.run_url(experiment_id, run_id), model_uri, model_id
    )


def recorded_decision(
    tracking: Tracking, name: str, version: str
) -> tuple[gate.Decision, AliasChange] | None:
    """The decision an earlier attempt already applied to this version (None when it
    was never judged: pending or abandoned)."""
    mv = version_info(tracking, name, version)
    state, intent = _read_state(mv)
    decided = state in (DONE, SUPERSEDED) or (state is None and DECISION in mv.tags)
    if not decided:
        return None
    before = {a: v for a, v in intent.before.items() if v} if intent else {}
    return _load_decision(tracking, mv), AliasChange(name, version, before, aliases(tracking, name))


def _load_decision(tracking: Tracking, mv) -> gate.Decision:
    """The decision as logged on the version's run, else rebuilt from its tags."""
    import math

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    known = {f.name for f in fields(gate.Decision)}
    try:
        logged = call(
            tracking,
            "read the recorded decision",
            lambda: mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/{DECISION_ARTIFACT}"),
        )
        return gate.Decision(**{k: v for k, v in logged.items() if k in known})
    except (MlflowException, OSError, TypeError, ValueError):
        pass
    tags = mv.tags

    def number(key: str) -> float:
        try:
            return float(tags[f"gate.{key}"])
        except (KeyError, ValueError):
            return math.nan

    outcome = tags.get(DECISION, "")
    return gate.Decision(
        promote=outcome.startswith("promoted"),
        reason=tags.get("gate.reason", outcome),
        metric=tags.get("gate.metric", tags.get("primary_metric", "")),
        versus=tags.get("gate.versus", ""),
        challenger=number("challenger"),
        reference=number("reference"),
        delta=number("delta"),
        p_value=number("p_value"),
        test=tags.get("gate.test", ""),
        forced=outcome == "promoted (forced)",
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


@dataclass(frozen=True)
class _Intent:
    """An operation's planned alias moves, as recorded in a version's gate.state."""

    version: str
    op: str  # "gate decision", "forced promotion", "rollback"
    at: str  # UTC, ISO 8601: orders the operations
    state: str  # MOVING, DONE or SUPERSEDED
    moves: dict[str, str | None]  # in the order they are made; None: alias removed
    before: dict[str, str | None]

    def tag(self) -> str:
        return (
            f"{self.state}: {self.op} at {self.at}; {_format_moves(self.moves)}; "
            f"before {_format_moves(self.before)}"
        )


def _read_state(mv) -> tuple[str | None, _Intent | None]:
    """A version's gate.state: its state word and, once decided, the recorded intent."""
    text = (mv.tags or {}).get(STATE)
    if text is None:
        return None, None
    state, _, rest = text.partition(": ")
    parts = rest.split("; ")
    if len(parts) != 3 or " at " not in parts[0]:
        return state.strip(), None
    op, _, at = parts[0].rpartition(" at ")
    before = _parse_moves(parts[2].removeprefix("before "))
    return state, _Intent(str(mv.version), op, at, state, _parse_moves(parts[1]), before)


def apply_decision(
    tracking: Tracking,
    name: str,
    version: str,
    run_id: str,
    decision: gate.Decision,
    *,
    closes_run: bool = True,
) -> AliasChange:
    """Record the decision and the moves it implies (the run's note, decision.json and
    gate metrics; the version's description line and tags), then move aliases last.

    Promoted: previous <- the old champion, champion <- version, challenger cleared (in
    that order: champion is never left empty and the old one is never lost).
    Not promoted: challenger <- version.
    ``closes_run``: the decision ends the run's registration, so the run's end moves to
    now (its duration then spans training to the gate); a later manual promotion does not.
    """
    client = mlflow_client()
    before = aliases(tracking, name)
    moves: dict[str, str | None]
    if decision.promote or decision.forced:
        moves = {}
        if before.get(CHAMPION) and before[CHAMPION] != version:
            moves[PREVIOUS] = before[CHAMPION]
        moves[CHAMPION] = version
        if CHALLENGER in before:
            # The challenger lost its chance: a newer or better version now holds champion.
            moves[CHALLENGER] = None
    else:
        moves = {CHALLENGER: version}
    note = decision.to_markdown(name, version)
    call(
        tracking,
        "write the decision note",
        lambda: client.set_tag(run_id, "mlflow.note.content", note),
    )
    call(
        tracking,
        "log the decision",
        lambda: client.log_dict(run_id, decision.to_dict(), DECISION_ARTIFACT),
    )
    _log_gate_metrics(tracking, run_id, decision)
    alias = CHAMPION if decision.promote or decision.forced else CHALLENGER
    _describe_version(tracking, name, version, model_card.decision_line(decision, alias))
    op = "forced promotion" if decision.forced else "gate decision"
    intent = _record_intent(tracking, name, version, op, moves, before, decision_tags(decision))
    change = AliasChange(name, version, before, _carry_out(tracking, name, intent))
    if closes_run:
        extend_run(tracking, run_id)
    return change


def decision_tags(decision: gate.Decision) -> dict[str, str]:
    """The decision's version tags; the p-value never reads 0 (tiny ones in scientific
    notation) and the bar it had to clear is stated."""
    tags = decision.to_tags()
    if "gate.p_value" in tags:
        tags["gate.p_value"] = md.p_value_tag(decision.p_value)
    if not decision.forced:
        tags["gate.required"] = (
            f"delta >= {decision.min_improvement:g} and p <= {decision.significance:g}"
        )
    return {k: redact(v, k) for k, v in tags.items()}


def _log_gate_metrics(tracking: Tracking, run_id: str, decision: gate.Decision) -> None:
    """gate.challenger, gate.reference, gate.delta and gate.p_value on the run."""
    import math

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"gate.{key}", float(value), now, 0)
        for key in GATE_METRICS
        if isinstance(value := getattr(decision, key), float) and math.isfinite(value)
    ]
    if metrics:
        call(
            tracking,
            "log the gate's numbers",
            lambda: mlflow_client().log_batch(run_id, metrics=metrics),
        )


def _describe_version(tracking: Tracking, name: str, version: str, line: str) -> None:
    """Put the decision line first in the version's description (the model card stays)."""
    client = mlflow_client()
    mv = call(tracking, f"read {name} v{version}", lambda: client.get_model_version(name, version))
    text = redact(model_card.with_decision(mv.description, line))[:MAX_DESCRIPTION]
    call(
        tracking,
        f"describe {name} v{version}",
        lambda: client.update_model_version(name, version, description=text),
    )


def _record_intent(
    tracking: Tracking,
    name: str,
    version: str,
    op: str,
    moves: dict[str, str | None],
    before: dict[str, str],
    tags: dict[str, str],
) -> _Intent:
    """Tag the decision on the version, then its planned moves: gate.state=moving with
    them is one write, so a stop before it leaves the version's earlier state intact."""
    intent = _Intent(
        version,
        op,
        datetime.now(UTC).isoformat(timespec="microseconds"),
        MOVING,
        moves,
        dict(before),
    )
    _set_tags(tracking, name, version, {**tags, STATE: intent.tag()})
    return intent


def _carry_out(tracking: Tracking, name: str, intent: _Intent) -> dict[str, str]:
    """Move the aliases of a recorded intent, then mark it done."""
    after = _move_aliases(tracking, name, intent.moves)
    _set_tags(tracking, name, intent.version, {STATE: replace(intent, state=DONE).tag()})
    return after


def _move_aliases(tracking: Tracking, name: str, moves: dict[str, str | None]) -> dict[str, str]:
    """Set (or, for None, remove) aliases in the given order; verify by reading back."""
    client = mlflow_client()
    for alias, target in moves.items():
        if target is None:
            call(
                tracking,
                f"clear alias {alias}",
                lambda a=alias: client.delete_registered_model_alias(name, a),
            )
        else:
            call(
                tracking,
                f"set alias {alias}",
                lambda a=alias, v=target: client.set_registered_model_alias(name, a, v),
            )
    after = aliases(tracking, name)
    wrong = {a: v for a, v in moves.items() if after.get(a) != v}
    if wrong:
        raise RegistryError(
            f"Alias moves on {name} did not stick: wanted {wrong}, the registry says "
            f"{after}. Check the registry with `tunelab registry doctor {name}`."
        )
    return after


def promote(tracking: Tracking, name: str, version: str, reason: str) -> AliasChange:
    """A manual promotion (--force): logged as such on the version and its run."""
    mv = version_info(tracking, name, version)
    recover(tracking, name)
    decision = gate.Decision(
        promote=True,
        reason=f"Promoted by hand: {reason}",
        metric=mv.tags.get("primary_metric", ""),
        versus="manual decision",
        forced=True,
    )
    return apply_decision(tracking, name, version, mv.run_id, decision, closes_run=False)


def rollback(tracking: Tracking, name: str) -> AliasChange:
    """champion <- previous; the demoted champion becomes the new 'previous'.

    champion moves first: a stop in between leaves the restored version serving and the
    demoted one recorded in its gate.state, for :func:`recover` to finish. Run again after
    such a stop, it finishes that rollback instead of rolling back twice.
    """
    for finding in recover(tracking, name):
        if finding.op == "rollback" and finding.repaired and finding.kind == "interrupted":
            _, intent = _read_state(version_info(tracking, name, finding.version))
            before = {a: v for a, v in intent.before.items() if v} if intent else {}
            return AliasChange(name, finding.version, before, aliases(tracking, name))
    before = aliases(tracking, name)
    if PREVIOUS not in before:
        raise RegistryError(
            f"{name} has no 'previous' version to roll back to (aliases: {before or 'none'}). "
            f"Promote a version by hand with `tunelab registry promote {name} VERSION --force`."
        )
    target, demoted = before[PREVIOUS], before.get(CHAMPION)
    if target == demoted:
        raise RegistryError(
            f"{name} has champion and previous both at version {target}: there is nothing to "
            f"roll back to. Promote a version by hand with `tunelab registry promote {name} "
            "VERSION --force`."
        )
    moves: dict[str, str | None] = {CHAMPION: target}
    if demoted:
        moves[PREVIOUS] = demoted
    tags = {DECISION: f"restored by rollback (replacing v{demoted})"}
    replacing = f", replacing v{demoted}" if demoted else ""
    line = f"{model_card.GATE_LINE} restored by rollback** (alias `{CHAMPION}`{replacing})."
    _describe_version(tracking, name, target, line)
    intent = _record_intent(tracking, name, target, "rollback", moves, before, tags)
    return AliasChange(name, target, before, _carry_out(tracking, name, intent))


def _format_moves(moves: dict[str, str | None]) -> str:
    """'previous=2, champion=3, challenger=-' ('-': removed); '-' for none."""
    return ", ".join(f"{a}={v or '-'}" for a, v in moves.items()) or "-"


def _parse_moves(text: str) -> dict[str, str | None]:
    moves: dict[str, str | None] = {}
    for part in text.split(","):
        alias, sep, value = part.strip().partition("=")
        if sep:
            moves[alias] = None if value == "-" else value
    return moves


# ---------------------------------------------------------------- doctor


@dataclass(frozen=True)
class Finding:
    """One half-done registry move doctor found, and what it did or would do about it."""

    model: str
    version: str | None
    kind: str  # "interrupted" | "unjudged" | "in progress" | "inconsistent"
    problem: str
    action: str
    repaired: bool = False
    op: str = ""  # the interrupted operation ("gate decision", "rollback", ...)

    def __str__(self) -> str:
        where = f"{self.model} v{self.version}" if self.version else self.model
        label = "Repaired" if self.repaired else "To repair"
        if self.kind == "in progress":
            label = "Left alone"
        return f"{where}: {self.problem}. {label}: {self.action}."


def doctor(
    tracking: Tracking,
    name: str | None = None,
    repair: bool = False,
    *,
    pending_after_s: float = PENDING_AFTER_S,
) -> list[Finding]:
    """Find half-done registry moves (of one model, else of all); with ``repair``,
    finish or revert them. Returns what was found, each with what was (or would be) done.

    - interrupted: a recorded decision whose alias moves did not all happen: finished,
      or marked superseded when a later decision moved the same aliases since;
    - unjudged: a version with no decision: marked abandoned (no alias moves), unless
      younger than ``pending_after_s`` (its registration may still be running);
    - inconsistent: champion/previous differ from the last recorded decision: set back.
    """
    client = mlflow_client()
    if name is not None:
        aliases(tracking, name)  # a clear error for an unknown model
        names = [name]
    else:
        names = sorted(
            m.name for m in call(tracking, "list models", client.search_registered_models)
        )
    findings: list[Finding] = []
    for model in names:
        findings += _examine(tracking, model, repair, pending_after_s, realign=repair)
    return findings


def recover(tracking: Tracking, name: str) -> list[Finding]:
    """What every registration, promotion and rollback of ``name`` does first: finish
    interrupted alias moves and retire long-unjudged versions. Aliases that only
    disagree with the record (moved by hand, or a race) are reported, not moved."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    try:
        call(tracking, f"look up {name}", lambda: client.get_registered_model(name))
    except MlflowException:
        return []  # not registered yet: nothing can be half-done
    return _examine(tracking, name, repair=True, pending_after_s=PENDING_AFTER_S, realign=False)


def _examine(
    tracking: Tracking, name: str, repair: bool, pending_after_s: float, realign: bool
) -> list[Finding]:
    versions = _versions(tracking, name)
    findings = _finish_moves(tracking, name, versions, repair)
    findings += _retire_unjudged(tracking, name, versions, repair, pending_after_s)
    if any(f.repaired for f in findings):
        versions = _versions(tracking, name)
    found = _check_aliases(tracking, name, versions, realign)
    return findings + ([found] if found else [])


def _versions(tracking: Tracking, name: str) -> list:
    client = mlflow_client()
    found = call(
        tracking,
        f"list versions of {name}",
        lambda: client.search_model_versions(f"name = '{name}'"),
    )
    return sorted(found, key=lambda v: int(v.version))


def _intents(versions: list) -> list[_Intent]:
    intents = [intent for _, intent in map(_read_state, versions) if intent is not None]
    return sorted(intents, key=lambda i: i.at)


def _set_tags(tracking: Tracking, name: str, version: str, tags: dict[str, str]) -> None:
    client = mlflow_client()
    for key, value in tags.items():
        call(
            tracking,
            f"tag {name} v{version}",
            lambda k=key, v=value: client.set_model_version_tag(name, version, k, v),
        )


def _finish_moves(tracking: Tracking, name: str, versions: list, repair: bool) -> list[Finding]:
    """Recorded decisions whose alias moves did not all happen, oldest first."""
    intents = _intents(versions)
    findings = []
    for intent in [i for i in intents if i.state == MOVING]:
        later = [j for j in intents if j.at > intent.at and j.state in (MOVING, DONE)]
        live = {} if _overtaken(intent, later) else intent.moves
        current = aliases(tracking, name)
        problem = (
            f"its {intent.op} of {intent.at[:19]} was recorded but the alias moves did not "
            f"all happen (wanted {_format_moves(intent.moves)}; the registry has "
            f"{_format_moves(current)})"
        )
        if live:
            action = f"move {_format_moves(live)} and mark it done"
        else:
            overtaken = ", ".join(f"v{j.version}" for j in later)
            action = f"mark it superseded (later decisions on {overtaken} moved these aliases)"
        finding = Finding(name, intent.version, "interrupted", problem, action, op=intent.op)
        if repair:
            try:
                if live:
                    _move_aliases(tracking, name, live)
                state = replace(intent, state=DONE if live else SUPERSEDED).tag()
                _set_tags(tracking, name, intent.version, {STATE: state})
                finding = replace(finding, repaired=True)
            except RegistryError as exc:  # another move raced this one
                finding = replace(finding, action=f"{action} (failed: {exc})")
        findings.append(finding)
    return findings


def _overtaken(intent: _Intent, later: list[_Intent]) -> bool:
    """All or nothing: a promotion or rollback is overtaken by any later move of champion
    or previous (its other moves only followed from it), a challenger move by a later
    challenger move."""
    key = {CHAMPION, PREVIOUS} if CHAMPION in intent.moves else set(intent.moves)
    return any(key & j.moves.keys() for j in later)


def _retire_unjudged(
    tracking: Tracking, name: str, versions: list, repair: bool, pending_after_s: float
) -> list[Finding]:
    """Versions created but never judged: their registration stopped before the gate."""
    findings = []
    now = time.time()
    for mv in versions:
        state, _ = _read_state(mv)
        if not (state == PENDING or (state is None and DECISION not in (mv.tags or {}))):
            continue
        age = now - (mv.creation_timestamp or 0) / 1000
        version = str(mv.version)
        if age < pending_after_s:
            findings.append(
                Finding(
                    name,
                    version,
                    "in progress",
                    f"registered {age:.0f} s ago and not judged yet",
                    "its registration may still be running; run it again to finish it",
                )
            )
            continue
        finding = Finding(
            name,
            version,
            "unjudged",
            "registered but never judged (its registration stopped before the gate)",
            "mark it abandoned, 'not judged' (no alias moves); train again or promote it by hand",
        )
        if repair:
            _set_tags(
                tracking,
                name,
                version,
                {
                    DECISION: "not judged",
                    "gate.reason": "Its registration stopped before the promotion gate "
                    "decided; found and closed by `tunelab registry doctor`.",
                    STATE: ABANDONED,
                },
            )
            finding = replace(finding, repaired=True)
        findings.append(finding)
    return findings


def _check_aliases(tracking: Tracking, name: str, versions: list, realign: bool) -> Finding | None:
    """champion/previous against the last completed decision that set champion."""
    known = {str(mv.version) for mv in versions}
    recorded = [
        i for i in _intents(versions) if i.state in (DONE, MOVING) and i.moves.get(CHAMPION)
    ]
    if not recorded or recorded[-1].state == MOVING:
        return None  # nothing recorded yet, or an interrupted move (reported as such)
    last = recorded[-1]
    want: dict[str, str | None] = {CHAMPION: last.moves[CHAMPION]}
    previous = last.moves[PREVIOUS] if PREVIOUS in last.moves else last.before.get(PREVIOUS)
    if previous:
        want[PREVIOUS] = previous
    current = aliases(tracking, name)
    wrong = {a: v for a, v in want.items() if current.get(a) != v}
    if not wrong:
        return None
    shown = {a: current.get(a) for a in want}
    finding = Finding(
        name,
        None,
        "inconsistent",
        f"the registry has {_format_moves(shown)} but the last recorded decision "
        f"({last.op} of v{last.version}, {last.at[:19]}) left {_format_moves(want)}",
        f"set {_format_moves(wrong)}",
        op=last.op,
    )
    missing = [v for v in wrong.values() if v not in known]
    if missing:
        return replace(finding, action=f"none: version {missing[0]} no longer exists")
    if realign:
        _move_aliases(tracking, name, wrong)  # champion first: dict order of ``want``
        finding = replace(finding, repaired=True)
    return finding


# ---------------------------------------------------------------- versions


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
        found = mlflow_client().search_model_versions(f"name = '{name}'")
        versions = [str(v.version) for v in found]  # MLflow 3 gives ints
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
