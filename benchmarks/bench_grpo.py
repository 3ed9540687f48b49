"""tunelab's GRPO training vs a plain trl GRPOTrainer script with the same settings, side
by side in one process, alternating which goes first; tokens per second of training.

- Default (what `make bench` runs): the offline ``tiny-llama`` alias (a random 2-layer
  Llama, seconds). ``--model smollm2-135m-instruct``: the real 135M model on the CPU.
  Each writes its own section of docs/benchmarks.md with ``--write``.

Both sides get the same model folder (``tunelab.models.resolve(MODEL).path``), the same
prompts (tunelab's train split of ``bundled:prompts``: tunelab through its data frames,
the plain script as trl conversational prompts, one user message each, which is what
tunelab gives trl for a tokenizer with a chat template), the same reward (1.0 when the
completion contains the letter 'e': tunelab's ``{regex: e, ignore_case: false}``, the
plain script a Python function), the same LoRA (r, alpha, dropout on every linear
projection of the decoder, as ``tunelab.train.preference.lora_config`` builds it) and the
same GRPOConfig values (batch, num_generations, max_completion_length, temperature, beta,
learning rate, steps, logging, checkpointing, seed, fp32 on the CPU). The plain script is
what a trl user writes: ``GRPOConfig(...)`` and ``GRPOTrainer(model=folder,
reward_funcs=f, args, train_dataset, peft_config=LoraConfig(...))``.

Timed: ``trainer.train()`` only (the Trainer's ``train_runtime``: generation, rewards and
optimizer steps). tunelab also samples held-out prompts before and after training and
saves the adapter and a merged model; that is evaluation and packaging, outside
``train()``, and not timed. Tokens/s, the same definition on both sides: prompt and
completion tokens of every generated sequence (trl's ``num_tokens``, i.e.
``trainer.state.num_input_tokens_seen`` at the end) / ``train_runtime``. Each round runs
both sides in this process, the order alternating between rounds; medians. One torch
intra-op thread unless ``--threads`` says otherwise (THREADS says why).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TUNELAB_PROGRESS", "0")

from benchlib import load_average, machine_line, write_section  # noqa: E402

MODELS = ("tiny-llama", "smollm2-135m-instruct")
# Every linear projection of a Llama decoder block: what tunelab's target_modules finds.
TARGETS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
LORA_R, LORA_ALPHA, LORA_DROPOUT = 8, 16, 0.05  # tunelab's train.adapter defaults
LETTER = "e"
SEED = 42
# Above max_steps: no periodic checkpoint. The Trainer still saves at the last step with
# save_strategy="steps" (tunelab's), so the plain script keeps the same strategy.
SAVE_STEPS = 1000
SAVE_TOTAL_LIMIT = 2
HELD_OUT = 2  # test prompts tunelab samples before and after training (not timed)
REPEATS = 4  # even: each side goes first in half the rounds
# One intra-op thread: on a 2-core machine that other jobs keep busy, torch's default of
# one thread per core stalls a few steps for seconds (threads spin while their partner
# waits for a core), on either side at random, which swamps the comparison; see
# "SFT: reading the numbers". --threads 0 keeps torch's default.
THREADS = 1
# Arguments fields that name a place or a run, not how it trains.
NOT_SETTINGS = {"output_dir", "logging_dir", "run_name", "hub_model_id", "hub_token"}
# Fields that may differ without changing what these runs do, and why.
NO_EFFECT = {
    "num_train_epochs": "max_steps decides",
    "per_device_eval_batch_size": "no evaluation",
    "lr_scheduler_kwargs": "none either way",
    "model_init_kwargs": "tunelab passes a model loaded in fp32; the plain script has trl "
    "load the folder in fp32",
    "reward_weights": "one reward, weight 1 either way",
    "eval_strategy": "no evaluation either way",
}


@dataclass(frozen=True)
class Settings:
    """What both sides share."""

    model: str
    steps: int
    batch: int  # completions per step: batch / num_generations prompts
    num_generations: int = 4
    max_completion_length: int = 16
    temperature: float = 1.0
    beta: float = 0.04
    learning_rate: float = 5e-5
    logging_steps: int = 1
    max_length: int = 256

    @property
    def prompts_per_step(self) -> int:
        return self.batch // self.num_generations


DEFAULTS = {
    "tiny-llama": {"steps": 16, "batch": 8},
    "smollm2-135m-instruct": {"steps": 4, "batch": 4},
}


# ---------------------------------------------------------------- data and model


def prompt_splits() -> dict:
    """tunelab's train split of the bundled prompts, and the first test prompts."""
    from tunelab import config
    from tunelab.data import sources, splits

    cfg = config.load(
        None, ["data.name=prompts", "data.task=prompts", "data.source=bundled:prompts"]
    )
    frames = splits.make_splits(sources.ingest(cfg.data).frames, cfg.data)
    keep = ["prompt", "source_row"]
    return {
        "train": frames["train"].loc[:, keep].reset_index(drop=True),
        "test": frames["test"].loc[:, keep].head(HELD_OUT).reset_index(drop=True),
    }


