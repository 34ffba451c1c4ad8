"""The statistics of a release decision: a paired test on correctness, bootstrap intervals on speed.

Pure functions on numbers (no server, no clock), so every verdict can be unit-tested.

Accuracy: both versions answer the same samples, so the comparison is paired; McNemar's exact
test looks only at the samples where exactly one version is right (the discordant pairs) and asks
whether they split evenly, as they would if neither version were better.

Speed: requests inside one window are not independent (they share the server's queue, the
machine's momentary load, a garbage collection), so resampling single requests would make the
interval far too narrow. The unit that is resampled is the window.

Side by side (``paired_ratio``), window *i* of each version ran in the same minute, so each pair
gives one ratio (candidate's p95 over current's, in that pair) in which noise that hit both
versions cancels; the estimate is the trimmed geometric mean of the pairs' ratios and the pairs
are resampled. A disturbance that hits one window of one pair (another job on the machine for a
few seconds) then makes one outlying ratio of n, which the trimming leaves out, instead of the
pooled tail of every window, where it would decide the p95 of the whole comparison. Against a baseline from another run (``bootstrap_ratio``) there are
no pairs: each side's windows are drawn on their own and the statistic of a resample is computed
on all requests of the windows it drew (p95 over the pooled latencies; requests answered per
second over the pooled windows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

#: Resamples of every bootstrap interval; the percentile interval's ends are stable to ~1 % at this count.
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0


def student_t_quantile(probability: float, degrees: int) -> float:
    """Student's t quantile: exact for 1 and 2 degrees of freedom, otherwise the Cornish-Fisher
    expansion around the normal quantile (Abramowitz and Stegun 26.7.5: within 0.5 % of the tables
    from 3 degrees, 0.1 % from 5, for the quantiles a release uses), so no SciPy is needed."""
    if degrees < 1 or not 0.5 <= probability < 1.0:
        raise ValueError(f"need degrees >= 1 and 0.5 <= probability < 1, got {degrees}, {probability}")
    if degrees == 1:
        return math.tan(math.pi * (probability - 0.5))
    if degrees == 2:
        return (2 * probability - 1) / math.sqrt(2 * probability * (1 - probability))
    z = NormalDist().inv_cdf(probability)
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(term / degrees**power for power, term in enumerate(terms, start=1))


def small_sample_widening(blocks: int, confidence: float = CONFIDENCE) -> float:
    """How much wider than the bootstrap's percentile interval an interval over ``blocks``
    resampled blocks must be: that interval behaves like a normal one with the plug-in variance
    (z, divisor n), which is too narrow for a handful of windows; Student's t with n-1 degrees of
    freedom and the unbiased variance widen it by (t / z) * sqrt(n / (n - 1)) (at 95 %: 1.58 for
    5 windows, 1.16 for 20, 1.0 in the limit)."""
    if blocks < 2:
        return math.inf
    probability = 0.5 + confidence / 2
    t = student_t_quantile(probability, blocks - 1)
    return t / NormalDist().inv_cdf(probability) * math.sqrt(blocks / (blocks - 1))


def mcnemar_exact(only_current: int, only_candidate: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test (p = 1/2) on the discordant pairs.

    ``only_current``: samples only the current version got right; ``only_candidate``: only the
    candidate. 1.0 when there is no discordant pair (nothing speaks for either version).
    """
    if only_current < 0 or only_candidate < 0:
        raise ValueError("counts of discordant pairs must be >= 0")
    n = only_current + only_candidate
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_current, only_candidate) + 1))
    # Exact integer arithmetic up to the final division: no underflow for large n.
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class PairedCorrectness:
    """Top-1 correctness of two versions on the same samples, and how they differ."""

    n: int
    current_correct: int
    candidate_correct: int
    only_current: int
    only_candidate: int
    agreement: float
    p_value: float

    @property
    def current_top1(self) -> float:
        return self.current_correct / self.n

    @property
    def candidate_top1(self) -> float:
        return self.candidate_correct / self.n

    @property
    def drop_points(self) -> float:
        """How many percentage points the candidate's top-1 lies below the current's (negative: above)."""
        return 100.0 * (self.current_correct - self.candidate_correct) / self.n

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "current_top1": self.current_top1,
            "candidate_top1": self.candidate_top1,
            "drop_points": self.drop_points,
        }


