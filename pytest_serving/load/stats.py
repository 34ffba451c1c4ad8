"""Raw latency samples and the statistics computed from them.

Every Locust process records each measured request itself (float milliseconds
from ``time.perf_counter``) and saves the samples to a ``.npz`` file when the
test stops; the runner merges the files of all processes and computes exact
percentiles, per-window figures and a stability verdict from the raw values,
instead of Locust's statistics, which round response times to whole
milliseconds and coarser buckets.

Latency percentiles are over successful (2xx) requests only, so fast error
answers cannot make a server look quick; failures show in ``failure_rate`` and
``status_counts``. Percentiles interpolate linearly between ranks (numpy's default).

Two rates are reported: ``offered_rps``, the sends due in the measured window
per second (n / duration), and ``rps``, the answers that arrived within it per
second (from requests sent during warmup too). They agree while the server
keeps up; when it falls behind an open-loop schedule, ``rps`` drops below the
offered rate.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pytest_serving.load.answers import AnswerCheck
from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.resources import ResourceFigures

PERCENTILES = (50, 90, 95, 99)


def is_success(codes: np.ndarray) -> np.ndarray:
    """Which outcome codes are 2xx HTTP statuses."""
    return (codes >= 200) & (codes < 300)


@dataclass
class RawSamples:
    """Measured requests of one or more Locust processes.

    ``offset_s`` is when each measured send was due (scheduled time in open loop,
    start time in closed loop), in seconds since the measured window opened.
    ``completed_s`` is when each answer (or failure) that arrived inside the
    window arrived, whichever phase its request was sent in.
    ``code`` is the HTTP status, or ``-1 - i`` for a request that got no answer
    because of ``reasons[i]`` (an exception name such as ``ConnectionRefusedError``).
    ``cpu_warnings`` counts processes whose CPU went above Locust's 90% warning
    level: their sends and timings may lag, so the figures understate the server.
    """

    offset_s: np.ndarray
    latency_ms: np.ndarray
    code: np.ndarray
    completed_s: np.ndarray
    reasons: list[str] = field(default_factory=list)
    late_sends: int = 0
    dropped_sends: int = 0
    started_at: float = 0.0
    processes: int = 1
    cpu_warnings: int = 0
    #: How long the warm-up lasted, and how it ended when it adapts (``LoadPhase.max_warmup``).
    warmup_s: float | None = None
    warmup_note: str = ""
    #: How long the measured window lasted, when it grew past the phase's duration (``LoadPhase.min_requests``).
    measured_s: float | None = None
    #: Per request, the index in ``tags`` of what its answer carried (the phase's ``answer_tag``), -1 for
    #: nothing; empty when the phase recorded no tags.
    tag: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    tags: list[str] = field(default_factory=list)

    def tag_names(self) -> list[str]:
        """Each request's tag ("" for none), in request order."""
        if self.tag.size != self.code.size:
            return [""] * int(self.code.size)
        return [self.tags[index] if index >= 0 else "" for index in self.tag.tolist()]

    def save(self, path: str | Path) -> None:
        meta = {
            "tags": self.tags,
            "reasons": self.reasons,
            "late_sends": self.late_sends,
            "dropped_sends": self.dropped_sends,
            "started_at": self.started_at,
            "processes": self.processes,
            "cpu_warnings": self.cpu_warnings,
            "warmup_s": self.warmup_s,
            "warmup_note": self.warmup_note,
            "measured_s": self.measured_s,
        }
        with open(path, "wb") as file:
            np.savez(
                file,
                offset_s=self.offset_s,
                latency_ms=self.latency_ms,
                code=self.code,
                completed_s=self.completed_s,
                tag=self.tag,
                meta=np.array(json.dumps(meta)),
            )

    @classmethod
    def load(cls, path: str | Path) -> RawSamples:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"][()]))
            tag = data["tag"] if "tag" in data.files else np.zeros(0, dtype=np.int32)
            return cls(data["offset_s"], data["latency_ms"], data["code"], data["completed_s"], tag=tag, **meta)

    @classmethod
    def merge(cls, parts: Sequence[RawSamples]) -> RawSamples:
        """One sample set from several processes' sets; reason codes are renumbered into one list."""
        if not parts:
            raise ValueError("nothing to merge")
        reasons = sorted({reason for part in parts for reason in part.reasons})
        codes = []
        for part in parts:
            code = part.code.astype(np.int32, copy=True)
            if part.reasons:
                renumber = np.array([reasons.index(reason) for reason in part.reasons])
                failed = code < 0
                code[failed] = -1 - renumber[-1 - code[failed]]
            codes.append(code)
        tags = sorted({tag for part in parts for tag in part.tags})
        renumbered = []
        for part in parts:
            if part.tag.size != part.code.size:
                renumbered.append(np.full(part.code.size, -1, dtype=np.int32))
                continue
            mapping = np.array([tags.index(tag) for tag in part.tags] + [-1], dtype=np.int32)
            renumbered.append(mapping[part.tag])  # -1 indexes the appended -1: no tag stays no tag
        return cls(
            offset_s=np.concatenate([part.offset_s for part in parts]),
            latency_ms=np.concatenate([part.latency_ms for part in parts]),
            code=np.concatenate(codes),
            completed_s=np.concatenate([part.completed_s for part in parts]),
            reasons=reasons,
            late_sends=sum(part.late_sends for part in parts),
            dropped_sends=sum(part.dropped_sends for part in parts),
            started_at=min(part.started_at for part in parts),
            processes=sum(part.processes for part in parts),
            cpu_warnings=sum(part.cpu_warnings for part in parts),
            warmup_s=max((part.warmup_s for part in parts if part.warmup_s is not None), default=None),
            warmup_note="; ".join(part.warmup_note for part in parts if part.warmup_note),
            measured_s=max((part.measured_s for part in parts if part.measured_s is not None), default=None),
            tag=np.concatenate(renumbered) if tags else np.zeros(0, dtype=np.int32),
            tags=tags,
        )

    def status_counts(self) -> dict[str, int]:
        """Requests per HTTP status (``"200"``) or per reason for no answer (``"TimeoutError"``)."""
        counts = Counter(self.code.tolist())
        return {(str(code) if code > 0 else self.reasons[-1 - code]): count for code, count in sorted(counts.items())}


