"""Shared by the benchmark scripts: the machine line and writing a section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(command: str) -> str:
    return (
        f"Machine: {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}. Command: `{command}`. Date: {date.today()}."
    )


def write_section(heading: str, body: str, path: Path = DOC) -> None:
    """Replace the section under ``## heading`` (or append it) in docs/benchmarks.md."""
    title = f"## {heading}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{title}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"{re.escape(title)}\n.*?(?=\n## |\Z)", re.S)
    if title in text:
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
