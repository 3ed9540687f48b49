"""Training methods, one module each, behind one entry point: ``train(cfg, data)``.

- baseline: majority class, TF-IDF + logistic regression (baseline.py), zero/few-shot
  prompting (prompting.py, through the LM engine in engine.py)
- full: full fine-tuning with the transformers Trainer (finetune.py); decoders on
  generation and chat data through trl's SFTTrainer (sft.py)
- lora, prefix, prompt, ia3: PEFT adapters, with a verified merged model (adapters.py)
- dpo: preference optimisation with trl (preference.py)
- reward: a reward model on preference pairs with trl's RewardTrainer (reward.py)
- grpo: a policy tuned against rewards with trl's GRPO or RLOO trainer (grpo.py, the
  rewards in rewards.py)
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from tunelab.config import RunConfig
from tunelab.errors import TrainingError
from tunelab.runs import TrainResult, run_dir
from tunelab.train import distributed, quantization
from tunelab.train.arguments import check_trainer_args
from tunelab.train.common import seed_everything
from tunelab.workspace import Workspace

ADAPTER_METHODS = ("lora", "prefix", "prompt", "ia3")
# Which task types each method can train.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "baseline": ("classification", "generation", "chat", "preference"),
    "full": ("classification", "generation", "chat"),
    **{m: ("classification", "generation", "chat") for m in ADAPTER_METHODS},
    "dpo": ("preference",),
    "reward": ("preference",),
    "grpo": ("prompts",),
}
ADVICE = {
    "preference": "use train.method=dpo (a policy) or reward (a reward model) for preference data",
    "classification": "use baseline, full or an adapter method (lora, prefix, prompt, ia3)",
    "generation": "use baseline (prompting), full or an adapter method for generation data",
    "chat": "use baseline (prompting), full or an adapter method (lora, ia3) for chat data",
    "prompts": "use train.method=grpo (a policy tuned against train.grpo.rewards) for prompts "
    "data; its baseline is the policy before training",
}


def check_method(cfg: RunConfig) -> None:
    """Refuse method/task pairs that make no sense, before anything is loaded."""
    method, task = cfg.train.method, cfg.data.task
    if task not in SUPPORTED[method]:
        raise TrainingError(
            f"train.method={method} cannot train {task} data (dataset '{cfg.data.name}'): "
            f"{method} supports {', '.join(SUPPORTED[method])}. {ADVICE[task].capitalize()}."
        )
    kind = cfg.train.baseline.kind
    if method == "baseline" and kind in ("majority", "tfidf") and task != "classification":
        raise TrainingError(
            f"train.baseline.kind={kind} needs classification data, but '{cfg.data.name}' is "
            f"{task} data. Use train.baseline.kind=prompt."
        )
    if method == "grpo":
        from tunelab.train import grpo

        grpo.check(cfg)
    check_trainer_args(cfg)
    quantization.check(cfg)
    distributed.check(cfg)


def check_splits(cfg: RunConfig, data: dict[str, pd.DataFrame]) -> None:
    if "train" not in data or data["train"].empty:
        raise TrainingError(
            f"Dataset '{cfg.data.name}' has no training rows (splits: {sorted(data)}). "
            "Run `tunelab data prepare` for it first."
        )


def train(
    cfg: RunConfig,
    data: dict[str, pd.DataFrame],
    workspace: Workspace | None = None,
    data_version: str | None = None,
    output_dir: Path | None = None,
) -> TrainResult:
    """Train ``cfg.train.method`` on the splits; results and files land in the run folder.

    The folder is named by the run's fingerprint (runs.fingerprint: config, data version,
    code, libraries, starting weights). Re-run, an interrupted run resumes from its last
    checkpoint; a finished one trains again from the start (train.resume_from names a
    checkpoint to start from instead).

    With train.distributed.processes > 1 the Trainer's training runs in that many launched
    processes (tunelab.train.distributed); the rest of the method runs here, as always.
    """
    check_method(cfg)
    check_splits(cfg, data)
    workspace = workspace or Workspace.resolve()
    output_dir = output_dir or run_dir(cfg, workspace, data_version)
    output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.train.seed)
    method = cfg.train.method
    if method == "baseline" and cfg.train.baseline.kind == "prompt":
        from tunelab.train import prompting as module
    elif method == "baseline":
        from tunelab.train import baseline as module
    elif method == "full":
        from tunelab.train import finetune as module
    elif method in ADAPTER_METHODS:
        from tunelab.train import adapters as module
    elif method == "reward":
        from tunelab.train import reward as module
    elif method == "grpo":
        from tunelab.train import grpo as module
    else:
        from tunelab.train import preference as module
    if not distributed.is_distributed(cfg) or distributed.role() == "rank":
        return module.train(cfg, data, output_dir, data_version)
    started = time.perf_counter()
    distributed.launch(cfg, data, workspace, data_version, output_dir)
    with distributed.playing("adopt"):
        result = module.train(cfg, data, output_dir, data_version)
    result.wall_seconds = round(time.perf_counter() - started, 3)  # the ranks' time too
    result.notes.append(distributed.note(cfg))
    result.save()
    return result
