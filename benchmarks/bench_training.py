"""LoRA vs full fine-tuning and merged-LoRA vs base inference latency (section "lora"), and
tunelab's train() vs a hand-written Trainer script with the same arguments (section
"wrapper"), each measured side by side in one run.

Every case runs in its own process, so peak memory is that case's alone. Run with
`make bench`, or one section: `python benchmarks/bench_training.py --only wrapper`. With
--write, the "Training" and "Wrapper overhead" sections of docs/benchmarks.md are replaced
(only those that ran).
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
from pathlib import Path

from benchlib import load_average, machine_line, write_section

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]

# Same data, steps, batch and length for both sides of every comparison.
CLASSIFY = [
    "data.name=sentiment",
    "data.task=classification",
    "data.source=bundled:sentiment",
    "data.labels=[negative, neutral, positive]",
    "model.name=minilm-l6",
    "model.max_length=64",
    "train.max_steps=24",
    "train.batch_size=16",
    "train.learning_rate=5e-5",
    "train.save_steps=1000",
    "train.logging_steps=4",
]
SFT = [
    "data.name=instructions",
    "data.task=generation",
    "data.source=bundled:instructions",
    "model.name=smollm2-135m-instruct",
    "model.max_length=192",
    "train.max_steps=6",
    "train.batch_size=1",
    "train.learning_rate=1e-4",
    "train.save_steps=1000",
    "train.logging_steps=2",
    "train.adapter.r=16",
    "train.adapter.alpha=32",
    "train.adapter.target_modules=[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]",
]
WRAPPER_REPEATS = 3
SECTIONS = ("lora", "wrapper")
CASES = {
    "minilm-full": [*CLASSIFY, "train.method=full"],
    "minilm-lora": [*CLASSIFY, "train.method=lora", "train.learning_rate=1e-3"],
    "smollm2-full": [*SFT, "train.method=full"],
    "smollm2-lora": [*SFT, "train.method=lora"],
}


def load_data(cfg):
    """The dataset's splits; only a few evaluation rows, since evaluation is not measured."""
    from tunelab.data import sources, splits

    data = splits.make_splits(sources.ingest(cfg.data).frames, cfg.data)
    return {name: frame if name == "train" else frame.head(8) for name, frame in data.items()}


def run_tunelab(name: str, workdir: Path) -> dict:
    from tunelab import config
    from tunelab.train import train
    from tunelab.workspace import Workspace

    cfg = config.load(None, CASES[name])
    result = train(cfg, load_data(cfg), Workspace(workdir))
    return {
        "train_seconds": result.train_seconds,
        "steps": result.train_steps,
        "seconds_per_step": result.train_seconds / result.train_steps,
        "peak_rss_mb": result.train_peak_rss_mb,
        "trainable": result.trainable_params,
        "total": result.total_params,
        "checkpoints": len(list(Path(result.output_dir).glob("checkpoint-*"))),
        **{k: v for k, v in result.metrics.items() if k.startswith("latency_")},
    }


