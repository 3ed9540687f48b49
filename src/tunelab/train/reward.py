"""Reward models: a sequence classifier with one output, trained with trl's RewardTrainer on
prompt/chosen/rejected pairs to score the chosen response above the rejected one.

- Decoders (``smollm2-135m-instruct``, tiny-llama, ...): prompt and response through the
  chat template when the tokenizer has one (trl's conversational format), else plain text
  "prompt\\nresponse" ending with eos, as DPO tokenizes them (preference.encode_pairs).
  The reward is read at the last token.
- Encoders (``minilm-l6``, tiny-bert): prompt and response as a text pair,
  ``[CLS] prompt [SEP] response [SEP]``, the reward read from the pooled first token.
- ``train.reward.use_adapter`` (default): LoRA on every linear projection, the new score
  head trained in full; the adapter and a verified merged model are saved. False: every
  weight is trained.

The pairs are tokenized here (cut to the max length, keeping the start), so trl drops none
of them silently. The held-out split is scored with the trained model: each response's
reward, the margin chosen - rejected and a win (1, a tie 0.5, 0) per pair; reward accuracy
with its CI comes from the shared evaluation code, the margins are plotted.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import pandas as pd

from tunelab import evaluate, models
from tunelab.config import RunConfig
from tunelab.errors import TrainingError
from tunelab.runs import TrainResult
from tunelab.train import arguments, common, preference
from tunelab.train.engine import pad

log = logging.getLogger(__name__)

FAMILIES = ("decoder", "encoder")
MARGIN_PLOT = "reward_margins.png"


def train(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, data_version: str | None
) -> TrainResult:
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    settings = cfg.train.reward
    device = common.pick_device(cfg)
    source = reward_source(cfg)
    tokenizer = models.load_tokenizer(source, trust_remote_code=cfg.model.trust_remote_code)
    max_length = settings.max_length or cfg.model.max_length
    conversational = source.family == "decoder" and common.has_chat_template(tokenizer)

    splits = {n: preference._pairs(f, n) for n, f in data.items() if not f.empty}
    result = common.new_result(cfg, output_dir, data_version, method="reward")
    if source.family == "decoder":
        splits = preference.fit_splits(
            tokenizer, splits, max_length, conversational, cfg.data.truncation, result
        )
    encoded = {
        n: encode(tokenizer, f, max_length, source.family, conversational)
        for n, f in splits.items()
    }
    held_out_name = "test" if "test" in splits else "validation" if "validation" in splits else None
    result.notes.append(_format_note(source.family, conversational))

    with common.ResourceMeter() as meter:
        model = _load_model(source, cfg, tokenizer)
        args = arguments.training_arguments(
            cfg,
            output_dir,
            device,
            args_class=RewardConfig,
            has_validation="validation" in splits,
            max_length=None,  # cut here already: trl would drop longer pairs
            disable_dropout=True,
            center_rewards_coefficient=settings.center_rewards_coefficient,
            dataset_num_proc=None,
            model_init_kwargs=None,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        peft_config = lora_config(cfg, model) if settings.use_adapter else None
        with preference._quiet_datasets():
            trainer = RewardTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_list(encoded["train"]),
                eval_dataset=(
                    Dataset.from_list(encoded["validation"]) if "validation" in encoded else None
                ),
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=common.callbacks(),
            )
        scorer = common.run_trl_trainer(trainer, output_dir, result)

        scorer.eval()
        if held_out_name is None:
            result.notes.append("No test or validation split: nothing held out was scored.")
        else:
            if held_out_name != "test":
                result.notes.append("No test split: the held-out scores use the validation split.")
            pairs = encoded[held_out_name]
            with torch.no_grad():
                chosen = rewards(scorer, [p["chosen_ids"] for p in pairs], tokenizer, cfg, device)
                rejected = rewards(
                    scorer, [p["rejected_ids"] for p in pairs], tokenizer, cfg, device
                )
            table = predictions_table(splits[held_out_name], chosen, rejected)
            result.metrics["test_reward_accuracy"] = evaluate.metric_value(
                table, "reward_accuracy", "preference"
            )
            result.metrics["test_reward_margin"] = float(table["reward_margin"].mean())
            common.save_predictions(table, output_dir, result)
            plot = margin_plot(table, output_dir / MARGIN_PLOT, f"{cfg.data.name}: reward model")
            result.artifacts["margin_plot"] = plot.name
        with torch.no_grad():
            _save(result, scorer, tokenizer, cfg, output_dir, encoded.get(held_out_name), device)
        del trainer
    return common.finish(result, meter, device)


def reward_source(cfg: RunConfig) -> models.ResolvedModel:
    """``model.name``, which must be a decoder or an encoder (a sequence classifier)."""
    resolved = models.resolve(cfg.model.name, cfg.model.revision)
    if resolved.family not in FAMILIES:
        raise TrainingError(
            f"A reward model is a decoder or encoder with a score head, but model.name="
            f"{cfg.model.name} is a {resolved.family} model. Use smollm2-135m-instruct, "
            "minilm-l6, tiny-llama or tiny-bert."
        )
    return resolved


def _load_model(source: models.ResolvedModel, cfg: RunConfig, tokenizer):
    """A sequence classifier with one output (the reward), fp32; its new head is seeded by
    train.seed (common.seed_everything ran before)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(source.path),
            num_labels=1,
            dtype=torch.float32,
            trust_remote_code=cfg.model.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise TrainingError(
            f"Could not load {source.path} ('{source.reference}') as a reward model (a "
            f"sequence classifier with one output): {exc}"
        ) from None
    # The classifier reads the reward at the last token that is not padding.
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def lora_config(cfg: RunConfig, model):
    """LoRA on the model's linear projections; peft trains the new score head in full."""
    from peft import LoraConfig, TaskType

    dpo_style = preference.lora_config(cfg, model)
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=dpo_style.r,
        lora_alpha=dpo_style.lora_alpha,
        lora_dropout=dpo_style.lora_dropout,
        target_modules=list(dpo_style.target_modules),
        fan_in_fan_out=dpo_style.fan_in_fan_out,
        bias="none",
    )


