"""The release gate's false alarms and power, simulated from windows recorded on a real server.

tests/unit/data/release_windows_triton.npz holds every window of one look of an identical candidate on
Triton (benchmarks/release_windows.py; its command and machine are in the file): each window's
successful latencies and answer rate. A simulated comparison runs the gate's own sequential
procedure (``measure_until_decided`` with the default windows and looks), each look's pairs drawn
from the recorded pairs, which of a pair's two windows is the candidate's drawn too (they served the
same model). Seeded: the same rates every run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_serving import progress
from pytest_serving.release import side_by_side
from pytest_serving.release.options import ReleaseSettings
from pytest_serving.release.side_by_side import CANDIDATE, CURRENT, MeasuredWindow, Version, window_order
from pytest_serving.settings import OPTIONS
from pytest_serving.protocols.endpoint import Endpoint
from pytest_serving.verdicts.verdict import FAIL, ReleaseLimits

RECORDING = Path(__file__).parent / "data" / "release_windows_triton.npz"
DEFAULTS = {option.name: option.default for option in OPTIONS}
COMPARISONS = 1000


def recorded_pairs() -> list[tuple[MeasuredWindow, MeasuredWindow]]:
    with np.load(RECORDING) as data:
        blocks = np.split(data["latency_ms"].astype(np.float64), np.cumsum(data["sizes"])[:-1])
        windows = [
            MeasuredWindow(str(role), block.size, 0, float(rps), block, 0.0)
            for role, rps, block in zip(data["role"], data["rps"], blocks)
        ]
        assert json.loads(str(data["meta"][()]))["target"] == "triton"
    return list(zip(windows[::2], windows[1::2]))


class RecordedServer:
    """Stands in for ``side_by_side.measure_look``: pairs drawn from the recording, the candidate's
    window ``slowdown`` times slower (latencies times it, answer rate divided by it)."""

    def __init__(self, slowdown: float, rng: np.random.Generator) -> None:
        self.pairs = recorded_pairs()
        self.slowdown = slowdown
        self.rng = rng

    def measure_look(self, endpoint, versions, samples, settings, pairs, **_):
        windows = []
        for index in pairs:
            first, second = self.pairs[self.rng.integers(len(self.pairs))]
            current, candidate = (first, second) if self.rng.random() < 0.5 else (second, first)
            by_role = {
                CURRENT: MeasuredWindow(CURRENT, current.n, 0, current.rps, current.latency_ms, 0.0),
                CANDIDATE: MeasuredWindow(
                    CANDIDATE, candidate.n, 0, candidate.rps / self.slowdown, candidate.latency_ms * self.slowdown, 0.0
                ),
            }
            windows += [by_role[role] for role in window_order(versions, range(index, index + 1))]
        return windows, 0.0, ""


def verdicts(monkeypatch, slowdown: float, comparisons: int = COMPARISONS) -> list[str]:
    """The speed verdict (worst of latency and throughput) of each simulated comparison."""
    server = RecordedServer(slowdown, np.random.default_rng(20261207))
    monkeypatch.setattr(side_by_side, "measure_look", server.measure_look)
    monkeypatch.delenv(progress.CHANNEL_VARIABLE, raising=False)  # a thousand simulated looks print nothing
    endpoint = Endpoint("recorded", {"http": "http://127.0.0.1:1"}, "recorded", started_by_plugin=True)
    versions = tuple(Version(role, "m", role, None, {}) for role in (CURRENT, CANDIDATE))
    settings = ReleaseSettings(
        None,
        ReleaseLimits(),
        int(DEFAULTS["serving-release-windows"]),
        int(DEFAULTS["serving-release-max-windows"]),
        float(DEFAULTS["serving-release-window"]),
        int(DEFAULTS["serving-release-users"]),
        False,
        0.0,
    )
    outcome = []
    for _ in range(comparisons):
        _, latency, throughput, _ = side_by_side.measure_until_decided(endpoint, versions, [], settings)
        findings = side_by_side.speed_findings(latency, throughput, settings.limits.max_latency_regression_pct)
        outcome.append(max((finding.verdict for finding in findings), key=["pass", "inconclusive", FAIL].index))
    return outcome


def test_an_identical_candidate_fails_in_at_most_5_percent_of_comparisons(monkeypatch):
    outcome = verdicts(monkeypatch, 1.0)
    assert outcome.count(FAIL) / len(outcome) <= 0.05


@pytest.mark.parametrize("slowdown", [1.5])
def test_a_candidate_half_again_as_slow_fails_in_at_least_95_percent(monkeypatch, slowdown):
    outcome = verdicts(monkeypatch, slowdown)
    assert outcome.count(FAIL) / len(outcome) >= 0.95
