"""The rollout's verdict from synthetic answers: the stall, the switch's p99 budgets, and a server that
does not sustain the rate (not measurable) instead of a result."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pytest_serving.load.budgets import parse_budget_lines, resolve_budget
from pytest_serving.release.options import ReleaseSettings, with_rollout_budget
from pytest_serving.release.rollout import (
    LOWER_RATE_SHARE,
    STALL_FACTOR,
    SUSTAIN_FACTOR,
    Answers,
    rollout_problems,
    summarize_rollout,
    sustained_rate,
    with_budgets,
)
from pytest_serving.report.html import report_html
from pytest_serving.report.results import ResultsStore, record_rollout
from pytest_serving.report.summary import release_lines
from pytest_serving.verdicts.verdict import ReleaseLimits

RATE = 20.0
STEADY_MS = 60.0


def rollout(stall_s: float = 0.0, steady_ms: float = STEADY_MS, reference_p99_ms: float | None = 70.0):
    """20 s at 20 requests/s; the switch from version 1 to 2 runs from 5 to 7 s; for ``stall_s`` seconds
    from 5 s every request waits 2 s (Triton's reload stall), the rest answer in about ``steady_ms``."""
    sent = np.arange(0.0, 20.0, 1 / RATE)
    latency = steady_ms * (1 + 0.05 * np.sin(np.arange(sent.size)))
    latency[(sent >= 5.0) & (sent < 5.0 + stall_s)] = 2000.0
    version = np.where(sent < 7.0, "1", "2").tolist()
    return summarize_rollout(
        Answers(sent, latency, np.ones(sent.size, bool), version),
        switch_started_s=5.0,
        switch_done_s=7.0,
        old_version="1",
        grace_s=1.0,
        rate=RATE,
        reference_p99_ms=reference_p99_ms,
    )


def test_the_stall_is_how_long_p99_stayed_above_twice_the_steady_level():
    record = rollout(stall_s=2.0)
    assert record.p99_steady_ms == pytest.approx(STEADY_MS * 1.05, rel=0.01)
    assert record.stall_level_ms == pytest.approx(STALL_FACTOR * record.p99_steady_ms)
    assert (record.stall_s, record.stall_seconds) == (2.0, [5, 6])
    assert rollout().stall_s == 0.0 and rollout().stall_seconds == []


def test_a_ratio_budget_fails_a_stalled_switch_and_passes_a_clean_one():
    """1.5x the steady p99, as the issue's Triton rollout (2006 ms against 68) would be judged."""
    stalled = with_budgets(rollout(stall_s=2.0), None, 1.5)
    (problem,) = rollout_problems(stalled, "triton")
    assert "p99 2000 ms during the switch is 31.75x the 63 ms before it, over the budget of 1.5x" in problem
    assert "--serving-rollout-max-p99-ratio" in problem and "p99 stayed above 126 ms for 2 s" in problem
    assert rollout_problems(with_budgets(rollout(), None, 1.5), "triton") == []


def test_an_absolute_budget_fails_a_stalled_switch_and_passes_a_clean_one():
    (problem,) = rollout_problems(with_budgets(rollout(stall_s=1.0), 500.0, None), "triton")
    assert "p99 2000 ms during the switch, over the budget of 500 ms (--serving-rollout-max-p99-ms)" in problem
    assert rollout_problems(with_budgets(rollout(), 500.0, None), "triton") == []
    assert rollout_problems(rollout(stall_s=2.0), "triton") == []  # no budget, no latency verdict


def test_a_steady_p99_far_above_the_side_by_side_s_is_not_measurable_and_judged_by_no_budget():
    """An overloaded server's queue: 11 s before the switch against 350 ms side by side."""
    record = with_budgets(rollout(steady_ms=11_000.0, reference_p99_ms=350.0), 500.0, 1.5)
    assert not record.measurable
    assert record.not_measurable.startswith("at 20 requests/s before the switch the server's p99 was 11550 ms (median")
    assert "does not sustain the rate" in record.not_measurable
    assert rollout_problems(record, "torchserve") == []
    # Within the factor, or one stalled request among fifty steady ones (Triton beside another job): sustained.
    assert rollout(steady_ms=STEADY_MS, reference_p99_ms=STEADY_MS * 1.05 / SUSTAIN_FACTOR * 1.01).measurable
    hiccup = Answers(np.arange(0, 5, 0.1), np.r_[np.full(49, 60.0), 1400.0], np.ones(50, bool), ["1"] * 50)
    record = summarize_rollout(
        hiccup, switch_started_s=5.0, switch_done_s=5.5, old_version="1", grace_s=1.0, rate=RATE, reference_p99_ms=82.0
    )
    assert record.p99_steady_ms > SUSTAIN_FACTOR * 82.0 and record.measurable


def test_the_rate_is_lowered_once_when_the_probe_finds_it_unsustained():
    reference = 100.0
    probed: list[float] = []

    def probe(rate: float) -> np.ndarray:
        probed.append(rate)
        return np.full(100, 5000.0 if rate > 30 else 80.0)  # a server whose capacity lies between 30 and 40/s

    assert sustained_rate(20.0, reference, probe) == (20.0, None, "")
    assert sustained_rate(40.0, reference, probe) == (40.0 * LOWER_RATE_SHARE, 40.0, "")
    rate, lowered_from, why = sustained_rate(100.0, reference, probe)
    assert (rate, lowered_from) == (
        50.0,
        100.0,
    ) and "at 50 requests/s in the probe the server's p99 was 5000 ms (median 5000 ms)" in why
    assert probed == [20.0, 40.0, 20.0, 100.0, 50.0]
    # A rate the user set is not lowered: beyond capacity, the rollout is not measurable.
    rate, lowered_from, why = sustained_rate(40.0, reference, probe, may_lower=False)
    assert (rate, lowered_from) == (40.0, None) and "does not sustain the rate" in why


def test_stall_and_not_measurable_are_shown_in_the_terminal_line_and_the_report():
    store = ResultsStore(None)
    record_rollout(store, "triton", with_budgets(rollout(stall_s=2.0), None, 1.5))
    overloaded = replace(rollout(steady_ms=11_000.0, reference_p99_ms=350.0), rate_lowered_from=40.0)
    record_rollout(store, "torchserve", overloaded)
    results = store.read()["targets"]
    (line,) = release_lines(results["triton"])
    assert "p99 2000.0 ms during the switch vs 63.0 ms before it, p99 stall 2 s above 126 ms" in line
    assert results["triton"]["rollout"]["stall_s"] == 2.0
    not_measurable, figures = release_lines(results["torchserve"])
    assert not_measurable.startswith("rollout: NOT MEASURABLE at 20/s: at 20 requests/s before the switch the server")
    assert figures.startswith("rollout: 400 requests at 20/s, 0 failed, 0 stale answers")
    assert "stall" not in figures  # measured against an overloaded steady level, it would say nothing
    page = report_html(store.read(), {})
    assert "p99 stall s" in page and "in seconds 5, 6 of the chart, 2 s in all" in page
    assert "Not measurable: at 20 requests/s before the switch the server&#x27;s p99 was 11550 ms (median" in page
    assert "The server did not sustain 40 requests/s before the switch; the rollout ran at 20." in page


def test_a_target_s_rollout_budget_from_the_budgets_table_wins_over_the_option():
    table = parse_budget_lines("triton.rollout_max_p99_ratio = 1.5\nrollout_max_p99_ms = 900")
    release = ReleaseSettings(None, ReleaseLimits(), 10, 40, 3.0, 4, True, 2.0, rollout_max_p99_ratio=3.0)
    triton = with_rollout_budget(release, resolve_budget("triton", table))
    assert (triton.rollout_max_p99_ratio, triton.rollout_max_p99_ms) == (1.5, 900.0)
    torchserve = with_rollout_budget(release, resolve_budget("torchserve", table))
    assert (torchserve.rollout_max_p99_ratio, torchserve.rollout_max_p99_ms) == (3.0, 900.0)
