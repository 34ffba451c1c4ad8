"""benchmarks/peer_tools.py: what the peers benchmark hands to perf_analyzer and k6 and reads back."""

from __future__ import annotations

import base64
import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest

from pytest_serving.protocols.v2 import V2Protocol

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "peer_tools.py"
_SPEC = importlib.util.spec_from_file_location("peer_tools", _PATH)
peer_tools = importlib.util.module_from_spec(_SPEC)
sys.modules["peer_tools"] = peer_tools
_SPEC.loader.exec_module(peer_tools)

# perf_analyzer 2.51.0's -f report, as for --concurrency-range 1:4:3 (latencies in microseconds).
PERF_ANALYZER_CSV = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,\
Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency
1,31.4423,45,1211,180,40,29806,35,11,31250,33870,34901,41022
4,48.9981,52,1544,41321,52,38010,41,12,81322,95012,99100,120233
"""


def test_perf_analyzer_input_is_the_engines_tensor_bytes():
    image = b"\xff\xd8\xff\xe0 a jpeg"
    document = peer_tools.perf_analyzer_input("IMAGE", image)
    tensor = base64.b64decode(document["data"][0]["IMAGE"]["b64"])
    assert tensor == struct.pack("<I", len(image)) + image
    assert V2Protocol("m").encode(image).body.endswith(tensor)


def test_perf_analyzer_csv_gives_rate_and_percentiles_in_ms_per_concurrency():
    figures = peer_tools.parse_perf_analyzer_csv(PERF_ANALYZER_CSV)
    assert sorted(figures) == [1, 4]
    one = figures[1]
    assert one.rps == pytest.approx(31.4423)
    assert (one.p50_ms, one.p95_ms, one.p99_ms) == pytest.approx((31.25, 34.901, 41.022))
    assert figures[4].p99_ms == pytest.approx(120.233)


def test_perf_analyzer_csv_without_the_columns_is_an_error_quoting_it():
    with pytest.raises(peer_tools.ToolOutputError, match="Concurrency,Inferences"):
        peer_tools.parse_perf_analyzer_csv("Concurrency,Inferences/Second\n1,2\n")


# The console report of that run (the part the benchmark reads).
PERF_ANALYZER_STDOUT = """\
Request concurrency: 2
  Client: 
    Request count: 21
    Throughput: 2.84282 infer/sec
    Avg latency: 687041 usec (standard deviation 156333 usec)
  Server: 
    Inference count: 22
    Successful request count: 22