class SampleRecorder:
    """Collects one Locust process's measured requests as they complete (runs inside the Locust process)."""

    def __init__(self) -> None:
        self._offsets: list[float] = []
        self._latencies: list[float] = []
        self._codes: list[int] = []
        self._completions: list[float] = []
        self._reasons: dict[str, int] = {}
        self._tags: list[int] = []
        self._tag_names: dict[str, int] = {}
        self.late_sends = 0
        self.dropped_sends = 0

    def record(self, offset_s: float, latency_ms: float, outcome: int | str, tag: str = "") -> None:
        """One measured request; ``outcome`` is its HTTP status or why it got none, ``tag`` what its answer carried."""
        self._tags.append(self._tag_names.setdefault(tag, len(self._tag_names)) if tag else -1)
        if isinstance(outcome, str):
            code = -1 - self._reasons.setdefault(outcome, len(self._reasons))
        else:
            code = outcome
        self._offsets.append(offset_s)
        self._latencies.append(latency_ms)
        self._codes.append(code)

    @property
    def count(self) -> int:
        """Measured requests recorded so far."""
        return len(self._codes)

    def completed(self, offset_s: float) -> None:
        """An answer or failure arrived ``offset_s`` into the measured window."""
        self._completions.append(offset_s)

    def recent(self, now_s: float, span_s: float) -> dict[str, float | int | None]:
        """Progress figures of the requests sent in the last ``span_s`` before ``now_s`` (window offsets):
        answers per second and p95 of the successful ones. Requests are kept in completion order, so the
        scan stops a little past the span's start."""
        start = max(0.0, now_s - span_s)
        latencies = []
        for index in range(len(self._offsets) - 1, -1, -1):
            if self._offsets[index] < start - 1.0:
                break
            if self._offsets[index] >= start and 200 <= self._codes[index] < 300:
                latencies.append(self._latencies[index])
        length = now_s - start
        return {
            "measured": len(self._offsets),
            "rps": len(latencies) / length if length > 0 else None,
            "p95_ms": float(np.percentile(latencies, 95)) if latencies else None,
        }

    def samples(
        self,
        started_at: float,
        cpu_warning: bool = False,
        warmup_s: float | None = None,
        warmup_note: str = "",
        measured_s: float | None = None,
    ) -> RawSamples:
        return RawSamples(
            offset_s=np.array(self._offsets, dtype=np.float64),
            latency_ms=np.array(self._latencies, dtype=np.float64),
            code=np.array(self._codes, dtype=np.int32),
            completed_s=np.array(self._completions, dtype=np.float64),
            reasons=list(self._reasons),
            late_sends=self.late_sends,
            dropped_sends=self.dropped_sends,
            started_at=started_at,
            cpu_warnings=int(cpu_warning),
            warmup_s=warmup_s,
            warmup_note=warmup_note,
            measured_s=measured_s,
            tag=np.array(self._tags, dtype=np.int32) if self._tag_names else np.zeros(0, dtype=np.int32),
            tags=list(self._tag_names),
        )


