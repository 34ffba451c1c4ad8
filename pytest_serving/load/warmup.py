"""When a phase's warm-up may end: once the server's answers have settled (perf_analyzer's rule).

A fixed warm-up either wastes time on a server that is warm at once or, worse, lets the
measured window start while the server still warms (a TorchServe phase's 1 s windows fell from
p50 1524 ms to 187 ms inside one phase). With ``LoadPhase.max_warmup`` the warm-up lasts at
least ``warmup`` seconds and then ends as soon as its last ``stability_windows`` windows agree
(p95 and answer rate within ``stability_tolerance``, the same test as the measured windows'),
and at the latest after ``max_warmup`` seconds; the phase then records whether it settled.
Windows hold about ``MIN_WINDOW_REQUESTS`` answers, as the measured ones, but are never so long
that the windows would not fit in ``max_warmup``.
"""

from __future__ import annotations

import numpy as np

from pytest_serving.load.stats import (
    MIN_WINDOW_REQUESTS,
    WINDOW_REQUESTS_MARGIN,
    RawSamples,
    Window,
    stability_of,
    windows_of,
)

#: The ``serving_load`` fixture lets a warm-up run to this many times its ``warmup`` (one Locust process).
DEFAULT_MAX_WARMUP_FACTOR = 3


class WarmupWatch:
    """Notes the warm-up's answers and says when they have settled; no I/O, no clock of its own.

    Times are seconds since the phase started (perf_counter based, in the Locust process).
    """

    def __init__(self, minimum_s: float, maximum_s: float, window_s: float, windows: int, tolerance: float) -> None:
        self.minimum_s = minimum_s
        self.maximum_s = maximum_s
        self.window_s = window_s
        self.windows = windows
        self.tolerance = tolerance
        self._ended: list[float] = []
        self._latency_ms: list[float] = []
        self._success: list[bool] = []

    def answered(self, ended_s: float, latency_ms: float, success: bool) -> None:
        self._ended.append(ended_s)
        self._latency_ms.append(latency_ms)
        self._success.append(success)

    def settle_window_s(self, now_s: float) -> float:
        """The windows' length: at least ``window_s``, about ``MIN_WINDOW_REQUESTS`` answers at the rate so
        far, and short enough for ``windows`` of them to fit in the maximum warm-up."""
        rate = len(self._ended) / now_s if now_s > 0 else 0.0
        wanted = WINDOW_REQUESTS_MARGIN * MIN_WINDOW_REQUESTS / rate if rate > 0 else self.maximum_s
        return max(self.window_s, min(wanted, self.maximum_s / self.windows))

    def verdict(self, now_s: float) -> tuple[bool, str]:
        """(end the warm-up now, why): settled, or out of time at the maximum."""
        if now_s < self.minimum_s:
            return False, "minimum warm-up not over"
        length = self.settle_window_s(now_s)
        windows = self.last_windows(now_s, length)
        settled, why = stability_of(windows, self.windows, self.tolerance)
        if settled and why.startswith("stable"):  # windows too small to judge have not settled
            return True, f"settled after {now_s:.1f} s ({why})"
        if now_s >= self.maximum_s:
            return True, f"not settled by the maximum warm-up of {self.maximum_s:g} s ({why})"
        return False, why

    def last_windows(self, now_s: float, length: float) -> tuple[Window, ...]:
        """The last ``windows`` full windows of ``length`` ending now (fewer when the warm-up is shorter)."""
        count = min(self.windows, int(now_s / length + 1e-9))
        if count == 0:
            return ()
        span = count * length
        ended = np.asarray(self._ended, dtype=np.float64) - (now_s - span)
        inside = ended >= 0
        offsets = ended[inside]
        samples = RawSamples(
            offset_s=offsets,
            latency_ms=np.asarray(self._latency_ms, dtype=np.float64)[inside],
            code=np.where(np.asarray(self._success, dtype=bool)[inside], 200, 500).astype(np.int32),
            completed_s=offsets,
        )
        return windows_of(samples, span, length)
