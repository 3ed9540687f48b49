"""What every training method shares: refusing nonsense early, divergence and OOM errors,
devices, run folders."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from tunelab import config, runs
from tunelab.errors import ConfigError, ModelError, TrainingError
from tunelab.train import arguments, check_method, common, train
from tunelab.workspace import Workspace


@pytest.mark.parametrize(
    ("method", "task", "advice"),
    [
        ("dpo", "classification", "baseline, full or an adapter"),
        ("full", "preference", "method=dpo"),
        ("lora", "preference", "method=dpo"),
    ],
)
def test_method_task_mismatch_is_refused_before_loading_anything(method, task, advice):
    cfg = config.load(None, [f"train.method={method}", f"data.task={task}"])
    with pytest.raises(TrainingError, match=f"train.method={method} cannot train {task}") as err:
        check_method(cfg)
    assert advice in str(err.value)


def test_sklearn_baselines_need_labels():
    cfg = config.load(None, ["train.baseline.kind=tfidf", "data.task=generation"])
    with pytest.raises(TrainingError, match="kind=prompt"):
        check_method(cfg)


def test_unknown_method_names_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        config.load(None, ["train.method=qlora"])
    assert "train.method" in str(err.value) and "'lora'" in str(err.value)


def test_unknown_model_alias_lists_the_aliases(tmp_path, sentiment_splits):
    cfg = config.load(None, ["train.method=full", "model.name=tiny-gpt5"])
    with pytest.raises((ModelError, TrainingError)) as err:
        train(cfg, sentiment_splits, Workspace(tmp_path))
    assert "tiny-gpt5" in str(err.value) and "tiny-gpt2" in str(err.value)


def test_a_nan_loss_stops_training_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 10}')
    guard = common.divergence_guard()
    args = SimpleNamespace(output_dir=str(tmp_path))
    guard.on_log(args, SimpleNamespace(global_step=12), None, logs={"loss": 0.7})  # fine
    with pytest.raises(TrainingError) as err:
        guard.on_log(args, SimpleNamespace(global_step=14), None, logs={"loss": math.nan})
    message = str(err.value)
    assert "step 14" in message and "checkpoint-10" in message
    assert "learning_rate" in message
    assert (tmp_path / "checkpoint-10").is_dir()  # kept


def test_out_of_memory_becomes_advice(tmp_path):
    import torch

    class Exhausted:
        def train(self, resume_from_checkpoint=None):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(TrainingError) as err:
        common.run_trainer(Exhausted(), tmp_path)
    message = str(err.value)
    assert "Out of memory" in message
    for advice in ("method=lora", "batch_size", "gradient_checkpointing"):
        assert advice in message


def test_cuda_requested_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(TrainingError, match="no CUDA device"):
        common.pick_device(config.load(None, ["train.device=cuda"]))
    cpu = common.pick_device(config.load(None, []))
    assert (cpu.device, cpu.precision) == ("cpu", "fp32")


def test_run_folder_is_stable_and_changes_with_the_training_config(tmp_path):
    ws = Workspace(tmp_path)
    cfg = config.load(None, ["train.method=lora", "model.name=minilm-l6"])
    same = config.load(None, ["train.method=lora", "model.name=minilm-l6"])
    other = config.load(None, ["train.method=lora", "model.name=minilm-l6", "train.adapter.r=4"])
    folder = runs.run_dir(cfg, ws, "abc")
    assert folder == runs.run_dir(same, ws, "abc")
    assert folder.name.startswith("lora-minilm-l6-")
    assert folder != runs.run_dir(other, ws, "abc")
    assert folder != runs.run_dir(cfg, ws, "def")  # another data version
    majority = config.load(None, ["train.baseline.kind=majority"])
    assert runs.run_dir(majority, ws, "abc").name.startswith("baseline-majority-sklearn-")


def test_resume_skips_a_checkpoint_cut_off_while_saving(tmp_path):
    for step in (10, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 10}')
    (tmp_path / "checkpoint-20" / "model.safetensors").write_bytes(b"partial")  # killed here
    assert common.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text('{"global_st')  # torn write
    assert common.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text('{"global_step": 20}')
    assert common.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-20")
    assert common.last_checkpoint(tmp_path / "missing") is None


def test_training_never_prepares_or_versions_data():
    """train/ reads prepared splits; preparing and versioning them is the data stage's job."""
    import ast
    from pathlib import Path

    import tunelab.train

    forbidden = ("tunelab.data.prepare", "tunelab.data.versioning")
    for path in Path(tunelab.train.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith(forbidden) for n in names), (path.name, names)


def test_save_predictions_puts_source_row_first_and_names_the_artifact(tmp_path):
    import pandas as pd

    result = runs.TrainResult("m", "x", "d", "classification", str(tmp_path))
    source = pd.DataFrame({"text": ["a", "b"], "source_row": [7, 3]})
    common.save_predictions(pd.DataFrame({"prediction": ["p", "q"]}), tmp_path, result, source)
    table = pd.read_parquet(tmp_path / runs.PREDICTIONS_FILE)
    assert list(table.columns) == ["source_row", "prediction"]
    assert table["source_row"].tolist() == [7, 3]
    assert result.artifacts == {"predictions": runs.PREDICTIONS_FILE}


