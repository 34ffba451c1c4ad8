"""Report figures from results.json: load points, chart data, agreement, terminal tables, JUnit
properties and the self-contained HTML page.

Load entries are made by the load engine's own ``summarize`` and ``SweepLevel.to_dict``, so
the report is tested against the shape the engine really writes.
"""

from __future__ import annotations

import base64
import io
import re
import sys
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from pytest_serving.correctness import CorrectnessSummary
from pytest_serving.load.answers import AnswerCheck
from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.resources import ResourceSample, phase_resources
from pytest_serving.load.stats import PhaseStats, RawSamples, summarize
from pytest_serving.load.sweep import SweepLevel
from pytest_serving.report import charts
from pytest_serving.report.html import render_report, report_html
from pytest_serving.report.summary import (
    Agreement,
    agreement_matrix,
    chart_points,
    junit_properties,
    pairwise_agreement,
    robustness_counts,
    terminal_tables,
)

SMOKE_TEST = "test_load.py::test_smoke[{target}]"
SWEEP_TEST = "test_load.py::test_sweep[{target}-warm]"


def measured(latencies_ms: list[float], users: int = 4, failures: int = 0, rate: float | None = None) -> PhaseStats:
    """A phase's statistics from raw samples, as the load engine computes them."""
    codes = [500] * failures + [200] * len(latencies_ms)
    latency = np.array([1.0] * failures + latencies_ms)
    offsets = np.linspace(0.0, 4.0, len(codes), endpoint=False)
    phase = LoadPhase(rate=rate, duration=4.0, warmup=1.0) if rate else LoadPhase(users=users, duration=4.0, warmup=1.0)
    samples = RawSamples(offsets, latency, np.array(codes, dtype=np.int32), offsets, started_at=1_790_000_000.0)
    return summarize(samples, phase, base_url="http://127.0.0.1:8000")


def server_metrics(queue_ms: float, compute_ms: float | None, server_ms: float) -> dict:
    return {"requests": 40.0, "queue_ms": queue_ms, "compute_ms": compute_ms, "server_ms": server_ms}


def phase_entry(target: str, stats: PhaseStats, **extra) -> dict:
    return {**stats.to_dict(), "kind": "phase", "test": SMOKE_TEST.format(target=target), **extra}


def level_entry(target: str, users: int, repeats: list[PhaseStats], scenario: str = "warm", **extra) -> dict:
    return {
        **SweepLevel(users, tuple(repeats)).to_dict(),
        "kind": "sweep-level",
        "scenario": scenario,
        "test": SWEEP_TEST.format(target=target),
        **extra,
    }


def correctness(n: int, top1: float, agreement: float) -> dict:
    return CorrectnessSummary(n, top1, 1.0, top1, 1.0, agreement, 1e-6, {}).to_dict()


PREDICTIONS = {
    "triton": {"a": [[1, 2], [0.9, 0.1]], "b": [[3, 4], [0.8, 0.2]], "c": [[5, 6], [0.7, 0.3]]},
    "torchserve": {"a": [[1, 2], [0.9, 0.1]], "b": [[4, 3], [0.6, 0.4]], "c": [[5, 6], [0.7, 0.3]]},
    "kserve": {"a": [[1, 2], [0.9, 0.1]]},
}


def robustness(outcomes: dict[str, str]) -> dict:
    return {
        case: {"outcome": outcome, "status": 400 if outcome == "pass" else 500, "survived": True, "problems": []}
        for case, outcome in outcomes.items()
    }


@pytest.fixture
def sweep_results() -> dict:
    """Two targets with a warm sweep each (torchserve without compute split), plus a smoke phase."""
    return {
        "session": {"model": "efficientnet_lite0", "weights_id": "sha256:0123abcd", "host_cpus": 2},
        "targets": {
            "triton": {
                "server": {"image": "pytest-serving/triton:2.51.0-cpu", "version": "triton 2.51.0"},
                "correctness": correctness(3, 2 / 3, 1.0),
                "predictions": PREDICTIONS["triton"],
                "robustness": robustness({"empty": "pass", "json-malformed": "deviation", "tiff": "pass"}),
                "load": [
                    phase_entry("triton", measured([50.0] * 40), server_metrics={"unavailable": "no metrics URL"}),
                    level_entry(
                        "triton", 2, [measured([20.0] * 30, users=2)], server_metrics=server_metrics(1, 15, 17)
                    ),
                    level_entry("triton", 4, [measured([40.0] * 50, users=4, failures=2)] * 2),
                ],
            },
            "torchserve": {
                "server": {"image": "pytest-serving/torchserve:0.12.0-cpu", "version": "torchserve 0.12.0"},
                "correctness": correctness(3, 2 / 3, 2 / 3),
                "predictions": PREDICTIONS["torchserve"],
                "robustness": robustness({"empty": "pass", "tiff": "fail"}),
                "load": [
                    level_entry("torchserve", 4, [measured([60.0] * 20)], server_metrics=server_metrics(5, None, 45)),
                    level_entry(
                        "torchserve", 2, [measured([30.0] * 20, users=2)], server_metrics=server_metrics(2, None, 25)
                    ),
                ],
            },
            "kserve": {"skipped": "image pytest-serving/kserve missing: run `pytest-serving build-images kserve`"},
        },
    }


