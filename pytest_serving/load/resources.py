"""A server's memory and CPU during a load phase, as figures a budget can judge.

The samples come from the container (``containers.resources.ResourceMonitor`` reads them
through the Docker API); this module only turns them into figures: peak memory, mean CPU,
and memory growth per 1000 requests, the slope of a straight line fitted to memory against
the requests answered so far. A leak grows memory with the requests served, not with time,
so a slope per request tells a leaking handler from a server that is merely warming its
caches, whatever the phase's rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from pytest_serving.types import ResourceSample
from pytest_serving.verdicts.stats import student_t_quantile

#: Memory growth a steady soak phase may show by default (``--serving-soak``), MB per 1000 requests.
#: Measured on the embedded model (docs/benchmarks.md): Triton's good handler grew -0.4 MB per 1000
#: over a 60 s soak, short phases right after a start showed up to 10 (warm-up allocations over a few
#: dozen requests), and a handler keeping 2 MB per request grew by 1975. 50 (50 kB per request) leaves
#: five times the worst noise seen and still catches a leak of a twentieth of that 2 MB.
DEFAULT_MEMORY_GROWTH_MB_PER_1K = 50.0
#: A growth figure needs at least this many memory samples inside the measured window.
MIN_FIT_SAMPLES = 3
#: The residuals' lag-1 correlation counted at most (an effective count of a ninth of the readings), and
#: the fewest degrees of freedom the growth interval uses.
MAX_RESIDUAL_CORRELATION = 0.8
MIN_GROWTH_DEGREES = 4
#: Every phase fails when its whole growth interval, at this confidence, lies above the growth budget
#: (default ``DEFAULT_MEMORY_GROWTH_MB_PER_1K``): a leak that a short phase already shows beyond doubt.
GROWTH_CONFIDENCE = 0.99


@dataclass(frozen=True)
class ResourceFigures:
    """A load phase's resource figures; ``timeline`` rows are (seconds since the measured window opened,
    memory MB, CPU cores), warm-up included, for the report's charts."""

    samples: int
    peak_memory_mb: float | None
    mean_cpu: float | None
    memory_growth_mb_per_1k: float | None
    growth_requests: int
    #: The growth's interval at ``GROWTH_CONFIDENCE``, widened for autocorrelated readings; None below 4 readings.
    memory_growth_interval: tuple[float, float] | None
    startup_s: float | None
    timeline: tuple[tuple[float, float, float], ...]

    def to_dict(self) -> dict:
        document = asdict(self)
        document["timeline"] = [list(row) for row in self.timeline]
        return document


def answered_by(offsets_s: np.ndarray, window_s: float, window_rps: Sequence[float]) -> np.ndarray:
    """Requests answered from the measured window's opening until each offset (s), interpolated
    between the edges of consecutive ``window_s`` windows, in which answers arrived at ``window_rps``.
    Offsets outside the windows get NaN."""
    if not window_rps:
        return np.full(len(offsets_s), np.nan)
    edges = np.arange(len(window_rps) + 1) * window_s
    cumulative = np.concatenate([[0.0], np.cumsum(np.asarray(window_rps) * window_s)])
    counts = np.interp(offsets_s, edges, cumulative)
    counts[(offsets_s < 0) | (offsets_s > edges[-1])] = np.nan
    return counts


def growth_per_1k(requests: np.ndarray, memory_mb: np.ndarray) -> float | None:
    """Slope of memory against requests answered (least squares), in MB per 1000 requests."""
    usable = ~np.isnan(requests)
    requests, memory_mb = requests[usable], memory_mb[usable]
    if requests.size < MIN_FIT_SAMPLES or np.ptp(requests) <= 0:
        return None
    slope, _ = np.polyfit(requests, memory_mb, 1)
    return float(slope * 1000.0)