def paired_correctness(
    current_right: Sequence[bool], candidate_right: Sequence[bool], same_top1: Sequence[bool]
) -> PairedCorrectness:
    """Per sample (same order in all three): was the current right, was the candidate right, same top-1?"""
    n = len(current_right)
    if n == 0 or len(candidate_right) != n or len(same_top1) != n:
        raise ValueError(f"need the same number (> 0) of samples for both versions, got {n}/{len(candidate_right)}")
    only_current = sum(1 for a, b in zip(current_right, candidate_right) if a and not b)
    only_candidate = sum(1 for a, b in zip(current_right, candidate_right) if b and not a)
    return PairedCorrectness(
        n=n,
        current_correct=sum(map(bool, current_right)),
        candidate_correct=sum(map(bool, candidate_right)),
        only_current=only_current,
        only_candidate=only_candidate,
        agreement=sum(map(bool, same_top1)) / n,
        p_value=mcnemar_exact(only_current, only_candidate),
    )


@dataclass(frozen=True)
class RatioInterval:
    """Candidate/current ratio of one statistic: the point estimate and its bootstrap interval."""

    statistic: str
    current: float
    candidate: float
    ratio: float
    low: float
    high: float
    windows: int
    confidence: float = CONFIDENCE
    resamples: int = BOOTSTRAP_RESAMPLES

    def to_dict(self) -> dict:
        return asdict(self)


class PooledStatistic:
    """A statistic of the requests of several windows pooled together, computed for many resamples
    at once: ``counts[r, w]`` says how often resample ``r`` drew window ``w``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def of(self, blocks: Sequence[np.ndarray]) -> float:
        """The statistic of all blocks, each once."""
        return float(self.resampled(blocks, np.ones((1, len(blocks)), dtype=np.int64))[0])

    def resampled(self, blocks: Sequence[np.ndarray], counts: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def sorted_with_owners(blocks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every block's values pooled and sorted, with the index of the block each came from."""
    values = np.concatenate(blocks)
    owner = np.repeat(np.arange(len(blocks)), [len(block) for block in blocks])
    order = np.argsort(values, kind="stable")
    return values[order], owner[order]


