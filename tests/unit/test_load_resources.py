"""Resource figures of a load phase: peak memory, mean CPU, memory growth per 1000 requests, budgets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pytest_serving.containers.resources import cpu_time_s, memory_in_use_mb
from pytest_serving.load.budgets import Budget, BudgetContext, check_budget, parse_budget_lines
from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.resources import ResourceSample, answered_by, lifetime_resources, phase_resources
from pytest_serving.load.stats import RawSamples, summarize

OPENED = 1_000_000.0


def steady_phase(rate: float, duration: float, leak_mb_per_request: float, base_mb: float = 200.0):
    """Readings every 0.5 s of a server answering ``rate`` requests/s that keeps ``leak`` MB per answer,
    from a 2 s warm-up on; and the measured windows' answer rates."""
    times = np.arange(-2.0, duration + 1e-9, 0.5)
    answered = np.clip(times, 0, None) * rate
    readings = [ResourceSample(OPENED + t, base_mb + leak_mb_per_request * n, 1.5) for t, n in zip(times, answered)]
    return readings, [rate] * int(duration)


@pytest.mark.parametrize(("leak", "growth"), [(0.0, 0.0), (2.0, 2000.0), (0.01, 10.0)])
def test_growth_per_1k_is_the_slope_of_memory_against_requests(leak, growth):
    readings, rates = steady_phase(rate=40.0, duration=10.0, leak_mb_per_request=leak)
    figures = phase_resources(readings, OPENED, 2.0, 10.0, 1.0, rates, startup_s=12.5)
    assert figures.memory_growth_mb_per_1k == pytest.approx(growth, abs=1e-6)
    assert figures.growth_requests == 400
    assert figures.peak_memory_mb == pytest.approx(200.0 + leak * 400)
    assert figures.mean_cpu == pytest.approx(1.5)
    assert figures.startup_s == 12.5
    assert figures.timeline[0][0] == -2.0 and len(figures.timeline) == len(readings)


def test_growth_follows_requests_not_time():
    """Twice the rate in the second half: a per-request leak is still one slope."""
    rates = [20.0] * 5 + [40.0] * 5
    times = np.arange(0.0, 10.0 + 1e-9, 0.5)
    answered = answered_by(times, 1.0, rates)
    readings = [ResourceSample(OPENED + t, 100.0 + 0.5 * n, 1.0) for t, n in zip(times, answered)]
    assert phase_resources(readings, OPENED, 0.0, 10.0, 1.0, rates).memory_growth_mb_per_1k == pytest.approx(500.0)


def test_too_few_readings_leave_growth_unmeasured_and_a_growth_budget_says_so():
    readings = [ResourceSample(OPENED + 0.5, 100.0, 1.0)]
    figures = phase_resources(readings, OPENED, 0.0, 10.0, 1.0, [10.0] * 10)
    assert figures.memory_growth_mb_per_1k is None
    stats = _stats()
    (line,) = check_budget(
        replace(stats, resources=figures), Budget(max_memory_growth_mb_per_1k=10), BudgetContext("triton")
    )
    assert "memory growth unmeasured (1 readings over 0 requests), budget 10 MB per 1000 requests" in line


def _stats():
    samples = RawSamples(
        offset_s=np.linspace(0, 9.9, 100),
        latency_ms=np.full(100, 5.0),
        code=np.full(100, 200, dtype=np.int32),
        completed_s=np.linspace(0, 9.9, 100),
    )
    return summarize(samples, LoadPhase(users=1, duration=10.0))


def test_resource_budgets_name_the_figure_and_the_limit():
    readings, rates = steady_phase(rate=40.0, duration=10.0, leak_mb_per_request=2.0)
    stats = replace(_stats(), resources=phase_resources(readings, OPENED, 2.0, 10.0, 1.0, rates, startup_s=30.0))
    budget = Budget(max_memory_mb=500, max_memory_growth_mb_per_1k=10, max_startup_s=60)
    lines = check_budget(stats, budget, BudgetContext("triton"))
    assert len(lines) == 2
    assert "peak memory 1000.0 MB exceeds budget 500 MB" in lines[0]
    assert "memory growth 2000.0 MB per 1000 requests, 99% interval 2000.0 to 2000.0 (fit over 400 requests" in lines[1]
    assert lines[1].endswith("exceeds budget 10 MB per 1000 requests")
    assert check_budget(stats, Budget(max_startup_s=20), BudgetContext("triton"))[-1].endswith(
        "cold start 30.0 s exceeds budget 20 s"
    )


def test_resource_budgets_without_readings_are_unmeasured_not_passed():
    (line,) = check_budget(_stats(), Budget(max_memory_mb=100), BudgetContext("triton"))
    assert "peak memory unmeasured (no container readings (server not started by pytest-serving))" in line


def test_resource_budgets_parse_from_ini_lines():
    table = parse_budget_lines(["triton.max_memory_mb = 800", "max_memory_growth_mb_per_1k = 5", "max_startup_s=90"])
    assert table["triton"] == Budget(max_memory_mb=800)
    assert table["*"] == Budget(max_memory_growth_mb_per_1k=5, max_startup_s=90)


