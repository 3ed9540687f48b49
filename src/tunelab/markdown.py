"""The Markdown kit every report shares: escaping, tables, links, plots, one HTML page.

Cells and lines are escaped here, once; ``table`` expects cells that already are.
Plots use matplotlib's object API (``Figure``, rendered by Agg), so no pyplot state or
GUI backend is involved.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

MISSING = "–"  # what a cell shows for a missing value
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; line-height: 1.45;
       max-width: 1200px; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; }
img { max-width: 100%; height: auto; }
"""


# --- text ---------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown pipe table; cells must already be escaped.

    Headers that are all blank make a table without column names: its (required) header
    row is written as ``| | |``.
    """
    head = "| " + " | ".join(headers) + " |" if any(headers) else "|" + " |" * len(headers)
    lines = [head, "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cell(value: object, width: int = 10_000) -> str:
    """Text safe inside a table cell: cut to ``width``, HTML and pipes escaped, newlines <br>."""
    if _missing(value):
        return MISSING
    text = html.escape(short(str(value), width), quote=False).replace("|", "\\|")
    return re.sub(r"\r\n|\r|\n", "<br>", text)


def inline(value: object) -> str:
    """Text safe on one Markdown line (and in a table cell)."""
    return html.escape(" ".join(str(value).split()), quote=False).replace("|", "\\|")


def code(value: object) -> str:
    """A code span; backticks inside are dropped rather than escaped (Markdown can't)."""
    text = " ".join(str(value).replace("`", "'").split())
    return f"`{text.replace('|', chr(92) + '|')}`"


def short(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def url(target: str) -> str:
    """A URL safe inside a Markdown link: spaces and other unsafe characters quoted."""
    return quote(target, safe=":/?#[]@!$&'()*+,;=%~")


def link(target: str, folder: Path, text: str | None = None) -> str:
    """A Markdown link to a URL or a local file, shown as ``text`` (default: the file name).

    Local paths (as seen from the working directory) are made relative to ``folder``,
    where the report lives, so the link survives moving the workspace.
    """
    parsed = urlparse(target)
    if parsed.scheme in ("http", "https"):
        return f"[{inline(target if text is None else text)}]({url(target)})"
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(target)
    path = Path(os.path.relpath(path.resolve(), Path(folder).resolve()))
    shown = (path.name or target) if text is None else text
    return f"[{inline(shown)}]({quote(path.as_posix())})"


def slug(name: str, fallback: str) -> str:
    """``name`` as a file-name part: runs of other characters become one '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or fallback


def _missing(value: object) -> bool:
    """None, NaN, and pandas' NA and NaT (pandas is asked only about other scalars)."""
    if value is None:
        return True
    if isinstance(value, str | int):
        return False
    if isinstance(value, float):
        return math.isnan(value)
    import pandas as pd

    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


# --- plots --------------------------------------------------------------------------


def figure(width: float = 7.0, height: float = 4.0):
    """A matplotlib Figure (not pyplot), 100 dpi, constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig, path: Path) -> Path:
    """Write the figure as PNG to ``path``; returns the path."""
    fig.savefig(path, format="png")
    return path


# --- HTML ---------------------------------------------------------------------------


def render_html(markdown_text: str, title: str, folder: Path) -> str:
    """A standalone HTML page of the Markdown; local PNGs it shows become data URIs."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    body = re.sub(
        r'(<img\b[^>]*?\bsrc=")([^"]*)(")',
        lambda m: m.group(1) + _data_uri(m.group(2), Path(folder)) + m.group(3),
        body,
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _data_uri(src: str, folder: Path) -> str:
    """The PNG at ``src`` (relative to the folder) as a data URI; other sources unchanged."""
    target = unquote(html.unescape(src))
    if urlparse(target).scheme or not target.lower().endswith(".png"):
        return src
    path = (folder / target).resolve()
    if not path.is_file() or not path.is_relative_to(folder.resolve()):
        return src
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
