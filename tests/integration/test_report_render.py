"""report.html as a browser shows it: rendered from a two-target study, screenshotted by headless Chromium.

The results are built in the test with the load engine's own statistics code (fast, no
server); the page must open offline and the browser must paint its charts.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from pytest_serving.correctness import CorrectnessSummary
from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.stats import RawSamples, summarize
from pytest_serving.load.sweep import SweepLevel
from pytest_serving.report.html import render_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "apt-get install -y chromium"
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
            "correctness": CorrectnessSummary(200, 0.74, 0.92, 0.74, 0.92, 1.0, 2e-6).to_dict(),
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
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    reason = f"headless Chromium not found ({', '.join(BROWSERS)}): {INSTALL}"
    if os.environ.get("PYTEST_SERVING_STRICT"):
        pytest.fail(f"{reason} [PYTEST_SERVING_STRICT is set]", pytrace=False)
    pytest.skip(reason)


class ImageSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources += [value for name, value in attrs if name == "src"]


def test_report_opens_offline_and_the_browser_paints_its_charts(tmp_path):
    chromium = browser()
    report = render_report(study_results(), tmp_path / "report")
    parser = ImageSources()
    parser.feed(report.read_text())
    # Both scenarios overlaid, per target its panels and its time breakdown.
    assert len(parser.sources) == 6
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).size[0] >= 700

    screenshot = tmp_path / "report.png"
    completed = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}", "--window-size=1400,3000", report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert screenshot.is_file(), f"no screenshot (exit {completed.returncode}): {completed.stderr[-2000:]}"
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    assert pixels.shape == (3000, 1400, 3)
    assert (pixels.sum(axis=2) < 600).mean() > 0.02, "the page looks blank"
    for colour in CHART_COLOURS:
        close = (np.abs(pixels - np.array(colour)).sum(axis=2) < 40).sum()
        assert close > 500, f"chart colour {colour} painted on {close} pixels only: the charts did not render"
