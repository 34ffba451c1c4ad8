import json

import numpy as np
import pytest

from pytest_serving.load.budgets import (
    ALL_TARGETS,
    Budget,
    BudgetContext,
    BudgetError,
    check_budget,
    compare_to_baseline,
    find_baseline,
    load_budget_file,
    parse_budget_lines,
    resolve_budget,
    verdict,
)
from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.stats import RawSamples, summarize

CONTEXT = BudgetContext(target="triton", image="pytest-serving/triton:test")


def phase_stats(latency_ms, phase=None, code=None):
    phase = phase or LoadPhase(users=10, duration=1.0)
    latency_ms = np.asarray(latency_ms, dtype=np.float64)
    codes = np.full(latency_ms.size, 200, dtype=np.int32) if code is None else np.asarray(code, dtype=np.int32)
    offsets = np.linspace(0, 0.9, latency_ms.size)
    raw = RawSamples(offsets, latency_ms, codes, completed_s=offsets)
    return summarize(raw, phase)


def test_ini_lines_give_general_and_per_target_budgets():
    table = parse_budget_lines(
        """
        # general limits
        p95_ms = 1000
        max_failure_rate = 0.01
        triton.p95_ms = 800   # Triton is faster
        torchserve.min_rps=25
        """
    )
    assert table[ALL_TARGETS] == Budget(p95_ms=1000.0, max_failure_rate=0.01)
    assert table["triton"] == Budget(p95_ms=800.0)
    assert table["torchserve"] == Budget(min_rps=25.0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("triton.p95 = 800", "unknown budget 'p95'"),
        ("triton.p95_ms = fast", "not a number"),
        ("triton.p95_ms 800", "expected '[target.]field = value'"),
        ("max_failure_rate = 5", "must be <= 1"),
        ("p99_ms = -1", ">= 0"),
    ],
)
def test_bad_ini_lines_say_what_is_wrong(line, message):
    with pytest.raises(BudgetError, match="line 2") as error:
        parse_budget_lines(["p50_ms = 100", line])
    assert message in str(error.value)


def test_budget_files_in_toml_and_json(tmp_path):
    toml_file = tmp_path / "budgets.toml"
    toml_file.write_text("p99_ms = 2000\n\n[triton]\np95_ms = 700\nmin_rps = 40\n")
    json_file = tmp_path / "budgets.json"
    json_file.write_text(json.dumps({"max_ms": 5000, "kserve": {"p50_ms": 90}}))
    assert load_budget_file(toml_file) == {
        ALL_TARGETS: Budget(p99_ms=2000.0),
        "triton": Budget(p95_ms=700.0, min_rps=40.0),
    }
    assert load_budget_file(json_file) == {ALL_TARGETS: Budget(max_ms=5000.0), "kserve": Budget(p50_ms=90.0)}


def test_budget_file_with_unknown_field_is_refused(tmp_path):
    path = tmp_path / "budgets.json"
    path.write_text(json.dumps({"triton": {"p95": 1}}))
    with pytest.raises(BudgetError, match=r"\[triton\]: unknown budget 'p95'"):
        load_budget_file(path)


def test_target_limits_beat_general_ones_and_later_sources_win():
    ini = parse_budget_lines(["p95_ms = 1000", "p50_ms = 300", "triton.p95_ms = 800", "triton.min_rps = 20"])
    file = {ALL_TARGETS: Budget(p95_ms=900.0, max_ms=3000.0), "triton": Budget(min_rps=30.0)}
    assert resolve_budget("triton", ini, file) == Budget(p50_ms=300.0, p95_ms=800.0, max_ms=3000.0, min_rps=30.0)
    assert resolve_budget("kserve", ini, file) == Budget(p50_ms=300.0, p95_ms=900.0, max_ms=3000.0)
    assert resolve_budget("kserve") == Budget()


def test_every_violated_budget_gets_one_line_with_its_context():
    stats = phase_stats(np.linspace(100.0, 1000.0, 100), LoadPhase(users=10, duration=1.0, stability_windows=1))
    assert stats.stable
    violations = check_budget(stats, Budget(p50_ms=1000.0, p95_ms=800.0, max_ms=900.0, min_rps=200.0), CONTEXT)
    assert len(violations) == 3
    p95_line = next(line for line in violations if " p95 " in line)
    assert p95_line == (
        f"triton [pytest-serving/triton:test] at users=10, n=100: p95 {stats.latency.p95:.1f} ms exceeds budget 800 ms"
    )
    assert any("max 1000.0 ms exceeds budget 900 ms" in line for line in violations)
    assert any("throughput 100.0 rps below budget 200 rps" in line for line in violations)


def test_budgets_within_limits_give_no_lines():
    stats = phase_stats([10.0, 20.0, 30.0])
    assert check_budget(stats, Budget(p99_ms=31.0, max_failure_rate=0.0, min_rps=3.0), CONTEXT) == []


def test_failure_rate_and_open_loop_context_in_the_message():
    stats = phase_stats([10.0] * 4, LoadPhase(rate=4.0, arrival="constant", duration=1.0), code=[200, 200, 200, 503])
    (line,) = check_budget(stats, Budget(max_failure_rate=0.1), CONTEXT)
    assert "at rate=4/s constant, n=4: failure rate 25.00% exceeds budget 10.00%" in line
    assert "'503': 1" in line


