"""`tunelab run` when nothing changed: the flow with every step cached (before) against
the up-to-date check that skips the flow (after), side by side.

In one workspace where the plan has run once, alternates `tunelab run --rerun CONFIG`
(the flow runs; every step comes from the cache) and `tunelab run CONFIG` (the
up-to-date check shows the last run; no flow), each as its own process timed from start
to exit, ROUNDS times. Also splits the cached flow's time into its phases, read from the
timestamps of its run log. The goal: the no-op under 5 s on 2 cores.

    python benchmarks/bench_noop_rerun.py --config configs/tiny.yaml --write
    python benchmarks/bench_noop_rerun.py --config configs/milestone.yaml \
        --workspace DIR --write   # DIR: where `make run` ran (its first run takes minutes)

With --write, replaces the "No-op re-run (<config>)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from benchlib import load_average, machine_line, tunelab_run, write_section

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def run(config: Path, workspace: Path, *extra: str) -> tuple[float, datetime, str]:
    """Seconds from process start to exit, the start's wall-clock time and stdout."""
    return tunelab_run(config, workspace, *extra)


def phases(log: Path, started_at: datetime, seconds: float) -> list[tuple[str, float]]:
    """The cached flow's phases, from its run log's timestamps (Prefect's own lines)."""
    marks: list[tuple[datetime, str]] = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        found = STAMP.match(line)
        if found:
            marks.append((datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f"), line))

    def first(pattern: str) -> datetime:
        return next(t for t, line in marks if re.search(pattern, line))

    def last(pattern: str) -> datetime:
        return [t for t, line in marks if re.search(pattern, line)][-1]

    subflow = re.search(r"Beginning subflow run '([^']+)'", "\n".join(m for _, m in marks))[1]
    # Each phase runs from its mark to the next one's.
    points = [
        ("process start, imports, plan", started_at),
        ("temporary Prefect API start", first(r"Starting temporary server")),
        ("flow start", first(r"Beginning flow run")),
        ("data gate (ingest, split, GX, version, report)", first(r"Beginning subflow run")),
        ("MLflow parent runs", first(rf"\[{re.escape(subflow)}\]: Finished")),
        ("cached steps (train, evaluate, register)", first(r"\[parent-runs-\w+\]: Finished")),
        ("review", last(r"\[[^\]]+/[^\]]+\]: Finished in state")),
        ("flow end, API stop, exit", first(r"\[review-\w+\]: Finished")),
    ]
    end = datetime.fromtimestamp(started_at.timestamp() + seconds)
    ends = [at for _, at in points[1:]] + [end]
    return [
        (name, (stop - at).total_seconds()) for (name, at), stop in zip(points, ends, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--workspace", help="where the plan already ran (else a fresh one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--note", default="", help="appended to the machine line")
    args = parser.parse_args()
    config = (ROOT / args.config).resolve()
    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(args.workspace).resolve() if args.workspace else Path(tmp)
        if not args.workspace:
            first_s, _, _ = run(config, workspace)
            print(f"first run: {first_s:.1f} s")
        cached, noop, breakdown = [], [], None
        for _ in range(args.rounds):
            seconds, started_at, _ = run(config, workspace, "--rerun")
            cached.append(seconds)
            log = max((workspace / ".tunelab" / "logs").glob("*-run.log"))
            breakdown = phases(log, started_at, seconds)
            seconds, _, out = run(config, workspace)
            if "Nothing changed since" not in " ".join(out.split()):
                sys.exit(f"the no-op run ran the flow:\n{out[-2000:]}")
            noop.append(seconds)
    load = f"{load} at the start, {load_average()} at the end"
    before, after = statistics.median(cached), statistics.median(noop)
    table = "\n".join(
        [
            "| no-op `tunelab run`, process start to exit | median (s) | all rounds (s) |",
            "|---|---|---|",
            f"| before: the flow, every step cached (`--rerun`) | {before:.1f} | "
            + ", ".join(f"{s:.1f}" for s in cached)
            + " |",
            f"| **after: the up-to-date check, no flow** | **{after:.2f}** | "
            + ", ".join(f"{s:.2f}" for s in noop)
            + " |",
            f"| **after / before** | **{after / before:.3f}** | |",
        ]
    )
    split = "\n".join(
        ["| phase of the cached flow (last round) | s |", "|---|---|"]
        + [f"| {name} | {s:.1f} |" for name, s in breakdown]
    )
    command = f"python benchmarks/bench_noop_rerun.py --config {args.config}"
    body = (
        f"{machine_line(command, args.note, load)}\n\n"
        f"Config `{args.config}`, local MLflow store, temporary Prefect API, {args.rounds} "
        "rounds, the two variants alternating.\n\n" + table + "\n\n" + split + "\n"
    )
    print(body)
    if args.write:
        write_section(f"No-op re-run ({Path(args.config).name})", body)


if __name__ == "__main__":
    main()
