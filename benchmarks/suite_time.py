"""Wall time of the built-in suites on every target, one process against pytest-xdist, and server boot times.

1. Boot: ``pytest_serving.deployment.deploy(target)`` alone, per target with
   an image: seconds from the call until the server answers ready, and until
   its container is gone again.
2. Suites: in one fresh working directory (its .pytest_cache keeps the
   in-process reference predictions between runs), for each ``--workers`` N::

       pytest --serving=all --serving-samples=DIR --serving-load=off -n N -p suite_clock

   (contract + robustness; tfserving, which has no image here, is skipped).
   Reported: wall time, outcome counts, and per target the setup time of its
   first test (its server's boot; under -n 0 also stopping the previous
   target's server), when that setup ended (the server was ready; seconds after
   the command started) and when the target's last test ended; and how often
   and for how long servers booted: every change of target between two tests
   of one process stops one server and boots another. An untimed run of one
   test on one target first fills the reference cache, so that every timed
   run finds it warm. The suite_clock lines stay in ``--clock-dir``.

Each run waits until the 1-minute load average is below ``--max-load``
(the machine is shared), and the load before and after is printed.
Every container a run started is removed after it (the plugin does; the
script checks by the run's session label).

Run: python benchmarks/suite_time.py --samples /work/shared/imagenet-samples   (tens of minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from loopback import command_line, load_average, machine_line

from pytest_serving.containers.cleanup import remove_labelled
from pytest_serving.deployment import Unavailable, deploy
from pytest_serving.settings import Settings

BENCHMARKS = Path(__file__).resolve().parent
LOAD_POLL_S = 30.0


@dataclass(frozen=True)
class TargetTimes:
    """One target in one suite run (seconds; "at" = after the command started)."""

    boot_s: float
    ready_at: float
    done_at: float
    tests: int


@dataclass(frozen=True)
class SuiteRun:
    workers: int
    wall_s: float
    summary: str
    targets: dict[str, TargetTimes]
    boots: int
    boot_s: float
    load_before: str
    load_after: str
    leftovers: list[str]


def wait_for_quiet(max_load: float, max_wait_s: float) -> None:
    """Wait until the 1-minute load average is below ``max_load``; go on after ``max_wait_s`` regardless."""
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        print(f"  waiting for load average < {max_load:g} (now {load_average()})", flush=True)
        time.sleep(LOAD_POLL_S)


def benchmark_settings(target: str, startup_timeout: float) -> Settings:
    """The plugin's settings for booting ``target`` alone with the default card, as a benchmark does."""
    return Settings(
        targets=[target],
        samples=None,
        samples_csv=None,
        classes=None,
        samples_limit=None,
        images={},
        urls={},
        report_dir=None,
        gpus=None,
        startup_timeout=startup_timeout,
        model="efficientnet_lite0",
        model_repo=None,
        strict=False,
    )


def boot_times(targets: list[str]) -> list[str]:
    """deploy() per target alone: ready after, removed after (s)."""
    lines = [f"{'target':<12} {'ready after s':>13} {'removed after s':>15}"]
    for target in targets:
        settings = benchmark_settings(target, startup_timeout=600.0)
        started = time.perf_counter()
        try:
            with deploy(target, settings):
                ready = time.perf_counter() - started
        except Unavailable as unavailable:
            lines.append(f"{target:<12} skipped: {unavailable}")
            continue
        lines.append(f"{target:<12} {ready:>13.1f} {time.perf_counter() - started:>15.1f}")
    return lines


def pytest_command(samples: Path, *options: str) -> list[str]:
    return [
        sys.executable, "-m", "pytest", "-q", "-p", "suite_clock",
        f"--serving-samples={samples}", "--serving-load=off", *options,
    ]  # fmt: skip


