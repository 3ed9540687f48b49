"""Reinforcement learning of a decoder policy against rewards: trl's GRPOTrainer (or its
RLOOTrainer, train.grpo.algorithm=rloo) on prompts data (one ``prompt`` column).

- The rewards (train.grpo.rewards: a reward model, a classifier's label probability,
  format and length rules; rewards.py) are resolved and checked before any model loads,
  then loaded once; trl sums them with their weights.
- The policy starts from ``model.name`` or ``train.grpo.init_from`` (an SFT run's folder).
  use_adapter (default): LoRA, the reference is the model with the adapter disabled; the
  adapter and a verified merged model are saved. Else every weight is trained and the
  reference is a frozen copy of the start.
- Held-out prompts (test, else validation) are answered before and after training,
  ``train.grpo.eval_samples`` completions each, sampled as in training and seeded. Each
  completion gets every reward and their weighted sum; after training also its KL to the
  reference, log p_policy(y|x) - log p_ref(y|x) summed over its tokens (an unbiased
  estimate of the sequence KL on the policy's own samples, in nats). Means per prompt go
  to the predictions table, so the gate can pair prompts; the metrics are their means.
- trl disables dropout (the policy's log-probabilities must match between sampling and
  the update), so train.adapter.dropout has no effect here, as in DPO.
- Signs of reward hacking are noted and logged as warnings: a held-out KL above
  train.grpo.kl_budget, or a reward that rose while the completions' length collapsed
  (below half) or exploded (above double).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pandas as pd

from tunelab import models
from tunelab.config import RunConfig
from tunelab.errors import TrainingError
from tunelab.runs import TrainResult
from tunelab.train import arguments, common, preference, rewards

log = logging.getLogger(__name__)

COLUMN = "prompt"
PLAIN_SEPARATOR = preference.PLAIN_SEPARATOR
# Length changes that, with a rising reward, suggest the policy games the reward.
LENGTH_COLLAPSE, LENGTH_EXPLOSION = 0.5, 2.0
CURVES_PLOT = "reward_kl.png"


def train(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, data_version: str | None
) -> TrainResult:
    import torch

    g = cfg.train.grpo
    resolved = rewards.resolve(cfg)  # references checked before anything loads
    device = common.pick_device(cfg)
    source = preference.policy_source(cfg)
    tokenizer = models.load_tokenizer(source, trust_remote_code=cfg.model.trust_remote_code)
    conversational = common.has_chat_template(tokenizer)
    splits = {n: _prompts(f, n) for n, f in data.items() if not f.empty}
    for name, frame in splits.items():
        common.check_prompt_lengths(
            tokenizer,
            preference.rendered_prompts(tokenizer, frame[COLUMN].tolist(), conversational),
            cfg.model.max_length,
            name,
            reserve=g.max_completion_length,
        )
    held_out_name = "test" if "test" in splits else "validation" if "validation" in splits else None
    result = common.new_result(cfg, output_dir, data_version, method="grpo")
    result.notes.append(
        "Rewards: "
        + "; ".join(f"{r.name} = {r.shown} -> {r.pin} (weight {r.weight:g})" for r in resolved)
        + "."
    )
    if cfg.train.policy_init_from:
        result.notes.append(f"The policy starts from {source.path} (train.grpo.init_from).")

    scorers = rewards.load(resolved)  # before the policy: a bad label fails fast
    with common.ResourceMeter() as meter:
        model = preference._load_model(source, cfg)
        model.to(device.device)
        held_out = None
        if held_out_name is not None:
            if held_out_name != "test":
                result.notes.append("No test split: the held-out scores use the validation split.")
            held_out = splits[held_out_name]
            before = answer(model, None, tokenizer, held_out, scorers, cfg, device)
        else:
            result.notes.append("No test or validation split: nothing held out was scored.")
        reference = None
        if not g.use_adapter:
            reference = copy.deepcopy(model).eval().requires_grad_(False)

        trainer = _trainer(
            cfg, model, tokenizer, splits["train"], scorers, conversational, output_dir, device
        )
        policy = common.run_trl_trainer(trainer, output_dir, result)
        policy.eval()
        if result.history:
            plot = curves_plot(result.history, output_dir / CURVES_PLOT, result)
            result.artifacts["reward_plot"] = plot.name
        if held_out is not None:
            after = answer(policy, reference, tokenizer, held_out, scorers, cfg, device)
            table = predictions_table(held_out, before, after, scorers)
            result.metrics.update(policy_metrics(table, scorers, cfg))
            warnings = hacking_warnings(table, g.kl_budget)
            for warning in warnings:
                log.warning(warning)
                result.notes.append(f"Warning: {warning}")
            result.metrics["reward_hacking_warnings"] = float(len(warnings))
            common.save_predictions(table, output_dir, result, source=held_out)
        with torch.no_grad():
            first = splits["train"][COLUMN].head(4)
            probe = [encode_prompt(tokenizer, p, conversational) for p in first]
            preference.save_policy(
                result, policy, tokenizer, cfg, output_dir, probe, device, g.use_adapter
            )
        del trainer
    return common.finish(result, meter, device)


def check(cfg: RunConfig) -> None:
    """What GRPO needs of the config, before the data gate or any model: whole groups per
    batch, and rewards that resolve (registry references, run folders, labels)."""
    g, t = cfg.train.grpo, cfg.train
    completions = t.batch_size * t.grad_accum_steps
    if completions % g.num_generations:
        raise TrainingError(
            f"train.batch_size x train.grad_accum_steps = {completions} completions per step "
            f"is not a multiple of train.grpo.num_generations={g.num_generations}: each "
            f"prompt's {g.num_generations} completions are compared with each other, so a "
            "step holds whole groups. Set train.batch_size to a multiple of num_generations "
            f"(e.g. {g.num_generations * max(1, completions // g.num_generations)})."
        )
    rewards.resolve(cfg)


# ---------------------------------------------------------------- training


def _trainer(cfg, model, tokenizer, frame, scorers, conversational, output_dir, device):
    from datasets import Dataset

    g = cfg.train.grpo
    if g.algorithm == "rloo":
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    args = arguments.training_arguments(
        cfg,
        output_dir,
        device,
        args_class=Config,
        has_validation=False,  # held-out prompts are scored here, before and after
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        beta=g.beta,
        reward_weights=[r.weight for r in scorers.rewards],
        disable_dropout=True,
        model_init_kwargs=None,
        trust_remote_code=cfg.model.trust_remote_code,
        log_completions=False,
    )
    peft_config = preference.lora_config(cfg, model) if g.use_adapter else None
    records = [{COLUMN: trl_prompt(p, conversational)} for p in frame[COLUMN]]
    with preference._quiet_datasets():
        return Trainer(
            model=model,
            reward_funcs=rewards.trl_functions(scorers),
            args=args,
            train_dataset=Dataset.from_list(records),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=common.callbacks(),
        )


def trl_prompt(prompt: str, conversational: bool):
    """A prompt in trl's form: one user message, or plain text ending with a newline."""
    if conversational:
        return [{"role": "user", "content": prompt}]
    return prompt + PLAIN_SEPARATOR