def growth_interval_per_1k(
    requests: np.ndarray, memory_mb: np.ndarray, confidence: float = GROWTH_CONFIDENCE
) -> tuple[float, float] | None:
    """The growth slope's interval, MB per 1000 requests. Memory moves in allocator steps and garbage
    collector saw-teeth, so neighbouring readings are not independent: the residuals' lag-1
    autocorrelation rho shrinks the effective number of readings to n(1 - rho)/(1 + rho), which
    widens the ordinary least-squares interval and lowers Student's degrees of freedom."""
    usable = ~np.isnan(requests)
    x, y = requests[usable], memory_mb[usable]
    n = x.size
    if n < MIN_FIT_SAMPLES + 1 or np.ptp(x) <= 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    residuals = y - (slope * x + intercept)
    spread = float(np.sum((x - x.mean()) ** 2))
    energy = float(np.sum(residuals**2))
    rho = float(np.sum(residuals[1:] * residuals[:-1]) / energy) if energy > 0 else 0.0
    # At most nine-fold: a leak's readings follow its line so closely that their small smooth residuals
    # (requests interpolated from window rates) read as rho near 1, and an unbounded correction left one
    # or two degrees of freedom, a t of 10 to 64, and an interval wide enough to pass a 2 MiB leak.
    rho = min(max(rho, 0.0), MAX_RESIDUAL_CORRELATION)
    inflation = (1 + rho) / (1 - rho)
    standard_error = math.sqrt(energy / (n - 2) / spread * inflation)
    degrees = max(MIN_GROWTH_DEGREES, math.floor(n / inflation) - 2)
    t = student_t_quantile(0.5 + confidence / 2, degrees)
    return (float((slope - t * standard_error) * 1000.0), float((slope + t * standard_error) * 1000.0))


def phase_resources(
    samples: Sequence[ResourceSample],
    window_opened: str | float,
    warmup_s: float,
    duration_s: float,
    window_s: float,
    window_rps: Sequence[float],
    startup_s: float | None = None,
) -> ResourceFigures:
    """Figures of the samples taken during one phase (warm-up and measured window).

    ``window_opened`` is when the measured window opened (ISO time or epoch s); ``window_rps``
    the answer rate of each consecutive ``window_s`` window of it. Peak memory covers the
    warm-up too; mean CPU and the growth fit cover the measured window only.
    """
    opened = datetime.fromisoformat(window_opened).timestamp() if isinstance(window_opened, str) else window_opened
    phase = [s for s in samples if opened - warmup_s <= s.at <= opened + duration_s]
    offsets = np.array([s.at - opened for s in phase])
    memory = np.array([s.memory_mb for s in phase])
    cpu = np.array([s.cpu for s in phase])
    measured = (offsets >= 0) if phase else np.zeros(0, dtype=bool)
    requests = answered_by(offsets[measured], window_s, window_rps)
    growth = growth_per_1k(requests, memory[measured])
    interval = growth_interval_per_1k(requests, memory[measured]) if growth is not None else None
    spanned = requests[~np.isnan(requests)]
    return ResourceFigures(
        samples=len(phase),
        peak_memory_mb=float(memory.max()) if phase else None,
        mean_cpu=float(cpu[measured].mean()) if measured.any() else None,
        memory_growth_mb_per_1k=growth,
        growth_requests=int(np.ptp(spanned)) if spanned.size else 0,
        memory_growth_interval=interval,
        startup_s=startup_s,
        timeline=tuple(
            (round(float(o), 3), round(float(m), 2), round(float(c), 3)) for o, m, c in zip(offsets, memory, cpu)
        ),
    )


#: Rows a session's memory and CPU timeline keeps in results.json (evenly thinned beyond).
SESSION_TIMELINE_POINTS = 600


def lifetime_resources(samples: Sequence[ResourceSample], startup_s: float | None) -> dict:
    """A server's figures over its whole life in the session: cold start, peak memory, mean CPU, and a
    timeline (seconds since the first reading, MB, cores) thinned to ``SESSION_TIMELINE_POINTS`` rows."""
    if not samples:
        return {"samples": 0, "startup_s": startup_s, "peak_memory_mb": None, "mean_cpu": None, "timeline": []}
    first = samples[0].at
    step = max(1, -(-len(samples) // SESSION_TIMELINE_POINTS))
    return {
        "samples": len(samples),
        "startup_s": startup_s,
        "peak_memory_mb": max(s.memory_mb for s in samples),
        "mean_cpu": sum(s.cpu for s in samples) / len(samples),
        "timeline": [[round(s.at - first, 3), round(s.memory_mb, 2), round(s.cpu, 3)] for s in samples[::step]],
    }
