"""The release section of report.html and the terminal line, from records made by the release code itself."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from pytest_serving.release.rollout import Answers, summarize_rollout
from pytest_serving.report import charts
from pytest_serving.report.html import render_report, report_html
from pytest_serving.report.results import ResultsStore, record_release, record_rollout, record_rollout_skipped
from pytest_serving.report.summary import terminal_tables
from pytest_serving.verdicts.stats import P95_LATENCY, THROUGHPUT, paired_correctness, paired_ratio
from pytest_serving.verdicts.verdict import ReleaseLimits, decide


def release_results(candidate_scale: float = 2.0) -> dict:
    """One target's release (candidate ``candidate_scale`` times slower, 20 points less accurate on
    200 samples) and rollout (a 2 s switch at 10/s), recorded through the results module."""
    rng = np.random.default_rng(0)
    current = [20.0 * rng.lognormal(0, 0.3, 100) for _ in range(5)]
    candidate = [20.0 * candidate_scale * rng.lognormal(0, 0.3, 100) for _ in range(5)]
    paired = paired_correctness([True] * 160 + [False] * 40, [True] * 120 + [False] * 80, [True] * 150 + [False] * 50)
    windows = [
        {"index": 2 * i + (version == "candidate"), "version": version, "p95_ms": float(np.percentile(block, 95))}
        for i, (a, b) in enumerate(zip(current, candidate))
        for version, block in (("current", a), ("candidate", b))
    ]
    record = decide(
        {"model": "efficientnet_lite0", "server_version": "1"},
        {"model": "slow_lite0", "server_version": "2"},
        paired,
        paired_ratio(current, candidate, P95_LATENCY),
        paired_ratio([np.array([50.0])] * 5, [np.array([25.0])] * 5, THROUGHPUT),
        ReleaseLimits(),
        {
            "windows": windows,
            "current_sample_ms": np.concatenate(current).tolist(),
            "candidate_sample_ms": np.concatenate(candidate).tolist(),
        },
    )
    sent = np.arange(0, 20, 0.1)
    version = np.where(sent < 11, "1", "2")
    rollout = summarize_rollout(
        Answers(sent, np.full(sent.size, 15.0), np.ones(sent.size, bool), list(version)),
        switch_started_s=9.0, switch_done_s=11.0, old_version="1", grace_s=2.0, rate=10.0,
    )  # fmt: skip
    store = ResultsStore(None)
    record_release(store, "triton", record)
    record_rollout(store, "triton", rollout)
    return store.read()


def test_the_release_section_shows_verdict_reasons_and_both_versions():
    results = release_results()
    page = report_html(results, {})
    assert "Release: candidate against current" in page
    assert "triton: <span class='fail'>fail</span>" in page
    assert "drop of 20.0 points" in page and "n=200" in page
    assert "<td>efficientnet_lite0</td><td>slow_lite0</td>" in page and "McNemar p=" in page
    assert "<td>version on the server</td><td>1</td><td>2</td>" in page
    assert "p95 latency ms (5 windows each, trimmed geometric mean)" in page
    assert "rollout under load" in page


def test_release_charts_are_drawn_and_embedded(tmp_path):
    results = release_results()
    assert sorted(charts.release_charts(results)) == ["release-triton-latency", "release-triton-rollout"]
    page = render_report(results, tmp_path).read_text()
    for name in ("release-triton-latency", "release-triton-rollout"):
        png = (tmp_path / "charts" / f"{name}.png").read_bytes()
        assert base64.b64encode(png).decode() in page
        assert Image.open(io.BytesIO(png)).size[0] > 1000


def test_a_report_without_a_candidate_has_no_release_section():
    assert "Release:" not in report_html({"targets": {"triton": {}}}, {})


def test_terminal_prints_one_release_line_and_one_rollout_line_per_target():
    lines = terminal_tables(release_results(), {"triton": ("ran", "image")})
    release = [line for line in lines if line.strip().startswith("release:")]
    assert len(release) == 1 and release[0].strip().startswith("release: FAIL: accuracy:")
    (rollout,) = [line for line in lines if line.strip().startswith("rollout:")]
    assert "200 requests at 10/s, 0 failed, 0 stale answers after 2 s grace, switch 2.00 s" in rollout


def test_a_skipped_rollout_is_reported_with_its_reason_in_the_terminal_and_the_report():
    store = ResultsStore(None)
    for key, value in release_results()["targets"]["triton"].items():
        if key == "release":
            store.set(("targets", "kserve", key), value)
    record_rollout_skipped(store, "kserve", "kserve: cannot switch the model live: no versions")
    results = store.read()
    (line,) = [line for line in terminal_tables(results, {"kserve": ("ran", "image")}) if "rollout:" in line]
    assert line.strip() == "rollout: SKIPPED: kserve: cannot switch the model live: no versions"
    page = report_html(results, {})
    assert "kserve: rollout under load: skipped" in page and "cannot switch the model live: no versions" in page
    assert "rollout under load</h3>" not in page
