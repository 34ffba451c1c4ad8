"""The ``serving_load`` fixture's machinery: marker options, budgets, baseline gate and results.

A test asks for load through the fixture (a callable) and configures it with
``@pytest.mark.serving_load(...)``; call keywords override the marker. Budgets set on the
marker are the test's own; per-target budgets from the ini key ``serving_budgets`` and
``--serving-budgets-file`` override them, because one budget rarely fits a CPU and a GPU server.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pytest

from .. import progress
from ..containers.resources import ResourceMonitor
from ..correctness import MAX_CROSS_TARGET_PROBABILITY_DIFFERENCE
from ..metrics import (
    PhaseServerMetrics,
    ServerMetricsSpec,
    combined,
    metrics_page,
    scraped_around,
)
from ..protocols.endpoint import Endpoint
from ..report.results import ResultsStore
from ..samples import Sample
from ..settings import LoadSettings
from ..targets.base import MEMORY_SWING_MB
from ..types import HttpRequest, Prediction
from ..verdicts.verdict import INCONCLUSIVE, Finding, InconclusiveComparison, gate_failures, overall
from .answers import AnswerCheck, KeptAnswers, check_answers
from .budgets import (
    BUDGET_FIELDS,
    Budget,
    BudgetContext,
    BudgetTable,
    UnstablePhaseWarning,
    check_budget,
    compare_to_baseline,
    describe_load,
    resolve_budget,
    timing_limits,
    unstable_note,
    verdict,
)
from .options import DistributedLoad
from .phase import LoadPhase
from .resources import phase_resources
from .runner import run_phase
from .safety import UnsafeTargetError, check_load_target
from .stats import PhaseStats, stability_window_s
from .sweep import SweepLevel, SweepResult, run_sweep
from .warmup import DEFAULT_MAX_WARMUP_FACTOR

PHASE_FIELDS = frozenset(field.name for field in fields(LoadPhase))
#: Options one Locust process decides on its own (when the warm-up ends, how long the window lasts).
SINGLE_PROCESS_FIELDS = ("max_warmup", "min_requests", "max_duration")
SWEEP_FIELDS = frozenset({"levels", "scenario", "repeats"})


def split_options(options: Mapping[str, Any], where: str) -> tuple[dict, Budget, dict]:
    """Marker or call keywords -> (phase fields, budget, sweep fields); unknown names are an error."""
    unknown = set(options) - PHASE_FIELDS - set(BUDGET_FIELDS) - SWEEP_FIELDS
    if unknown:
        known = sorted(PHASE_FIELDS | set(BUDGET_FIELDS) | SWEEP_FIELDS)
        raise pytest.UsageError(f"{where}: unknown serving_load option(s) {sorted(unknown)}; known: {known}")
    phase = {key: value for key, value in options.items() if key in PHASE_FIELDS}
    budget = Budget(**{key: value for key, value in options.items() if key in BUDGET_FIELDS})
    sweep = {key: value for key, value in options.items() if key in SWEEP_FIELDS}
    return phase, budget, sweep


def for_processes(phase_options: Mapping[str, Any], *, distributed: bool) -> dict:
    """A distributed phase (``--serving-load-workers``, remote workers) warms up for ``warmup`` and measures
    ``duration``: the options that one process decides on its own (the smoke suite's adaptive warm-up and
    minimum of requests) do not apply to it."""
    if not distributed:
        return dict(phase_options)
    return {name: value for name, value in phase_options.items() if name not in SINGLE_PROCESS_FIELDS}


def load_requests(endpoint: Endpoint, samples: list[Sample]) -> list[HttpRequest]:
    """Every sample encoded as the contract tests send it, with the endpoint's headers (tokens)."""
    return [
        replace(request, headers={**endpoint.headers, **request.headers})
        for request in (endpoint.protocol.encode(sample.data) for sample in samples)
    ]


