"""The milestone pipeline's orchestration overhead and its cached re-run, on one config.

Runs `tunelab run CONFIG` twice in a fresh workspace, each as its own process (what a
user runs), and reads the summary.json each run writes next to its review:

- orchestration overhead = flow wall time minus the time inside the library's train and
  evaluate functions, as a share of the flow wall time (goal <= 10%); the register step
  (MLflow logging and registration), data preparation and the review are reported as
  their own shares, since they are work, not orchestration;
- cached re-run / first run, end to end (process start included; goal <= 0.10).

Run with `make bench` (the `make run` configuration, about 15 minutes on 2 CPU cores) or
`python benchmarks/bench_milestone.py --config configs/tiny.yaml`. With --write, replaces
the "Milestone pipeline" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import machine_line, write_section

ROOT = Path(__file__).resolve().parents[1]
TUNELAB = Path(sys.executable).parent / "tunelab"


def run_once(config: Path, workspace: Path) -> tuple[float, dict]:
    env = os.environ | {
        "TUNELAB_WORKDIR": str(workspace),
        "TUNELAB_PROGRESS": "0",
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    done = subprocess.run(
        [str(TUNELAB), "run", str(config)], env=env, capture_output=True, text=True, cwd=ROOT
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(
            f"tunelab run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    newest = max((workspace / "reports" / "milestone").glob("*/summary.json"))
    return seconds, json.loads(newest.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/milestone.yaml")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    config = (ROOT / args.config).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        first_s, first = run_once(config, Path(tmp))
        second_s, second = run_once(config, Path(tmp))
    wall = first["wall_seconds"]
    work = first["step_seconds"]["train"] + first["step_seconds"]["evaluate"]
    rows = [
        ("first run, end to end (s)", f"{first_s:.1f}"),
        ("flow wall time (s)", f"{wall:.1f}"),
        ("inside train() (s)", f"{first['step_seconds']['train']:.1f}"),
        ("inside evaluation (s)", f"{first['step_seconds']['evaluate']:.1f}"),
        ("inside tracking + registry + gate (s)", f"{first['step_seconds']['register']:.1f}"),
        (
            "**orchestration overhead**: (wall - train - evaluate) / wall",
            f"**{(wall - work) / wall:.1%}**",
        ),
        (
            "of which tracking + registry + gate",
            f"{first['step_seconds']['register'] / wall:.1%}",
        ),
        (
            "of which the rest (data gate, review, Prefect)",
            f"{(wall - work - first['step_seconds']['register']) / wall:.1%}",
        ),
        ("cached re-run, end to end (s)", f"{second_s:.1f}"),
        (
            "steps reused",
            f"{sum(len(m['reused']) for m in second['methods'])} of {3 * len(second['methods'])}",
        ),
        ("**cached re-run / first run**", f"**{second_s / first_s:.3f}**"),
    ]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    body = (
        f"{machine_line(f'python benchmarks/bench_milestone.py --config {args.config}')}\n\n"
        f"Config `{args.config}`, {len(first['methods'])} methods, local MLflow store, "
        "temporary Prefect API.\n\n" + table + "\n"
    )
    print(body)
    if args.write:
        write_section("Milestone pipeline", body)


if __name__ == "__main__":
    main()