class PooledPercentile(PooledStatistic):
    """A percentile of the pooled values, interpolated linearly between ranks as ``numpy.percentile``:
    a window drawn k times counts its values k times."""

    def __init__(self, name: str, q: float) -> None:
        super().__init__(name)
        self.q = q

    def resampled(self, blocks: Sequence[np.ndarray], counts: np.ndarray) -> np.ndarray:
        values, owner = sorted_with_owners(blocks)
        result = np.empty(len(counts))
        # Chunks bound the (resamples x values) matrix of cumulative weights to a few MB.
        step = max(1, 500_000 // len(values))
        for start in range(0, len(counts), step):
            cumulative = np.cumsum(counts[start : start + step][:, owner], axis=1)
            rank = self.q / 100.0 * (cumulative[:, -1] - 1)
            below, fraction = np.floor(rank), rank - np.floor(rank)
            # The value at 0-based rank k is the first whose cumulative weight exceeds k.
            at_below = (cumulative <= below[:, None]).sum(axis=1)
            at_above = (cumulative <= np.ceil(rank)[:, None]).sum(axis=1)
            result[start : start + step] = values[at_below] + (values[at_above] - values[at_below]) * fraction
        return result


class PooledMean(PooledStatistic):
    """The mean of the pooled values (per-window rates pooled: the rate over the windows drawn)."""

    def resampled(self, blocks: Sequence[np.ndarray], counts: np.ndarray) -> np.ndarray:
        sums = np.array([block.sum() for block in blocks])
        sizes = np.array([len(block) for block in blocks], dtype=np.float64)
        return (counts @ sums) / (counts @ sizes)


class PooledTrimmedMean(PooledStatistic):
    """The mean of the pooled values without the ``trim`` share at each end (a window drawn k times
    counts its values k times): nearly the mean's precision, without one stalled request's weight."""

    def __init__(self, name: str, trim: float) -> None:
        super().__init__(name)
        self.trim = trim

    def resampled(self, blocks: Sequence[np.ndarray], counts: np.ndarray) -> np.ndarray:
        values, owner = sorted_with_owners(blocks)
        result = np.empty(len(counts))
        for row, drawn in enumerate(counts):
            weights = drawn[owner].astype(np.float64)
            cumulative = np.cumsum(weights)
            total = cumulative[-1]
            # Each value's weight clipped to the part of it that lies between the trimmed ends.
            low, high = self.trim * total, (1.0 - self.trim) * total
            kept = np.clip(np.minimum(cumulative, high) - np.maximum(cumulative - weights, low), 0.0, None)
            result[row] = (kept * values).sum() / kept.sum() if kept.sum() > 0 else math.nan
        return result


P95_LATENCY = PooledPercentile("p95 latency", 95)
MEDIAN_LATENCY = PooledPercentile("median latency", 50)
MEAN_LATENCY = PooledMean("mean latency")
TRIMMED_MEAN_LATENCY = PooledTrimmedMean("10% trimmed mean latency", 0.1)
THROUGHPUT = PooledMean("throughput")


#: The smallest per-window statistic a paired ratio uses (ms or requests per second): a window that
#: answered nothing counts as this, so its ratio is very large or very small but finite.
RATIO_FLOOR = 1e-6
#: The share of pairs left out at each end of a paired ratio's mean (a 10 % trimmed mean; Yuen's
#: test uses): robust to a few disturbed windows, nearly as precise as the plain mean without them.
PAIR_TRIM = 0.1


def paired_ratio(
    current: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    statistic: PooledStatistic,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = SEED,
) -> RatioInterval:
    """Bootstrap interval of the trimmed geometric mean of per-pair ratios ``statistic(candidate_i)
    / statistic(current_i)``, pairs resampled.

    Element *i* of ``current`` and ``candidate`` are the two windows of pair *i* (latencies, or the
    window's rate as a 1-element array); a pair with an empty window is left out. The mean leaves
    out the ``PAIR_TRIM`` share of pairs with the lowest and the highest log ratio (each resample
    too): a window that another job slowed threefold is such a pair, and one in ten of them moved
    the plain mean by 10 % on Triton. ``current`` and ``candidate`` of the record are the geometric
    means of the kept pairs' windows, so their ratio is the estimate. The percentile interval is
    widened by ``small_sample_widening`` of the kept pairs. Seeded: the same data give the same interval.
    """
    pairs = [
        (statistic.of([np.asarray(a, dtype=np.float64)]), statistic.of([np.asarray(b, dtype=np.float64)]))
        for a, b in zip(current, candidate)
        if len(a) and len(b)
    ]
    if not pairs:
        raise ValueError(f"{statistic.name}: need at least one pair of non-empty windows")
    # A window that answered nothing (rate 0) is a ratio of 0 or infinity; bounded, so logs stay finite.
    values = np.log(np.clip(np.array(pairs), RATIO_FLOOR, None))
    logs = values[:, 1] - values[:, 0]
    trimmed = int(PAIR_TRIM * len(logs))
    kept = np.argsort(logs, kind="stable")[trimmed : len(logs) - trimmed]
    rng = np.random.default_rng(seed)
    resampled = np.sort(logs[rng.integers(0, len(logs), (resamples, len(logs)))], axis=1)
    means = resampled[:, trimmed : len(logs) - trimmed].mean(axis=1)
    return _interval(
        statistic,
        math.exp(values[kept, 0].mean()),
        math.exp(values[kept, 1].mean()),
        np.exp(means),
        windows=len(logs),
        widen_for=len(kept),
        confidence=confidence,
    )


def bootstrap_ratio(
    current: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    statistic: PooledStatistic,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = SEED,
) -> RatioInterval:
    """Percentile bootstrap interval of ``statistic(candidate) / statistic(current)`` over blocks
    that were not measured side by side (a baseline from another run): each side's blocks are
    drawn on their own.

    Each element of ``current`` / ``candidate`` is one block (a time slice's latencies, or a
    window's rate as a 1-element array). Seeded: the same data always give the same interval.
    The percentile interval is widened around the estimate, on the log scale, by
    ``small_sample_widening`` of the blocks per side.
    """
    current = [np.asarray(block, dtype=np.float64) for block in current if len(block)]
    candidate = [np.asarray(block, dtype=np.float64) for block in candidate if len(block)]
    if not current or not candidate:
        raise ValueError(f"{statistic.name}: both versions need at least one non-empty window")
    point_current, point_candidate = statistic.of(current), statistic.of(candidate)
    rng = np.random.default_rng(seed)
    drawn_current = rng.integers(0, len(current), (resamples, len(current)))
    drawn_candidate = rng.integers(0, len(candidate), (resamples, len(candidate)))
    denominators = statistic.resampled(current, _counts(drawn_current, len(current)))
    numerators = statistic.resampled(candidate, _counts(drawn_candidate, len(candidate)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(denominators > 0, numerators / denominators, math.inf)
    windows = min(len(current), len(candidate))
    return _interval(
        statistic, point_current, point_candidate, ratios, windows=windows, widen_for=windows, confidence=confidence
    )


def _interval(
    statistic: PooledStatistic,
    current: float,
    candidate: float,
    resampled: np.ndarray,
    *,
    windows: int,
    widen_for: int,
    confidence: float,
) -> RatioInterval:
    """The estimate ``candidate / current`` with the percentile interval of its ``resampled`` ratios,
    widened by ``small_sample_widening`` of ``widen_for`` blocks: with five windows a plain bootstrap
    interval misses far more often than one time in twenty."""
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(resampled, (tail, 100.0 - tail)).tolist()
    ratio = candidate / current if current > 0 else math.inf
    low, high = _widened(ratio, low, high, small_sample_widening(widen_for, confidence))
    return RatioInterval(
        statistic=statistic.name,
        current=current,
        candidate=candidate,
        ratio=ratio,
        low=low,
        high=high,
        windows=windows,
        confidence=confidence,
        resamples=len(resampled),
    )


def _widened(ratio: float, low: float, high: float, factor: float) -> tuple[float, float]:
    """The interval's distances from the estimate multiplied by ``factor`` on the log scale (a ratio
    stays positive); unbounded when it cannot be widened (one window, a zero or infinite end)."""
    if not (math.isfinite(factor) and 0 < low <= ratio <= high and math.isfinite(high)):
        return (0.0 if not math.isfinite(factor) or low <= 0 else low), math.inf
    return ratio * (low / ratio) ** factor, ratio * (high / ratio) ** factor


def _counts(drawn: np.ndarray, blocks: int) -> np.ndarray:
    """Resamples' drawn indices -> how often each resample drew each block."""
    counts = np.zeros((len(drawn), blocks), dtype=np.int64)
    np.add.at(counts, (np.arange(len(drawn))[:, None], drawn), 1)
    return counts


#: Beyond this many windows per version the estimate is reported as undecidable in practice.
MAX_WINDOWS_NEEDED = 10_000


def windows_needed(interval: RatioInterval, threshold: float) -> int | None:
    """Windows per version after which the interval would no longer straddle ``threshold``.

    An interval's half-width shrinks like 1/sqrt(windows); it must shrink below the distance
    between the point estimate and the threshold. None when the estimate sits on the threshold
    (no number of windows decides it); the windows measured when the interval already decides.
    """
    if not interval.low <= threshold <= interval.high:
        return interval.windows
    distance = abs(math.log(threshold / interval.ratio)) if interval.ratio > 0 and threshold > 0 else 0.0
    if distance == 0 or not math.isfinite(interval.ratio):
        return None
    # The half-width (log scale) on the side of the threshold: the interval may be skewed.
    end = interval.high if threshold > interval.ratio else interval.low
    if not (0 < end < math.inf):
        return None
    half_width = abs(math.log(end / interval.ratio))

    # The half-width shrinks like widening(n) / sqrt(n): the first window count that brings it within reach.
    def shrinkage(windows: int) -> float:
        return small_sample_widening(windows, interval.confidence) / math.sqrt(windows)

    scale = half_width / shrinkage(interval.windows)
    for windows in range(interval.windows + 1, MAX_WINDOWS_NEEDED + 1):
        if scale * shrinkage(windows) < distance:
            return windows
    return None


def time_blocks(values: np.ndarray, count: int) -> list[np.ndarray]:
    """``values`` in time order cut into ``count`` contiguous blocks of (nearly) equal size."""
    count = max(1, min(count, len(values)))
    return [block for block in np.array_split(np.asarray(values, dtype=np.float64), count) if len(block)]
