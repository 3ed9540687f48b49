"""The milestone flow on tiny models under a Prefect test API: every method tracked and
registered, the review written, champions set; a re-run reuses every step; changing one
method's config re-runs only that method."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tunelab.lifecycle import registry, tracking
from tunelab.runs import TrainResult

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = CONFIGS / "tiny.yaml"
# The methods of tiny.yaml that train with a Trainer.
LIVE = ("full", "lora", "ia3", "dpo", "reward", "grpo")


@pytest.fixture(scope="module")
def milestone_workspace(tmp_path_factory, prefect_harness):
    """One workspace shared by the tests of this module (they build on each other)."""
    from tunelab.workspace import Workspace

    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield Workspace(tmp_path_factory.mktemp("milestone-ws"))
    if previous is not None:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def latest_artifact(client, key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
        sort=ArtifactSort.CREATED_DESC,
        limit=1,
    )
    assert found, f"no artifact {key}"
    return found[0].data


def plan_methods() -> list[tuple[str, str]]:
    raw = yaml.safe_load(TINY.read_text())
    return [(d, m) for d, methods in raw["datasets"].items() for m in methods]


def absolute_copy(tmp_path: Path, change: dict | None = None) -> Path:
    """tiny.yaml with absolute config paths, one method's entry optionally replaced."""
    raw = yaml.safe_load(TINY.read_text())
    for methods in raw["datasets"].values():
        for name, entry in methods.items():
            entry = {"config": entry} if isinstance(entry, str) else dict(entry)
            entry["config"] = str(CONFIGS / entry["config"])
            methods[name] = entry
    for label, entry in (change or {}).items():
        dataset, method = label.split("/")
        raw["datasets"][dataset][method].update(entry)
    path = tmp_path / "milestone.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_milestone_trains_tracks_registers_and_reviews_every_method(milestone_workspace):
    import mlflow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    from flows.milestone import milestone

    summary = milestone(str(TINY), str(milestone_workspace.root))
    methods = {(m.dataset, m.method): m for m in summary.methods}
    assert set(methods) == set(plan_methods())
    assert all(m.ok for m in methods.values()), summary.methods
    assert all(m.reused == [] for m in methods.values())

    target = tracking.setup(milestone_workspace)
    for (dataset, method), row in methods.items():
        runs = mlflow.search_runs(
            experiment_names=[dataset],
            filter_string=f"tags.`tunelab.run_dir` = '{Path(row.run_dir).name}'",
            output_format="list",
        )
        assert runs, f"no MLflow run for {dataset}/{method}"
        # One run per method, followed live while it trained (not the baselines), then
        # logged into and ended.
        assert len(runs) == 1 and runs[0].info.status == "FINISHED", runs
        live_id = TrainResult.load(row.run_dir).mlflow_run_id
        assert live_id == (runs[0].info.run_id if method in LIVE else None), method
        parent = runs[0].data.tags.get("mlflow.parentRunId")
        assert parent, "method runs are nested under the pipeline's parent run"
        data_version = runs[0].data.tags["tunelab.data_version"]
        assert runs[0].info.run_name.endswith(f"-{data_version[:8]}"), runs[0].info.run_name
    # The sklearn TF-IDF baseline is significantly better than the majority class on the
    # 30-row test split. The tiny random decoder's DPO policy is judged against the
    # untrained reference (ties count half: 0.5) and is champion only if the gate said so.
    assert summary.champions["tiny-sentiment-classifier"] is not None
    dpo = methods[("tiny-preferences", "dpo")].registration.decision
    assert dpo.reference == 0.5, dpo.reason
    assert (summary.champions["tiny-preferences-policy"] == "1") == dpo.promote, dpo.reason
    # GRPO starts from the SFT run and is rewarded by the reward model's run as well as by
    # its config's rule; the gate pairs it with itself before training.
    grpo = methods[("tiny-prompts", "grpo")]
    notes = " ".join(TrainResult.load(grpo.run_dir).notes)
    assert "letter_e" in notes and "tiny-preferences-reward" in notes, notes
    assert methods[("tiny-instructions", "lora")].run_dir in notes
    assert grpo.registration.decision.versus == "the policy before training (built in)"
    champion = registry.aliases(target, "tiny-sentiment-classifier")["champion"]
    assert methods[("tiny-sentiment", "tfidf")].registration.version == champion

    review = Path(summary.report).read_text()
    for _, method in plan_methods():
        assert f"`{method}`" in review
    assert "Promotion decisions" in review and "Champions" in review
    assert Path(summary.html).is_file()
    assert "data:image/png;base64," in Path(summary.html).read_text()

    with get_client(sync_client=True) as client:
        page = latest_artifact(client, "milestone-review")
        table = json.loads(latest_artifact(client, "milestone-review-table"))
        data_runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["prepare-data"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    # The artifact shows the plots inline (the Prefect UI cannot open a relative path)
    # and links no local file; its table holds rounded numbers.
    assert "tfidf" in page and page.count("](data:image/png;base64,") >= 2
    assert ".png)" not in page and "](/" not in page and "](../" not in page
    assert {row["method"] for row in table} == {method for _, method in plan_methods()}
    for row in table:
        for key in ("primary", "ci_low", "ci_high", "delta"):
            assert row[key] is None or round(row[key], 4) == row[key], (key, row)
        assert row["p_value"] is None or row["p_value"] == "< 0.001" or float(row["p_value"]) > 0
    # The data subflow's recorded parameters: small records, not whole run configs.
    datasets = data_runs[0].parameters["datasets"]
    assert {d["data"]["name"] for d in datasets} == {d for d, _ in plan_methods()}
    assert len(json.dumps(datasets)) < 400 * len(datasets)


def test_a_second_run_reuses_every_step(milestone_workspace):
    import mlflow

    from flows.milestone import milestone

    before = registry.list_versions(tracking.setup(milestone_workspace))
    runs_before = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    summary = milestone(str(TINY), str(milestone_workspace.root))
    assert all(m.reused == ["train", "evaluate", "register"] for m in summary.methods)
    assert summary.total_step_seconds == 0.0
    # Nothing was logged or registered again (only the new pipeline's parent runs).
    assert registry.list_versions(tracking.setup(milestone_workspace)) == before
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) - runs_before == len({m.dataset for m in summary.methods})