"""


def test_perf_analyzer_request_count_is_the_clients_not_the_servers():
    assert peer_tools.perf_analyzer_requests(PERF_ANALYZER_STDOUT) == 21


def test_perf_analyzer_without_a_request_count_is_an_error():
    with pytest.raises(peer_tools.ToolOutputError, match="no client request count"):
        peer_tools.perf_analyzer_requests("Failed to obtain stable measurement.")


def k6_summary(**overrides):
    metrics = {
        "measured_latency": {"type": "trend", "values": {"p(50)": 30.5, "p(95)": 35.0, "p(99)": 41.0, "count": 280}},
        "measured_answers": {"type": "counter", "values": {"count": 279, "rate": 25.0}},
        "measured_failures": {"type": "counter", "values": {"count": 2, "rate": 0.2}},
        "window_open_ms": {"type": "gauge", "values": {"value": 1_700_000_002_000, "min": 0, "max": 0}},
    }
    metrics.update(overrides)
    return {"metrics": metrics}


def test_k6_summary_gives_window_rate_percentiles_failures_and_window():
    figures = peer_tools.parse_k6_summary(k6_summary(), duration_s=9.0)
    assert figures.rps == pytest.approx(279 / 9.0)
    assert (figures.p50_ms, figures.p95_ms, figures.p99_ms) == (30.5, 35.0, 41.0)
    assert (figures.requests, figures.failures) == (282, 2)
    assert figures.window == pytest.approx((1_700_000_002.0, 1_700_000_011.0))


def test_k6_summary_without_failures_counts_none():
    summary = k6_summary()
    del summary["metrics"]["measured_failures"]
    assert peer_tools.parse_k6_summary(summary, duration_s=9.0).failures == 0


def test_k6_summary_without_window_metrics_names_what_is_missing():
    summary = k6_summary()
    del summary["metrics"]["measured_answers"]
    with pytest.raises(peer_tools.ToolOutputError, match="measured_answers"):
        peer_tools.parse_k6_summary(summary, duration_s=9.0)


def test_k6_script_carries_the_request_and_the_schedule():
    script = peer_tools.k6_script(
        "http://127.0.0.1:8000/v2/models/m/infer",
        "/tmp/body.bin",
        {"Content-Type": "application/octet-stream", "Authorization": 'Bearer "k"'},
        users=16,
        duration_s=9.0,
        warmup_s=2.0,
        summary_path="/tmp/summary.json",
    )
    assert "open(\"/tmp/body.bin\", 'b')" in script
    assert json.dumps({"Content-Type": "application/octet-stream", "Authorization": 'Bearer "k"'}) in script
    assert "vus: 16, duration: '11s'" in script
    assert "const warmupMs = 2000;" in script and "const durationMs = 9000;" in script
    assert '{ "/tmp/summary.json": JSON.stringify(data) }' in script


def test_counters_are_interpolated_between_snapshots():
    snapshots = [(10.0, {"requests": 100.0}), (11.0, {"requests": 110.0, "late": 4.0}), (12.0, {"requests": 130.0})]
    assert peer_tools.counters_at(snapshots, 10.5) == {"requests": pytest.approx(105.0), "late": pytest.approx(2.0)}
    assert peer_tools.counters_at(snapshots, 11.25)["requests"] == pytest.approx(115.0)
    assert peer_tools.counters_at(snapshots, 12.0)["requests"] == pytest.approx(130.0)
    assert peer_tools.counters_at(snapshots, 10.0)["requests"] == pytest.approx(100.0)


def test_counters_outside_the_snapshots_are_unknown():
    with pytest.raises(ValueError, match="no snapshots around 12.500"):
        peer_tools.counters_at([(10.0, {"requests": 1.0}), (12.0, {"requests": 2.0})], 12.5)
    with pytest.raises(ValueError, match="snapshots span none"):
        peer_tools.counters_at([], 1.0)


def test_a_centred_window_splits_the_slack_between_start_up_and_drain():
    assert peer_tools.centered_window(100.0, 110.0, 9.0) == pytest.approx((100.5, 109.5))
    assert peer_tools.centered_window(100.0, 108.0, 9.0) == pytest.approx((100.0, 109.0))


def test_cpu_fit_separates_the_fixed_cost_from_the_cost_per_request():
    runs = [(requests, 1.5 + 0.002 * requests) for requests in (40, 40, 300, 900, 910)]
    fixed, per_request_ms = peer_tools.cpu_fit(runs)
    assert fixed == pytest.approx(1.5)
    assert per_request_ms == pytest.approx(2.0)


def test_cpu_fit_needs_two_run_sizes():
    assert peer_tools.cpu_fit([(40, 1.0), (40, 1.1)]) is None


def test_throughput_ratio_is_counting_times_load_times_server_speed():
    # The tool counts 2 % more than the server saw, keeps 3.6 of 4 requests in the server where the
    # reference keeps 3.9, and the server took 110 ms per request in its runs against 100 ms.
    tool = [peer_tools.RunCounts(rps=1.02 * 3.6 / 0.110, server_rps=3.6 / 0.110, server_ms=110.0)] * 3
    reference = [peer_tools.RunCounts(rps=3.9 / 0.100, server_rps=3.9 / 0.100, server_ms=100.0)] * 3
    parts = peer_tools.decompose(tool, reference)
    assert parts.counting == pytest.approx(1.02)
    assert parts.load == pytest.approx(3.6 / 3.9)
    assert parts.speed == pytest.approx(100 / 110)
    assert parts.ratio == pytest.approx(parts.counting * parts.load * parts.speed)


def test_decomposition_is_exact_over_rounds_that_differ():
    tool = [peer_tools.RunCounts(10.0, 9.5, 95.0), peer_tools.RunCounts(14.0, 14.2, 70.0)]
    reference = [peer_tools.RunCounts(12.0, 12.1, 80.0), peer_tools.RunCounts(9.0, 8.8, 110.0)]
    parts = peer_tools.decompose(tool, reference)
    assert parts.ratio == pytest.approx(parts.counting * parts.load * parts.speed)
    assert parts.ratio == pytest.approx((10.0 * 14.0) ** 0.5 / (12.0 * 9.0) ** 0.5)


def test_decomposition_without_server_figures_is_none():
    assert peer_tools.decompose([peer_tools.RunCounts(10.0, 0.0, 0.0)], [peer_tools.RunCounts(9.0, 9.0, 100.0)]) is None


def test_k6_summary_of_a_window_without_a_successful_answer_says_so():
    summary = k6_summary()
    del summary["metrics"]["measured_latency"]
    with pytest.raises(peer_tools.ToolOutputError, match="no request sent in the 9 s window got a successful answer"):
        peer_tools.parse_k6_summary(summary, duration_s=9.0)