# ---------------------------------------------------------------- where training starts


def trainer_for(folder, *overrides: str):
    """A transformers Trainer on a 4-weight regression: 12 steps of 4 rows, checkpoints
    every 4 steps, the loss logged every 2; ``steps`` counts the steps it runs."""
    import torch
    from transformers import Trainer, TrainerCallback

    class Regression(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, x, labels):
            return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}

    class Steps(TrainerCallback):
        count = 0

        def on_step_end(self, args, state, control, **kwargs):
            Steps.count += 1

    cfg = config.load(
        None,
        [
            "train.max_steps=12",
            "train.batch_size=4",
            "train.save_steps=4",
            "train.save_total_limit=3",
            "train.logging_steps=2",
            "train.learning_rate=0.05",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    x = torch.randn(48, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    rows = [{"x": x[i], "labels": y[i]} for i in range(len(x))]
    args = arguments.training_arguments(
        cfg, folder, common.DeviceChoice("cpu", "fp32"), has_validation=False,
        remove_unused_columns=False,
    )  # fmt: skip
    trainer = Trainer(model=Regression(), args=args, train_dataset=rows, callbacks=[Steps()])
    return trainer, Steps


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted 12-step run: its folder and TrainOutput."""
    folder = tmp_path_factory.mktemp("straight")
    trainer, steps = trainer_for(folder)
    output, resumed = common.run_trainer(trainer, folder)
    assert resumed is None and steps.count == 12
    return folder, output


def test_a_finished_run_is_trained_again_from_scratch_not_resumed(straight, tmp_path):
    """A recomputed train step finds its finished folder: it must train every step again,
    not resume from the final checkpoint (zero steps, the old weights as new)."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(straight[0], folder)
    (folder / runs.RESULT_FILE).write_text("{}")  # the run had finished
    trainer, steps = trainer_for(folder)
    output, resumed = common.run_trainer(trainer, folder)
    assert resumed is None
    assert steps.count == 12 and output.global_step == 12
    assert output.training_loss == pytest.approx(straight[1].training_loss)
    assert not (folder / runs.RESULT_FILE).exists()  # written again when the run finishes


def test_an_interrupted_run_resumes_and_its_train_loss_covers_every_step(straight, tmp_path):
    import shutil
    from pathlib import Path

    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copytree(straight[0] / "checkpoint-4", folder / "checkpoint-4")  # killed at step 5
    # Keeping one checkpoint, the Trainer deletes the one it resumed from while training.
    trainer, steps = trainer_for(folder, "train.save_total_limit=1")
    output, resumed = common.run_trainer(trainer, folder)
    assert resumed == str(folder / "checkpoint-4") and not Path(resumed).exists()
    assert steps.count == 8 and output.global_step == 12
    # The Trainer alone averages only the 8 resumed steps.
    expected = straight[1].training_loss
    assert output.training_loss == pytest.approx(expected, rel=1e-6)
    assert output.metrics["train_loss"] == pytest.approx(expected, rel=1e-6)


def test_train_resume_from_names_a_checkpoint_to_start_from(straight, tmp_path):
    named = straight[0] / "checkpoint-8"
    trainer, steps = trainer_for(tmp_path / "run", f"train.resume_from={named}")
    output, resumed = common.run_trainer(trainer, tmp_path / "run")
    assert resumed == str(named) and steps.count == 4
    assert output.training_loss == pytest.approx(straight[1].training_loss, rel=1e-6)

    trainer, _ = trainer_for(tmp_path / "other", f"train.resume_from={tmp_path / 'nothing'}")
    with pytest.raises(TrainingError, match="train.resume_from=.* is not a checkpoint"):
        common.run_trainer(trainer, tmp_path / "other")


def test_the_loss_before_a_resume_comes_from_the_logged_losses():
    # Logged with logging_first_step and every 4 steps: each row is the mean since the last.
    history = [
        {"step": 1, "loss": 1.0},
        {"step": 5, "loss": 0.8},
        {"step": 5, "eval_loss": 0.9},
        {"step": 8, "loss": 0.5},
        {"step": 12, "loss": 0.1},  # after the checkpoint: not part of it
    ]
    assert common.logged_loss(history, 8) == (pytest.approx(1.0 + 4 * 0.8 + 3 * 0.5), 8)


def test_nested_meters_keep_the_outer_cuda_peak(monkeypatch):
    """Only the outermost meter resets the CUDA peak: the run's peak covers loading the
    model, not just trainer.train() inside it."""
    import torch

    resets = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: resets.append(1))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 3 * 2**20)
    with common.ResourceMeter() as outer, common.ResourceMeter() as inner:
        pass
    assert len(resets) == 1
    assert outer.cuda_max_allocated_mb == inner.cuda_max_allocated_mb == 3.0
    with common.ResourceMeter():
        pass
    assert len(resets) == 2  # a later run resets again
