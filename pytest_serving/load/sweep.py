"""Capacity sweeps: the same phase at increasing load levels, on a warm or a fresh server.

``scenario="warm"`` boots one server for the whole sweep, so later levels meet a
server warmed by earlier ones; ``scenario="fresh"`` boots a new server for
every measurement (each repeat of each level), so no level inherits another's
warm caches, pools or JIT state. Each level is measured ``repeats`` times and
reported as the median of the per-repeat figures (for latency: the median of
per-repeat medians), with every repeat kept.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from pytest_serving.load.phase import LoadPhase
from pytest_serving.load.runner import run_phase
from pytest_serving.load.stats import PhaseStats
from pytest_serving.types import HttpRequest

DEFAULT_LEVELS: tuple[int, ...] = tuple(range(10, 101, 10))
Scenario = Literal["warm", "fresh"]
SCENARIOS: tuple[Scenario, ...] = ("warm", "fresh")
DEFAULT_TEMPLATE = LoadPhase(users=1)


class PhaseRunner(Protocol):
    def __call__(
        self,
        base_url: str,
        requests: Sequence[HttpRequest],
        phase: LoadPhase,
        *,
        started_by_plugin: bool = ...,
        allow_remote: bool = ...,
    ) -> PhaseStats: ...


def median_of(values: Sequence[float | None]) -> float | None:
    """Median of the measured values; None when no repeat measured it."""
    measured = [value for value in values if value is not None]
    return statistics.median(measured) if measured else None


@dataclass(frozen=True)
class SweepLevel:
    """All repeats of one load level and their medians."""

    level: float
    repeats: tuple[PhaseStats, ...]

    @property
    def level_key(self) -> str:
        return self.repeats[0].level

    @property
    def n(self) -> int:
        return sum(stats.n for stats in self.repeats)

    @property
    def p50_ms(self) -> float | None:
        return median_of([stats.latency.p50 if stats.latency else None for stats in self.repeats])

    @property
    def p95_ms(self) -> float | None:
        return median_of([stats.latency.p95 if stats.latency else None for stats in self.repeats])

    @property
    def p99_ms(self) -> float | None:
        return median_of([stats.latency.p99 if stats.latency else None for stats in self.repeats])

    @property
    def rps(self) -> float:
        return statistics.median(stats.rps for stats in self.repeats)

    @property
    def failure_rate(self) -> float:
        return statistics.median(stats.failure_rate for stats in self.repeats)

    @property
    def stable(self) -> bool:
        return all(stats.stable for stats in self.repeats)

    def to_dict(self) -> dict:
        return {
            "level": self.level_key,
            "load": self.level,
            "n": self.n,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "rps": self.rps,
            "failure_rate": self.failure_rate,
            "stable": self.stable,
            "repeats": [stats.to_dict() for stats in self.repeats],
        }


@dataclass(frozen=True)
class SweepResult:
    scenario: Scenario
    levels_are: Literal["users", "rate"]
    levels: tuple[SweepLevel, ...]

    def to_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "levels_are": self.levels_are,
            "levels": [level.to_dict() for level in self.levels],
        }


def run_sweep(
    requests: Sequence[HttpRequest],
    start_server: Callable[[], AbstractContextManager[str]],
    levels: Sequence[float] = DEFAULT_LEVELS,
    duration: float = 10.0,
    warmup: float = 2.0,
    scenario: Scenario = "warm",
    repeats: int = 1,
    *,
    template: LoadPhase = DEFAULT_TEMPLATE,
    started_by_plugin: bool = False,
    allow_remote: bool = False,
    run: PhaseRunner = run_phase,
) -> SweepResult:
    """Measure every level ``repeats`` times; levels are users, or rates when ``template`` is open loop.

    ``start_server()`` boots a server and yields its base URL; it is entered once
    (warm) or once per measurement (fresh). ``template`` carries every other
    phase setting (workers, arrival, windows, ...).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if repeats < 1 or not levels:
        raise ValueError("a sweep needs at least one level and one repeat")
    levels_are: Literal["users", "rate"] = "rate" if template.open_loop else "users"

    def phase_at(level: float) -> LoadPhase:
        load = {"rate": float(level)} if levels_are == "rate" else {"users": int(level)}
        return replace(template, duration=duration, warmup=warmup, **load)

    results = []
    with ExitStack() as warm_server:
        warm_url = warm_server.enter_context(start_server()) if scenario == "warm" else None
        for level in levels:
            phase = phase_at(level)
            measured = []
            for _ in range(repeats):
                with ExitStack() as fresh_server:
                    url = warm_url or fresh_server.enter_context(start_server())
                    measured.append(
                        run(url, requests, phase, started_by_plugin=started_by_plugin, allow_remote=allow_remote)
                    )
            results.append(SweepLevel(level, tuple(measured)))
    return SweepResult(scenario, levels_are, tuple(results))