def test_docker_readings_exclude_the_page_cache_on_cgroup_v1_and_v2():
    mb = 1024 * 1024
    v2 = {"memory_stats": {"usage": 300 * mb, "stats": {"inactive_file": 100 * mb}}}
    v1 = {"memory_stats": {"usage": 300 * mb, "stats": {"total_inactive_file": 50 * mb}}}
    assert (memory_in_use_mb(v2), memory_in_use_mb(v1), memory_in_use_mb({})) == (200.0, 250.0, None)
    assert cpu_time_s({"cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}}}) == 2.5


def test_lifetime_timeline_is_thinned_and_keeps_the_peak_figure():
    readings = [ResourceSample(OPENED + i, 100.0 + (i == 777) * 50, 0.5) for i in range(1500)]
    figures = lifetime_resources(readings, startup_s=8.0)
    assert figures["peak_memory_mb"] == 150.0 and figures["startup_s"] == 8.0
    assert len(figures["timeline"]) <= 600


def test_a_few_mb_of_allocator_steps_in_a_short_phase_are_not_judged_as_a_leak():
    """Measured on a good Triton: +2 MB within a 10 s phase of 30 requests reads as 75 MB per 1000."""
    times = np.arange(0.0, 10.0 + 1e-9, 0.5)
    readings = [ResourceSample(OPENED + t, 128.0 + 2.0 * (t > 5), 0.2) for t in times]
    figures = phase_resources(readings, OPENED, 0.0, 10.0, 1.0, [3.0] * 10)
    assert figures.memory_growth_mb_per_1k > 50
    stats = replace(_stats(), resources=figures)
    assert check_budget(stats, Budget(max_memory_growth_mb_per_1k=50), BudgetContext("triton")) == []
    leaking, rates = steady_phase(rate=3.0, duration=10.0, leak_mb_per_request=2.0)
    stats = replace(_stats(), resources=phase_resources(leaking, OPENED, 2.0, 10.0, 1.0, rates))
    assert check_budget(stats, Budget(max_memory_growth_mb_per_1k=50), BudgetContext("triton"))


def noisy_phase(rate: float, leak_mb_per_request: float, seed: int, duration: float = 15.0, sawtooth_mb: float = 0.0):
    """Readings every 0.5 s with allocator noise (up to three steps of 2 to 2.5 MB at random times, as a
    good Triton showed) and, optionally, a garbage collector's saw-tooth of ``sawtooth_mb`` every 4 s,
    over a per-request leak."""
    rng = np.random.default_rng(seed)
    times = np.arange(-3.0, duration + 1e-9, 0.5)
    answered = np.clip(times, 0, None) * rate
    step_times = rng.uniform(-3.0, duration, rng.integers(0, 4))
    steps = sum(rng.uniform(2.0, 2.5) * (times > at) for at in step_times) + np.zeros(times.size)
    saw = sawtooth_mb * ((times % 4.0) / 4.0)
    memory = 190.0 + steps + saw + rng.normal(0, 0.3, times.size) + leak_mb_per_request * answered
    readings = [ResourceSample(OPENED + t, float(m), 1.0) for t, m in zip(times, memory)]
    return phase_resources(readings, OPENED, 3.0, duration, 1.0, [rate] * int(duration))


def test_every_phase_fails_a_leak_whose_whole_interval_lies_above_the_default_budget():
    """No budget set (a smoke phase): a handler keeping 2 MiB per request fails, with growth and interval."""
    figures = noisy_phase(rate=20.0, leak_mb_per_request=2.0, seed=1)
    low, high = figures.memory_growth_interval
    assert 50 < low < high
    (line,) = check_budget(replace(_stats(), resources=figures), Budget(), BudgetContext("triton"))
    assert "memory growth" in line and "99% interval" in line and "exceeds budget 50 MB per 1000 requests" in line


@pytest.mark.parametrize("seed", range(200))
def test_allocator_steps_and_a_saw_tooth_never_fail_the_default_gate(seed):
    """A good server's memory wanders (allocator arenas, a JVM's collections) without a per-request leak."""
    for rate, sawtooth in ((20.0, 0.0), (6.0, 30.0), (40.0, 60.0)):
        figures = noisy_phase(rate=rate, leak_mb_per_request=0.0, seed=seed, sawtooth_mb=sawtooth)
        assert check_budget(replace(_stats(), resources=figures), Budget(), BudgetContext("x")) == [], figures


def test_a_growth_interval_straddling_the_budget_passes_the_gate():
    figures = noisy_phase(rate=2.0, leak_mb_per_request=0.06, seed=0, duration=10.0)
    low, high = figures.memory_growth_interval
    assert low < 50 < high
    assert check_budget(replace(_stats(), resources=figures), Budget(), BudgetContext("x")) == []


def test_without_container_readings_the_default_growth_gate_says_nothing():
    assert check_budget(_stats(), Budget(), BudgetContext("x")) == []


def test_a_jvm_servers_heap_growth_within_its_swing_is_not_a_leak_but_a_handler_leak_is():
    """MMS's unmodified smoke phase grew 38 MB over 251 requests, tightly linear (its heap growing)."""
    jvm = noisy_phase(rate=17.0, leak_mb_per_request=0.15, seed=0)
    assert jvm.memory_growth_interval[0] > 50
    assert check_budget(replace(_stats(), resources=jvm), Budget(), BudgetContext("mms", memory_swing_mb=100.0)) == []
    assert check_budget(replace(_stats(), resources=jvm), Budget(), BudgetContext("triton"))  # 16 MB: a leak there
    leaking = noisy_phase(rate=17.0, leak_mb_per_request=2.0, seed=0)
    assert check_budget(replace(_stats(), resources=leaking), Budget(), BudgetContext("mms", memory_swing_mb=100.0))
