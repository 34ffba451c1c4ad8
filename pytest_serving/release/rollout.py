"""What a rollout under load did: failures, stale answers after the switch, the switch's cost in latency.

Pure: the answers (when each request was sent, its latency, whether it succeeded, which version
answered) and the switch's start and end come in; the ``targets.<name>.rollout`` record and its
per-second timeline go out.

A rollout's latency says something only about a server that sustains its rate: at a rate beyond
capacity the queue grows, and p99 before and during the switch measures the queue (11 s on an
overloaded TorchServe), not the switch. So the steady p99 is held against the p99 the current
version answered with in the side-by-side windows, at a higher rate (closed loop); beyond
``SUSTAIN_FACTOR`` times that, the rollout is not measurable, and says why, instead of reporting.
The switch's own cost is its stall: the seconds from its start on whose p99 rose above
``STALL_FACTOR`` times the steady p99 (a reloading Triton answered in 2 s against 68 ms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..report.results import RolloutRecord


@dataclass(frozen=True)
class Answers:
    """Every request of the rollout's load: seconds since the load began when it was sent, its latency,
    whether it succeeded, and the model version that answered ("" when no answer named one)."""

    sent_s: np.ndarray
    latency_ms: np.ndarray
    ok: np.ndarray
    version: Sequence[str]

    @property
    def answered_s(self) -> np.ndarray:
        return self.sent_s + self.latency_ms / 1000.0


#: A second of the rollout is stalled when its p99 is above this many times the steady p99 (a steady
#: second's p99 of a few dozen requests is about their maximum, which stays within 2x the steady p99).
STALL_FACTOR = 2.0
#: The server sustains the rollout's rate when the steady p99 stays within this many times the current
#: version's p99 in the side-by-side windows (closed loop at a higher rate, so normally above it).
SUSTAIN_FACTOR = 3.0
#: A rate the server does not sustain is tried once more at this share of it.
LOWER_RATE_SHARE = 0.5


def _p99(values: np.ndarray) -> float | None:
    return float(np.percentile(values, 99)) if values.size else None


def summarize_rollout(
    answers: Answers,
    *,
    switch_started_s: float,
    switch_done_s: float,
    old_version: str,
    grace_s: float,
    rate: float,
    reference_p99_ms: float | None = None,
) -> RolloutRecord:
    """The rollout record: an answer is stale when the old version gave it to a request sent later
    than ``grace_s`` after the switch completed (requests already queued on the old version may
    drain from it); the switch window (for its p99) runs from the switch's start to that moment,
    and steady state is the old version's before the switch started. With ``reference_p99_ms`` a steady
    p99 beyond ``SUSTAIN_FACTOR`` times it makes the record not measurable."""
    versions = np.asarray(answers.version, dtype=object)
    settled = switch_done_s + grace_s
    stale = (versions == old_version) & (answers.sent_s > settled) & answers.ok
    in_switch = (answers.sent_s >= switch_started_s) & (answers.sent_s <= settled)
    steady = _p99(answers.latency_ms[answers.ok & (answers.sent_s < switch_started_s)])
    seconds = timeline(answers)
    stalled = stall_seconds(seconds, switch_started_s, steady)
    before = answers.latency_ms[answers.ok & (answers.sent_s < switch_started_s)]
    unsustained = not_sustained(before, reference_p99_ms, rate, "before the switch") if reference_p99_ms else None
    return RolloutRecord(
        requests=int(answers.sent_s.size),
        failed=int((~answers.ok).sum()),
        stale_answers=int(stale.sum()),
        switch_s=switch_done_s - switch_started_s,
        p99_steady_ms=steady,
        p99_switch_ms=_p99(answers.latency_ms[answers.ok & in_switch]),
        rate=rate,
        grace_s=grace_s,
        switch_started_s=switch_started_s,
        switch_done_s=switch_done_s,
        timeline=seconds,
        stall_s=None if steady is None else float(len(stalled)),
        stall_level_ms=None if steady is None else STALL_FACTOR * steady,
        stall_seconds=stalled,
        reference_p99_ms=reference_p99_ms,
        measurable=unsustained is None,
        not_measurable=unsustained or "",
    )


def stall_seconds(seconds: Sequence[dict], switch_started_s: float, steady_p99_ms: float | None) -> list[int]:
    """The timeline's seconds, from the one the switch started in on, whose p99 is above
    ``STALL_FACTOR`` times the steady p99 (none when there is no steady p99 to compare with)."""
    if steady_p99_ms is None:
        return []
    level = STALL_FACTOR * steady_p99_ms
    return [
        entry["second"]
        for entry in seconds
        if entry["second"] + 1 > switch_started_s and entry["p99_ms"] is not None and entry["p99_ms"] > level
    ]


def not_sustained(latency_ms: np.ndarray, reference_p99_ms: float, rate: float, when: str) -> str | None:
    """Why the server does not sustain ``rate``, from the successful latencies of a steady stretch at it,
    or None when it does: a p99 beyond ``SUSTAIN_FACTOR`` times the side-by-side's p99 with a median
    above that p99 is a queue (every request waits); one stalled request among fifty lifts the p99
    (about their maximum) but not the median, and the rate is still sustained."""
    if latency_ms.size == 0:
        return f"no request succeeded at {rate:.3g} requests/s {when}"
    p50, p99 = np.percentile(latency_ms, (50, 99)).tolist()
    if p99 > SUSTAIN_FACTOR * reference_p99_ms and p50 > reference_p99_ms:
        return (
            f"at {rate:.3g} requests/s {when} the server's p99 was {p99:.0f} ms (median {p50:.0f} ms), over "
            f"{SUSTAIN_FACTOR:g}x the {reference_p99_ms:.0f} ms p99 it answered with in the side-by-side windows, "
            "the median above it: it does not sustain the rate"
        )
    return None


def sustained_rate(
    rate: float, reference_p99_ms: float, probe: Callable[[float], np.ndarray], *, may_lower: bool = True
) -> tuple[float, float | None, str]:
    """The rate to roll out at: ``rate`` when ``probe(rate)`` (the old version's latencies at that rate)
    shows the server sustains it, else, once, ``LOWER_RATE_SHARE`` of it (unless not ``may_lower``).
    Returns (rate, the rate first tried when lowered, why the rollout is not measurable or "")."""
    why = not_sustained(probe(rate), reference_p99_ms, rate, "in the probe")
    if why is None:
        return rate, None, ""
    if not may_lower:
        return rate, None, why
    lower = LOWER_RATE_SHARE * rate
    why = not_sustained(probe(lower), reference_p99_ms, lower, "in the probe")
    return lower, rate, (why or "")


def timeline(answers: Answers) -> list[dict]:
    """Per second of the load (by send time): requests sent, answered per second, p99 of the
    successful ones, failures, and each version's share of the answers."""
    if answers.sent_s.size == 0:
        return []
    versions = np.asarray(answers.version, dtype=object)
    second = np.floor(answers.sent_s).astype(np.int64)
    answered = np.floor(answers.answered_s).astype(np.int64)
    seconds = []
    for start in range(int(second.max()) + 1):
        inside = second == start
        sent = int(inside.sum())
        named = versions[inside & answers.ok]
        shares = {str(name): count / named.size for name, count in zip(*np.unique(named, return_counts=True))}
        seconds.append(
            {
                "second": start,
                "sent": sent,
                "rps": int((answered == start).sum()),
                "p99_ms": _p99(answers.latency_ms[inside & answers.ok]),
                "failures": int((inside & ~answers.ok).sum()),
                "versions": shares,
            }
        )
    return seconds


def with_budgets(record: RolloutRecord, max_p99_ms: float | None, max_p99_ratio: float | None) -> RolloutRecord:
    """The record with the switch's p99 budgets it is judged by."""
    return replace(record, max_p99_ms=max_p99_ms, max_p99_ratio=max_p99_ratio)


def rollout_problems(record: RolloutRecord, target: str) -> list[str]:
    """The rollout's gate: no failed request, no stale answer after the grace, some load measured, and,
    when measurable, the switch's p99 within its budgets (``max_p99_ms``, ``max_p99_ratio`` of the
    steady p99). A rollout that is not measurable has no problem here: it warns instead."""
    where = f"{target} rollout at {record.rate:.3g} requests/s"
    if not record.measurable:
        return []
    problems = budget_problems(record, where)
    if record.requests == 0:
        problems.append(f"{where}: no request was sent")
    if record.failed:
        problems.append(f"{where}: {record.failed} of {record.requests} requests failed")
    if record.stale_answers:
        problems.append(
            f"{where}: {record.stale_answers} answers from the old version to requests sent more than "
            f"{record.grace_s:g} s after the switch completed"
        )
    if record.switch_s is not None and not math.isfinite(record.switch_s):
        problems.append(f"{where}: the switch never completed")
    return problems


def budget_problems(record: RolloutRecord, where: str) -> list[str]:
    """The switch's p99 against ``max_p99_ms`` and ``max_p99_ratio`` times the steady p99."""
    switch, steady = record.p99_switch_ms, record.p99_steady_ms
    if switch is None:
        return []
    stall = f"; p99 stayed above {record.stall_level_ms:.0f} ms for {record.stall_s:g} s" if record.stall_s else ""
    problems = []
    if record.max_p99_ms is not None and switch > record.max_p99_ms:
        problems.append(
            f"{where}: p99 {switch:.0f} ms during the switch, over the budget of {record.max_p99_ms:g} ms "
            f"(--serving-rollout-max-p99-ms){stall}"
        )
    if record.max_p99_ratio is not None and steady and switch > record.max_p99_ratio * steady:
        problems.append(
            f"{where}: p99 {switch:.0f} ms during the switch is {switch / steady:.2f}x the {steady:.0f} ms before it, "
            f"over the budget of {record.max_p99_ratio:g}x (--serving-rollout-max-p99-ratio){stall}"
        )
    return problems
