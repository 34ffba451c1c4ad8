"""How the side-by-side comparison lays out its windows and when it measures more (the load engine
replaced by a fake whose latencies are drawn here: pure scheduling logic, no server)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_serving.protocols.endpoint import Endpoint
from pytest_serving.release import side_by_side
from pytest_serving.release.options import ReleaseSettings
from pytest_serving.release.side_by_side import (
    CANDIDATE,
    CURRENT,
    MAX_LOOKS,
    MIN_MORE_WINDOWS,
    MeasuredWindow,
    Version,
    measure_until_decided,
    next_pairs,
    shortest_deciding_pairs,
    window_order,
)
from pytest_serving.verdicts.verdict import ReleaseLimits


def test_next_pairs_grows_by_what_the_interval_asks_and_ends_at_the_maximum():
    assert next_pairs(10, [], look=1, looks=3, max_windows=40) is None  # decided
    assert next_pairs(10, [20], look=1, looks=1, max_windows=10) is None  # a fixed number of windows
    assert next_pairs(10, [20, 12], look=1, looks=3, max_windows=40) == 25  # a quarter more than asked
    assert next_pairs(10, [11], look=1, looks=3, max_windows=40) == 10 + MIN_MORE_WINDOWS
    assert next_pairs(10, [200], look=1, looks=3, max_windows=40) == 40
    assert next_pairs(10, [None], look=1, looks=3, max_windows=40) == 40  # no number decides: all there is
    assert next_pairs(25, [30], look=2, looks=3, max_windows=40) == 40  # the last look takes the maximum
    assert next_pairs(40, [80], look=3, looks=3, max_windows=40) is None


class FakeServer:
    """Closed-loop windows of a server whose candidate is ``slowdown`` times slower; the machine's
    load drifts from window to window and hits both versions of a pair alike."""

    def __init__(self, slowdown: float, seed: int = 0, candidate_rate: float | None = None) -> None:
        self.slowdown = slowdown
        self.rng = np.random.default_rng(seed)
        self.order: list[str] = []
        self.looks: list[range] = []
        #: The candidate's throughput relative to the current's, when it is not the latencies' own.
        self.candidate_rate = candidate_rate

    def measure_look(self, endpoint, versions, samples, settings, pairs, **_):
        self.looks.append(pairs)
        return [self.window(role) for role in window_order(versions, pairs)], 2.0, "settled"

    def window(self, role: str) -> MeasuredWindow:
        self.order.append(role)
        drift = 1.0 + 0.5 * np.sin((len(self.order) - 1) // 2)  # one level per pair
        scale = 20.0 * drift * (self.slowdown if role == CANDIDATE else 1.0)
        latencies = scale * self.rng.lognormal(0.0, 0.3, 400)
        rps = 4000.0 / latencies.mean()
        if role == CANDIDATE and self.candidate_rate is not None:
            rps = self.candidate_rate * 4000.0 / (20.0 * drift) * self.rng.lognormal(0.0, 0.1)
        return MeasuredWindow(role, latencies.size, 0, rps, latencies, 0.0)


def measure(monkeypatch, server: FakeServer, windows: int = 5, max_windows: int = 40):
    monkeypatch.setattr(side_by_side, "measure_look", server.measure_look)
    endpoint = Endpoint("fake", {"http": "http://127.0.0.1:1"}, "fake", started_by_plugin=True)
    versions = tuple(Version(role, "m", role, role, {}) for role in (CURRENT, CANDIDATE))
    settings = ReleaseSettings(None, ReleaseLimits(), windows, max_windows, 1.0, 1, False, 0.0)
    return measure_until_decided(endpoint, versions, [], settings)


def test_pairs_alternate_which_version_goes_first(monkeypatch):
    server = FakeServer(1.0)
    measure(monkeypatch, server, windows=6, max_windows=6)
    assert server.order == [CURRENT, CANDIDATE, CANDIDATE, CURRENT] * 3


@pytest.mark.parametrize("slowdown", [1.0, 2.0])
def test_a_clear_case_is_decided_at_the_first_look(monkeypatch, slowdown):
    windows, latency, _, looks = measure(monkeypatch, FakeServer(slowdown), windows=10)
    assert (len(windows), len(looks)) == (20, 1)
    # Every look is at the confidence that keeps the risk of any wrong conclusion over all looks at 5 %.
    assert latency.confidence == pytest.approx(1 - 0.05 / MAX_LOOKS)
    assert (latency.low > 1.1) if slowdown > 1 else (latency.high < 1.1)


def test_a_straddling_interval_measures_more_windows_until_it_decides(monkeypatch):
    """A candidate 6 % slower against a 10 % limit: five windows cannot tell, more can."""
    windows, latency, _, looks = measure(monkeypatch, FakeServer(1.06, seed=0), windows=5)
    assert len(looks) > 1 and len(windows) > 10
    assert [look.pairs for look in looks] == sorted({look.pairs for look in looks})
    assert latency.high < 1.1


def test_a_fixed_number_of_windows_is_one_look_at_95_percent(monkeypatch):
    windows, latency, _, looks = measure(monkeypatch, FakeServer(1.06, seed=3), windows=5, max_windows=5)
    assert (len(windows), len(looks), latency.confidence) == (10, 1, 0.95)


def test_a_failing_interval_ends_the_comparison_though_the_other_straddles(monkeypatch):
    """p95 twice the current's fails the release whatever throughput's straddling interval would
    say after more windows: measuring on would only cost time."""
    windows, latency, throughput, looks = measure(monkeypatch, FakeServer(2.0, candidate_rate=0.88), windows=10)
    assert latency.low > 1.1 and throughput.low < 0.9 < throughput.high
    assert (len(windows), len(looks)) == (20, 1)


def test_each_look_measures_only_the_pairs_it_adds(monkeypatch):
    server = FakeServer(1.06, seed=0)
    windows, _, _, looks = measure(monkeypatch, server, windows=5)
    assert server.looks[0] == range(5)
    assert all(later.start == earlier.stop for earlier, later in zip(server.looks, server.looks[1:]))
    assert server.looks[-1].stop == looks[-1].pairs == len(windows) // 2


def test_the_cost_names_the_fewest_pairs_that_would_have_decided(monkeypatch):
    """A candidate twice as slow is plain after a handful of pairs: the cost report says so, so a CI
    can run fewer windows; an undecided comparison names none."""
    windows, latency, _, _ = measure(monkeypatch, FakeServer(2.0), windows=20, max_windows=20)
    fewest = shortest_deciding_pairs(windows, latency.confidence, 10.0)
    assert fewest is not None and 5 <= fewest < 20
    straddling, interval, _, _ = measure(monkeypatch, FakeServer(1.1, seed=1), windows=5, max_windows=5)
    assert shortest_deciding_pairs(straddling, interval.confidence, 10.0) is None


def test_a_fail_on_one_ratio_is_a_decision_though_the_other_straddles(monkeypatch):
    windows, latency, _, _ = measure(monkeypatch, FakeServer(2.0, candidate_rate=0.88), windows=10, max_windows=10)
    fewest = shortest_deciding_pairs(windows, latency.confidence, 10.0)
    assert fewest is not None and 5 <= fewest <= 10
