"""Sweeps: the sweep section's checks, and the study's bookkeeping (pruned, crashed and
interrupted trials, the best config and the report) with a cheap stand-in for training."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab import config, runs
from tunelab import sweep as sweeps
from tunelab.errors import ConfigError

CONFIGS = Path(__file__).parents[2] / "configs"
TINY = CONFIGS / "tiny" / "sentiment-lora-sweep.yaml"
LR = "train.learning_rate"


def with_space(space: str, *more: str) -> config.RunConfig:
    return config.load(CONFIGS / "tiny" / "sentiment-lora.yaml", [f"sweep.space={space}", *more])


# ---------------------------------------------------------------- the sweep section


def test_the_space_takes_ranges_and_choices_and_yaml_exponents_without_a_dot():
    cfg = with_space(
        "{train.learning_rate: {low: 1e-5, high: 1e-2, log: true}, "
        "train.adapter.r: {choices: [4, 8]}, train.max_steps: {low: 4, high: 8}}"
    )
    space = cfg.sweep.space
    assert space[LR].low == 1e-5 and not space[LR].is_int
    assert space["train.max_steps"].is_int
    assert space["train.adapter.r"].values() == [4, 8]


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ("{train.lerning_rate: {low: 0.1, high: 0.2}}", r"'train.lerning_rate' is unknown.*"
         r"Did you mean train.learning_rate"),
        ("{train.adapter.r: {choices: [0, 4]}}", r"sweep.space\['train.adapter.r'\] would try 0"),
        ("{data.max_rows: {low: 10, high: 20}}", "not a model.* or train.* key"),
        ("{train.learning_rate: {low: 0.1}}", "needs both low and high"),
        ("{train.learning_rate: {low: 0.2, high: 0.1}}", "above high"),
        ("{train.learning_rate: {low: 0, high: 0.1, log: true}}", "log range needs low > 0"),
        ("{train.learning_rate: {low: 0.1, high: 0.2, choices: [0.1]}}", "not both"),
        ("{train.learning_rate: {lo: 0.1, high: 0.2}}", "unknown key"),
    ],
)  # fmt: skip
def test_a_bad_space_is_a_config_error_naming_the_key(space, expected):
    with pytest.raises(ConfigError, match=expected):
        with_space(space)


def test_the_metric_must_be_a_validation_metric():
    with pytest.raises(ConfigError, match="validation_\\* metric.*test split"):
        with_space("{train.adapter.r: {choices: [4]}}", "sweep.metric=test_macro_f1")


def test_objective_defaults_follow_the_method_and_the_metric_name():
    cfg = with_space("{train.adapter.r: {choices: [4]}}")
    assert sweeps.objective(cfg) == ("validation_loss", "minimize")
    baseline = config.load(
        None, ["train.method=baseline", "sweep.space={train.seed: {low: 1, high: 2}}"]
    )
    assert sweeps.objective(baseline) == ("validation_macro_f1", "maximize")
    chosen = with_space("{train.adapter.r: {choices: [4]}}", "sweep.metric=validation_accuracy")
    assert sweeps.objective(chosen)[1] == "maximize"


def test_the_sweep_section_changes_neither_the_run_fingerprint_nor_plain_configs():
    plain = config.load(CONFIGS / "tiny" / "sentiment-lora.yaml")
    swept = config.load(TINY)
    assert "sweep" not in plain.to_dict() and "sweep" in swept.to_dict()
    no_sweep = swept.model_copy(update={"sweep": None})
    assert runs.fingerprint(swept, "v1", code="c") == runs.fingerprint(no_sweep, "v1", code="c")
    trial = sweeps.trial_config(swept, {LR: 0.003, "train.adapter.r": 2})
    assert trial.sweep is None and trial.train.learning_rate == 0.003
    assert trial.train.adapter.r == 2 and trial.train.eval_steps == swept.train.eval_steps


def test_the_study_name_is_stable_and_changes_with_the_objective():
    cfg = config.load(TINY)
    assert sweeps.study_name(cfg) == sweeps.study_name(config.load(TINY))
    assert sweeps.study_name(cfg).startswith("tiny-sentiment-lora-tiny-bert-")
    other = config.load(TINY, ["train.max_steps=20"])
    assert sweeps.study_name(other) != sweeps.study_name(cfg)
    named = sweeps.load(TINY, study="mine", storage="sqlite:///x.db")
    assert (sweeps.study_name(named), named.sweep.storage) == ("mine", "sqlite:///x.db")


def test_a_config_without_a_sweep_section_is_refused_by_the_command(workspace):
    from tunelab.cli import app

    result = CliRunner().invoke(app, ["sweep", str(CONFIGS / "tiny" / "sentiment-lora.yaml")])
    assert result.exit_code == 2
    assert "has no sweep: section" in result.output


# ---------------------------------------------------------------- the study


@pytest.fixture
def study_run(workspace):
    """A SweepRun on a fresh SQLite study, without data or MLflow (no parent run)."""
    import optuna

    cfg = config.load(TINY)
    name = sweeps.study_name(cfg)
    folder = sweeps.sweep_folder(workspace, name)
    folder.mkdir(parents=True)
    url = sweeps.storage_url(cfg, workspace, name)
    optuna.create_study(storage=url, study_name=name, direction="minimize")
    mlflow_uri = f"sqlite:///{workspace.root / 'unused.db'}"  # never set up: no parent run
    return sweeps.SweepRun(
        cfg, name, url, str(folder), str(workspace.root), mlflow_uri, "v1",
        "validation_loss", "minimize",
    )  # fmt: skip


def test_pruned_crashed_and_complete_trials_are_told_and_the_sweep_goes_on(study_run, monkeypatch):
    import optuna

    outcomes = iter(
        [
            lambda trial: 1.0,
            lambda trial: 0.5,
            lambda trial: (_ for _ in ()).throw(RuntimeError("out of luck")),
            lambda trial: (_ for _ in ()).throw(optuna.TrialPruned("pruned at step 4 (x)")),
        ]
    )

    def fake_train(run, trial, cfg, workspace, record):
        return next(outcomes)(trial)

    monkeypatch.setattr(sweeps, "_train_and_log", fake_train)
    records = [sweeps.run_trial(study_run, n) for n in sweeps.ask(study_run, 4)]
    assert [r.state for r in records] == ["COMPLETE", "COMPLETE", "FAIL", "PRUNED"]
    assert "RuntimeError: out of luck" in records[2].error
    assert sweeps.missing(study_run, 6) == 2  # failed and pruned trials count toward the total

    summary = sweeps.finish(study_run, total=4, ran=4)
    assert summary.best.number == 1 and summary.counts == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1}
    best = config.load(summary.best_config)
    assert best.sweep is None and best.train.learning_rate == summary.best.params[LR]
    report = Path(summary.report).read_text()
    assert "out of luck" in report and "## Optimisation history" in report
    folder = Path(study_run.folder)
    assert (folder / sweeps.HISTORY_PLOT).is_file() and (folder / sweeps.IMPORTANCE_PLOT).is_file()


def test_a_config_mistake_every_trial_would_repeat_is_fatal(study_run, monkeypatch):
    def fake_train(run, trial, cfg, workspace, record):
        raise ConfigError("sweep.metric validation_nope is not among the run's metrics")

    monkeypatch.setattr(sweeps, "_train_and_log", fake_train)
    [number] = sweeps.ask(study_run, 1)
    record = sweeps.run_trial(study_run, number)
    assert record.state == "FAIL" and "validation_nope" in record.fatal


def test_no_completed_trial_leaves_a_report_but_no_best_config(study_run, monkeypatch):
    monkeypatch.setattr(sweeps, "_train_and_log", lambda *a: 1 / 0)
    [number] = sweeps.ask(study_run, 1)
    sweeps.run_trial(study_run, number)
    summary = sweeps.finish(study_run, total=1)
    assert summary.best is None and summary.best_config is None and summary.plots == {}
    assert "No trial completed" in Path(summary.report).read_text()


def test_a_trial_left_running_by_a_dead_process_is_failed_and_its_values_run_first(study_run):
    study = sweeps.open_study(study_run)
    [number] = sweeps.ask(study_run, 1)
    dead = {"host": __import__("socket").gethostname(), "pid": 2**22 + 12345}
    study._storage.set_trial_user_attr(study.trials[number]._trial_id, "owner", dead)
    params = study.trials[number].params

    assert sweeps.recover_interrupted(study_run, study) == [number]
    assert sweeps.counted(sweeps.open_study(study_run)) == 0  # interrupted: not counted
    [again] = sweeps.ask(study_run, 1)
    retried = sweeps.open_study(study_run).trials[again]
    assert retried.params == params and retried.user_attrs["retry_of"] == number


def test_a_trial_of_another_live_process_is_left_alone(study_run):
    import os
    import socket

    study = sweeps.open_study(study_run)
    [number] = sweeps.ask(study_run, 1)
    alive = {"host": socket.gethostname(), "pid": os.getppid()}  # another sweep, still running
    study._storage.set_trial_user_attr(study.trials[number]._trial_id, "owner", alive)
    assert sweeps.recover_interrupted(study_run, study) == []
    assert sweeps.open_study(study_run).trials[number].state.name == "RUNNING"


def test_the_pruning_callback_reports_the_eval_metric_and_stops_a_bad_trial():
    import optuna

    class Trial:
        reported: list = []
        prune = False

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return self.prune

    class State:
        global_step = 4

    trial = Trial()
    callback = sweeps.pruning_callback(trial, "validation_loss")
    callback.on_evaluate(None, State(), None, metrics={"eval_loss": 1.2, "epoch": 1.0})
    callback.on_evaluate(None, State(), None, metrics={"eval_runtime": 0.1})  # not the metric
    assert trial.reported == [(4, 1.2)]
    trial.prune = True
    with pytest.raises(optuna.TrialPruned, match="pruned at step 4"):
        callback.on_evaluate(None, State(), None, metrics={"eval_loss": 1.5})
