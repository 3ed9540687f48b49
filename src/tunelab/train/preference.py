"""Direct Preference Optimisation (DPO) of a decoder LM with trl, on prompt/chosen/rejected pairs.

- use_adapter=True (default): a LoRA adapter is trained through trl's ``peft_config``; the
  reference policy is the same model with the adapter disabled (one model in memory).
  The adapter and a verified merged model (merge_and_unload) are saved.
- use_adapter=False: full DPO; the reference is an explicit frozen copy of the initial policy.

The policy starts from ``model.name`` or from ``train.dpo.init_from`` (an earlier run's folder).
Prompts go through the tokenizer's chat template when it has one (trl's conversational format);
otherwise prompt and response are plain text separated by a newline.

Before and after training the held-out test split is scored with our own code (not trl's,
the shared LM engine): sequence log-probabilities of chosen and rejected responses under the
policy and the reference, and the implicit DPO reward ``r = beta * (logp_policy - logp_ref)``;
the metrics of that table come from :func:`tunelab.evaluate.preference_metrics`. A pair whose
margin is 0 counts half a win, so the untrained policy (the reference) has reward accuracy 0.5.

trl's defaults target big GPUs (bf16, gradient checkpointing, lr 1e-6, max_length 1024); every
setting that matters is passed from the run config instead. trl disables dropout in DPO
(policy and reference must agree before the first step), so ``adapter.dropout`` has no effect.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pandas as pd

from tunelab import evaluate, models
from tunelab.config import RunConfig
from tunelab.errors import TrainingError
from tunelab.runs import TrainResult
from tunelab.train import arguments, common
from tunelab.train.engine import Engine, pad

log = logging.getLogger(__name__)

COLUMNS = ("prompt", "chosen", "rejected")
# Plain-text format (no chat template): the response starts on the line after the prompt.
PLAIN_SEPARATOR = "\n"


def train(
    cfg: RunConfig, data: dict[str, pd.DataFrame], output_dir: Path, data_version: str | None
) -> TrainResult:
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    d = cfg.train.dpo
    device = common.pick_device(cfg)
    source = policy_source(cfg)
    tokenizer = models.load_tokenizer(source, trust_remote_code=cfg.model.trust_remote_code)
    max_length = d.max_length or cfg.model.max_length
    conversational = common.has_chat_template(tokenizer)

    splits = {name: _pairs(frame, name) for name, frame in data.items() if not frame.empty}
    result = common.new_result(cfg, output_dir, data_version, method="dpo")
    splits = fit_splits(tokenizer, splits, max_length, conversational, cfg.data.truncation, result)
    held_out_name = "test" if "test" in splits else "validation" if "validation" in splits else None

    if d.init_from:
        result.notes.append(f"Policy and reference start from {source.path} (train.dpo.init_from).")
    result.notes.append(
        "Prompts use the tokenizer's chat template (conversational format)."
        if conversational
        else "The tokenizer has no chat template: prompt and response are plain text "
        "separated by a newline, the response ends with the eos token."
    )

    with common.ResourceMeter() as meter:
        model = _load_model(source, cfg)
        ref_model = None
        if not d.use_adapter:
            # Full DPO: an explicit frozen copy of the initial policy is the reference.
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        held_out = None
        if held_out_name is not None:
            held_out = encode_pairs(tokenizer, splits[held_out_name], max_length, conversational)
            if held_out_name != "test":
                result.notes.append("No test split: the held-out scores use the validation split.")
            # Before training the policy is the reference, so every implicit reward is 0;
            # only the log-likelihood win rate says something about the initial policy.
            model.to(device.device)
            before = score_pairs(scoring_engine(model, tokenizer, cfg, device), held_out)
        else:
            result.notes.append("No test or validation split: nothing held out was scored.")

        args = arguments.training_arguments(
            cfg,
            output_dir,
            device,
            args_class=DPOConfig,
            has_validation="validation" in splits,
            beta=d.beta,
            loss_type=[d.loss_type],
            max_length=max_length,
            truncation_mode="keep_start",
            precompute_ref_log_probs=False,
            disable_dropout=True,
            padding_free=False,
            pad_to_multiple_of=None,
            dataset_num_proc=None,
            model_init_kwargs=None,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        peft_config = lora_config(cfg, model) if d.use_adapter else None
        with _quiet_datasets():
            trainer = DPOTrainer(
                model=model,
                ref_model=ref_model,
                args=args,
                train_dataset=Dataset.from_list(
                    trl_records(splits["train"], conversational, tokenizer.eos_token)
                ),
                eval_dataset=(
                    Dataset.from_list(
                        trl_records(splits["validation"], conversational, tokenizer.eos_token)
                    )
                    if "validation" in splits
                    else None
                ),
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=common.callbacks(),
            )
        policy = common.run_trl_trainer(trainer, output_dir, result)

        policy.eval()
        if held_out is not None:
            after = score_pairs(scoring_engine(policy, tokenizer, cfg, device), held_out)
            reference = (
                trainer.accelerator.unwrap_model(trainer.ref_model)
                if trainer.ref_model is not None
                else policy
            )
            with _reference_mode(reference, adapter=d.use_adapter):
                ref = score_pairs(scoring_engine(reference, tokenizer, cfg, device), held_out)
            table = predictions_table(splits[held_out_name], before, after, ref, d.beta)
            result.metrics.update(evaluate.preference_metrics(table, prefix="test_"))
            result.metrics["before_test_loglik_win_rate"] = evaluate.metric_value(
                table, "before_loglik_win_rate", "preference"
            )
            common.save_predictions(table, output_dir, result)
            result.notes.append(
                "Before training the policy equals the reference, so the implicit rewards are 0 "
                "(every pair a tie: reward accuracy 0.5, margin 0); before_test_loglik_win_rate "
                "is the only before-training score."
            )

        with torch.no_grad():
            probe = [c for c, _, _, _ in held_out or []]
            save_policy(result, policy, tokenizer, cfg, output_dir, probe, device, d.use_adapter)
        del trainer
    return common.finish(result, meter, device)


@contextmanager
def _quiet_datasets():
    """No datasets progress bars while trl tokenizes, when TUNELAB_PROGRESS=0."""
    from datasets.utils import logging as datasets_logging

    if common.show_progress() or not datasets_logging.is_progress_bar_enabled():
        yield
        return
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        datasets_logging.enable_progress_bar()


# ---------------------------------------------------------------- the policy


def policy_source(cfg: RunConfig) -> models.ResolvedModel:
    """The model a policy (DPO, GRPO) starts from: its train.<method>.init_from if set,
    else ``model.name``."""
    init = cfg.train.policy_init_from
    key = f"train.{cfg.train.method}.init_from"
    if init is None:
        resolved = models.resolve(cfg.model.name, cfg.model.revision)
        where = f"model.name={cfg.model.name}"
    else:
        folder = Path(init).expanduser()
        expected = (
            "an earlier run's output folder holding a 'merged' or 'model' subfolder, or a "
            "Hugging Face model folder with config.json"
        )
        if not folder.is_dir():
            raise TrainingError(f"{key}={init!r} does not exist. Expected {expected}.")
        candidates = [folder / "merged", folder / "model", folder]
        found = next((c for c in candidates if (c / "config.json").is_file()), None)
        if found is None:
            hint = (
                " It holds only an adapter: re-run that training with train.adapter.merge=true "
                "so it saves a merged model, and point init_from at it."
                if (folder / "adapter").is_dir()
                else ""
            )
            raise TrainingError(
                f"{key}={init!r} holds no model (no config.json in merged/, model/ "
                f"or the folder itself). Expected {expected}.{hint}"
            )
        resolved = models.resolve(str(found))
        where = f"{key}={init}"
    if resolved.family != "decoder":
        raise TrainingError(
            f"A policy is a decoder-only language model, but {where} is a {resolved.family} "
            f"model ({resolved.path}). Use a decoder such as tiny-llama, tiny-gpt2 or "
            "smollm2-135m-instruct."
        )
    return resolved


def _load_model(source: models.ResolvedModel, cfg: RunConfig):
    """fp32 weights; bf16/fp16 on CUDA is autocast by the Trainer (exact merges, fp32 masters)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(source.path), dtype=torch.float32, trust_remote_code=cfg.model.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise TrainingError(
            f"Could not load a causal LM from {source.path} ('{source.reference}'): {exc}"
        ) from None
    return model


