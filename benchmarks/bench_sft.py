"""tunelab's SFT (and DPO) training vs a plain TRL script with the same settings, side by
side in one run, on smollm2-135m-instruct with LoRA r=16 on every linear layer.

- ``--device cpu`` (the default; what `make bench` runs): LoRA SFT on the bundled
  instructions, 6 steps of batch 1 in fp32. Section "SFT: tunelab vs a plain SFTTrainer
  script" of docs/benchmarks.md.
- ``--device cuda --cases lora,qlora,dpo`` (what `make gpu-check` runs): LoRA SFT, QLoRA
  SFT (model.quantization=4bit, bitsandbytes) and DPO on the bundled preferences, in bf16
  on an NVIDIA GPU, with peak GPU memory. Section "GPU check".

Both sides get the same rows (tunelab's train split of the bundled dataset: tunelab
through its config, the plain script formatted as trl's conversational prompt/completion
or prompt/chosen/rejected), model folder, LoRA settings, steps, batch, max_length,
learning rate, logging and checkpointing. The plain script is what a TRL user writes:
``SFTConfig(...)`` / ``DPOConfig(...)`` with those hyperparameters and
``SFTTrainer(model, args, train_dataset, processing_class, peft_config=LoraConfig(...))``.

Timed: ``trainer.train()`` (the Trainer's ``train_runtime``) per optimizer step, its CPU
time (user + sys, all threads), and tokens per second (non-pad tokens trained, as trl
counts them, over ``train_runtime``). Every case runs in its own process; the variants
take turns (``--repeats`` rounds); medians. Each side's arguments are compared field by
field and the fields that differ are listed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchlib import load_average, machine_line, write_section

HERE = Path(__file__).resolve()

MODEL = "smollm2-135m-instruct"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05  # tunelab's default dropout, on both sides
SEED = 42
# Above max_steps: no periodic checkpoint. The Trainer still writes one at the last step
# with save_strategy="steps" (tunelab's), so the plain script keeps the same strategy.
SAVE_STEPS = 1000
SAVE_TOTAL_LIMIT = 2
REPEATS = 3
NO_CUDA = "no CUDA device: gpu-check needs an NVIDIA GPU"
CASES = ("lora", "qlora", "dpo")
DATA = {
    "sft": ("instructions", "generation"),
    "dpo": ("preferences", "preference"),
}
# Arguments fields that name a place or a run, not how it trains.
NOT_SETTINGS = {"output_dir", "logging_dir", "run_name", "hub_model_id", "hub_token"}


@dataclass(frozen=True)
class Settings:
    """What both sides of every comparison share."""

    device: str  # "cpu" | "cuda"
    steps: int
    batch: int
    max_length: int = 192
    logging_steps: int = 2
    sft_lr: float = 1e-4
    dpo_lr: float = 5e-5

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def precision(self) -> str:
        return "bf16" if self.cuda else "fp32"

    def learning_rate(self, case: str) -> float:
        return self.dpo_lr if case == "dpo" else self.sft_lr


DEFAULTS = {
    "cpu": {"steps": 6, "batch": 1, "logging_steps": 2},
    "cuda": {"steps": 30, "batch": 4, "logging_steps": 5},
}


def variants(cases: list[str], device: str) -> list[str]:
    """The runs of one round, in order: tunelab, then the plain script, per case."""
    names = []
    for case in cases:
        names += [f"tunelab-{case}", f"plain-{case}"]
        if case == "lora" and device == "cpu":
            names.append("plain-lora-nosave")
    return names


# ---------------------------------------------------------------- the data and the model


def train_rows(case: str):
    """tunelab's train split of the bundled dataset of the case (a DataFrame)."""
    from tunelab import config
    from tunelab.data import sources, splits

    name, task = DATA["dpo" if case == "dpo" else "sft"]
    cfg = config.load(
        None, [f"data.name={name}", f"data.task={task}", f"data.source=bundled:{name}"]
    )
    return splits.make_splits(sources.ingest(cfg.data).frames, cfg.data)["train"]


