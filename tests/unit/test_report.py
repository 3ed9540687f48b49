import dataclasses
import json
import math

import pandas as pd
import pytest
from html_check import HOSTILE, assert_inert

from tunelab import markdown
from tunelab.lifecycle.gate import Decision
from tunelab.lifecycle.tracking import TrackedRun
from tunelab.pipeline.records import MethodRecord, Registration
from tunelab.report import DatasetEntry, Review, write_review

TEXTS = ["a wonderful film", "great | fun\nreally", "truly dreadful", "boring plot"]
LABELS = ["pos", "pos", "neg", "neg"]
LORA_GUESSES = ["pos", "neg", "neg", "pos"]
PROMPTS = ["summarise: the cat sat", "summarise: rain all day", "summarise: we won"]
SUMMARIES = ["cat sat", "rainy day", "victory"]


def tracked(run_id: str, url: str | None = None) -> TrackedRun:
    """What tracking.log_run returns, as far as the review reads it."""
    return TrackedRun(run_id=run_id, experiment_id="1", run_url=url, model_uri=None)


def write_run(folder, dataset, method, task, primary_metric, primary, ci, **extra):
    """A run folder as training and evaluation leave it: scorecard, result, predictions."""
    folder.mkdir(parents=True)
    card = {
        "dataset": dataset,
        "method": method,
        "task": task,
        "model": "tiny",
        "run_dir": str(folder),
        "data_version": "abc123",
        "test_split": "md5",
        "primary_metric": primary_metric,
        "primary": primary,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "ci_level": 0.95,
        "resamples": 200,
        "test_rows": 4,
        "metrics": extra.get("metrics", {}),
        "costs": extra.get("costs", {}),
        "plots": extra.get("plots", {}),
        "majority_label": "pos",
        "servable": True,
        "not_servable": None,
        "status": extra.get("status", "ok"),
        "error": extra.get("error"),
    }
    (folder / "scorecard.json").write_text(json.dumps(card), encoding="utf-8")
    history = extra.get("history", [])
    (folder / "train_result.json").write_text(json.dumps({"history": history}), encoding="utf-8")
    if "predictions" in extra:
        pd.DataFrame(extra["predictions"]).to_parquet(folder / "predictions.parquet")
    return str(folder)


