"""The study's charts, as PNG bytes: request rate, response time and failures against load.

``chart_specs`` decides what to draw from the load points (pure, unit-tested);
``draw`` renders one chart with matplotlib's Agg backend (no display needed). Each target
gets its three panels with one line per scenario; each scenario gets the same three panels
with all targets overlaid; targets with server metrics get a breakdown of where the mean
response time went; targets whose container was read during the phases get latency, memory
and CPU over time, side by side (``resource_specs``).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


def chart_specs(points: Sequence[LoadPoint]) -> list[ChartSpec]:
    """Per scenario and axis, all targets overlaid; per target, its scenarios; per target, the time breakdown."""
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
