"""What benchmarks/peers.py hands to and reads back from each peer load tool, and the server's counters in a window.

Pure functions only (no processes, no network), so that the parsing is unit-tested
(tests/unit/test_peers.py): Triton's perf_analyzer (its ``--input-data`` JSON and its
``-f`` CSV report), k6 (the script this benchmark generates and the summary JSON its
``handleSummary`` writes), and the server's cumulative Prometheus counters sampled over
time, interpolated at the edges of a tool's measured window.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pytest_serving.protocols.v2 import serialize_bytes_tensor

US_PER_MS = 1000.0


@dataclass(frozen=True)
class ToolFigures:
    """What one tool reports for its measured window: answers per second, latency percentiles (ms), counts.

    ``window`` is the measured window as (start, end) in ``time.time()`` seconds when the tool
    says where it lies, else None.
    """

    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    failures: int
    window: tuple[float, float] | None = None


class ToolOutputError(ValueError):
    """A tool's report lacks what the benchmark reads from it; the message quotes what it found."""


# perf_analyzer ------------------------------------------------------------------------------------


def perf_analyzer_input(input_name: str, data: bytes) -> dict:
    """perf_analyzer's ``--input-data`` JSON for one BYTES input holding one element, ``data``.

    perf_analyzer sends a ``b64`` value's decoded bytes as the tensor as they are, so they must
    already be the serialized BYTES tensor (4-byte little-endian length, then the element):
    the very bytes the engine sends after its JSON header.
    """
    tensor = serialize_bytes_tensor([data])
    return {"data": [{input_name: {"b64": base64.b64encode(tensor).decode("ascii")}}]}


def parse_perf_analyzer_csv(text: str) -> dict[int, ToolFigures]:
    """Figures per concurrency from perf_analyzer's ``-f`` report (latencies there are in microseconds).

    perf_analyzer counts only successful requests; a failed request aborts its run, so
    ``failures`` is 0 here and the runner checks the exit status. Perf_analyzer 2.51 writes
    no request count into the CSV: ``requests`` is 0 until :func:`perf_analyzer_requests` fills it in.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    needed = ("Concurrency", "Inferences/Second", "p50 latency", "p95 latency", "p99 latency")
    if not rows or any(column not in rows[0] for column in needed):
        raise ToolOutputError(f"perf_analyzer CSV lacks the columns {needed}: {text[:300]!r}")
    figures = {}
    for row in rows:
        figures[int(row["Concurrency"])] = ToolFigures(
            rps=float(row["Inferences/Second"]),
            p50_ms=float(row["p50 latency"]) / US_PER_MS,
            p95_ms=float(row["p95 latency"]) / US_PER_MS,
            p99_ms=float(row["p99 latency"]) / US_PER_MS,
            requests=0,
            failures=0,
        )
    return figures


def perf_analyzer_requests(stdout: str) -> int:
    """How many requests perf_analyzer's reported figures cover (its console report's client "Request count")."""
    found = re.search(r"^\s*Client:\s*\n\s*Request count: (\d+)", stdout, re.MULTILINE)
    if found is None:
        raise ToolOutputError(f"perf_analyzer printed no client request count: {stdout[-500:]!r}")
    return int(found.group(1))


# k6 -----------------------------------------------------------------------------------------------

K6_SCRIPT = """\
import http from 'k6/http';
import exec from 'k6/execution';
import {{ Counter, Gauge, Trend }} from 'k6/metrics';

// The request: the same bytes and headers as the other tools send.
const body = open({body_path}, 'b');
const headers = {headers};
const url = {url};
const warmupMs = {warmup_ms};
const durationMs = {duration_ms};

// Measured like the engine: latency of the requests sent inside the window, answers that arrived inside it.
const latency = new Trend('measured_latency', true);
const answered = new Counter('measured_answers');
const failed = new Counter('measured_failures');
const windowOpen = new Gauge('window_open_ms');

export const options = {{
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'max', 'p(50)', 'p(95)', 'p(99)', 'count'],
  scenarios: {{
    closed: {{ executor: 'constant-vus', vus: {users}, duration: '{total_s}s', gracefulStop: '{grace_s}s' }},
  }},
}};

export default function () {{
  const opened = exec.scenario.startTime + warmupMs;
  const sent = Date.now();
  const response = http.post(url, body, {{ headers: headers }});
  const done = Date.now();
  if (sent >= opened && sent < opened + durationMs) {{
    if (response.status >= 200 && response.status < 300) {{
      latency.add(response.timings.duration);
    }} else {{
      failed.add(1);
    }}
  }}
  if (done >= opened && done < opened + durationMs) {{
    answered.add(1);
  }}
  windowOpen.add(opened);
}}

