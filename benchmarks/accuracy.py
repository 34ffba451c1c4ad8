"""How exactly the load engine measures latency, and how closely its open loop keeps a schedule.

1. Latency against a known truth. A loopback server (``loopback.DelayServer``,
   asyncio, core 1) holds each request ``GET /delay/<i>`` for ``delays[i]``,
   drawn in advance from a seeded lognormal distribution, and records how long
   it actually held every request. The truth is the p50/p99 of those recorded
   service times over the requests that arrived in the measured window; the
   engine (``run_phase``, core 0) must report p50 and p99 within max(2%, 0.2 ms)
   of it. Every closed-loop scenario is repeated with ``wrk -t1 -c<users>``
   (random paths over the same delays): what a C client on the same machine
   reports against the same truth, so that the engine's own share of the error
   shows. The zero-delay rows are the fixed per-request overhead. The Locust
   column gives what Locust's own statistics would report for the engine's
   samples (whole milliseconds below 100 ms, two significant digits above).
2. Open-loop schedule. Constant arrivals at increasing rates against the
   zero-delay server: sends due and answers received per second, late sends
   (started over 10 ms behind schedule) and dropped sends, i.e. up to which
   rate one process on this machine is a trustworthy open-loop generator.

Run: python benchmarks/accuracy.py   (about 4 minutes; prints the full command line it ran with)
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from loopback import (
    GENERATOR_CPU,
    DelayServer,
    add_realtime_option,
    command_line,
    load_average,
    machine_line,
    on_cpu,
    pinned,
)

from pytest_serving.load import LoadPhase, RawSamples, run_phase
from pytest_serving.protocols.base import HttpRequest

TOLERANCE_SHARE = 0.02
TOLERANCE_FLOOR_MS = 0.2
DELAY_COUNT = 2000
REQUESTS = [HttpRequest("GET", f"/delay/{index}") for index in range(DELAY_COUNT)]
WRK_RANDOM_PATHS = f"""
request = function()
    return wrk.format("GET", "/delay/" .. math.random(0, {DELAY_COUNT - 1}))
end
"""
WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Scenario:
    """One latency measurement: the server's delay distribution (median 0: no delay) and the load that meets it."""

    name: str
    median_ms: float
    sigma: float
    phase: LoadPhase

    def delays_s(self, seed: int) -> np.ndarray:
        if self.median_ms == 0:
            return np.zeros(DELAY_COUNT)
        return np.random.default_rng(seed).lognormal(math.log(self.median_ms / 1000.0), self.sigma, DELAY_COUNT)


@dataclass(frozen=True)
class Measured:
    """One client's p50/p99 and the server's service times (the truth) for the same requests."""

    client: str
    n: int
    p50: float
    p99: float
    truth_ms: np.ndarray
    failures: int = 0
    locust: str = ""

    def row(self) -> tuple[str, bool]:
        """The table row, and whether both percentiles are within tolerance of the truth."""
        true_p50, true_p99 = np.percentile(self.truth_ms, (50, 99)).tolist()
        cells = [f"  {self.client:<32}", f"{self.n:>6}/{self.truth_ms.size:<6}"]
        within = self.failures == 0
        for truth, measured in ((true_p50, self.p50), (true_p99, self.p99)):
            error = measured - truth
            ok = abs(error) <= max(TOLERANCE_SHARE * truth, TOLERANCE_FLOOR_MS)
            within = within and ok
            cells.append(f"{truth:>8.3f} {measured:>8.3f} {error:>+7.3f} {'ok' if ok else 'OUT':>3}")
        cells.append(f"{self.locust:>9}")
        return "  ".join(cells), within


def delay_of(delays_s: np.ndarray) -> Callable[[str], float]:
    def delay_for(path: str) -> float:
        return float(delays_s[int(path.rsplit("/", 1)[1])])

    return delay_for


def locust_bucket(response_time_ms: float) -> int:
    """``locust.stats.bucket_response_time``: the value Locust's statistics keep per request.

    Locust cannot be imported here (it monkey-patches threads into greenlets),
    hence this copy of Locust 2.47's rounding and percentile rule.
    """
    for limit, digits in ((100, 0), (1000, -1), (10000, -2)):
        if response_time_ms < limit:
            return int(round(response_time_ms, digits))
    return int(round(response_time_ms, -3))


def locust_percentile(latency_ms: np.ndarray, fraction: float) -> int:
    """``locust.stats.calculate_response_time_percentile`` over Locust's rounded response times."""
    buckets, counts = np.unique([locust_bucket(value) for value in latency_ms], return_counts=True)
    rank = int(latency_ms.size * fraction)
    processed = 0
    for bucket, count in zip(buckets[::-1], counts[::-1], strict=True):
        processed += count
        if latency_ms.size - processed <= rank:
            return int(bucket)
    return 0


def engine(server: DelayServer, phase: LoadPhase, realtime: bool) -> Measured:
    """run_phase's figures; the truth is what the server served within its measured window."""
    with tempfile.TemporaryDirectory() as raw, on_cpu(GENERATOR_CPU, realtime):
        stats = run_phase(server.url, REQUESTS, phase, raw_dir=raw)
        latency_ms = RawSamples.load(Path(raw) / "raw-0.npz").latency_ms
    opened = datetime.fromisoformat(stats.started_at).timestamp()
    locust = f"{locust_percentile(latency_ms, 0.5)}/{locust_percentile(latency_ms, 0.99)}"
    return Measured(
        "pytest-serving",
        stats.n,
        stats.latency.p50,
        stats.latency.p99,
        server.served_between(opened, opened + stats.duration),
        stats.failures,
        locust,
    )


