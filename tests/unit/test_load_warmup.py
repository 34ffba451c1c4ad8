"""The adaptive warm-up's decision: settled windows end it, the maximum bounds it."""

from __future__ import annotations

import pytest

from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.warmup import WarmupWatch


def feed(watch: WarmupWatch, start_s: float, end_s: float, rate: float, latency_ms) -> None:
    """Answers at ``rate`` per second between two times, each with ``latency_ms(t)``."""
    count = int((end_s - start_s) * rate)
    for index in range(count):
        t = start_s + index / rate
        watch.answered(t, latency_ms(t), True)


def watch(minimum=2.0, maximum=30.0) -> WarmupWatch:
    return WarmupWatch(minimum, maximum, window_s=1.0, windows=3, tolerance=0.10)


def test_a_server_that_is_warm_at_once_ends_the_warmup_at_its_minimum():
    w = watch()
    feed(w, 0.0, 6.0, rate=100, latency_ms=lambda t: 10.0)
    assert not w.verdict(1.5)[0]
    done, why = w.verdict(6.0)
    assert done and why.startswith("settled after 6.0 s (stable over the last 3 windows")


def test_a_server_still_warming_keeps_the_warmup_going_until_it_settles():
    w = watch()
    slow_until = 8.0
    feed(w, 0.0, 14.0, rate=100, latency_ms=lambda t: 1500.0 - 180.0 * t if t < slow_until else 60.0)
    assert not w.verdict(6.0)[0], "windows still falling from 1500 ms must not count as warm"
    assert not w.verdict(10.0)[0], "a window straddling the change is not settled yet"
    assert w.verdict(11.5)[0]


def test_the_maximum_ends_a_warmup_that_never_settles_and_says_so():
    w = watch(maximum=9.0)
    feed(w, 0.0, 9.0, rate=100, latency_ms=lambda t: 10.0 * 1.2**t)  # 20 % slower every second
    assert not w.verdict(8.5)[0]
    done, why = w.verdict(9.0)
    assert done and why.startswith("not settled by the maximum warm-up of 9 s (unstable")


def test_slow_servers_get_windows_long_enough_for_their_answers_but_within_the_maximum():
    w = watch(maximum=30.0)
    feed(w, 0.0, 10.0, rate=5, latency_ms=lambda t: 800.0)
    assert w.settle_window_s(10.0) == 10.0  # 50 answers at 5/s, and 3 windows fit in 30 s


def test_an_adaptive_warmup_needs_one_process_and_a_maximum_above_the_minimum():
    with pytest.raises(ValueError, match="max_warmup=1.0 must be >= warmup=2.0"):
        LoadPhase(users=1, warmup=2.0, max_warmup=1.0)
    with pytest.raises(ValueError, match="needs workers=0"):
        LoadPhase(users=2, workers=2, max_warmup=10.0)
    assert LoadPhase(users=1, warmup=2.0, max_warmup=6.0).longest_warmup == 6.0
    assert LoadPhase(users=1, warmup=2.0).longest_warmup == 2.0
