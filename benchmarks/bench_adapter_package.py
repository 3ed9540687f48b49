"""Adapter-only vs merged packages of one LoRA run: size on disk of what gets registered,
load time and answers (section "Adapter-only packages").

One smollm2-135m-instruct LoRA run (r=16 on all linear layers, a few steps: the sizes do
not depend on how long it trains) is logged to a temporary MLflow store twice, with
registry.package=adapter and =merged, and both registered versions are loaded back by
tunelab's loader and by mlflow.pyfunc.load_model, which must answer the same test prompts
alike. Run with `make bench`, or `python benchmarks/bench_adapter_package.py`; --write
replaces the section in docs/benchmarks.md; --model tiny-llama for a quick check.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from benchlib import load_average, machine_line, write_section

SECTION = "Adapter-only packages"
PROMPTS = 3  # test prompts answered by every loader
SETTINGS = [
    "data.name=instructions",
    "data.task=generation",
    "data.source=bundled:instructions",
    "model.max_length=256",
    "train.method=lora",
    "train.max_steps=2",
    "train.batch_size=1",
    "train.learning_rate=1e-4",
    "train.save_steps=1000",
    "train.adapter.r=16",
    "train.adapter.alpha=32",
    "train.adapter.target_modules=[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]",
]


def load_data(cfg):
    """The dataset's splits, with a few test rows: evaluation is not what is measured."""
    from tunelab.data import sources, splits

    data = splits.make_splits(sources.ingest(cfg.data).frames, cfg.data)
    return {name: frame if name == "train" else frame.head(4) for name, frame in data.items()}


def measure(model: str, workdir: Path) -> dict:
    import mlflow

    from tunelab import config, scorecard
    from tunelab.lifecycle import packaging, tracking
    from tunelab.train import train
    from tunelab.workspace import Workspace

    cfg = config.load(None, [*SETTINGS, f"model.name={model}"])
    workspace = Workspace(workdir / "ws")
    started = time.perf_counter()
    result = train(cfg, load_data(cfg), workspace)
    card = scorecard.evaluate_run(result, cfg, workspace)
    train_seconds = time.perf_counter() - started
    prompts = card.predictions()["prompt"].astype(str).tolist()[:PROMPTS]

    target = tracking.setup(Workspace(workdir / "store"))
    rows: dict[str, dict] = {}
    answers: dict[str, list[str]] = {}
    experiment = tracking.experiment_for(target, result.dataset)  # creates the store
    for package in packaging.PACKAGES:
        chosen = config.load(
            None, [*SETTINGS, f"model.name={model}", f"registry.package={package}"]
        )
        started = time.perf_counter()
        with mlflow.start_run(experiment_id=experiment):
            info = packaging.log_model(result, card, chosen)
        version = mlflow.register_model(info.model_uri, "bench-generator").version
        log_seconds = time.perf_counter() - started
        stored = Path(urlparse(mlflow.get_logged_model(info.model_id).artifact_location).path)
        started = time.perf_counter()
        loaded = packaging.load_registered("bench-generator", version, f"v{version}")
        load_seconds = time.perf_counter() - started
        answers[f"tunelab {package}"] = loaded.predict(prompts)
        pyfunc = mlflow.pyfunc.load_model(f"models:/bench-generator/{version}")
        answers[f"mlflow {package}"] = [str(a) for a in pyfunc.predict(prompts)]
        rows[package] = {
            "registered_mb": packaging.disk_mb(stored),
            "log_seconds": log_seconds,
            "load_seconds": load_seconds,
        }
    return {
        "model": model,
        "train_seconds": train_seconds,
        "trainable": result.trainable_params,
        "total": result.total_params,
        "adapter_dir_mb": packaging.disk_mb(result.artifact("adapter")),
        "merged_dir_mb": packaging.disk_mb(result.artifact("merged")),
        "packages": rows,
        "same_answers": len({tuple(a) for a in answers.values()}) == 1,
        "answers": answers,
    }


def render(found: dict, command: str, load: str) -> str:
    rows = found["packages"]
    ratio = rows["merged"]["registered_mb"] / rows["adapter"]["registered_mb"]
    table = [
        "| package | registered files (MB) | log + register (s) | tunelab load (s) |",
        "|---|---|---|---|",
    ]
    for package, row in rows.items():
        table.append(
            f"| {package} | {row['registered_mb']:.2f} | {row['log_seconds']:.1f} | "
            f"{row['load_seconds']:.1f} |"
        )
    same = "the same" if found["same_answers"] else "**different**"
    return "\n".join(
        [
            machine_line(command, load=load),
            "",
            f"{found['model']} LoRA (r=16 on all linear layers, "
            f"{found['trainable']:,} trainable of {found['total']:,} parameters, 2 steps), "
            "logged to a local MLflow store as each package and registered; sizes are the "
            "registered model folders on disk (MLmodel, environment files and code included).",
            "",
            *table,
            "",
            f"Merged / adapter size: **{ratio:.0f}x** (run folder: adapter/ "
            f"{found['adapter_dir_mb']:.2f} MB, merged/ {found['merged_dir_mb']:.1f} MB). "
            f"Both packages, each through tunelab's loader and mlflow.pyfunc.load_model, gave "
            f"{same} greedy answers to {PROMPTS} test prompts.",
            "",
            "The adapter package holds the adapter (safetensors), the tokenizer and a "
            "reference to the base model (name, revision, weights id); loading it resolves "
            "the base through tunelab.models (its folder, not counted here, is shared by "
            "every version) and merges the adapter in memory, so it answers as the merged "
            "package does. Logging it loads the model once (MLflow infers the output "
            "signature from the input example). Below 1B parameters tunelab registers the "
            "merged model unless registry.package says otherwise; above, the adapter.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the base model")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TUNELAB_PROGRESS", "0")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # a throwaway store, never the user's server
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-adapter-") as tmp:
        found = measure(args.model, Path(tmp))
    command = "make bench" if args.model == "smollm2-135m-instruct" else " ".join(sys.argv)
    body = render(found, command, load)
    print(body)
    if not found["same_answers"]:
        print(found["answers"], file=sys.stderr)
    if args.write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
