"""Latency/throughput budgets per target, and the regression gate against a previous run.

The gate against a previous run judges with the release decision's statistics (bootstrap intervals,
pass / fail / inconclusive): see ``compare_to_baseline``.

Budgets come from an ini value (``serving_budgets``, one ``[target.]field = value``
per line) and/or a TOML or JSON file (top-level fields for every target, a
table per target). ``resolve_budget`` merges them: first every source's
all-target fields, then every source's fields for the target, later sources
overriding earlier ones, so a target's own line always beats a general one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from pytest_serving.load.resources import (
    DEFAULT_MEMORY_GROWTH_MB_PER_1K,
    GROWTH_CONFIDENCE,
    ResourceFigures,
)
from pytest_serving.load.stats import PhaseStats
from pytest_serving.targets.base import MEMORY_SWING_MB
from pytest_serving.load.sweep import SweepLevel
from pytest_serving.verdicts.stats import P95_LATENCY, THROUGHPUT, bootstrap_ratio, time_blocks
from pytest_serving.verdicts.verdict import FAIL, PASS, Finding, speed_finding

ALL_TARGETS = "*"


class BudgetError(ValueError):
    """A budget definition that cannot be understood."""


class UnstablePhaseWarning(UserWarning):
    """A phase met its latency and throughput budgets on windows that had not settled."""


@dataclass(frozen=True)
class Budget:
    """Limits a load phase must stay within; None means no limit."""

    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    min_rps: float | None = None
    max_failure_rate: float | None = None
    #: The server container's peak memory during the phase (MB), warm-up included.
    max_memory_mb: float | None = None
    #: Memory growth per 1000 requests answered in the measured window (MB), a straight-line fit.
    max_memory_growth_mb_per_1k: float | None = None
    #: The server's cold start: container start to the first passed readiness probe (s).
    max_startup_s: float | None = None
    #: The release rollout's p99 during the switch (ms), and as a multiple of the steady p99 before it:
    #: per target, over --serving-rollout-max-p99-ms / --serving-rollout-max-p99-ratio (judged by the
    #: release gate, not by load phases).
    rollout_max_p99_ms: float | None = None
    rollout_max_p99_ratio: float | None = None

    def merged(self, override: Budget) -> Budget:
        """This budget with every limit that ``override`` sets replaced."""
        return replace(self, **{name: value for name, value in vars(override).items() if value is not None})


BUDGET_FIELDS = tuple(field.name for field in fields(Budget))
LATENCY_FIELDS = {"p50_ms": "p50", "p95_ms": "p95", "p99_ms": "p99", "max_ms": "max", "mean_ms": "mean"}

# A budget table: target name (or ALL_TARGETS) -> its budget.
BudgetTable = dict[str, Budget]


@dataclass(frozen=True)
class BudgetContext:
    """What a violation message names besides the figures."""

    target: str
    image: str = ""
    #: What the server may gain within a phase without leaking (``ServingTarget.memory_swing_mb``).
    memory_swing_mb: float = MEMORY_SWING_MB


def budget_value(name: str, value: object, where: str) -> float:
    if name not in BUDGET_FIELDS:
        raise BudgetError(f"{where}: unknown budget {name!r}; known: {', '.join(BUDGET_FIELDS)}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BudgetError(f"{where}: {name} = {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BudgetError(f"{where}: {name} = {value!r} must be a finite number >= 0")
    if name == "max_failure_rate" and value > 1:
        raise BudgetError(f"{where}: max_failure_rate = {value} is a fraction and must be <= 1")
    return float(value)


def parse_budget_lines(lines: str | Iterable[str]) -> BudgetTable:
    """Parse ini lines such as ``triton.p95_ms = 800`` (a target's) or ``p95_ms = 1000`` (every target's)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    values: dict[str, dict[str, float]] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, equals, value = line.partition("=")
        if not equals:
            raise BudgetError(f"budget line {number} {raw.strip()!r}: expected '[target.]field = value'")
        target, _, name = key.strip().rpartition(".")
        where = f"budget line {number}"
        values.setdefault(target or ALL_TARGETS, {})[name] = budget_value(name, value.strip(), where)
    return {target: Budget(**limits) for target, limits in values.items()}


