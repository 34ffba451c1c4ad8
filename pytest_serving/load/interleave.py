"""Interleaved windows in one load process: which request set each stretch of a phase sends.

A side-by-side comparison measures two versions of a model in alternating windows. Started as one
Locust process per window, every window paid a process start, fresh connections and a warm-up of
its own (about 2.9 s on top of a 3 s window on a 2-core machine). Here one process runs every
window of a look: the plan's ``WindowSchedule`` says which request set (version) each window of the
measured phase sends, and every closed-loop user takes its next request from the set of the moment
it sends it, on the connection it already holds (both versions live on one server), so a window
costs its own length. Between windows a short gap is sent but not measured: requests still running
on the server from the previous window's version end in it. During the warm-up a user alternates
between the sets request by request, so both versions warm up and the adaptive warm-up's stability
test sees both.

Pure (no Locust, no clock of its own): ``users`` builds a ``ScheduledRequests`` per user, the
release splits the merged samples by the same schedule.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduledWindow:
    """One measured window: the request set it sends and its span, in seconds since the measured phase opened."""

    role: str
    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class WindowSchedule:
    """The windows of one phase and the request sets they send (indices into the plan's requests)."""

    request_sets: Mapping[str, tuple[int, ...]]
    windows: tuple[ScheduledWindow, ...]

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("a window schedule needs at least one window")
        for window in self.windows:
            if window.role not in self.request_sets or not self.request_sets[window.role]:
                raise ValueError(f"window of {window.role!r} has no requests to send")
        ends = [0.0] + [value for window in self.windows for value in (window.start_s, window.end_s)]
        if any(later < earlier for earlier, later in itertools.pairwise(ends)) or any(
            window.length_s <= 0 for window in self.windows
        ):
            raise ValueError("windows must be non-empty, start at or after 0 and follow one another")

    @property
    def duration_s(self) -> float:
        """The measured phase's length: until the last window ends."""
        return self.windows[-1].end_s

    def role_at(self, offset_s: float) -> str | None:
        """The request set to send at ``offset_s`` seconds into the measured phase: its window's, in a gap
        the next window's, after the last window the last one's; None before the phase (the warm-up)."""
        if offset_s < 0:
            return None
        ends = [window.end_s for window in self.windows]
        index = min(bisect.bisect_right(ends, offset_s), len(self.windows) - 1)
        return self.windows[index].role

    def to_dict(self) -> dict:
        return {
            "request_sets": {role: list(indices) for role, indices in self.request_sets.items()},
            "windows": [[window.role, window.start_s, window.end_s] for window in self.windows],
        }

    @classmethod
    def from_dict(cls, document: Mapping) -> WindowSchedule:
        return cls(
            {role: tuple(indices) for role, indices in document["request_sets"].items()},
            tuple(ScheduledWindow(role, start, end) for role, start, end in document["windows"]),
        )


def interleaved_schedule(
    order: Sequence[str], window_s: float, gap_s: float, request_sets: Mapping[str, Sequence[int]]
) -> WindowSchedule:
    """Windows of ``window_s`` seconds in ``order``, each after a gap of ``gap_s`` (sent, not measured)."""
    step = window_s + gap_s
    windows = tuple(ScheduledWindow(role, k * step + gap_s, (k + 1) * step) for k, role in enumerate(order))
    return WindowSchedule({role: tuple(indices) for role, indices in request_sets.items()}, windows)


class ScheduledRequests(Iterator[bytes]):
    """One user's requests: from the set of the window they are sent in (``clock()``: seconds since the
    measured phase opened, negative in the warm-up, where the sets alternate request by request).
    Each set is cycled from ``start`` on, so that users spread over the samples."""

    def __init__(self, wire: Sequence[bytes], schedule: WindowSchedule, clock: Callable[[], float], start: int) -> None:
        self.schedule = schedule
        self.clock = clock
        self._cycles = {
            role: itertools.cycle([wire[index] for index in _rotated(indices, start)])
            for role, indices in schedule.request_sets.items()
        }
        self._warmup_roles = itertools.cycle(sorted(self._cycles))

    def __next__(self) -> bytes:
        role = self.schedule.role_at(self.clock())
        return next(self._cycles[next(self._warmup_roles) if role is None else role])


def _rotated(indices: Sequence[int], start: int) -> list[int]:
    """``indices`` from position ``start`` (modulo their count) on, then the ones before."""
    start %= len(indices)
    return [*indices[start:], *indices[:start]]
