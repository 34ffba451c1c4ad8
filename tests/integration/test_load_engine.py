"""The load engine against a real loopback HTTP server, with real Locust processes (about 30 s in all)."""

import shutil
import ssl
import subprocess
import time
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
from loopback import serving

from pytest_serving.load.answers import KeptAnswers
from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.runner import LoadError, free_port, locust_commands, run_phase, run_processes
from pytest_serving.load.safety import UnsafeTargetError
from pytest_serving.load.stats import RawSamples
from pytest_serving.protocols.base import HttpRequest

DELAY_S = 0.02
OK = HttpRequest("POST", "/ok", b"\xff\xd8payload", {"Content-Type": "application/octet-stream"})
FAIL = HttpRequest("GET", "/fail")
SLOW = HttpRequest("GET", "/slow")
WARMING = HttpRequest("GET", "/warming")
#: /warming starts this much slower and is warm after WARMING_S.
WARMING_DELAY_S = 0.2
WARMING_S = 3.0


class DelayingHandler(BaseHTTPRequestHandler):
    """Answers after DELAY_S: 200 on /ok, 503 on /fail; /slow takes a second."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    received = 0

    def do_GET(self):
        type(self).received += 1
        time.sleep(1.0 if self.path == "/slow" else DELAY_S + self.warming_delay())
        body = b"{}" if self.path != "/echo" else self.path.encode() + b" " + self.headers.get("X-Sample", "").encode()
        self.send_response(503 if self.path == "/fail" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def warming_delay(self) -> float:
        """On /warming: slow at first, falling linearly to nothing over WARMING_S from the first request."""
        if self.path != "/warming":
            return 0.0
        cls = type(self)
        cls.warming_since = cls.warming_since or time.monotonic()
        return max(0.0, WARMING_DELAY_S * (1 - (time.monotonic() - cls.warming_since) / WARMING_S))

    warming_since = 0.0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server_url():
    with serving(DelayingHandler) as url:
        yield url


@pytest.fixture(scope="module")
def tls_server_url(tmp_path_factory):
    """The same server behind TLS with a self-signed certificate (the engine does not check certificates)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found (apt-get install -y openssl): needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    key, certificate = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    with serving(DelayingHandler, lambda plain: context.wrap_socket(plain, server_side=True)) as url:
        yield url


@pytest.mark.parametrize(
    "phase",
    [LoadPhase(users=2, duration=1.5, warmup=0.5), LoadPhase(rate=20.0, arrival="constant", duration=1.5, warmup=0.5)],
    ids=["closed loop", "open loop"],
)
def test_https_targets_are_loaded_too(tls_server_url, phase):
    stats = run_phase(tls_server_url, [OK], phase)
    assert stats.n > 0
    assert stats.status_counts == {"200": stats.n}
    assert stats.latency.min >= DELAY_S * 1000


def test_closed_loop_measures_latency_and_status_counts(server_url):
    received_before = DelayingHandler.received
    stats = run_phase(server_url, [OK, FAIL], LoadPhase(users=3, duration=2.0, warmup=0.5))
    assert stats.n > 0
    assert stats.latency.min >= DELAY_S * 1000
    assert set(stats.status_counts) == {"200", "503"}
    assert abs(stats.status_counts["200"] - stats.status_counts["503"]) <= 3  # every user alternates
    assert stats.failures == stats.status_counts["503"]
    assert DelayingHandler.received - received_before >= stats.n  # warmup requests were sent too
    assert len(stats.windows) == 2
    assert stats.offered_rps == stats.n / 2.0
    assert stats.rps == pytest.approx(stats.offered_rps, rel=0.1)


def test_open_loop_constant_rate_is_kept(server_url):
    stats = run_phase(server_url, [OK], LoadPhase(rate=40.0, arrival="constant", duration=2.0, warmup=0.5))
    assert stats.n == pytest.approx(80, abs=2)
    assert stats.offered_rps == pytest.approx(40.0, rel=0.05)
    assert stats.rps == pytest.approx(40.0, rel=0.1), stats.to_dict()
    assert stats.dropped_sends == 0
    assert stats.status_counts == {"200": stats.n}
    assert stats.latency.min >= DELAY_S * 1000


def test_two_workers_merge_their_raw_files(server_url, tmp_path):
    stats = run_phase(server_url, [OK], LoadPhase(users=4, workers=2, duration=2.0, warmup=0.5), raw_dir=tmp_path)
    per_worker = [RawSamples.load(tmp_path / f"raw-{index}.npz").code.size for index in range(2)]
    assert all(count > 0 for count in per_worker)
    assert stats.n == sum(per_worker)
    assert stats.processes == 2
    assert stats.latency.min >= DELAY_S * 1000