def test_latency_budget_fails_when_nothing_succeeded():
    stats = phase_stats([10.0, 10.0], code=[500, 500])
    (line,) = check_budget(stats, Budget(p95_ms=100.0), CONTEXT)
    assert "p95 unmeasured (no successful request), budget 100 ms" in line


def baseline_with(p95_ms, rps, level="users=10"):
    """A baseline entry of the old format (no latency sample): point figures only."""
    entry = phase_stats([1.0]).to_dict() | {"level": level, "rps": rps}
    entry["latency_ms"]["p95"] = p95_ms
    del entry["latency_sample_ms"]
    return {"targets": {"triton": {"load": [entry]}}}


def verdicts(findings):
    return [(finding.part, finding.verdict) for finding in findings]


def test_old_baselines_get_the_point_comparison_and_say_so():
    stats = phase_stats([100.0] * 10)  # p95 100 ms, 10 rps
    findings = compare_to_baseline(stats, baseline_with(80.0, 10.0), "triton", "users=10", 20.0)
    assert verdicts(findings) == [("p95 latency", "fail"), ("throughput", "pass")]
    assert findings[0].reason.startswith(
        "triton at users=10, n=10, against the baseline: p95 100.0 ms is 25.0% above baseline 80.0 ms (limit 20%)"
    )
    assert "point comparison" in findings[0].reason
    assert verdicts(compare_to_baseline(stats, baseline_with(85.0, 10.0), "triton", "users=10", 20.0)) == [
        ("p95 latency", "pass"),
        ("throughput", "pass"),
    ]
    (_, throughput) = compare_to_baseline(stats, baseline_with(100.0, 20.0), "triton", "users=10", 20.0)
    assert throughput.verdict == "fail"
    assert "throughput 10.0 rps is 50.0% below baseline 20.0 rps (limit 20%)" in throughput.reason


def lognormal_phase(seed, scale, n=2000, duration=10.0):
    """A phase of ``n`` requests spread over ``duration`` s with lognormal latencies around ``scale`` ms."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0, duration, n))
    raw = RawSamples(offsets, scale * rng.lognormal(0, 0.3, n), np.full(n, 200, np.int32), completed_s=offsets)
    return summarize(raw, LoadPhase(users=10, duration=duration))


def as_baseline(stats):
    return {"targets": {"triton": {"load": [stats.to_dict()]}}}


def test_phases_keep_a_bounded_time_ordered_latency_sample():
    stats = lognormal_phase(0, 20.0, n=5000)
    assert len(stats.latency_sample_ms) == 2000
    assert np.percentile(stats.latency_sample_ms, 95) == pytest.approx(stats.latency.p95, rel=0.05)
    assert len(phase_stats([3.0, 1.0, 2.0]).latency_sample_ms) == 3


@pytest.mark.parametrize("seed", range(10))
def test_the_same_distribution_against_the_baseline_never_fails(seed):
    findings = compare_to_baseline(
        lognormal_phase(100 + seed, 20.0), as_baseline(lognormal_phase(seed, 20.0)), "triton", "users=10", 10.0
    )
    assert {finding.verdict for finding in findings} <= {"pass", "inconclusive"}


def test_twice_the_latency_of_the_baseline_fails_with_its_interval():
    findings = compare_to_baseline(
        lognormal_phase(1, 40.0), as_baseline(lognormal_phase(0, 20.0)), "triton", "users=10", 10.0
    )
    p95 = findings[0]
    assert p95.verdict == "fail"
    assert "p95 latency: now/baseline 1.9" in p95.reason and "95% CI" in p95.reason


def test_a_noisy_small_difference_is_inconclusive_not_a_failure():
    """Few requests, wide spread, a shift near the limit: the interval straddles it."""
    now = lognormal_phase(3, 22.0, n=60)
    findings = compare_to_baseline(now, as_baseline(lognormal_phase(2, 20.0, n=60)), "triton", "users=10", 10.0)
    assert findings[0].verdict == "inconclusive"
    assert "windows each would decide" in findings[0].reason or "no number of windows" in findings[0].reason


def test_other_levels_and_targets_are_not_compared():
    stats = phase_stats([100.0] * 10)
    baseline = baseline_with(10.0, 100.0, level="users=20")
    assert find_baseline(baseline, "triton", "users=10") is None
    assert compare_to_baseline(stats, baseline, "triton", "users=10", 5.0) == []
    assert compare_to_baseline(stats, baseline, "kserve", "users=20", 5.0) == []
    assert len(compare_to_baseline(stats, baseline, "triton", "users=20", 5.0)) == 2


def test_an_unstable_phase_says_so_in_its_violations_and_its_verdict():
    unstable = phase_stats(np.linspace(100.0, 1000.0, 300))  # slower and slower: each third of the phase
    assert not unstable.stable
    budget = Budget(p95_ms=800.0)
    (line,) = check_budget(unstable, budget, CONTEXT)
    note = "unstable: over the last 3 windows of 0.333 s: p50 265.6-884.1 ms beyond ±10% (±54.5%)"
    assert f"exceeds budget 800 ms [{note}, rps" in line
    assert verdict(unstable, budget, [line]).startswith(f"fail (1 violation); {note}")
    assert verdict(unstable, Budget(p95_ms=5000.0), []).startswith(f"pass; {note}")
    # Without timing limits the windows' stability judges nothing.
    assert verdict(unstable, Budget(max_memory_mb=100.0), []) == "pass"
    stable = phase_stats(np.full(100, 5.0), LoadPhase(users=10, duration=1.0, stability_windows=1))
    assert verdict(stable, budget, []) == "pass"
