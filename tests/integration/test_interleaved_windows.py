"""Interleaved windows in one real Locust process against a loopback server whose two paths answer at
different speeds: every window measures its own version only, with a warm-up on both (about 10 s)."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from loopback import serving

from pytest_serving.load.interleave import interleaved_schedule
from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.runner import run_phase
from pytest_serving.load.stats import RawSamples
from pytest_serving.protocols.base import HttpRequest

DELAY_S = {"/fast": 0.01, "/slow": 0.04}


class TwoSpeedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    #: One handler per accepted connection.
    connections = 0

    def setup(self):
        type(self).connections += 1
        super().setup()

    def do_GET(self):
        time.sleep(DELAY_S[self.path])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def server_url():
    with serving(TwoSpeedHandler) as url:
        yield url


def test_one_process_measures_every_window_on_its_own_version(server_url, tmp_path: Path):
    requests = [HttpRequest("GET", "/fast"), HttpRequest("GET", "/slow")]
    order = ["fast", "slow", "slow", "fast", "fast", "slow"]
    schedule = interleaved_schedule(order, 1.0, 0.2, {"fast": (0,), "slow": (1,)})
    phase = LoadPhase(users=2, duration=schedule.duration_s, warmup=1.0, max_warmup=5.0)
    TwoSpeedHandler.connections = 0
    stats = run_phase(server_url, requests, phase, started_by_plugin=True, raw_dir=tmp_path, schedule=schedule)
    samples = RawSamples.merge([RawSamples.load(path) for path in tmp_path.glob("raw-*.npz")])
    assert stats.failures == 0 and stats.warmup_s is not None and 1.0 <= stats.warmup_s <= 5.5
    for window in schedule.windows:
        inside = (samples.offset_s >= window.start_s) & (samples.offset_s < window.end_s)
        median = float(np.median(samples.latency_ms[inside]))
        assert inside.sum() > 10, window
        # Every request of a window went to its own path: the medians lie near that path's delay.
        expected_ms = 1000 * DELAY_S[f"/{window.role}"]
        assert expected_ms <= median < expected_ms + 15, (window, median)
    # Both users kept their connections from the warm-up through every window.
    assert TwoSpeedHandler.connections == phase.users
