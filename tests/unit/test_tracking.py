"""Tracking target resolution, reachability, retries and redaction (no server needed)."""

from __future__ import annotations

import socket
import time

import pytest
import yaml

from tunelab import config
from tunelab.errors import TrackingError
from tunelab.lifecycle import tracking
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