def test_sweep_levels_are_charted_when_any_target_has_them(sweep_results):
    points, is_sweep = chart_points(sweep_results)
    assert is_sweep
    assert [(p.target, p.level) for p in points] == [
        ("torchserve", "users=4"),
        ("torchserve", "users=2"),
        ("triton", "users=2"),
        ("triton", "users=4"),
    ]
    triton_4 = points[3]
    assert triton_4.failures == 4  # two repeats with two failures each
    assert triton_4.n == 104
    assert triton_4.p95_ms == pytest.approx(40.0)
    assert triton_4.mean_ms == pytest.approx(40.0)  # over successes only: the failures' 1 ms do not count
    assert triton_4.configuration["users"] == 4 and triton_4.configuration["warmup"] == 1.0


def test_without_sweeps_the_phases_are_charted_as_points():
    results = {"targets": {"triton": {"load": [phase_entry("triton", measured([10.0, 30.0], users=3))]}}}
    (point,), is_sweep = chart_points(results)
    assert not is_sweep
    assert (point.scenario, point.axis, point.x, point.n) == ("phase", "users", 3.0, 2)
    assert point.p50_ms == pytest.approx(20.0)
    open_loop = {"targets": {"triton": {"load": [phase_entry("triton", measured([10.0], rate=5.0))]}}}
    assert chart_points(open_loop)[0][0].level == "rate=5"


def test_chart_specs_overlay_targets_per_scenario_and_split_each_target(sweep_results):
    specs = {spec.name: spec for spec in charts.chart_specs(chart_points(sweep_results)[0])}
    assert set(specs) == {
        "all-targets-warm-users",
        "triton-users",
        "torchserve-users",
        "torchserve-users-time",
    }
    overlay = specs["all-targets-warm-users"]
    assert [series.label for series in overlay.series] == ["torchserve", "triton"]
    assert [series.x for series in overlay.series] == [[2.0, 4.0], [2.0, 4.0]]  # sorted by load
    # Only levels with server metrics enter the time breakdown; Triton's one such level draws no curve.
    assert [point.level for point in specs["torchserve-users-time"].series[0].points] == ["users=2", "users=4"]


def test_single_level_phases_draw_no_chart():
    """A smoke phase per target is a table row, not three one-dot charts on an axis from 3.8 to 4.2 users."""
    results = {
        "targets": {
            name: {"load": [phase_entry(name, measured([10.0, 30.0], users=4))]} for name in ("triton", "kserve")
        }
    }
    assert charts.chart_specs(chart_points(results)[0]) == []


def test_server_breakdown_adds_up_to_the_server_time():
    assert charts.server_breakdown(server_metrics(1, 15, 17)) == {"queue": 1, "compute": 15, "rest of server": 1}
    # TorchServe's counters do not split compute out: it stays in the rest of the server's time.
    assert charts.server_breakdown(server_metrics(5, None, 45)) == {"queue": 5, "compute": 0.0, "rest of server": 40}
    # KServe reports its predict time only: no total, so no rest; the rest lies in the gap to the client.
    kserve = {"requests": 40.0, "queue_ms": None, "compute_ms": 200.0, "server_ms": None}
    assert charts.server_breakdown(kserve) == {"queue": 0.0, "compute": 200.0, "rest of server": 0.0}


def test_pairwise_agreement_counts_common_samples_only():
    matrix = pairwise_agreement(PREDICTIONS)
    assert matrix[("triton", "torchserve")].same == 2 and matrix[("triton", "torchserve")].n == 3
    assert matrix[("torchserve", "triton")] == matrix[("triton", "torchserve")]
    assert matrix[("kserve", "triton")].rate == 1.0 and matrix[("kserve", "triton")].n == 1
    assert ("triton", "triton") not in matrix


