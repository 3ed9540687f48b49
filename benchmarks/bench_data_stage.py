"""Where the data stage spends its time: each step on each bundled dataset, in one run.

Run with `make bench`. Prints a Markdown table and, with --write, replaces the
"Data stage" section of docs/benchmarks.md with it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchlib import machine_line, write_section

from tunelab import config
from tunelab.data import prepare
from tunelab.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("sentiment", "preferences", "instructions")
STEPS = ("ingest", "split", "validate", "version", "report")


def time_dataset(name: str, workspace: Workspace) -> dict[str, float]:
    cfg = config.load(ROOT / "configs" / f"{name}.yaml")
    seconds: dict[str, float] = {}

    def timed(step, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        seconds[step] = time.perf_counter() - start
        return result

    raw = timed("ingest", prepare.ingest, cfg)
    frames = timed("split", prepare.split, raw, cfg)
    outcome = timed("validate", prepare.validate, frames, cfg, workspace)
    version = timed("version", prepare.save_version, frames, cfg, raw.origin, outcome, workspace)
    timed("report", prepare.write_report, frames, cfg, version, outcome, workspace)
    seconds["rows"] = raw.rows
    return seconds


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace(Path(tmp))
        # Warm-up: the first GX context and library imports cost seconds once per process.
        time_dataset("sentiment", Workspace(Path(tmp) / "warmup"))
        results = {name: time_dataset(name, workspace) for name in DATASETS}
        again = {name: time_dataset(name, workspace) for name in DATASETS}
    lines = [
        machine_line("make bench"),
        "",
        "Seconds per step on the bundled datasets (after a warm-up run), and the share of each "
        "step in that dataset's total. The last column re-prepares unchanged data.",
        "",
        "| dataset | rows | " + " | ".join(STEPS) + " | total | unchanged re-run |",
        "|---|---" + "|---" * (len(STEPS) + 2) + "|",
    ]
    for name, sec in results.items():
        total = sum(sec[s] for s in STEPS)
        rerun = sum(again[name][s] for s in STEPS)
        cells = [f"{sec[s]:.2f} ({sec[s] / total:.0%})" for s in STEPS]
        lines.append(
            f"| {name} | {sec['rows']} | "
            + " | ".join(cells)
            + f" | {total:.2f} | {rerun:.2f} ({rerun / total:.2f}x) |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    table = run()
    print(table)
    if args.write:
        write_section("Data stage", table)
