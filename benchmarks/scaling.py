"""Throughput per Locust worker, local and attached by ``pytest-serving load-worker``, and exact merged percentiles.

Against capacity.py's loopback server (nginx, one process on core 1, a 3-byte
answer), closed-loop phases of ``--users`` users run with:

- 1 local worker: ``LoadPhase(workers=1)``, master and worker on core 0;
- 2 local workers: ``LoadPhase(workers=2)``;
- 1 load-worker: ``LoadPhase(remote_workers=1)``, its worker started as
  ``pytest-serving load-worker --master 127.0.0.1:PORT`` in a separate process
  with an empty working directory of its own (the path a worker on another
  machine takes: plan and samples only over Locust's channel).

Each row gives the phase's throughput (answers in the measured window per
second), that per worker, and whether the phase's percentiles equal those
computed from the union of the raw samples the workers sent (exactly, as floats).
Every load generator is on core 0, so two workers share one core here: the
rows measure what the channel costs, not how far more machines scale.

Run: python benchmarks/scaling.py --rounds=3   (about 3 x 15 s per round, real-time scheduled unless
--no-realtime, as every loopback benchmark; prints the command line it ran with)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loopback import (
    GENERATOR_CPU,
    add_realtime_option,
    command_line,
    free_port,
    load_average,
    machine_line,
    nginx_server,
    on_cpu,
)

from pytest_serving.load import LoadPhase, run_phase
from pytest_serving.load.runner import child_environment
from pytest_serving.load.stats import PERCENTILES, RawSamples, is_success
from pytest_serving.protocols.base import HttpRequest


@dataclass(frozen=True)
class Row:
    rps: float
    workers: int
    exact: bool


@contextmanager
def load_worker(master_bind: str) -> Iterator[None]:
    """``pytest-serving load-worker`` in its own empty directory, on the generator's core; stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-load-worker-") as cwd:
        argv = [sys.executable, "-m", "pytest_serving.cli", "load-worker", "--master", master_bind]
        process = subprocess.Popen(argv, cwd=cwd, env=child_environment(), stdout=subprocess.DEVNULL)
        try:
            yield
        finally:
            process.terminate()
            process.wait(30)


def run(url: str, phase: LoadPhase) -> Row:
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as raw_dir:
        stats = run_phase(url, [HttpRequest("GET", "/")], phase, raw_dir=raw_dir)
        parts = [RawSamples.load(path) for path in sorted(Path(raw_dir).glob("raw-*.npz"))]
    union = np.concatenate([part.latency_ms[is_success(part.code)] for part in parts])
    figures = [stats.latency.p50, stats.latency.p90, stats.latency.p95, stats.latency.p99]
    exact = figures == np.percentile(union, PERCENTILES).tolist() and stats.n == sum(p.code.size for p in parts)
    return Row(stats.rps, phase.process_count, exact)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=64, help="closed-loop users per phase (over all workers)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per phase")
    parser.add_argument("--rounds", type=int, default=1, help="turns of all configurations; medians are reported")
    add_realtime_option(parser)
    args = parser.parse_args(argv)

    print(f"Start: {machine_line()}")
    common = {"users": args.users, "duration": args.duration, "warmup": args.warmup}
    rows: dict[str, list[Row]] = {"1 local worker": [], "2 local workers": [], "1 load-worker (own cwd)": []}
    with nginx_server(realtime=args.realtime) as (url, _), on_cpu(GENERATOR_CPU, args.realtime):
        for _ in range(args.rounds):
            rows["1 local worker"].append(run(url, LoadPhase(workers=1, **common)))
            rows["2 local workers"].append(run(url, LoadPhase(workers=2, **common)))
            bind = f"127.0.0.1:{free_port()}"
            with load_worker(bind):
                remote = LoadPhase(remote_workers=1, master_bind=bind, worker_timeout=30, **common)
                rows["1 load-worker (own cwd)"].append(run(url, remote))
    print(f"End: load average {load_average()}")
    print(
        f"Server: nginx, 1 process on core 1; every Locust process on core 0; {args.users} users, "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up, {args.rounds} round(s)"
    )
    width = max(map(len, rows))
    print(
        f"{'configuration':<{width}} {'median rps':>10} {'rps per worker':>14} {'rps per round':<22} merged percentiles"
    )
    for name, runs in rows.items():
        rps = statistics.median(row.rps for row in runs)
        exact = "equal to the union's" if all(row.exact for row in runs) else "DIFFER from the union's"
        per_round = " ".join(f"{row.rps:.0f}" for row in runs)
        print(f"{name:<{width}} {rps:>10.0f} {rps / runs[0].workers:>14.0f} {per_round:<22} {exact}")
    print("Reproduce: " + command_line("benchmarks/scaling.py", args))
    return 0 if all(row.exact for runs in rows.values() for row in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
