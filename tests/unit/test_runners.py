"""Where the methods run (thread | dask | ray, from the plan or the command line) and which
training steps hold a GPU slot: plain decisions, no cluster started."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunelab import config
from tunelab.errors import ConfigError
from tunelab.pipeline import runner
from tunelab.pipeline.plan import load_plan
from tunelab.pipeline.runner import RunnerSpec, chosen_runner, needs_gpu_slot, runner_spec

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write_plan(folder: Path, **top) -> Path:
    raw = {
        **top,
        "datasets": {"tiny-sentiment": {"tfidf": str(CONFIGS / "tiny" / "sentiment-tfidf.yaml")}},
    }
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_plan_runs_its_methods_on_threads_unless_it_names_a_runner(tmp_path):
    assert load_plan(write_plan(tmp_path)).runner == RunnerSpec("thread")
    assert load_plan(write_plan(tmp_path, runner="dask")).runner == RunnerSpec("dask")
    mapping = {"kind": "dask", "address": "tcp://10.0.0.5:8786", "workers": 3}
    assert load_plan(write_plan(tmp_path, runner=mapping)).runner == RunnerSpec(
        "dask", "tcp://10.0.0.5:8786", 3
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("spark", "not one of thread, dask, ray"),
        ({"kind": "dask", "nodes": 2}, "unknown keys ['nodes']"),
        ({"kind": "dask", "workers": 0}, "workers must be a whole number >= 1"),
        ({"kind": "thread", "address": "tcp://x:1"}, "is for a dask or ray cluster"),
        (["dask"], "runner must be one of"),
    ],
)
def test_a_bad_runner_is_a_config_error_naming_the_plan(tmp_path, value, says):
    path = write_plan(tmp_path, runner=value)
    with pytest.raises(ConfigError, match="runner") as raised:
        load_plan(path)
    assert says in str(raised.value) and str(path) in str(raised.value)


def test_the_command_line_wins_over_the_plan():
    plan = RunnerSpec("dask", "tcp://10.0.0.5:8786", 3)
    assert chosen_runner(plan, None, None, None) == plan
    assert chosen_runner(plan, None, None, 2) == RunnerSpec("dask", "tcp://10.0.0.5:8786", 2)
    # Another kind starts from its own defaults, not the plan's cluster.
    assert chosen_runner(plan, "thread", None, None) == RunnerSpec("thread")
    assert chosen_runner(RunnerSpec(), "DASK", None, None) == RunnerSpec("dask")
    with pytest.raises(ConfigError, match="tunelab run: runner kind 'slurm'"):
        chosen_runner(plan, "slurm", None, None)


def test_a_runner_whose_integration_is_missing_says_what_to_install(monkeypatch):
    found = runner.importlib.util.find_spec
    monkeypatch.setattr(
        runner.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prefect_ray" else found(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install 'tunelab\[ray\]'"):
        chosen_runner(RunnerSpec(), "ray", None, None)


def test_workers_default_to_the_concurrency_or_one_process_per_cpu(monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 8)
    assert RunnerSpec("thread").resolve(concurrency=2, methods=6).workers == 2
    assert RunnerSpec("dask").resolve(concurrency=1, methods=6).workers == 6
    assert RunnerSpec("dask").resolve(concurrency=1, methods=20).workers == 8
    assert RunnerSpec("dask", workers=3).resolve(concurrency=1, methods=20).workers == 3


def test_local_dask_workers_share_the_cores_out_between_them(monkeypatch):
    """Dask's nanny would pin every worker's torch to one thread."""
    from tunelab.pipeline import runner

    monkeypatch.setattr(runner.os, "cpu_count", lambda: 16)
    assert runner.worker_threads(2)["OMP_NUM_THREADS"] == "8"
    assert runner.worker_threads(4) == dict.fromkeys(
        ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "4"
    )
    assert runner.worker_threads(32)["OMP_NUM_THREADS"] == "1"


def test_the_runner_is_not_an_input_of_the_up_to_date_check(tmp_path):
    from tunelab.pipeline import uptodate

    uri = "sqlite:////tmp/x.db"
    threads = uptodate.inputs(load_plan(write_plan(tmp_path)), uri)
    dask = uptodate.inputs(load_plan(write_plan(tmp_path, runner={"kind": "dask"})), uri)
    assert threads == dask


def run_config(method: str, device: str = "auto") -> config.RunConfig:
    return config.load(None, [f"train.method={method}", f"train.device={device}"])


@pytest.mark.parametrize(
    ("method", "device", "slots", "needs"),
    [
        ("lora", "auto", 2, True),
        ("full", "cuda", 1, True),
        ("dpo", "auto", 1, True),
        ("baseline", "auto", 2, False),  # majority, tfidf, prompting: no torch training
        ("lora", "cpu", 2, False),  # told to train on the CPU
        ("lora", "auto", 0, False),  # no GPU here
    ],
)
def test_only_training_on_a_gpu_takes_a_slot(method, device, slots, needs):
    assert needs_gpu_slot(run_config(method, device), slots) is needs


def test_gpu_slots_can_be_set_for_a_machine_without_cuda(monkeypatch):
    monkeypatch.setenv(runner.GPU_SLOTS_ENV, "2")
    assert runner.gpu_slots() == 2
    monkeypatch.setenv(runner.GPU_SLOTS_ENV, "many")
    with pytest.raises(ConfigError, match="TUNELAB_GPU_SLOTS must be a whole number"):
        runner.gpu_slots()


def test_the_flows_build_the_named_prefect_task_runner():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.runners import task_runner

    threads = task_runner("thread", workers=3)
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = task_runner("dask", workers=2)
    assert isinstance(local, DaskTaskRunner)
    assert local.cluster_kwargs == {
        "n_workers": 2,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "env": runner.worker_threads(2),
    }
    remote = task_runner("dask", address="tcp://10.0.0.5:8786")
    assert remote.address == "tcp://10.0.0.5:8786"
    assert runner_spec("Dask", "x").kind == "dask"


def test_tunelab_run_passes_the_chosen_runner_to_the_flow(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import flows.milestone
    from tunelab.cli import app

    seen = {}

    def milestone(config, workdir, refresh, **runner):
        seen.update(runner)
        raise ConfigError("stop here")

    monkeypatch.setattr(flows.milestone, "milestone", milestone)
    args = ["--workdir", str(tmp_path), "run", str(CONFIGS / "tiny.yaml")]
    CliRunner().invoke(app, [*args, "--runner", "dask", "--workers", "2"])
    assert seen == {"runner": "dask", "address": None, "workers": 2}
    seen.clear()
    CliRunner().invoke(app, args)  # nothing chosen: the flow reads the plan's runner
    assert seen == {}
