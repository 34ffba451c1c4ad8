"""The release decision's statistics and verdicts (pure logic: synthetic numbers, no server, no clock)."""

import math
from dataclasses import asdict

import numpy as np
import pytest

from pytest_serving.release.rollout import Answers, rollout_problems, summarize_rollout
from pytest_serving.verdicts.stats import (
    P95_LATENCY,
    THROUGHPUT,
    TRIMMED_MEAN_LATENCY,
    RatioInterval,
    bootstrap_ratio,
    mcnemar_exact,
    paired_correctness,
    paired_ratio,
    small_sample_widening,
    student_t_quantile,
    time_blocks,
    windows_needed,
)
from pytest_serving.verdicts.verdict import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    ReleaseLimits,
    accuracy_findings,
    decide,
    gate_failures,
    overall,
    reasons,
    speed_finding,
)


def test_mcnemar_exact_matches_the_binomial_tail():
    # 1 vs 9 discordant: 2 * P(X <= 1 | n=10, p=1/2) = 2 * 11 / 1024.
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(40, 0) == pytest.approx(2 * 0.5**40)


def test_mcnemar_exact_is_exact_for_many_pairs():
    p = mcnemar_exact(0, 2000)
    assert 0 < p < 1e-300 or p == 0.0  # no overflow, no exception
    assert mcnemar_exact(1000, 1000) == 1.0


def test_paired_correctness_counts_the_discordant_samples():
    current = [True, True, True, False, False]
    candidate = [True, False, False, True, False]
    same = [True, False, False, False, True]
    paired = paired_correctness(current, candidate, same)
    assert (paired.only_current, paired.only_candidate) == (2, 1)
    assert paired.drop_points == pytest.approx(20.0)
    assert paired.agreement == pytest.approx(0.4)
    with pytest.raises(ValueError, match="same number"):
        paired_correctness([True], [True, False], [True])


def test_twenty_point_drop_on_200_samples_fails_naming_the_drop_and_n():
    current = [True] * 160 + [False] * 40
    candidate = [True] * 120 + [False] * 80
    findings = accuracy_findings(paired_correctness(current, candidate, [a == b for a, b in zip(current, candidate)]),
                                 ReleaseLimits())  # fmt: skip
    assert overall(findings) == FAIL
    (reason,) = reasons(findings)
    assert "drop of 20.0 points" in reason
    assert "n=200" in reason
    assert "McNemar exact p=" in reason


def test_a_drop_within_the_limit_passes_and_a_gain_passes():
    # 2 of 200 samples = exactly 1.0 point: at the limit, not beyond it.
    current = [True] * 150 + [False] * 50
    candidate = [True] * 148 + [False] * 52
    assert overall(accuracy_findings(paired_correctness(current, candidate, [True] * 200), ReleaseLimits())) == PASS
    assert overall(accuracy_findings(paired_correctness(candidate, current, [True] * 200), ReleaseLimits())) == PASS


def test_agreement_is_gated_only_when_a_minimum_is_given():
    paired = paired_correctness([True] * 10, [True] * 10, [True] * 8 + [False] * 2)
    assert [finding.part for finding in accuracy_findings(paired, ReleaseLimits())] == ["accuracy"]
    findings = accuracy_findings(paired, ReleaseLimits(min_agreement=0.9))
    assert overall(findings) == FAIL
    assert "agreement between the versions 80.0%" in reasons(findings)[0]


def windows(rng, count, scale, size=200):
    """``count`` windows of ``size`` lognormal latencies (ms) around ``scale``."""
    return [scale * rng.lognormal(0.0, 0.3, size) for _ in range(count)]


#: Side by side (paired windows) and against a baseline from another run (each side drawn alone).
RATIOS = pytest.mark.parametrize("ratio", [paired_ratio, bootstrap_ratio])


@RATIOS
@pytest.mark.parametrize("seed", range(20))
def test_identical_distributions_pass_or_are_inconclusive_never_fail(seed, ratio):
    rng = np.random.default_rng(seed)
    current, candidate = windows(rng, 5, 20.0), windows(rng, 5, 20.0)
    interval = ratio(current, candidate, P95_LATENCY, seed=seed)
    assert speed_finding(interval, 10.0, higher_is_worse=True).verdict in (PASS, INCONCLUSIVE)
    rates = ratio(
        [np.array([rng.normal(100, 5)]) for _ in range(5)],
        [np.array([rng.normal(100, 5)]) for _ in range(5)],
        THROUGHPUT,
        seed=seed,
    )
    assert speed_finding(rates, 10.0, higher_is_worse=False).verdict in (PASS, INCONCLUSIVE)


