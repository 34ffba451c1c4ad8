"""The side-by-side release comparison on one server that hosts both versions.

Both versions answer every sample (each is checked against its own in-process model, as the
contract suite does), then closed-loop load runs in interleaved windows, current and candidate
alternating on the same server in the same minutes, so that whatever else the machine does hits
both. One load process runs every window of a look (``load.interleave``), after an adaptive
warm-up on both versions. ``compare`` returns the release record, with what the decision cost;
nothing here asserts.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from .. import progress
from ..correctness import same_top1, summarize
from ..load.fixture import load_requests
from ..load.interleave import WindowSchedule, interleaved_schedule
from ..load.phase import LoadPhase
from ..load.runner import run_phase
from ..load.stats import LATENCY_SAMPLE_SIZE, RawSamples, is_success
from ..protocols.base import Prediction, Protocol
from ..protocols.client import ClassifierClient
from ..report.results import ReleaseRecord, ResultsStore, record_release, record_rollout, record_rollout_skipped
from ..samples import Sample
from ..targets.base import Endpoint, ServingTarget
from ..verdicts.stats import CONFIDENCE, P95_LATENCY, THROUGHPUT, RatioInterval, paired_correctness, paired_ratio
from ..verdicts.verdict import (
    FAIL,
    INCONCLUSIVE,
    Finding,
    InconclusiveComparison,
    decide,
    gate_failures,
    overall,
    speed_finding,
)
from .options import MIN_WINDOWS, ReleaseSettings
from .rollout import rollout_problems, with_budgets
from .switch import run_rollout

CURRENT, CANDIDATE = "current", "candidate"
ROLES = (CURRENT, CANDIDATE)
#: Sent but not measured between two windows: the previous window's requests still on the server
#: (a closed-loop user has at most one) end in it, so the next window starts on its own version alone.
WINDOW_GAP_S = 0.3
#: Every look starts with an adaptive warm-up on both versions (the load phases' rule, ``load.warmup``):
#: at least this long, until its windows agree, at most ``MAX_WARMUP_S``.
MIN_WARMUP_S = 2.0
MAX_WARMUP_S = 30.0
#: The per-window latency statistic whose candidate/current ratio the release judges.
LATENCY = P95_LATENCY
#: A server that runs a version must give that version's in-process top-1 on this share of the samples.
MIN_REFERENCE_AGREEMENT = 0.99
#: Looks at the data at most, when the comparison may grow (the first, one sized by the interval, the maximum).
MAX_LOOKS = 3
#: A comparison that grows adds at least this many windows per version.
MIN_MORE_WINDOWS = 5


@dataclass(frozen=True)
class Version:
    """One side of the comparison: its role, model, version on the server, protocol and reference answers."""

    role: str
    model: str
    server_version: str
    protocol: Protocol
    reference: Mapping[str, Prediction]


def compare(
    endpoint: Endpoint,
    versions: tuple[Version, Version],
    samples: Sequence[Sample],
    settings: ReleaseSettings,
    *,
    allow_remote: bool = False,
) -> ReleaseRecord:
    """Accuracy on every sample and latency in interleaved windows, for both versions; the verdict."""
    findings: list[Finding] = []
    answers, sides = {}, {}
    for version in versions:
        answers[version.role] = classify_all(endpoint, version.protocol, samples)
        summary = summarize(samples, answers[version.role], version.reference)
        sides[version.role] = {
            "model": version.model,
            "server_version": version.server_version,
            "top1": summary.top1,
            "top5": summary.top5,
            "reference_agreement": summary.agreement,
        }
        if summary.agreement < MIN_REFERENCE_AGREEMENT:
            findings.append(
                Finding(
                    "contract",
                    FAIL,
                    f"contract: the server's {version.role} version ({version.model}, version "
                    f"{version.server_version}) agrees with its in-process model on top-1 for only "
                    f"{100 * summary.agreement:.1f}% of n={summary.n} samples (minimum {100 * MIN_REFERENCE_AGREEMENT:g}%)",
                )
            )
    current, candidate = (answers[CURRENT][s.id] for s in samples), (answers[CANDIDATE][s.id] for s in samples)
    pairs = list(zip(current, candidate))
    paired = paired_correctness(
        [a.top1 in s.accepted for s, (a, _) in zip(samples, pairs)],
        [b.top1 in s.accepted for s, (_, b) in zip(samples, pairs)],
        [same_top1(b, a) for a, b in pairs],
    )
    windows, latency, throughput, looks = measure_until_decided(
        endpoint, versions, samples, settings, allow_remote=allow_remote
    )
    failed = {role: sum(window.failures for window in windows if window.role == role) for role in ROLES}
    for role, count in failed.items():
        if count:
            findings.append(
                Finding("errors", FAIL, f"errors: {count} requests to the {role} version failed under load")
            )
    for role in ROLES:
        measured_windows = sum(1 for window in windows if window.role == role and len(window.latency_ms))
        if measured_windows < settings.windows:
            findings.append(
                Finding(
                    "windows",
                    INCONCLUSIVE,
                    f"windows: only {measured_windows} of {settings.windows} windows of the {role} version measured a "
                    f"successful answer: lengthen --serving-release-window (now {settings.window_s:g} s)",
                )
            )
    measured = {
        "windows": [
            {
                "index": index,
                "version": window.role,
                "n": window.n,
                "p95_ms": float(np.percentile(window.latency_ms, 95)) if window.latency_ms.size else None,
                "mean_ms": float(window.latency_ms.mean()) if window.latency_ms.size else None,
                "rps": window.rps,
                "failures": window.failures,
                "started_at": datetime.fromtimestamp(window.started_at, UTC).isoformat(),
            }
            for index, window in enumerate(windows)
        ],
        "users": settings.users,
        "window_s": settings.window_s,
        "looks": len(looks),
        "current_p99_ms": pooled_p99(role_latencies(windows, CURRENT)),
        "cost": decision_cost(windows, looks, latency.confidence, settings),
        **{f"{role}_sample_ms": pooled_sample(role_latencies(windows, role)) for role in ROLES},
    }
    return decide(sides[CURRENT], sides[CANDIDATE], paired, latency, throughput, settings.limits, measured, findings)


def decision_cost(
    windows: Sequence[MeasuredWindow], looks: Sequence[Look], confidence: float, settings: ReleaseSettings
) -> dict:
    """What the decision cost: windows per version, seconds per look (its warm-up among them), and the
    fewest pairs that would have given the same speed verdicts at the last look's confidence (None
    when undecided), so that a CI can size --serving-release-windows."""
    return {
        "windows": len(windows) // 2,
        "seconds": round(sum(look.seconds for look in looks), 2),
        "looks": [look.to_dict() for look in looks],
        "shortest_deciding_windows": shortest_deciding_pairs(
            windows, confidence, settings.limits.max_latency_regression_pct
        ),
        "confidence": confidence,
    }


def classify_all(endpoint: Endpoint, protocol: Protocol, samples: Sequence[Sample]) -> dict[str, Prediction]:
    """Every sample's answer from one version (the contract suite's client, addressed to that version)."""
    client = ClassifierClient(endpoint.base_url, protocol, headers=endpoint.headers)
    try:
        return {sample.id: client.classify(sample.data) for sample in samples}
    finally:
        client.close()


@dataclass(frozen=True)
class MeasuredWindow:
    """One version's figures in one window of a look: requests sent in it, failed ones, answers per
    second that arrived in it, and the successful requests' latencies (ms)."""

    role: str
    n: int
    failures: int
    rps: float
    latency_ms: np.ndarray
    started_at: float


