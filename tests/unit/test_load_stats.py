import json

import numpy as np
import pytest

from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.stats import (
    LatencySummary,
    RawSamples,
    SampleRecorder,
    stability_of,
    stability_window_s,
    summarize,
    windows_of,
)


def samples(latency_ms, code=None, offset_s=None, completed_s=None, **meta):
    """Samples of requests due at ``offset_s``; their answers arrive at ``completed_s`` (default: at once)."""
    latency_ms = np.asarray(latency_ms, dtype=np.float64)
    n = latency_ms.size
    offset_s = np.linspace(0, 0.999, n) if offset_s is None else np.asarray(offset_s, dtype=np.float64)
    return RawSamples(
        offset_s=offset_s,
        latency_ms=latency_ms,
        code=np.full(n, 200, dtype=np.int32) if code is None else np.asarray(code, dtype=np.int32),
        completed_s=offset_s if completed_s is None else np.asarray(completed_s, dtype=np.float64),
        **meta,
    )


def test_latency_figures_match_numpy_on_known_data():
    rng = np.random.default_rng(7)
    latencies = rng.lognormal(mean=3.0, sigma=0.6, size=10_001)
    summary = LatencySummary.of(latencies)
    expected = np.percentile(latencies, [50, 90, 95, 99])
    assert [summary.p50, summary.p90, summary.p95, summary.p99] == pytest.approx(expected.tolist(), rel=1e-12)
    assert (summary.max, summary.min) == (latencies.max(), latencies.min())
    assert summary.mean == pytest.approx(latencies.mean())


def test_percentiles_keep_sub_millisecond_resolution():
    summary = LatencySummary.of(np.arange(1, 101) / 100.0)  # 0.01 .. 1.00 ms
    assert summary.p50 == pytest.approx(0.505)
    assert summary.p99 == pytest.approx(0.9901)
    assert summary.max == 1.0


def test_no_latency_figures_without_samples():
    assert LatencySummary.of(np.zeros(0)) is None


def test_failures_count_but_do_not_shape_latency():
    stats = summarize(samples([10.0, 10.0, 10.0, 1.0], code=[200, 200, 201, 503]), LoadPhase(users=1, duration=1.0))
    assert stats.n == 4 and stats.failures == 1
    assert stats.failure_rate == 0.25
    assert stats.latency.min == 10.0
    assert stats.status_counts == {"200": 2, "201": 1, "503": 1}
    assert stats.rps == stats.offered_rps == 4.0


def test_throughput_counts_answers_inside_the_window_not_sends():
    offsets = np.arange(0, 2.0, 0.01)  # 100 sends/s due over 2 s
    answered = offsets * 2  # a server at half the pace: answers spread over 4 s
    stats = summarize(
        samples(np.full(offsets.size, 5.0), offset_s=offsets, completed_s=answered[answered < 2.0]),
        LoadPhase(rate=100.0, duration=2.0),
    )
    assert stats.offered_rps == 100.0
    assert stats.rps == 50.0
    assert [window.rps for window in stats.windows] == [50.0, 50.0]


def test_recorder_keeps_reasons_for_requests_without_answer():
    recorder = SampleRecorder()
    recorder.record(0.1, 5.0, 200)
    recorder.record(0.2, 30_000.0, "TimeoutError")
    recorder.record(0.3, 0.4, "ConnectionRefusedError")
    recorder.record(0.4, 0.3, "ConnectionRefusedError")
    recorder.late_sends = 2
    raw = recorder.samples(started_at=1_700_000_000.0)
    assert raw.status_counts() == {"200": 1, "ConnectionRefusedError": 2, "TimeoutError": 1}
    assert raw.late_sends == 2


def test_merge_of_worker_files_renumbers_reasons(tmp_path):
    first, second = SampleRecorder(), SampleRecorder()
    first.record(0.1, 1.5, 200)
    first.record(0.2, 2.5, "TimeoutError")
    first.completed(0.1015)
    first.dropped_sends = 3
    second.record(0.3, 0.5, "ConnectionResetError")
    second.record(0.4, 0.7, "TimeoutError")
    second.record(0.5, 3.5, 503)
    second.late_sends = 1
    first.samples(100.0, cpu_warning=True).save(tmp_path / "raw-0.npz")
    second.samples(99.5).save(tmp_path / "raw-1.npz")

    merged = RawSamples.merge([RawSamples.load(tmp_path / "raw-0.npz"), RawSamples.load(tmp_path / "raw-1.npz")])

    assert merged.code.size == 5
    assert merged.completed_s.tolist() == [0.1015]
    assert merged.status_counts() == {"200": 1, "503": 1, "ConnectionResetError": 1, "TimeoutError": 2}
    assert sorted(merged.latency_ms.tolist()) == [0.5, 0.7, 1.5, 2.5, 3.5]
    assert (merged.late_sends, merged.dropped_sends, merged.processes, merged.cpu_warnings) == (1, 3, 2, 1)
    assert merged.started_at == 99.5


