"""The study's charts, as PNG bytes: request rate, response time and failures against load.

``chart_specs`` decides what to draw from the load points (pure, unit-tested);
``draw`` renders one chart with matplotlib's Agg backend (no display needed). Each target
gets its three panels with one line per scenario; each scenario gets the same three panels
with all targets overlaid; targets with server metrics get a breakdown of where the mean
response time went; targets whose container was read during the phases get latency, memory
and CPU over time, side by side (``resource_specs``). A release decision adds, per target, the
two versions' latency distributions and the rollout over time (``release_charts``).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from .summary import PHASE, LoadPoint, resource_points

AXIS_LABELS = {"users": "virtual users", "rate": "offered rate (requests/s)"}
#: The three panels of the study, in its order: (title, y label).
PANELS = (
    ("Request rate", "answered requests/s"),
    ("Response time", "ms (circles: p95, squares: p50)"),
    ("Failed responses", "failed requests"),
)


@dataclass(frozen=True)
class Series:
    """One line of a chart: its label and its points, sorted by load."""

    label: str
    points: tuple[LoadPoint, ...]

    @property
    def x(self) -> list[float]:
        return [point.x for point in self.points]


@dataclass(frozen=True)
class ChartSpec:
    """One figure: a file stem, a title, the x axis kind and its series (``kind`` picks the drawing)."""

    name: str
    title: str
    axis: str
    series: tuple[Series, ...]
    kind: str = "panels"


def _series(label: str, points: Sequence[LoadPoint]) -> Series:
    return Series(label, tuple(sorted(points, key=lambda point: point.x)))


def _grouped(points: Sequence[LoadPoint], key) -> dict:
    groups: dict = {}
    for point in points:
        groups.setdefault(key(point), []).append(point)
    return groups


def _spans_levels(series: Sequence[Series]) -> bool:
    """A curve needs two load levels: a single level (a smoke phase) is a table row, not a one-dot chart."""
    return any(len(set(line.x)) >= 2 for line in series)


def chart_specs(points: Sequence[LoadPoint]) -> list[ChartSpec]:
    """Per scenario and axis, all targets overlaid; per target, its scenarios; per target, the time breakdown;
    only charts with a curve, one series over two load levels at least."""
    return [spec for spec in _all_chart_specs(points) if _spans_levels(spec.series)]


def _all_chart_specs(points: Sequence[LoadPoint]) -> list[ChartSpec]:
    specs = []
    for (scenario, axis), group in sorted(_grouped(points, lambda p: (p.scenario, p.axis)).items()):
        by_target = _grouped(group, lambda p: p.target)
        specs.append(
            ChartSpec(
                name=f"all-targets-{scenario}-{axis}",
                title=f"All targets, {_scenario_title(scenario)}",
                axis=axis,
                series=tuple(_series(target, members) for target, members in sorted(by_target.items())),
            )
        )
    for (target, axis), group in sorted(_grouped(points, lambda p: (p.target, p.axis)).items()):
        by_scenario = _grouped(group, lambda p: p.scenario)
        series = tuple(_series(_scenario_title(scenario), members) for scenario, members in sorted(by_scenario.items()))
        specs.append(ChartSpec(f"{target}-{axis}", target, axis, series))
        timed = [point for point in group if _server_timed(point.server) and point.mean_ms is not None]
        if timed:
            breakdown = tuple(
                _series(_scenario_title(scenario), members)
                for scenario, members in sorted(_grouped(timed, lambda p: p.scenario).items())
            )
            specs.append(
                ChartSpec(
                    f"{target}-{axis}-time", f"{target}: where the mean response time went", axis, breakdown, "time"
                )
            )
    return specs


def resource_specs(results: Mapping[str, Any]) -> list[ChartSpec]:
    """Per target with container readings: each phase's latency, memory and CPU against time."""
    by_target = _grouped(resource_points(results), lambda p: p.target)
    return [
        ChartSpec(
            f"{target}-resources",
            f"{target}: latency, memory and CPU over each phase (0 s: the measured window opens)",
            "time",
            tuple(Series(_phase_label(point, number), (point,)) for number, point in enumerate(points, start=1)),
            "resources",
        )
        for target, points in sorted(by_target.items())
    ]


def _phase_label(point: LoadPoint, number: int) -> str:
    test = str(point.entry.get("test", "")).rpartition("::")[2]
    return f"#{number} {test} {point.level}".strip()


#: Panels of a resources chart: (title, y label).
RESOURCE_PANELS = (
    ("Response time per window", "ms (solid: p95, dashed: p50)"),
    ("Memory in use", "MB"),
    ("CPU", "cores"),
)


