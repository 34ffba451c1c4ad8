"""Prometheus text parsing and per-request server times, on pages captured from the real servers."""

from __future__ import annotations

import math

import pytest

from pytest_serving.deployment import EMBEDDED_MODEL_REPO
from pytest_serving.metrics import (
    MetricsFormatError,
    MetricsPage,
    ServerTimes,
    Unmeasured,
    combined,
    metrics_page,
    parse_exposition,
    scraped_around,
)
from pytest_serving.protocols.endpoint import Endpoint
from pytest_serving.targets.torchserve import TorchServe
from pytest_serving.targets.triton import Triton

TRITON_METRICS = Triton.server_metrics
TORCHSERVE_METRICS = TorchServe.server_metrics

#: GET :8002/metrics of pytest-serving/triton:2.51.0-cpu after 420 requests (python backend, dynamic batching).
TRITON_PAGE = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="efficientnet_lite0",version="1"} 420
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="efficientnet_lite0",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="efficientnet_lite0",reason="BACKEND",version="1"} 0
nv_inference_request_failure{model="efficientnet_lite0",reason="CANCELED",version="1"} 0
nv_inference_request_failure{model="efficientnet_lite0",reason="REJECTED",version="1"} 0
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="efficientnet_lite0",version="1"} 420
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="efficientnet_lite0",version="1"} 171
# HELP nv_inference_request_duration_us Cumulative inference request duration in microseconds (includes cached requests)
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="efficientnet_lite0",version="1"} 171714236
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds (includes cached requests)
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="efficientnet_lite0",version="1"} 68128459
# HELP nv_inference_compute_input_duration_us Cumulative compute input duration in microseconds (does not include cached requests)
# TYPE nv_inference_compute_input_duration_us counter
nv_inference_compute_input_duration_us{model="efficientnet_lite0",version="1"} 159857
# HELP nv_inference_compute_infer_duration_us Cumulative compute inference duration in microseconds (does not include cached requests)
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="efficientnet_lite0",version="1"} 102531122
# HELP nv_inference_compute_output_duration_us Cumulative inference compute output duration in microseconds (does not include cached requests)
# TYPE nv_inference_compute_output_duration_us counter
nv_inference_compute_output_duration_us{model="efficientnet_lite0",version="1"} 888275
# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution per-model.
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="efficientnet_lite0",version="1"} 3
# HELP nv_pinned_memory_pool_total_bytes Pinned memory pool total memory size, in bytes
# TYPE nv_pinned_memory_pool_total_bytes gauge
nv_pinned_memory_pool_total_bytes 268435456
# HELP nv_pinned_memory_pool_used_bytes Pinned memory pool used memory size, in bytes
# TYPE nv_pinned_memory_pool_used_bytes gauge
nv_pinned_memory_pool_used_bytes 0
# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 1
# HELP nv_cpu_memory_total_bytes CPU total memory (RAM), in bytes
# TYPE nv_cpu_memory_total_bytes gauge
nv_cpu_memory_total_bytes 25276510208
# HELP nv_cpu_memory_used_bytes CPU used memory (RAM), in bytes
# TYPE nv_cpu_memory_used_bytes gauge
nv_cpu_memory_used_bytes 2138013696
"""

#: GET :8082/metrics of pytest-serving/torchserve:0.12.0-cpu (metrics_mode=prometheus) after 8 requests
#: and after 2 more (gauges trimmed); note the trailing comma inside the braces.
TORCHSERVE_BEFORE = """\
# HELP GPUUtilization Torchserve prometheus gauge metric with unit: Percent
# TYPE GPUUtilization gauge
# HELP ts_inference_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds
# TYPE ts_inference_latency_microseconds counter
ts_inference_latency_microseconds{model_name="efficientnet_lite0",model_version="default",hostname="77b9d8cd2f89",} 3314955.923
# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="efficientnet_lite0",model_version="default",hostname="77b9d8cd2f89",} 8.0
# HELP Requests2XX Torchserve prometheus counter metric with unit: Count
# TYPE Requests2XX counter
Requests2XX{Level="Host",Hostname="77b9d8cd2f89",} 8.0
# HELP ts_queue_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds
# TYPE ts_queue_latency_microseconds counter
ts_queue_latency_microseconds{model_name="efficientnet_lite0",model_version="default",hostname="77b9d8cd2f89",} 89300.41600000001
# HELP PredictionTime Torchserve prometheus gauge metric with unit: ms
# TYPE PredictionTime gauge
PredictionTime{ModelName="efficientnet_lite0",Level="Model",Hostname="77b9d8cd2f89",} 752.43
"""
TORCHSERVE_AFTER = """\
# HELP GPUUtilization Torchserve prometheus gauge metric with unit: Percent
# TYPE GPUUtilization gauge
# HELP ts_inference_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds
# TYPE ts_inference_latency_microseconds counter
ts_inference_latency_microseconds{model_name="efficientnet_lite0",model_version="default",hostname="77b9d8cd2f89",} 6231400.0
# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="efficientnet_lite0",model_version="default",hostname="77b9d8cd2f89",} 10.0
# HELP Requests2XX Torchserve prometheus counter metric with unit: Count
# TYPE Requests2XX counter
Requests2XX{Level="Host",Hostname="77b9d8cd2f89",} 11.0
# HELP ts_queue_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds
# TYPE ts_queue_latency_microseconds counter
ts_queue_latency_microseconds{model_name="efficientnet_lite0",model_version="default",hostname="77b9d8cd2f89",} 123680.27800000002
# HELP PredictionTime Torchserve prometheus gauge metric with unit: ms
# TYPE PredictionTime gauge
PredictionTime{ModelName="efficientnet_lite0",Level="Model",Hostname="77b9d8cd2f89",} 1609.23
"""


def snapshot(page: str, spec) -> dict[str, float]:
    exposition = parse_exposition(page)
    return {name: exposition.total(name) for name in spec.counters if exposition.total(name) is not None}


def test_triton_page_parses_into_samples_types_and_help():
    exposition = parse_exposition(TRITON_PAGE)
    assert len(exposition.samples) == 18
    assert exposition.types["nv_inference_queue_duration_us"] == "counter"
    assert exposition.types["nv_cpu_utilization"] == "gauge"
    assert exposition.help["nv_inference_count"].startswith("Number of inferences performed")
    failures = [sample for sample in exposition.samples if sample.name == "nv_inference_request_failure"]
    assert {sample.labels["reason"] for sample in failures} == {"OTHER", "BACKEND", "CANCELED", "REJECTED"}
    assert exposition.total("nv_inference_request_success") == 420
    assert exposition.total("nv_inference_exec_count") == 171
    assert exposition.total("nv_gpu_utilization") is None


def test_torchserve_trailing_comma_labels_parse():
    exposition = parse_exposition(TORCHSERVE_BEFORE)
    (sample,) = [s for s in exposition.samples if s.name == "ts_inference_requests_total"]
    assert dict(sample.labels) == {
        "model_name": "efficientnet_lite0",
        "model_version": "default",
        "hostname": "77b9d8cd2f89",
    }
    assert sample.value == 8.0
    assert exposition.types["GPUUtilization"] == "gauge"  # a family without samples


def test_escapes_special_values_timestamps_and_summing_over_series():
    exposition = parse_exposition(
        r'x{path="C:\\dir",quote="say \"hi\"",nl="a\nb"} 1.5 1700000000000'
        "\n"
        'x{other="2"} +Inf\n'
        "y NaN\n"
        "z -Inf\n"
        "# a plain comment\n"
    )
    first = exposition.samples[0]
    assert dict(first.labels) == {"path": "C:\\dir", "quote": 'say "hi"', "nl": "a\nb"}
    assert first.timestamp_ms == 1700000000000
    assert exposition.total("x") == math.inf
    assert math.isnan(exposition.total("y"))
    assert exposition.total("z") == -math.inf


@pytest.mark.parametrize(
    "line",
    ['x{a="1" 2', "x{a=1} 2", 'x{1a="b"} 2', "x", 'x{a="b"}2', "x one", "x 1 soon", '{a="b"} 1'],
)
def test_malformed_lines_are_refused_with_their_line_number(line):
    with pytest.raises(MetricsFormatError, match=r"line 2: "):
        parse_exposition(f"ok 1\n{line}\n")


def test_torchserve_per_request_times_between_two_real_pages():
    times = ServerTimes.between(
        TORCHSERVE_METRICS,
        snapshot(TORCHSERVE_BEFORE, TORCHSERVE_METRICS),
        snapshot(TORCHSERVE_AFTER, TORCHSERVE_METRICS),
    )
    assert times.requests == 2
    assert times.server_ms == pytest.approx((6231400.0 - 3314955.923) / 2 / 1000)
    assert times.queue_ms == pytest.approx((123680.27800000002 - 89300.41600000001) / 2 / 1000)
    assert times.compute_ms is None  # TorchServe's counters do not split compute out of its latency
    assert times.requests_per_execution is None


def test_counters_first_published_during_the_phase_count_from_zero():
    # A fresh TorchServe lists a model's counters only after its first request.
    before = {}
    after = snapshot(TORCHSERVE_AFTER, TORCHSERVE_METRICS)
    times = ServerTimes.between(TORCHSERVE_METRICS, before, after)
    assert times.requests == after["ts_inference_requests_total"]
    assert times.server_ms == pytest.approx(after["ts_inference_latency_microseconds"] / times.requests / 1000)


def test_triton_queue_compute_and_batch_size_from_counter_increases():
    after = snapshot(TRITON_PAGE, TRITON_METRICS)
    before = {name: 0.0 for name in after} | {
        "nv_inference_request_success": 400.0,
        "nv_inference_queue_duration_us": 68_128_459 - 20_000,
        "nv_inference_compute_input_duration_us": 159_857 - 100,
        "nv_inference_compute_infer_duration_us": 102_531_122 - 190_000,
        "nv_inference_compute_output_duration_us": 888_275 - 9_900,
        "nv_inference_request_duration_us": 171_714_236 - 230_000,
        "nv_inference_exec_count": 171 - 8,
    }
    times = ServerTimes.between(TRITON_METRICS, before, after)
    assert times.requests == 20
    assert times.queue_ms == pytest.approx(1.0)
    assert times.compute_ms == pytest.approx(10.0)
    assert times.server_ms == pytest.approx(11.5)
    assert times.requests_per_execution == pytest.approx(2.5)
    entry = times.to_dict()
    assert entry["increases"]["nv_inference_exec_count"] == 8
    assert entry["queue_ms"] == pytest.approx(1.0)


def test_repeats_add_up_before_dividing():
    one = ServerTimes(TORCHSERVE_METRICS, {"ts_inference_requests_total": 10, "ts_queue_latency_microseconds": 10_000})
    two = ServerTimes(TORCHSERVE_METRICS, {"ts_inference_requests_total": 30, "ts_queue_latency_microseconds": 90_000})
    assert combined([one, two]).queue_ms == pytest.approx(2.5)  # (10 + 90 ms) / 40, not the mean of 1 and 3
    assert combined([one, Unmeasured("no URL")]) == Unmeasured("no URL")
    assert isinstance(combined([]), Unmeasured)


def test_no_request_counted_gives_no_per_request_time():
    times = ServerTimes(TRITON_METRICS, {name: 0.0 for name in TRITON_METRICS.counters})
    assert times.requests == 0
    assert times.queue_ms is None and times.server_ms is None


class ReplayedPage:
    """Stands in for MetricsPage: returns prepared snapshots (or raises prepared errors), one per scrape."""

    url = "page-under-test"

    def __init__(self, spec, *replies):
        self.spec = spec
        self.replies = list(replies)

    def snapshot(self):
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_scraped_around_measures_the_block():
    before = snapshot(TORCHSERVE_BEFORE, TORCHSERVE_METRICS)
    after = snapshot(TORCHSERVE_AFTER, TORCHSERVE_METRICS)
    with scraped_around(ReplayedPage(TORCHSERVE_METRICS, before, after)) as scrape:
        assert isinstance(scrape.result, Unmeasured)  # nothing to show until the block ends
    assert scrape.result.requests == 2


def test_a_restart_or_a_page_without_the_counters_is_recorded_not_raised():
    after = snapshot(TORCHSERVE_AFTER, TORCHSERVE_METRICS)
    restarted = {name: value / 10 for name, value in after.items()}
    with scraped_around(ReplayedPage(TORCHSERVE_METRICS, after, restarted)) as scrape:
        pass
    assert "restarted" in scrape.result.reason
    with scraped_around(ReplayedPage(TORCHSERVE_METRICS, {}, {})) as scrape:
        pass
    assert "metrics_mode=prometheus" in scrape.result.reason
    with scraped_around(ReplayedPage(TORCHSERVE_METRICS, MetricsFormatError("line 1: bad"), after)) as scrape:
        pass
    assert "not a Prometheus text page" in scrape.result.reason


def test_metrics_page_comes_from_the_endpoint_role_and_the_target_spec():
    endpoint = Endpoint("triton", {"http": "http://127.0.0.1:1", "metrics": "http://127.0.0.1:2"}, "image", True)
    assert metrics_page(endpoint, TRITON_METRICS) == MetricsPage("http://127.0.0.1:2/metrics", TRITON_METRICS)
    external = Endpoint("triton", {"http": "http://127.0.0.1:1"}, "external", False)
    assert "--serving-url" in metrics_page(external, TRITON_METRICS).reason
    unknown = Endpoint("no-such-target", {"http": "http://127.0.0.1:1"}, "image", True)
    assert "declares no server metrics" in metrics_page(unknown, None).reason


def test_every_target_declares_its_server_metrics_on_its_class():
    from pytest_serving.targets import TARGETS

    declared = {name for name, target in TARGETS.items() if target.server_metrics is not None}
    assert {"triton", "torchserve", "kserve", "kserve-v1"} <= declared
    assert TARGETS["tfserving"].server_metrics is None


def test_the_embedded_torchserve_config_publishes_prometheus_counters():
    config = EMBEDDED_MODEL_REPO / "torchserve" / "config.properties"
    settings = dict(
        line.split("=", 1) for line in config.read_text().splitlines() if line.strip() and not line.startswith("#")
    )
    assert settings.get("metrics_mode") == "prometheus", TORCHSERVE_METRICS.missing_hint