@dataclass
class ServingLoad:
    """Runs load phases and sweeps against one target, checks budgets and records every phase."""

    endpoint: Endpoint
    samples: list[Sample]
    settings: LoadSettings
    results: ResultsStore
    marker_options: Mapping[str, Any]
    budget_tables: tuple[BudgetTable, ...]
    baseline: Mapping | None
    test_id: str
    #: Boots a fresh server of the same target and yields its endpoint and monitor (scenario "fresh").
    fresh_server: Callable[[], AbstractContextManager[tuple[Endpoint, ResourceMonitor | None]]] | None = None
    #: The current server's memory and CPU readings and cold start (None: not started by pytest-serving).
    monitor: ResourceMonitor | None = None
    #: In-process predictions by sample id: every phase's answers are checked against them.
    reference: Mapping[str, Prediction] | None = None
    #: Largest difference of a top-5 probability from the reference that still counts as the same answer.
    probability_tolerance: float = MAX_CROSS_TARGET_PROBABILITY_DIFFERENCE
    #: The target's ``server_metrics``: which counters say where the server's time went.
    server_metrics: ServerMetricsSpec | None = None
    #: Memory the server may gain within a phase without leaking (``ServingTarget.memory_swing_mb``).
    memory_swing_mb: float = MEMORY_SWING_MB
    #: An inconclusive comparison with the baseline fails the test (``--serving-release-strict``).
    strict: bool = False
    #: The current server's container state, exit code and log tail: quoted when a phase had failed requests.
    postmortem: Callable[[], str] | None = None
    #: Remote Locust workers every phase waits for (``--serving-load-remote-workers``), unless a test says otherwise.
    distributed: DistributedLoad = field(default_factory=DistributedLoad)

    def __post_init__(self) -> None:
        #: Endpoints and resource monitors by base URL: the current server and every fresh one a sweep boots.
        self._endpoints = {self.endpoint.base_url: self.endpoint}
        self._monitors = {self.endpoint.base_url: self.monitor}

    def __call__(self, *, check: bool = True, **options: Any) -> PhaseStats:
        """Run one phase (marker options, overridden by ``options``); fail on violated budgets if ``check``."""
        self._refuse_unsafe_target()
        phase_options, budget, _ = split_options({**self.marker_options, **options}, self.test_id)
        phase = self._phase(phase_options)
        budget = self._budget(budget)
        stats, server = self._measure(self.endpoint.base_url, self._requests, phase)
        against_baseline = self._against_baseline(stats)
        violations = self._over_budget(stats, budget) + self._baseline_failures(against_baseline)
        self._record(
            stats.to_dict(),
            {
                "kind": "phase",
                "server_metrics": server.to_dict(),
                "verdict": verdict(stats, budget, violations),
                **baseline_record(against_baseline),
            },
        )
        if check:
            self._fail_on(violations, failed_requests=stats.failures > 0)
            _warn_if_unstable(stats, budget)
        return stats

    def sweep(self, *, check: bool = True, **options: Any) -> SweepResult:
        """The study's sweep: each level (``levels``) measured ``repeats`` times on a ``scenario``
        ("warm": one server; "fresh": a new container per measurement); every level is checked."""
        self._refuse_unsafe_target()
        merged = {**self.marker_options, **options}
        phase_options, budget, sweep_options = split_options(merged, self.test_id)
        scenario = sweep_options.get("scenario", "warm")
        if scenario == "fresh" and self.fresh_server is None:
            raise pytest.UsageError(f"{self.test_id}: scenario 'fresh' needs a server pytest-serving boots")
        sweep_warmup = phase_options.get("warmup", self.settings.sweep_warmup)
        template = self._phase({**phase_options, "warmup": sweep_warmup})
        budget = self._budget(budget)
        server = self._booted_fresh if scenario == "fresh" else self._current_server
        server_metrics: dict[int, PhaseServerMetrics] = {}
        levels = sweep_options.get("levels", self.settings.sweep_levels)
        repeats = sweep_options.get("repeats", self.settings.sweep_repeats)
        with progress.activity(self.endpoint.target, f"sweep {scenario}", f"{len(levels)} levels"):
            result = self._sweep(template, server, scenario, levels, repeats, phase_options, server_metrics, budget)
        against_baseline = []
        for level in result.levels:
            server = combined([server_metrics[id(repeat)] for repeat in level.repeats])
            findings = self._against_baseline(level)
            against_baseline += findings
            self._record(
                level.to_dict(),
                {
                    "kind": "sweep-level",
                    "scenario": scenario,
                    "server_metrics": server.to_dict(),
                    **baseline_record(findings),
                },
            )
        if check:
            self._fail_on(
                [
                    line
                    for level in result.levels
                    for repeat in level.repeats
                    for line in self._over_budget(repeat, budget)
                ]
                + self._baseline_failures(against_baseline),
                failed_requests=any(repeat.failures for level in result.levels for repeat in level.repeats),
            )
            for level in result.levels:
                for repeat in level.repeats:
                    _warn_if_unstable(repeat, budget)
        return result

    def _sweep(
        self,
        template: LoadPhase,
        server: Callable[[], AbstractContextManager[str]],
        scenario: str,
        levels: list[float],
        repeats: int,
        phase_options: dict,
        server_metrics: dict[int, PhaseServerMetrics],
        budget: Budget,
    ) -> SweepResult:
        """Run the sweep, reporting levels done of planned and an ETA to the session's progress."""
        sweep = progress.current()
        planned, started, done = len(levels) * repeats, time.monotonic(), 0
        record = self._run_and_record(scenario, server_metrics, budget)

        def run_counted(*args: Any, **kwargs: Any) -> PhaseStats:
            nonlocal done
            stats = record(*args, **kwargs)
            done += 1
            eta_s = (time.monotonic() - started) / done * (planned - done)
            progress.live(sweep, done=done, planned=planned, eta_s=eta_s)
            return stats

        return run_sweep(
            self._requests,
            server,
            levels=levels,
            duration=phase_options.get("duration", self.settings.sweep_duration),
            warmup=template.warmup,
            scenario=scenario,
            repeats=repeats,
            template=template,
            started_by_plugin=self.endpoint.started_by_plugin,
            allow_remote=self.settings.allow_remote,
            run=run_counted,
        )

    @property
    def _requests(self) -> list[HttpRequest]:
        return load_requests(self.endpoint, self.samples)

    def _phase(self, phase_options: dict) -> LoadPhase:
        """The phase the options ask for; in one Locust process its warm-up adapts (up to
        ``DEFAULT_MAX_WARMUP_FACTOR`` times ``warmup``) unless ``max_warmup`` says otherwise."""
        defaults: dict[str, Any] = {"workers": self.settings.workers, **self.distributed.phase_defaults()}
        if "rate" not in phase_options and "users" not in phase_options:
            defaults["users"] = 1
        workers = {name: phase_options.get(name, defaults[name]) for name in ("workers", "remote_workers")}
        phase_options = for_processes(phase_options, distributed=any(workers.values()))
        if not any(workers.values()):
            warmup = phase_options.get("warmup", LoadPhase.warmup)
            defaults["max_warmup"] = warmup * DEFAULT_MAX_WARMUP_FACTOR
        try:
            return LoadPhase(**{**defaults, **phase_options})
        except ValueError as error:
            raise pytest.UsageError(f"{self.test_id}: serving_load: {error}") from None

    def _run(
        self,
        base_url: str,
        requests: list[HttpRequest],
        phase: LoadPhase,
        on_window_open: Callable[[], None] | None = None,
    ) -> PhaseStats:
        return run_phase(
            base_url,
            requests,
            phase,
            started_by_plugin=self.endpoint.started_by_plugin,
            allow_remote=self.settings.allow_remote,
            on_window_open=on_window_open,
            check_answers=self._answer_checker(base_url),
        )

    def _answer_checker(self, base_url: str) -> Callable[[KeptAnswers], AnswerCheck] | None:
        """Judges a phase's kept answers with the protocol of the endpoint it loaded, against the reference."""
        if self.reference is None:
            return None
        decode = self._endpoints[base_url].protocol.decode
        expected = [(sample.id, self.reference[sample.id]) for sample in self.samples]
        return lambda kept: check_answers(kept, decode, expected, self.probability_tolerance)

    def _measure(
        self, base_url: str, requests: list[HttpRequest], phase: LoadPhase
    ) -> tuple[PhaseStats, PhaseServerMetrics]:
        """Run one phase between two scrapes of the server's metrics (as the measured window opens,
        and after the phase), which say where the server's time went."""
        expected_s = phase.longest_warmup + phase.duration
        with (
            progress.activity(self.endpoint.target, "load", phase.level_key, expected_s),
            scraped_around(metrics_page(self._endpoints[base_url], self.server_metrics)) as scrape,
        ):
            stats = self._run(base_url, requests, phase, on_window_open=scrape.window_opened)
        monitor = self._monitors.get(base_url)
        if monitor is not None:
            window_s = stability_window_s(stats.duration, phase.window, phase.stability_windows, stats.n)
            figures = phase_resources(
                monitor.samples(),
                stats.started_at,
                stats.warmup_s,
                stats.duration,
                window_s,
                [window.rps for window in stats.windows],
                monitor.startup_s,
            )
            stats = replace(stats, resources=figures)
        return stats, scrape.result

    def _run_and_record(
        self, scenario: str, server_metrics: dict[int, PhaseServerMetrics], budget: Budget
    ) -> Callable[..., PhaseStats]:
        """The sweep's phase runner; keeps each phase's server metrics under ``id(stats)`` for its level and
        records each phase with its budget verdict."""

        def run(base_url: str, requests: list[HttpRequest], phase: LoadPhase, **_: Any) -> PhaseStats:
            # A fresh server has its own tokens (TorchServe): encode for the endpoint being loaded.
            stats, server = self._measure(base_url, load_requests(self._endpoints[base_url], self.samples), phase)
            server_metrics[id(stats)] = server
            outcome = verdict(stats, budget, self._over_budget(stats, budget))
            self._record(
                stats.to_dict(),
                {"kind": "sweep-repeat", "scenario": scenario, "server_metrics": server.to_dict(), "verdict": outcome},
            )
            return stats

        return run

    @contextmanager
    def _current_server(self) -> Iterator[str]:
        yield self.endpoint.base_url

    @contextmanager
    def _booted_fresh(self) -> Iterator[str]:
        with self.fresh_server() as (endpoint, monitor):
            self._endpoints[endpoint.base_url] = endpoint
            self._monitors[endpoint.base_url] = monitor
            yield endpoint.base_url

    def _refuse_unsafe_target(self) -> None:
        """Before anything is sent (metrics scrapes included): load only servers we may load."""
        try:
            check_load_target(self.endpoint.base_url, self.endpoint.started_by_plugin, self.settings.allow_remote)
        except UnsafeTargetError as error:
            pytest.fail(f"{error} (--serving-allow-remote-load)", pytrace=False)

    def _budget(self, marker_budget: Budget) -> Budget:
        return marker_budget.merged(resolve_budget(self.endpoint.target, *self.budget_tables))

    def _over_budget(self, stats: PhaseStats, budget: Budget) -> list[str]:
        context = BudgetContext(self.endpoint.target, self.endpoint.image, self.memory_swing_mb)
        return check_budget(stats, budget, context)

    def _against_baseline(self, measured: PhaseStats | SweepLevel) -> list[Finding]:
        """p95/throughput against --serving-baseline at the same target and level (bootstrap intervals)."""
        if self.baseline is None:
            return []
        level_key = measured.level if isinstance(measured, PhaseStats) else measured.level_key
        return compare_to_baseline(
            measured, self.baseline, self.endpoint.target, level_key, self.settings.max_regression_pct
        )

    def _baseline_failures(self, findings: list[Finding]) -> list[str]:
        """Failed comparisons fail the test; inconclusive ones warn, and fail only when strict."""
        lines = []
        for finding in findings:
            if finding.verdict == INCONCLUSIVE and not self.strict:
                warnings.warn(InconclusiveComparison(finding.reason), stacklevel=3)
            lines += gate_failures(finding.verdict, [finding.reason], self.strict, "--serving-baseline")
        return lines

    def _fail_on(self, violations: list[str], failed_requests: bool) -> None:
        """Fail the test with one line per violated budget or regression; when requests failed, the
        server may have died: what Docker says of its container follows."""
        if not violations:
            return
        if failed_requests and self.postmortem is not None:
            violations = [*violations, self.postmortem()]
        pytest.fail("\n".join(violations), pytrace=False)

    def _record(self, entry: dict, extra: dict) -> None:
        self.results.append(
            ("targets", self.endpoint.target, "load"),
            {
                **entry,
                **extra,
                "test": self.test_id,
                "image": self.endpoint.image,
                "server": self.endpoint.server_version,
                "model": self.endpoint.model_name,
            },
        )


def _warn_if_unstable(stats: PhaseStats, budget: Budget) -> None:
    """A phase that met its timing budgets on unsettled windows passes, but says so."""
    note = unstable_note(stats)
    if note and timing_limits(budget):
        warnings.warn(
            UnstablePhaseWarning(f"{describe_load(stats)}, n={stats.n}: met its budgets, but {note}"), stacklevel=3
        )


def baseline_record(findings: list[Finding]) -> dict:
    """The ``baseline`` key of a load entry: the comparison's verdict and every finding."""
    if not findings:
        return {}
    return {
        "baseline": {
            "verdict": overall(findings),
            "findings": [{"part": f.part, "verdict": f.verdict, "reason": f.reason} for f in findings],
        }
    }




def read_baseline(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise pytest.UsageError(f"--serving-baseline {path}: {error}") from None
