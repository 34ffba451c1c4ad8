"""The side-by-side release comparison on one server that hosts both versions.

Both versions answer every sample (each is checked against its own in-process model, as the
contract suite does), then closed-loop load runs in interleaved windows, current and candidate
alternating on the same server in the same minutes, so that whatever else the machine does hits
both. ``compare`` returns the release record; nothing here asserts.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest

from ..correctness import same_top1, summarize
from ..load.fixture import load_requests
from ..load.phase import LoadPhase
from ..load.runner import run_phase
from ..load.stats import LATENCY_SAMPLE_SIZE, PhaseStats
from ..protocols.base import Prediction, Protocol
from ..protocols.client import ClassifierClient
from ..report.results import ReleaseRecord, ResultsStore, record_release, record_rollout, record_rollout_skipped
from ..samples import Sample
from ..targets.base import Endpoint, ServingTarget
from ..verdicts.stats import P95_LATENCY, THROUGHPUT, bootstrap_ratio, paired_correctness
from ..verdicts.verdict import FAIL, INCONCLUSIVE, Finding, InconclusiveComparison, decide, gate_failures
from .options import ReleaseSettings
from .rollout import rollout_problems
from .switch import run_rollout

CURRENT, CANDIDATE = "current", "candidate"
#: Each window re-opens its connections; one second of unmeasured sending lets them settle.
WINDOW_WARMUP_S = 1.0
#: A server that runs a version must give that version's in-process top-1 on this share of the samples.
MIN_REFERENCE_AGREEMENT = 0.99


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
    windows = interleaved_windows(endpoint, versions, samples, settings, allow_remote=allow_remote)
    failed = {role: sum(stats.failures for r, stats in windows if r == role) for role in (CURRENT, CANDIDATE)}
    for role, count in failed.items():
        if count:
            findings.append(
                Finding("errors", FAIL, f"errors: {count} requests to the {role} version failed under load")
            )
    latency = {role: [np.asarray(s.latency_sample_ms) for r, s in windows if r == role] for role in failed}
    for role, blocks in latency.items():
        measured_windows = sum(1 for block in blocks if block.size)
        if measured_windows < settings.windows:
            findings.append(
                Finding(
                    "windows",
                    INCONCLUSIVE,
                    f"windows: only {measured_windows} of {settings.windows} windows of the {role} version measured a "
                    f"successful answer: lengthen --serving-release-window (now {settings.window_s:g} s)",
                )
            )
    rates = {role: [np.array([s.rps]) for r, s in windows if r == role] for role in failed}
    measured = {
        "windows": [
            {
                "index": index,
                "version": role,
                "n": stats.n,
                "p95_ms": stats.p95_ms,
                "rps": stats.rps,
                "failures": stats.failures,
                "started_at": stats.started_at,
            }
            for index, (role, stats) in enumerate(windows)
        ],
        "users": settings.users,
        "window_s": settings.window_s,
        **{f"{role}_sample_ms": pooled_sample(latency[role]) for role in latency},
    }
    return decide(
        sides[CURRENT],
        sides[CANDIDATE],
        paired,
        bootstrap_ratio(latency[CURRENT], latency[CANDIDATE], P95_LATENCY),
        bootstrap_ratio(rates[CURRENT], rates[CANDIDATE], THROUGHPUT),
        settings.limits,
        measured,
        findings,
    )


def classify_all(endpoint: Endpoint, protocol: Protocol, samples: Sequence[Sample]) -> dict[str, Prediction]:
    """Every sample's answer from one version (the contract suite's client, addressed to that version)."""
    client = ClassifierClient(endpoint.base_url, protocol, headers=endpoint.headers)
    try:
        return {sample.id: client.classify(sample.data) for sample in samples}
    finally:
        client.close()


def interleaved_windows(
    endpoint: Endpoint,
    versions: tuple[Version, Version],
    samples: Sequence[Sample],
    settings: ReleaseSettings,
    *,
    allow_remote: bool = False,
) -> list[tuple[str, PhaseStats]]:
    """``settings.windows`` closed-loop windows per version, alternating current and candidate."""
    requests = {
        version.role: load_requests(replace(endpoint, protocol=version.protocol), list(samples)) for version in versions
    }
    windows = []
    for index in range(settings.windows):
        for version in versions:
            phase = LoadPhase(users=settings.users, duration=settings.window_s, warmup=WINDOW_WARMUP_S, seed=index)
            stats = run_phase(
                endpoint.base_url,
                requests[version.role],
                phase,
                started_by_plugin=endpoint.started_by_plugin,
                allow_remote=allow_remote,
            )
            windows.append((version.role, stats))
    return windows


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
        """The rollout at half the current version's measured rate; its problems (a server that cannot
        switch live is recorded as skipped, with the reason, and warns)."""
        name = self.endpoint.target
        unsupported = self.target.rollout_unsupported()
        if unsupported:
            record_rollout_skipped(self.results, name, unsupported)
            warnings.warn(RolloutSkipped(f"{name} rollout skipped: {unsupported}"), stacklevel=3)
            return []
        rate = max(1.0, ROLLOUT_RATE_SHARE * record.latency["throughput"]["current"])
        rollout = run_rollout(
            self.endpoint,
            self.target,
            self.samples,
            rate,
            self.settings.rollout_grace_s,
            allow_remote=self.allow_remote,
        )
        record_rollout(self.results, name, rollout)
        return rollout_problems(rollout, name)


class RolloutSkipped(UserWarning):
    """The target's server cannot switch model versions live; the rollout did not run."""