def run_suite(argv: list[str], work_dir: Path) -> tuple[float, str, list[str]]:
    """Run pytest in ``work_dir`` under its own session label; (wall s, summary line, containers left behind)."""
    session_id = f"bench-{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(BENCHMARKS), os.environ.get("PYTHONPATH")])),
        PYTEST_SERVING_SESSION_ID=session_id,
    )
    started = time.perf_counter()
    completed = subprocess.run(argv, check=False, cwd=work_dir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summaries = re.findall(r"^=* ?(\d+ (?:passed|failed|skipped|error).*) in [\d.]+s", completed.stdout, re.MULTILINE)
    summary = summaries[-1] if summaries else f"exit code {completed.returncode}: {completed.stdout[-500:]}"
    return wall, summary, remove_labelled(session_id)


def read_clock(clock: Path) -> list[dict]:
    """The suite_clock lines of the tests that ran against a serving target."""
    records = [json.loads(line) for line in clock.read_text().splitlines()]
    return [record for record in records if record["target"]]


def server_boots(records: list[dict]) -> tuple[int, float]:
    """Setups that changed a process's target (each stops one server and boots the next): count and seconds."""
    setups = sorted((record for record in records if record["when"] == "setup"), key=lambda r: r["start"])
    current: dict[str, str] = {}
    count, seconds = 0, 0.0
    for setup in setups:
        if current.get(setup["worker"]) != setup["target"]:
            current[setup["worker"]] = setup["target"]
            count += 1
            seconds += setup["stop"] - setup["start"]
    return count, seconds


def target_times(records: list[dict], command_started: float) -> dict[str, TargetTimes]:
    """Per target: first setup (boot), its end, and the end of the last phase."""
    phases = defaultdict(list)
    for record in records:
        phases[record["target"]].append(record)
    times = {}
    for target, target_records in sorted(phases.items()):
        setups = [record for record in target_records if record["when"] == "setup"]
        first_setup = min(setups, key=lambda record: record["start"])
        times[target] = TargetTimes(
            boot_s=first_setup["stop"] - first_setup["start"],
            ready_at=first_setup["stop"] - command_started,
            done_at=max(record["stop"] for record in target_records) - command_started,
            tests=len(setups),
        )
    return times


def timed_suite(samples: Path, workers: int, work_dir: Path, args: argparse.Namespace) -> SuiteRun:
    wait_for_quiet(args.max_load, args.max_wait)
    load_before = load_average()
    clock = args.clock_dir.resolve() / f"clock-n{workers}.jsonl"
    clock.unlink(missing_ok=True)
    command_started = time.time()
    argv = pytest_command(samples, "--serving=all", "-n", str(workers), f"--suite-clock={clock}")
    wall, summary, leftovers = run_suite(argv, work_dir)
    records = read_clock(clock)
    boots, boot_s = server_boots(records)
    return SuiteRun(
        workers,
        wall,
        summary,
        target_times(records, command_started),
        boots,
        boot_s,
        load_before,
        load_average(),
        leftovers,
    )


def suite_lines(run: SuiteRun) -> list[str]:
    lines = [
        (
            f"-n {run.workers}: wall {run.wall_s:.0f} s; {run.summary}; "
            f"load average before {run.load_before}, after {run.load_after}"
        ),
        f"  {'target':<12} {'tests':>6} {'boot s':>7} {'ready at s':>10} {'done at s':>10}",
    ]
    for target, times in run.targets.items():
        lines.append(
            f"  {target:<12} {times.tests:>6} {times.boot_s:>7.1f} {times.ready_at:>10.1f} {times.done_at:>10.1f}"
        )
    ran = [times for times in run.targets.values() if times.tests]
    if ran:
        lines.append(f"  all servers first ready at {max(t.ready_at for t in ran):.1f} s")
    lines.append(f"  server boots (target changes within a process): {run.boots}, {run.boot_s:.0f} s of setup in all")
    if run.leftovers:
        lines.append(f"  LEFT BEHIND and removed now: {', '.join(run.leftovers)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, required=True, help="ImageNet samples directory (--serving-samples)")
    parser.add_argument("--workers", default="0,3", help="pytest-xdist worker counts to time, in order")
    parser.add_argument(
        "--boot-targets", default="triton,torchserve,kserve,kserve-v1", help="targets to boot alone ('' for none)"
    )
    parser.add_argument("--prime-target", default="triton", help="target of the run that fills the reference cache")
    parser.add_argument("--clock-dir", type=Path, default=Path("out/benchmarks/suite-time"), help="suite_clock files")
    parser.add_argument("--max-load", type=float, default=2.0, help="wait for a 1-minute load average below this")
    parser.add_argument("--max-wait", type=float, default=1800.0, help="seconds to wait for that before going on")
    args = parser.parse_args(argv)
    samples = args.samples.resolve()
    args.clock_dir.mkdir(parents=True, exist_ok=True)

    print(f"Start: {machine_line()}", flush=True)
    boot_targets = [name for name in args.boot_targets.split(",") if name]
    if boot_targets:
        wait_for_quiet(args.max_load, args.max_wait)
        boot_load = load_average()
        boots = boot_times(boot_targets)
        print(f"Boot alone (load average before {boot_load}, after {load_average()}):")
        print("\n".join(boots), flush=True)

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-suite-time-") as work:
        work_dir = Path(work)
        priming = pytest_command(samples, f"--serving={args.prime_target}", "-k", "test_accuracy_matches_reference")
        _, summary, _ = run_suite(priming, work_dir)
        print(f"Untimed run that fills the reference cache ({args.prime_target}): {summary}", flush=True)
        for workers in (int(value) for value in args.workers.split(",")):
            runs.append(timed_suite(samples, workers, work_dir, args))
            print("\n".join(suite_lines(runs[-1])), flush=True)
    print(f"End: load average {load_average()}")
    if len(runs) > 1:
        base = min(runs, key=lambda run: run.workers)
        for run in (run for run in runs if run is not base):
            print(
                f"-n {run.workers} against -n {base.workers}: wall {run.wall_s:.0f} s vs {base.wall_s:.0f} s, "
                f"{base.wall_s / run.wall_s:.2f}x faster ({base.wall_s - run.wall_s:+.0f} s saved)"
            )
    print("Reproduce: " + command_line("benchmarks/suite_time.py", args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