def budget_table(document: Mapping[str, object], source: str) -> BudgetTable:
    """A budget table from a parsed TOML/JSON document: top-level fields for all targets, tables per target."""
    general: dict[str, float] = {}
    table: BudgetTable = {}
    for key, value in document.items():
        if isinstance(value, Mapping):
            limits = {name: budget_value(name, limit, f"{source} [{key}]") for name, limit in value.items()}
            table[key] = Budget(**limits)
        else:
            general[key] = budget_value(key, value, source)
    if general:
        table[ALL_TARGETS] = table.get(ALL_TARGETS, Budget()).merged(Budget(**general))
    return table


def load_budget_file(path: str | Path) -> BudgetTable:
    """Read a ``.toml`` or ``.json`` budgets file."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".json":
        document = json.loads(text)
    elif path.suffix == ".toml":
        import tomllib

        document = tomllib.loads(text)
    else:
        raise BudgetError(f"{path}: budgets file must end in .toml or .json")
    if not isinstance(document, Mapping):
        raise BudgetError(f"{path}: expected a table of budgets")
    return budget_table(document, str(path))


def resolve_budget(target: str, *tables: BudgetTable) -> Budget:
    """The budget for ``target``: all-target limits first, then the target's own, later tables winning."""
    budget = Budget()
    for key in (ALL_TARGETS, target):
        for table in tables:
            budget = budget.merged(table.get(key, Budget()))
    return budget


def describe_load(stats: PhaseStats) -> str:
    configuration = stats.configuration
    if configuration.get("rate") is not None:
        return f"rate={configuration['rate']:g}/s {configuration.get('arrival', '')}".rstrip()
    return f"users={configuration.get('users')}"


def unstable_note(stats: PhaseStats) -> str | None:
    """``unstable: why`` when the phase's last windows disagreed; None when it was stable."""
    if stats.stable:
        return None
    return stats.stability if stats.stability.startswith("unstable:") else f"unstable: {stats.stability[9:]}"


def timing_limits(budget: Budget) -> list[str]:
    """The budget's limits that a phase's windows must be stable for: latency, throughput, failures."""
    return [name for name in (*LATENCY_FIELDS, "min_rps", "max_failure_rate") if getattr(budget, name) is not None]


def verdict(stats: PhaseStats, budget: Budget, violations: Sequence[str]) -> str:
    """The phase's budget verdict for results.json: pass or fail, and ``unstable: why`` when timing
    limits were judged on windows that had not settled."""
    outcome = f"fail ({len(violations)} violation{'s' * (len(violations) != 1)})" if violations else "pass"
    note = unstable_note(stats)
    return f"{outcome}; {note}" if note and timing_limits(budget) else outcome


def check_budget(stats: PhaseStats, budget: Budget, context: BudgetContext) -> list[str]:
    """One line per limit of ``budget`` that ``stats`` violates; empty when all hold. A timing line of an
    unstable phase ends with ``[unstable: why]``: the figure may be the warm-up's, not the server's."""
    image = f" [{context.image}]" if context.image else ""
    prefix = f"{context.target}{image} at {describe_load(stats)}, n={stats.n}:"
    violations = _timing_violations(stats, budget, prefix)
    note = unstable_note(stats)
    if note:
        violations = [f"{line} [{note}]" for line in violations]
    violations.extend(_resource_violations(stats, budget, prefix, context.memory_swing_mb))
    if stats.answers is not None:
        violations.extend(f"{prefix} {line}" for line in stats.answers.violations())
    return violations


def _timing_violations(stats: PhaseStats, budget: Budget, prefix: str) -> list[str]:
    violations = []
    for name, figure in LATENCY_FIELDS.items():
        limit = getattr(budget, name)
        if limit is None:
            continue
        if stats.latency is None:
            violations.append(f"{prefix} {figure} unmeasured (no successful request), budget {limit:g} ms")
        elif (measured := getattr(stats.latency, figure)) > limit:
            violations.append(f"{prefix} {figure} {measured:.1f} ms exceeds budget {limit:g} ms")
    if budget.min_rps is not None and stats.rps < budget.min_rps:
        violations.append(f"{prefix} throughput {stats.rps:.1f} rps below budget {budget.min_rps:g} rps")
    if budget.max_failure_rate is not None and stats.failure_rate > budget.max_failure_rate:
        violations.append(
            f"{prefix} failure rate {stats.failure_rate:.2%} exceeds budget {budget.max_failure_rate:.2%} "
            f"(statuses {stats.status_counts})"
        )
    return violations


