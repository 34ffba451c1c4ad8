"""From the statistics to a release verdict: pass, fail or inconclusive, with a reason per finding.

A finding *fails* only when the evidence is beyond the limit: the accuracy drop measured on the
same samples, or a speed interval that lies wholly on the wrong side of the limit. An interval
that straddles the limit is *inconclusive*: the run could not tell, and it says how many windows
would (``--serving-release-strict`` turns that into a failure). Everything else *passes*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..report.results import ReleaseRecord
from .stats import PairedCorrectness, RatioInterval, windows_needed

PASS, INCONCLUSIVE, FAIL = "pass", "inconclusive", "fail"
#: Worst first: the verdict of several findings is the worst of theirs.
SEVERITY = {PASS: 0, INCONCLUSIVE: 1, FAIL: 2}
#: The accuracy drop is compared in whole samples; this keeps 1.0 point on n=200 (2 samples) at 1.0.
_EPSILON = 1e-9


class InconclusiveComparison(UserWarning):
    """A comparison whose interval straddles its limit: reported, not failed (unless strict)."""


@dataclass(frozen=True)
class ReleaseLimits:
    """The release gate's limits (``--serving-max-accuracy-drop``, ``--serving-min-agreement``,
    ``--serving-max-latency-regression``, ``--serving-release-strict``)."""

    max_accuracy_drop_points: float = 1.0
    min_agreement: float | None = None
    max_latency_regression_pct: float = 10.0
    strict: bool = False


@dataclass(frozen=True)
class Finding:
    """One part of a verdict: what was judged, its verdict and a sentence a person can act on."""

    part: str
    verdict: str
    reason: str
    windows_needed: int | None = None


def accuracy_findings(paired: PairedCorrectness, limits: ReleaseLimits) -> list[Finding]:
    """The accuracy drop against its limit (McNemar's p beside it), and top-1 agreement if gated."""
    drop = paired.drop_points
    evidence = (
        f"on n={paired.n} samples; McNemar exact p={paired.p_value:.2g} "
        f"({paired.only_current} samples only current got right, {paired.only_candidate} only candidate)"
    )
    tops = f"candidate top-1 {100 * paired.candidate_top1:.1f}% vs current {100 * paired.current_top1:.1f}%"
    if drop > limits.max_accuracy_drop_points + _EPSILON:
        findings = [
            Finding(
                "accuracy",
                FAIL,
                f"accuracy: {tops}, a drop of {drop:.1f} points (limit {limits.max_accuracy_drop_points:g}) {evidence}",
            )
        ]
    else:
        findings = [Finding("accuracy", PASS, f"accuracy: {tops} (limit: {limits.max_accuracy_drop_points:g} points "
                                              f"drop) {evidence}")]  # fmt: skip
    agreement = f"top-1 agreement between the versions {100 * paired.agreement:.1f}% on n={paired.n}"
    if limits.min_agreement is not None:
        below = paired.agreement < limits.min_agreement
        findings.append(
            Finding(
                "agreement",
                FAIL if below else PASS,
                f"{agreement} {'below' if below else 'meets'} the minimum {100 * limits.min_agreement:.1f}%",
            )
        )
    return findings


def speed_finding(interval: RatioInterval, limit_pct: float, higher_is_worse: bool) -> Finding:
    """A candidate/current ratio's interval against the limit: beyond it wholly (fail), straddling
    it (inconclusive, with the windows a decision would need) or within it (pass)."""
    threshold = 1.0 + limit_pct / 100.0 if higher_is_worse else 1.0 - limit_pct / 100.0
    worse_side = interval.low > threshold if higher_is_worse else interval.high < threshold
    straddles = interval.low <= threshold <= interval.high and not (
        # An interval that touches the limit only from the good side decides.
        (higher_is_worse and interval.high == threshold) or (not higher_is_worse and interval.low == threshold)
    )
    limit = f"{'+' if higher_is_worse else '-'}{limit_pct:g}% limit"
    figure = (
        f"{interval.statistic}: candidate/current {interval.ratio:.3f} "
        f"({interval.candidate:.4g} vs {interval.current:.4g}; {100 * interval.confidence:.3g}% CI "
        f"{interval.low:.3f}-{interval.high:.3f} over {interval.windows} windows each)"
    )
    if worse_side:
        return Finding(interval.statistic, FAIL, f"{figure} lies wholly beyond the {limit}", interval.windows)
    if straddles:
        needed = windows_needed(interval, threshold)
        advice = (
            f"about {needed} windows each would decide"
            if needed is not None
            else "the estimate sits on the limit: no number of windows decides"
        )
        return Finding(interval.statistic, INCONCLUSIVE, f"{figure} straddles the {limit}; {advice}", needed)
    return Finding(interval.statistic, PASS, f"{figure} within the {limit}", interval.windows)


def overall(findings: Sequence[Finding]) -> str:
    """The worst verdict among the findings (pass when there are none)."""
    return max((finding.verdict for finding in findings), key=SEVERITY.__getitem__, default=PASS)


def reasons(findings: Sequence[Finding]) -> list[str]:
    """What decided the verdict: the findings that did not pass, or, when all passed, all of them."""
    failing = [finding.reason for finding in findings if finding.verdict != PASS]
    return failing or [finding.reason for finding in findings]


def gate_failures(verdict: str, why: Sequence[str], strict: bool, what: str) -> list[str]:
    """The lines that fail a test: a failed verdict always, an inconclusive one only when ``strict``."""
    if verdict == FAIL or (verdict == INCONCLUSIVE and strict):
        suffix = " [--serving-release-strict]" if verdict == INCONCLUSIVE else ""
        return [f"{what}: {verdict}{suffix}: {reason}" for reason in why]
    return []


def decide(
    current: dict,
    candidate: dict,
    paired: PairedCorrectness | None,
    latency: RatioInterval | None,
    throughput: RatioInterval | None,
    limits: ReleaseLimits,
    measured: dict | None = None,
    other: Sequence[Finding] = (),
) -> ReleaseRecord:
    """The release record of one target from whatever was measured (a part not measured is left
    out of the verdict and says so); ``measured`` adds the windows and latency samples to ``latency``;
    ``other`` findings (failed requests, a version that disagrees with its own model) join the verdict."""
    findings: list[Finding] = list(other)
    accuracy: dict = {"measured": False}
    if paired is not None:
        parts = accuracy_findings(paired, limits)
        findings += parts
        accuracy = {
            **paired.to_dict(),
            "measured": True,
            "verdict": overall(parts),
            "max_drop_points": limits.max_accuracy_drop_points,
            "min_agreement": limits.min_agreement,
        }
    speed: dict = {"max_regression_pct": limits.max_latency_regression_pct, **(measured or {})}
    for key, interval, higher_is_worse in (("p95", latency, True), ("throughput", throughput, False)):
        if interval is None:
            continue
        finding = speed_finding(interval, limits.max_latency_regression_pct, higher_is_worse)
        findings.append(finding)
        speed[key] = {**interval.to_dict(), "verdict": finding.verdict, "windows_needed": finding.windows_needed}
    return ReleaseRecord(
        verdict=overall(findings),
        reasons=reasons(findings),
        current=current,
        candidate=candidate,
        accuracy=accuracy,
        latency=speed,
    )