def wrk(server: DelayServer, connections: int, duration: float, realtime: bool) -> Measured:
    """wrk's figures (10 us resolution); the truth is everything the server served meanwhile."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_RANDOM_PATHS)
        script.flush()
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", script.name, server.url]
        started = time.time()
        output = subprocess.run(pinned(GENERATOR_CPU, argv, realtime), capture_output=True, text=True, check=True)
    percentiles = {
        int(percent): float(value) * WRK_UNITS_MS[unit]
        for percent, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)$", output.stdout, re.MULTILINE)
    }
    requests = int(re.search(r"(\d+) requests in", output.stdout).group(1))
    truth = server.served_between(started, time.time())
    return Measured(f"wrk -t1 -c{connections}", requests, percentiles[50], percentiles[99], truth)


def latency_rows(scenario: Scenario, seed: int, realtime: bool) -> list[tuple[str, bool]]:
    delays = delay_of(scenario.delays_s(seed))
    with DelayServer(delays, realtime=realtime) as server:
        rows = [engine(server, scenario.phase, realtime).row()]
    if not scenario.phase.open_loop:
        with DelayServer(delays, realtime=realtime) as server:
            rows.append(wrk(server, scenario.phase.users, scenario.phase.duration, realtime).row())
    return rows


def schedule_rows(rates: list[float], duration: float, realtime: bool) -> list[str]:
    lines = [
        f"{'rate /s':>8} {'n':>7} {'offered':>8} {'answered':>8} {'late %':>7} {'dropped':>7} {'p50 ms':>8} {'p99 ms':>8}"
    ]
    with DelayServer(lambda _path: 0.0, realtime=realtime) as server, on_cpu(GENERATOR_CPU, realtime):
        for rate in rates:
            phase = LoadPhase(rate=rate, arrival="constant", duration=duration)
            stats = run_phase(server.url, [HttpRequest("GET", "/delay/0")], phase)
            late = 100.0 * stats.late_sends / max(stats.n, 1)
            lines.append(
                f"{rate:>8g} {stats.n:>7} {stats.offered_rps:>8.1f} {stats.rps:>8.1f} {late:>7.1f} "
                f"{stats.dropped_sends:>7} {stats.latency.p50:>8.2f} {stats.latency.p99:>8.2f}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per latency run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--users", type=int, default=4, help="closed-loop users of the concurrent scenarios")
    parser.add_argument("--rate", type=float, default=100.0, help="Poisson rate of the open-loop scenario")
    parser.add_argument("--seed", type=int, default=1, help="seed of the server's delays and of the open loop")
    parser.add_argument("--rates", default="500,1000,2000,4000", help="constant open-loop rates of the schedule table")
    parser.add_argument("--schedule-duration", type=float, default=5.0, help="measured seconds per schedule rate")
    add_realtime_option(parser)
    args = parser.parse_args(argv)

    def closed(users: int) -> LoadPhase:
        return LoadPhase(users=users, duration=args.duration, warmup=args.warmup)

    open_loop = LoadPhase(rate=args.rate, duration=args.duration, warmup=args.warmup, seed=args.seed)
    scenarios = [
        Scenario("zero delay, 1 user", 0.0, 0.0, closed(1)),
        Scenario("lognormal median 20 ms s=0.6, 1 user", 20.0, 0.6, closed(1)),
        Scenario(f"lognormal median 20 ms s=0.6, {args.users} users", 20.0, 0.6, closed(args.users)),
        Scenario(f"lognormal median 20 ms s=0.6, open loop {args.rate:g}/s Poisson", 20.0, 0.6, open_loop),
        Scenario(f"lognormal median 2 ms s=0.5, {args.users} users", 2.0, 0.5, closed(args.users)),
    ]

    print(f"Start: {machine_line()}")
    rows = {scenario.name: latency_rows(scenario, args.seed, args.realtime) for scenario in scenarios}
    schedule = schedule_rows([float(rate) for rate in args.rates.split(",")], args.schedule_duration, args.realtime)
    print(f"End: load average {load_average()}")
    scheduler = "FIFO real-time" if args.realtime else "normal"
    print(f"Server: asyncio on core 1; clients on core 0; {scheduler} scheduling; {args.duration:g} s measured per run")
    print(
        f"Tolerance: max({TOLERANCE_SHARE:.0%}, {TOLERANCE_FLOOR_MS:g} ms) of the true value; error = client - truth (ms); "
        "n = client's requests / server's requests in the same window"
    )
    print(
        f"  {'client':<32}  {'n':^13}  {'true p50':>8} {'p50':>8} {'error':>7} {'':>3}  "
        f"{'true p99':>8} {'p99':>8} {'error':>7} {'':>3}  {'Locust ms':>9}"
    )
    for name, scenario_rows in rows.items():
        print(name)
        print("\n".join(row for row, _ in scenario_rows))
    engine_verdicts = [scenario_rows[0][1] for scenario_rows in rows.values()]
    print(f"pytest-serving within tolerance: {sum(engine_verdicts)} of {len(engine_verdicts)} scenarios")
    print()
    print("Open-loop schedule, constant arrivals, zero-delay server")
    print("\n".join(schedule))
    print("Reproduce: " + command_line("benchmarks/accuracy.py", args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