@dataclass(frozen=True)
class Look:
    """One look at the data: the windows per version measured so far, what this look cost (seconds
    from its start to its end, its warm-up among them) and how its warm-up ended."""

    pairs: int
    seconds: float
    warmup_s: float
    warmup_note: str

    def to_dict(self) -> dict:
        return {
            "pairs": self.pairs,
            "seconds": round(self.seconds, 2),
            "warmup_s": round(self.warmup_s, 2),
            "warmup_note": self.warmup_note,
        }


def measure_until_decided(
    endpoint: Endpoint,
    versions: tuple[Version, Version],
    samples: Sequence[Sample],
    settings: ReleaseSettings,
    *,
    allow_remote: bool = False,
) -> tuple[list[MeasuredWindow], RatioInterval, RatioInterval, list[Look]]:
    """Interleaved windows until both speed intervals decide or one fails, or ``settings.max_windows``
    per version.

    The first look measures ``settings.windows``; while a ratio straddles its limit (and no request
    failed, and the other ratio does not lie wholly beyond its limit: the release fails whatever
    more windows would say), more windows follow: as many as the interval says would decide, at least
    ``MIN_MORE_WINDOWS`` more, the last look at the maximum. Up to ``MAX_LOOKS`` looks at the same
    data each risk a wrong conclusion, so every look's interval is at confidence 1 - 5 % / looks
    (Bonferroni): the risk of any wrong conclusion stays within 5 %. Returns the windows, the
    latency and throughput intervals of the last look, and the looks.
    """
    looks = 1 if settings.max_windows <= settings.windows else MAX_LOOKS
    confidence = 1.0 - (1.0 - CONFIDENCE) / looks
    windows: list[MeasuredWindow] = []
    done: list[Look] = []
    pairs = settings.windows
    for look in range(1, looks + 1):
        started = time.monotonic()
        new_pairs = range(len(windows) // 2, pairs)
        expected_s = 2 * len(new_pairs) * (settings.window_s + WINDOW_GAP_S) + MAX_WARMUP_S
        detail = f"look {look} of at most {looks}: {len(new_pairs)} pairs of {settings.window_s:g} s"
        with progress.activity(endpoint.target, "release", detail, expected_s):
            measured, warmup_s, warmup_note = measure_look(
                endpoint, versions, samples, settings, new_pairs, allow_remote=allow_remote
            )
            windows += measured
            done.append(Look(pairs, time.monotonic() - started, warmup_s, warmup_note))
            latency, throughput = speed_intervals(windows, confidence)
            findings = speed_findings(latency, throughput, settings.limits.max_latency_regression_pct)
            progress.note(
                f"p95 ratio {latency.ratio:.3f} ({latency.low:.3f}-{latency.high:.3f}), throughput ratio "
                f"{throughput.ratio:.3f} ({throughput.low:.3f}-{throughput.high:.3f}): "
                + ", ".join(finding.verdict for finding in findings)
            )
        undecided = [finding.windows_needed for finding in findings if finding.verdict == INCONCLUSIVE]
        more = (
            None
            if any(window.failures for window in windows) or any(finding.verdict == FAIL for finding in findings)
            else next_pairs(pairs, undecided, look, looks, settings.max_windows)
        )
        if more is None:
            break
        pairs = more
    return windows, latency, throughput, done


def speed_intervals(windows: Sequence[MeasuredWindow], confidence: float) -> tuple[RatioInterval, RatioInterval]:
    """The latency and throughput ratios of the candidate over the current version, pair by pair."""
    latency = paired_ratio(
        role_latencies(windows, CURRENT), role_latencies(windows, CANDIDATE), LATENCY, confidence=confidence
    )
    throughput = paired_ratio(
        role_rates(windows, CURRENT), role_rates(windows, CANDIDATE), THROUGHPUT, confidence=confidence
    )
    return latency, throughput


def speed_findings(latency: RatioInterval, throughput: RatioInterval, limit_pct: float) -> tuple[Finding, Finding]:
    return speed_finding(latency, limit_pct, True), speed_finding(throughput, limit_pct, False)


def shortest_deciding_pairs(windows: Sequence[MeasuredWindow], confidence: float, limit_pct: float) -> int | None:
    """The fewest pairs (at least ``MIN_WINDOWS``, taken from the start) whose intervals at ``confidence``
    would already have given the speed decision that all pairs gave (fail: one ratio beyond its limit;
    pass: both within); None when all pairs did not decide."""
    pairs = len(windows) // 2
    final = overall(speed_findings(*speed_intervals(windows, confidence), limit_pct))
    if final == INCONCLUSIVE:
        return None
    for count in range(min(MIN_WINDOWS, pairs), pairs + 1):
        prefix = speed_findings(*speed_intervals(windows[: 2 * count], confidence), limit_pct)
        if overall(prefix) == final:
            return count
    return pairs


def next_pairs(pairs: int, undecided: Sequence[int | None], look: int, looks: int, max_windows: int) -> int | None:
    """Windows per version the next look measures, or None when look number ``look`` is the last.

    ``undecided``: for each speed interval that straddles its limit, the windows it says would
    decide (None: no number would). A quarter more than it says, at least ``MIN_MORE_WINDOWS``
    more; the last look, or an interval that cannot say, goes to the maximum."""
    if not undecided or pairs >= max_windows or look >= looks:
        return None
    if look == looks - 1 or None in undecided:
        return max_windows
    return min(max_windows, max(pairs + MIN_MORE_WINDOWS, math.ceil(1.25 * max(undecided))))


def window_order(versions: tuple[Version, Version], pairs: range) -> list[str]:
    """The roles of a look's windows: current first in even pairs, candidate first in odd ones, so that
    whatever favours the first or the second window of a pair (a server still busy with the other
    version's queue, a drift in the machine's load) favours both versions equally."""
    return [version.role for index in pairs for version in (versions if index % 2 == 0 else versions[::-1])]


def measure_look(
    endpoint: Endpoint,
    versions: tuple[Version, Version],
    samples: Sequence[Sample],
    settings: ReleaseSettings,
    pairs: range,
    *,
    allow_remote: bool = False,
) -> tuple[list[MeasuredWindow], float, str]:
    """One closed-loop window per version for each index in ``pairs``, all in one load process
    (``load.interleave``): an adaptive warm-up on both versions, then the windows in ``window_order``.
    Returns the windows, how long the warm-up lasted and how it ended."""
    requests = {
        version.role: load_requests(replace(endpoint, protocol=version.protocol), list(samples)) for version in versions
    }
    flat = [request for version in versions for request in requests[version.role]]
    offsets = itertools.accumulate((len(requests[version.role]) for version in versions), initial=0)
    starts = list(offsets)
    request_sets = {
        version.role: tuple(range(starts[index], starts[index + 1])) for index, version in enumerate(versions)
    }
    schedule = interleaved_schedule(window_order(versions, pairs), settings.window_s, WINDOW_GAP_S, request_sets)
    phase = LoadPhase(
        users=settings.users,
        duration=schedule.duration_s,
        warmup=MIN_WARMUP_S,
        max_warmup=MAX_WARMUP_S,
        seed=pairs.start,
    )
    with tempfile.TemporaryDirectory(prefix="pytest-serving-release-") as scratch:
        stats = run_phase(
            endpoint.base_url,
            flat,
            phase,
            started_by_plugin=endpoint.started_by_plugin,
            allow_remote=allow_remote,
            raw_dir=scratch,
            schedule=schedule,
        )
        raw = RawSamples.merge([RawSamples.load(path) for path in sorted(Path(scratch).glob("raw-*.npz"))])
    return split_windows(raw, schedule), stats.warmup_s or 0.0, stats.warmup_note


def split_windows(samples: RawSamples, schedule: WindowSchedule) -> list[MeasuredWindow]:
    """Each scheduled window's figures: the requests sent in it (a gap's are left out) and the answers
    that arrived in it."""
    success = is_success(samples.code)
    windows = []
    for window in schedule.windows:
        inside = (samples.offset_s >= window.start_s) & (samples.offset_s < window.end_s)
        answered = (samples.completed_s >= window.start_s) & (samples.completed_s < window.end_s)
        windows.append(
            MeasuredWindow(
                role=window.role,
                n=int(inside.sum()),
                failures=int((inside & ~success).sum()),
                rps=int(answered.sum()) / window.length_s,
                latency_ms=samples.latency_ms[inside & success],
                started_at=samples.started_at + window.start_s,
            )
        )
    return windows


def role_latencies(windows: Sequence[MeasuredWindow], role: str) -> list[np.ndarray]:
    """Each window's latencies (ms) of one version, in pair order."""
    return [window.latency_ms for window in windows if window.role == role]


def role_rates(windows: Sequence[MeasuredWindow], role: str) -> list[np.ndarray]:
    """Each window's answered requests per second of one version, in pair order (one-element blocks)."""
    return [np.array([window.rps]) for window in windows if window.role == role]


def pooled_p99(blocks: Sequence[np.ndarray]) -> float | None:
    """The p99 of all windows' latencies of one version (the rollout's reference for a sustained rate)."""
    values = np.concatenate(blocks) if blocks else np.zeros(0)
    return float(np.percentile(values, 99)) if values.size else None


def pooled_sample(blocks: Sequence[np.ndarray], size: int = LATENCY_SAMPLE_SIZE) -> list[float]:
    """At most ``size`` latencies from all windows of one version, every k-th, for the report's histogram."""
    values = np.concatenate(blocks) if blocks else np.zeros(0)
    if values.size > size:
        values = values[np.linspace(0, values.size - 1, size).round().astype(np.int64)]
    return [round(value, 3) for value in values.tolist()]


#: The rollout's open-loop rate as a share of the rate the current version sustained in its windows.
ROLLOUT_RATE_SHARE = 0.5


@dataclass
class ReleaseGate:
    """What the ``serving_release`` fixture hands a test: call it to compare, roll out, record and gate."""

    endpoint: Endpoint
    target: ServingTarget
    versions: tuple[Version, Version]
    samples: Sequence[Sample]
    settings: ReleaseSettings
    results: ResultsStore
    allow_remote: bool = False

    def __call__(self) -> ReleaseRecord:
        """Compare both versions and write ``targets.<name>.release``; then, unless --serving-rollout=off,
        switch from current to candidate under open-loop load and write ``targets.<name>.rollout``.
        Fails the test on a failed verdict (an inconclusive one with --serving-release-strict; otherwise
        it warns) and on a rollout that failed requests or answered from the old version too late."""
        record = compare(self.endpoint, self.versions, self.samples, self.settings, allow_remote=self.allow_remote)
        target = self.endpoint.target
        record_release(self.results, target, record)
        strict = self.settings.limits.strict
        if record.verdict == INCONCLUSIVE and not strict:
            warnings.warn(InconclusiveComparison(f"{target} release: " + " | ".join(record.reasons)), stacklevel=2)
        failures = gate_failures(record.verdict, record.reasons, strict, f"{target} release")
        if self.settings.rollout:
            failures += self._rollout(record)
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)
        return record

    def _rollout(self, record: ReleaseRecord) -> list[str]:
        """The rollout at --serving-rollout-rate, or half the current version's measured rate; its problems
        (a server that cannot switch live is recorded as skipped, with the reason, and warns; one that does
        not sustain the rate is recorded as not measurable, with the reason, and warns)."""
        name = self.endpoint.target
        unsupported = self.target.rollout_unsupported()
        if unsupported:
            record_rollout_skipped(self.results, name, unsupported)
            warnings.warn(RolloutSkipped(f"{name} rollout skipped: {unsupported}"), stacklevel=3)
            return []
        settings = self.settings
        rate = settings.rollout_rate or max(1.0, ROLLOUT_RATE_SHARE * record.latency["throughput"]["current"])
        with progress.activity(name, "rollout", f"{rate:.1f} requests/s"):
            rollout = run_rollout(
                self.endpoint,
                self.target,
                self.samples,
                rate,
                settings.rollout_grace_s,
                record.latency["current_p99_ms"],
                may_lower=settings.rollout_rate is None,
                allow_remote=self.allow_remote,
            )
        rollout = with_budgets(rollout, settings.rollout_max_p99_ms, settings.rollout_max_p99_ratio)
        record_rollout(self.results, name, rollout)
        if not rollout.measurable:
            why = f"{name} rollout not measurable: {rollout.not_measurable}"
            warnings.warn(RolloutNotMeasurable(why), stacklevel=3)
        return rollout_problems(rollout, name)


class RolloutNotMeasurable(UserWarning):
    """The server did not sustain the rollout's rate: its latency would measure a queue, not the switch."""


class RolloutSkipped(UserWarning):
    """The target's server cannot switch model versions live; the rollout did not run."""