def test_a_recorded_agreement_matrix_wins(sweep_results):
    assert agreement_matrix(sweep_results)[("torchserve", "triton")].rate == pytest.approx(2 / 3)
    sweep_results["agreement"] = {"triton": {"torchserve": {"same": 9, "n": 10}}}
    recorded = Agreement(9, 10)
    assert agreement_matrix(sweep_results) == {("triton", "torchserve"): recorded, ("torchserve", "triton"): recorded}


def test_robustness_counts_by_outcome(sweep_results):
    assert robustness_counts(sweep_results["targets"]["triton"]) == {"pass": 2, "deviation": 1}


def test_terminal_tables_per_target(sweep_results):
    lines = terminal_tables(sweep_results, {"triton": ("ran", "pytest-serving/triton:2.51.0-cpu (triton 2.51.0)")})
    text = "\n".join(lines)
    assert "triton: ran: pytest-serving/triton:2.51.0-cpu (triton 2.51.0)" in lines
    assert "torchserve: ran: pytest-serving/torchserve:0.12.0-cpu (torchserve 0.12.0)" in lines  # from results.json
    assert any(line.startswith("kserve: skipped: image pytest-serving/kserve missing") for line in lines)
    triton = text[text.index("triton: ran") :]
    assert re.search(r"server\s+3\s+66\.7%\s+100\.0%\s+100\.0%", triton)
    assert re.search(r"cases\s+2\s+1\s+0", triton)
    assert re.search(r"warm\s+users=4\s+104\s+\S+\s+40\.0\s+40\.0\s+4 \(3\.8%\)", triton)
    assert re.search(r"warm\s+users=2\s+30\s+7\.5\s+20\.0\s+20\.0\s+0 \(0\.0%\)\s+1\.0\s+15\.0", triton)


def test_junit_properties_carry_the_figures_of_the_test(sweep_results):
    properties = dict(junit_properties(sweep_results, SWEEP_TEST.format(target="triton"), None))
    assert properties["triton.load.warm.users=2.p95_ms"] == "20"
    assert properties["triton.load.warm.users=2.server_queue_ms"] == "1"
    assert properties["triton.load.warm.users=4.failure_rate"] == "0.03846"
    assert not [key for key in properties if "torchserve" in key or "correctness" in key]
    contract = dict(
        junit_properties(sweep_results, "test_contract.py::test_accuracy_matches_reference[triton]", "triton")
    )
    assert contract == {
        "triton.correctness.n": "3",
        "triton.correctness.top1": "0.666667",
        "triton.correctness.top5": "1",
        "triton.correctness.agreement": "1",
    }


