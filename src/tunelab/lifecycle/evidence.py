"""The promotion gate's evidence, gathered from the registry and the tracking store.

A registered challenger is compared with the champion's test predictions (re-scored on
the challenger's test split when the data changed) or, before there is a champion, with
the baseline runs on the same split. :func:`judge` gathers them and asks the pure
:func:`gate.decide`; nothing here changes the registry.
"""

from __future__ import annotations

import tempfile

import pandas as pd

from tunelab.config import RunConfig
from tunelab.errors import RegistryError
from tunelab.lifecycle import gate, packaging, registry
from tunelab.lifecycle.tracking import (
    EVALUATION_DIR,
    TAG,
    TrackedRun,
    Tracking,
    call,
    mlflow_client,
)
from tunelab.runs import PREDICTIONS_FILE, input_column
from tunelab.scorecard import Scorecard

PREDICTIONS_ARTIFACT = f"{EVALUATION_DIR}/{PREDICTIONS_FILE}"


def judge(
    tracking: Tracking, cfg: RunConfig, card: Scorecard, tracked: TrackedRun
) -> gate.Decision:
    """The gate's decision for a registered challenger (nothing is changed here)."""
    table = card.predictions()
    if table is None:
        raise RegistryError(f"{card.run_dir} has no predictions to compare.")
    name = registry.model_name(cfg)
    champion = champion_reference(tracking, name, card)
    baselines = (
        []
        if champion
        else baseline_references(tracking, tracked.experiment_id, card, tracked.run_id)
    )
    return gate.decide(card, table, cfg, champion, baselines)


def champion_reference(
    tracking: Tracking, name: str, card: Scorecard | None = None
) -> gate.Reference | None:
    """The champion's test predictions, or None when there is no champion.

    When the champion was evaluated on another test split (the data changed) and the
    challenger is a classifier or generator, the champion is re-scored on the
    challenger's test split, loaded by tunelab itself (``packaging.load_registered``: the
    files are read as data, no code from the model store runs): both are then judged on
    the same rows. Preference policies cannot be re-scored that way (their metric needs
    the reference model's log-probabilities), nor policies tuned by RL (their rewards come
    from sampling against reward models that may have moved), so the gate refuses to
    compare them.
    """
    version = registry.aliases(tracking, name).get(registry.CHAMPION)
    if version is None:
        return None
    client = mlflow_client()
    mv = call(tracking, f"read {name} v{version}", lambda: client.get_model_version(name, version))
    run = call(tracking, f"read run {mv.run_id}", lambda: client.get_run(mv.run_id))
    split = run.data.tags.get(f"{TAG}test_split")
    label = f"champion v{version} ({mv.tags.get('method', '?')})"
    if card is not None and split != card.test_split and card.task not in ("preference", "prompts"):
        table = rescore(tracking, name, version, card)
        if table is not None:
            return gate.Reference(
                f"{label}, re-scored on this test split", table, card.test_split, version, mv.run_id
            )
    return gate.Reference(label, _predictions_of(tracking, mv.run_id), split, version, mv.run_id)


def rescore(tracking: Tracking, name: str, version: str, card: Scorecard) -> pd.DataFrame | None:
    """The champion's predictions for the challenger's test inputs (None if it has none).

    A champion whose files were tampered with raises UntrustedModelError: the gate does not
    judge against a model it will not load."""
    table = card.predictions()
    column = input_column(table.columns) if table is not None else None
    if column is None or "reference" not in table.columns:
        return None
    uri = f"models:/{name}/{version}"
    model = call(tracking, f"load {uri}", lambda: packaging.load_registered(name, version, uri))
    texts = table[column].astype(str).tolist()
    predictions = [
        p for start in range(0, len(texts), 16) for p in model.predict(texts[start : start + 16])
    ]
    scored = table[[c for c in (column, "prompt", "reference") if c in table.columns]].copy()
    scored = scored.loc[:, ~scored.columns.duplicated()]
    scored["prediction"] = predictions
    if card.task == "classification":
        scored["correct"] = scored["reference"].astype(str) == scored["prediction"].astype(str)
    return scored


def baseline_references(
    tracking: Tracking, experiment_id: str, card: Scorecard, exclude_run: str | None = None
) -> list[gate.Reference]:
    """Finished, evaluated baseline runs on the challenger's test split (a TF-IDF
    challenger's own run excluded: it is not its own bar)."""
    if not card.test_split:
        return []
    query = (
        f"tags.`{TAG}role` = 'baseline' and tags.`{TAG}test_split` = '{card.test_split}' "
        f"and tags.`{TAG}evaluation` = 'ok' and attributes.status = 'FINISHED'"
    )
    runs = call(
        tracking,
        "find baseline runs",
        lambda: mlflow_client().search_runs([experiment_id], filter_string=query, max_results=50),
    )
    references = []
    for run in runs:
        if run.info.run_id == exclude_run:
            continue
        method = run.data.tags.get(f"{TAG}method", "baseline")
        references.append(
            gate.Reference(
                label=f"{method} (run {run.info.run_id[:8]})",
                table=_predictions_of(tracking, run.info.run_id),
                test_split=card.test_split,
                run_id=run.info.run_id,
            )
        )
    return references


def _predictions_of(tracking: Tracking, run_id: str) -> pd.DataFrame:
    """The test predictions a run logged (downloaded from its artifacts)."""
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        path = call(
            tracking,
            f"download the predictions of run {run_id}",
            lambda: download_artifacts(
                run_id=run_id, artifact_path=PREDICTIONS_ARTIFACT, dst_path=tmp
            ),
        )
        return pd.read_parquet(path)
