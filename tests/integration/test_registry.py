"""Tracking, registry, gate and predict on the local store (sqlite under mlruns/)."""

from __future__ import annotations

import csv
import os

import pytest
from registry_scenario import NAME, run_registry_story, tfidf

from tunelab.errors import RegistryError, TrackingError
from tunelab.lifecycle import registry, tracking


@pytest.fixture
def local_store(workspace, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield workspace
    # mlflow.set_tracking_uri exports the URI: do not leak it into other tests.
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_registry_story_on_the_local_store(local_store):
    outcomes = run_registry_story(local_store)
    assert (local_store.mlruns_dir / "mlflow.db").is_file()
    assert (local_store.mlruns_dir / "artifacts" / "sentiment").is_dir()

    import mlflow

    run = mlflow.get_run(outcomes["strong"].registration.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["tunelab.role"] == "baseline" and tags["tunelab.method"] == "baseline-tfidf"
    assert len(tags["tunelab.data_version"]) == 12
    # Run names: <dataset>/<method> <model> data-<data_version[:8]>; the Source is what ran.
    version = tags["tunelab.data_version"]
    assert run.info.run_name == f"sentiment/baseline-tfidf sklearn data-{version[:8]}"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    # The run spans the baseline's training (it is logged afterwards) and its gate.
    result = outcomes["strong"].result
    assert run.info.start_time <= run.info.end_time - result.wall_seconds * 1000
    assert run.data.metrics["gate.p_value"] > 0
    assert tags["tunelab.git_commit"] and tags["tunelab.config_hash"]
    assert tags["tunelab.version.scikit-learn"]
    assert (
        metrics["test_macro_f1_ci_low"]
        <= metrics["test_macro_f1"]
        <= metrics["test_macro_f1_ci_high"]
    )
    assert {"latency_p50_ms", "latency_p95_ms", "model_size_mb"} <= set(metrics)
    assert run.data.params["train.baseline.kind"] == "tfidf"
    contexts = {
        t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"
    }
    assert contexts == {"train", "validation", "test"}
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"config.yaml", "scorecard.json", "evaluation", "plots", "data", "model"} & artifacts
    note = tags["mlflow.note.content"]
    assert "**promoted**" in note

    # The version carries the run's lineage; its description opens with the decision.
    client = mlflow.MlflowClient()
    mv = client.get_model_version(NAME, outcomes["strong"].registration.version)
    for key in ("git_commit", "config_hash", "data_version", "dataset", "method"):
        assert mv.tags[key] == tags[f"tunelab.{key}"], key
    assert mv.tags["base_model"] == "tfidf-logreg" and mv.tags["run_key"]
    # v2 was promoted by the gate, demoted by hand, then restored by the rollback.
    assert mv.description.startswith("**Promotion gate: restored by rollback** (alias `champion`")
    weak = client.get_model_version(NAME, outcomes["weak"].registration.version)
    assert weak.description.startswith("**Promotion gate: not promoted** (alias `challenger`)")
    assert float(mv.tags["gate.p_value"]) > 0
    described = client.get_registered_model(NAME).description
    assert "`tfidf-logreg` (scikit-learn), `tiny-bert` (encoder)" in described

    weak_run = mlflow.get_run(outcomes["weak"].registration.run_id)
    history = mlflow.MlflowClient().get_metric_history(weak_run.info.run_id, "curve/train_loss")
    assert len(history) >= 2 and history[0].step < history[-1].step


def test_predict_and_registry_cli(local_store, tmp_path):
    """`tunelab predict` and `tunelab registry` against a registered TF-IDF model."""
    from typer.testing import CliRunner

    from tunelab.cli import app
    from tunelab.pipeline.method import train_and_register

    outcome = train_and_register(tfidf(), local_store)
    assert outcome.registration.decision.promote, outcome.registration.decision.reason
    runner = CliRunner()

    single = runner.invoke(app, ["predict", f"{NAME}@champion", "I loved it"])
    assert single.exit_code == 0, single.output
    assert single.output.strip() in {"negative", "neutral", "positive"}

    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("id,text\n1,I loved it\n2,Awful and boring\n3,It was fine\n")
    batch = runner.invoke(
        app, ["predict", f"{NAME}@champion", "--input", str(source), "--output", str(target)]
    )
    assert batch.exit_code == 0, batch.output
    rows = list(csv.DictReader(target.open()))
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert all(r["prediction"] in {"negative", "neutral", "positive"} for r in rows)

    listing = runner.invoke(app, ["registry", "list"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0 and NAME in listing.output and "champion" in listing.output

    unknown = runner.invoke(app, ["predict", f"{NAME}@nope", "x"])
    assert unknown.exit_code == 2 and "@champion (v1)" in unknown.output

    no_force = runner.invoke(app, ["registry", "promote", NAME, "1"])
    assert no_force.exit_code == 2 and "--force" in no_force.output

    no_previous = runner.invoke(app, ["registry", "rollback", NAME])
    assert no_previous.exit_code == 2 and "no 'previous' version" in no_previous.output
    assert registry.aliases(tracking.setup(local_store), NAME) == {"champion": "1"}


def test_a_run_whose_evaluation_failed_is_not_registered(local_store):
    from tunelab import scorecard
    from tunelab.pipeline import method
    from tunelab.pipeline.method import train_from_config

    cfg = tfidf()
    target = tracking.setup(local_store)
    result = train_from_config(cfg, local_store)
    (result.artifact("predictions")).unlink()  # the run lost its test predictions
    card = method.evaluate(cfg, result, local_store)
    assert card.status == "failed" and "predictions.parquet" in card.error
    done = method.track_and_register(cfg, result, card, local_store, target)
    assert done.version is None
    assert "evaluation failed" in done.not_registered
    with pytest.raises(RegistryError, match="evaluation failed"):
        registry.register(target, cfg, result, card, done.tracked)
    assert scorecard.Scorecard.load(result.output_dir).status == "failed"


def test_an_unreachable_server_fails_before_training(local_store, monkeypatch):
    from services import free_port

    from tunelab.pipeline.method import train_and_register

    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    with pytest.raises(TrackingError, match=f"{url}.*did not answer after 3 attempts"):
        train_and_register(tfidf(), local_store)
    assert not (local_store.root / "runs").exists()  # nothing was trained


@pytest.mark.parametrize(
    ("config_name", "model_name"),
    [
        ("instructions-lora.yaml", "tiny-instructions-generator"),
        ("preferences-dpo.yaml", "tiny-preferences-policy"),
    ],
)
def test_generators_are_registered_and_generate_text(local_store, config_name, model_name):
    """SFT and DPO models go through the transformers flavor and answer with text."""
    from registry_scenario import CONFIGS

    from tunelab import config
    from tunelab.lifecycle import predict
    from tunelab.pipeline.method import train_and_register

    outcome = train_and_register(config.load(CONFIGS / "tiny" / config_name), local_store)
    assert outcome.registration.model_name == model_name
    assert outcome.registration.version == "1"
    assert outcome.card.task in ("generation", "preference")
    assert outcome.card.costs["latency_p50_ms"] > 0
    aliases = registry.aliases(tracking.setup(local_store), model_name)
    alias = "champion" if outcome.registration.decision.promote else "challenger"
    assert aliases == {alias: "1"}
    loaded = predict.load(tracking.setup(local_store), f"{model_name}@{alias}")
    answers = loaded.predict(["Summarise: the meeting moved to Friday."])
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_doctor_sets_aliases_back_and_closes_what_stopped(local_store):
    """Hand-moved aliases, an overtaken interrupted move and a never-judged version."""
    from mlflow import MlflowClient
    from registry_scenario import trained_tfidf

    from tunelab.pipeline import method

    _, cfg, result, card = trained_tfidf(local_store.root)
    target = tracking.setup(local_store)
    first = method.track_and_register(cfg, result, card, local_store, target)
    other = tfidf("registry.significance=0.04")  # another config: another registration
    second = method.track_and_register(other, result, card, local_store, target)
    assert (first.version, second.version) == ("1", "2")
    assert registry.aliases(target, NAME) == {"champion": "1", "challenger": "2"}
    assert registry.doctor(target) == []

    client = MlflowClient()
    client.set_registered_model_alias(NAME, "champion", "2")  # by hand, off the record
    # An old promotion of v2 that stopped before its moves; v1's later decision overtook it.
    old = "moving: gate decision at 2000-01-01T00:00:00.000000+00:00; "
    client.set_model_version_tag(
        NAME, "2", registry.STATE, old + "previous=1, champion=2, challenger=-; before champion=1"
    )
    # A version whose registration stopped right after creating it (no decision tags).
    client.create_model_version(
        NAME, source=first.tracked.model_uri, run_id=first.run_id, model_id=first.tracked.model_id
    )

    # What every registration does first: close the overtaken move, leave the young
    # version (it may be another registration at work), only report the hand move.
    recovered = registry.recover(target, NAME)
    assert [(f.version, f.kind, f.repaired) for f in recovered] == [
        ("2", "interrupted", True),
        ("3", "in progress", False),
        (None, "inconsistent", False),
    ]
    assert "superseded" in recovered[0].action
    assert registry.aliases(target, NAME)["champion"] == "2"

    found = registry.doctor(target, NAME, pending_after_s=0)
    assert [(f.version, f.kind, f.repaired) for f in found] == [
        ("3", "unjudged", False),
        (None, "inconsistent", False),
    ]
    assert "champion=2" in found[1].problem and "To repair: set champion=1" in str(found[1])

    # The command reports what is open and fails until it is repaired.
    from typer.testing import CliRunner

    from tunelab.cli import app

    shown = CliRunner().invoke(app, ["registry", "doctor", NAME])
    assert shown.exit_code == 1, shown.output
    assert "inconsistent" not in shown.output and "To repair: set champion=1" in shown.output
    assert f"tunelab registry doctor {NAME} --repair" in shown.output
    assert registry.aliases(target, NAME)["champion"] == "2"  # reporting changes nothing

    fixed = registry.doctor(target, NAME, repair=True, pending_after_s=0)
    assert [(f.kind, f.repaired) for f in fixed] == [("unjudged", True), ("inconsistent", True)]
    assert registry.aliases(target, NAME) == {"champion": "1", "challenger": "2"}
    tags = {v: registry.version_info(target, NAME, v).tags for v in ("2", "3")}
    assert tags["2"][registry.STATE].startswith("superseded: gate decision")
    assert tags["3"][registry.STATE] == "abandoned"
    assert tags["3"]["gate.decision"] == "not judged"
    assert registry.doctor(target) == []