@RATIOS
def test_twice_the_latency_fails_and_half_the_throughput_fails(ratio):
    rng = np.random.default_rng(1)
    interval = ratio(windows(rng, 5, 20.0), windows(rng, 5, 40.0), P95_LATENCY)
    assert 1.7 < interval.low <= interval.ratio <= interval.high < 2.3
    finding = speed_finding(interval, 10.0, higher_is_worse=True)
    assert finding.verdict == FAIL
    assert "wholly beyond the +10% limit" in finding.reason
    rates = ratio([np.array([100.0 + k]) for k in range(5)], [np.array([50.0 + k]) for k in range(5)], THROUGHPUT)
    assert speed_finding(rates, 10.0, higher_is_worse=False).verdict == FAIL


@RATIOS
def test_a_faster_candidate_passes(ratio):
    rng = np.random.default_rng(2)
    interval = ratio(windows(rng, 6, 20.0), windows(rng, 6, 10.0), P95_LATENCY)
    assert speed_finding(interval, 10.0, higher_is_worse=True).verdict == PASS


def test_pairing_cancels_noise_that_hits_both_versions():
    """Machine load that drifts across the windows hits both versions of a pair: paired resampling
    sees through it, drawing each side on its own does not."""
    rng = np.random.default_rng(3)
    drift = [1.0, 3.0, 1.5, 4.0, 2.0, 1.0]
    current = [level * 20.0 * rng.lognormal(0, 0.1, 200) for level in drift]
    candidate = [level * 21.0 * rng.lognormal(0, 0.1, 200) for level in drift]
    paired = paired_ratio(current, candidate, P95_LATENCY)
    unpaired = bootstrap_ratio(current, candidate, P95_LATENCY)
    assert paired.high - paired.low < (unpaired.high - unpaired.low) / 3
    assert speed_finding(paired, 10.0, higher_is_worse=True).verdict == PASS


def test_a_disturbance_in_one_window_moves_one_pair_not_the_whole_comparison():
    """As measured on Triton (docs/benchmarks.md section 7): another job slowed two current windows
    threefold; pooled, their tail decided the p95 of all ten and hid a candidate 1.7x slower."""
    rng = np.random.default_rng(7)
    current = [20.0 * rng.lognormal(0, 0.1, 150) for _ in range(10)]
    candidate = [34.0 * rng.lognormal(0, 0.1, 150) for _ in range(10)]
    current[3] = current[3] * 3.0
    current[4] = current[4] * 3.0
    paired = paired_ratio(current, candidate, P95_LATENCY)
    pooled = bootstrap_ratio(current, candidate, P95_LATENCY)
    assert pooled.ratio < 1.1
    assert 1.3 < paired.ratio < 1.7
    assert speed_finding(paired, 10.0, higher_is_worse=True).verdict != PASS


def test_paired_ratio_is_the_ratio_of_geometric_means_and_skips_half_empty_pairs():
    current = [np.array([10.0]), np.array([40.0]), np.array([5.0]), np.array([])]
    candidate = [np.array([20.0]), np.array([20.0]), np.array([]), np.array([7.0])]
    interval = paired_ratio(current, candidate, P95_LATENCY)
    assert interval.windows == 2
    assert interval.ratio == pytest.approx(1.0)  # 2.0 and 0.5
    assert (interval.current, interval.candidate) == (pytest.approx(20.0), pytest.approx(20.0))
    # A window that answered nothing is a finite, very bad ratio, not a crash or a NaN.
    stalled = paired_ratio([np.array([50.0])] * 5, [np.array([50.0])] * 4 + [np.array([0.0])], THROUGHPUT)
    assert 0 < stalled.ratio < 0.1 and math.isfinite(stalled.low)
    with pytest.raises(ValueError, match="pair of non-empty windows"):
        paired_ratio([np.array([])], [np.array([1.0])], P95_LATENCY)


