"""Coordinated omission: a closed loop hides a server stall that an open loop reports.

A loopback server (``loopback.DelayServer``, core 1) answers in ``--delay-ms``
but stalls ``--stall-s`` every ``--period-s``: a request that arrives during a
stall waits until it ends. The same offered rate is sent twice through
pytest-serving's load engine (core 0): closed loop (``--users`` users, each
paced to rate/users requests/s and sending its next request only when the
previous one answered) and open loop (constant arrivals at ``--rate``, latency
counted from the scheduled send). Over whole stall periods a share
stall/period of the scheduled sends falls into a stall and waits uniformly up
to ``stall_s``, so the true latency distribution of the schedule is known:
p50 = delay, p99 = delay + stall * (1 - 0.01 * period / stall) while
stall/period >= 1%, max = delay + stall. The server also records how long it
held each request of the open loop's window: the schedule's true latencies
less the network, including its own timer's lateness. The closed loop sends only
one request per user during each stall and so under-reports the tail.

Run: python benchmarks/stall.py   (about 75 s; prints the full command line it ran with)
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

import numpy as np
from loopback import GENERATOR_CPU, DelayServer, add_realtime_option, command_line, load_average, machine_line, on_cpu

from pytest_serving.load import LoadPhase, run_phase
from pytest_serving.protocols.base import HttpRequest

REQUESTS = [HttpRequest("GET", "/")]


def stalling(delay_s: float, stall_s: float, period_s: float):
    """A delay rule: ``delay_s``, plus the rest of the stall in the last ``stall_s`` of every ``period_s``."""
    epoch = time.monotonic()

    def delay_for(_path: str) -> float:
        phase = (time.monotonic() - epoch) % period_s
        return delay_s + (period_s - phase if phase >= period_s - stall_s else 0.0)

    return delay_for


def true_figures(delay_ms: float, stall_s: float, period_s: float) -> tuple[float, float, float]:
    """p50, p99, max (ms) of constant arrivals over whole stall periods."""
    stalled = stall_s / period_s
    p99_wait = stall_s * (1.0 - 0.01 / stalled) if stalled >= 0.01 else 0.0
    return delay_ms, delay_ms + 1000.0 * p99_wait, delay_ms + 1000.0 * stall_s


def row(name: str, n: int, rps: float, p50: float, p99: float, maximum: float, true_p99: float) -> str:
    return (
        f"{name:<38} {n:>6} {rps:>7.1f} {p50:>9.1f} {p99:>9.1f} {maximum:>9.1f} "
        f"{100.0 * (p99 - true_p99) / true_p99:>+13.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="offered requests/s (both loops)")
    parser.add_argument("--users", type=int, default=2, help="closed-loop users, each paced to rate/users")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per loop")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--delay-ms", type=float, default=5.0, help="service time outside stalls")
    parser.add_argument("--stall-s", type=float, default=1.0)
    parser.add_argument("--period-s", type=float, default=10.0)
    add_realtime_option(parser)
    args = parser.parse_args(argv)
    if args.duration % args.period_s:
        parser.error("--duration must be a whole number of --period-s, or the true figures do not apply")

    closed_loop = LoadPhase(
        users=args.users, user_rate=args.rate / args.users, duration=args.duration, warmup=args.warmup
    )
    open_loop = LoadPhase(rate=args.rate, arrival="constant", duration=args.duration, warmup=args.warmup)
    print(f"Start: {machine_line()}")
    delay_rule = stalling(args.delay_ms / 1000.0, args.stall_s, args.period_s)
    with DelayServer(delay_rule, realtime=args.realtime) as server, on_cpu(GENERATOR_CPU, args.realtime):
        results = {
            f"closed loop ({args.users} users x {args.rate / args.users:g}/s)": run_phase(
                server.url, REQUESTS, closed_loop
            ),
            f"open loop ({args.rate:g}/s constant)": (open_stats := run_phase(server.url, REQUESTS, open_loop)),
        }
        opened = datetime.fromisoformat(open_stats.started_at).timestamp()
        open_loop_served = server.served_between(opened, opened + open_stats.duration)
    print(f"End: load average {load_average()}")
    p50, p99, maximum = true_figures(args.delay_ms, args.stall_s, args.period_s)
    scheduler = "FIFO real-time" if args.realtime else "normal"
    print(
        f"Server: {args.delay_ms:g} ms per request, stalls {args.stall_s:g} s every {args.period_s:g} s; "
        f"{args.duration:g} s measured per loop; server on core 1, engine on core 0, {scheduler} scheduling"
    )
    print(f"{'':<38} {'n':>6} {'rps':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'p99 vs true':>13}")
    for name, stats in results.items():
        latency = stats.latency
        print(row(name, stats.n, stats.rps, latency.p50, latency.p99, latency.max, p99))
        if stats.failures or stats.dropped_sends:
            print(f"  {stats.failures} failures, {stats.dropped_sends} dropped sends")
    served_p50, served_p99 = np.percentile(open_loop_served, (50, 99)).tolist()
    print(
        row(
            "server-side (open loop's requests)",
            open_loop_served.size,
            open_loop_served.size / args.duration,
            served_p50,
            served_p99,
            open_loop_served.max(),
            p99,
        )
    )
    print(row("true (the schedule, analytic)", round(args.rate * args.duration), args.rate, p50, p99, maximum, p99))
    print("Reproduce: " + command_line("benchmarks/stall.py", args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
