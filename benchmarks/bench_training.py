"""LoRA vs full fine-tuning, tunelab's train() vs a hand-written Trainer script, and
merged-LoRA vs base inference latency, measured side by side in one run.

Every case runs in its own process, so peak memory is that case's alone. Run with
`make bench`; with --write the "Training" section of docs/benchmarks.md is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import machine_line, write_section

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
        **{k: v for k, v in result.metrics.items() if k.startswith("latency_")},
    }


def run_plain_trainer(workdir: Path) -> dict:
    """What a user writes by hand: tokenize, Trainer, train; the same settings as minilm-full."""
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
    data = load_data(cfg)
    labels = cfg.data.labels
    set_seed(cfg.train.seed)
    path = models.resolve("minilm-l6").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
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

    args = TrainingArguments(
        output_dir=str(workdir / "plain"),
        max_steps=cfg.train.max_steps,
        per_device_train_batch_size=cfg.train.batch_size,
        per_device_eval_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.learning_rate,
        logging_steps=cfg.train.logging_steps,
        eval_strategy="epoch",
        save_strategy="no",
        seed=cfg.train.seed,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
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
    }


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


def table() -> str:
    r = {name: run_case(name) for name in CASES}
    # The wrapper comparison is a few percent at most, below this machine's run-to-run
    # noise: interleave repeated runs of both and compare medians.
    pairs = [(run_case("minilm-full"), run_case("plain-trainer")) for _ in range(WRAPPER_REPEATS)]
    ours = statistics.median(a["seconds_per_step"] for a, _ in pairs)
    plain = statistics.median(b["seconds_per_step"] for _, b in pairs)

    def ratio(model: str, key: str) -> float:
        return r[f"{model}-lora"][key] / r[f"{model}-full"][key]

    mem = {m: ratio(m, "peak_rss_mb") for m in ("minilm", "smollm2")}
    step = {m: ratio(m, "seconds_per_step") for m in ("minilm", "smollm2")}
    wrapper = plain / ours
    lines = [
        machine_line("make bench"),
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
        f"tunelab `train()` vs a hand-written transformers Trainer script (minilm-l6, the same "
        f"settings, medians of {WRAPPER_REPEATS} interleaved runs each): throughput ratio "
        f"{wrapper:.2f} (goal >= 0.95; {ours:.3f} vs {plain:.3f} s/step).",
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        with tempfile.TemporaryDirectory() as tmp:
            if args.case == "plain-trainer":
                found = run_plain_trainer(Path(tmp))
            else:
                found = run_tunelab(args.case, Path(tmp))
        print(json.dumps(found))
    else:
        body = table()
        print(body)
        if args.write:
            write_section("Training", body)