def test_pooled_statistics_of_resamples_equal_numpy_on_the_repeated_windows():
    rng = np.random.default_rng(5)
    blocks = [rng.lognormal(k, 0.3, 40 + 7 * k) for k in range(5)]
    for _ in range(20):
        counts = rng.integers(0, 3, (1, 5))
        counts[0, 0] += 1
        pooled = np.concatenate([block for block, times in zip(blocks, counts[0]) for _ in range(times)])
        assert P95_LATENCY.resampled(blocks, counts)[0] == pytest.approx(np.percentile(pooled, 95), rel=1e-12)
        assert THROUGHPUT.resampled(blocks, counts)[0] == pytest.approx(pooled.mean(), rel=1e-12)
        # The trimmed mean (benchmarks/release_statistic.py compares it): a tenth left out at each end,
        # a value straddling a cut counted in part, as the mean of the sorted repeated values would.
        ordered = np.sort(pooled)
        cut = 0.1 * ordered.size
        weights = np.clip(
            np.minimum(np.arange(1, ordered.size + 1), ordered.size - cut) - np.maximum(np.arange(ordered.size), cut),
            0,
            1,
        )
        expected = (weights * ordered).sum() / weights.sum()
        assert TRIMMED_MEAN_LATENCY.resampled(blocks, counts)[0] == pytest.approx(expected, rel=1e-12)


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(4)
    current, candidate = windows(rng, 5, 20.0), windows(rng, 5, 22.0)
    assert bootstrap_ratio(current, candidate, P95_LATENCY) == bootstrap_ratio(current, candidate, P95_LATENCY)


def test_bootstrap_needs_measured_windows():
    with pytest.raises(ValueError, match="at least one non-empty window"):
        bootstrap_ratio([np.array([])], [np.array([1.0])], P95_LATENCY)


def interval(ratio, low, high, windows=5):
    return RatioInterval("p95 latency", 10.0, 10.0 * ratio, ratio, low, high, windows)


def test_straddling_interval_is_inconclusive_and_says_how_many_windows_would_decide():
    finding = speed_finding(interval(1.05, 0.95, 1.15), 10.0, higher_is_worse=True)
    assert finding.verdict == INCONCLUSIVE
    # On the log scale the half-width (0.091) must shrink below the distance to the limit (0.047):
    # by sqrt(n) alone that is 20 windows, but the small-sample widening shrinks too (1.58 -> 1.12).
    assert finding.windows_needed == 11
    assert small_sample_widening(5) / math.sqrt(5) / (small_sample_widening(11) / math.sqrt(11)) > 0.091 / 0.047
    assert "about 11 windows each would decide" in finding.reason


def test_windows_needed_when_the_estimate_sits_on_the_limit_or_already_decides():
    assert windows_needed(interval(1.10, 1.0, 1.2), 1.10) is None
    assert windows_needed(interval(1.5, 1.3, 1.7), 1.10) == 5
    # An estimate just below the limit needs many more windows than one far from it.
    assert windows_needed(interval(1.09, 1.0, 1.2), 1.10) > 10 * windows_needed(interval(1.05, 0.95, 1.15), 1.10)
    assert windows_needed(interval(1.099999, 1.0, 1.2), 1.10) is None  # beyond MAX_WINDOWS_NEEDED
    assert "no number of windows" in speed_finding(interval(1.1, 1.0, 1.2), 10.0, True).reason


def test_overall_verdict_is_the_worst_and_strict_fails_inconclusive():
    assert overall([]) == PASS
    verdicts = [speed_finding(interval(1.0, 0.95, 1.05), 10.0, True), speed_finding(interval(1.05, 0.9, 1.2), 10, True)]
    assert overall(verdicts) == INCONCLUSIVE
    assert reasons(verdicts) == [verdicts[1].reason]
    assert gate_failures(INCONCLUSIVE, reasons(verdicts), strict=False, what="triton release") == []
    (line,) = gate_failures(INCONCLUSIVE, reasons(verdicts), strict=True, what="triton release")
    assert line.startswith("triton release: inconclusive [--serving-release-strict]: p95 latency")
    assert gate_failures(PASS, ["x"], strict=True, what="w") == []
    assert gate_failures(FAIL, ["a", "b"], strict=False, what="w") == ["w: fail: a", "w: fail: b"]


def test_small_sample_widening_follows_student_t():
    assert small_sample_widening(5) == pytest.approx(2.776 / 1.96 * math.sqrt(5 / 4), rel=1e-3)
    assert small_sample_widening(2) > small_sample_widening(5) > small_sample_widening(30) > 1.0
    assert small_sample_widening(1000) == pytest.approx(1.0, abs=3e-3)
    assert small_sample_widening(1) == math.inf
    # A stricter confidence widens more: the t distribution's tail is heavier than the normal's.
    assert small_sample_widening(10, 0.99) > small_sample_widening(10, 0.95)


