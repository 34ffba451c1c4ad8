"""Progress lines on long work: which target, which phase, how far, how long yet.

Any process of the session — the pytest process, an xdist worker, a Locust process — appends
events (one JSON object a line) to the file that ``PYTEST_SERVING_PROGRESS`` names; the controlling
pytest process tails it and prints through pytest's terminal reporter, so that a worker's boot,
load phase or release look shows on the controller's terminal as it happens (xdist forwards only
finished tests). Nothing here imports the rest of the package: every layer may report progress.

Events: ``start`` (an activity begins: target, phase, detail, expected seconds), ``live`` (its
running figures: elapsed, rps, p95), ``note`` (a milestone, such as "ready after 41 s"),
``end``. An activity nests inside the one already running in its process; a Locust process
reports into the activity that started it (``child_environment``).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: The events file of this session (set by the controlling pytest process, inherited by every child).
CHANNEL_VARIABLE = "PYTEST_SERVING_PROGRESS"
#: The activity a child process (a Locust process) reports its live figures into.
ACTIVITY_VARIABLE = "PYTEST_SERVING_ACTIVITY"
#: A running activity prints a line at least this often (the printer's heartbeat), s.
HEARTBEAT_S = 12.0
#: Live figures of one activity print at most this often, s.
LIVE_EVERY_S = 10.0
#: How often the printer reads the events file, s.
POLL_S = 1.0
#: The phase of a whole test: silent at start and end, its heartbeat names it when it runs long.
TEST_PHASE = "test"

_counter = itertools.count()
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("pytest_serving_activity", default=None)


def emit(kind: str, **fields: object) -> None:
    """Append one event; silent when no session listens (a plain Locust run, a library call)."""
    path = os.environ.get(CHANNEL_VARIABLE)
    if not path:
        return
    line = json.dumps({"kind": kind, "at": time.time(), "pid": os.getpid(), **fields}, default=str) + "\n"
    try:
        # One short write with O_APPEND: lines of several processes never interleave.
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line.encode())
        finally:
            os.close(descriptor)
    except OSError:
        pass  # progress is a courtesy: it never fails the work it describes


def current() -> str | None:
    """The innermost running activity of this process (or the one a parent handed to it)."""
    return _current.get() or os.environ.get(ACTIVITY_VARIABLE) or None


def begin(target: str, phase: str, detail: str = "", expected_s: float | None = None) -> str:
    """Start an activity that outlives a ``with`` block (a target's suite across its tests); ``finish`` ends it."""
    identity = f"{os.getpid()}-{next(_counter)}"
    emit("start", id=identity, target=target, phase=phase, detail=detail, expected_s=expected_s)
    return identity


def finish(identity: str, outcome: str = "done", elapsed_s: float | None = None) -> None:
    emit("end", id=identity, outcome=outcome, elapsed_s=elapsed_s)


@contextmanager
def activity(target: str, phase: str, detail: str = "", expected_s: float | None = None) -> Iterator[str]:
    """Report a piece of work from start to end; yields its id for ``live`` and ``note``."""
    identity = begin(target, phase, detail, expected_s)
    token = _current.set(identity)
    started = time.monotonic()
    outcome = "failed"
    try:
        yield identity
        outcome = "done"
    finally:
        _current.reset(token)
        finish(identity, outcome, round(time.monotonic() - started, 1))


def note(text: str, identity: str | None = None) -> None:
    """A milestone of the running activity, printed at once (a server ready, a look decided)."""
    emit("note", id=identity or current(), text=text)


def live(identity: str | None = None, **figures: float | int | str | None) -> None:
    """Running figures of the activity (elapsed_s, rps, p95_ms, done, planned…); the printer throttles them."""
    emit("live", id=identity or current(), **figures)


def child_environment() -> dict[str, str]:
    """Variables that let a child process report into the running activity."""
    identity = current()
    return {ACTIVITY_VARIABLE: identity} if identity else {}


@dataclass
class _Running:
    target: str
    phase: str
    detail: str
    expected_s: float | None
    started: float
    pid: int
    figures: dict = field(default_factory=dict)
    printed: float = 0.0
    #: Figures arrived since the last line, and whether they include a milestone.
    fresh: bool = False
    milestone: bool = False


class ProgressPrinter:
    """Tails the events file in a thread and prints a line per start, milestone and end, the running
    figures at most every ``LIVE_EVERY_S``, and a heartbeat for work silent for ``HEARTBEAT_S``.
    ``quiet`` (pytest -q) keeps one line per target and phase: the start of each (tests announce none)."""

    def __init__(self, path: Path, write_line: Callable[[str], None], *, quiet: bool = False) -> None:
        self.path = Path(path)
        self.write_line = write_line
        self.quiet = quiet
        self.running: dict[str, _Running] = {}
        self._offset = 0
        self._partial = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> ProgressPrinter:
        self._thread = threading.Thread(target=self._loop, name="pytest-serving-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.poll(time.time())

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll(time.time())

    def poll(self, now: float) -> None:
        """Print what the events since the last poll say, then the heartbeats that are due."""
        with self._lock:
            for event in self._read():
                self._handle(event, now)
            for running in self.running.values():
                due = running.milestone or now - running.printed >= LIVE_EVERY_S
                if running.fresh and due and not self.quiet:
                    self._print(running, now, self._figures(running, now))
                running.fresh = running.milestone = False
            if not self.quiet:
                innermost = {running.pid: running for running in self.running.values()}  # latest start per process
                for running in innermost.values():
                    if now - running.printed >= HEARTBEAT_S:
                        self._print(running, now, self._figures(running, now))

    def _read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def _handle(self, event: dict, now: float) -> None:
        kind, identity = event.get("kind"), event.get("id")
        if kind == "start":
            running = _Running(
                event.get("target") or "",
                event.get("phase") or "",
                event.get("detail") or "",
                event.get("expected_s"),
                event.get("at", now),
                event.get("pid", 0),
            )
            self.running[identity] = running
            expected = f", ~{running.expected_s:.0f} s" if running.expected_s else ""
            if running.phase != TEST_PHASE and not (self.quiet and event.get("quiet_repeat")):
                self._print(running, now, f"started{expected}")
            else:
                running.printed = now  # a test is announced only by its heartbeat, when it runs long
            return
        running = self.running.get(identity)
        if running is None:
            return
        if kind == "note":
            if not self.quiet:
                self._print(running, now, str(event.get("text", "")))
        elif kind == "live":
            running.figures = {key: value for key, value in event.items() if key not in ("kind", "at", "pid", "id")}
            # A sweep level done is rare and what a reader waits for; other figures wait for their turn.
            running.milestone = running.milestone or "done" in running.figures
            running.fresh = True
        elif kind == "end":
            del self.running[identity]
            if not self.quiet and running.phase != TEST_PHASE:
                elapsed = event.get("elapsed_s")
                elapsed = event.get("at", now) - running.started if elapsed is None else elapsed
                self._print(running, now, f"{event.get('outcome', 'done')} after {elapsed:.1f} s")

    @staticmethod
    def _figures(running: _Running, now: float) -> str:
        elapsed = now - running.started
        expected = f"/{running.expected_s:.0f}" if running.expected_s else ""
        parts = [f"{elapsed:.0f}{expected} s"]
        figures = running.figures
        if figures.get("tests_done") is not None and figures.get("tests_planned"):
            parts.append(f"{figures['tests_done']} of {figures['tests_planned']} tests")
        if figures.get("done") is not None and figures.get("planned"):
            parts.append(f"{figures['done']} of {figures['planned']} done")
            if figures.get("eta_s") is not None:
                parts.append(f"ETA {figures['eta_s']:.0f} s")
        if figures.get("rps") is not None:
            parts.append(f"{figures['rps']:.1f} rps")
        if figures.get("p95_ms") is not None:
            parts.append(f"p95 {figures['p95_ms']:.0f} ms")
        if figures.get("text"):
            parts.append(str(figures["text"]))
        return ", ".join(parts)

    def _print(self, running: _Running, now: float, text: str) -> None:
        running.printed = now
        subject = " ".join(part for part in (running.target, running.phase, running.detail) if part)
        self.write_line(f"[serving {time.strftime('%H:%M:%S', time.localtime(now))}] {subject}: {text}")
