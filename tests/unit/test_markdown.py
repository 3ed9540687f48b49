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