def encode_prompt(tokenizer, prompt: str, conversational: bool) -> list[int]:
    """The prompt's token ids as trl tokenizes them (chat template with the generation
    prompt, or plain text)."""
    if conversational:
        return preference._ids(
            tokenizer.apply_chat_template(
                trl_prompt(prompt, True),
                tokenize=True,
                add_generation_prompt=True,
                return_dict=True,
            )
        )
    return tokenizer(trl_prompt(prompt, False))["input_ids"]


def _prompts(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    if COLUMN not in frame.columns:
        raise TrainingError(
            f"The {split} split has no '{COLUMN}' column: GRPO trains on prompts data "
            f"(data.task=prompts, one '{COLUMN}' column); it has {', '.join(frame.columns)}."
        )
    keep = [c for c in (COLUMN, "source_row") if c in frame.columns]
    return frame.loc[:, keep].reset_index(drop=True)


# ---------------------------------------------------------------- held-out answers


def answer(model, reference, tokenizer, frame, scorers, cfg: RunConfig, device) -> dict:
    """``eval_samples`` sampled completions per prompt, their rewards (each and the
    weighted total), word counts and, when a reference is known or the model carries an
    adapter, their KL to the reference; per-prompt means, and the first completion."""
    import numpy as np

    g = cfg.train.grpo
    conversational = common.has_chat_template(tokenizer)
    prompts = frame[COLUMN].tolist()
    ids = [encode_prompt(tokenizer, p, conversational) for p in prompts]
    engine = preference.scoring_engine(model, tokenizer, cfg, device)
    with_kl = reference is not None or hasattr(model, "disable_adapter")
    per_sample: dict[str, list[list[float]]] = {}
    first: list[str] = []
    for k in range(g.eval_samples):
        samples = engine.sample(
            ids, g.max_completion_length, g.temperature, seed=cfg.train.seed + k
        )
        texts = [tokenizer.decode(s, skip_special_tokens=True).strip() for s in samples]
        if k == 0:
            first = texts
        scores = scorers.score(prompts, texts)
        values = {f"reward_{n}": v for n, v in scores.items()}
        values["reward"] = scorers.total(scores)
        values["words"] = [float(len(t.split())) for t in texts]
        if with_kl:
            values["kl"] = _kl(engine, model, reference, tokenizer, cfg, device, ids, samples)
        for key, column in values.items():
            per_sample.setdefault(key, []).append(column)
    out = {key: np.mean(np.asarray(v, dtype=float), axis=0) for key, v in per_sample.items()}
    out["completion"] = first
    return out


def _kl(engine, model, reference, tokenizer, cfg, device, ids, samples) -> list[float]:
    """log p_policy - log p_ref of each sampled completion (summed over its tokens)."""
    pairs = list(zip(ids, samples, strict=True))
    policy = [logp for logp, _ in engine.logprobs(pairs, "scoring the policy")]
    if reference is not None:
        ref_engine = preference.scoring_engine(reference.to(device.device), tokenizer, cfg, device)
        ref = [logp for logp, _ in ref_engine.logprobs(pairs, "scoring the reference")]
    else:
        with model.disable_adapter():
            ref = [logp for logp, _ in engine.logprobs(pairs, "scoring the reference")]
    return [p - r for p, r in zip(policy, ref, strict=True)]


def predictions_table(frame: pd.DataFrame, before: dict, after: dict, scorers) -> pd.DataFrame:
    """One row per held-out prompt: completions and rewards before and after, the KL."""
    table = pd.DataFrame({COLUMN: frame[COLUMN].tolist()})
    table["completion_before"] = before["completion"]
    table["completion"] = after["completion"]
    for key in ("reward", *(f"reward_{r.name}" for r in scorers.rewards), "words"):
        table[f"{key}_before"] = before[key]
        table[key] = after[key]
    table["kl"] = after.get("kl", 0.0)
    # Which rewards scored the table: the gate pairs only tables scored the same way.
    table["reward_sources"] = "; ".join(f"{r.name}={r.pin}*{r.weight:g}" for r in scorers.rewards)
    return table


def policy_metrics(table: pd.DataFrame, scorers, cfg: RunConfig) -> dict[str, float]:
    """Held-out means before and after (test_...), per reward and in total, and the KL,
    each with a bootstrap interval over the prompts (..._ci_low, ..._ci_high; eval.ci_level);
    the completions' mean length."""
    from tunelab import evaluate

    means = {"test_kl": "kl"}
    for key in ("reward", *(f"reward_{r.name}" for r in scorers.rewards)):
        means[f"test_{key}"] = key
        means[f"before_test_{key}"] = f"{key}_before"
    metrics = {"prompts": float(len(table))}
    for name, column in means.items():
        metrics[name] = float(table[column].mean())
        metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = evaluate.bootstrap_ci(
            table,
            column,
            "prompts",
            resamples=cfg.eval.bootstrap_resamples,
            level=cfg.eval.ci_level,
            seed=cfg.train.seed,
        )
    metrics["test_completion_words"] = float(table["words"].mean())
    metrics["before_test_completion_words"] = float(table["words_before"].mean())
    return metrics


def hacking_warnings(table: pd.DataFrame, kl_budget: float) -> list[str]:
    """Signs the policy games its reward: KL past the budget, a rising reward with a
    collapsed or exploded length."""
    found = []
    kl = float(table["kl"].mean())
    if kl > kl_budget:
        found.append(
            f"the held-out KL to the reference is {kl:.2f} nats per completion, above "
            f"train.grpo.kl_budget={kl_budget:g}: the policy drifted far from where it "
            "started; raise train.grpo.beta or train for fewer steps"
        )
    rose = float(table["reward"].mean()) > float(table["reward_before"].mean())
    before, after = float(table["words_before"].mean()), float(table["words"].mean())
    if rose and before > 0 and after < LENGTH_COLLAPSE * before:
        found.append(
            f"the reward rose while the completions shrank from {before:.1f} to {after:.1f} "
            "words on average: check the samples for empty or degenerate answers"
        )
    if rose and before > 0 and after > LENGTH_EXPLOSION * before:
        found.append(
            f"the reward rose while the completions grew from {before:.1f} to {after:.1f} "
            "words on average: the reward may pay for length"
        )
    return found


def curves_plot(history: list[dict], path: Path, result: TrainResult) -> Path:
    """The sampled completions' mean reward (total and per reward) and the KL to the
    reference per step, as trl logged them: reward up with KL flat is what RL should do."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    keys = ["reward", *sorted({k for h in history for k in h if k.startswith("rewards/")})]
    for key in keys:
        points = [(h["step"], h[key]) for h in history if key in h and h[key] is not None]
        if points and (key == "reward" or key.endswith("/mean")):
            steps, values = zip(*points, strict=True)
            label = "total" if key == "reward" else key.split("/")[1]
            top.plot(steps, values, label=label, linewidth=2 if key == "reward" else 1)
    top.set_ylabel("mean reward (samples)")
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    points = [(h["step"], h["kl"]) for h in history if h.get("kl") is not None]
    if points:
        steps, values = zip(*points, strict=True)
        bottom.plot(steps, values, color="#c44e52")
    bottom.set_ylabel("KL to reference (per token)")
    bottom.set_xlabel("optimizer step")
    bottom.grid(alpha=0.3)
    top.set_title(f"{result.dataset}: {result.method} on {result.model}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