def run_plain_trainer(workdir: Path, save: bool = True) -> dict:
    """What a user writes by hand: tokenize, Trainer, train; the same data and settings as
    minilm-full. The arguments are those tunelab's training_arguments() builds, checkpoints
    included (``save=False``: none, to measure what checkpointing costs)."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from tunelab import config, models

    cfg = config.load(None, CASES["minilm-full"])
    t = cfg.train
    data = load_data(cfg)
    labels = cfg.data.labels
    set_seed(t.seed)
    path = models.resolve("minilm-l6").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        dtype=torch.float32,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )

    def encode(frame):
        ds = Dataset.from_dict(
            {"text": frame["text"].tolist(), "label": [labels.index(x) for x in frame["label"]]}
        )
        return ds.map(
            lambda b: tokenizer(b["text"], truncation=True, max_length=cfg.model.max_length),
            batched=True,
            remove_columns=["text"],
        )

    output_dir = workdir / "plain"
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type="linear",
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if t.eval_steps else "epoch",
        eval_steps=t.eval_steps,
        # tunelab checkpoints every save_steps and at the last step, inside trainer.train().
        save_strategy="steps" if save else "no",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encode(data["train"]),
        eval_dataset=encode(data["validation"]),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    output = trainer.train()
    seconds = output.metrics["train_runtime"]
    return {
        "train_seconds": seconds,
        "steps": output.global_step,
        "seconds_per_step": seconds / output.global_step,
        "checkpoints": len(list(output_dir.glob("checkpoint-*"))),
    }


def record_train_cpu() -> dict:
    """Wrap Trainer.train in this process to record its CPU time (user + sys, all threads).

    Both sides get the same wrapper. On a shared machine wall time also counts the time
    spent waiting for a core; CPU time does not (the threads' spinning still counts).
    """
    from transformers import Trainer

    original = Trainer.train
    spent: dict[str, float] = {}

    def train(self, *args, **kwargs):
        started = time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent["train_cpu_seconds"] = time.process_time() - started

    Trainer.train = train
    return spent


def run_case(name: str) -> dict:
    """Run one case in a fresh process and return its JSON line."""
    env = {**os.environ, "TUNELAB_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, str(HERE), "--case", name],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"case {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def lora_table(note: str, command: str) -> str:
    """LoRA vs full on both models, and merged-LoRA vs base latency."""
    load = load_average()
    r = {name: run_case(name) for name in CASES}
    load = f"{load} at the start, {load_average()} at the end"

    def ratio(model: str, key: str) -> float:
        return r[f"{model}-lora"][key] / r[f"{model}-full"][key]

    mem = {m: ratio(m, "peak_rss_mb") for m in ("minilm", "smollm2")}
    step = {m: ratio(m, "seconds_per_step") for m in ("minilm", "smollm2")}
    lines = [
        machine_line(command, note, load),
        "",
        "LoRA vs full fine-tuning, same data, steps, batch and length; each case in its own "
        "process; peak RSS is that process's while `trainer.train()` runs. minilm-l6: "
        "sentiment classification, 24 steps, batch 16, 64 tokens. smollm2-135m-instruct: "
        "causal SFT on instructions, 6 steps, batch 1, up to 192 tokens, LoRA r=16 on all "
        "linear layers.",
        "",
        "| case | trainable / total params | s/step | peak RSS (MB) |",
        "|---|---|---|---|",
    ]
    for name in CASES:
        c = r[name]
        lines.append(
            f"| {name} | {c['trainable']:,} / {c['total']:,} | {c['seconds_per_step']:.3f} | "
            f"{c['peak_rss_mb']:.0f} |"
        )
    goal = {"smollm2": " (goal: memory <= 0.6, step <= 0.85)", "minilm": ""}
    lines += ["", "| ratio (LoRA / full) | peak memory | step time |", "|---|---|---|"]
    for m in ("minilm", "smollm2"):
        lines.append(f"| {m}{goal[m]} | {mem[m]:.2f} | {step[m]:.2f} |")
    lines += [
        "",
        "Merged-LoRA vs base model inference latency (median of repeated forward passes on "
        "the same held-out batch; goal <= 1.05):",
        "",
        "| model | base (ms) | merged (ms) | ratio |",
        "|---|---|---|---|",
    ]
    for m in ("minilm", "smollm2"):
        c = r[f"{m}-lora"]
        if "latency_base_ms" in c:
            base, merged = c["latency_base_ms"], c["latency_merged_ms"]
            lines.append(f"| {m} | {base:.1f} | {merged:.1f} | {merged / base:.2f} |")
    return "\n".join(lines) + "\n"


WRAPPER_RUNS = {
    "minilm-full": "tunelab `train()`",
    "plain-trainer": "plain Trainer script, same checkpointing",
    "plain-trainer-nosave": 'plain Trainer script, `save_strategy="no"`',
}


def wrapper_table(repeats: int, note: str, command: str) -> str:
    """tunelab's train() vs the same Trainer written by hand, with and without checkpoints."""
    from tunelab import config

    cfg = config.load(None, CASES["minilm-full"])
    load = load_average()
    # The difference is a few percent at most, below this machine's run-to-run noise:
    # interleave repeated runs of every variant and compare medians.
    runs: dict[str, list[dict]] = {name: [] for name in WRAPPER_RUNS}
    for _ in range(repeats):
        for name in WRAPPER_RUNS:
            runs[name].append(run_case(name))
    load = f"{load} at the start, {load_average()} at the end"

    def median(name: str, key: str) -> float:
        return statistics.median(c[key] for c in runs[name])

    med = {n: median(n, "seconds_per_step") for n in WRAPPER_RUNS}
    cpu = {n: median(n, "cpu_seconds_per_step") for n in WRAPPER_RUNS}
    ours, plain, nosave = med["minilm-full"], med["plain-trainer"], med["plain-trainer-nosave"]
    steps = runs["minilm-full"][0]["steps"]
    lines = [
        machine_line(command, note, load),
        "",
        f"minilm-l6 full fine-tuning on sentiment, {steps} steps, batch "
        f"{cfg.train.batch_size}, {cfg.model.max_length} tokens. Timed: "
        "`trainer.train()` (the Trainer's `train_runtime`), which on both sides includes the "
        "validation pass and the checkpoint written at the last step "
        f"(`save_steps={cfg.train.save_steps}`, "
        f"`save_total_limit={cfg.train.save_total_limit}`: model, optimizer and scheduler "
        "state). The plain script passes the same `TrainingArguments` that tunelab's "
        "`training_arguments()` builds; a third variant saves nothing, to show what "
        f"checkpointing costs. Each run in its own process, {repeats} interleaved runs of each, "
        "medians. CPU s/step is the process's CPU time (user + sys, all threads) inside "
        "`trainer.train()`: it leaves out time spent waiting for a core, though not the "
        "threads' spinning while they wait.",
        "",
        "| variant | wall s/step (median) | runs (wall s/step) | CPU s/step (median) | "
        "runs (CPU s/step) | checkpoints on disk |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in WRAPPER_RUNS.items():
        each = ", ".join(f"{c['seconds_per_step']:.3f}" for c in runs[name])
        each_cpu = ", ".join(f"{c['cpu_seconds_per_step']:.3f}" for c in runs[name])
        saved = "/".join(sorted({str(c["checkpoints"]) for c in runs[name]}))
        lines.append(
            f"| {label} | {med[name]:.3f} | {each} | {cpu[name]:.3f} | {each_cpu} | {saved} |"
        )
    cpu_ours, cpu_plain = cpu["minilm-full"], cpu["plain-trainer"]
    lines += [
        "",
        f"**Throughput ratio, tunelab / plain script with the same checkpointing: "
        f"{plain / ours:.2f}** by wall time (goal >= 0.95; {ours:.3f} vs {plain:.3f} s/step), "
        f"**{cpu_plain / cpu_ours:.2f}** by CPU time ({cpu_ours:.3f} vs {cpu_plain:.3f} s/step).",
        "",
        f"Checkpointing alone (plain script, with vs without): {(plain - nosave) * steps:.1f} s "
        f"of {plain * steps:.1f} s wall, {(plain - nosave) / plain:.0%} of this short run's "
        f"`trainer.train()` ({(cpu_plain - cpu['plain-trainer-nosave']) * steps:.1f} s of "
        f"{cpu_plain * steps:.1f} s CPU). tunelab vs the plain script without checkpoints "
        f"(not like for like: only tunelab writes one): {nosave / ours:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def command_line(args: argparse.Namespace) -> str:
    """The command as run; a --note is shown after the machine line instead."""
    words = ["python", "benchmarks/bench_training.py"]
    words += [f"--only {args.only}"] if args.only else []
    words += [f"--repeats {args.repeats}"] if args.repeats != WRAPPER_REPEATS else []
    words += ["--write"] if args.write else []
    return " ".join(words)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--only", choices=SECTIONS, help="run one section (default: all)")
    parser.add_argument(
        "--repeats", type=int, default=WRAPPER_REPEATS, help="interleaved runs per variant"
    )
    parser.add_argument("--note", default="", help="appended to the machine line")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        cpu = record_train_cpu()
        with tempfile.TemporaryDirectory() as tmp:
            if args.case.startswith("plain-trainer"):
                found = run_plain_trainer(Path(tmp), save=args.case == "plain-trainer")
            else:
                found = run_tunelab(args.case, Path(tmp))
        found["cpu_seconds_per_step"] = cpu["train_cpu_seconds"] / found["steps"]
        print(json.dumps(found))
    else:
        for section in [args.only] if args.only else SECTIONS:
            if section == "lora":
                heading, body = "Training", lora_table(args.note, command_line(args))
            else:
                heading = "Wrapper overhead"
                body = wrapper_table(args.repeats, args.note, command_line(args))
            print(body)
            if args.write:
                write_section(heading, body)