def target_modules(model) -> list[str]:
    """Names of every linear projection of the decoder (Linear, or GPT-2's Conv1D), LM head
    excluded: q/k/v/o and gate/up/down for Llama-like models, c_attn/c_proj/c_fc for GPT-2."""
    head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in common.linear_layers(model)
        if module is not head and "." in name
    }
    if not names:
        raise TrainingError(
            f"Found no linear layers to put LoRA on in {type(model).__name__}. Set "
            "train.adapter.target_modules to the module names to adapt."
        )
    return sorted(names)


def lora_config(cfg: RunConfig, model):
    from peft import LoraConfig, TaskType
    from transformers.pytorch_utils import Conv1D

    a = cfg.train.adapter
    targets = a.target_modules or target_modules(model)
    conv1d = any(
        isinstance(module, Conv1D) and name.rsplit(".", 1)[-1] in targets
        for name, module in model.named_modules()
    )
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=a.r,
        lora_alpha=a.alpha,
        lora_dropout=a.dropout,
        target_modules=list(targets),
        fan_in_fan_out=conv1d,  # GPT-2's Conv1D stores weights transposed
        bias="none",
    )


# ---------------------------------------------------------------- data


def _pairs(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise TrainingError(
            f"The {split} split lacks column(s) {', '.join(missing)}: DPO needs preference data "
            f"with columns {', '.join(COLUMNS)} (data.task=preference)."
        )
    return frame.loc[:, list(COLUMNS)].astype(str).reset_index(drop=True)


def fit_splits(
    tokenizer,
    splits: dict[str, pd.DataFrame],
    max_length: int,
    conversational: bool,
    mode: str | None,
    result: TrainResult,
) -> dict[str, pd.DataFrame]:
    """Prompts too long for max_length refused (mode None), cut or dropped (data.truncation),
    the same way in every split so the held-out scores see what training saw; counted in
    ``result``."""
    fitted = {}
    for name, frame in splits.items():
        prompts = frame["prompt"].tolist()
        if mode is None:
            common.check_prompt_lengths(
                tokenizer,
                rendered_prompts(tokenizer, prompts, conversational),
                max_length,
                name,
                truncation_key=common.TRUNCATION_KEY,
            )
            fitted[name] = frame
            continue
        fit = common.fit_prompts(
            tokenizer,
            prompts,
            lambda ps: rendered_prompts(tokenizer, ps, conversational),
            max_length,
            mode,
            response_room(tokenizer, frame, max_length),
        )
        out = frame.assign(prompt=fit.prompts).loc[fit.keep].reset_index(drop=True)
        result.metrics[f"{name}_prompts_truncated"] = fit.cut
        result.metrics[f"{name}_pairs_dropped"] = fit.dropped
        if fit.cut or fit.dropped:
            done = (
                f"dropped {fit.dropped}"
                if mode == "drop"
                else f"cut {fit.cut} ({'last' if mode == 'keep_end' else 'first'} tokens kept)"
            )
            result.notes.append(
                f"{name}: {fit.cut + fit.dropped} of {len(frame)} prompts did not fit "
                f"max_length={max_length} tokens; data.truncation={mode} {done}."
            )
        if out.empty and name == "train":
            raise TrainingError(
                f"data.truncation=drop left out all {len(frame)} train pairs: every prompt is "
                f"longer than max_length={max_length} tokens. Raise the max length or use "
                "data.truncation=keep_end."
            )
        if not out.empty:
            fitted[name] = out
    return fitted


def response_room(tokenizer, frame: pd.DataFrame, max_length: int) -> list[int]:
    """Tokens a cut prompt leaves for its pair: the longer response plus its end token, at
    most half of max_length (a longer response is cut at its end, as trl does)."""
    room = []
    for chosen, rejected in frame[["chosen", "rejected"]].itertuples(index=False):
        ids = tokenizer([chosen, rejected], add_special_tokens=False)["input_ids"]
        # +2: eos, or the chat template's end-of-turn tokens.
        room.append(min(max(len(i) for i in ids) + 2, max_length // 2))
    return room


def trl_records(frame: pd.DataFrame, conversational: bool, eos: str) -> list[dict]:
    """Rows in trl's conversational format, or plain strings ("prompt\\n" + response)."""
    records = []
    for prompt, chosen, rejected in frame[list(COLUMNS)].itertuples(index=False):
        if conversational:
            records.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        else:
            records.append(
                {"prompt": prompt + PLAIN_SEPARATOR, "chosen": chosen, "rejected": rejected}
            )
    return records


def rendered_prompts(tokenizer, prompts: Sequence[str], conversational: bool) -> list[str]:
    """The prompt text the model sees before the response (chat template applied)."""
    if not conversational:
        return [p + PLAIN_SEPARATOR for p in prompts]
    return [common.chat_prompt(tokenizer, p) for p in prompts]


def encode_pairs(
    tokenizer, frame: pd.DataFrame, max_length: int, conversational: bool
) -> list[tuple[list[int], int, list[int], int]]:
    """(chosen ids, response start, rejected ids, response start) per row, tokenized as trl does:
    the response begins where the tokenized prompt and prompt+response first differ; plain
    responses end with eos; sequences are cut to max_length keeping the start."""
    eos = tokenizer.eos_token
    encoded = []
    for record in trl_records(frame, conversational, eos):
        if conversational:
            prompt_ids = _ids(
                tokenizer.apply_chat_template(
                    record["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True
                )
            )
            full = [
                _ids(
                    tokenizer.apply_chat_template(
                        record["prompt"] + record[key], tokenize=True, return_dict=True
                    )
                )
                for key in ("chosen", "rejected")
            ]
        else:
            prompt_ids = tokenizer(record["prompt"])["input_ids"]
            full = [
                tokenizer(
                    record["prompt"] + record[key] + ("" if record[key].endswith(eos) else eos)
                )["input_ids"]
                for key in ("chosen", "rejected")
            ]
        start = min(_common_prefix(prompt_ids, ids) for ids in full)
        encoded.append((full[0][:max_length], start, full[1][:max_length], start))
    return encoded


def _ids(encoding) -> list[int]:
    ids = encoding["input_ids"]
    return list(ids[0]) if ids and isinstance(ids[0], list) else list(ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# ---------------------------------------------------------------- held-out scoring


def scoring_engine(model, tokenizer, cfg: RunConfig, device: common.DeviceChoice) -> Engine:
    """The LM engine over a policy or reference model; an fp32 model is autocast to bf16 or
    fp16 on a GPU, as the Trainer runs it."""
    autocast = device.torch_dtype if device.precision != "fp32" else None
    return Engine.for_model(model, tokenizer, "decoder", cfg.train.batch_size, autocast=autocast)


def score_pairs(lm: Engine, encoded) -> dict[str, list]:
    """Log-probabilities of the chosen and rejected responses of every encoded pair (from
    :func:`encode_pairs`), and their response token counts."""
    chosen = lm.sequence_logprobs([(c, cs) for c, cs, _, _ in encoded], "scoring chosen")
    rejected = lm.sequence_logprobs([(r, rs) for _, _, r, rs in encoded], "scoring rejected")
    return {
        "chosen": [logp for logp, _ in chosen],
        "rejected": [logp for logp, _ in rejected],
        "chosen_tokens": [count for _, count in chosen],
        "rejected_tokens": [count for _, count in rejected],
    }


def _reference_mode(model, adapter: bool):
    """The reference policy: the adapter disabled (LoRA), or the frozen copy as it is."""
    return model.disable_adapter() if adapter else nullcontext()


def predictions_table(
    frame: pd.DataFrame, before: dict, after: dict, ref: dict, beta: float
) -> pd.DataFrame:
    """One row per held-out pair: log-probs before / after / under the reference, rewards, and
    wins (1, a tie 0.5, 0)."""
    table = pd.DataFrame(
        {
            "prompt": frame["prompt"].tolist(),
            "chosen_tokens": after["chosen_tokens"],
            "rejected_tokens": after["rejected_tokens"],
            "logp_chosen_before": before["chosen"],
            "logp_rejected_before": before["rejected"],
            "logp_chosen_policy": after["chosen"],
            "logp_rejected_policy": after["rejected"],
            "logp_chosen_ref": ref["chosen"],
            "logp_rejected_ref": ref["rejected"],
        }
    )
    table["reward_chosen"] = beta * (table["logp_chosen_policy"] - table["logp_chosen_ref"])
    table["reward_rejected"] = beta * (table["logp_rejected_policy"] - table["logp_rejected_ref"])
    table["reward_margin"] = table["reward_chosen"] - table["reward_rejected"]
    # A tie is half a win: a policy equal to its reference scores 0.5, the coin flip it is.
    table["reward_win"] = evaluate.win_scores(table["reward_margin"])
    table["loglik_win"] = evaluate.win_scores(
        table["logp_chosen_policy"] - table["logp_rejected_policy"]
    )
    table["before_loglik_win"] = evaluate.win_scores(
        table["logp_chosen_before"] - table["logp_rejected_before"]
    )
    return table


# ---------------------------------------------------------------- saving


def save_policy(
    result, policy, tokenizer, cfg: RunConfig, output_dir: Path, probe, device, use_adapter: bool
) -> None:
    """adapter/ (+ merged/, its logits checked on the ``probe`` token sequences) with LoRA,
    else model/; safetensors with the tokenizer."""
    if not use_adapter:
        path = output_dir / "model"
        policy.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
        result.artifacts["model"] = "model"
        return
    adapter = output_dir / "adapter"
    policy.save_pretrained(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    result.artifacts["adapter"] = "adapter"
    if not cfg.train.adapter.merge:
        result.notes.append("train.adapter.merge=false: no merged model was saved.")
        return
    probe = _probe_batch(probe, tokenizer, device)
    unmerged = policy(**probe, use_cache=False).logits.float() if probe else None
    merged = policy.merge_and_unload()
    if probe:
        diff = (merged(**probe, use_cache=False).logits.float() - unmerged).abs().max().item()
        result.metrics["merge_max_abs_diff"] = diff
        if not diff <= cfg.train.adapter.merge_atol:
            # The adapter is the run's product and is saved; an unverified merge is not.
            message = (
                f"The merged model's logits differ from the adapter model's by up to {diff:.2e} "
                f"(> train.adapter.merge_atol={cfg.train.adapter.merge_atol:g}), so no merged "
                f"model was saved; use the adapter in {adapter.name}/ or raise merge_atol."
            )
            log.warning(message)
            result.notes.append(message)
            return
    path = output_dir / "merged"
    merged.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    result.artifacts["merged"] = "merged"


def _probe_batch(sequences, tokenizer, device, rows: int = 4) -> dict | None:
    """A few held-out token sequences, padded, to compare merged and unmerged logits."""
    if not sequences:
        return None
    ids, mask = pad(list(sequences[:rows]), tokenizer.pad_token_id, "right")
    return {"input_ids": ids.to(device.device), "attention_mask": mask.to(device.device)}
