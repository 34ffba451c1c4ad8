import numpy as np
import pytest

from pytest_serving.load.phase import LoadPhase, RunPlan, arrival_offsets, split_address
from pytest_serving.protocols.base import HttpRequest


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"users": 4, "rate": 10.0},
        {"users": 0},
        {"users": 2, "workers": 3},
        {"rate": 0.0},
        {"rate": 10.0, "arrival": "bursty"},
        {"users": 1, "duration": 0},
        {"users": 1, "warmup": -1},
        {"rate": 10.0, "workers": 4, "max_in_flight": 2},
    ],
)
def test_invalid_phases_are_refused(options):
    with pytest.raises(ValueError):
        LoadPhase(**options)


def test_level_key_names_the_load():
    assert LoadPhase(users=10).level_key == "users=10"
    assert LoadPhase(rate=12.5).level_key == "rate=12.5"


def test_default_deadline_covers_the_phase_and_a_slow_request():
    phase = LoadPhase(users=1, warmup=2, duration=10, request_timeout=30)
    assert phase.deadline_s > 42
    assert LoadPhase(users=1, timeout=5).deadline_s == 5


def test_constant_arrivals_tick_at_the_rate():
    offsets = arrival_offsets(50.0, "constant", span_s=2.0, seed=0)
    assert offsets.size == 100
    assert np.allclose(np.diff(offsets), 0.02)
    assert offsets[-1] < 2.0


def test_constant_shares_of_processes_interleave_into_the_whole_schedule():
    whole = arrival_offsets(30.0, "constant", span_s=3.0, seed=0)
    shares = [arrival_offsets(30.0, "constant", 3.0, 0, process_index=i, process_count=3) for i in range(3)]
    assert np.allclose(np.sort(np.concatenate(shares)), whole)


def test_poisson_arrivals_are_seeded_and_average_the_rate():
    offsets = arrival_offsets(200.0, "poisson", span_s=100.0, seed=1)
    assert np.array_equal(offsets, arrival_offsets(200.0, "poisson", span_s=100.0, seed=1))
    assert not np.array_equal(offsets[:50], arrival_offsets(200.0, "poisson", span_s=100.0, seed=2)[:50])
    assert offsets.size == pytest.approx(20_000, rel=0.03)
    assert np.all(np.diff(offsets) > 0) and offsets[-1] < 100.0
    gaps = np.diff(offsets)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential gaps


def test_poisson_shares_differ_between_processes():
    first = arrival_offsets(100.0, "poisson", 10.0, seed=3, process_index=0, process_count=2)
    second = arrival_offsets(100.0, "poisson", 10.0, seed=3, process_index=1, process_count=2)
    assert first.size == pytest.approx(500, rel=0.15)
    assert not np.array_equal(first[:20], second[:20])


def test_run_plan_round_trips_binary_bodies(tmp_path):
    requests = (
        HttpRequest("POST", "/v2/models/m/infer", bytes(range(256)), {"Content-Type": "application/octet-stream"}),
        HttpRequest("GET", "/v2/health/ready"),
    )
    plan = RunPlan(LoadPhase(rate=5.0, arrival="constant", workers=2), requests, str(tmp_path))
    plan.write(tmp_path / "plan.json")
    assert RunPlan.read(tmp_path / "plan.json") == plan


@pytest.mark.parametrize(
    "options",
    [
        {"users": 2, "min_requests": 100},  # no maximum
        {"users": 2, "min_requests": 100, "max_duration": 5.0, "duration": 10.0},  # maximum below duration
        {"rate": 10.0, "min_requests": 100, "max_duration": 30.0},  # open loop: its schedule is fixed
        {"users": 2, "workers": 2, "min_requests": 100, "max_duration": 30.0},  # one process decides
        {"users": 2, "min_requests": 0, "max_duration": 30.0},
    ],
)
def test_a_minimum_of_requests_needs_a_bound_and_one_closed_loop_process(options):
    with pytest.raises(ValueError):
        LoadPhase(**options)


def test_a_growing_window_extends_the_deadline():
    phase = LoadPhase(users=2, duration=10.0, min_requests=100, max_duration=40.0)
    assert phase.longest_duration == 40.0
    assert phase.deadline_s == LoadPhase(users=2, duration=40.0).deadline_s


def test_merged_poisson_shares_are_the_poisson_stream_asked_for():
    shares = [arrival_offsets(300.0, "poisson", 60.0, seed=4, process_index=i, process_count=3) for i in range(3)]
    merged = np.sort(np.concatenate(shares))
    assert merged.size == pytest.approx(18_000, rel=0.03)
    gaps = np.diff(merged)
    assert gaps.mean() == pytest.approx(1 / 300.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # still exponential gaps, not 3 interleaved


def test_remote_workers_count_as_processes_and_need_a_share_each():
    phase = LoadPhase(rate=30.0, workers=1, remote_workers=2)
    assert phase.distributed and phase.process_count == 3
    assert LoadPhase(users=3, remote_workers=3).process_count == 3
    with pytest.raises(ValueError, match="one per worker"):
        LoadPhase(users=2, remote_workers=3)
    with pytest.raises(ValueError, match="max_warmup"):
        LoadPhase(users=2, remote_workers=1, max_warmup=10)
    assert LoadPhase(users=1, remote_workers=1, worker_timeout=30).deadline_s > LoadPhase(users=1).deadline_s + 29


@pytest.mark.parametrize("address", ["5557", "host:", ":5557", "host:0", "host:70000", "host:port"])
def test_master_bind_must_be_host_and_port(address):
    with pytest.raises(ValueError, match="HOST:PORT"):
        LoadPhase(users=1, remote_workers=1, master_bind=address)


def test_master_bind_splits_v4_names_and_v6():
    assert split_address("0.0.0.0:5557") == ("0.0.0.0", 5557)
    assert split_address("ci-runner.internal:6000") == ("ci-runner.internal", 6000)
    assert split_address("[::]:5557") == ("::", 5557)


def test_run_plan_travels_as_json_with_its_phase_id():
    plan = RunPlan(LoadPhase(users=2, remote_workers=2), (HttpRequest("GET", "/"),), "/nowhere", True, "abc123")
    assert RunPlan.from_json(plan.to_json()) == plan


def test_a_distributed_phase_drops_the_options_one_process_decides():
    from pytest_serving.load.fixture import for_processes

    smoke = {"users": 4, "duration": 15, "warmup": 5, "max_warmup": 10, "min_requests": 180, "max_duration": 45}
    assert for_processes(smoke, distributed=False) == smoke
    distributed = for_processes(smoke, distributed=True)
    assert distributed == {"users": 4, "duration": 15, "warmup": 5}
    LoadPhase(**distributed, workers=2)  # valid where the smoke's own options are not
    with pytest.raises(ValueError):
        LoadPhase(**smoke, workers=2)