@dataclass(frozen=True)
class LatencySummary:
    """Latency of successful requests, in milliseconds."""

    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    mean: float
    min: float

    @classmethod
    def of(cls, latency_ms: np.ndarray) -> LatencySummary | None:
        """Exact figures of raw latencies; None when there are none."""
        if latency_ms.size == 0:
            return None
        p50, p90, p95, p99 = np.percentile(latency_ms, PERCENTILES).tolist()
        return cls(p50, p90, p95, p99, float(latency_ms.max()), float(latency_ms.mean()), float(latency_ms.min()))


#: A window's p95 and rate compare only with enough requests in it (perf_analyzer measures 50 at least).
MIN_WINDOW_REQUESTS = 50


@dataclass(frozen=True)
class Window:
    """Requests due within one window of the measured phase, and answers that arrived in it (``rps``)."""

    start_s: float
    n: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None


def windows_of(samples: RawSamples, duration_s: float, window_s: float) -> tuple[Window, ...]:
    """Consecutive full ``window_s`` windows of the measured ``duration_s``; a partial tail window is left out."""
    count = math.floor(duration_s / window_s + 1e-9)
    index = np.floor(samples.offset_s / window_s).astype(np.int64)
    completed = np.floor(samples.completed_s / window_s).astype(np.int64)
    success = is_success(samples.code)
    windows = []
    for k in range(count):
        inside = index == k
        ok_latencies = samples.latency_ms[inside & success]
        p50, p95 = np.percentile(ok_latencies, (50, 95)).tolist() if ok_latencies.size else (None, None)
        answered = int((completed == k).sum())
        windows.append(
            Window(k * window_s, int(inside.sum()), int((inside & ~success).sum()), answered / window_s, p50, p95)
        )
    return tuple(windows)


#: Stability windows aim at this many times ``MIN_WINDOW_REQUESTS``, so that a window's count, which
#: varies a little around its mean, stays above the minimum.
WINDOW_REQUESTS_MARGIN = 1.25


def stability_window_s(duration_s: float, window_s: float, last: int, n: int) -> float:
    """The stability windows' length: at least ``window_s``, long enough to hold about
    ``WINDOW_REQUESTS_MARGIN`` × ``MIN_WINDOW_REQUESTS`` of the phase's ``n`` requests, short enough for
    ``last`` windows to fit."""
    if n == 0:
        return window_s
    wanted = duration_s * WINDOW_REQUESTS_MARGIN * MIN_WINDOW_REQUESTS / n
    return max(window_s, min(wanted, duration_s / last))


def stability_of(windows: Sequence[Window], last: int, tolerance: float) -> tuple[bool, str]:
    """Whether the last ``last`` windows agree, and why: perf_analyzer's test (consecutive windows within
    a tolerance of their mean) on each window's median latency and answer rate. The median, not the p95:
    a p95 of 50 requests is their third-slowest answer, which moves by tens of percent between windows
    of a steady server. Windows that hold fewer than ``MIN_WINDOW_REQUESTS`` requests on average are not
    judged: too small a window is the phase's choice, not the server's instability (stable, with a "not
    judged" note); one window below it among larger ones is the server slowing down, and is judged."""
    if len(windows) < last:
        return False, f"unstable: {len(windows)} full windows, {last} needed"
    tail = windows[-last:]
    if any(window.p50_ms is None for window in tail):
        return False, f"unstable: a window among the last {last} has no successful request"
    length = f" of {tail[1].start_s - tail[0].start_s:.3g} s" if last > 1 else ""
    held = sum(window.n for window in tail) / last
    if held < MIN_WINDOW_REQUESTS:
        return True, (
            f"not judged: only {held:.0f} requests a window over the last {last}{length} "
            f"({MIN_WINDOW_REQUESTS} needed to compare medians and rates): lengthen the phase to judge it"
        )
    findings = []
    stable = True
    for name, unit, values in (
        ("p50", " ms", [window.p50_ms for window in tail]),
        ("rps", "", [window.rps for window in tail]),
    ):
        mean = sum(values) / len(values)
        spread = max(abs(value - mean) for value in values)
        agrees = spread <= tolerance * mean
        stable = stable and agrees
        deviation = spread / mean if mean else 0.0
        findings.append(
            f"{name} {min(values):.4g}-{max(values):.4g}{unit} {'within' if agrees else 'beyond'} ±{tolerance:.0%}"
            + ("" if agrees else f" (±{deviation:.1%})")
        )
    verdict = "stable" if stable else "unstable"
    return stable, f"{verdict} over the last {last} windows{length}: " + ", ".join(findings)


