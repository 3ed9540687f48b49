"""Tracking target resolution, reachability, retries and redaction (no server needed)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

from tunelab import config
from tunelab import markdown as md
from tunelab.errors import TrackingError
from tunelab.lifecycle import tracking
from tunelab.runs import RESULT_FILE, TrainResult
from tunelab.workspace import Workspace


def test_default_store_lives_in_the_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    target = tracking.resolve(Workspace(tmp_path))
    assert target.uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert target.artifact_root == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert not target.is_server
    assert "mlflow ui --backend-store-uri sqlite:///" in target.ui_hint()


def test_environment_and_explicit_uri_win_over_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve(Workspace(tmp_path)).uri == "http://127.0.0.1:5999"
    explicit = tracking.resolve(Workspace(tmp_path), "http://127.0.0.1:6000")
    assert explicit.uri == "http://127.0.0.1:6000" and explicit.is_server
    assert explicit.run_url("3", "abc") == "http://127.0.0.1:6000/#/experiments/3/runs/abc"


def test_the_exported_local_uri_is_still_the_local_store(tmp_path, monkeypatch):
    local = tracking.resolve(Workspace(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local.uri)  # what mlflow.set_tracking_uri does
    assert tracking.resolve(Workspace(tmp_path)).artifact_root == local.artifact_root


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_named_after_bounded_retries():
    target = tracking.Tracking(f"http://user:hunter2@127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(TrackingError) as caught:
        tracking.check_reachable(target, attempts=3, backoff_s=0.05)
    message = str(caught.value)
    assert "did not answer after 3 attempts" in message
    assert "http://***@127.0.0.1" in message and "hunter2" not in message
    assert "Connection refused" in message  # the port was tried, not a bad host name
    assert "MLFLOW_TRACKING_URI" in message
    assert time.monotonic() - started < 10  # bounded: no minutes-long default retrying


def test_call_retries_connection_errors_then_names_the_uri():
    from mlflow.exceptions import MlflowException

    attempts = []

    def flaky():
        attempts.append(1)
        raise MlflowException("API request failed: Connection refused")

    target = tracking.Tracking("http://127.0.0.1:1")
    with pytest.raises(TrackingError, match=r"127\.0\.0\.1:1 failed while trying to list"):
        tracking.call(target, "list", flaky, attempts=2)
    assert len(attempts) == 2


def test_call_passes_other_errors_through_at_once():
    from mlflow.exceptions import MlflowException

    attempts = []

    def refused():
        attempts.append(1)
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no such model")

    with pytest.raises(MlflowException, match="no such model"):
        tracking.call(tracking.Tracking("http://127.0.0.1:1"), "read", refused)
    assert len(attempts) == 1


def test_call_recovers_after_a_transient_failure():
    from mlflow.exceptions import MlflowException

    attempts = []

    def transient():
        attempts.append(1)
        if len(attempts) == 1:
            raise MlflowException("Max retries exceeded with url")
        return "ok"

    assert tracking.call(tracking.Tracking("http://127.0.0.1:1"), "read", transient) == "ok"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("source", "https://alice:s3cret@host/data.csv", "https://***@host/data.csv"),
        ("hub_token", "hf_abcdefghijklmnopqrstuvwxyz", "***"),
        ("note", "use hf_abcdefghijklmnopqrstuvwxyz1234 here", "use *** here"),
        ("password", 1234, "***"),
        ("name", "sentiment", "sentiment"),
        ("remote", "s3://bucket/path", "s3://bucket/path"),
    ],
)
def test_redact_hides_credentials(key, value, expected):
    assert tracking.redact(value, key) == expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        # Counts and names that merely contain "token" are not credentials.
        ("max_new_tokens", 48, 48),
        ("num_virtual_tokens", 16, 16),
        ("tokenizer", "gpt2", "gpt2"),
        ("token_counter", "whitespace", "whitespace"),
        ("auth_type", "basic", "basic"),
        ("ask_password", True, True),
        # Credential names, by their last word or last two words.
        ("HF_TOKEN", "abc", "***"),
        ("apiKey", "abc", "***"),
        ("secret_access_key", "abc", "***"),
        ("private_key", "abc", "***"),
        ("credentials", "abc", "***"),
        ("auth", "user:pw", "***"),
        ("X-Amz-Signature", "abc", "***"),
        (
            "source",
            "https://h.org/x.csv?api_key=k1&token=t1&sig=s1&X-Amz-Signature=a1&page=2",
            "https://h.org/x.csv?api_key=***&token=***&sig=***&X-Amz-Signature=***&page=2",
        ),
        ("source", "https://maps.example.org/q?key=AIza123", "https://maps.example.org/q?key=***"),
        ("remote", "https://u:p@ss@host/store", "https://***@host/store"),
        ("note", "AccountName=a;AccountKey=abc==;x=1", "AccountName=a;AccountKey=***;x=1"),
        ("error", "401 for password=hunter2 with max_new_tokens=48", None),
    ],
)
def test_redact_matches_words_not_substrings(key, value, expected):
    shown = tracking.redact(value, key)
    if expected is None:
        assert "hunter2" not in shown and "max_new_tokens=48" in shown
    else:
        assert shown == expected


def test_logged_config_reloads_with_the_same_values():
    cfg = config.load(
        None,
        [
            "train.baseline.prompting.max_new_tokens=7",
            "train.adapter.num_virtual_tokens=5",
            "data.columns={token: text, sentiment: label}",
        ],
    )
    reloaded = config.from_dict(yaml.safe_load(tracking.redact_yaml(cfg)))
    assert reloaded.to_dict() == cfg.to_dict()
    params = tracking.flat_params(cfg)
    assert params["train.baseline.prompting.max_new_tokens"] == "7"
    assert params["train.adapter.num_virtual_tokens"] == "5"
    assert params["data.columns.token"] == "text"  # a column name, not a credential


def test_params_are_the_flattened_redacted_config():
    cfg = config.load(
        None,
        [
            "data.source=https://bob:pw@example.org/rows.csv",
            "registry.tracking_uri=http://u:secretpw@127.0.0.1:5000",
            "train.adapter.r=4",
        ],
    )
    params = tracking.flat_params(cfg)
    assert params["train.adapter.r"] == "4"
    assert params["data.source"] == "https://***@example.org/rows.csv"
    assert "secretpw" not in " ".join(params.values())
    assert "secretpw" not in tracking.redact_yaml(cfg)
    assert cfg.config_hash() == cfg.model_copy(deep=True).config_hash()


def test_git_state_outside_a_repository_is_unknown(tmp_path):
    assert tracking.git_state(tmp_path) == (None, None)


# ---------------------------------------------------------------- what MLflow shows

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_run_names_say_dataset_method_and_model():
    lora = config.load(CONFIGS / "tiny" / "sentiment-lora.yaml")
    tfidf = config.load(CONFIGS / "tiny" / "sentiment-tfidf.yaml")
    assert tracking.mlflow_run_name(lora, "0123456789ab") == (
        "tiny-sentiment/lora tiny-bert data-01234567"
    )
    assert tracking.mlflow_run_name(tfidf, None) == (
        "tiny-sentiment/baseline-tfidf sklearn data-unversioned"
    )


def test_the_source_is_the_command_line_redacted_or_none_outside_the_cli():
    argv = [
        "/opt/venv/bin/tunelab",
        "train",
        "configs/x.yaml",
        "registry.tracking_uri=http://u:pw@h",
    ]
    assert tracking.command_line(argv) == (
        "tunelab train configs/x.yaml registry.tracking_uri=http://***@h"
    )
    assert tracking.command_line(["python", "-m", "pytest"]) is None
    assert tracking.command_line(["/x/tunelab/cli.py", "run"]) == "tunelab run"


def test_source_tags_name_the_flow_or_the_command(monkeypatch):
    cfg = config.load(CONFIGS / "tiny" / "sentiment-lora.yaml")
    flow = tracking.source_tags(cfg, {"tunelab.pipeline": "milestone"})
    assert flow == {
        "mlflow.source.name": "flow milestone: tiny-sentiment/lora",
        "mlflow.source.type": "JOB",
    }
    monkeypatch.setattr(sys, "argv", ["/usr/bin/tunelab", "train", "configs/tiny/x.yaml"])
    local = tracking.source_tags(cfg)
    assert local["mlflow.source.name"] == "tunelab train configs/tiny/x.yaml"
    assert local["mlflow.source.type"] == "LOCAL"
    monkeypatch.setattr(sys, "argv", ["pytest"])
    assert tracking.source_tags(cfg)["mlflow.source.name"] == "tunelab: tiny-sentiment/lora"
    tags = tracking.training_tags(cfg, "v1", "lora-tiny-bert-0123456789", {}, {"torch": "2"})
    assert tags["mlflow.source.type"] == "LOCAL" and "mlflow.source.name" in tags


def test_a_baseline_run_is_dated_back_to_when_its_training_started(tmp_path):
    result = TrainResult("baseline", "tfidf-logreg", "d", "classification", str(tmp_path))
    assert tracking.training_started_ms(result) is None  # no record on disk
    result.wall_seconds = 5.0
    result.save()
    ended = int(time.time()) - 60  # whole seconds: the file's time holds them exactly
    os.utime(tmp_path / RESULT_FILE, (ended, ended))
    assert tracking.training_started_ms(result) == int((ended - 5.0) * 1000)


@pytest.mark.parametrize("p", [0.000999, 2 / 1001, 1e-12, 1e-301, 0.0123, 0.05, 1.0])
def test_p_values_never_read_zero(p):
    shown, tagged = md.p_value(p), md.p_value_tag(p)
    assert shown not in ("0", "0.0", "0.000") and tagged not in ("0", "0.0", "0.000")
    assert float(tagged) > 0 and float(tagged) == pytest.approx(p, rel=0.01)
    if p < 0.001:
        assert shown == "< 0.001"
    assert md.p_value(float("nan")) == "n/a" and md.p_value(None) == "n/a"


def test_the_decision_line_and_tags_show_a_tiny_p_value():
    from tunelab.lifecycle import gate, model_card, registry

    decision = gate.Decision(
        promote=True,
        reason="r",
        metric="macro_f1",
        versus="majority class 'positive' (built in)",
        challenger=0.81,
        reference=0.6,
        delta=0.21,
        p_value=0.000999,
        test="paired_bootstrap",
        n=120,
        delta_ci_low=0.1,
        delta_ci_high=0.3,
    )
    line = model_card.decision_line(decision, "champion")
    assert line.startswith("**Promotion gate: promoted** (alias `champion`): macro_f1 0.8100")
    assert "paired bootstrap p < 0.001 (n=120)" in line and "p = 0" not in line
    assert "required delta >= 0 and p <= 0.05." in line and "\n" not in line
    tags = registry.decision_tags(decision)
    assert tags["gate.p_value"] == "9.99e-04" and float(tags["gate.p_value"]) == 0.000999
    assert tags["gate.required"] == "delta >= 0 and p <= 0.05"
    card = "# the card\n\ntext\n"
    first = model_card.with_decision(card, line)
    assert first == f"{line}\n\n{card}"
    again = model_card.with_decision(first, "**Promotion gate: restored by rollback**.")
    assert again == f"**Promotion gate: restored by rollback**.\n\n{card}"


def test_the_registered_model_description_says_use_promotion_and_review():
    from tunelab.lifecycle import model_card

    cfg = config.load(
        CONFIGS / "tiny" / "sentiment-lora.yaml",
        ["registry.significance=0.01", "registry.min_improvement=0.02"],
    )
    text = model_card.describe_model(
        "tiny-sentiment-classifier", cfg, ["tiny-bert", "tfidf-logreg", "tiny-bert"], ["neg", "pos"]
    )
    assert "Classification models for dataset `tiny-sentiment`" in text
    assert "one of: neg, pos" in text
    assert "`tfidf-logreg` (scikit-learn), `tiny-bert` (encoder)" in text
    assert "`macro_f1` must beat the current `champion`" in text
    assert "by at least 0.02" in text and "paired bootstrap must give p <= 0.01" in text
    assert "`challenger`" in text and "`previous`" in text
    assert "reports/milestone/" in text and "`milestone-review`" in text
    assert "models:/tiny-sentiment-classifier@champion" in text