def test_windows_cover_full_windows_only():
    offsets = np.arange(0, 5.5, 0.1)  # 10 sends/s for 5.5 s
    latencies = np.floor(offsets) + 1.0  # window k answers in k+1 ms
    windows = windows_of(samples(latencies, offset_s=offsets), duration_s=5.5, window_s=1.0)
    assert [window.start_s for window in windows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [window.n for window in windows] == [10] * 5
    assert [window.rps for window in windows] == [10.0] * 5
    assert [window.p50_ms for window in windows] == [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize(
    ("n", "expected_s"),
    [(6000, 1.0), (600, 6.25), (100, 20.0), (0, 1.0)],
    ids=["busy: 1 s windows", "10 rps: 6.25 s for 62.5 each", "few: 3 windows fit", "nothing sent"],
)
def test_stability_windows_grow_to_hold_enough_requests(n, expected_s):
    assert stability_window_s(duration_s=60.0, window_s=1.0, last=3, n=n) == pytest.approx(expected_s)


def test_windows_too_small_to_judge_are_not_called_unstable():
    """A window too small to judge is the phase's choice, not the server's instability."""
    stable, note = stability_of(window_stats([10.0, 10.0, 30.0], [20, 20, 20]), 3, 0.10)
    assert stable
    assert note.startswith("not judged: only 20 requests a window over the last 3 of 1 s")


def test_one_window_thinned_by_a_slower_server_is_judged():
    stable, note = stability_of(window_stats([10.0, 10.0, 10.0], [80, 80, 45]), 3, 0.10)
    assert not stable
    assert "rps 45-80 beyond" in note


def test_a_tail_latency_that_moves_leaves_a_steady_median_stable():
    windows = []
    for tail in (100.0, 160.0, 120.0):  # p95 of a steady server swings with its few slowest answers
        windows.append([10.0] * 90 + [tail] * 10)
    offsets = [k + i / 100 for k in range(3) for i in range(100)]
    latencies = [value for window in windows for value in window]
    stable, note = stability_of(windows_of(samples(latencies, offset_s=offsets), 3.0, 1.0), 3, 0.10)
    assert stable, note
    assert "p50 10-10 ms within ±10%" in note


def test_a_slow_server_gets_windows_long_enough_for_a_verdict():
    rng = np.random.default_rng(0)
    offsets = np.linspace(0, 60, 600, endpoint=False) + rng.uniform(0, 0.05, 600)  # 10 rps, ~100 ms each
    stats = summarize(samples(rng.normal(100, 5, 600), offset_s=offsets), LoadPhase(users=1, duration=60.0))
    assert [window.start_s for window in stats.windows[:3]] == [0.0, 6.25, 12.5]
    assert stats.stable, stats.stability


def window_stats(p95s, counts):
    offsets, latencies = [], []
    for k, (p95, count) in enumerate(zip(p95s, counts, strict=True)):
        offsets += list(k + np.arange(count) / count)
        latencies += [p95] * count
    return windows_of(samples(latencies, offset_s=offsets), duration_s=len(p95s), window_s=1.0)


def test_steady_last_windows_are_stable_despite_a_slow_start():
    stable, note = stability_of(window_stats([50.0, 10.0, 10.5, 10.2], [20, 100, 100, 104]), 3, 0.10)
    assert stable, note
    assert note.startswith("stable")


def test_a_latency_jump_in_the_last_window_is_unstable():
    stable, note = stability_of(window_stats([10.0, 10.0, 13.0], [100, 100, 100]), 3, 0.10)
    assert not stable
    assert "p50 10-13 ms beyond ±10% (±18.2%)" in note


def test_a_throughput_drop_is_unstable():
    stable, note = stability_of(window_stats([10.0, 10.0, 10.0], [100, 100, 70]), 3, 0.10)
    assert not stable
    assert "rps 70-100 beyond" in note


def test_too_few_windows_are_reported_unstable():
    stable, note = stability_of(window_stats([10.0, 10.0], [100, 100]), 3, 0.10)
    assert not stable
    assert "2 full windows, 3 needed" in note


def test_a_window_without_success_is_unstable():
    windows = windows_of(
        samples([5.0, 5.0, 5.0], code=[200, 200, 503], offset_s=[0.5, 1.5, 2.5]), duration_s=3, window_s=1
    )
    stable, note = stability_of(windows, 3, 0.10)
    assert not stable
    assert "no successful request" in note


def test_phase_stats_are_json_ready():
    stats = summarize(samples([1.0, 2.0], started_at=1_700_000_000.0), LoadPhase(rate=2.0, duration=1.0), base_url="x")
    document = json.loads(json.dumps(stats.to_dict()))
    assert document["level"] == "rate=2"
    assert document["latency_ms"]["max"] == 2.0
    assert document["configuration"]["base_url"] == "x"
    assert document["started_at"].startswith("2023-11-14T22:13:20")
    assert document["stable"] is False
    assert set(document) >= {"n", "rps", "failure_rate", "status_counts", "late_sends", "dropped_sends", "windows"}


def test_tags_are_recorded_saved_and_merged_by_name(tmp_path):
    first, second = SampleRecorder(), SampleRecorder()
    first.record(0.1, 5.0, 200, "1")
    first.record(0.2, 5.0, "TimeoutError")
    second.record(0.3, 5.0, 200, "2")
    second.record(0.4, 5.0, 200, "1")
    first.samples(0.0).save(tmp_path / "a.npz")
    merged = RawSamples.merge([RawSamples.load(tmp_path / "a.npz"), second.samples(0.0)])
    assert merged.tags == ["1", "2"]
    assert merged.tag_names() == ["1", "", "2", "1"]
    untagged = SampleRecorder()
    untagged.record(0.1, 5.0, 200)
    assert untagged.samples(0.0).tag.size == 0
    assert RawSamples.merge([untagged.samples(0.0), second.samples(0.0)]).tag_names() == ["", "2", "1"]