def _draw_resources(figure, spec: ChartSpec) -> None:
    for axes, (title, ylabel), index in zip(figure.subplots(1, 3, sharex=True), RESOURCE_PANELS, range(3)):
        for number, series in enumerate(spec.series):
            entry, color = series.points[0].entry, f"C{number % 10}"
            if index == 0:
                windows = entry.get("windows") or []
                starts = [window["start_s"] for window in windows]
                axes.plot(starts, [_nan(w["p95_ms"]) for w in windows], "-", color=color, label=series.label)
                axes.plot(starts, [_nan(w["p50_ms"]) for w in windows], "--", color=color)
            else:
                timeline = entry["resources"]["timeline"]
                axes.plot([row[0] for row in timeline], [row[index] for row in timeline], "-", color=color)
        axes.set_title(title)
        axes.set_xlabel("seconds since the measured window opened")
        axes.set_ylabel(ylabel)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
    figure.legend(fontsize="small", loc="outside lower center", ncols=min(4, len(spec.series)))


def _scenario_title(scenario: str) -> str:
    return {"warm": "warm server", "fresh": "fresh server per level", "phase": "single phases"}.get(scenario, scenario)


def _server_timed(server: Mapping[str, Any]) -> bool:
    return server.get("server_ms") is not None or server.get("compute_ms") is not None


def server_breakdown(server: Mapping[str, Any]) -> dict[str, float]:
    """A request's mean time in the server split into queue, compute and the rest (ms).

    A part the server's counters do not give (TorchServe does not split compute out) stays
    in "rest of server", so the parts always add up to the server's own total. A server that
    reports only its compute time (KServe's predict time) has no total: its other parts fall
    in the gap to the client's mean, which the chart labels as outside the reported time.
    """
    queue_ms = server.get("queue_ms") or 0.0
    compute_ms = server.get("compute_ms") or 0.0
    server_ms = server.get("server_ms") or queue_ms + compute_ms
    return {"queue": queue_ms, "compute": compute_ms, "rest of server": max(server_ms - queue_ms - compute_ms, 0.0)}


def draw(spec: ChartSpec) -> bytes:
    """The chart as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if spec.kind == "resources":
        figure = Figure(figsize=(15, 4.2 + 0.25 * len(spec.series)), dpi=100, layout="constrained")
        _draw_resources(figure, spec)
    elif spec.kind == "time":
        figure = Figure(figsize=(7 * len(spec.series), 3.8), dpi=100, layout="constrained")
        for axes, series in zip(figure.subplots(1, len(spec.series), squeeze=False)[0], spec.series):
            _draw_breakdown(axes, series, spec.axis)
    else:
        figure = Figure(figsize=(15, 3.8), dpi=100, layout="constrained")
        for axes, (title, ylabel), index in zip(figure.subplots(1, 3), PANELS, range(3)):
            for number, series in enumerate(spec.series):
                _draw_panel(axes, index, series, f"C{number}")
            axes.set_title(title)
            axes.set_xlabel(AXIS_LABELS.get(spec.axis, spec.axis))
            axes.set_ylabel(ylabel)
            axes.set_ylim(bottom=0)
            if index == 2:  # counts: whole numbers, and a visible axis when nothing failed
                axes.set_ylim(top=max([1, *_failures(spec)]) * 1.1)
                axes.yaxis.set_major_locator(MaxNLocator(integer=True))
            if spec.axis == "users":
                axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(True, alpha=0.3)
            axes.legend(fontsize="small")
    figure.suptitle(spec.title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _failures(spec: ChartSpec) -> list[int]:
    return [point.failures for series in spec.series for point in series.points]


def _draw_panel(axes, index: int, series: Series, color: str) -> None:
    """Sweep levels as lines; single phases (several may share a level) as unconnected points."""
    points = series.points
    solid, dashed = ("", "") if points[0].scenario == PHASE else ("-", "--")
    if index == 0:
        axes.plot(series.x, [p.rps for p in points], f"o{solid}", color=color, label=series.label)
    elif index == 1:
        axes.plot(series.x, [_nan(p.p95_ms) for p in points], f"o{solid}", color=color, label=f"{series.label} p95")
        axes.plot(series.x, [_nan(p.p50_ms) for p in points], f"s{dashed}", color=color, label=f"{series.label} p50")
    else:
        axes.plot(series.x, [p.failures for p in points], f"o{solid}", color=color, label=series.label)


def _draw_breakdown(axes, series: Series, axis: str) -> None:
    """Stacked server parts per level, and the client's mean as a marker: the gap is time outside the server."""
    labels = _unique([f"{point.x:g}" for point in series.points])
    bottom = [0.0] * len(labels)
    parts = [server_breakdown(point.server) for point in series.points]
    for number, part in enumerate(parts[0]):
        heights = [breakdown[part] for breakdown in parts]
        axes.bar(labels, heights, bottom=bottom, width=0.6, label=f"server: {part}", color=f"C{number}")
        bottom = [b + h for b, h in zip(bottom, heights)]
    axes.plot(labels, [point.mean_ms for point in series.points], "k_", markersize=40, mew=3, label="client mean")
    axes.set_title(series.label)
    axes.set_xlabel(AXIS_LABELS.get(axis, axis))
    axes.set_ylabel("mean ms per request")
    axes.set_ylim(0, max([*bottom, *(point.mean_ms or 0 for point in series.points)]) * 1.1 or 1)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), markerscale=0.3)