class References(HTMLParser):
    """Every attribute and inline style that could load something, and every image source."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.loads: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action", "background"):
                self.loads.append(value or "")
            if name == "src" and tag == "img":
                self.images.append(value or "")


def test_html_is_self_contained_and_its_charts_decode(sweep_results):
    images = {spec.name: _tiny_png() for spec in charts.chart_specs(chart_points(sweep_results)[0])}
    page = report_html(sweep_results, images)
    parser = References()
    parser.feed(page)
    assert not {"script", "link", "iframe", "object", "embed"} & set(parser.tags)
    assert all(reference.startswith("data:image/png;base64,") for reference in parser.loads)
    assert not re.search(r"url\(|@import", page)
    assert "http://127.0.0.1:8000" not in page  # the phases' base URL is no reference either
    assert len(parser.images) == len(images) == 4
    for source in parser.images:
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()


def test_html_shows_every_section_with_its_conditions(sweep_results):
    page = report_html(sweep_results, {})
    for expected in (
        "sha256:0123abcd",  # weights id
        "pytest-serving/torchserve:0.12.0-cpu",
        "image pytest-serving/kserve missing",  # a skipped target and why
        "users=4",
        "1.0 + 4.0",  # warm-up + measured seconds
        "66.7%",  # top-1
        "deviation · 500 · survived",  # a robustness cell
        "not run",  # a case one target has and another lacks
        "Server metrics n/a: no metrics URL",
        "Charts need matplotlib",
    ):
        assert expected in page, expected
    assert "No sweep in these results" not in page


def test_html_of_a_smoke_run_says_it_shows_single_phases():
    results = {"targets": {"triton": {"load": [phase_entry("triton", measured([10.0, 30.0]))]}}}
    assert "No sweep in these results" in report_html(results, {})


def test_render_report_writes_the_page_and_the_chart_files_atomically(tmp_path):
    levels = [level_entry("triton", users, [measured([20.0] * 30, users=users)]) for users in (2, 4)]
    results = {"targets": {"triton": {"load": levels}}}
    (tmp_path / "report" / "charts").mkdir(parents=True)
    (tmp_path / "report" / "charts" / "kserve-users.png").write_bytes(_tiny_png())  # from an earlier report
    path = render_report(results, tmp_path / "report")
    assert path == tmp_path / "report" / "report.html"
    pngs = sorted((tmp_path / "report" / "charts").glob("*.png"))
    assert sorted(png.stem for png in pngs) == ["all-targets-warm-users", "triton-users"]
    page = path.read_text()
    for png in pngs:
        assert base64.b64encode(png.read_bytes()).decode() in page
        assert Image.open(png).size[0] > 400
    assert not [leftover for leftover in tmp_path.rglob("*.tmp")]


def test_without_matplotlib_the_page_is_written_without_charts(sweep_results, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = render_report(sweep_results, tmp_path).read_text()
    assert "pip install pytest-serving[report]" in page
    assert "<img" not in page


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def test_phases_with_container_readings_get_a_latency_memory_and_cpu_chart():
    stats = measured([10.0] * 40)
    opened = 1_790_000_000.0
    readings = [ResourceSample(opened + t, 120.0 + t, 0.5) for t in np.arange(-1.0, 4.0, 0.5)]
    resources = phase_resources(readings, opened, 1.0, 4.0, 1.0, [10.0] * 4, startup_s=5.0)
    results = {
        "targets": {
            "triton": {"load": [phase_entry("triton", replace(stats, resources=resources))]},
            "kserve": {"load": [phase_entry("kserve", stats)]},  # not started here: no readings
        }
    }
    (spec,) = charts.resource_specs(results)
    assert (spec.name, spec.kind, [series.label for series in spec.series]) == (
        "triton-resources",
        "resources",
        ["#1 test_smoke[triton] users=4"],
    )
    png = charts.draw(spec)
    assert Image.open(io.BytesIO(png)).size[0] > 1000


def test_impossible_server_figures_are_flagged_with_their_likely_cause():
    stats = measured([100.0] * 40)
    entry = phase_entry("torchserve", stats, server_metrics=server_metrics(0.0, None, server_ms=816.6))
    lines = terminal_tables({"targets": {"torchserve": {"load": [entry]}}}, {})
    (flag,) = [line for line in lines if "impossible figure" in line]
    assert "server time 816.6 ms per request is above the client's mean 100.0 ms (outside server -716.6 ms)" in flag
    assert "counters include the warm-up or other traffic" in flag
    html = report_html({"targets": {"torchserve": {"load": [entry]}}}, {})
    assert "impossible figure" in html


def test_the_terminal_table_shows_wrong_answers_and_a_short_verdict():
    answers = AnswerCheck(answered=90, checked=90, required=90, distinct=9, mismatches=12, tolerance=1e-3)
    entry = phase_entry(
        "triton",
        replace(measured([10.0] * 40), answers=answers),
        verdict="fail (1 violation); unstable: 2 full windows, 3 needed",
    )
    (row,) = [line for line in terminal_tables({"targets": {"triton": {"load": [entry]}}}, {}) if "users=4" in line]
    assert "12/90" in row and row.rstrip().endswith("fail (1 violation) (unstable)")
    properties = dict(
        junit_properties({"targets": {"triton": {"load": [entry]}}}, SMOKE_TEST.format(target="triton"), None)
    )
    assert properties["triton.load.phase.users=4.answers_wrong"] == "12"


def test_a_target_that_answered_no_sample_shows_its_count_and_first_error():
    record = {"n": 6, "answered": 0, "failures": 6, "first_error": "sample a: ProtocolError: v2: HTTP 500: stub"}
    results = {"targets": {"triton": {"correctness": record}}}
    lines = terminal_tables(results, {"triton": ("ran", "triton 2.51.0")})
    assert "  correctness: 6 of 6 samples unanswered; first: sample a: ProtocolError: v2: HTTP 500: stub" in lines
    assert junit_properties(results, "test_contract.py::test_accuracy_matches_reference[triton]", "triton") == []
    assert "6 unanswered: sample a: ProtocolError: v2: HTTP 500: stub" in report_html(results, {})