def model_path(name: str) -> str:
    from tunelab import models

    return str(models.resolve(name).path)


# ---------------------------------------------------------------- what is measured


def record_train(found: dict) -> None:
    """Wrap Trainer.train in this process; both sides go through the same wrapper.

    Records train_runtime, the CPU time inside train(), the tokens trl counted (its
    ``num_tokens``), the last logged entry, and the trainer's arguments, columns and
    trainable parameters, to compare the two sides.
    """
    from transformers import Trainer

    original = Trainer.train

    def train(self, *args, **kwargs):
        found.clear()
        started = time.process_time()
        output = original(self, *args, **kwargs)
        found["train_cpu_seconds"] = time.process_time() - started
        found["train_seconds"] = output.metrics["train_runtime"]
        found["steps"] = output.global_step
        found["tokens"] = int(self.state.num_input_tokens_seen)
        logged = [e["num_tokens"] for e in self.state.log_history if "num_tokens" in e]
        found["logged_tokens"] = int(logged[-1]) if logged else None
        found["total_train_tokens"] = getattr(self, "_total_train_tokens", None)
        rewards = [e["reward"] for e in self.state.log_history if "reward" in e]
        found["mean_reward"] = statistics.mean(rewards) if rewards else None
        lengths = [
            e["completions/mean_length"]
            for e in self.state.log_history
            if "completions/mean_length" in e
        ]
        found["mean_completion_length"] = statistics.mean(lengths) if lengths else None
        found["step_times"] = [e["step_time"] for e in self.state.log_history if "step_time" in e]
        settings = json.loads(self.args.to_json_string())
        found["args"] = {k: v for k, v in settings.items() if k not in NOT_SETTINGS}
        found["columns"] = sorted(self.train_dataset.column_names)
        found["trainer"] = type(self).__name__
        params = list(self.model.parameters())
        found["trainable"] = sum(p.numel() for p in params if p.requires_grad)
        return output

    Trainer.train = train


# ---------------------------------------------------------------- tunelab


def tunelab_config(s: Settings):
    from tunelab import config

    reward = json.dumps([{"regex": LETTER, "ignore_case": False, "name": "contains_e"}])
    return config.load(
        None,
        [
            "data.name=prompts",
            "data.task=prompts",
            "data.source=bundled:prompts",
            f"model.name={s.model}",
            f"model.max_length={s.max_length}",
            "train.method=grpo",
            f"train.max_steps={s.steps}",
            f"train.batch_size={s.batch}",
            f"train.learning_rate={s.learning_rate}",
            f"train.logging_steps={s.logging_steps}",
            f"train.save_steps={SAVE_STEPS}",
            f"train.save_total_limit={SAVE_TOTAL_LIMIT}",
            f"train.seed={SEED}",
            "train.device=cpu",
            "train.precision=fp32",
            f"train.adapter.r={LORA_R}",
            f"train.adapter.alpha={LORA_ALPHA}",
            f"train.adapter.dropout={LORA_DROPOUT}",
            f"train.grpo.num_generations={s.num_generations}",
            f"train.grpo.max_completion_length={s.max_completion_length}",
            f"train.grpo.temperature={s.temperature}",
            f"train.grpo.beta={s.beta}",
            "train.grpo.eval_samples=1",
            f"train.grpo.rewards={reward}",
        ],
    )


def run_tunelab(s: Settings, data: dict, work: Path, found: dict) -> dict:
    from tunelab import train
    from tunelab.workspace import Workspace

    cfg = tunelab_config(s)
    result = train.train(cfg, data, Workspace(work), output_dir=work / "run")
    return dict(found) | {
        "result_tokens_per_second": result.tokens_per_second,
        "result_seconds_per_step": result.metrics.get("train_seconds_per_step"),
    }


# ---------------------------------------------------------------- the plain trl script


def contains_e(completions, **kwargs) -> list[float]:
    """1.0 when the completion (the assistant message) contains the letter."""
    return [1.0 if LETTER in c[-1]["content"] else 0.0 for c in completions]