# ---------------------------------------------------------------- data


def encode(
    tokenizer, frame: pd.DataFrame, max_length: int, family: str, conversational: bool
) -> list[dict[str, list[int]]]:
    """trl's tokenized form, {"chosen_ids", "rejected_ids"} per pair, cut to max_length."""
    if family == "decoder":
        return [
            {"chosen_ids": c, "rejected_ids": r}
            for c, _, r, _ in preference.encode_pairs(tokenizer, frame, max_length, conversational)
        ]
    rows = []
    for prompt, chosen, rejected in frame[list(preference.COLUMNS)].itertuples(index=False):
        ids = [
            tokenizer(prompt, response, truncation=True, max_length=max_length)["input_ids"]
            for response in (chosen, rejected)
        ]
        rows.append({"chosen_ids": ids[0], "rejected_ids": ids[1]})
    return rows


def _format_note(family: str, conversational: bool) -> str:
    if family == "encoder":
        return "Prompt and response are scored as a text pair ([CLS] prompt [SEP] response)."
    if conversational:
        return "Prompt and response go through the tokenizer's chat template."
    return (
        "The tokenizer has no chat template: prompt and response are plain text separated "
        "by a newline, the response ends with the eos token."
    )


# ---------------------------------------------------------------- scoring


def rewards(model, sequences: list[list[int]], tokenizer, cfg: RunConfig, device) -> list[float]:
    """The model's reward for each token sequence, in batches of train.batch_size."""
    import torch

    model.to(device.device)
    autocast = (
        torch.autocast(device.device, dtype=device.torch_dtype)
        if device.precision != "fp32"
        else nullcontext()
    )
    scores: list[float] = []
    size = cfg.train.batch_size
    for start in range(0, len(sequences), size):
        ids, mask = pad(sequences[start : start + size], tokenizer.pad_token_id, "right")
        with autocast:
            logits = model(input_ids=ids.to(device.device), attention_mask=mask.to(device.device))
        scores += logits.logits[:, 0].float().cpu().tolist()
    return scores


def predictions_table(frame: pd.DataFrame, chosen: list[float], rejected: list[float]):
    """One row per held-out pair: both rewards, the margin and the win (a tie half)."""
    table = frame.loc[:, list(preference.COLUMNS)].reset_index(drop=True).copy()
    table["reward_chosen"] = chosen
    table["reward_rejected"] = rejected
    table["reward_margin"] = table["reward_chosen"] - table["reward_rejected"]
    table["reward_win"] = evaluate.win_scores(table["reward_margin"])
    return table


def margin_plot(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Histogram of the held-out margins (chosen - rejected): right of 0 is a pair ordered
    right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    margins = table["reward_margin"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(margins, bins=min(30, max(5, len(margins) // 3)), color="#4c72b0")
    ax.axvline(0.0, color="black", linewidth=1)
    share = float((margins > 0).mean()) if len(margins) else 0.0
    ax.set_title(f"{title}\n{share:.0%} of {len(margins)} held-out pairs ordered right")
    ax.set_xlabel("reward(chosen) - reward(rejected)")
    ax.set_ylabel("pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- saving


def _save(result, scorer, tokenizer, cfg: RunConfig, output_dir: Path, held_out, device) -> None:
    """model/ (full), or adapter/ and merged/, whose rewards match the adapter's."""
    if not cfg.train.reward.use_adapter:
        _save_model(scorer, tokenizer, output_dir / "model")
        result.artifacts["model"] = "model"
        return
    adapter = output_dir / "adapter"
    scorer.save_pretrained(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    result.artifacts["adapter"] = "adapter"
    probe = [p["chosen_ids"] for p in (held_out or [])[:4]]
    before = rewards(scorer, probe, tokenizer, cfg, device) if probe else []
    merged = scorer.merge_and_unload()
    if probe:
        after = rewards(merged, probe, tokenizer, cfg, device)
        diff = max(abs(a - b) for a, b in zip(before, after, strict=True))
        result.metrics["merge_max_abs_diff"] = diff
        if not diff <= cfg.train.adapter.merge_atol:
            message = (
                f"The merged reward model's scores differ from the adapter model's by up to "
                f"{diff:.2e} (> train.adapter.merge_atol={cfg.train.adapter.merge_atol:g}), so "
                f"no merged model was saved; use the adapter in {adapter.name}/."
            )
            log.warning(message)
            result.notes.append(message)
            return
    _save_model(merged, tokenizer, output_dir / "merged")
    result.artifacts["merged"] = "merged"


def _save_model(model, tokenizer, path: Path) -> None:
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
