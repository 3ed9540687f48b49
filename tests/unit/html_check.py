"""Hostile text and the check that a rendered page treats it as text (shared by tests)."""

from __future__ import annotations

from html.parser import HTMLParser

# Markdown and HTML that would act if a report passed data through unescaped.
HOSTILE = (
    "[x](javascript:alert(1)) ![](http://evil.example/x.png) <script>alert(1)</script> "
    '<img src="http://evil.example/y.png"> **loud**'
)


class _Tags(HTMLParser):
    def __init__(self, page: str):
        super().__init__()
        self.found: list[tuple[str, dict]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def assert_inert(page: str) -> None:
    """No script, no handler, no link but relative or http(s), no image but embedded ones."""
    tags = _Tags(page).found
    assert not {tag for tag, _ in tags} & {"script", "iframe", "object", "embed", "svg"}
    for tag, attrs in tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "a" and "href" in attrs:
            href = attrs["href"].lower()
            assert href.startswith(("http://", "https://")) or ":" not in href.split("/")[0]
            assert not href.startswith(("/", "\\"))
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), attrs
