"""What results.json says, in figures a person reads: load rows, agreement, robustness counts.

The extraction functions are pure (results dict in, figures out) and shared by the HTML
report and the terminal summary; ``terminal_tables`` draws the plain-text tables printed at
the end of a session.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..settings import Settings

#: Robustness outcomes in the order tables show them.
OUTCOMES = ("pass", "deviation", "fail")
#: The ``kind`` of the load entries that stand for a sweep level (the median of its repeats).
SWEEP_LEVEL = "sweep-level"
PHASE = "phase"


@dataclass(frozen=True)
class LoadPoint:
    """One measured load level of one target: what the charts plot and the tables list."""

    target: str
    #: "warm" or "fresh" for sweep levels, "phase" for single phases such as the smoke test.
    scenario: str
    #: "users" (closed loop: virtual users) or "rate" (open loop: requests/s offered).
    axis: str
    x: float
    n: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    failures: int
    failure_rate: float
    stable: bool
    server: Mapping[str, Any]
    entry: Mapping[str, Any]

    @property
    def level(self) -> str:
        return f"{self.axis}={self.x:g}"

    @property
    def configuration(self) -> Mapping[str, Any]:
        """The phase settings behind the figure (the first repeat's, for a sweep level)."""
        repeats = self.entry.get("repeats") or [self.entry]
        return repeats[0].get("configuration", {})


def target_results(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``results["targets"]`` by name, sorted."""
    return dict(sorted(results.get("targets", {}).items()))


def load_points(results: Mapping[str, Any], kind: str) -> list[LoadPoint]:
    """Every load entry of ``kind`` ("sweep-level" or "phase") of every target, in recorded order."""
    points = []
    for target, data in target_results(results).items():
        for entry in data.get("load", []):
            if entry.get("kind") == kind:
                points.append(_point(target, entry))
    return points


#: Load entries that are one measured phase each (a sweep level is the median of its repeats).
MEASURED_PHASES = (PHASE, "sweep-repeat")


def impossible_figures(point: LoadPoint) -> list[str]:
    """Figures no real server can produce, each with its likely cause: the server's own time per request
    above the client's mean (a negative time outside the server), or its parts above its total."""
    server = point.server
    server_ms, queue_ms, compute_ms = server.get("server_ms"), server.get("queue_ms"), server.get("compute_ms")
    findings = []
    if server_ms is not None and point.mean_ms is not None and server_ms > point.mean_ms:
        findings.append(
            f"server time {server_ms:.1f} ms per request is above the client's mean {point.mean_ms:.1f} ms "
            f"(outside server {point.mean_ms - server_ms:.1f} ms): likely the server's counters include the warm-up "
            "or other traffic (requests answered before the window opened or after it closed, health checks), or "
            "their unit or clock differs from the client's"
        )
    parts = (queue_ms or 0.0) + (compute_ms or 0.0)
    if server_ms is not None and parts > server_ms * 1.001 + 0.01:
        findings.append(
            f"queue + compute {parts:.1f} ms is above the server's total {server_ms:.1f} ms: likely counters in "
            "different units or scraped at different moments"
        )
    return findings


def resource_points(results: Mapping[str, Any]) -> list[LoadPoint]:
    """Every measured phase with container readings (memory and CPU over time), in recorded order."""
    return [
        _point(target, entry)
        for target, data in target_results(results).items()
        for entry in data.get("load", [])
        if entry.get("kind") in MEASURED_PHASES and (entry.get("resources") or {}).get("timeline")
    ]


def chart_points(results: Mapping[str, Any]) -> tuple[list[LoadPoint], bool]:
    """The points the report charts, and whether they are sweep levels.

    Sweep levels when any target has them; otherwise the single phases (smoke tests), each a
    point of its own, so a short run still shows its figures.
    """
    levels = load_points(results, SWEEP_LEVEL)
    return (levels, True) if levels else (load_points(results, PHASE), False)


def _point(target: str, entry: Mapping[str, Any]) -> LoadPoint:
    repeats = entry.get("repeats")
    if repeats is not None:  # a sweep level: medians over its repeats, as the load engine reports them
        axis, _, value = str(entry["level"]).partition("=")
        means = [repeat["latency_ms"]["mean"] for repeat in repeats if repeat.get("latency_ms")]
        return LoadPoint(
            target=target,
            scenario=str(entry.get("scenario", "warm")),
            axis=axis,
            x=float(entry.get("load", value)),
            n=int(entry["n"]),
            rps=float(entry["rps"]),
            p50_ms=entry.get("p50_ms"),
            p95_ms=entry.get("p95_ms"),
            p99_ms=entry.get("p99_ms"),
            mean_ms=statistics.median(means) if means else None,
            failures=sum(int(repeat.get("failures", 0)) for repeat in repeats),
            failure_rate=float(entry["failure_rate"]),
            stable=bool(entry.get("stable", False)),
            server=entry.get("server_metrics") or {},
            entry=entry,
        )
    configuration = entry.get("configuration", {})
    axis = "rate" if configuration.get("rate") is not None else "users"
    latency = entry.get("latency_ms") or {}
    return LoadPoint(
        target=target,
        scenario=PHASE,
        axis=axis,
        x=float(configuration.get(axis) or 0),
        n=int(entry["n"]),
        rps=float(entry["rps"]),
        p50_ms=latency.get("p50"),
        p95_ms=latency.get("p95"),
        p99_ms=latency.get("p99"),
        mean_ms=latency.get("mean"),
        failures=int(entry.get("failures", 0)),
        failure_rate=float(entry["failure_rate"]),
        stable=bool(entry.get("stable", False)),
        server=entry.get("server_metrics") or {},
        entry=entry,
    )


@dataclass(frozen=True)
class Agreement:
    """How often two targets gave the same top-1 class, over the samples both answered."""

    same: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.same / self.n if self.n else None


def pairwise_agreement(predictions: Mapping[str, Mapping[str, Sequence]]) -> dict[tuple[str, str], Agreement]:
    """Top-1 agreement of every pair of targets; ``predictions[target][sample] = [classes, probabilities]``."""
    matrix = {}
    for first, second in combinations(sorted(predictions), 2):
        common = predictions[first].keys() & predictions[second].keys()
        same = sum(1 for sample in common if predictions[first][sample][0][0] == predictions[second][sample][0][0])
        matrix[(first, second)] = matrix[(second, first)] = Agreement(same, len(common))
    return matrix


def agreement_matrix(results: Mapping[str, Any]) -> dict[tuple[str, str], Agreement]:
    """Cross-target agreement: ``results["agreement"]`` when a suite recorded it, else from the predictions.

    A recorded matrix reads ``{"a": {"b": {"same": 9, "n": 10}}}``.
    """
    recorded = results.get("agreement")
    if recorded:
        matrix = {}
        for first, row in recorded.items():
            for second, cell in row.items():
                matrix[(first, second)] = matrix[(second, first)] = Agreement(int(cell["same"]), int(cell["n"]))
        return matrix
    predictions = {
        name: data["predictions"] for name, data in target_results(results).items() if data.get("predictions")
    }
    return pairwise_agreement(predictions)


def robustness_counts(target: Mapping[str, Any]) -> Counter[str]:
    """Robustness cases of one target by outcome (pass, deviation, fail)."""
    return Counter(str(case.get("outcome", "fail")) for case in target.get("robustness", {}).values())


def session_conditions(settings: Settings) -> dict[str, object]:
    """What every figure of the session was measured under: model and weights, host, load settings."""
    from .. import __version__

    card = settings.card
    load = settings.load
    conditions: dict[str, object] = {
        "model": card.name,
        "model_card": card.source,
        # Artifact bytes and every field of the card: two runs with the same id served the same model.
        "card_id": card.card_id,
        "samples": f"{settings.samples or 'bundled default photos'}"
        + (f" (at most {settings.samples_limit})" if settings.samples_limit else ""),
        "host_cpus": os.cpu_count(),
        "host_cpu_model": _cpu_model(),
        "gpus": settings.gpus or "none (CPU)",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pytest_serving": __version__,
        "load_mode": load.mode,
        "load_workers": load.workers,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if load.mode == "sweep":
        conditions |= {
            "sweep_levels": ",".join(map(str, load.sweep_levels)),
            "sweep_scenarios": ",".join(load.sweep_scenarios),
            "sweep_duration_s": load.sweep_duration,
            "sweep_warmup_s": load.sweep_warmup,
            "sweep_repeats": load.sweep_repeats,
        }
    return conditions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def junit_properties(results: Mapping[str, Any], test_id: str, correctness_of: str | None) -> list[tuple[str, str]]:
    """Key figures for JUnit XML: the load levels ``test_id`` measured and, for a contract summary
    test, the correctness of its target."""
    properties: list[tuple[str, str]] = []
    for name, data in target_results(results).items():
        if name == correctness_of and data.get("correctness") and not data["correctness"].get("failures"):
            correctness = data["correctness"]
            properties += [
                (f"{name}.correctness.{key}", f"{correctness[key]:g}") for key in ("n", "top1", "top5", "agreement")
            ]
        for entry in data.get("load", []):
            if entry.get("test") != test_id or entry.get("kind") not in (PHASE, SWEEP_LEVEL):
                continue
            point = _point(name, entry)
            prefix = f"{name}.load.{point.scenario}.{point.level}"
            figures = {
                "n": point.n,
                "rps": point.rps,
                "p50_ms": point.p50_ms,
                "p95_ms": point.p95_ms,
                "failure_rate": point.failure_rate,
                "server_queue_ms": point.server.get("queue_ms"),
                "server_compute_ms": point.server.get("compute_ms"),
                "answers_wrong": (entry.get("answers") or {}).get("mismatches"),
                "peak_memory_mb": _resource(entry, "peak_memory_mb"),
                "memory_growth_mb_per_1k": _resource(entry, "memory_growth_mb_per_1k"),
            }
            properties += [(f"{prefix}.{key}", f"{value:.4g}") for key, value in figures.items() if value is not None]
    return properties


# --- terminal tables -------------------------------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Plain-text columns, the first left-aligned and the others right-aligned."""
    rows = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    return [line(rows[0]), line(["-" * width for width in widths]), *(line(row) for row in rows[1:])]


def number(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def terminal_tables(results: Mapping[str, Any], outcomes: Mapping[str, tuple[str, str]]) -> list[str]:
    """The lines of the session-end summary: per target, whether it ran, then correctness, robustness
    and load; ``outcomes`` (target -> ("ran"|"skipped", detail)) are this process's own."""
    lines: list[str] = []
    for name in sorted(outcomes.keys() | target_results(results).keys()):
        data = target_results(results).get(name, {})
        lines.append(f"{name}: {': '.join(outcomes[name]) if name in outcomes else _recorded_outcome(data)}")
        correctness = data.get("correctness")
        if correctness and correctness.get("failures"):
            lines.append(
                f"  correctness: {correctness['failures']} of {correctness['n']} samples unanswered; "
                f"first: {correctness['first_error']}"
            )
        elif correctness:
            lines += _indented(
                table(
                    ["correctness", "n", "top-1", "top-5", "agreement"],
                    [
                        [
                            "server",
                            str(correctness["n"]),
                            percent(correctness["top1"]),
                            percent(correctness["top5"]),
                            percent(correctness["agreement"]),
                        ],
                        [
                            "in-process",
                            str(correctness["n"]),
                            percent(correctness["reference_top1"]),
                            percent(correctness["reference_top5"]),
                            "",
                        ],
                    ],
                )
            )
        lines += _indented(release_lines(data))
        counts = robustness_counts(data)
        if counts:
            lines += _indented(table(["robustness", *OUTCOMES], [["cases", *(str(counts[o]) for o in OUTCOMES)]]))
        points = [_point(name, entry) for entry in data.get("load", []) if entry.get("kind") in (PHASE, SWEEP_LEVEL)]
        if points:
            lines += _indented(
                table(
                    LOAD_COLUMNS,
                    [
                        [
                            point.scenario,
                            point.level,
                            str(point.n),
                            number(point.rps),
                            number(point.p50_ms),
                            number(point.p95_ms),
                            f"{point.failures} ({percent(point.failure_rate)})",
                            number(point.server.get("queue_ms")),
                            number(point.server.get("compute_ms")),
                            answers_cell(point.entry),
                            number(_resource(point.entry, "peak_memory_mb"), 0),
                            number(_resource(point.entry, "memory_growth_mb_per_1k")),
                            short_verdict(point.entry.get("verdict")),
                        ]
                        for point in points
                    ],
                )
            )
            lines += [
                f"  ! {point.scenario} {point.level}: impossible figure: {finding}"
                for point in points
                for finding in impossible_figures(point)
            ]
    return lines


LOAD_COLUMNS = (
    *("load", "level", "n", "rps", "p50 ms", "p95 ms", "failures", "queue ms", "compute ms"),
    *("answers wrong", "peak MB", "MB/1k req", "verdict"),
)


def short_verdict(verdict: str | None) -> str:
    """``pass``, ``fail (2 violations)``, with ``(unstable)`` when it says so; the reason is in results.json."""
    if not verdict:
        return "-"
    outcome, _, note = verdict.partition("; ")
    return f"{outcome} (unstable)" if note.startswith("unstable") else outcome


def answers_cell(entry: Mapping[str, Any]) -> str:
    """Wrong answers of the checked ones (``-`` when the phase did not check answers)."""
    answers = entry.get("answers")
    if not answers:
        return "-"
    return f"{answers['mismatches']}/{answers['checked']}"


def _resource(entry: Mapping[str, Any], figure: str) -> float | None:
    return (entry.get("resources") or {}).get(figure)


def release_lines(data: Mapping[str, Any]) -> list[str]:
    """One line for the release verdict (with its reasons), one for what the decision cost, and one for
    the rollout (or why it was skipped, or why it was not measurable)."""
    lines = []
    release = data.get("release")
    if release:
        lines.append(f"release: {str(release['verdict']).upper()}: " + " | ".join(release["reasons"]))
        cost = (release.get("latency") or {}).get("cost")
        if cost:
            lines.append("release cost: " + cost_line(cost))
    rollout = data.get("rollout")
    if rollout and not rollout.get("measurable", True):
        lines.append(f"rollout: NOT MEASURABLE at {rollout.get('rate', 0):.3g}/s: {rollout.get('not_measurable')}")
    if rollout and rollout.get("requests"):
        stall = rollout.get("stall_s")
        level = rollout.get("stall_level_ms")
        measured = stall is not None and level is not None and rollout.get("measurable", True)
        stall_text = f", p99 stall {stall:g} s above {level:.0f} ms" if measured else ""
        lines.append(
            f"rollout: {rollout['requests']} requests at {rollout.get('rate', 0):.3g}/s, {rollout['failed']} failed, "
            f"{rollout['stale_answers']} stale answers after {rollout.get('grace_s', 0):g} s grace, "
            f"switch {number(rollout.get('switch_s'), 2)} s, p99 {number(rollout.get('p99_switch_ms'))} ms during "
            f"the switch vs {number(rollout.get('p99_steady_ms'))} ms before it{stall_text}"
        )
    if data.get("rollout_skipped"):
        lines.append(f"rollout: SKIPPED: {data['rollout_skipped']}")
    return lines


def cost_line(cost: Mapping[str, Any]) -> str:
    """Windows per version, seconds per look (warm-up among them), and the fewest windows that would have decided."""
    looks = "; ".join(
        f"look {number}: {look['pairs']} windows each after {look['seconds']:.0f} s, warm-up {look['warmup_s']:.0f} s"
        for number, look in enumerate(cost["looks"], start=1)
    )
    fewest = cost.get("shortest_deciding_windows")
    decided = (
        f"{fewest} windows each would have decided the same"
        if fewest is not None
        else "undecided, so no window count decided"
    )
    return f"{cost['windows']} windows each in {cost['seconds']:.0f} s ({looks}); {decided}"


def _recorded_outcome(data: Mapping[str, Any]) -> str:
    """The ran/skipped line from results.json, for targets another process (an xdist worker) ran."""
    if "skipped" in data:
        return f"skipped: {data['skipped']}"
    server = data.get("server")
    return f"ran: {server.get('image', '?')} ({server.get('version', '?')})" if server else "no record"


def _indented(lines: list[str]) -> list[str]:
    return ["  " + line for line in lines]