def _unique(labels: list[str]) -> list[str]:
    """Bar labels made distinct (two phases at one level), since bars at one label would overlap."""
    seen: Counter[str] = Counter()
    unique = []
    for label in labels:
        seen[label] += 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return unique


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


# --- the release decision ----------------------------------------------------------------------


def release_charts(results: Mapping[str, Any]) -> dict[str, Callable[[], bytes]]:
    """Chart name -> its drawing, for every target with a release record (the two latency
    distributions) or a rollout record (the rollout over time)."""
    drawings: dict[str, Callable[[], bytes]] = {}
    for target, data in sorted(results.get("targets", {}).items()):
        latency = (data.get("release") or {}).get("latency") or {}
        if latency.get("current_sample_ms") and latency.get("candidate_sample_ms"):
            drawings[f"release-{target}-latency"] = partial(_draw_distributions, target, latency)
        if (data.get("rollout") or {}).get("timeline"):
            drawings[f"release-{target}-rollout"] = partial(_draw_rollout, target, data["rollout"])
    return drawings


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _draw_distributions(target: str, latency: Mapping[str, Any]) -> bytes:
    """Both versions' latencies: histograms on a shared log scale, and each window's p95 in run order."""
    import numpy as np

    current, candidate = np.asarray(latency["current_sample_ms"]), np.asarray(latency["candidate_sample_ms"])
    figure = _figure(15, 3.8)
    histogram, windows = figure.subplots(1, 2)
    low, high = max(min(current.min(), candidate.min()), 1e-3), max(current.max(), candidate.max())
    bins = np.geomspace(low, high * 1.0001, 50)
    for values, label, color in ((current, "current", "C0"), (candidate, "candidate", "C1")):
        histogram.hist(values, bins=bins, alpha=0.55, color=color, label=f"{label} (n={values.size})")
        histogram.axvline(np.percentile(values, 95), color=color, linestyle="--", label=f"{label} p95")
    histogram.set_xscale("log")
    histogram.set_xlabel("latency ms (log scale)")
    histogram.set_ylabel("requests")
    histogram.set_title("Latency distributions (sample of each version's requests)")
    histogram.legend(fontsize="small")
    rows = latency.get("windows") or []
    for version, marker, color in (("current", "o", "C0"), ("candidate", "s", "C1")):
        mine = [row for row in rows if row.get("version") == version and row.get("p95_ms") is not None]
        windows.plot([row["index"] for row in mine], [row["p95_ms"] for row in mine], marker, color=color,
                     label=f"{version} p95 per window")  # fmt: skip
    windows.set_xlabel("window (run order: current and candidate interleaved)")
    windows.set_ylabel("p95 ms")
    windows.set_ylim(bottom=0)
    windows.set_title("Interleaved windows")
    windows.grid(True, alpha=0.3)
    windows.legend(fontsize="small")
    figure.suptitle(f"{target}: candidate against current")
    return _png(figure)


def _draw_rollout(target: str, rollout: Mapping[str, Any]) -> bytes:
    """Per second across the rollout: answered rate, p99, failures and each version's share of the
    answers; the switch's start and end are marked on every panel."""
    from matplotlib.ticker import MaxNLocator

    seconds = rollout["timeline"]
    x = [entry["second"] for entry in seconds]
    figure = _figure(15, 7.0)
    panels = figure.subplots(2, 2, sharex=True).ravel()
    panels[0].plot(x, [entry["rps"] for entry in seconds], "-o", markersize=3, color="C0")
    panels[0].set_ylabel("answered requests/s")
    panels[1].plot(x, [_nan(entry["p99_ms"]) for entry in seconds], "-o", markersize=3, color="C3")
    panels[1].set_ylabel("p99 ms (requests sent that second)")
    panels[2].bar(x, [entry["failures"] for entry in seconds], color="C3")
    panels[2].set_ylim(0, max([1, *(entry["failures"] for entry in seconds)]) * 1.1)
    panels[2].yaxis.set_major_locator(MaxNLocator(integer=True))
    panels[2].set_ylabel("failed requests")
    versions = sorted({version for entry in seconds for version in entry["versions"]})
    shares = [[entry["versions"].get(version, 0.0) for entry in seconds] for version in versions]
    if versions:
        panels[3].stackplot(x, shares, labels=[f"version {version or '(unnamed)'}" for version in versions])
        panels[3].legend(fontsize="small", loc="center right")
    panels[3].set_ylim(0, 1)
    panels[3].set_ylabel("share of answers")
    for axes, title in zip(panels, ("Request rate", "Response time p99", "Failures", "Answers per version")):
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        if rollout.get("switch_started_s") is not None:
            axes.axvspan(rollout["switch_started_s"], rollout["switch_done_s"], color="0.8", alpha=0.6,
                         label="switch")  # fmt: skip
            axes.axvline(rollout["switch_done_s"] + rollout.get("grace_s", 0.0), color="0.4", linestyle=":")
    for axes in panels[2:]:
        axes.set_xlabel("seconds since the load began")
    figure.suptitle(
        f"{target}: rollout at {rollout.get('rate', 0):g} requests/s (grey: switch; dotted: end of the grace)"
    )
    return _png(figure)
