"""Interleaved windows in one load process: the schedule, each user's requests, and the plan's round trip."""

from __future__ import annotations

import pytest

from pytest_serving.load.interleave import ScheduledRequests, ScheduledWindow, WindowSchedule, interleaved_schedule
from pytest_serving.load.phase import LoadPhase, RunPlan
from pytest_serving.types import HttpRequest

SETS = {"current": (0, 1), "candidate": (2, 3)}


def test_windows_follow_each_other_after_a_gap():
    schedule = interleaved_schedule(["current", "candidate", "candidate", "current"], 3.0, 0.5, SETS)
    assert [(w.role, w.start_s, w.end_s) for w in schedule.windows] == [
        ("current", 0.5, 3.5),
        ("candidate", 4.0, 7.0),
        ("candidate", 7.5, 10.5),
        ("current", 11.0, 14.0),
    ]
    assert schedule.duration_s == 14.0


def test_the_role_at_a_moment_is_its_window_s_the_next_one_s_in_a_gap_and_none_in_the_warmup():
    schedule = interleaved_schedule(["current", "candidate"], 1.0, 0.25, SETS)
    assert schedule.role_at(-0.1) is None
    assert schedule.role_at(0.0) == "current"  # the first gap sends the first window's version
    assert schedule.role_at(0.9) == "current"
    assert schedule.role_at(1.25) == "candidate"  # the second gap
    assert schedule.role_at(2.4) == "candidate"
    assert schedule.role_at(99.0) == "candidate"  # after the last window: the last version


def test_a_user_sends_its_window_s_version_and_alternates_in_the_warmup():
    wire = [b"a0", b"a1", b"b0", b"b1"]
    schedule = interleaved_schedule(["current", "candidate"], 1.0, 0.25, SETS)
    now = [-1.0]
    requests = ScheduledRequests(wire, schedule, lambda: now[0], start=1)
    assert [next(requests) for _ in range(4)] == [b"b1", b"a1", b"b0", b"a0"]  # warm-up: both versions
    now[0] = 0.5
    assert [next(requests) for _ in range(3)] == [b"a1", b"a0", b"a1"]
    now[0] = 1.5
    assert [next(requests) for _ in range(3)] == [b"b1", b"b0", b"b1"]


@pytest.mark.parametrize(
    "windows",
    [
        (),
        (ScheduledWindow("other", 0.0, 1.0),),
        (ScheduledWindow("current", 1.0, 1.0),),
        (ScheduledWindow("current", 1.0, 2.0), ScheduledWindow("candidate", 1.5, 3.0)),
    ],
)
def test_a_schedule_that_makes_no_sense_is_refused(windows):
    with pytest.raises(ValueError):
        WindowSchedule(SETS, windows)


def test_the_plan_carries_the_schedule_to_the_locust_processes(tmp_path):
    schedule = interleaved_schedule(["candidate", "current"], 2.0, 0.3, SETS)
    requests = tuple(HttpRequest("POST", f"/v{index}", b"x") for index in range(4))
    plan = RunPlan(LoadPhase(users=2, duration=schedule.duration_s), requests, str(tmp_path), schedule=schedule)
    plan.write(tmp_path / "plan.json")
    assert RunPlan.read(tmp_path / "plan.json") == plan
    plain = RunPlan(LoadPhase(users=2), requests, str(tmp_path))
    plain.write(tmp_path / "plain.json")
    assert RunPlan.read(tmp_path / "plain.json").schedule is None