def test_changing_one_method_reruns_only_that_method(milestone_workspace, tmp_path):
    from flows.milestone import milestone

    config = absolute_copy(
        tmp_path,
        {"tiny-sentiment/lora": {"set": ["data.max_rows=300", "train.learning_rate=2.0e-3"]}},
    )
    summary = milestone(str(config), str(milestone_workspace.root))
    for row in summary.methods:
        if row.label == "tiny-sentiment/lora":
            assert row.reused == [], row
        else:
            assert row.reused == ["train", "evaluate", "register"], row


def test_refresh_recomputes_and_methods_can_run_concurrently(milestone_workspace, tmp_path):
    from flows.milestone import milestone

    config = absolute_copy(tmp_path)
    raw = yaml.safe_load(config.read_text())
    sentiment = raw["datasets"]["tiny-sentiment"]
    raw["concurrency"] = 2
    raw["datasets"] = {
        "tiny-sentiment": {
            "majority": sentiment["majority"],
            "tfidf": sentiment["tfidf"],
            "full": sentiment["full"],
        }
    }
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    summary = milestone(str(config), str(milestone_workspace.root), refresh=True)
    assert [m.method for m in summary.methods] == ["majority", "tfidf", "full"]
    assert all(m.ok and m.reused == [] for m in summary.methods)
    # A recomputed Trainer step trains from scratch: it does not resume from the final
    # checkpoint of the run it replaces (zero steps, the old weights as new).
    full = TrainResult.load(summary.methods[2].run_dir)
    assert full.resumed_from is None and full.train_steps > 0


def test_a_failed_method_does_not_stop_the_others(milestone_workspace, tmp_path):
    from flows.milestone import milestone
    from tunelab.errors import PipelineError

    config = absolute_copy(tmp_path)
    raw = yaml.safe_load(config.read_text())
    sentiment = raw["datasets"]["tiny-sentiment"]
    raw["datasets"] = {
        "tiny-sentiment": {
            "majority": sentiment["majority"],
            # An unknown model: the train step fails with a ModelError.
            "broken": {
                "config": sentiment["full"]["config"],
                "set": ["data.max_rows=300", "model.name=no-such-model"],
            },
            "tfidf": sentiment["tfidf"],
        }
    }
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(PipelineError, match=r"tiny-sentiment/broken") as caught:
        milestone(str(config), str(milestone_workspace.root))
    review_path = str(caught.value).split("The review in ")[1].split(" shows")[0]
    review = Path(review_path).read_text()
    assert "`broken`" in review and "failed" in review
    assert "`tfidf`" in review  # the method after the failure still ran
