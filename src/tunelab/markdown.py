"""The Markdown kit every report shares: escaping, tables, links, plots, one HTML page.

Reports show text that came from data, models, configs and errors, so none of it may
act as Markdown or HTML: cells and lines are escaped here, once (``cell``, ``inline``,
``code``); ``table`` expects cells that already are. ``render_html`` is the second line:
the page it writes shows raw HTML as text, links only to relative paths or http(s), and
shows images only from the report's own folder, embedded.
A page refers to its local files (plots, other reports) through a ``FileRefs``: by
relative path for the copy saved next to them (``RelativeRefs``), or, for a copy shown
elsewhere, such as a Prefect artifact (``EmbeddedRefs``), with its images inline and its
files linked where a server holds them, else named as text.
Plots use matplotlib's object API (``Figure``, rendered by Agg), so no pyplot state or
GUI backend is involved.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
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
WEB_SCHEMES = ("http", "https")
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
}
# Markdown syntax a text could carry; backslash-escaped it shows as itself.
_MARKDOWN_SYNTAX = re.compile(r"([\\`*\[\]])")
# An underscore between letters or digits never starts emphasis: leave names readable.
_LOOSE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# Browsers ignore these inside a URL's scheme ("java\tscript:").
_URL_IGNORED = re.compile(r"[\x00-\x20\x7f]+")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


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


def escape(text: str) -> str:
    """Plain text as Markdown that shows it as written: HTML and Markdown syntax escaped."""
    text = _MARKDOWN_SYNTAX.sub(r"\\\1", html.escape(text, quote=False))
    return _LOOSE_UNDERSCORE.sub(r"\\_", text)


def cell(value: object, width: int = 10_000) -> str:
    """Text safe inside a table cell: cut to ``width``, escaped, newlines <br>."""
    if _missing(value):
        return MISSING
    text = escape(short(str(value), width)).replace("|", "\\|")
    return re.sub(r"\r\n|\r|\n", "<br>", text)


def inline(value: object) -> str:
    """Text safe on one Markdown line (and in a table cell)."""
    return escape(" ".join(str(value).split())).replace("|", "\\|")


def code(value: object) -> str:
    """A code span; backticks inside are dropped rather than escaped (Markdown can't)."""
    text = " ".join(str(value).replace("`", "'").split())
    return f"`{text.replace('|', chr(92) + '|')}`"


def short(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def url(target: str) -> str:
    """A URL safe inside a Markdown link: spaces, quotes, parentheses and the like quoted."""
    return quote(target, safe=":/?#[]@!$&*+,;=%~")  # [] kept for IPv6 hosts


def web_link(target: str, text: str | None = None) -> str:
    """A link to an http(s) URL; any other target is shown as text, not linked."""
    shown = inline(target if text is None else text)
    if urlparse(target).scheme.lower() not in WEB_SCHEMES:
        return shown
    return f"[{shown}]({url(target)})"


def link(target: str, folder: Path, text: str | None = None) -> str:
    """A Markdown link to a URL or a local file, shown as ``text`` (default: the file name).

    Local paths (as seen from the working directory) are made relative to ``folder``,
    where the report lives, so the link survives moving the workspace. Only http(s)
    URLs and files are linked: a ``javascript:`` or ``data:`` target is shown as text.
    """
    parsed = urlparse(target)
    if parsed.scheme.lower() not in ("", "file") and not re.match(r"^[A-Za-z]:[\\/]", target):
        return web_link(target, text)
    path = Path(unquote(parsed.path)) if parsed.scheme.lower() == "file" else Path(target)
    path = Path(os.path.relpath(path.resolve(), Path(folder).resolve()))
    shown = (path.name or target) if text is None else text
    return f"[{inline(shown)}]({quote(path.as_posix())})"


def image(path: Path, folder: Path, alt: str) -> str:
    """A Markdown image of a local file, by its path relative to ``folder``."""
    relative = Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve()))
    return f"![{inline(alt)}]({quote(relative.as_posix())})"


def slug(name: str, fallback: str) -> str:
    """``name`` as a file-name part: runs of other characters become one '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or fallback


def p_value(p: float | None) -> str:
    """A p-value for people: '0.0123', or '< 0.001' below that; never '0' (resampled and
    exact p-values are above 0); 'n/a' when there is none."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.3g}" if p >= 0.001 else "< 0.001"


