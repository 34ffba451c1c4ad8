"""Requests per second one CPU core generates: pytest-serving's load engine against plain Locust and wrk.

Every client is pinned to core 0 (``taskset -c 0``) and sends GET / back to back
on ``--connections`` keep-alive connections to nginx, which runs as a single
process pinned to core 1 and answers a 3-byte body; its CPU use per client run
shows that it is not the bottleneck. Clients, each for ``--warmup`` + ``--duration`` s:

- pytest-serving: ``run_phase(url, [GET /], LoadPhase(users=N))``, closed loop;
  rps = answers in the measured window / duration.
- pytest-serving + answer checks: the same, keeping every answer's body by request and
  checking the kept answers afterwards (``check_answers``), as every phase of the suites does.
- Locust ``HttpUser`` and ``FastHttpUser``: a plain locustfile
  (benchmarks/plain_locustfile.py), headless, one process, N users;
  rps = Locust's request count over the same window.
- wrk: ``wrk -t1 -cN -d<duration>s`` (no warm-up needed); its Requests/sec.

The clients take turns, ``--rounds`` times over, so that a change in the
machine's other load touches all of them; the table gives each client's median.
Goals: pytest-serving >= 0.4x wrk and >= 4x plain HttpUser.

Run: python benchmarks/capacity.py   (about 4 x 16 s per round; prints the full command line it ran with)
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loopback import (
    GENERATOR_CPU,
    SERVER_CPU,
    add_realtime_option,
    command_line,
    core_times,
    idle_share,
    load_average,
    machine_line,
    nginx_server,
    on_cpu,
    pinned,
    process_cpu_seconds,
)

from pytest_serving.load import LoadPhase, run_phase
from pytest_serving.load.answers import KeptAnswers, check_answers
from pytest_serving.protocols.base import HttpRequest, Prediction

PLAIN_LOCUSTFILE = Path(__file__).with_name("plain_locustfile.py")
GOALS = {"wrk": 0.4, "Locust HttpUser": 4.0}
HARNESS = "pytest-serving"
CHECKING = "pytest-serving + answer checks"
#: What nginx's "ok" answer stands for: one prediction, compared with itself.
OK_PREDICTION = Prediction((1,), (1.0,))


@dataclass(frozen=True)
class Settings:
    url: str
    connections: int
    duration: float
    warmup: float
    realtime: bool


@dataclass(frozen=True)
class Run:
    """One client's run: its throughput, the CPU share its and the server's processes used, and each core's idle share."""

    rps: float
    failures: int
    client_cpu: float
    server_cpu: float
    generator_core_idle: float
    server_core_idle: float


def children_cpu_seconds() -> float:
    """CPU time of this process's finished (reaped) child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def harness(settings: Settings, check: bool = False) -> tuple[float, int]:
    phase = LoadPhase(users=settings.connections, duration=settings.duration, warmup=settings.warmup)

    def judge(kept: KeptAnswers):
        return check_answers(kept, lambda status, body: OK_PREDICTION, [("ok", OK_PREDICTION)], 1e-3)

    with on_cpu(GENERATOR_CPU, settings.realtime):
        stats = run_phase(settings.url, [HttpRequest("GET", "/")], phase, check_answers=judge if check else None)
    if check and (stats.answers is None or stats.answers.violations()):
        raise SystemExit(f"answer checks did not check every answer: {stats.answers}")
    return stats.rps, stats.failures


def plain_locust(user_class: str) -> Callable[[Settings], tuple[float, int]]:
    def run(settings: Settings) -> tuple[float, int]:
        users = str(settings.connections)
        argv = [
            sys.executable, "-m", "locust", "-f", str(PLAIN_LOCUSTFILE),
            "--headless", "--only-summary", "--loglevel", "WARNING",
            "--users", users, "--spawn-rate", users, "--host", settings.url,
            "--window-warmup", f"{settings.warmup:g}", "--window-duration", f"{settings.duration:g}",
            user_class,
        ]  # fmt: skip
        output = subprocess.run(
            pinned(GENERATOR_CPU, argv, settings.realtime), capture_output=True, text=True, check=True
        ).stdout
        window = json.loads(re.search(r"^WINDOW (.*)$", output, re.MULTILINE).group(1))
        return window["requests"] / window["seconds"], window["failures"]

    return run


def wrk(settings: Settings) -> tuple[float, int]:
    argv = ["wrk", "-t1", f"-c{settings.connections}", f"-d{settings.duration:g}s", settings.url + "/"]
    output = subprocess.run(
        pinned(GENERATOR_CPU, argv, settings.realtime), capture_output=True, text=True, check=True
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), int(errors.group(1)) if errors else 0


CLIENTS: dict[str, Callable[[Settings], tuple[float, int]]] = {
    HARNESS: harness,
    CHECKING: lambda settings: harness(settings, check=True),
    "Locust HttpUser": plain_locust("PlainHttpUser"),
    "Locust FastHttpUser": plain_locust("PlainFastHttpUser"),
    "wrk": wrk,
}


def measure(client: Callable[[Settings], tuple[float, int]], settings: Settings, server_pid: int) -> Run:
    """Run one client; CPU figures cover the client's whole run, start-up included."""
    started, cores_before = time.perf_counter(), core_times()
    client_before, server_before = children_cpu_seconds(), process_cpu_seconds(server_pid)
    rps, failures = client(settings)
    wall, cores_after = time.perf_counter() - started, core_times()
    return Run(
        rps,
        failures,
        client_cpu=(children_cpu_seconds() - client_before) / wall,
        server_cpu=(process_cpu_seconds(server_pid) - server_before) / wall,
        generator_core_idle=idle_share(cores_before, cores_after, GENERATOR_CPU),
        server_core_idle=idle_share(cores_before, cores_after, SERVER_CPU),
    )