def model_path() -> str:
    """The folder the bundled alias resolves to (built once from the GGUF, then cached)."""
    from tunelab import models

    return str(models.resolve(MODEL).path)


# ---------------------------------------------------------------- what is measured


def record_train(found: dict) -> None:
    """Wrap Trainer.train in this process to measure it; both sides get the same wrapper.

    Records the CPU time inside train(), peak GPU memory (reset just before), the tokens
    trl counted, what was written as checkpoints, and the trainer's arguments, columns and
    trainable parameters, to compare the two sides.
    """
    import torch
    from transformers import Trainer

    original = Trainer.train

    def train(self, *args, **kwargs):
        cuda = torch.cuda.is_available() and not self.args.use_cpu
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.process_time()
        try:
            output = original(self, *args, **kwargs)
        finally:
            found["train_cpu_seconds"] = time.process_time() - started
        if cuda:
            found["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        found["train_seconds"] = output.metrics["train_runtime"]
        found["steps"] = output.global_step
        found["train_loss"] = output.training_loss
        found["tokens"] = getattr(self, "_total_train_tokens", None)
        found["checkpoints"], found["checkpoint_mb"] = written(Path(self.args.output_dir))
        settings = json.loads(self.args.to_json_string())
        found["args"] = {k: v for k, v in settings.items() if k not in NOT_SETTINGS}
        found["columns"] = sorted(self.train_dataset.column_names)
        found["trainer"] = type(self).__name__
        params = list(self.model.parameters())
        found["trainable"] = sum(p.numel() for p in params if p.requires_grad)
        found["dtypes"] = sorted(
            {f"{'trainable' if p.requires_grad else 'frozen'} {p.dtype}" for p in params}
        )
        return output

    Trainer.train = train


def written(output_dir: Path) -> tuple[int, float]:
    """Checkpoint folders under output_dir and their size in MB."""
    folders = list(output_dir.glob("checkpoint-*"))
    size = sum(f.stat().st_size for d in folders for f in d.rglob("*") if f.is_file())
    return len(folders), size / 2**20


# ---------------------------------------------------------------- tunelab


def tunelab_overrides(case: str, s: Settings) -> list[str]:
    name, task = DATA["dpo" if case == "dpo" else "sft"]
    overrides = [
        f"data.name={name}",
        f"data.task={task}",
        f"data.source=bundled:{name}",
        f"model.name={MODEL}",
        f"model.max_length={s.max_length}",
        f"train.method={'dpo' if case == 'dpo' else 'lora'}",
        f"train.max_steps={s.steps}",
        f"train.batch_size={s.batch}",
        f"train.learning_rate={s.learning_rate(case)}",
        f"train.logging_steps={s.logging_steps}",
        f"train.save_steps={SAVE_STEPS}",
        f"train.save_total_limit={SAVE_TOTAL_LIMIT}",
        f"train.seed={SEED}",
        f"train.device={s.device}",
        f"train.precision={s.precision}",
        f"train.adapter.r={LORA_R}",
        f"train.adapter.alpha={LORA_ALPHA}",
        f"train.adapter.dropout={LORA_DROPOUT}",
        f"train.adapter.target_modules=[{', '.join(TARGETS)}]",
        # The merge (and its check and latency runs) comes after trainer.train(): not timed,
        # only slow.
        "train.adapter.merge=false",
    ]
    if case == "qlora":
        overrides.append("model.quantization=4bit")
    return overrides


def run_tunelab(case: str, s: Settings, workdir: Path) -> dict:
    """tunelab's train() on the train split only: no validation pass inside train() on
    either side, and no test-split generation afterwards."""
    from tunelab import config
    from tunelab.train import train
    from tunelab.workspace import Workspace

    cfg = config.load(None, tunelab_overrides(case, s))
    result = train(cfg, {"train": train_rows(case)}, Workspace(workdir))
    return {"tunelab_tokens_per_second": result.tokens_per_second}


# ---------------------------------------------------------------- the plain TRL script


def run_plain(case: str, s: Settings, workdir: Path, save: bool = True) -> dict:
    """What a TRL user writes, with the hyperparameters tunelab sets explicitly
    (tunelab.train.arguments.training_arguments) given the same values."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    frame = train_rows(case)
    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if case == "qlora":
        model = AutoModelForCausalLM.from_pretrained(
            path,
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            ),
            dtype=torch.bfloat16,
            device_map={"": torch.cuda.current_device()},
        )
    else:
        # fp32 weights, bf16 autocast on the GPU: trl's own default when it loads a model
        # by name, and what tunelab does.
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    peft_config = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
    )
    hyper = dict(
        output_dir=str(workdir / "plain"),
        max_steps=s.steps,
        per_device_train_batch_size=s.batch,
        learning_rate=s.learning_rate(case),
        max_length=s.max_length,
        logging_steps=s.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if save else "no",
        save_steps=SAVE_STEPS,
        save_total_limit=SAVE_TOTAL_LIMIT,
        seed=SEED,
        data_seed=SEED,
        bf16=s.cuda,  # trl's default is True, also on the CPU
        use_cpu=not s.cuda,
        activation_checkpointing=False,  # trl's default is on
        report_to="none",
        disable_tqdm=True,
    )
    user = [{"role": "user", "content": str(p)} for p in frame["prompt"]]
    if case == "dpo":
        rows = [
            {
                "prompt": [u],
                "chosen": [{"role": "assistant", "content": str(c)}],
                "rejected": [{"role": "assistant", "content": str(r)}],
            }
            for u, c, r in zip(user, frame["chosen"], frame["rejected"], strict=True)
        ]
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**hyper, beta=0.1),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    else:
        rows = [
            {"prompt": [u], "completion": [{"role": "assistant", "content": str(r)}]}
            for u, r in zip(user, frame["response"], strict=True)
        ]
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**hyper),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    trainer.train()
    return {}


# ---------------------------------------------------------------- one case, in its own process


def run_case(name: str, s: Settings) -> dict:
    """Run one variant in a fresh process and return its JSON line."""
    env = {**os.environ, "TUNELAB_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, str(HERE), "--case", name, "--device", s.device]
    command += ["--steps", str(s.steps), "--batch", str(s.batch)]
    command += ["--logging-steps", str(s.logging_steps)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"case {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def case_main(name: str, s: Settings) -> dict:
    found: dict = {}
    record_train(found)
    side, case = name.split("-")[0], name.split("-")[1]
    with tempfile.TemporaryDirectory() as tmp:
        if side == "tunelab":
            found.update(run_tunelab(case, s, Path(tmp)))
        else:
            found.update(run_plain(case, s, Path(tmp), save=not name.endswith("-nosave")))
    steps = found["steps"]
    found["seconds_per_step"] = found["train_seconds"] / steps
    found["cpu_seconds_per_step"] = found["train_cpu_seconds"] / steps
    tokens = found.get("tokens")
    found["tokens_per_second"] = tokens / found["train_seconds"] if tokens else None
    return found


# ---------------------------------------------------------------- the tables


def measure(names: list[str], s: Settings, repeats: int) -> dict[str, list[dict]]:
    """Interleaved rounds: every variant once per round, in turn."""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names:
            print(f"round {round_ + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            runs[name].append(run_case(name, s))
    return runs


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


# Argument fields that may differ without changing what these runs do, and why.
NO_EFFECT = {
    "num_train_epochs": "max_steps decides",
    "per_device_eval_batch_size": "no evaluation",
    "eval_packing": "no evaluation",
    "lr_scheduler_kwargs": "none either way",
}


def differing_args(a: dict, b: dict) -> list[str]:
    """Fields of the two sides' arguments whose values differ: `name` (a vs b[: why not
    relevant here])."""
    found = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            why = f": {NO_EFFECT[key]}" if key in NO_EFFECT else ""
            found.append(f"`{key}` ({a.get(key, '-')} vs {b.get(key, '-')}{why})")
    return found


def shown(value) -> str:
    """A list as its items, a count with thousands separators."""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return f"{int(value):,}" if str(value).isdigit() else str(value)


def comparison_notes(case: str, runs: dict[str, list[dict]]) -> list[str]:
    """What else differs between tunelab and the plain script: arguments, dataset columns,
    trainable parameters, parameter dtypes, tokens trained."""
    ours, plain = runs[f"tunelab-{case}"][0], runs[f"plain-{case}"][0]
    diff = differing_args(ours["args"], plain["args"])
    compared = {
        "columns": "train_dataset columns",
        "trainable": "trainable parameters",
        "dtypes": "parameter dtypes",
    }
    same = [
        f"{what} {shown(ours[key])}" for key, what in compared.items() if ours[key] == plain[key]
    ]
    other = [
        f"{what} {shown(ours[key])} vs {shown(plain[key])}"
        for key, what in compared.items()
        if ours[key] != plain[key]
    ]
    tokens = sorted(
        {
            str(r.get("tokens"))
            for name, rs in runs.items()
            if name.split("-")[1] == case
            for r in rs
        }
    )
    if len(tokens) == 1:
        trained = f"the same {shown(tokens[0])} non-pad tokens trained in every run"
    else:
        trained = f"tokens trained differ between runs: {', '.join(tokens)}"
    return [
        f"{case}: {ours['trainer']} arguments that differ (tunelab vs plain): "
        + (", ".join(diff) if diff else "none")
        + ".",
        f"{case}: {trained}; the same {'; '.join(same) or '-'}."
        + (f" Different: {'; '.join(other)}." if other else ""),
    ]


LABELS = {
    "tunelab": "tunelab `train()`",
    "plain": "plain TRL script, same checkpointing",
    "nosave": 'plain TRL script, `save_strategy="no"`',
}


def label(name: str) -> str:
    side = "nosave" if name.endswith("-nosave") else name.split("-")[0]
    return f"{name.split('-')[1]}: {LABELS[side]}"


def cpu_table(cases: list[str], s: Settings, repeats: int, note: str, command: str) -> str:
    names = variants(cases, "cpu")
    load = load_average()
    runs = measure(names, s, repeats)
    load = f"{load} at the start, {load_average()} at the end"
    dpo_lr = f" (DPO {s.dpo_lr:g})" if "dpo" in cases else ""
    dpo_rows = " (DPO: `bundled:preferences`)" if "dpo" in cases else ""
    lines = [
        machine_line(command, note, load),
        "",
        f"{MODEL}, LoRA r={LORA_R} alpha={LORA_ALPHA} dropout={LORA_DROPOUT} on "
        f"{', '.join(TARGETS)}; fp32 on the CPU; {s.steps} steps of batch {s.batch}, "
        f"max_length {s.max_length}, learning rate {s.sft_lr:g}{dpo_lr}, loss "
        f"logged every {s.logging_steps} steps and at the first. Rows: tunelab's train split "
        f"of `bundled:instructions`{dpo_rows}, given to tunelab through its "
        "config and to the plain script as trl conversational prompt/completion. No "
        "validation split on either side (no evaluation inside `train()`). Checkpoints: "
        "tunelab's `save_strategy=steps` with "
        f"`train.save_steps={SAVE_STEPS}` still "
        "writes one at the last step (the Trainer saves at the end whenever the strategy "
        "is steps), so the plain script does the same; a third variant saves nothing. "
        "Timed: `trainer.train()` (`train_runtime`) per optimizer step; CPU s/step is the "
        "process's CPU time inside `trainer.train()` (user + sys, all threads); tokens/s = "
        "non-pad tokens trained (trl's count) / `train_runtime`. Each run in its own "
        f"process, {repeats} interleaved rounds, medians.",
        "",
        "| variant | wall s/step (median) | runs | CPU s/step (median) | runs | "
        "tokens/s (median) | train loss | checkpoints written |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        r = runs[name]
        each = ", ".join(f"{c['seconds_per_step']:.3f}" for c in r)
        each_cpu = ", ".join(f"{c['cpu_seconds_per_step']:.3f}" for c in r)
        saved = "/".join(sorted({f"{c['checkpoints']} ({c['checkpoint_mb']:.0f} MB)" for c in r}))
        lines.append(
            f"| {label(name)} | {median(r, 'seconds_per_step'):.3f} | {each} | "
            f"{median(r, 'cpu_seconds_per_step'):.3f} | {each_cpu} | "
            f"{median(r, 'tokens_per_second'):.1f} | {median(r, 'train_loss'):.3f} | {saved} |"
        )
    lines.append("")
    for case in cases:
        ours, plain = runs[f"tunelab-{case}"], runs[f"plain-{case}"]
        wall = median(plain, "seconds_per_step") / median(ours, "seconds_per_step")
        cpu = median(plain, "cpu_seconds_per_step") / median(ours, "cpu_seconds_per_step")
        lines.append(
            f"**{case}: plain / tunelab s/step = {wall:.2f}** by wall time (goal >= 0.95; "
            f"tunelab {median(ours, 'seconds_per_step'):.3f}, plain "
            f"{median(plain, 'seconds_per_step'):.3f} s/step), **{cpu:.2f}** by CPU time."
        )
        if f"plain-{case}-nosave" in runs:
            nosave = runs[f"plain-{case}-nosave"]
            cost = (median(plain, "train_seconds") or 0) - (median(nosave, "train_seconds") or 0)
            lines.append(
                f"Checkpointing at the last step (plain script with vs without): "
                f"{cost:+.1f} s of {median(plain, 'train_seconds'):.1f} s wall per run. "
                "tunelab vs the plain script without checkpoints (not like for like): "
                f"{median(nosave, 'seconds_per_step') / median(ours, 'seconds_per_step'):.2f}."
            )
        lines.append("")
    for case in cases:
        lines += [f"- {n}" for n in comparison_notes(case, runs)]
    return "\n".join(lines).rstrip() + "\n"


def gpu_line() -> str:
    import torch

    props = torch.cuda.get_device_properties(0)
    try:
        from importlib.metadata import version

        bnb = version("bitsandbytes")
    except Exception:  # not installed: only the qlora case needs it
        bnb = "not installed"
    return (
        f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), bitsandbytes {bnb}."
    )


def gpu_table(cases: list[str], s: Settings, repeats: int, note: str, command: str) -> str:
    names = variants(cases, "cuda")
    load = load_average()
    runs = measure(names, s, repeats)
    load = f"{load} at the start, {load_average()} at the end"
    lines = [
        machine_line(command, note, load) + " " + gpu_line(),
        "",
        f"{MODEL} in bf16 (fp32 weights, bf16 autocast; QLoRA: 4-bit NF4 base, bf16 "
        f"compute) on CUDA, LoRA r={LORA_R} alpha={LORA_ALPHA} on {', '.join(TARGETS)}, "
        f"{s.steps} steps of batch {s.batch}, max_length {s.max_length}, learning rate "
        f"{s.sft_lr:g} (DPO {s.dpo_lr:g}, beta 0.1). lora and qlora: SFT on "
        "`bundled:instructions`; dpo: DPO on `bundled:preferences` (reference = the adapter "
        "disabled). Each through tunelab (`train.method=lora`, `model.quantization=4bit`, "
        "`train.method=dpo`) and a plain TRL script (SFTTrainer / DPOTrainer with "
        "`peft_config`), the same rows, settings and checkpointing (one at the last step). "
        "Timed: `trainer.train()` (`train_runtime`, first step included) per step; tokens/s "
        "= non-pad tokens trained / `train_runtime`; peak memory = "
        "`torch.cuda.max_memory_allocated()` during `trainer.train()` (weights included). "
        f"Each run in its own process, {repeats} interleaved rounds, medians.",
        "",
        "| case | s/step tunelab | s/step plain | plain / tunelab | tokens/s tunelab | "
        "tokens/s plain | peak GPU MB tunelab | peak GPU MB plain | memory tunelab / plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        ours, plain = runs[f"tunelab-{case}"], runs[f"plain-{case}"]
        t_step, p_step = median(ours, "seconds_per_step"), median(plain, "seconds_per_step")
        t_mem, p_mem = median(ours, "peak_gpu_mb"), median(plain, "peak_gpu_mb")
        lines.append(
            f"| {case} | {t_step:.4f} | {p_step:.4f} | **{p_step / t_step:.2f}** | "
            f"{median(ours, 'tokens_per_second'):.0f} | {median(plain, 'tokens_per_second'):.0f} "
            f"| {t_mem:.0f} | {p_mem:.0f} | {t_mem / p_mem:.2f} |"
        )
    lines += ["", "Runs (s/step, tunelab; plain):", ""]
    for case in cases:
        each = {
            side: ", ".join(f"{c['seconds_per_step']:.4f}" for c in runs[f"{side}-{case}"])
            for side in ("tunelab", "plain")
        }
        lines.append(f"- {case}: {each['tunelab']}; {each['plain']}")
    lines.append("")
    for case in cases:
        lines += [f"- {n}" for n in comparison_notes(case, runs)]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- the command line


def cuda_problem() -> str | None:
    """Why ``--device cuda`` cannot run here, in one line; None when it can."""
    import torch

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"{NO_CUDA} (torch {torch.__version__} is a CPU build: see README, GPU users)"
    return NO_CUDA


def settings_from(args: argparse.Namespace) -> Settings:
    defaults = DEFAULTS[args.device]
    return Settings(
        device=args.device,
        steps=args.steps or defaults["steps"],
        batch=args.batch or defaults["batch"],
        logging_steps=args.logging_steps or defaults["logging_steps"],
    )


def command_line(args: argparse.Namespace) -> str:
    words = ["python", "benchmarks/bench_sft.py"]
    words += [f"--device {args.device}"] if args.device != "cpu" else []
    words += [f"--cases {args.cases}"] if args.cases else []
    for flag in ("steps", "batch", "logging_steps"):
        if getattr(args, flag):
            words.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    words += [f"--repeats {args.repeats}"] if args.repeats != REPEATS else []
    words += ["--write"] if args.write else []
    return " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--cases",
        help="comma-separated, of lora, qlora (CUDA only), dpo; default: lora on the CPU, "
        "all three on CUDA",
    )
    parser.add_argument("--steps", type=int, help="optimizer steps (default: cpu 6, cuda 30)")
    parser.add_argument("--batch", type=int, help="batch size (default: cpu 1, cuda 4)")
    parser.add_argument("--logging-steps", type=int, help="default: cpu 2, cuda 5")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="interleaved rounds")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--note", default="", help="appended to the machine line")
    parser.add_argument(
        "--check-device", action="store_true", help="only check that --device is usable"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.device == "cuda":
        problem = cuda_problem()
        if problem:
            print(problem, file=sys.stderr)
            raise SystemExit(1)
    if args.check_device:
        return
    s = settings_from(args)
    if args.case:
        print(json.dumps(case_main(args.case, s) | {"settings": asdict(s)}))
        return
    cases = (args.cases or ("lora" if args.device == "cpu" else ",".join(CASES))).split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}: choose from {', '.join(CASES)}")
    if "qlora" in cases and args.device != "cuda":
        parser.error("qlora needs --device cuda (bitsandbytes 4-bit kernels)")
    if args.device == "cuda":
        heading = "GPU check"
        body = gpu_table(cases, s, args.repeats, args.note, command_line(args))
    else:
        heading = "SFT: tunelab vs a plain SFTTrainer script"
        body = cpu_table(cases, s, args.repeats, args.note, command_line(args))
    print(body)
    if args.write:
        write_section(heading, body)


if __name__ == "__main__":
    main()