def p_value_tag(p: float | None) -> str:
    """A p-value for a tag that programs read back: '0.0123', or scientific below 0.001
    ('9.99e-04'); never '0'; 'n/a' when there is none."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.3g}" if p >= 0.001 else f"{p:.2e}"


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


def png_data_uri(path: Path, max_width: int = 640, colors: int = 128) -> str:
    """The image as a PNG data URI, scaled down to ``max_width`` pixels and reduced to a
    ``colors`` palette: a plot stays legible at a fraction of its bytes."""
    from PIL import Image

    with Image.open(path) as opened:
        picture = opened.convert("RGBA")
    white = Image.new("RGBA", picture.size, "white")  # transparent parts show as paper
    picture = Image.alpha_composite(white, picture).convert("RGB")
    if picture.width > max_width:
        height = max(1, round(picture.height * max_width / picture.width))
        picture = picture.resize((max_width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.quantize(colors=colors).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --- references to local files ------------------------------------------------------


class FileRefs(Protocol):
    """How a page refers to local files: links to them and images of them."""

    def link(self, target: str, text: str | None = None) -> str: ...

    def image(self, path: Path, alt: str) -> str: ...


@dataclass(frozen=True)
class RelativeRefs:
    """For a page saved in ``folder``: files linked and shown by relative path."""

    folder: Path

    def link(self, target: str, text: str | None = None) -> str:
        return link(target, self.folder, text)

    def image(self, path: Path, alt: str) -> str:
        return image(path, self.folder, alt)


@dataclass(frozen=True)
class EmbeddedRefs:
    """For a page shown away from its files (a Prefect artifact in the browser), where a
    relative path or a local file cannot open: images inline as data URIs (downscaled),
    files linked at ``url_of(path)`` (a server's copy) or else named as text, never linked.

    Why data URIs: the plots must show whatever the tracking target is. With the local
    sqlite store no URL serves them, which rules out Prefect image artifacts (they take a
    URL) and MLflow links; both Prefect UIs render a ``data:image/`` source (the React
    UI's sanitiser allows it on purpose). With a server, each image also links its copy
    there at full size, and the page still shows its plots when that server is down.
    """

    url_of: Callable[[Path], str | None] = lambda path: None
    root: Path | None = None  # files are named relative to it (the workspace)
    max_width: int = 640
    max_bytes: int = 250_000  # an image larger even once downscaled is linked, not inlined

    def link(self, target: str, text: str | None = None) -> str:
        path = _local_path(target)
        if path is None:
            return web_link(target, text)
        found = self.url_of(path)
        if found:
            return web_link(found, path.name if text is None else text)
        named = code(self.name(path))
        return named if text is None else f"{inline(text)} ({named})"

    def image(self, path: Path, alt: str) -> str:
        found = self.url_of(Path(path))
        source = self._embedded(Path(path))
        if source is None:
            if found:
                return f"![{inline(alt)}]({url(found)})"
            return f"*{inline(alt)}*: {code(self.name(Path(path)))}"
        shown = f"![{inline(alt)}]({source})"
        return shown + (f" {web_link(found, 'full size')}" if found else "")

    def name(self, path: Path) -> str:
        """The file as text: relative to ``root`` when inside it."""
        path = Path(path).resolve()
        if self.root is not None and path.is_relative_to(Path(self.root).resolve()):
            return path.relative_to(Path(self.root).resolve()).as_posix()
        return str(path)

    def _embedded(self, path: Path) -> str | None:
        if IMAGE_TYPES.get(path.suffix.lower()) is None or not path.is_file():
            return None
        try:
            source = png_data_uri(path, self.max_width)
        except (OSError, ValueError):  # unreadable: shown by name or URL instead
            return None
        return source if len(source) <= self.max_bytes else None


def _local_path(target: str) -> Path | None:
    """The local file a link target names (a path or file: URL); None for other URLs."""
    parsed = urlparse(target)
    if parsed.scheme.lower() == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and not re.match(r"^[A-Za-z]:[\\/]", target):
        return None
    return Path(target)


# --- HTML ---------------------------------------------------------------------------


def render_html(markdown_text: str, title: str, folder: Path) -> str:
    """A standalone HTML page of the Markdown (see the module's docstring for what it allows).

    Raw HTML is shown as text, bar the ``<br>`` that ``cell`` writes; a link that is
    neither relative nor http(s) loses its target; an image that is not a file of
    ``folder`` is replaced by its alt text, and the folder's images become data URIs.
    """
    import markdown

    converter = markdown.Markdown(extensions=["tables"], output_format="html")
    _make_safe(converter, Path(folder))
    body = converter.convert(markdown_text)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _make_safe(converter, folder: Path) -> None:
    """No raw HTML but <br>, and a last pass over the tree that checks links and images."""
    import xml.etree.ElementTree as etree

    from markdown.inlinepatterns import InlineProcessor
    from markdown.treeprocessors import Treeprocessor

    class LineBreak(InlineProcessor):
        def handleMatch(self, m, data):  # noqa: N802 - Markdown's API
            return etree.Element("br"), m.start(0), m.end(0)

    class Sanitise(Treeprocessor):
        def run(self, root):
            for element in root.iter():
                if element.tag == "a" and not safe_href(element.get("href", "")):
                    element.attrib.pop("href", None)
                elif element.tag == "img":
                    source = _embedded_image(element.get("src", ""), folder)
                    if source is None:  # shown as its alt text instead
                        alt = element.get("alt", "")
                        element.tag, element.text = "span", f"[image: {alt}]" if alt else ""
                        element.attrib.clear()
                    else:
                        element.set("src", source)

    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    converter.inlinePatterns.register(LineBreak(r"<br\s*/?>", converter), "br", 90)
    # After 'unescape' (priority 0): attributes hold their final text by then.
    converter.treeprocessors.register(Sanitise(converter), "sanitise", -10)


def safe_href(href: str) -> bool:
    """True for a relative reference (not starting with / or \\) or an http(s) URL."""
    target = _URL_IGNORED.sub("", html.unescape(href))
    scheme = _URL_SCHEME.match(target)
    if scheme:
        return scheme.group(1).lower() in WEB_SCHEMES
    return not target.startswith(("/", "\\"))


def _embedded_image(src: str, folder: Path) -> str | None:
    """An image file of the folder (a relative path) as a data URI; None for anything else."""
    target = unquote(html.unescape(src))
    if _URL_SCHEME.match(_URL_IGNORED.sub("", target)) or target.startswith(("/", "\\")):
        return None
    root = folder.resolve()
    path = (root / target).resolve()
    kind = IMAGE_TYPES.get(path.suffix.lower())
    if kind is None or not path.is_file() or not path.is_relative_to(root):
        return None
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
