"""The Markdown kit: text shown as text, and an HTML page that links and loads nothing hostile."""

from __future__ import annotations

import pandas as pd
from html_check import HOSTILE, assert_inert

from tunelab import markdown as md
from tunelab.lifecycle import model_card
from tunelab.runs import TrainResult
from tunelab.scorecard import Scorecard


def write_png(path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    fig.savefig(path, format="png")


def page_of(markdown_text, folder):
    page = md.render_html(markdown_text, "t", folder)
    return page.split("<body>", 1)[1]


def test_escaped_text_renders_as_itself(tmp_path):
    text = f"{HOSTILE} _em_ a\\b `tick` macro_f1"
    markdown_text = "\n\n".join(
        [
            f"# {md.inline(text)}",
            md.table(["a"], [[md.cell(text + "\nsecond line")]]),
            f"- {md.inline(text)}",
        ]
    )
    assert "macro_f1" in markdown_text  # intraword underscores stay readable
    page = page_of(markdown_text, tmp_path)

    assert_inert(page)
    assert "<a" not in page and "<img" not in page and "<em>" not in page
    shown = "[x](javascript:alert(1)) ![](http://evil.example/x.png) &lt;script&gt;"
    assert page.count(shown) == 3
    assert page.count("**loud** _em_ a\\b `tick` macro_f1") == 3
    assert "<br>" in page and "second line" in page


def test_raw_markdown_links_and_images_are_made_safe(tmp_path):
    write_png(tmp_path / "plot.png")
    write_png(tmp_path.parent / "outside.png")
    markdown_text = (
        "[a](javascript:alert(1)) [b](JaVa\tScRiPt:alert(1)) [c](data:text/html,x) "
        "[d](//evil.example/x) [e](https://ok.example/p) [f](sub/report.md) [g](#top)\n\n"
        "![remote](http://evil.example/x.png) ![outside](../outside.png) ![plot](plot.png)\n\n"
        "<script>alert(1)</script>\n\n<div onclick='x()'>block</div> <b>inline</b>"
    )
    page = page_of(markdown_text, tmp_path)

    assert_inert(page)
    hrefs = [part.split('"', 1)[0] for part in page.split('href="')[1:]]
    assert hrefs == ["https://ok.example/p", "sub/report.md", "#top"]
    assert "[image: remote]" in page and "[image: outside]" in page
    assert page.count('<img alt="plot" src="data:image/png;base64,') == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;inline" in page


def test_links_only_to_files_and_web_addresses(tmp_path):
    assert md.link("javascript:alert(1)", tmp_path, "run") == "run"
    assert md.link("data:text/html,x", tmp_path) == "data:text/html,x"
    assert md.link("https://h.example/a b", tmp_path, "h") == "[h](https://h.example/a%20b)"
    assert md.link(str(tmp_path / "r" / "x.md"), tmp_path) == "[x.md](r/x.md)"
    assert md.web_link("javascript:alert(1)", "[t](u)") == "\\[t\\](u)"


def test_model_card_escapes_labels_notes_and_names(tmp_path):
    pd.DataFrame({"reference": [HOSTILE, "neg"], "prediction": ["neg", "neg"]}).to_parquet(
        tmp_path / "predictions.parquet"
    )
    result = TrainResult(
        "lora", "tiny<b>", "movies", "classification", str(tmp_path), notes=[HOSTILE]
    )
    card = Scorecard(
        "movies", "lora", "classification", "tiny<b>", str(tmp_path), "v1", "md5", "macro_f1"
    )
    text = model_card.render(result, card)

    page = page_of(text, tmp_path)
    assert_inert(page)
    assert "<a" not in page and "<img" not in page and "<b>" not in page
    assert page.count("[x](javascript:alert(1)) ![](http://evil.example/x.png)") == 2


def write_wide_png(path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3), dpi=100)
    fig.subplots().plot([0, 1, 0.5], label="loss")
    fig.savefig(path, format="png")


def decoded(data_uri):
    import base64
    import io

    from PIL import Image

    assert data_uri.startswith("data:image/png;base64,")
    raw = base64.b64decode(data_uri.split(",", 1)[1])
    return raw, Image.open(io.BytesIO(raw))


def test_png_data_uri_downscales_and_shrinks(tmp_path):
    path = tmp_path / "wide.png"
    write_wide_png(path)
    raw, image = decoded(md.png_data_uri(path, max_width=480))
    assert image.width == 480 and image.height == 120  # 1200 x 300, aspect kept
    assert len(raw) < path.stat().st_size


def test_relative_refs_link_and_show_files_next_to_the_page(tmp_path):
    refs = md.RelativeRefs(tmp_path / "review")
    assert refs.image(tmp_path / "review" / "loss a.png", "Loss [x]") == (
        "![Loss \\[x\\]](loss%20a.png)"
    )
    assert refs.link(str(tmp_path / "data" / "report.md")) == "[report.md](../data/report.md)"


def test_embedded_refs_inline_images_and_never_link_a_local_file(tmp_path):
    write_png(tmp_path / "plot.png")
    refs = md.EmbeddedRefs(root=tmp_path)

    shown = refs.image(tmp_path / "plot.png", "A plot")
    assert shown.startswith("![A plot](data:image/png;base64,") and shown.endswith(")")
    # A file the page cannot reach is named as text, relative to the workspace.
    assert refs.link(str(tmp_path / "reports" / "r.md")) == "`reports/r.md`"
    assert refs.link(str(tmp_path / "docs" / "index.html"), "Docs") == ("Docs (`docs/index.html`)")
    assert refs.image(tmp_path / "missing.png", "Gone") == "*Gone*: `missing.png`"
    # Web addresses stay links; other schemes are text.
    assert refs.link("https://h.example/a", "h") == "[h](https://h.example/a)"
    assert refs.link("javascript:alert(1)", "run") == "run"
    assert "<a" not in page_of(refs.link(str(tmp_path / "x.md")), tmp_path)


def test_embedded_refs_link_a_servers_copy_when_there_is_one(tmp_path):
    write_png(tmp_path / "plot.png")

    def url_of(path):
        return f"http://mlflow.example/get-artifact?path=r/{path.name}&run_uuid=1"

    refs = md.EmbeddedRefs(url_of=url_of, root=tmp_path)
    shown = refs.image(tmp_path / "plot.png", "A plot")
    assert "](data:image/png;base64," in shown
    assert shown.endswith(
        "[full size](http://mlflow.example/get-artifact?path=r/plot.png&run_uuid=1)"
    )
    # Over the size budget even downscaled: shown from the server, not inlined.
    assert md.EmbeddedRefs(url_of=url_of, max_bytes=100).image(tmp_path / "plot.png", "P") == (
        "![P](http://mlflow.example/get-artifact?path=r/plot.png&run_uuid=1)"
    )
    assert refs.link(str(tmp_path / "report.md")) == (
        "[report.md](http://mlflow.example/get-artifact?path=r/report.md&run_uuid=1)"
    )
