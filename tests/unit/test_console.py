"""The quiet terminal: library output into the run's log, progress lines, tables that fit."""

import io
import json
import logging
import math
import os
import sys
import warnings
from types import SimpleNamespace

import pytest
from rich.console import Console

from tunelab import console


def test_quiet_sends_what_libraries_print_and_log_to_the_run_log(tmp_path, capfd):
    own = logging.getLogger("tunelab-test.own-handler")  # like transformers' own handler
    handler = logging.StreamHandler()
    own.addHandler(handler)
    own.propagate = False
    try:
        with console.quiet(tmp_path, "run") as run_log, warnings.catch_warnings():
            warnings.simplefilter("always")
            print("marker-stdout")
            print("marker-stderr", file=sys.stderr)
            logging.getLogger("tunelab-test.library").warning("marker-propagated")
            own.warning("marker-own-handler")
            warnings.warn("marker-warning", UserWarning, stacklevel=1)
            os.write(2, b"marker-fd-2\n")  # a C extension or a subprocess
            assert os.environ["TUNELAB_PROGRESS"] == "0"
    finally:
        own.removeHandler(handler)
    out, err = capfd.readouterr()
    logged = run_log.path.read_text()
    assert run_log.path.parent == tmp_path / ".tunelab" / "logs"
    assert run_log.path.name.endswith("-run.log")
    for marker in ("stdout", "stderr", "propagated", "own-handler", "warning", "fd-2"):
        assert f"marker-{marker}" not in out + err, marker
        assert f"marker-{marker}" in logged, marker
    assert logged.count("marker-own-handler") == 1


def test_verbose_leaves_the_terminal_alone_and_still_writes_the_log(tmp_path, capfd):
    root = logging.getLogger()
    handlers = root.handlers[:]
    root.handlers[:] = []  # as in a plain process: Python prints warnings itself
    try:
        with console.quiet(tmp_path, "train", verbose=True) as run_log:
            print("shown-on-the-terminal")
            logging.getLogger("tunelab-test.verbose").warning("also-in-the-log")
    finally:
        root.handlers[:] = handlers
    out, err = capfd.readouterr()
    assert "shown-on-the-terminal" in out and "also-in-the-log" in err
    assert "also-in-the-log" in run_log.path.read_text()


@pytest.mark.parametrize(
    ("p", "shown"),
    [(0.0, "< 0.001"), (0.0004, "< 0.001"), (0.001, "0.001"), (0.0862, "0.0862"), (math.nan, "-")],
)
def test_a_p_value_is_never_shown_as_zero(p, shown):
    assert console.format_p(p) == shown


def _render(renderable, width: int = 80) -> str:
    out = io.StringIO()
    Console(width=width, force_terminal=False, file=out).print(renderable)
    return out.getvalue()


def test_a_fitted_table_fits_80_columns_and_never_splits_a_name():
    names = ["customer-support-tickets-2026", "instructions-with-a-long-name"]
    models = ["customer-support-tickets-2026-classifier v12", "instructions-generator v3"]
    columns = [
        console.Column("dataset", name=True),
        console.Column("method", name=True),
        console.Column("metric", name=True, drop=1),
        console.Column("value", justify="right"),
        console.Column("gate", name=True),
        console.Column("registered", name=True, drop=3),
        console.Column("note", drop=2),
    ]
    rows = [
        [names[0], "lora-all-linear", "macro_f1", "0.792", "not promoted", models[0], "x " * 20],
        [names[1], "sft", "rougeL", "0.414", "promoted", models[1], "-"],
    ]
    text = _render(console.fitted_table("Milestone", columns, rows, 80))
    assert max(len(line) for line in text.splitlines()) <= 80
    for name in [*names, "lora-all-linear", "not promoted"]:
        assert name in text, f"{name} was split:\n{text}"
    # Wide enough, nothing is dropped.
    wide = _render(console.fitted_table("Milestone", columns, rows, 300), width=300)
    assert models[0] in wide and "macro_f1" in wide


def _write_scorecard(run_dir, value=0.7923):
    run_dir.mkdir(parents=True, exist_ok=True)
    card = {
        "status": "ok",
        "primary_metric": "macro_f1",
        "primary": value,
        "ci_low": 0.7,
        "ci_high": 0.86,
        "ci_level": 0.95,
    }
    (run_dir / "scorecard.json").write_text(json.dumps(card))


def test_plain_progress_is_one_line_per_finished_step_with_k_of_n(tmp_path):
    from tunelab.lifecycle.gate import Decision
    from tunelab.pipeline.records import Registration

    run_dir = tmp_path / "runs" / "lora"
    _write_scorecard(run_dir)
    out = io.StringIO()
    view = console.StepView(["sentiment/majority", "sentiment/lora"], out, live=False)
    decision = Decision(promote=True, reason="better", metric="macro_f1", p_value=0.0)
    registration = Registration(model_name="sentiment-classifier", version="2", decision=decision)
    steps = [
        ("train", SimpleNamespace(run_dir=str(run_dir), seconds=1.25), True),
        ("evaluate", SimpleNamespace(status="ok", error=None, seconds=0.5), False),
        ("register", registration, False),
    ]
    with console.listening(view), view:
        for step, value, reused in steps:
            call = SimpleNamespace(label="sentiment/lora", step=step)
            console.step_started(call)
            console.step_finished(call, SimpleNamespace(value=value, failed=False, reused=reused))
    console.step_finished(call, SimpleNamespace(value=None, failed=False, reused=False))
    lines = out.getvalue().splitlines()
    assert lines == [
        "[1/2] sentiment/lora train reused",
        "[1/2] sentiment/lora evaluate 0.5 s: macro_f1 0.792 [0.700-0.860]",
        "[1/2] sentiment/lora register 0.0 s: promoted (p < 0.001)",
    ]


def test_a_failing_listener_never_breaks_the_run():
    class Broken:
        def started(self, label, step):
            raise RuntimeError("display broke")

    with console.listening(Broken()):
        console.step_started(SimpleNamespace(label="a/b", step="train"))
