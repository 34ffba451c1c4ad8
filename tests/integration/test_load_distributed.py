"""Phases over Locust workers started by ``pytest-serving load-worker``, each in an empty directory of its own,
against a loopback HTTP server: results arrive over Locust's channel; lost, missing, mismatched and refusing
workers are named (about 60 s)."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from loopback import serving

from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.runner import LoadError, child_environment, free_port, run_phase
from pytest_serving.load.stats import RawSamples, is_success
from pytest_serving.protocols.base import HttpRequest

pytestmark = pytest.mark.integration

DELAY_S = 0.01
OK = HttpRequest("GET", "/ok")


class CountingHandler(BaseHTTPRequestHandler):
    """Answers 200 after DELAY_S and counts what it answered."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    answered = 0

    def do_GET(self):
        time.sleep(DELAY_S)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        type(self).answered += 1

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with serving(CountingHandler) as url:  # a worker killed mid-request hangs up: the server stays quiet
        yield url


@pytest.fixture
def master_bind() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def load_workers(
    master_bind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], subprocess.Popen]]:
    """Starts ``pytest-serving load-worker --master <master_bind>`` processes, each in an empty directory of its
    own (kept in ``.cwd``); all of them, and what they started, are killed at the end."""
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        cwd = tmp_path_factory.mktemp("load-worker")
        argv = [sys.executable, "-m", "pytest_serving.cli", "load-worker", "--master", master_bind]
        process = subprocess.Popen(argv, cwd=cwd, env=child_environment(), start_new_session=True)
        process.cwd = cwd
        started.append(process)
        return process

    yield start
    for process in started:
        kill_group(process)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def phase(master_bind: str, **options) -> LoadPhase:
    defaults = {"duration": 2.0, "warmup": 0.5, "request_timeout": 5.0, "worker_timeout": 20.0}
    return LoadPhase(master_bind=master_bind, **{**defaults, **options})


def test_two_remote_workers_send_their_samples_over_the_channel(server_url, master_bind, load_workers, tmp_path):
    workers = [load_workers(), load_workers()]
    answered_before = CountingHandler.answered
    closed = run_phase(server_url, [OK], phase(master_bind, users=4, remote_workers=2), raw_dir=tmp_path / "closed")
    parts = [RawSamples.load(tmp_path / "closed" / f"raw-{share}.npz") for share in range(2)]
    assert all(part.code.size > 0 for part in parts)
    assert closed.n == sum(part.code.size for part in parts)
    assert CountingHandler.answered - answered_before >= closed.n  # warm-up requests come on top
    assert closed.processes == 2
    pooled = np.concatenate([part.latency_ms[is_success(part.code)] for part in parts])
    assert [closed.latency.p50, closed.latency.p90, closed.latency.p95, closed.latency.p99] == np.percentile(
        pooled, [50, 90, 95, 99]
    ).tolist()
    assert closed.latency.min >= DELAY_S * 1000

    # The same workers serve the next phase: an open loop whose shares merge into the schedule asked for.
    open_loop = phase(master_bind, rate=40.0, arrival="constant", remote_workers=2)
    opened = run_phase(server_url, [OK], open_loop, raw_dir=tmp_path / "open")
    offsets = np.sort(np.concatenate([RawSamples.load(path).offset_s for path in (tmp_path / "open").glob("raw-*")]))
    assert opened.n == offsets.size == pytest.approx(80, abs=2)
    assert np.allclose(np.diff(offsets), 1 / 40.0, atol=1e-6)
    for worker in workers:
        assert worker.poll() is None, "a load worker stopped between phases"
        assert list(worker.cwd.iterdir()) == [], "a load worker wrote into its working directory"


def test_a_worker_lost_mid_phase_is_named_and_the_next_phase_runs(server_url, master_bind, load_workers):
    survivor, victim = load_workers(), load_workers()

    def kill_victim() -> None:
        time.sleep(4.0)  # the workers' windows open up to a second after the master's: let the victim record
        kill_group(victim)

    with pytest.raises(LoadError) as lost:
        run_phase(
            server_url,
            [OK],
            phase(master_bind, users=4, remote_workers=2, duration=15.0),
            on_window_open=lambda: threading.Thread(target=kill_victim).start(),
        )
    message = str(lost.value)
    assert f"load-worker pid {victim.pid}" in message, message
    assert "stopped answering" in message and "measured request(s)" in message, message
    recorded = re.search(r"its (\d+) measured request\(s\)", message)
    assert recorded is not None and int(recorded[1]) > 0, message

    stats = run_phase(server_url, [OK], phase(master_bind, users=2, remote_workers=1))
    assert stats.n > 0 and stats.processes == 1
    assert survivor.poll() is None


def test_a_worker_that_never_comes_is_a_timeout_naming_the_address(server_url, master_bind):
    started = time.monotonic()
    with pytest.raises(LoadError, match=f"waited 3 s for 1 Locust worker\\(s\\) at {master_bind}; 0 arrived"):
        run_phase(server_url, [OK], phase(master_bind, users=1, remote_workers=1, worker_timeout=3.0))
    assert time.monotonic() - started < 15


def test_a_worker_of_another_version_is_refused_on_both_sides(server_url, master_bind, tmp_path):
    # A worker whose package says another version: the same locustfile, run with __version__ patched.
    host, port = master_bind.rsplit(":", 1)
    locustfile = Path(sys.modules["pytest_serving"].__file__).parent / "load" / "users.py"
    script = (
        "import sys, runpy, pytest_serving; pytest_serving.__version__ = '0.0.0-old'; "
        f"sys.argv = ['locust', '-f', {str(locustfile)!r}, '--worker', '--master-host', {host!r}, "
        f"'--master-port', {port!r}]; runpy.run_module('locust', run_name='__main__')"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, env=child_environment(), stderr=subprocess.PIPE, text=True
    )
    try:
        with pytest.raises(LoadError, match="runs pytest-serving 0.0.0-old but the master runs") as refused:
            run_phase(server_url, [OK], phase(master_bind, users=1, remote_workers=1))
        _, worker_log = worker.communicate(timeout=20)
    finally:
        worker.kill()
    assert worker.returncode == 4
    assert str(refused.value).splitlines()[0] in worker_log


def test_a_worker_refuses_a_remote_target_the_master_allowed(master_bind, load_workers):
    # .invalid never resolves: were the worker's check missing, its requests would fail to resolve, not leave.
    worker = load_workers()
    target = "http://load-target.invalid:8000"
    with pytest.raises(LoadError, match="refused the phase: refusing to send load to 'load-target.invalid'"):
        run_phase(target, [OK], phase(master_bind, users=1, remote_workers=1), allow_remote=True)
    assert worker.wait(timeout=30) == 1  # refused: load-worker stops rather than attach again