def run_plain(s: Settings, data: dict, work: Path, found: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(work / "plain"),
        max_steps=s.steps,
        per_device_train_batch_size=s.batch,
        learning_rate=s.learning_rate,
        num_generations=s.num_generations,
        max_completion_length=s.max_completion_length,
        temperature=s.temperature,
        beta=s.beta,
        logging_steps=s.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        save_total_limit=SAVE_TOTAL_LIMIT,
        seed=SEED,
        data_seed=SEED,
        use_cpu=True,
        bf16=False,
        disable_dropout=True,
        # trl's GRPOConfig defaults target GPUs: checkpointing on, lr 1e-6 (set above).
        activation_checkpointing=False,
        model_init_kwargs={"dtype": torch.float32},
        report_to="none",
        disable_tqdm=True,
    )
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": p}]} for p in data["train"]["prompt"]]
    )
    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        target_modules=TARGETS,
        bias="none",
    )
    trainer = GRPOTrainer(
        model=model_path(s.model),
        reward_funcs=contains_e,
        args=args,
        train_dataset=dataset,
        peft_config=peft_config,
    )
    trainer.train()
    return dict(found)


# ---------------------------------------------------------------- rounds and report


def measure(s: Settings, repeats: int) -> dict[str, list[dict]]:
    """``repeats`` rounds of both sides in this process, alternating which goes first."""
    data = prompt_splits()
    found: dict = {}
    record_train(found)
    sides = {"tunelab": run_tunelab, "plain": run_plain}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for round_ in range(repeats):
        order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
        for name in order:
            print(f"round {round_ + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            gc.collect()  # the previous run's garbage is not collected inside this one's timing
            with tempfile.TemporaryDirectory(prefix=f"bench-grpo-{name}-") as work:
                run = sides[name](s, data, Path(work), found)
            run["tokens_per_second"] = run["tokens"] / run["train_seconds"]
            run["seconds_per_step"] = run["train_seconds"] / run["steps"]
            run["outside_steps"] = run["train_seconds"] - sum(run["step_times"])
            run["first"] = order[0] == name
            runs[name].append(run)
            print(
                f"  {run['train_seconds']:.2f} s ({run['outside_steps']:.2f} s outside trl's "
                f"step timer), {run['tokens']} tokens, "
                f"{run['tokens_per_second']:.1f} tokens/s",
                file=sys.stderr,
                flush=True,
            )
    return runs


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def threads() -> int:
    import torch

    return torch.get_num_threads()


def differing_args(a: dict, b: dict) -> list[str]:
    found = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            why = f": {NO_EFFECT[key]}" if key in NO_EFFECT else ""
            found.append(f"`{key}` ({a.get(key, '-')} vs {b.get(key, '-')}{why})")
    return found


def report(s: Settings, repeats: int, note: str, command: str) -> str:
    load = load_average()
    runs = measure(s, repeats)
    load = f"{load} at the start, {load_average()} at the end"
    ours, plain = runs["tunelab"], runs["plain"]
    lines = [
        machine_line(command, note, load),
        "",
        f"{s.model} (`{model_path(s.model)}` for both sides), torch intra-op threads "
        f"{threads()}, LoRA r={LORA_R} "
        f"alpha={LORA_ALPHA} dropout={LORA_DROPOUT} on {', '.join(TARGETS)}; fp32 on the "
        f"CPU. GRPO: {s.steps} steps of {s.batch} completions ({s.prompts_per_step} "
        f"prompt(s) x num_generations {s.num_generations}), max_completion_length "
        f"{s.max_completion_length}, temperature {s.temperature:g}, beta {s.beta:g}, "
        f"learning rate {s.learning_rate:g}, logged every {s.logging_steps} step(s), seed "
        f"{SEED}. Reward: 1.0 when the completion contains the letter '{LETTER}' (tunelab "
        f"`train.grpo.rewards=[{{regex: {LETTER}, ignore_case: false}}]`, the plain script a "
        "function). Prompts: tunelab's train split of `bundled:prompts`, as trl "
        "conversational prompts on both sides. Timed: `trainer.train()` "
        "(`train_runtime`: generation, rewards, optimizer steps); tunelab's held-out "
        f"sampling ({HELD_OUT} test prompts, before and after) and its saving of adapter and "
        "merged model are outside it. tokens/s = prompt + completion tokens generated "
        "(trl's `num_tokens`) / `train_runtime`, the same on both sides; trl `step_time` is "
        "trl's own timer of each step, the median over every step of every round (one slow "
        "step moves it less). Both sides in one process, garbage collected before each run, "
        f"{repeats} rounds, the order alternating; medians.",
        "",
        "| side | tokens/s (median) | runs | s/step (median) | trl `step_time` (median) | "
        "s per run outside `step_time` (median) | CPU s/step (median) | tokens per run | "
        "mean reward | mean completion length |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (("tunelab", "tunelab `train()`"), ("plain", "plain trl script")):
        r = runs[name]
        each = ", ".join(f"{c['tokens_per_second']:.1f}" + ("*" if c["first"] else "") for c in r)
        tokens = "/".join(sorted({str(c["tokens"]) for c in r}))
        lines.append(
            f"| {label} | {median(r, 'tokens_per_second'):.1f} | {each} | "
            f"{median(r, 'seconds_per_step'):.3f} | "
            f"{statistics.median(t for c in r for t in c['step_times']):.3f} | "
            f"{median(r, 'outside_steps'):.2f} | "
            f"{median(r, 'train_cpu_seconds') / s.steps:.3f} | {tokens} | "
            f"{median(r, 'mean_reward'):.3f} | {median(r, 'mean_completion_length'):.1f} |"
        )
    ratio = median(ours, "tokens_per_second") / median(plain, "tokens_per_second")
    lines += [
        "",
        "\\* went first in its round.",
        "",
        f"**tunelab / plain tokens/s = {ratio:.2f}** (goal >= 0.95; tunelab "
        f"{median(ours, 'tokens_per_second'):.1f}, plain "
        f"{median(plain, 'tokens_per_second'):.1f} tokens/s).",
        "",
    ]
    diff = differing_args(ours[0]["args"], plain[0]["args"])
    same_tokens = all(o["tokens"] == p["tokens"] for o, p in zip(ours, plain, strict=True))
    reported = sorted({str(r["result_tokens_per_second"]) for r in ours})
    lines += [
        f"- {ours[0]['trainer']} arguments that differ (tunelab vs plain): "
        + (", ".join(diff) if diff else "none")
        + ".",
        f"- Trainable parameters: tunelab {ours[0]['trainable']:,}, plain "
        f"{plain[0]['trainable']:,}; train_dataset columns: tunelab "
        f"{', '.join(ours[0]['columns'])}, plain {', '.join(plain[0]['columns'])}.",
        "- Tokens generated: "
        + (
            "the same on both sides in every round (same seed, same sampling)."
            if same_tokens
            else "differ between the sides in some round (see the table)."
        ),
        f"- tunelab's own `TrainResult.tokens_per_second`, per run: {', '.join(reported)} "
        "(the tokens trl's state counted in the session, `num_tokens`, / `train_runtime`: "
        "the definition of this table).",
    ]
    return "\n".join(lines).rstrip() + "\n"


def settings_from(args: argparse.Namespace) -> Settings:
    defaults = DEFAULTS[args.model]
    return Settings(
        model=args.model,
        steps=args.steps or defaults["steps"],
        batch=args.batch or defaults["batch"],
    )


def command_line(args: argparse.Namespace) -> str:
    words = ["python", "benchmarks/bench_grpo.py"]
    words += [f"--model {args.model}"] if args.model != MODELS[0] else []
    words += [f"--steps {args.steps}"] if args.steps else []
    words += [f"--batch {args.batch}"] if args.batch else []
    words += [f"--repeats {args.repeats}"] if args.repeats != REPEATS else []
    words += [f"--threads {args.threads}"] if args.threads != THREADS else []
    words += ["--write"] if args.write else []
    return " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default=MODELS[0])
    parser.add_argument("--steps", type=int, help="optimizer steps (tiny-llama 16, smollm2 4)")
    parser.add_argument(
        "--batch", type=int, help="completions per step, a multiple of 4 (tiny-llama 8, smollm2 4)"
    )
    parser.add_argument("--repeats", type=int, default=REPEATS, help="rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=THREADS,
        help=f"torch intra-op threads (default {THREADS}; 0 = torch's own choice, as a user's "
        "run gets it)",
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--note", default="", help="appended to the machine line")
    args = parser.parse_args()
    s = settings_from(args)
    if s.batch % s.num_generations:
        parser.error(f"--batch must be a multiple of num_generations={s.num_generations}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    body = report(s, args.repeats, args.note, command_line(args))
    print(body)
    if args.write:
        write_section(f"GRPO: tunelab vs a plain GRPOTrainer script ({s.model})", body)


if __name__ == "__main__":
    main()
