"""results.json: every figure the suites measure, written atomically as soon as it is known.

Several processes (pytest-xdist workers, a sweep's phases) may write to one file, so every
update is a locked read-modify-write followed by an atomic rename: an interrupted run keeps
everything measured before the interruption, and a reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..files import write_atomically


def write_json_atomically(path: Path, data: Any) -> None:
    """Write JSON through the one atomic write, flushed to disk: results survive a crash right after."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    write_atomically(path, lambda file: file.write_text(text), fsync=True)


class ResultsStore:
    """A results.json that many writers update key by key (``None`` path: keep in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, Any] = {}

    def read(self) -> dict[str, Any]:
        if self.path is None:
            return self._memory
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def set(self, keys: tuple[str, ...], value: Any) -> None:
        """Set ``results[k1][k2]…[kn] = value``, creating the intermediate objects."""
        with self._locked() as results:
            _descend(results, keys[:-1])[keys[-1]] = value

    def append(self, keys: tuple[str, ...], value: Any) -> None:
        """Append ``value`` to the list at ``results[k1]…[kn]``."""
        with self._locked() as results:
            _descend(results, keys[:-1]).setdefault(keys[-1], []).append(value)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        if self.path is None:
            yield self._memory
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Hidden: the report folder is for people; the lock only serialises pytest-xdist workers.
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            results = self.read()
            yield results
            write_json_atomically(self.path, results)


def _descend(results: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    node = results
    for key in keys:
        node = node.setdefault(key, {})
    return node


# --- the layout of the release records ----------------------------------------------------------
# ``targets.<name>.release``, ``targets.<name>.rollout`` and ``targets.<name>.rollout_skipped``:
# declared here, written only through ``record_release`` / ``record_rollout`` /
# ``record_rollout_skipped``, read by the report and the terminal summary.


@dataclass(frozen=True)
class ReleaseRecord:
    """``targets.<name>.release``: the candidate against the current version on one target.

    ``current`` / ``candidate``: each version's figures (``model``: the card's name,
    ``server_version``: the version the server hosts it as, ``top1``, ``top5``, ``reference_agreement``); ``accuracy``: the paired comparison (``PairedCorrectness.to_dict()`` + verdict and
    limits); ``latency``: the interval of each speed ratio with its verdict, the windows and a
    bounded sample of each version's latencies (for the report's distributions).
    """

    verdict: str
    reasons: list[str]
    current: dict[str, Any]
    candidate: dict[str, Any]
    accuracy: dict[str, Any]
    latency: dict[str, Any]


@dataclass(frozen=True)
class RolloutRecord:
    """``targets.<name>.rollout``: the switch from current to candidate under open-loop load.

    The first six fields are the gate's figures; ``timeline`` holds one entry per second (sent,
    rps, p99_ms, failures, each version's share) for the report's chart. ``stall_s``: seconds from
    the switch's start on whose p99 rose above ``stall_level_ms`` (a multiple of the steady p99),
    ``stall_seconds`` which ones. ``measurable`` is False when the server did not sustain the rate
    before the switch (``not_measurable`` says why): the latency figures then describe an overloaded
    server, and no budget judges them. ``max_p99_ms`` / ``max_p99_ratio``: the switch's budgets.
    """

    requests: int
    failed: int
    stale_answers: int
    switch_s: float | None
    p99_steady_ms: float | None
    p99_switch_ms: float | None
    rate: float = 0.0
    grace_s: float = 0.0
    switch_started_s: float | None = None
    switch_done_s: float | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    stall_s: float | None = None
    stall_level_ms: float | None = None
    stall_seconds: list[int] = field(default_factory=list)
    #: The current version's p99 in the side-by-side windows, which the steady p99 is held against.
    reference_p99_ms: float | None = None
    #: The rate first tried, when the server did not sustain it and the rollout ran at a lower one.
    rate_lowered_from: float | None = None
    measurable: bool = True
    not_measurable: str = ""
    max_p99_ms: float | None = None
    max_p99_ratio: float | None = None


def record_release(store: ResultsStore, target: str, record: ReleaseRecord) -> None:
    store.set(("targets", target, "release"), asdict(record))


def record_rollout(store: ResultsStore, target: str, record: RolloutRecord) -> None:
    store.set(("targets", target, "rollout"), asdict(record))


def record_rollout_skipped(store: ResultsStore, target: str, reason: str) -> None:
    """``targets.<name>.rollout_skipped``: why the target's server could not switch versions live."""
    store.set(("targets", target, "rollout_skipped"), reason)