def goal_line(name: str, ratio: float, goal: float) -> str:
    verdict = "met" if ratio >= goal else f"NOT met: {ratio / goal:.0%} of the goal, short by {goal - ratio:.2f}x"
    return f"{HARNESS} / {name} = {ratio:.2f}x (goal >= {goal:g}x: {verdict})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64, help="users (Locust) and connections (wrk)")
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per client run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the window (Locust clients)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of all clients; the median is reported")
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help=f"comma list of the clients to run (default all: {', '.join(CLIENTS)})",
    )
    add_realtime_option(parser)
    args = parser.parse_args(argv)

    chosen = {name: CLIENTS[name] for name in args.clients.split(",")}
    print(f"Start: {machine_line()}")
    runs: dict[str, list[Run]] = {name: [] for name in chosen}
    with nginx_server(realtime=args.realtime) as (url, server_pid):
        settings = Settings(url, args.connections, args.duration, args.warmup, args.realtime)
        for _ in range(args.rounds):
            for name, client in chosen.items():
                runs[name].append(measure(client, settings, server_pid))
    print(f"End: load average {load_average()}")
    print(
        f"Server: nginx, 1 process on core 1; clients on core 0, {args.connections} connections, "
        f"{args.duration:g} s measured, {args.rounds} rounds"
    )
    print("CPU columns: medians over rounds, whole client run; 'idle' is the core's idle time (all processes).")
    width = max(len(name) for name in chosen)
    print(
        f"{'client':<{width}} {'median rps':>10}  {'rps per round':<22} {'failures':>8} "
        f"{'client CPU':>10} {'core 0 idle':>11} {'nginx CPU':>9} {'core 1 idle':>11}"
    )
    median_rps = {name: statistics.median(run.rps for run in client_runs) for name, client_runs in runs.items()}
    for name, client_runs in runs.items():
        per_round = " ".join(f"{run.rps:.0f}" for run in client_runs)
        shares = [
            statistics.median(getattr(run, field) for run in client_runs)
            for field in ("client_cpu", "generator_core_idle", "server_cpu", "server_core_idle")
        ]
        failures = sum(run.failures for run in client_runs)
        print(
            f"{name:<{width}} {median_rps[name]:>10.0f}  {per_round:<22} {failures:>8} "
            f"{shares[0]:>10.0%} {shares[1]:>11.0%} {shares[2]:>9.0%} {shares[3]:>11.0%}"
        )
    if HARNESS in median_rps:
        for name, goal in GOALS.items():
            if name in median_rps:
                print(goal_line(name, median_rps[HARNESS] / median_rps[name], goal))
        for name, rps in median_rps.items():
            if name not in GOALS and name != HARNESS:
                print(f"{HARNESS} / {name} = {median_rps[HARNESS] / rps:.2f}x")
    print("Reproduce: " + command_line("benchmarks/capacity.py", args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
