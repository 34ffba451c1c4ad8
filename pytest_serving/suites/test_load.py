"""Load: the built-in smoke level per target, the study's sweeps under --serving-load=sweep, and a
soak phase gated on memory growth under --serving-soak=SECONDS."""

from __future__ import annotations

import pytest

from pytest_serving.load.resources import DEFAULT_MEMORY_GROWTH_MB_PER_1K

pytestmark = [pytest.mark.serving]


# At least 180 requests (the thirds that judge stability hold 60 each), after at least 5 s of warm-up:
# KServe V1's first seconds after a 3 s warm-up that had settled still ran 20 % slower (docs/benchmarks.md 9.2).
@pytest.mark.serving_load_suite("smoke")
@pytest.mark.serving_load(
    users=4,
    duration=15,
    min_requests=180,
    max_duration=45,
    warmup=5,
    max_warmup=10,
    max_failure_rate=0.0,
    p95_ms=10_000,
)
def test_smoke(serving_load):
    stats = serving_load()
    assert stats.n > 0, "the smoke phase measured no request"


@pytest.mark.serving_load_suite("sweep")
@pytest.mark.serving_load(max_failure_rate=0.01)
def test_sweep(serving_load, serving_sweep_scenario, serving_settings):
    arrival = serving_settings.load.sweep_arrival
    # Open loop: the template's rate is a placeholder, every level sets its own.
    open_loop = {} if arrival == "users" else {"rate": 1.0, "arrival": arrival}
    result = serving_load.sweep(scenario=serving_sweep_scenario, **open_loop)
    unmeasured = [level.level_key for level in result.levels if level.n == 0]
    assert not unmeasured, f"levels without a single measured request: {unmeasured}"


@pytest.mark.serving_load_suite("soak")
@pytest.mark.serving_load(users=4, warmup=10, max_failure_rate=0.0)
def test_soak(serving_load, serving_settings):
    """A long steady phase: a handler that keeps memory per request grows with every answer. The ini's
    and the budgets file's max_memory_growth_mb_per_1k override the default growth budget."""
    soak = serving_settings.load.soak
    stats = serving_load(duration=soak, max_memory_growth_mb_per_1k=DEFAULT_MEMORY_GROWTH_MB_PER_1K)
    assert stats.n > 0, "the soak phase measured no request"
