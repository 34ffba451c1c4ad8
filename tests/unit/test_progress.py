"""Progress lines: events from any process of the session, printed by the controller with a heartbeat."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_serving import progress
from pytest_serving.load.stats import SampleRecorder


@pytest.fixture
def channel(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(progress.CHANNEL_VARIABLE, str(path))
    monkeypatch.delenv(progress.ACTIVITY_VARIABLE, raising=False)
    return path


def printer(channel, quiet=False):
    lines: list[str] = []
    return progress.ProgressPrinter(channel, lines.append, quiet=quiet), lines


def test_a_phase_prints_its_start_its_running_figures_and_its_end(channel):
    shown, lines = printer(channel)
    with progress.activity("triton", "load", "users=4", expected_s=13) as identity:
        shown.poll(1000.0)
        progress.live(identity, rps=43.2, p95_ms=88.0)
        shown.poll(1000.0 + progress.LIVE_EVERY_S)
    shown.poll(1000.0 + progress.LIVE_EVERY_S)
    assert "triton load users=4: started, ~13 s" in lines[0]
    assert "43.2 rps, p95 88 ms" in lines[1]
    assert "triton load users=4: done after" in lines[2]


def test_running_figures_print_at_most_every_ten_seconds(channel):
    shown, lines = printer(channel)
    with progress.activity("kserve", "load", "users=4") as identity:
        shown.poll(0.0)
        for second in range(1, 6):
            progress.live(identity, rps=10.0 + second)
            shown.poll(float(second))
    assert len(lines) == 1, lines  # only the start: five live events within ten seconds of it


def test_silent_work_gets_a_heartbeat_naming_target_and_phase(channel):
    shown, lines = printer(channel)
    with progress.activity("torchserve", "release", "look 1"):
        started = progress_time(channel)
        shown.poll(started)
        shown.poll(started + progress.HEARTBEAT_S - 1)
        assert len(lines) == 1
        shown.poll(started + progress.HEARTBEAT_S + 1)
    assert "torchserve release look 1: 13 s" in lines[1], lines


def test_only_the_latest_activity_of_a_process_beats(channel):
    shown, lines = printer(channel)
    with progress.activity("triton", progress.TEST_PHASE, "tests/x.py::test_load"):
        with progress.activity("triton", "load", "users=4"):
            started = progress_time(channel)
            shown.poll(started)
            shown.poll(started + progress.HEARTBEAT_S + 1)
    beats = [line for line in lines if "s" in line.rpartition(":")[2] and "started" not in line]
    assert beats and all("triton load users=4" in line for line in beats), lines


def test_a_test_is_named_only_when_it_runs_long(channel):
    shown, lines = printer(channel)
    with progress.activity("", progress.TEST_PHASE, "tests/integration/test_release.py::test_x"):
        started = progress_time(channel)
        shown.poll(started)
        assert lines == []
        shown.poll(started + progress.HEARTBEAT_S + 1)
    shown.poll(started + progress.HEARTBEAT_S + 1)
    assert len(lines) == 1 and "test_release.py::test_x: 13 s" in lines[0]


def test_quiet_keeps_one_line_per_target_and_phase(channel):
    shown, lines = printer(channel, quiet=True)
    with progress.activity("triton", "boot", "image"):
        progress.note("ready, cold start 4.0 s")
    with progress.activity("triton", "load", "users=4") as identity:
        started = progress_time(channel)
        progress.live(identity, rps=40.0)
        shown.poll(started + 3 * progress.HEARTBEAT_S)
    shown.poll(started + 3 * progress.HEARTBEAT_S)
    assert [line.partition("] ")[2] for line in lines] == ["triton boot image: started", "triton load users=4: started"]


def test_a_child_process_reports_into_the_activity_that_started_it(channel):
    shown, lines = printer(channel)
    with progress.activity("mlserver", "load", "rate=20"):
        started = progress_time(channel)
        shown.poll(started)
        env_code = "from pytest_serving import progress; progress.live(rps=19.5, p95_ms=120.0)"
        environment = {**__import__("os").environ, **progress.child_environment()}
        subprocess.run([sys.executable, "-c", env_code], env=environment, check=True)
        shown.poll(started + progress.LIVE_EVERY_S)
    assert any("mlserver load rate=20" in line and "19.5 rps, p95 120 ms" in line for line in lines), lines


def test_without_a_session_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.CHANNEL_VARIABLE, raising=False)
    with progress.activity("triton", "load"):
        progress.live(rps=1.0)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_shows_levels_done_of_planned_and_an_eta(channel):
    shown, lines = printer(channel)
    with progress.activity("triton", "sweep warm", "10 levels") as identity:
        started = progress_time(channel)
        progress.live(identity, done=3, planned=10, eta_s=420.0)
        shown.poll(started + progress.LIVE_EVERY_S)
    assert "3 of 10 done, ETA 420 s" in lines[-1]


def test_the_recorder_reports_the_last_seconds_rate_and_p95():
    recorder = SampleRecorder()
    for index in range(100):
        recorder.record(index * 0.1, 10.0 + index % 10, 200)
    recorder.record(9.95, 500.0, "TimeoutError")
    figures = recorder.recent(10.0, 5.0)
    assert figures["rps"] == pytest.approx(50 / 5.0)
    assert figures["p95_ms"] == pytest.approx(19.0, abs=0.6)
    assert figures["measured"] == 101


def progress_time(channel) -> float:
    """The time of the last event written (events carry wall-clock time)."""
    import json

    return json.loads(channel.read_text().splitlines()[-1])["at"]


def test_a_suite_across_tests_counts_its_tests_and_beats_between_them(channel):
    shown, lines = printer(channel)
    suite = progress.begin("triton", "robustness")
    started = progress_time(channel)
    shown.poll(started)
    for done in range(1, 4):
        progress.live(suite, tests_done=done, tests_planned=51)
    shown.poll(started + progress.HEARTBEAT_S + 1)
    progress.finish(suite)
    shown.poll(started + progress.HEARTBEAT_S + 1)
    assert "triton robustness: started" in lines[0]
    assert "3 of 51 tests" in lines[1]
    assert "triton robustness: done" in lines[2]
