"""Who removes what at a session's end: the controller everything of the session, a nested pytest its own."""

from __future__ import annotations

import os

import pytest

from pytest_serving.containers import cleanup
from pytest_serving.containers.labels import CONTROLLER_VARIABLE, SESSION_ID


@pytest.fixture
def removals(monkeypatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(cleanup, "remove_labelled", lambda session_id, pid=None: calls.append("session") or [])
    monkeypatch.setattr(cleanup, "remove_own", lambda: calls.append("own") or [])
    return calls


def test_the_first_pytest_of_a_session_claims_it_and_removes_all_of_it(monkeypatch, removals):
    monkeypatch.delenv(CONTROLLER_VARIABLE, raising=False)
    cleanup.claim_session()
    assert os.environ[CONTROLLER_VARIABLE] == f"{SESSION_ID}/{os.getpid()}"
    cleanup.remove_at_session_end()
    assert removals == ["session"]


def test_a_pytest_started_inside_a_session_removes_only_its_own(monkeypatch, removals):
    parent = f"{SESSION_ID}/{os.getpid() + 1}"
    monkeypatch.setenv(CONTROLLER_VARIABLE, parent)
    cleanup.claim_session()
    assert os.environ[CONTROLLER_VARIABLE] == parent
    cleanup.remove_at_session_end()
    assert removals == ["own"]


def test_a_controller_of_another_session_does_not_stop_a_claim(monkeypatch, removals):
    monkeypatch.setenv(CONTROLLER_VARIABLE, f"another-session/{os.getpid() + 1}")
    cleanup.claim_session()
    cleanup.remove_at_session_end()
    assert removals == ["session"]
