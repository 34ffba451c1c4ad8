"""What the benchmarks share: loopback servers, CPU placement and the machine line of a result.

Every benchmark runs its servers and load generators on 127.0.0.1 only. On the
two-core machine the load generator goes on one core and the server on the
other (``taskset -c``), so that neither steals the other's CPU. The machine is
shared, so a benchmark can also run both under the real-time FIFO scheduler
(``chrt --fifo``): other processes' bursts then cannot delay their wake-ups by
milliseconds, which would otherwise show in every latency figure. Linux keeps
5% of each core for other processes even then (``sched_rt_runtime_us``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import numpy as np

GENERATOR_CPU = 0
SERVER_CPU = 1
REALTIME_PRIORITY = 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

NGINX_CONFIG = """\
daemon off;
master_process off;
pid {work_dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work_dir}/body;
    proxy_temp_path {work_dir}/proxy;
    fastcgi_temp_path {work_dir}/fastcgi;
    uwsgi_temp_path {work_dir}/uwsgi;
    scgi_temp_path {work_dir}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
"""


def add_realtime_option(parser: argparse.ArgumentParser) -> None:
    """``--realtime/--no-realtime``: every benchmark runs server and clients the same way."""
    parser.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run server and clients under the FIFO real-time scheduler (chrt --fifo), out of other processes' way",
    )


def pinned(cpu: int, argv: Sequence[str], realtime: bool = False) -> list[str]:
    """``argv`` run on one CPU core only, and under the FIFO scheduler if ``realtime`` (its children inherit both)."""
    scheduler = ["chrt", "--fifo", str(REALTIME_PRIORITY)] if realtime else []
    return [*scheduler, "taskset", "-c", str(cpu), *argv]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_line() -> str:
    """When and where a result was taken: UTC time, host, CPU count and load right now."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{now}; {platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; load average {load_average()}"


def command_line(script: str, args: argparse.Namespace) -> str:
    """The command that repeats a benchmark run: the script with every option spelled out."""
    options = []
    for name, value in vars(args).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            options.append(flag if value else "--no-" + flag[2:])
        else:
            options.append(f"{flag}={value:g}" if isinstance(value, float) else f"{flag}={value}")
    return shlex.join(["python", script, *options])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def core_times() -> dict[int, tuple[int, int]]:
    """(idle, total) clock ticks of every core so far (from /proc/stat; idle includes I/O wait)."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(tick) for tick in ticks]
            times[int(name[3:])] = (values[3] + values[4], sum(values[:8]))
    return times


def idle_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], core: int) -> float:
    """The share of the time between two ``core_times()`` that ``core`` was idle."""
    idle = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    return idle / total if total else 0.0


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")


@contextmanager
def nginx_server(cpu: int = SERVER_CPU, realtime: bool = False) -> Iterator[tuple[str, int]]:
    """nginx as one process pinned to ``cpu``, answering every GET with a 3-byte body; yields (url, pid)."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        raise SystemExit("nginx is not installed: apt-get install -y nginx-light")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as work_dir:
        config = Path(work_dir) / "nginx.conf"
        config.write_text(NGINX_CONFIG.format(work_dir=work_dir, port=port))
        process = subprocess.Popen(pinned(cpu, [nginx, "-p", work_dir, "-c", str(config), "-e", "stderr"], realtime))
        try:
            wait_for_port(port, process)
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            process.terminate()
            process.wait(10)


ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@dataclass(frozen=True)
class Served:
    """One answered request as the server saw it: when it arrived (``time.time()``) and how long it held it (ms)."""

    arrival: float
    service_ms: float


@contextmanager
def on_cpu(cpu: int, realtime: bool = False) -> Iterator[None]:
    """Put the calling thread, and the threads and processes it starts meanwhile, on ``cpu`` (FIFO if ``realtime``)."""
    affinity, policy, parameters = os.sched_getaffinity(0), os.sched_getscheduler(0), os.sched_getparam(0)
    os.sched_setaffinity(0, {cpu})
    if realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    try:
        yield
    finally:
        os.sched_setscheduler(0, policy, parameters)
        os.sched_setaffinity(0, affinity)


class DelayServer:
    """An asyncio HTTP/1.1 server that answers each GET after ``delay_for(path)`` seconds and records it.

    Use it as a context manager: it listens on a free loopback port, its event
    loop in a thread on ``cpu`` (FIFO-scheduled if ``realtime``). The service
    time runs from the moment a request's bytes reach the server to the moment
    its answer is written: the latency the server itself caused, which a load
    generator should report plus only its own and the network's overhead.
    Requests are GETs without a body, at most one in flight per connection (no
    pipelining), as every client in these benchmarks sends them.
    """

    def __init__(self, delay_for: Callable[[str], float], cpu: int = SERVER_CPU, realtime: bool = False) -> None:
        self.delay_for = delay_for
        self.cpu = cpu
        self.realtime = realtime
        self.served: list[Served] = []
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def served_between(self, start: float, end: float) -> np.ndarray:
        """Service times (ms) of the requests that arrived within [start, end) (``time.time()`` seconds)."""
        return np.array([item.service_ms for item in self.served if start <= item.arrival < end])

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._listening.wait(10):
            raise RuntimeError("the delay server did not start listening")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        with on_cpu(self.cpu, self.realtime):
            asyncio.set_event_loop(self.loop)
            listener = self.loop.run_until_complete(
                self.loop.create_server(lambda: DelayProtocol(self), "127.0.0.1", 0)
            )
            self.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
            self._listening.set()
            self.loop.run_forever()
            listener.close()
            self.loop.close()


class DelayProtocol(asyncio.Protocol):
    """One connection of a :class:`DelayServer`."""

    def __init__(self, server: DelayServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        received, arrival = time.perf_counter(), time.time()
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode("ascii")
            self.server.loop.call_later(self.server.delay_for(path), self.answer, received, arrival)

    def answer(self, received: float, arrival: float) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(ANSWER)
        self.server.served.append(Served(arrival, (time.perf_counter() - received) * 1000.0))
