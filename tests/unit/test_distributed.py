"""train.distributed: the config section, the refusals before launch, the launch command
and how a rank's failure reads. Nothing is launched here (tests/integration/
test_distributed_training.py trains with 2 gloo processes, marker `scale`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tunelab import config
from tunelab.errors import ConfigError, TrainingError
from tunelab.train import check_method, distributed


def cfg_of(*overrides: str):
    return config.load(
        None,
        [
            "data.task=classification",
            "train.method=full",
            "model.name=tiny-bert",
            "train.device=cpu",
            *overrides,
        ],
    )


@pytest.fixture
def cores(monkeypatch):
    """Pretend the machine gives tunelab this many cores (and no GPU)."""

    def set_cores(n: int):
        monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda _: set(range(n)))

    set_cores(2)
    return set_cores


def test_one_process_is_the_default_and_checks_nothing():
    cfg = cfg_of()
    assert cfg.train.distributed.processes == 1
    assert cfg.train.distributed.strategy == "ddp" and cfg.train.distributed.backend == "auto"
    assert not distributed.is_distributed(cfg)
    distributed.check(cfg_of("train.method=baseline"))  # nothing to refuse


def test_every_field_says_what_it_does():
    for name, field in config.DistributedSection.model_fields.items():
        assert field.description, name


@pytest.mark.parametrize(
    "override",
    [
        "train.distributed.processes=0",
        "train.distributed.strategy=horovod",
        "train.distributed.backend=mpi",
    ],
)
def test_invalid_values_are_config_errors(override):
    with pytest.raises(ConfigError, match="distributed"):
        cfg_of(override)


def test_two_gloo_processes_on_two_cores_pass(cores):
    distributed.check(cfg_of("train.distributed.processes=2"))


@pytest.mark.parametrize(
    ("method", "why"), [("baseline", "without a Trainer"), ("grpo", "policy and reward")]
)
def test_methods_without_a_distributable_trainer_are_refused(cores, method, why):
    cfg = cfg_of(f"train.method={method}", "train.distributed.processes=2")
    with pytest.raises(ConfigError, match=why) as err:
        distributed.check(cfg)
    assert "train.distributed.processes=1" in str(err.value)


def test_more_ranks_than_cores_is_refused(cores):
    cores(2)
    with pytest.raises(ConfigError, match=r"processes=3 on the CPU .* 2 core") as err:
        distributed.check(cfg_of("train.distributed.processes=3"))
    assert "processes=2 or fewer" in str(err.value)


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_sharding_strategies_without_cuda_are_refused(cores, strategy):
    cfg = cfg_of("train.device=auto", "train.distributed.processes=2",
                 f"train.distributed.strategy={strategy}")  # fmt: skip
    with pytest.raises(ConfigError, match=f"strategy={strategy} .* needs CUDA") as err:
        distributed.check(cfg)
    assert "strategy=ddp" in str(err.value)


def test_deepspeed_without_its_package_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "_cuda_devices", lambda: 2)
    monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda name: None)
    cfg = cfg_of("train.device=auto", "train.distributed.processes=2",
                 "train.distributed.strategy=deepspeed")  # fmt: skip
    with pytest.raises(ConfigError, match="needs the deepspeed package"):
        distributed.check(cfg)


def test_more_ranks_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "_cuda_devices", lambda: 1)
    cfg = cfg_of("train.device=auto", "train.distributed.processes=2")
    with pytest.raises(ConfigError, match=r"only 1 CUDA device\(s\)") as err:
        distributed.check(cfg)
    assert "each rank needs its own GPU" in str(err.value)


def test_nccl_without_a_gpu_is_refused(cores):
    cfg = cfg_of("train.distributed.processes=2", "train.distributed.backend=nccl")
    with pytest.raises(ConfigError, match="backend=nccl runs on CUDA only"):
        distributed.check(cfg)


def test_a_missing_accelerate_config_is_refused(cores, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_of("train.distributed.processes=2", "train.distributed.config=nowhere.yaml")
    with pytest.raises(ConfigError, match="'nowhere.yaml' is not a file"):
        distributed.check(cfg)


def test_check_method_runs_the_distributed_checks(cores):
    with pytest.raises(ConfigError, match="cannot be split over processes"):
        check_method(
            cfg_of(
                "train.method=baseline",
                "train.baseline.kind=majority",
                "train.distributed.processes=2",
            )  # fmt: skip
        )


def test_ddp_launches_torch_distributed_run(tmp_path):
    command = distributed.launch_command(cfg_of("train.distributed.processes=2"), tmp_path)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in command and "--nproc_per_node=2" in command
    assert command[-3:] == ["-m", "tunelab.train.launched", str(tmp_path)]


def test_a_config_file_launches_accelerate(tmp_path):
    accelerate_config = tmp_path / "fsdp.yaml"
    accelerate_config.write_text("distributed_type: FSDP\n")
    cfg = cfg_of("train.distributed.processes=4", "train.distributed.strategy=fsdp",
                 f"train.distributed.config={accelerate_config}")  # fmt: skip
    command = distributed.launch_command(cfg, tmp_path)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--config_file") + 1] == str(accelerate_config)
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[-3:] == ["-m", "tunelab.train.launched", str(tmp_path)]


def test_ranks_share_the_cores_and_get_no_stale_tracking_uri(cores, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(distributed.TRACKING_ENV, "http://stale")
    env = distributed.rank_environment(cfg_of("train.distributed.processes=2"))
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["TUNELAB_PROGRESS"] == "0"
    assert distributed.TRACKING_ENV not in env  # only a tracked() block hands one over


def test_a_rank_s_tunelab_error_is_raised_as_it_was(tmp_path):
    (tmp_path / "error-rank1.json").write_text(
        json.dumps({"rank": 1, "type": "TrainingError", "message": "The loss became nan"})
    )
    err = distributed.rank_failure(cfg_of("train.distributed.processes=2"), tmp_path, 1)
    assert isinstance(err, TrainingError)
    assert str(err) == "Rank 1 of the distributed run: The loss became nan"


def test_a_crashed_rank_shows_the_last_lines_of_the_launch_log(tmp_path):
    lines = [f"line {i}" for i in range(100)] + ["RuntimeError: gloo connection refused"]
    (tmp_path / distributed.LAUNCH_LOG).write_text("\n".join(lines))
    err = distributed.rank_failure(cfg_of("train.distributed.processes=2"), tmp_path, 1)
    text = str(err)
    assert "exit code 1" in text and "gloo connection refused" in text
    assert "line 99" in text and "line 10\n" not in text
    assert "train.distributed.processes=1" in text


def test_ddp_backend_is_set_through_the_config_not_trainer_args():
    from tunelab.train.arguments import own_arguments
    from tunelab.train.common import DeviceChoice

    device = DeviceChoice("cpu", "fp32")
    assert own_arguments(cfg_of(), "out", device)["ddp_backend"] is None
    chosen = cfg_of("train.distributed.backend=gloo")
    assert own_arguments(chosen, "out", device)["ddp_backend"] == "gloo"
    with pytest.raises(ConfigError, match="train.distributed.backend"):
        check_method(cfg_of("train.trainer_args={ddp_backend: gloo}"))


def test_the_result_note_states_the_batch_per_optimizer_step():
    cfg = cfg_of("train.distributed.processes=2", "train.batch_size=4")
    assert "8 examples per optimizer step" in distributed.note(cfg)


ACCELERATE_CONFIGS = Path(__file__).parents[2] / "configs" / "accelerate"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ddp.yaml", "MULTI_GPU"),
        ("fsdp.yaml", "FSDP"),
        ("deepspeed-zero2.yaml", "DEEPSPEED"),
        ("deepspeed-zero3.yaml", "DEEPSPEED"),
    ],
)
def test_shipped_accelerate_configs_load_in_accelerate(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(ACCELERATE_CONFIGS / name))
    assert loaded.distributed_type == kind
    assert loaded.num_processes == 2 and loaded.num_machines == 1