def test_unanswered_requests_fail_with_a_reason():
    stats = run_phase(f"http://127.0.0.1:{free_port()}", [OK], LoadPhase(users=1, duration=1.0, warmup=0.2))
    assert stats.n > 0
    assert stats.failure_rate == 1.0
    assert stats.status_counts == {"ConnectionRefusedError": stats.n}
    assert stats.latency is None


def test_timed_out_requests_fail_with_a_reason(server_url):
    phase = LoadPhase(rate=5.0, arrival="constant", duration=1.0, warmup=0.0, request_timeout=0.2)
    stats = run_phase(server_url, [SLOW], phase)
    assert stats.n == 5
    (reason,) = stats.status_counts
    assert "timeout" in reason.lower()
    assert np.isclose(stats.failure_rate, 1.0)


def test_a_phase_past_its_time_limit_is_stopped_and_reported(server_url):
    started = time.monotonic()
    with pytest.raises(LoadError, match="still running at its time limit"):
        run_phase(server_url, [OK], LoadPhase(users=1, duration=30.0, warmup=0.0, timeout=3.0))
    assert time.monotonic() - started < 10


def test_remote_targets_are_refused_before_any_load():
    with pytest.raises(UnsafeTargetError):
        run_phase("http://192.0.2.1:8000", [OK], LoadPhase(users=1))


def test_a_failing_locust_process_is_reported_with_its_log(tmp_path):
    commands = locust_commands("http://127.0.0.1:9", LoadPhase(users=1, duration=1.0), tmp_path / "missing-plan.json")
    with pytest.raises(LoadError, match=r"(?s)Locust local exited with code 3.*cannot read its run plan"):
        run_processes(commands, tmp_path, deadline_s=60.0)


def test_the_runner_is_told_when_the_measured_window_opens(server_url):
    opened: list[float] = []
    started = time.monotonic()
    run_phase(
        server_url,
        [OK],
        LoadPhase(users=1, duration=1.0, warmup=1.5),
        on_window_open=lambda: opened.append(time.monotonic()),
    )
    finished = time.monotonic()
    assert len(opened) == 1
    # Locust's start-up, then the warm-up; after the window opens, the measured second still runs.
    assert opened[0] - started >= 1.5
    assert finished - opened[0] >= 1.0


@pytest.mark.parametrize(
    "phase",
    [LoadPhase(users=3, duration=1.5, warmup=0.5), LoadPhase(rate=30.0, arrival="constant", duration=1.5, warmup=0.5)],
    ids=["closed loop", "open loop"],
)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_answers_are_kept_by_the_request_they_answer(server_url, tls_server_url, phase, scheme):
    requests = [HttpRequest("GET", "/echo", headers={"X-Sample": str(index)}) for index in range(3)]
    kept: list[KeptAnswers] = []
    run_phase(server_url if scheme == "http" else tls_server_url, requests, phase, check_answers=kept.append)
    (answers,) = kept
    assert answers.unkept == 0 and answers.answered == sum(answers.counts.values()) > 0
    assert {index: body for index, body in answers.counts} == {index: b"/echo %d" % index for index in range(3)}


def test_an_adaptive_warmup_lasts_until_the_server_is_warm(server_url):
    phase = LoadPhase(users=2, duration=1.0, warmup=0.5, max_warmup=10.0, window=0.25)
    stats = run_phase(server_url, [WARMING], phase)
    # Windows still getting faster are not stable: the warm-up outlasts the warming server.
    assert WARMING_S <= stats.warmup_s <= phase.max_warmup + 1.0
    assert stats.warmup_note.startswith(("settled after", "not settled by the maximum"))
    assert stats.configuration["max_warmup"] == 10.0


def test_a_phase_grows_until_it_has_measured_its_minimum_of_requests(server_url):
    """One user at about 40 answers/s: 1 s holds about 40, so the window grows to hold 100."""
    phase = LoadPhase(users=1, duration=1.0, warmup=0.2, min_requests=100, max_duration=10.0)
    stats = run_phase(server_url, [OK], phase)
    assert stats.n >= 100 and 1.0 < stats.duration < 10.0
    assert stats.rps == pytest.approx(stats.n / stats.duration, rel=0.1)


def test_the_growth_stops_at_the_maximum_duration(server_url):
    phase = LoadPhase(users=1, duration=1.0, warmup=0.2, min_requests=100_000, max_duration=2.0)
    stats = run_phase(server_url, [OK], phase)
    assert stats.duration == 2.0 and 0 < stats.n < 100_000
