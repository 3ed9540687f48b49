"""train.distributed for real: 2 gloo processes on the CPU against 1 process with twice the
per-device batch (the same examples per optimizer step), for full fine-tuning, LoRA and
DPO; only rank 0 writes; a killed distributed run resumes. `make test-scale`.

The tolerance: the ranks see the same examples per step, but DistributedSampler deals
them out in another order than the single process's sampler, and gloo sums gradients in
another order, so the runs are not bit-identical. Measured on 2 CPU cores (tiny-bert,
12 steps at lr 1e-3; tiny-llama DPO, 8 steps): |validation loss difference| 0.0015 (full),
0.00007 (LoRA), DPO train loss 2e-7. TOLERANCE is about 7x the largest of these and well
below what the training moved the loss, so a wrong batch size or loss scale (each rank's
loss doubled, as transformers does for heads that ignore num_items_in_batch) fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunelab import config
from tunelab.train import distributed, train
from tunelab.workspace import Workspace

pytestmark = pytest.mark.scale

TOLERANCE = 0.01  # absolute, on losses (nats)
UNTRAINED_LOSS = 1.0986  # ln 3: three balanced classes
CLASSIFICATION = [
    "data.name=sentiment",
    "data.task=classification",
    "model.name=tiny-bert",
    "model.max_length=64",
    "train.max_steps=12",
    "train.save_steps=6",
    "train.logging_steps=2",
    "train.learning_rate=1e-3",
    "train.lr_scheduler=constant",
    "train.device=cpu",
]
PREFERENCE = [
    "data.name=preferences",
    "data.task=preference",
    "train.method=dpo",
    "model.name=tiny-llama",
    "model.max_length=128",
    "train.max_steps=8",
    "train.save_steps=4",
    "train.logging_steps=2",
    "train.learning_rate=1e-3",
    "train.lr_scheduler=constant",
    "train.device=cpu",
]


@pytest.fixture(autouse=True)
def one_thread_per_rank(monkeypatch):
    # Both sides get one core each way: the single process does not race the ranks.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def both(tmp_path, data, *overrides, batch: int = 8):
    """(1 process at ``batch``, 2 processes at batch/2): same examples per step."""
    results = []
    for processes, per_device in ((1, batch), (2, batch // 2)):
        cfg = config.load(
            None,
            [
                *overrides,
                f"train.batch_size={per_device}",
                f"train.distributed.processes={processes}",
            ],
        )
        workspace = Workspace(tmp_path / f"p{processes}")
        results.append(train(cfg, data, workspace, "v1"))
    return results


def files_of(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_full_fine_tuning_on_two_gloo_processes_matches_one(tmp_path, sentiment_splits):
    one, two = both(tmp_path, sentiment_splits, "train.method=full", *CLASSIFICATION)
    for key in ("validation_loss", "test_loss", "train_loss"):
        assert abs(one.metrics[key] - two.metrics[key]) <= TOLERANCE, key
    assert two.metrics["validation_loss"] < UNTRAINED_LOSS  # it learned, as one did
    assert two.train_steps == one.train_steps == 12
    assert two.resumed_from is None and two.tokens_per_second
    assert any("Trained by 2 processes" in note for note in two.notes)
    fit = json.loads((two.folder / distributed.FOLDER / distributed.FIT_FILE).read_text())
    assert fit["world_size"] == 2
    # Only rank 0 wrote: the folder holds what a single-process run writes, the ranks'
    # inputs and record, and the per-rank RNG states the Trainer keeps in checkpoints.
    extra = files_of(two.folder) - files_of(one.folder)
    allowed = {f"{c}/rng_state_{r}.pth" for c in ("checkpoint-6", "checkpoint-12") for r in (0, 1)}
    assert {f for f in extra if not f.startswith("distributed/")} <= allowed
    assert {"checkpoint-12/rng_state_1.pth"} <= extra
    assert not (two.folder / distributed.FOLDER / distributed.DATA_DIR).exists()


def test_lora_on_two_gloo_processes_matches_one(tmp_path, sentiment_splits):
    one, two = both(tmp_path, sentiment_splits, "train.method=lora", *CLASSIFICATION)
    for key in ("validation_loss", "test_loss", "train_loss"):
        assert abs(one.metrics[key] - two.metrics[key]) <= TOLERANCE, key
    assert "adapter" in two.artifacts and "merged" in two.artifacts
    assert two.metrics["merge_max_abs_diff"] <= 1e-4


def test_dpo_on_two_gloo_processes_matches_one(tmp_path, preference_splits):
    one, two = both(tmp_path, preference_splits, *PREFERENCE, batch=4)
    assert abs(one.metrics["train_loss"] - two.metrics["train_loss"]) <= TOLERANCE
    assert two.metrics["train_loss"] < 0.6931  # ln 2: below where DPO starts
    assert two.metrics["test_reward_accuracy"] == pytest.approx(
        one.metrics["test_reward_accuracy"], abs=0.2
    )


def ranks_of(root: Path) -> list[int]:
    """The processes whose command line names the workspace (the ranks name its run folder)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "tunelab.train.launched" in command and str(root) in command:
            found.append(int(proc.name))
    return found


def checkpointed(root: Path) -> bool:
    """A complete checkpoint of both ranks (the Trainer writes trainer_state.json last)."""
    return any(
        (state.parent / "rng_state_1.pth").is_file()
        for state in root.rglob("checkpoint-*/trainer_state.json")
    )


KILL_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import bundled_splits
from tunelab import config
from tunelab.train import train
from tunelab.workspace import Workspace
cfg = config.load(None, {overrides!r})
train(cfg, bundled_splits("sentiment", 120), Workspace(Path({root!r})), "v1")
"""


def test_a_killed_distributed_run_resumes_from_its_last_checkpoint(tmp_path, sentiment_splits):
    overrides = [
        "train.method=full",
        *CLASSIFICATION,
        "train.max_steps=400",
        "train.save_steps=10",
        "train.batch_size=4",
        "train.distributed.processes=2",
    ]
    root = tmp_path / "ws"
    root.mkdir()
    script = KILL_SCRIPT.format(
        tests=str(Path(__file__).parents[1]), overrides=overrides, root=str(root)
    )
    # Its own session: the launcher, torch.distributed.run and both ranks die together.
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TUNELAB_PROGRESS": "0"},
    )
    try:
        deadline = time.monotonic() + 180
        while not checkpointed(root):
            assert proc.poll() is None, f"training ended (rc {proc.returncode}) too early"
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # The ranks notice their launcher is gone and stop (distributed.watch_launcher).
    deadline = time.monotonic() + 15
    while ranks_of(root):
        assert time.monotonic() < deadline, f"ranks left running: {ranks_of(root)}"
        time.sleep(0.1)
    [folder] = list((root / "runs").glob("*/*"))
    assert not (folder / "train_result.json").exists()
    cfg = config.load(None, overrides)
    result = train(cfg, sentiment_splits, Workspace(root), "v1")
    assert result.folder == folder
    assert result.resumed_from and Path(result.resumed_from).parent == folder
    assert result.train_steps == 400
    assert any("Resumed from" in note for note in result.notes)
