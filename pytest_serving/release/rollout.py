"""What a rollout under load did: failures, stale answers after the switch, the switch's cost in latency.

Pure: the answers (when each request was sent, its latency, whether it succeeded, which version
answered) and the switch's start and end come in; the ``targets.<name>.rollout`` record and its
per-second timeline go out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
) -> RolloutRecord:
    """The rollout record: an answer is stale when the old version gave it to a request sent later
    than ``grace_s`` after the switch completed (requests already queued on the old version may
    drain from it); the switch window (for its p99) runs from the switch's start to that moment,
    and steady state is the old version's before the switch started."""
    versions = np.asarray(answers.version, dtype=object)
    settled = switch_done_s + grace_s
    stale = (versions == old_version) & (answers.sent_s > settled) & answers.ok
    in_switch = (answers.sent_s >= switch_started_s) & (answers.sent_s <= settled)
    return RolloutRecord(
        requests=int(answers.sent_s.size),
        failed=int((~answers.ok).sum()),
        stale_answers=int(stale.sum()),
        switch_s=switch_done_s - switch_started_s,
        p99_steady_ms=_p99(answers.latency_ms[answers.ok & (answers.sent_s < switch_started_s)]),
        p99_switch_ms=_p99(answers.latency_ms[answers.ok & in_switch]),
        rate=rate,
        grace_s=grace_s,
        switch_started_s=switch_started_s,
        switch_done_s=switch_done_s,
        timeline=timeline(answers),
    )


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


def rollout_problems(record: RolloutRecord, target: str) -> list[str]:
    """The rollout's gate: no failed request, no stale answer after the grace, some load measured."""
    problems = []
    where = f"{target} rollout at {record.rate:g} requests/s"
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
