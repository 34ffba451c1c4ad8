from contextlib import contextmanager

import numpy as np
import pytest

from pytest_serving.load.budgets import compare_to_baseline
from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.stats import RawSamples, summarize
from pytest_serving.load.sweep import run_sweep
from pytest_serving.protocols.base import HttpRequest

REQUESTS = [HttpRequest("GET", "/")]


class Servers:
    """Counts boots; each server's URL names its boot."""

    def __init__(self):
        self.booted = 0
        self.running = 0

    @contextmanager
    def start(self):
        self.booted += 1
        self.running += 1
        try:
            yield f"http://127.0.0.1:{8000 + self.booted}"
        finally:
            self.running -= 1


class ScriptedRunner:
    """Answers each phase with samples whose median is the next scripted latency."""

    def __init__(self, medians):
        self.medians = iter(medians)
        self.calls = []

    def __call__(self, base_url, requests, phase, *, started_by_plugin=False, allow_remote=False):
        self.calls.append((base_url, phase, started_by_plugin))
        median = next(self.medians)
        latencies = np.array([median - 1.0, median, median + 1.0])
        offsets = np.array([0.1, 0.2, 0.3])
        raw = RawSamples(offsets, latencies, np.full(3, 200, dtype=np.int32), completed_s=offsets)
        return summarize(raw, phase)


def test_warm_sweep_boots_one_server_and_takes_median_of_repeat_medians():
    servers, runner = Servers(), ScriptedRunner([10, 30, 20, 50, 40, 45])
    result = run_sweep(REQUESTS, servers.start, levels=[5, 10], duration=1.0, warmup=0.5, repeats=3, run=runner)
    assert servers.booted == 1 and servers.running == 0
    assert {url for url, _, _ in runner.calls} == {"http://127.0.0.1:8001"}
    assert [phase.users for _, phase, _ in runner.calls] == [5, 5, 5, 10, 10, 10]
    assert all(phase.duration == 1.0 and phase.warmup == 0.5 for _, phase, _ in runner.calls)
    assert [level.p50_ms for level in result.levels] == [20.0, 45.0]
    assert [len(level.repeats) for level in result.levels] == [3, 3]
    document = result.to_dict()
    assert document["levels"][1]["level"] == "users=10"
    assert len(document["levels"][1]["repeats"]) == 3


def test_fresh_sweep_boots_a_server_per_measurement():
    servers, runner = Servers(), ScriptedRunner([1.0] * 4)
    run_sweep(REQUESTS, servers.start, levels=[1, 2], scenario="fresh", repeats=2, run=runner, started_by_plugin=True)
    assert servers.booted == 4 and servers.running == 0
    assert len({url for url, _, _ in runner.calls}) == 4
    assert all(started for _, _, started in runner.calls)


def test_open_loop_template_sweeps_rates():
    runner = ScriptedRunner([5.0, 6.0])
    template = LoadPhase(rate=1.0, arrival="constant", workers=2)
    result = run_sweep(REQUESTS, Servers().start, levels=[20, 40], template=template, run=runner)
    assert result.levels_are == "rate"
    assert [(phase.rate, phase.arrival, phase.workers) for _, phase, _ in runner.calls] == [
        (20.0, "constant", 2),
        (40.0, "constant", 2),
    ]


def test_sweep_level_feeds_the_regression_gate():
    before = run_sweep(REQUESTS, Servers().start, levels=[10], repeats=3, run=ScriptedRunner([5, 6, 5.5])).levels[0]
    level = run_sweep(REQUESTS, Servers().start, levels=[10], repeats=3, run=ScriptedRunner([10, 12, 11])).levels[0]
    baseline = {"targets": {"triton": {"load": [before.to_dict()]}}}
    p95, _ = compare_to_baseline(level, baseline, "triton", level.level_key, 10.0)
    assert p95.verdict == "fail"
    assert p95.reason.startswith("triton at users=10, n=9, against the baseline: p95 latency: now/baseline")


@pytest.mark.parametrize("options", [{"scenario": "lukewarm"}, {"repeats": 0}, {"levels": []}])
def test_bad_sweeps_are_refused_before_booting(options):
    servers = Servers()
    with pytest.raises(ValueError):
        run_sweep(REQUESTS, servers.start, run=ScriptedRunner([]), **options)
    assert servers.booted == 0
