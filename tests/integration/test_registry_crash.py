"""Registry moves stopped at each step against a real `mlflow server`, then run again.

The server is killed (SIGKILL, by PID) at an exact point by wrapping the function that
takes the next step; it restarts on the same store and port. What must hold after the
re-run: one version per run, aliases as the decision meant, and `registry.doctor`
reporting the half-done state before and nothing after.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
from registry_scenario import NAME, tfidf, trained_tfidf
from services import MlflowServer

from tunelab.errors import TrackingError
from tunelab.lifecycle import evidence, registry, tracking
from tunelab.pipeline import method

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One TF-IDF run, trained and evaluated once for every test of this module."""
    root = tmp_path_factory.mktemp("crash-ws")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELAB_WORKDIR", str(root))
        yield trained_tfidf(root)


@pytest.fixture
def server(tmp_path):
    """A real server; ``server.crash()`` kills it, ``server.restart()`` brings it back."""
    root = tmp_path / "mlflow-server-root"
    root.mkdir()
    current = Crashable(root).start()
    yield current
    current.stop()
    os.environ.pop("MLFLOW_TRACKING_URI", None)


class Crashable(MlflowServer):
    def crash(self) -> None:
        """Kill the whole server at once: no clean shutdown, like a lost machine."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.log.close()

    def restart(self) -> None:
        self.start()  # same store, same port


def versions(target) -> list[str]:
    return [row["version"] for row in registry.list_versions(target, NAME)]


def state(target, version: str) -> str:
    return registry.version_info(target, NAME, version).tags[registry.STATE]


def runs_logged(registration) -> int:
    from mlflow import MlflowClient

    return len(MlflowClient().search_runs([registration.tracked.experiment_id]))


def test_a_stop_after_the_version_is_created_then_the_rerun_finishes_it(
    trained, server, monkeypatch
):
    ws, cfg, result, card = trained
    target = tracking.setup(ws, server.url)
    judge = evidence.judge

    def crash_then_judge(*args, **kwargs):
        server.crash()
        return judge(*args, **kwargs)

    monkeypatch.setattr(evidence, "judge", crash_then_judge)
    with pytest.raises(TrackingError):
        method.track_and_register(cfg, result, card, ws, target)
    monkeypatch.setattr(evidence, "judge", judge)
    server.restart()

    assert versions(target) == ["1"] and state(target, "1") == registry.PENDING
    assert registry.aliases(target, NAME) == {}
    [young] = registry.doctor(target, NAME)
    assert (young.version, young.kind, young.repaired) == ("1", "in progress", False)
    [old] = registry.doctor(target, NAME, pending_after_s=0)
    assert (old.kind, old.repaired) == ("unjudged", False)
    assert "never judged" in str(old) and "To repair" in str(old)

    again = method.track_and_register(cfg, result, card, ws, target)
    assert again.version == "1" and again.decision.promote, again.decision.reason
    assert runs_logged(again) == 1  # the first attempt's run was reused
    assert versions(target) == ["1"]
    assert registry.aliases(target, NAME) == {"champion": "1"}
    assert state(target, "1").startswith("done: gate decision")
    assert registry.doctor(target, NAME, pending_after_s=0) == []


def test_a_stop_after_the_decision_before_the_aliases_is_finished_by_the_next_run(
    trained, server, monkeypatch
):
    ws, cfg, result, card = trained
    target = tracking.setup(ws, server.url)
    move = registry._move_aliases

    def crash_then_move(*args, **kwargs):
        server.crash()
        return move(*args, **kwargs)

    monkeypatch.setattr(registry, "_move_aliases", crash_then_move)
    with pytest.raises(TrackingError):
        method.track_and_register(cfg, result, card, ws, target)
    monkeypatch.setattr(registry, "_move_aliases", move)
    server.restart()

    mv = registry.version_info(target, NAME, "1")
    assert mv.tags["gate.decision"] == "promoted"
    assert mv.tags[registry.STATE].startswith("moving: gate decision")
    assert registry.aliases(target, NAME) == {}  # nothing moved: the old state stands
    [found] = registry.doctor(target, NAME)
    assert (found.version, found.kind, found.repaired) == ("1", "interrupted", False)
    assert "champion=1" in found.action

    again = method.track_and_register(cfg, result, card, ws, target)
    assert again.version == "1" and again.decision.promote
    assert again.aliases == {"champion": "1"} and runs_logged(again) == 1
    assert versions(target) == ["1"]
    assert registry.aliases(target, NAME) == {"champion": "1"}
    assert state(target, "1").startswith("done: gate decision")
    assert registry.doctor(target, NAME) == []


def test_a_rollback_stopped_between_its_alias_moves_is_finished_not_repeated(
    trained, server, monkeypatch
):
    from mlflow import MlflowClient

    ws, cfg, result, card = trained
    target = tracking.setup(ws, server.url)
    method.track_and_register(cfg, result, card, ws, target)  # v1: champion
    other = tfidf("registry.significance=0.04")  # another config: another registration
    second = method.track_and_register(other, result, card, ws, target)
    assert second.version == "2" and not second.decision.promote
    registry.promote(target, NAME, "2", reason="a test of rollback")
    assert registry.aliases(target, NAME) == {"champion": "2", "previous": "1"}

    set_alias = MlflowClient.set_registered_model_alias
    calls = []

    def crash_before_the_second_move(self, name, alias, version):
        calls.append(alias)
        if len(calls) == 2:
            server.crash()
        return set_alias(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", crash_before_the_second_move)
    with pytest.raises(TrackingError):
        registry.rollback(target, NAME)
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", set_alias)
    server.restart()

    # champion moved first: the restored version serves; the demoted one is recorded.
    assert registry.aliases(target, NAME) == {"champion": "1", "previous": "1"}
    [found] = registry.doctor(target, NAME)
    assert (found.version, found.kind, found.op) == ("1", "interrupted", "rollback")
    assert "previous=2" in found.action

    back = registry.rollback(target, NAME)  # the user runs it again
    assert back.version == "1"
    assert registry.aliases(target, NAME) == {"champion": "1", "previous": "2"}
    assert versions(target) == ["1", "2"]
    assert registry.doctor(target, NAME) == []


def test_a_lost_answer_to_create_version_does_not_register_twice(trained, server, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ws, cfg, result, card = trained
    target = tracking.setup(ws, server.url)
    create = MlflowClient.create_model_version
    created = []

    def create_then_lose_the_answer(self, *args, **kwargs):
        version = create(self, *args, **kwargs)
        created.append(version.version)
        if len(created) == 1:  # the server did it; the client never hears back
            raise MlflowException("Connection aborted: RemoteDisconnected")
        return version

    monkeypatch.setattr(MlflowClient, "create_model_version", create_then_lose_the_answer)
    done = method.track_and_register(cfg, result, card, ws, target)
    assert created == ["1"] and done.version == "1"
    assert versions(target) == ["1"]
    assert registry.aliases(target, NAME) == {"champion": "1"}


def test_two_registrations_of_a_new_model_at_once(trained, server, monkeypatch):
    from mlflow import MlflowClient

    ws, cfg, result, card = trained
    target = tracking.setup(ws, server.url)
    runs = [tracking.log_run(cfg, result, card, ws, target) for _ in range(2)]
    create = MlflowClient.create_registered_model
    both_looked = threading.Barrier(2, timeout=120)

    def create_together(self, *args, **kwargs):
        both_looked.wait()  # each found no model: both now create it
        return create(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_registered_model", create_together)
    registered, errors = [], []

    def register(tracked):
        try:
            registered.append(registry.register(target, cfg, result, card, tracked))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert sorted(registered) == ["1", "2"]
    assert versions(target) == ["1", "2"]
