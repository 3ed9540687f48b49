"""The milestone pipeline's orchestration overhead and its cached re-run, on one config.

Runs `tunelab run CONFIG` twice in a fresh workspace, each as its own process (what a
user runs), timed from process start to exit, and reads the summary.json each run writes
next to its review:

- orchestration overhead = end-to-end time minus the time inside the library's train and
  evaluate functions, as a share of the end-to-end time (goal <= 10%). It includes
  process start and imports, the temporary Prefect API, data preparation, the register
  step (MLflow logging and registration) and the review; the register step and the time
  outside the flow are also reported as their own shares;
- cached re-run of the flow (`--rerun`) / first run, end to end (goal <= 0.10).

Run with `make bench` (the `make run` configuration, about 15 minutes on 2 CPU cores) or
`python benchmarks/bench_milestone.py --config configs/tiny.yaml`. With --write, replaces
the "Milestone pipeline" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml
from benchlib import load_average, machine_line, tunelab_run, write_section

ROOT = Path(__file__).resolve().parents[1]


def run_once(config: Path, workspace: Path, *extra: str) -> tuple[float, dict]:
    seconds, _, _ = tunelab_run(config, workspace, *extra)
    newest = max((workspace / "reports" / "milestone").glob("*/summary.json"))
    return seconds, json.loads(newest.read_text())


def overhead_rows(first_s: float, first: dict, second_s: float, second: dict) -> list:
    """The table's rows from the two runs' end-to-end seconds and their summaries."""
    steps = first["step_seconds"]
    work = steps["train"] + steps["evaluate"]
    outside = first_s - first["wall_seconds"]
    inside_rest = first["wall_seconds"] - work - steps["register"]
    return [
        ("**first run, end to end** (process start to exit, s)", f"**{first_s:.1f}**"),
        ("flow wall time (s)", f"{first['wall_seconds']:.1f}"),
        ("inside train() (s)", f"{steps['train']:.1f}"),
        ("inside evaluation (s)", f"{steps['evaluate']:.1f}"),
        ("inside tracking + registry + gate (s)", f"{steps['register']:.1f}"),
        (
            "**orchestration overhead**: (end to end - train - evaluate) / end to end",
            f"**{(first_s - work) / first_s:.1%}**",
        ),
        ("of which tracking + registry + gate", f"{steps['register'] / first_s:.1%}"),
        (
            "of which the rest of the flow (data gate, review, Prefect tasks)",
            f"{inside_rest / first_s:.1%}",
        ),
        (
            "of which outside the flow (process start, imports, temporary Prefect API, exit)",
            f"{outside / first_s:.1%}",
        ),
        ("cached re-run of the flow (`--rerun`), end to end (s)", f"{second_s:.1f}"),
        (
            "steps reused",
            f"{sum(len(m['reused']) for m in second['methods'])} of {3 * len(second['methods'])}",
        ),
        ("**cached re-run / first run**", f"**{second_s / first_s:.3f}**"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/milestone.yaml")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--note", default="", help="appended to the machine line")
    args = parser.parse_args()
    config = (ROOT / args.config).resolve()
    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        first_s, first = run_once(config, Path(tmp))
        # --rerun: the flow runs with every step cached (without it, the unchanged plan
        # would be shown without running: benchmarks/bench_noop_rerun.py).
        second_s, second = run_once(config, Path(tmp), "--rerun")
    load = f"{load} at the start, {load_average()} at the end"
    rows = overhead_rows(first_s, first, second_s, second)
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    # Step times are summed over methods: with methods trained at once they overlap.
    concurrency = (yaml.safe_load(config.read_text()) or {}).get("concurrency", 1)
    caveat = (
        f" With concurrency {concurrency} step times overlap: the overhead share is understated."
        if concurrency != 1
        else ""
    )
    command = f"python benchmarks/bench_milestone.py --config {args.config}"
    body = (
        f"{machine_line(command, args.note, load)}\n\n"
        f"Config `{args.config}`, {len(first['methods'])} methods, local MLflow store, "
        f"temporary Prefect API.{caveat}\n\n" + table + "\n"
    )
    print(body)
    if args.write:
        write_section("Milestone pipeline", body)


if __name__ == "__main__":
    main()