@dataclass(frozen=True)
class PhaseStats:
    """The outcome of one measured load phase; ``to_dict()`` is its JSON form."""

    level: str
    configuration: dict
    n: int
    failures: int
    offered_rps: float
    rps: float
    failure_rate: float
    status_counts: dict[str, int]
    latency: LatencySummary | None
    late_sends: int
    dropped_sends: int
    windows: tuple[Window, ...]
    stable: bool
    stability: str
    started_at: str
    duration: float
    processes: int
    cpu_warnings: int
    #: The answers checked against the in-process reference, when the phase checked them.
    answers: AnswerCheck | None = None
    #: The server container's memory and CPU during the phase, when pytest-serving started it.
    resources: ResourceFigures | None = None
    #: How long the warm-up lasted (s), and, when it adapted, whether it settled.
    warmup_s: float | None = None
    warmup_note: str = ""
    #: At most ``LATENCY_SAMPLE_SIZE`` successful latencies in send order, for bootstrap comparisons
    #: against this phase later (``--serving-baseline``): percentiles alone cannot say how sure they are.
    latency_sample_ms: list[float] = field(default_factory=list)

    @property
    def p95_ms(self) -> float | None:
        return self.latency.p95 if self.latency else None

    def to_dict(self) -> dict:
        document = asdict(self)
        document["latency_ms"] = document.pop("latency")
        document["windows"] = list(document["windows"])
        document["answers"] = self.answers.to_dict() if self.answers else None
        document["resources"] = self.resources.to_dict() if self.resources else None
        return document


#: At most this many latencies of a phase are kept in results.json (about 20 kB of JSON).
LATENCY_SAMPLE_SIZE = 2000


def bounded_sample(samples: RawSamples, size: int = LATENCY_SAMPLE_SIZE) -> list[float]:
    """Successful latencies in send order, every k-th when there are more than ``size`` (so a block of
    the sample is still a stretch of time), rounded to microseconds."""
    success = is_success(samples.code)
    latencies = samples.latency_ms[success][np.argsort(samples.offset_s[success], kind="stable")]
    if latencies.size > size:
        latencies = latencies[np.linspace(0, latencies.size - 1, size).round().astype(np.int64)]
    return [round(value, 3) for value in latencies.tolist()]


def summarize(samples: RawSamples, phase: LoadPhase, **configuration: object) -> PhaseStats:
    """Statistics of a phase's merged samples; ``configuration`` adds context such as the base URL."""
    n = int(samples.code.size)
    success = is_success(samples.code)
    failures = n - int(success.sum())
    duration = samples.measured_s or phase.duration
    window_s = stability_window_s(duration, phase.window, phase.stability_windows, n)
    windows = windows_of(samples, duration, window_s)
    # Stability compares the phase's consecutive parts, each as long as it can be (perf_analyzer's windows
    # are 5 s): short windows of a steady server differ by the machine's own hiccups.
    parts = windows_of(samples, duration, duration / phase.stability_windows)
    stable, stability = stability_of(parts, phase.stability_windows, phase.stability_tolerance)
    return PhaseStats(
        level=phase.level_key,
        configuration={**phase.to_dict(), **configuration},
        n=n,
        failures=failures,
        offered_rps=n / duration,
        rps=samples.completed_s.size / duration,
        failure_rate=failures / n if n else 0.0,
        status_counts=samples.status_counts(),
        latency=LatencySummary.of(samples.latency_ms[success]),
        late_sends=samples.late_sends,
        dropped_sends=samples.dropped_sends,
        windows=windows,
        stable=stable,
        stability=stability,
        started_at=datetime.fromtimestamp(samples.started_at, UTC).isoformat(),
        duration=duration,
        processes=samples.processes,
        cpu_warnings=samples.cpu_warnings,
        warmup_s=phase.warmup if samples.warmup_s is None else samples.warmup_s,
        warmup_note=samples.warmup_note,
        latency_sample_ms=bounded_sample(samples),
    )
