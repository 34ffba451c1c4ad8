"""report.html as a browser shows it: rendered from a two-target study, checked in headless Chromium.

The results are built in the test with the load engine's own statistics code (fast, no
server); the page must open offline and the browser must show every chart
(``pytest-serving check-report``, which checks a real run's report the same way).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_serving.cli import main
from pytest_serving.correctness import CorrectnessSummary
from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.stats import RawSamples, summarize
from pytest_serving.load.sweep import SweepLevel
from pytest_serving.report.html import render_report
from pytest_serving.report.render_check import BrowserMissing, check_report, find_browser, image_sources

#: matplotlib's first two line colours, which only the charts use on the page.
CHART_COLOURS = ((31, 119, 180), (255, 127, 14))
LEVELS = (10, 20, 30, 40, 50)


def sweep_level(users: int, service_ms: float, rng: np.random.Generator) -> dict:
    """One sweep level of a server that saturates: latency grows with users, failures appear late."""
    latency = rng.gamma(4.0, service_ms * users / 40.0, size=int(users * 160 / service_ms))
    failed = int(max(0, users - service_ms / 2) // 5)
    codes = np.array([503] * failed + [200] * latency.size, dtype=np.int32)
    offsets = np.linspace(0.0, 10.0, codes.size, endpoint=False)
    samples = RawSamples(offsets, np.concatenate([np.ones(failed), latency]), codes, offsets, started_at=1.79e9)
    stats = summarize(samples, LoadPhase(users=users, duration=10.0, warmup=2.0), base_url="http://127.0.0.1:8000")
    queue = service_ms * max(0, users - 20) / 20
    return {
        **SweepLevel(users, (stats,)).to_dict(),
        "kind": "sweep-level",
        "test": "test_load.py::test_sweep",
        "server_metrics": {
            "requests": float(codes.size),
            "queue_ms": queue,
            "compute_ms": service_ms,
            "server_ms": queue + service_ms * 1.1,
        },
    }


def study_results() -> dict:
    rng = np.random.default_rng(0)
    targets = {}
    for name, service_ms, image in (
        ("triton", 40.0, "pytest-serving/triton:2.51.0-cpu"),
        ("torchserve", 70.0, "pytest-serving/torchserve:0.12.0-cpu"),
    ):
        targets[name] = {
            "server": {"image": image, "version": f"{name} x.y", "image_origin": "offline", "gpus": "none (CPU)"},
            "correctness": CorrectnessSummary(200, 0.74, 0.92, 0.74, 0.92, 1.0, 2e-6, {}).to_dict(),
            "predictions": {f"s{i}": [[i % 7, 1, 2, 3, 4], [0.5, 0.2, 0.1, 0.1, 0.1]] for i in range(200)},
            "robustness": {
                case: {"outcome": outcome, "status": 400, "survived": True, "problems": []}
                for case, outcome in (("empty", "pass"), ("tiff", "pass"), ("json-malformed", "deviation"))
            },
            "load": [
                {**sweep_level(users, service_ms, rng), "scenario": scenario}
                for scenario in ("warm", "fresh")
                for users in LEVELS
            ],
        }
    return {"session": {"model": "efficientnet_lite0", "weights_id": "sha256:feed", "host_cpus": 2}, "targets": targets}


def browser() -> str:
    try:
        return find_browser()
    except BrowserMissing as missing:
        if os.environ.get("PYTEST_SERVING_STRICT"):
            pytest.fail(f"{missing} [PYTEST_SERVING_STRICT is set]", pytrace=False)
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def study_report(tmp_path_factory) -> Path:
    return render_report(study_results(), tmp_path_factory.mktemp("study"))


def test_report_is_self_contained(study_report):
    sources = image_sources(study_report.read_text())
    # Both scenarios overlaid, per target its panels and its time breakdown.
    assert len(sources) == 6
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).size[0] >= 700
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", study_report.read_text())


def test_the_browser_shows_every_chart(study_report, tmp_path):
    check = check_report(study_report, tmp_path / "screenshot.png", browser())
    assert check.problems == []
    assert (check.charts, check.visible) == (6, 6)
    pixels = np.asarray(Image.open(check.screenshot).convert("RGB")).astype(int)
    assert pixels.shape[1] == 1400 and pixels.shape[0] > 3000  # the whole page, not the first screen
    for colour in CHART_COLOURS:
        close = (np.abs(pixels - np.array(colour)).sum(axis=2) < 40).sum()
        assert close > 500, f"chart colour {colour} painted on {close} pixels only: the charts did not render"


def test_the_browser_shows_the_release_charts_beside_the_study(tmp_path):
    """A release (latency distributions) and a rollout (per-second chart) on top of the study's six charts:
    the release section sits before the load section, so its charts stay inside the screenshot."""
    spec = importlib.util.spec_from_file_location(
        "release_report", Path(__file__).parents[1] / "unit" / "test_release_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = study_results()
    results["targets"]["triton"] |= module.release_results()["targets"]["triton"]
    report = render_report(results, tmp_path / "out")
    check = check_report(report, tmp_path / "screenshot.png", browser())
    assert check.problems == []
    assert (check.charts, check.visible) == (8, 8)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda html: html.replace("base64,", "base64,AAAA", 1), "could not decode"),
        (
            lambda html: html.replace("<img class='chart'", "<img class='chart' style='visibility:hidden'", 1),
            "look like",
        ),
        (lambda html: html.replace("<img class='chart'", "<img class='chart' style='width:40px'", 1), "shown at 40x"),
    ],
    ids=["corrupt data", "hidden", "shrunk"],
)
def test_the_check_sees_a_chart_that_does_not_show(study_report, tmp_path, damage, problem):
    damaged = tmp_path / "report.html"
    damaged.write_text(damage(study_report.read_text()))
    check = check_report(damaged, tmp_path / "screenshot.png", browser())
    assert not check.ok
    assert check.visible == 5
    assert len(check.problems) == 1 and problem in check.problems[0], check.problems


def test_check_report_command_exit_status(study_report, tmp_path, capsys, monkeypatch):
    browser()
    monkeypatch.chdir(study_report.parent.parent)  # relative paths, as a user types them
    assert main(["check-report", study_report.parent.name, "--screenshot", str(tmp_path / "good.png")]) == 0
    assert "6 of 6 chart(s) shown" in capsys.readouterr().out
    damaged = tmp_path / "damaged.html"
    damaged.write_text(study_report.read_text().replace("base64,", "base64,AAAA", 1))
    assert main(["check-report", str(damaged)]) == 1
    assert "PROBLEM chart 1: the browser could not decode the image" in capsys.readouterr().out
    assert (tmp_path / "damaged-screenshot.png").is_file()
    assert main(["check-report", str(tmp_path / "nowhere")]) == 2


def test_a_real_sweep_report_shows_every_chart(pytester, offline_image, session_id, tmp_path):
    """The acceptance command in small: a sweep on two real servers, both scenarios, then the browser check."""
    chromium = browser()
    for target in ("triton", "kserve"):
        offline_image(target)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider",
        "--serving=triton,kserve-v1",
        "--serving-load=sweep",
        "--serving-sweep-levels=1,2",
        "--serving-sweep-duration=2",
        "--serving-sweep-warmup=1",
        "--serving-report=out",
        "-k", "test_sweep",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert result.parseoutcomes()["passed"] == 4  # two targets × fresh and warm
    report = pytester.path / "out" / "report.html"
    check = check_report(report, tmp_path / "screenshot.png", chromium)
    assert check.problems == []
    # Fresh and warm overlaid for all targets, then per target its panels, its time breakdown
    # (KServe's from its predict time alone) and its latency, memory and CPU over each phase.
    assert check.charts == check.visible == 8
    assert sorted(path.name for path in (pytester.path / "out" / "charts").glob("all-targets-*.png")) == [
        "all-targets-fresh-users.png",
        "all-targets-warm-users.png",
    ]
