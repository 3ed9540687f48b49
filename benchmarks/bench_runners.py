"""Two methods on the Dask runner (a local cluster of 2 worker processes) against the
thread runner one method at a time, side by side in one run.

The plan: two independent tiny classifiers of one dataset (LoRA and full fine-tuning of
the tiny BERT, ``--steps`` optimizer steps each). Each round runs `tunelab run PLAN
--runner dask --workers 2` and `tunelab run PLAN --runner thread --workers 1`, each in a
fresh workspace (nothing cached) as its own process timed from start to exit, the order
alternating between rounds. Also reports the time of each train step (from `--json`):
on a machine with fewer cores than workers x torch threads, parallel methods share them.

    python benchmarks/bench_runners.py --write

With --write, replaces the "Task runners: Dask vs one after another" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import yaml
from benchlib import load_average, machine_line, tunelab_run, write_section

ROOT = Path(__file__).resolve().parents[1]
HEADING = "Task runners: Dask vs one after another"
VARIANTS = {
    "dask, 2 worker processes": ("--runner", "dask", "--workers", "2"),
    "thread, 1 at a time": ("--runner", "thread", "--workers", "1"),
}


def write_plan(folder: Path, steps: int) -> Path:
    shared = ["data.max_rows=300", f"train.max_steps={steps}", f"train.save_steps={steps}"]
    tiny = ROOT / "configs" / "tiny"
    raw = {
        "title": "Two methods",
        "datasets": {
            "tiny-sentiment": {
                "lora": {"config": str(tiny / "sentiment-lora.yaml"), "set": shared},
                "full": {"config": str(tiny / "sentiment-full.yaml"), "set": shared},
            }
        },
    }
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(plan: Path, workspace: Path, flags: tuple[str, ...]) -> tuple[float, list[float]]:
    """Seconds from process start to exit, and each method's train step seconds."""
    workspace.mkdir(parents=True)
    seconds, _, out = tunelab_run(plan, workspace, *flags, "--json")
    done = json.loads(out)
    return seconds, [m["seconds"]["train"] for m in done["methods"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=48, help="optimizer steps per method")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--note", default="", help="appended to the machine line")
    args = parser.parse_args()
    load = load_average()
    walls = {name: [] for name in VARIANTS}
    trains = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        plan = write_plan(Path(tmp), args.steps)
        for round_ in range(args.rounds):
            order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                seconds, train = run(
                    plan, Path(tmp) / f"ws-{round_}-{len(walls[name])}{name[0]}", VARIANTS[name]
                )
                walls[name].append(seconds)
                trains[name] += train
                print(f"round {round_ + 1}, {name}: {seconds:.1f} s (train {train})")
    load = f"{load} at the start, {load_average()} at the end"
    dask, thread = (statistics.median(walls[name]) for name in VARIANTS)
    rows = [
        f"| {name} | {statistics.median(walls[name]):.1f} | "
        + ", ".join(f"{s:.1f}" for s in walls[name])
        + f" | {statistics.median(trains[name]):.1f} |"
        for name in VARIANTS
    ]
    table = "\n".join(
        [
            "| `tunelab run`, 2 methods, process start to exit | median (s) | all rounds (s) "
            "| train step, median (s) |",
            "|---|---|---|---|",
            *rows,
            f"| **dask / thread (wall time)** | **{dask / thread:.2f}** | | |",
        ]
    )
    command = f"python benchmarks/bench_runners.py --rounds {args.rounds} --steps {args.steps}"
    body = (
        f"{machine_line(command, args.note, load)}\n\n"
        f"Plan: LoRA and full fine-tuning of the tiny BERT on 300 sentiment rows, "
        f"{args.steps} optimizer steps each, independent of each other. Each run in a fresh "
        "workspace (nothing cached): local MLflow store, temporary Prefect API; the Dask "
        f"runs start their local cluster. {args.rounds} rounds, the order alternating.\n\n"
        + table
        + "\n"
    )
    print(body)
    if args.write:
        write_section(HEADING, body)


if __name__ == "__main__":
    main()
