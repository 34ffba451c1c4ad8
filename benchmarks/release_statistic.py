"""Which per-window latency statistic decides a release soonest without crying wolf, from recorded windows.

Reads windows that ``release_windows.py`` recorded from an identical candidate on a real server (one
load process, interleaved pairs) and, for each candidate statistic of a window (p95, median, mean,
10 % trimmed mean; throughput beside them), prints the spread of the pairs' log ratios, the windows
a 10 % limit needs on average, and, over ``--runs`` simulated comparisons (the gate's own
``measure_until_decided`` with its defaults, each look's pairs drawn from the recorded ones, which
window of a pair is the candidate's drawn too), how often an identical candidate fails and how
often one ``--slowdown`` times slower (latencies times it, rates divided by it) fails.

    PYTHONPATH=.:benchmarks python3 benchmarks/release_statistic.py tests/unit/data/release_windows_triton.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from pytest_serving.release import side_by_side
from pytest_serving.release.options import ReleaseSettings
from pytest_serving.release.side_by_side import CANDIDATE, CURRENT, MeasuredWindow, Version, window_order
from pytest_serving.settings import OPTIONS
from pytest_serving.protocols.endpoint import Endpoint
from pytest_serving.verdicts import stats
from pytest_serving.verdicts.stats import (
    MEAN_LATENCY,
    MEDIAN_LATENCY,
    P95_LATENCY,
    TRIMMED_MEAN_LATENCY,
    PooledStatistic,
)
from pytest_serving.verdicts.verdict import FAIL, INCONCLUSIVE, PASS, ReleaseLimits

DEFAULTS = {option.name: option.default for option in OPTIONS}
STATISTICS = (P95_LATENCY, MEDIAN_LATENCY, MEAN_LATENCY, TRIMMED_MEAN_LATENCY)


def recorded_pairs(path: Path) -> tuple[list[tuple[MeasuredWindow, MeasuredWindow]], dict]:
    """The recording's windows as (current, candidate) pairs, in the order they ran."""
    with np.load(path) as data:
        blocks = np.split(data["latency_ms"].astype(np.float64), np.cumsum(data["sizes"])[:-1])
        windows = [
            MeasuredWindow(str(role), block.size, int(failures), float(rps), block, 0.0)
            for role, rps, failures, block in zip(data["role"], data["rps"], data["failures"], blocks)
        ]
        meta = json.loads(str(data["meta"][()]))
    pairs = []
    for first, second in zip(windows[::2], windows[1::2]):
        pairs.append((first, second) if first.role == CURRENT else (second, first))
    return pairs, meta


class Resampler:
    """Stands in for ``side_by_side.measure_look``: each window pair drawn from the recorded ones, its two
    windows assigned to the versions at random (they served the same model), the candidate's slowed."""

    def __init__(self, pairs, slowdown: float, rng: np.random.Generator) -> None:
        self.pairs, self.slowdown, self.rng = pairs, slowdown, rng

    def __call__(self, endpoint, versions, samples, settings, pairs, **_):
        windows = []
        for index in pairs:
            drawn = self.pairs[self.rng.integers(len(self.pairs))]
            current, candidate = drawn if self.rng.random() < 0.5 else drawn[::-1]
            slowed = MeasuredWindow(
                CANDIDATE, candidate.n, 0, candidate.rps / self.slowdown, candidate.latency_ms * self.slowdown, 0.0
            )
            by_role = {CURRENT: MeasuredWindow(CURRENT, current.n, 0, current.rps, current.latency_ms, 0.0)}
            by_role[CANDIDATE] = slowed
            windows += [by_role[role] for role in window_order(versions, range(index, index + 1))]
        return windows, 0.0, ""


def simulate(
    pairs, statistic: PooledStatistic, slowdown: float, runs: int, windows: int, max_windows: int, seed: int = 0
) -> tuple[Counter, float]:
    """The speed verdicts of ``runs`` simulated comparisons, and the pairs they used on average."""
    rng = np.random.default_rng(seed)
    side_by_side.measure_look = Resampler(pairs, slowdown, rng)
    side_by_side.LATENCY = statistic
    endpoint = Endpoint("simulated", {"http": "http://127.0.0.1:1"}, "simulated", started_by_plugin=True)
    versions = tuple(Version(role, "m", role, None, {}) for role in (CURRENT, CANDIDATE))
    settings = ReleaseSettings(None, ReleaseLimits(), windows, max_windows, 3.0, 4, False, 0.0)
    limit = settings.limits.max_latency_regression_pct
    verdicts, used = Counter(), []
    for _ in range(runs):
        _, latency, throughput, looks = side_by_side.measure_until_decided(endpoint, versions, [], settings)
        findings = side_by_side.speed_findings(latency, throughput, limit)
        verdicts[max((finding.verdict for finding in findings), key=[PASS, INCONCLUSIVE, FAIL].index)] += 1
        used.append(looks[-1].pairs)
    return verdicts, float(np.mean(used))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", type=Path)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--slowdown", type=float, default=1.5)
    parser.add_argument("--windows", type=int, default=int(DEFAULTS["serving-release-windows"]))
    parser.add_argument("--max-windows", type=int, default=int(DEFAULTS["serving-release-max-windows"]))
    parser.add_argument("--trims", type=float, nargs="+", default=[stats.PAIR_TRIM], help="pair trims to compare")
    args = parser.parse_args(argv)
    pairs, meta = recorded_pairs(args.recording)
    print(json.dumps(meta))
    rates = np.log([candidate.rps / current.rps for current, candidate in pairs])
    print(f"{len(pairs)} pairs; throughput: SD of log pair ratios {rates.std(ddof=1):.3f}")
    for trim in args.trims:
        stats.PAIR_TRIM = trim
        for statistic in STATISTICS:
            logs = np.log([statistic.of([b.latency_ms]) / statistic.of([a.latency_ms]) for a, b in pairs])
            same, used = simulate(pairs, statistic, 1.0, args.runs, args.windows, args.max_windows)
            slower, used_slow = simulate(pairs, statistic, args.slowdown, args.runs, args.windows, args.max_windows)
            print(
                f"trim {trim:g}, {statistic.name:>24}: SD of log pair ratios {logs.std(ddof=1):.3f}, mean "
                f"{logs.mean():+.3f}; identical {dict(same)} after {used:.1f} pairs on average; "
                f"{args.slowdown:g}x slower {dict(slower)} after {used_slow:.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
