"""Shared by the benchmark scripts: the machine line and writing a section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
TUNELAB = Path(sys.executable).parent / "tunelab"


def tunelab_run(config: Path, workspace: Path, *extra: str) -> tuple[float, datetime, str]:
    """`tunelab run CONFIG` as a user runs it, its own process in ``workspace`` (offline,
    local MLflow store): seconds from process start to exit, the start's wall-clock time
    and stdout. Exits the benchmark with the output's tail when the run fails."""
    env = os.environ | {
        "TUNELAB_WORKDIR": str(workspace),
        "TUNELAB_PROGRESS": "0",
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    started_at = datetime.now()
    started = time.perf_counter()
    done = subprocess.run(
        [str(TUNELAB), "run", str(config), *extra],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(
            f"tunelab run {' '.join(extra)} failed ({done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return seconds, started_at, done.stdout


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1-minute load average: on a shared machine, how busy it was besides us."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


def machine_line(command: str, note: str = "", load: str | None = None) -> str:
    """Machine, command, date and the load average (``load``, else now); ``note`` appended."""
    line = (
        f"Machine: {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}. Command: `{command}`. Date: {date.today()}. "
        f"Load average (1 min): {load or load_average()}."
    )
    return f"{line} {note.strip()}" if note.strip() else line


def write_section(heading: str, body: str, path: Path = DOC) -> None:
    """Replace the section under ``## heading`` (or append it) in docs/benchmarks.md."""
    title = f"## {heading}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{title}\n\n{body.rstrip()}\n"
    # The exact heading line: "## Training" must not match "## Training: reading ...".
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=\n## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