#: Resource budgets: (figure in ResourceFigures, what the message calls it, unit).
RESOURCE_FIELDS = {
    "max_memory_mb": ("peak_memory_mb", "peak memory", "MB"),
    # Judged only when the phase grew by more than the server's own swing (ServingTarget.memory_swing_mb).
    "max_memory_growth_mb_per_1k": ("memory_growth_mb_per_1k", "memory growth", "MB per 1000 requests"),
    "max_startup_s": ("startup_s", "cold start", "s"),
}


def _within_growth_noise(resources: ResourceFigures, swing_mb: float) -> bool:
    """A growth rate whose total over the phase is below the server's swing is noise, not a leak."""
    return resources.memory_growth_mb_per_1k * resources.growth_requests / 1000.0 < swing_mb


def _resource_violations(stats: PhaseStats, budget: Budget, prefix: str, swing_mb: float) -> list[str]:
    lines = []
    for name, (figure, label, unit) in RESOURCE_FIELDS.items():
        limit = getattr(budget, name)
        if name == "max_memory_growth_mb_per_1k":
            lines.extend(_growth_violations(stats.resources, limit, prefix, swing_mb))
            continue
        if limit is None:
            continue
        measured = getattr(stats.resources, figure) if stats.resources is not None else None
        if measured is None:
            lines.append(f"{prefix} {label} unmeasured ({_why_unmeasured(stats.resources)}), budget {limit:g} {unit}")
        elif measured > limit:
            lines.append(f"{prefix} {label} {measured:.1f} {unit} exceeds budget {limit:g} {unit}")
    return lines


def _why_unmeasured(resources: ResourceFigures | None) -> str:
    if resources is None:
        return "no container readings (server not started by pytest-serving)"
    return f"{resources.samples} readings over {resources.growth_requests} requests"


def _growth_violations(
    resources: ResourceFigures | None, limit: float | None, prefix: str, swing_mb: float
) -> list[str]:
    """Memory growth gates every phase: it fails when the whole growth interval lies above the budget
    (default ``DEFAULT_MEMORY_GROWTH_MB_PER_1K``) and the phase grew by more than the server's own swing
    (``swing_mb``), so a short phase fails a leak it shows beyond doubt and never a warm-up's or a JVM's. Only a budget
    the test or the user set makes missing readings a failure."""
    explicit = limit is not None
    limit = DEFAULT_MEMORY_GROWTH_MB_PER_1K if limit is None else limit
    growth = resources.memory_growth_mb_per_1k if resources is not None else None
    if growth is None:
        if not explicit:
            return []
        return [f"{prefix} memory growth unmeasured ({_why_unmeasured(resources)}), budget {limit:g} MB per 1000 requests"]
    interval = resources.memory_growth_interval
    lowest = growth if interval is None else interval[0]
    if lowest <= limit or _within_growth_noise(resources, swing_mb):
        return []
    shown = "" if interval is None else f", {GROWTH_CONFIDENCE:.0%} interval {interval[0]:.1f} to {interval[1]:.1f}"
    return [
        f"{prefix} memory growth {growth:.1f} MB per 1000 requests{shown} (fit over {resources.growth_requests} "
        f"requests, {resources.samples} readings) exceeds budget {limit:g} MB per 1000 requests"
    ]


def find_baseline(baseline: Mapping, target: str, level_key: str) -> dict | None:
    """The last entry a previous results.json holds for ``target`` at ``level_key``, if any.

    Entries live in ``results["targets"][target]["load"]``: ``PhaseStats.to_dict()``
    or ``SweepLevel.to_dict()`` dicts, matched on their ``level`` (e.g. ``users=10``).
    """
    entries = baseline.get("targets", {}).get(target, {}).get("load", [])
    matches = [entry for entry in entries if entry.get("level") == level_key]
    return matches[-1] if matches else None