@pytest.mark.parametrize(
    "probability, degrees, table",
    [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 9, 2.262), (0.975, 29, 2.045),
     (0.99, 4, 3.747), (0.99, 9, 2.821), (0.995, 9, 3.250), (0.995, 39, 2.708)],
)  # fmt: skip
def test_the_t_quantile_matches_the_tables(probability, degrees, table):
    assert student_t_quantile(probability, degrees) == pytest.approx(table, rel=3e-3)


@RATIOS
def test_one_window_per_side_gives_an_unbounded_interval(ratio):
    one = ratio([np.array([10.0, 11.0])], [np.array([30.0, 31.0])], P95_LATENCY)
    assert one.high == math.inf
    assert speed_finding(one, 10.0, higher_is_worse=True).verdict == INCONCLUSIVE


def test_time_blocks_keep_order_and_cover_everything():
    blocks = time_blocks(np.arange(10.0), 3)
    assert [block.tolist() for block in blocks] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert len(time_blocks(np.arange(2.0), 5)) == 2


def test_decide_writes_the_release_shape_and_the_worst_verdict():
    rng = np.random.default_rng(6)
    latency = paired_ratio(windows(rng, 5, 20.0), windows(rng, 5, 40.0), P95_LATENCY)
    paired = paired_correctness([True] * 10, [True] * 10, [True] * 10)
    record = decide({"name": "a"}, {"name": "b"}, paired, latency, None, ReleaseLimits(), {"windows": []})
    assert record.verdict == FAIL
    assert record.accuracy["verdict"] == PASS and record.accuracy["drop_points"] == 0
    assert record.latency["p95"]["verdict"] == FAIL and "throughput" not in record.latency
    assert record.reasons == [record.reasons[0]] and record.reasons[0].startswith("p95 latency")
    assert set(asdict(record)) == {"verdict", "reasons", "current", "candidate", "accuracy", "latency"}
    assert decide({}, {}, None, None, None, ReleaseLimits()).accuracy == {"measured": False}


def answers(sent, latency, ok, version):
    return Answers(np.asarray(sent, float), np.asarray(latency, float), np.asarray(ok, bool), version)


def test_rollout_counts_failures_stale_answers_and_the_switch_window():
    # Steady on v1 (0-4 s), switch from 5 to 6 s, grace 1 s, then v2; v1 answers a request sent at 8 s
    # (stale) and, at 9 s, one sent at 5.8 s (queued before the switch completed: drained, not stale).
    sent = [0.5, 1.5, 2.5, 3.5, 4.5, 5.2, 5.8, 6.5, 7.5, 8.0, 9.5]
    latency = [10, 10, 10, 10, 10, 300, 3200, 10, 10, 100, 10]
    ok = [True] * 10 + [False]
    version = ["1"] * 7 + ["2", "2", "1", ""]
    record = summarize_rollout(
        answers(sent, latency, ok, version), switch_started_s=5.0, switch_done_s=6.0, old_version="1",
        grace_s=1.0, rate=1.0,
    )  # fmt: skip
    assert (record.requests, record.failed, record.stale_answers, record.switch_s) == (11, 1, 1, 1.0)
    assert record.p99_switch_ms == pytest.approx(np.percentile([300, 3200, 10], 99))
    assert record.p99_steady_ms == pytest.approx(10.0)
    problems = rollout_problems(record, "triton")
    assert any("1 of 11 requests failed" in line for line in problems)
    assert any("1 answers from the old version to requests sent more than 1 s after" in line for line in problems)
    seconds = record.timeline
    assert [entry["sent"] for entry in seconds] == [1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert seconds[5]["versions"] == {"1": 1.0} and seconds[8]["versions"] == {"1": 1.0}
    assert seconds[9]["failures"] == 1 and seconds[9]["p99_ms"] is None


def test_a_clean_rollout_has_no_problems():
    record = summarize_rollout(
        answers([0.1, 1.1, 2.1], [5, 5, 5], [True] * 3, ["1", "2", "2"]), switch_started_s=1.0, switch_done_s=1.5,
        old_version="1", grace_s=2.0, rate=1.0,
    )  # fmt: skip
    assert rollout_problems(record, "triton") == []