export function handleSummary(data) {{
  return {{ {summary_path}: JSON.stringify(data) }};
}}
"""


def k6_script(
    url: str,
    body_path: str,
    headers: Mapping[str, str],
    users: int,
    duration_s: float,
    warmup_s: float,
    summary_path: str,
    grace_s: float = 30.0,
) -> str:
    """A k6 script: ``users`` VUs POST the body back to back (closed loop) for warm-up + duration seconds."""
    return K6_SCRIPT.format(
        body_path=json.dumps(body_path),
        headers=json.dumps(dict(headers)),
        url=json.dumps(url),
        warmup_ms=round(warmup_s * 1000),
        duration_ms=round(duration_s * 1000),
        users=users,
        total_s=f"{warmup_s + duration_s:g}",
        grace_s=f"{grace_s:g}",
        summary_path=json.dumps(summary_path),
    )


def parse_k6_summary(summary: Mapping, duration_s: float) -> ToolFigures:
    """Figures from the summary our k6 script writes: its window metrics (latency in ms)."""
    metrics = summary.get("metrics", {})
    if "measured_latency" not in metrics and "window_open_ms" in metrics:
        raise ToolOutputError(
            f"k6: no request sent in the {duration_s:g} s window got a successful answer "
            f"(answers in the window: {metrics.get('measured_answers', {}).get('values', {}).get('count', 0)})"
        )
    try:
        latency = metrics["measured_latency"]["values"]
        answers = metrics["measured_answers"]["values"]["count"]
        opened_ms = metrics["window_open_ms"]["values"]["value"]
    except KeyError as missing:
        raise ToolOutputError(f"k6 summary lacks {missing}; metrics present: {sorted(metrics)}") from None
    failures = metrics.get("measured_failures", {}).get("values", {}).get("count", 0)
    opened = opened_ms / 1000.0
    return ToolFigures(
        rps=answers / duration_s,
        p50_ms=float(latency["p(50)"]),
        p95_ms=float(latency["p(95)"]),
        p99_ms=float(latency["p(99)"]),
        requests=int(latency["count"]) + int(failures),
        failures=int(failures),
        window=(opened, opened + duration_s),
    )


# The server's counters ------------------------------------------------------------------------------

Snapshot = tuple[float, Mapping[str, float]]


def counters_at(snapshots: Sequence[Snapshot], when: float) -> dict[str, float]:
    """Every counter at time ``when``, linearly interpolated between the snapshots around it.

    ``snapshots`` are (``time.time()``, counters) in time order; counters missing from a
    snapshot count as 0 (TorchServe publishes a model's counters only after its first request).
    """
    times = [at for at, _ in snapshots]
    if not snapshots or not times[0] <= when <= times[-1]:
        span = f"{times[0]:.3f}-{times[-1]:.3f}" if snapshots else "none"
        raise ValueError(f"no snapshots around {when:.3f} (snapshots span {span})")
    after = min(bisect_right(times, when), len(snapshots) - 1)
    before = max(after - 1, 0)
    (t0, first), (t1, second) = snapshots[before], snapshots[after]
    share = 0.0 if math.isclose(t0, t1) else (when - t0) / (t1 - t0)
    names = first.keys() | second.keys()
    return {name: first.get(name, 0.0) + share * (second.get(name, 0.0) - first.get(name, 0.0)) for name in names}


def centered_window(launched: float, exited: float, span_s: float) -> tuple[float, float]:
    """A ``span_s`` window centred in a process's lifetime [launched, exited].

    For a tool that measures all its load but does not say when: the time outside the window is
    its start-up (before) and the wait for the requests still in flight plus its report (after),
    both a fraction of a second, so the centred window is off by at most half of their sum.
    """
    slack = max(0.0, exited - launched - span_s)
    start = launched + slack / 2
    return start, start + span_s


def cpu_fit(runs: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(fixed CPU s per run, marginal CPU ms per request) fitted to (requests, CPU s) pairs of one tool's runs.

    A tool's whole-run CPU is its start-up and tear-down plus a cost per request; a straight
    line through runs of different sizes separates the two. None with fewer than two distinct sizes.
    """
    sizes = {requests for requests, _ in runs}
    if len(sizes) < 2:
        return None
    count = len(runs)
    mean_x = sum(requests for requests, _ in runs) / count
    mean_y = sum(cpu for _, cpu in runs) / count
    slope = sum((requests - mean_x) * (cpu - mean_y) for requests, cpu in runs) / sum(
        (requests - mean_x) ** 2 for requests, _ in runs
    )
    return mean_y - slope * mean_x, slope * 1000.0


@dataclass(frozen=True)
class RunCounts:
    """One run as the throughput decomposition needs it: the tool's rate, the server's rate and time per request."""

    rps: float
    server_rps: float
    server_ms: float

    @property
    def in_server(self) -> float:
        """Requests inside the server on average over the window (Little's law: rate x time in the server)."""
        return self.server_rps * self.server_ms / 1000.0


@dataclass(frozen=True)
class Decomposition:
    """A tool's throughput over a reference tool's, as the product of three factors (geometric means over rounds).

    ``counting``: how the tools' own rates compare with what the server counted in their windows;
    ``load``: how many requests each kept inside the server (the concurrency the client really applied);
    ``speed``: the server's time per request during the reference's runs over that during the tool's.
    ``ratio == counting * load * speed`` exactly.
    """

    ratio: float
    counting: float
    load: float
    speed: float


def _geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(value) for value in values) / len(values))


def decompose(tool: Sequence[RunCounts], reference: Sequence[RunCounts]) -> Decomposition | None:
    """The decomposition of ``tool``'s throughput over ``reference``'s; None without positive figures on both sides."""
    sides = []
    for runs in (tool, reference):
        usable = [run for run in runs if run.rps > 0 and run.server_rps > 0 and run.server_ms > 0]
        if not usable:
            return None
        sides.append(
            (
                _geometric_mean([run.rps for run in usable]),
                _geometric_mean([run.rps / run.server_rps for run in usable]),
                _geometric_mean([run.in_server for run in usable]),
                _geometric_mean([run.server_ms for run in usable]),
            )
        )
    (rps, counted, inside, server_ms), (rps_ref, counted_ref, inside_ref, server_ms_ref) = sides
    return Decomposition(rps / rps_ref, counted / counted_ref, inside / inside_ref, server_ms_ref / server_ms)