def baseline_p95(entry: Mapping) -> float | None:
    if "p95_ms" in entry:
        return entry["p95_ms"]
    return (entry.get("latency_ms") or {}).get("p95")


#: A stored phase's latency sample is cut into at least this many stretches of time for the bootstrap.
MIN_BASELINE_BLOCKS = 5


def speed_blocks(entry: Mapping) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """A recorded phase or sweep level as bootstrap blocks: its latency sample cut into stretches of
    time (one per window, at least ``MIN_BASELINE_BLOCKS``) and each window's rate; None when the
    entry has no latency sample (recorded before pytest-serving kept one)."""
    latency: list[np.ndarray] = []
    rates: list[np.ndarray] = []
    for phase in entry.get("repeats") or [entry]:
        sample = phase.get("latency_sample_ms")
        if not sample:
            return None
        windows = phase.get("windows") or []
        latency += time_blocks(np.asarray(sample), max(MIN_BASELINE_BLOCKS, len(windows)))
        rates += [np.array([window["rps"]]) for window in windows] or [np.array([phase["rps"]])]
    return latency, rates


def compare_to_baseline(
    stats: PhaseStats | SweepLevel, baseline: Mapping, target: str, level_key: str, max_regression_pct: float
) -> list[Finding]:
    """p95 latency and throughput now against the baseline at the same target and level.

    Each figure is a bootstrap interval of the now/baseline ratio (blocks of time resampled on each
    side, as the two runs are not paired): ``fail`` when it lies wholly beyond ``max_regression_pct``,
    ``inconclusive`` when it straddles it, ``pass`` otherwise. A baseline without latency samples
    gets the old point comparison (``fail`` or ``pass`` only, and says so). Empty when the baseline
    has no entry for this target and level (use ``find_baseline`` to tell the two apart).
    """
    previous = find_baseline(baseline, target, level_key)
    if previous is None:
        return []
    prefix = f"{target} at {level_key}, n={stats.n}, against the baseline:"
    now = stats.to_dict()
    if stats.p95_ms is None:
        return [Finding("p95 latency", FAIL, f"{prefix} p95 unmeasured (no successful request)")]
    before, after = speed_blocks(previous), speed_blocks(now)
    if before is None or after is None:
        return _point_comparison(stats, previous, prefix, max_regression_pct)
    findings = []
    for statistic, blocks_before, blocks_after, higher_is_worse in (
        (P95_LATENCY, before[0], after[0], True),
        (THROUGHPUT, before[1], after[1], False),
    ):
        interval = bootstrap_ratio(blocks_before, blocks_after, statistic)
        finding = speed_finding(interval, max_regression_pct, higher_is_worse)
        findings.append(
            replace(finding, reason=f"{prefix} {finding.reason.replace('candidate/current', 'now/baseline')}")
        )
    return findings


def _point_comparison(
    stats: PhaseStats | SweepLevel, previous: Mapping, prefix: str, max_regression_pct: float
) -> list[Finding]:
    """The comparison of single figures, for baselines that stored no latency sample: no interval,
    so a difference beyond the limit fails even when it is noise."""
    note = "(point comparison: the baseline holds no latency sample, so no confidence interval)"
    findings = []
    previous_p95 = baseline_p95(previous)
    if previous_p95:
        rise = (stats.p95_ms - previous_p95) / previous_p95 * 100.0
        findings.append(
            Finding(
                "p95 latency",
                FAIL if rise > max_regression_pct else PASS,
                f"{prefix} p95 {stats.p95_ms:.1f} ms is {rise:.1f}% above baseline {previous_p95:.1f} ms "
                f"(limit {max_regression_pct:g}%) {note}",
            )
        )
    previous_rps = previous.get("rps")
    if previous_rps:
        fall = (previous_rps - stats.rps) / previous_rps * 100.0
        findings.append(
            Finding(
                "throughput",
                FAIL if fall > max_regression_pct else PASS,
                f"{prefix} throughput {stats.rps:.1f} rps is {fall:.1f}% below baseline {previous_rps:.1f} rps "
                f"(limit {max_regression_pct:g}%) {note}",
            )
        )
    return findings