def write_png(path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().imshow([[1, 0], [0, 1]])
    fig.savefig(path, format="png")


@pytest.fixture
def review(tmp_path):
    runs = tmp_path / "runs"
    majority = write_run(
        runs / "majority",
        "reviews",
        "majority",
        "classification",
        "macro_f1",
        0.333,
        (0.2, 0.45),
        metrics={"test_macro_f1": 0.333, "test_accuracy": 0.5},
        costs={"trainable_params": 0, "total_params": 0, "wall_seconds": 0.2},
        predictions={"text": TEXTS, "reference": LABELS, "prediction": ["pos"] * 4},
    )
    lora_dir = runs / "lora"
    lora = write_run(
        lora_dir,
        "reviews",
        "lora",
        "classification",
        "macro_f1",
        0.9,
        (0.85, 0.95),
        metrics={"test_macro_f1": 0.9, "test_accuracy": 0.92, "test_ece": 0.04},
        costs={
            "trainable_params": 300_000,
            "total_params": 22_000_000,
            "wall_seconds": 95.0,
            "peak_rss_mb": 812.4,
            "tokens_per_second": 1500.0,
            "latency_p50_ms": 4.2,
            "latency_p95_ms": 7.9,
            "model_size_mb": 87.0,
            "adapter_size_mb": 1.2,
        },
        plots={"confusion_matrix": "confusion_matrix.png", "loss": "loss.png"},
        history=[
            {"step": 1, "epoch": 0.5, "loss": 0.7},
            {"step": 2, "epoch": 1.0, "loss": 0.4},
            {"step": 2, "epoch": 1.0, "eval_loss": 0.5},
        ],
        predictions={"text": TEXTS, "reference": LABELS, "prediction": LORA_GUESSES},
    )
    write_png(lora_dir / "confusion_matrix.png")
    tfidf = write_run(
        runs / "tfidf",
        "reviews",
        "tfidf",
        "classification",
        "macro_f1",
        math.nan,
        (math.nan, math.nan),
        status="failed",
        error="predictions.parquet is empty: no test example was predicted.",
    )
    echo = write_run(
        runs / "echo",
        "summaries",
        "echo",
        "generation",
        "rougeL",
        0.21,
        (0.1, 0.3),
        metrics={"test_rougeL": 0.21, "test_bleu": 3.5, "test_chrf": 20.1},
        predictions={"prompt": PROMPTS, "reference": SUMMARIES, "prediction": PROMPTS},
    )
    full = write_run(
        runs / "full",
        "summaries",
        "full",
        "generation",
        "rougeL",
        0.55,
        (0.4, 0.7),
        metrics={"test_rougeL": 0.55, "test_bleu": 12.0},
        history=[{"step": s, "epoch": s / 4, "loss": 2.0 / s} for s in range(1, 5)],
        predictions={
            "prompt": PROMPTS,
            "reference": SUMMARIES,
            "prediction": ["cat sat", "rain", "we won"],
        },
    )
    decision = Decision(
        promote=True,
        forced=False,
        reason="lora beats the majority class by 0.567 macro_f1 (p=0.004).",
        metric="macro_f1",
        versus="majority class 'pos' (built in)",
        challenger=0.9,
        reference=0.333,
        delta=0.567,
        p_value=0.004,
        test="paired bootstrap",
        n=4,
        delta_ci_low=0.3,
        delta_ci_high=0.8,
        min_improvement=0.0,
        significance=0.05,
        limits={},
    )
    methods = [
        MethodRecord(
            "reviews",
            "majority",
            run_dir=majority,
            registration=Registration(
                tracked=tracked("1" * 32),
                not_registered="baselines are references, not candidates",
            ),
        ),
        MethodRecord(
            "reviews",
            "lora",
            run_dir=lora,
            reused=["prepare-data"],
            registration=Registration(
                tracked=tracked("abc", "http://127.0.0.1:5000/#/experiments/1/runs/abc"),
                model_name="reviews-classifier",
                version="2",
                decision=decision,
            ),
        ),
        MethodRecord(
            "reviews", "full-ft", status="failed", error="CUDA out of memory | tried\n2 GiB"
        ),
        MethodRecord("reviews", "tfidf", run_dir=tfidf),
        MethodRecord("summaries", "echo", run_dir=echo),
        MethodRecord("summaries", "full", run_dir=full),
    ]
    datasets = [
        DatasetEntry(
            "reviews",
            "v-0001",
            {"train": 10, "validation": 2, "test": 4},
            "passed: 14 of 14 checks",
            "http://127.0.0.1:8000/docs/index.html",
            str(tmp_path / "data-reports" / "reviews" / "report.md"),
        ),
        DatasetEntry("summaries", "v-0002", {"train": 6, "test": 3}, "passed: 9 of 9", None, None),
    ]
    return Review(
        title="Milestone review",
        created="2025-01-02T03:04:05",
        datasets=datasets,
        methods=methods,
        champions={"reviews-classifier": "2", "summaries-generator": None},
        mlflow="mlflow ui --backend-store-uri ./mlruns",
    )


def section(markdown, heading, dataset):
    """The text under the ### heading that starts with ``heading`` in a dataset's section."""
    part = markdown.split(f"\n## {dataset}", 1)[1].split("\n## ", 1)[0]
    return part.split(f"\n### {heading}", 1)[1].split("\n### ", 1)[0]


def table_rows(text):
    return [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_review_writes_markdown_html_and_plots(review, tmp_path):
    files = write_review(review, tmp_path / "out")

    assert files.markdown_path.is_file() and files.html_path.is_file()
    names = {p.name for p in files.folder.glob("*.png")}
    assert names == {
        "comparison-reviews.png",
        "loss-reviews.png",
        "confusion-reviews.png",
        "comparison-summaries.png",
        "loss-summaries.png",
    }
    md = files.markdown
    assert md == files.markdown_path.read_text(encoding="utf-8")
    for method in ("majority", "lora", "full-ft", "tfidf", "echo", "full"):
        assert f"`{method}`" in md
    assert "0.900 [0.850, 0.950]" in md
    assert "CUDA out of memory \\| tried 2 GiB" in md
    assert "predictions.parquet is empty" in md
    assert "lora beats the majority class by 0.567 macro_f1 (p=0.004)." in md
    assert "baselines are references, not candidates" in md
    assert "`reviews-classifier`: version 2" in md
    assert "`summaries-generator`: none" in md
    assert "`mlflow ui --backend-store-uri ./mlruns`" in md
    assert "](../data-reports/reviews/report.md)" in md


def test_methods_table_shows_failures_costs_and_links(review, tmp_path):
    md = write_review(review, tmp_path / "out").markdown

    rows = table_rows(section(md, "Methods", "reviews"))
    assert [row.split(" | ")[0] for row in rows] == [
        "| `majority`",
        "| `lora`",
        "| `full-ft`",
        "| `tfidf`",
    ]
    lora = rows[1]
    assert "0.920" in lora and "0.040" in lora  # accuracy and ece
    assert "300.0k / 22.0M (1.36%)" in lora
    assert "4.2 / 7.9" in lora and "prepare-data" in lora
    assert "[abc](http://127.0.0.1:5000/#/experiments/1/runs/abc)" in lora
    assert "**failed**" in rows[2] and "**failed**" in rows[3]
    decisions = section(md, "Promotion decisions", "reviews")
    assert "**promoted**" in decisions and "+0.5670 [+0.3000, +0.8000]" in decisions


def test_html_embeds_images_and_stands_alone(review, tmp_path):
    files = write_review(review, tmp_path / "out")

    page = files.html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert 'src="comparison-' not in page and 'src="loss-' not in page
    assert 'src="confusion-' not in page
    assert page.count('src="data:image/png;base64,') == 5
    assert "<table>" in page
    for method in ("majority", "lora", "full-ft", "tfidf", "echo", "full"):
        assert f"<code>{method}</code>" in page


def test_disagreements_list_rows_where_methods_differ(review, tmp_path):
    md = write_review(review, tmp_path / "out").markdown

    classified = section(md, "Where methods disagree", "reviews")
    rows = table_rows(classified)
    # Only rows 1 and 2 differ; the failed methods take no part.
    assert len(rows) == 2
    assert rows[0] == "| 1 | great \\| fun<br>really | pos | pos ✓ | neg |"
    assert "`tfidf`" not in classified and "`full-ft`" not in classified

    generated = section(md, "Where methods disagree", "summaries")
    assert generated.count("Test row") == 3
    assert "| `full` | rain |" in generated


def test_table_has_one_flat_row_per_method(review, tmp_path):
    table = write_review(review, tmp_path / "out").table

    assert [(row["dataset"], row["method"]) for row in table] == [
        (m.dataset, m.method) for m in review.methods
    ]
    for row in table:
        assert all(v is None or type(v) in (str, int, float) for v in row.values()), row
    lora = table[1]
    assert lora["status"] == "ok" and lora["primary_metric"] == "macro_f1"
    assert (lora["primary"], lora["ci_low"], lora["ci_high"]) == (0.9, 0.85, 0.95)
    assert lora["decision"] == "promoted" and lora["latency_p95_ms"] == 7.9
    assert (lora["delta"], lora["p_value"]) == (0.567, "0.004")
    assert table[0]["decision"] == "not registered"
    assert table[2]["status"] == "failed" and table[3]["status"] == "failed"
    assert table[3]["primary"] is None  # NaN becomes None


def test_dataset_where_every_method_failed_still_renders(tmp_path):
    review = Review(
        title="All failed",
        created="2025-01-02T03:04:05",
        datasets=[DatasetEntry("pairs", "v-9", {"train": 3}, "failed: 1 of 5 checks", None, None)],
        methods=[
            MethodRecord("pairs", "dpo", status="failed", error="no GPU"),
            MethodRecord("pairs", "orpo", run_dir=str(tmp_path / "missing")),
        ],
        champions={},
    )
    files = write_review(review, tmp_path / "out")

    md = files.markdown
    assert "No method finished" in md and "no GPU" in md and "scorecard.json is missing" in md
    assert not list(files.folder.glob("*.png"))
    assert "<code>dpo</code>" in files.html_path.read_text(encoding="utf-8")
    assert [row["status"] for row in files.table] == ["failed", "failed"]


def test_hostile_data_model_and_error_text_is_shown_as_text(tmp_path):
    runs = tmp_path / "runs"
    texts = [HOSTILE, "fine", "also fine", "ok"]
    first = write_run(
        runs / "a",
        "hostile",
        "lora",
        "classification",
        "macro_f1",
        0.5,
        (0.4, 0.6),
        predictions={"text": texts, "reference": LABELS, "prediction": [HOSTILE, *LABELS[1:]]},
    )
    second = write_run(
        runs / "b",
        "hostile",
        "full",
        "classification",
        "macro_f1",
        0.4,
        (0.3, 0.5),
        predictions={"text": texts, "reference": LABELS, "prediction": ["pos"] * 4},
    )
    review = Review(
        title=f"Review {HOSTILE}",
        created="2025-01-02T03:04:05",
        datasets=[DatasetEntry("hostile", "v-1", {"train": 4}, HOSTILE, None, None)],
        methods=[
            MethodRecord("hostile", "lora", run_dir=first),
            MethodRecord("hostile", "full", run_dir=second),
            MethodRecord(
                "hostile",
                "broken",
                status="failed",
                error=f"{HOSTILE} fetching https://bob:hunter2@hub.example/x?token=tok123",
            ),
        ],
        champions={},
        flow_run_url="javascript:alert(2)",
    )
    files = write_review(review, tmp_path / "out")
    page = files.html_path.read_text(encoding="utf-8")

    assert_inert(page)
    assert "<script" not in page and '<img src="http' not in page
    assert 'href="javascript' not in page.lower()
    assert "<strong>Flow run:</strong> javascript:alert(2)</li>" in page  # text, not a link
    # Still readable: the text is there, escaped, not dropped.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "[x](javascript:alert(1)) ![](http://evil.example/x.png)" in page
    assert "**loud**" in page and "<strong>loud</strong>" not in page
    assert "hunter2" not in files.markdown and "tok123" not in files.markdown
    assert "hunter2" not in page and "tok123" not in page
    # The published page (a Prefect artifact) escapes the same text the same way.
    assert "- **Flow run:** javascript:alert(2)\n" in files.published
    assert_inert(markdown.render_html(files.published, "t", tmp_path / "out"))
    assert "hunter2" not in files.published and "tok123" not in files.published


def test_p_values_read_p_equals_or_p_below(review, tmp_path):
    lora = review.methods[1].registration
    for p_value, shown in ((0.0004, "p < 0.001"), (0.0, "p < 0.001"), (0.0123, "p = 0.0123")):
        lora.decision = dataclasses.replace(lora.decision, p_value=p_value)
        decisions = section(write_review(review, tmp_path / "out").markdown, "Promotion", "reviews")
        assert f"paired bootstrap, {shown} (n=4)" in decisions
        assert "p = <" not in decisions and "p = 0 " not in decisions


def test_table_numbers_are_rounded_and_p_values_never_zero(review, tmp_path):
    lora_dir = tmp_path / "runs" / "lora"
    card = json.loads((lora_dir / "scorecard.json").read_text())
    card.update(primary=0.912345678901, ci_low=0.8765432109, ci_high=0.95000000001)
    card["costs"].update(wall_seconds=95.123456, peak_rss_mb=812.44444, model_size_mb=0.35123456)
    (lora_dir / "scorecard.json").write_text(json.dumps(card))
    lora = review.methods[1].registration
    lora.decision = dataclasses.replace(lora.decision, p_value=0.0, delta=0.5670000001)

    row = write_review(review, tmp_path / "out").table[1]
    assert (row["primary"], row["ci_low"], row["ci_high"]) == (0.9123, 0.8765, 0.95)
    assert (row["wall_seconds"], row["peak_rss_mb"], row["package_size_mb"]) == (95.1, 812.4, 0.351)
    assert (row["delta"], row["p_value"]) == (0.567, "< 0.001")
    assert json.dumps(row).count("0000") == 0  # no float noise reaches the artifact


def test_published_review_shows_plots_inline_and_names_local_files(review, tmp_path):
    files = write_review(review, tmp_path / "out", markdown.EmbeddedRefs(root=tmp_path))

    page = files.published
    assert page.count("](data:image/png;base64,") == 5  # 2 comparisons, 2 losses, confusion
    for stem in ("comparison-", "loss-", "confusion-"):
        assert f"]({stem}" not in page
    # No link to a local file (it could not open from the browser): its path as text.
    assert "- **Dataset report:** `data-reports/reviews/report.md`" in page
    assert "](../" not in page and "](/" not in page
    assert "[http://127.0.0.1:8000/docs/index.html](http://127.0.0.1:8000/docs/index.html)" in page
    # The rest of the page is the same as the saved one.
    assert section(page, "Methods", "reviews") == section(files.markdown, "Methods", "reviews")
    assert "](comparison-reviews.png)" in files.markdown  # the file keeps relative paths


def test_published_review_links_the_copies_a_server_holds(review, tmp_path):
    def url_of(path):
        return f"http://mlflow.example:5000/get-artifact?path=x/{path.name}&run_uuid=r1"

    refs = markdown.EmbeddedRefs(url_of=url_of, root=tmp_path)
    page = write_review(review, tmp_path / "out", refs).published

    assert page.count("](data:image/png;base64,") == 5
    assert page.count(" [full size](http://mlflow.example:5000/get-artifact?path=x/") == 5
    assert "[full size](http://mlflow.example:5000/get-artifact?path=x/loss-summaries.png" in page
    assert (
        "- **Dataset report:** "
        "[report.md](http://mlflow.example:5000/get-artifact?path=x/report.md&run_uuid=r1)"
    ) in page


def test_preference_methods_show_whether_their_rewards_agree(tmp_path):
    """A DPO policy's implicit reward and a reward model's score on the same pairs: the
    share ordered the same way and the rank correlation of the margins."""
    prompts = ["p1", "p2", "p3", "p4"]
    dpo = write_run(
        tmp_path / "dpo",
        "prefs",
        "dpo",
        "preference",
        "reward_accuracy",
        0.75,
        (0.5, 1.0),
        predictions={"prompt": prompts, "reward_margin": [0.4, 0.3, -0.1, 0.2]},
    )
    reward = write_run(
        tmp_path / "reward",
        "prefs",
        "reward",
        "preference",
        "reward_accuracy",
        0.5,
        (0.25, 0.75),
        predictions={"prompt": prompts, "reward_margin": [2.0, -1.0, -0.5, 1.5]},
    )
    methods = [
        MethodRecord("prefs", "dpo", run_dir=dpo),
        MethodRecord("prefs", "reward", run_dir=reward),
    ]
    entry = DatasetEntry("prefs", "v1", {"train": 8, "test": 4}, "passed", None, None)
    done = write_review(
        Review("Review", "2025-01-02T03:04:05", [entry], methods, {}, "mlflow ui"),
        tmp_path / "out",
    )
    text = section(done.markdown_path.read_text(), "Do the rewards agree?", "prefs")
    (row,) = table_rows(text)
    # p2 is ordered differently (0.3 vs -1.0); ranks 4,3,1,2 vs 4,1,2,3: rho = 0.4.
    assert "`dpo` / `reward`" in row and "| 75% |" in row and "+0.40" in row and "| 4 |" in row


def test_a_policy_tuned_by_rl_shows_its_rewards_and_answers_before_and_after(tmp_path):
    """Per reward: the held-out mean before and after; the KL; the first prompts answered
    before and after with their rewards."""
    run = write_run(
        tmp_path / "grpo",
        "reviews",
        "grpo",
        "prompts",
        "reward",
        0.75,
        (0.5, 1.0),
        predictions={
            "prompt": ["Review a kettle.", "Review a lamp."],
            "completion_before": ["It boils.", "Dim."],
            "completion": ["A lovely kettle!", "Bright and nice."],
            "reward_before": [0.25, 0.25],
            "reward": [0.5, 1.0],
            "reward_positive_before": [0.25, 0.25],
            "reward_positive": [0.5, 1.0],
            "words_before": [2.0, 1.0],
            "words": [3.0, 3.0],
            "kl": [1.0, 2.0],
        },
        metrics={"test_reward_ci_low": 0.5, "test_reward_ci_high": 1.0},
    )
    entry = DatasetEntry("reviews", "v1", {"train": 8, "test": 2}, "passed", None, None)
    done = write_review(
        Review(
            "Review",
            "2025-01-02T03:04:05",
            [entry],
            [MethodRecord("reviews", "grpo", run_dir=run)],
            {},
            "mlflow ui",
        ),
        tmp_path / "out",
    )
    text = section(done.markdown_path.read_text(), "What RL changed: `grpo`", "reviews")
    rows = table_rows(text)
    assert "| `reward` | 0.250 | 0.750 [0.500-1.000] |" in rows
    assert "| `reward_positive` | 0.250 | 0.750 |" in rows
    assert "| words | 1.5 | 3.0 |" in rows
    assert "| KL to the reference (nats per answer) | 0 | 1.500 |" in rows
    assert any(
        "Review a kettle." in r and "It boils. (0.25)" in r and "A lovely kettle! (0.50)" in r
        for r in rows
    )
