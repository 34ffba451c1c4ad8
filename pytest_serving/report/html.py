"""report.html: one self-contained page with every figure of results.json and its conditions.

The page references nothing outside itself (charts are embedded as base64 PNG, styles are
inline), so it opens offline and survives being mailed or archived as a CI artifact. The
charts are also written beside it as PNG files for slides and papers. Every file is written
to a temporary name and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from ..files import write_atomically
from . import charts
from .summary import (
    OUTCOMES,
    Agreement,
    LoadPoint,
    agreement_matrix,
    answers_cell,
    chart_points,
    cost_line,
    impossible_figures,
    load_points,
    number,
    percent,
    robustness_counts,
    target_results,
)

REPORT_NAME = "report.html"
CHARTS_FOLDER = "charts"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1600px; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 0.9em; max-width: 70em; }
.pass { background: #dff0d8; } .deviation { background: #fcf8e3; } .fail { background: #f2dede; }
.impossible { color: #a94442; } .wide { overflow-x: auto; } .missing { color: #999; } img.chart { max-width: 100%; display: block; margin: 0.6em 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; } dt { font-weight: bold; }
"""


def render_report(results: Mapping[str, Any], directory: Path) -> Path:
    """Write ``directory/report.html`` and ``directory/charts/*.png`` from ``results``; return the HTML path."""
    directory.mkdir(parents=True, exist_ok=True)
    images = _draw_charts(results)
    folder = directory / CHARTS_FOLDER
    for name, png in images.items():
        write_atomically(folder / f"{name}.png", lambda file, png=png: file.write_bytes(png))
    if folder.is_dir():  # charts of an earlier report in this directory would pass for this one's
        for stale in folder.glob("*.png"):
            if stale.stem not in images:
                stale.unlink()
    path = directory / REPORT_NAME
    page = report_html(results, images).encode()
    write_atomically(path, lambda file: file.write_bytes(page))
    return path


def _draw_charts(results: Mapping[str, Any]) -> dict[str, bytes]:
    """PNG bytes by chart name; none when matplotlib is missing (the page says so)."""
    points, _ = chart_points(results)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return {}
    specs = [*charts.chart_specs(points), *charts.resource_specs(results)]
    images = {spec.name: charts.draw(spec) for spec in specs}
    return images | {name: draw() for name, draw in charts.release_charts(results).items()}


def report_html(results: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """The whole page; ``images`` holds the PNG of every chart by name (empty: no charts)."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        f"<h1>pytest-serving report</h1><p class='note'>Generated {generated} from results.json.</p>",
        _conditions_section(results),
        _release_section(results, images),
        _load_section(results, images),
        _correctness_section(results),
        _robustness_section(results),
    ]
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>pytest-serving report</title>"
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


# --- building blocks ---------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], classes: Iterable[Sequence[str]] = ()) -> str:
    """A table of already-escaped cells; ``classes`` gives a CSS class per cell (row by row)."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    class_rows = list(classes)
    lines = []
    for index, row in enumerate(rows):
        row_classes = class_rows[index] if index < len(class_rows) else [""] * len(row)
        cells = "".join(
            f"<td class='{css}'>{cell}</td>" if css else f"<td>{cell}</td>" for cell, css in zip(row, row_classes)
        )
        lines.append(f"<tr>{cells}</tr>")
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table></div>"


def _definitions(items: Iterable[tuple[str, object]]) -> str:
    return "<dl>" + "".join(f"<dt>{escape(key)}</dt><dd>{escape(str(value))}</dd>" for key, value in items) + "</dl>"


def _image(name: str, images: Mapping[str, bytes], alt: str) -> str:
    encoded = base64.b64encode(images[name]).decode("ascii")
    return f"<img class='chart' alt='{escape(alt)}' src='data:image/png;base64,{encoded}'>"


# --- sections ----------------------------------------------------------------------------------


def _conditions_section(results: Mapping[str, Any]) -> str:
    session = results.get("session", {})
    parts = ["<h2>Conditions</h2>"]
    if session:
        parts.append(_definitions((key.replace("_", " "), value) for key, value in session.items()))
    else:
        parts.append("<p class='note'>results.json has no session record (written when a session finishes).</p>")
    rows = []
    for name, data in target_results(results).items():
        server = data.get("server", {})
        rows.append(
            [
                escape(name),
                escape(str(server.get("image", "-"))),
                escape(str(server.get("image_origin", "-"))),
                escape(str(server.get("version", "-"))),
                escape(str(server.get("model", "-"))),
                escape(str(server.get("gpus", "-"))),
                "yes" if server.get("started_by_plugin") else ("no" if server else "-"),
                escape(str(data.get("skipped", ""))),
            ]
        )
    parts.append(
        _table(["target", "image", "origin", "server version", "model", "GPUs", "started here", "skipped"], rows)
    )
    return "\n".join(parts)


def _load_section(results: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    points, is_sweep = chart_points(results)
    parts = ["<h2>Load</h2>"]
    if not points:
        return parts[0] + "<p class='note'>No load phase was measured.</p>"
    if is_sweep:
        parts.append(
            "<p class='note'>Sweep levels: each point is the median over its repeats; the scenario says whether "
            "one warm server took every level or a fresh container took each.</p>"
        )
    else:
        parts.append(
            "<p class='note'>No sweep in these results (run with <code>--serving-load=sweep</code> for the study's "
            "curves): the single load phases that ran (smoke tests) are rows of the tables below; a single level "
            "draws no curve.</p>"
        )
    parts.append(
        "<p class='note'>Latency percentiles are over successful requests of the measured window; failures count "
        "every non-2xx answer and every request without one. Server queue and compute times are the increases of "
        "the server's own counters over the measured window (scraped as it opens and after the phase) divided "
        "by the requests it counted; "
        "<em>outside server</em> is the client's mean minus the server's time per request: network, HTTP and "
        "the client.</p>"
    )
    if not images:
        parts.append("<p class='note'>Charts need matplotlib: <code>pip install pytest-serving[report]</code>.</p>")
    parts += [_image(spec.name, images, spec.title) for spec in charts.chart_specs(points) if spec.name in images]
    parts += [_image(spec.name, images, spec.title) for spec in charts.resource_specs(results) if spec.name in images]
    for name in target_results(results):
        rows = [point for point in points if point.target == name]
        extra = [point for point in load_points(results, "phase") if point.target == name] if is_sweep else []
        if rows or extra:
            parts.append(f"<h3>{escape(name)}: load figures and their conditions</h3>")
            parts.append(_load_table(rows + extra))
    return "\n".join(parts)


def _load_table(points: Sequence[LoadPoint]) -> str:
    header = [
        "scenario", "level", "n", "req/s", "p50 ms", "p95 ms", "p99 ms", "mean ms", "failed",
        "server queue ms", "server compute ms", "server total ms", "outside server ms", "batch",
        "warm-up + measured s", "Locust workers", "stable", "answers wrong / checked", "peak memory MB",
        "memory MB per 1k requests", "mean CPU cores", "cold start s", "verdict", "started (UTC)", "test",
    ]  # fmt: skip
    rows = []
    for point in points:
        configuration, server = point.configuration, point.server
        server_ms = server.get("server_ms")
        outside = point.mean_ms - server_ms if server_ms is not None and point.mean_ms is not None else None
        unavailable = server.get("unavailable")
        impossible = impossible_figures(point)
        outside_cell = number(outside)
        if impossible:
            outside_cell = f"<span class='impossible' title='{escape('; '.join(impossible))}'>{outside_cell} ⚠</span>"
        server_cells = (
            [number(server.get("queue_ms")), number(server.get("compute_ms")), number(server_ms), outside_cell]
            if not unavailable
            else [f"<span class='missing' title='{escape(str(unavailable))}'>n/a</span>"] * 4
        )
        repeats = point.entry.get("repeats") or [point.entry]
        resources = point.entry.get("resources") or {}
        rows.append(
            [
                escape(point.scenario),
                escape(point.level),
                str(point.n),
                number(point.rps),
                number(point.p50_ms),
                number(point.p95_ms),
                number(point.p99_ms),
                number(point.mean_ms),
                f"{point.failures} ({percent(point.failure_rate)})",
                *server_cells,
                number(server.get("requests_per_execution"), 2),
                f"{configuration.get('warmup', '?')} + {configuration.get('duration', '?')}",
                escape(str(configuration.get("workers", "-"))),
                "yes" if point.stable else "no",
                answers_cell(point.entry),
                *(number(resources.get(figure), digits) for figure, digits in RESOURCE_CELLS),
                escape(str(point.entry.get("verdict", "-"))),
                escape(str(repeats[0].get("started_at", "-"))[:19].replace("T", " ")),
                escape(str(point.entry.get("test", "-"))),
            ]
        )
    notes = sorted({str(point.server["unavailable"]) for point in points if point.server.get("unavailable")})
    note = "".join(f"<p class='note'>Server metrics n/a: {escape(reason)}</p>" for reason in notes)
    note += "".join(
        f"<p class='note impossible'>⚠ {escape(point.scenario)} {escape(point.level)}: impossible figure: "
        f"{escape(finding)}</p>"
        for point in points
        for finding in impossible_figures(point)
    )
    return _table(header, rows) + note


#: Resource columns of the load table: (figure in the phase's resources, decimals).
RESOURCE_CELLS = (("peak_memory_mb", 0), ("memory_growth_mb_per_1k", 1), ("mean_cpu", 2), ("startup_s", 1))
#: CSS class of each verdict (an inconclusive one reads as a warning, not as a failure).
VERDICT_CLASS = {"pass": "pass", "inconclusive": "deviation", "fail": "fail"}


RELEASE_NOTE = (
    "<p class='note'>Both versions ran in the same server on the same samples. Accuracy: top-1 on the same "
    "samples, with McNemar's exact test on the samples where only one version was right. Speed: closed-loop "
    "windows alternating current and candidate, which goes first alternating too; each pair of adjacent "
    "windows gives a ratio, the figures are their 10% trimmed geometric means, and the interval comes from a bootstrap "
    "that resamples the pairs, at the confidence shown beside it (95% for a fixed number of windows, more "
    "when the comparison may grow, so that all its looks together keep a 5% risk). "
    "<em>fail</em>: the whole interval beyond the limit; <em>inconclusive</em>: the interval straddles it "
    "(more windows would decide).</p>"
)


def _release_section(results: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """Per target: the verdict and its reasons, both versions side by side, the latency
    distributions, and the rollout with its per-second chart (or why it was skipped). Nothing when no
    candidate ran."""
    targets = {
        name: data
        for name, data in target_results(results).items()
        if data.get("release") or data.get("rollout") or data.get("rollout_skipped")
    }
    if not targets:
        return ""
    parts = ["<h2>Release: candidate against current</h2>", RELEASE_NOTE]
    for name, data in targets.items():
        release = data.get("release")
        if release:
            verdict = str(release.get("verdict"))
            parts.append(
                f"<h3>{escape(name)}: <span class='{VERDICT_CLASS.get(verdict, 'fail')}'>{escape(verdict)}</span></h3>"
            )
            parts.append("<ul>" + "".join(f"<li>{escape(reason)}</li>" for reason in release["reasons"]) + "</ul>")
            parts.append(_release_table(release))
            chart = f"release-{name}-latency"
            if chart in images:
                parts.append(_image(chart, images, f"{name}: latency distributions of both versions"))
        rollout = data.get("rollout")
        if rollout:
            parts.append(f"<h3>{escape(name)}: rollout under load</h3>")
            parts.append(_rollout_table(rollout))
            chart = f"release-{name}-rollout"
            if chart in images:
                parts.append(_image(chart, images, f"{name}: rollout per second"))
        if data.get("rollout_skipped"):
            parts.append(f"<h3>{escape(name)}: rollout under load: skipped</h3>")
            parts.append(f"<p>{escape(str(data['rollout_skipped']))}</p>")
    return "\n".join(parts)


def _rollout_table(rollout: Mapping[str, Any]) -> str:
    """The rollout's figures, its stall (marked as the seconds of the chart it spans) and its budgets; a
    rollout that is not measurable says why instead of judging its latency."""
    header = [
        "rate req/s",
        "requests",
        "failed",
        "stale answers",
        "switch s",
        "grace s",
        "p99 before switch ms",
        "p99 during switch ms",
        "p99 stall s",
    ]
    row = [
        number(rollout.get("rate")),
        str(rollout["requests"]),
        str(rollout["failed"]),
        str(rollout["stale_answers"]),
        number(rollout.get("switch_s"), 2),
        number(rollout.get("grace_s")),
        number(rollout.get("p99_steady_ms")),
        number(rollout.get("p99_switch_ms")),
        number(rollout.get("stall_s")),
    ]
    gated = ["", "", "fail" if rollout["failed"] else "pass", "fail" if rollout["stale_answers"] else "pass"]
    over = _over_budget(rollout)
    switch_class = "" if over is None else ("fail" if over else "pass")
    table = _table(header, [row], [gated + ["", "", "", switch_class, ""]])
    return table + "".join(f"<p class='note'>{escape(note)}</p>" for note in rollout_notes(rollout))


def _over_budget(rollout: Mapping[str, Any]) -> bool | None:
    """Whether the switch's p99 broke a budget (None: no budget, or not measurable)."""
    switch, steady = rollout.get("p99_switch_ms"), rollout.get("p99_steady_ms")
    limit_ms, ratio = rollout.get("max_p99_ms"), rollout.get("max_p99_ratio")
    if switch is None or not rollout.get("measurable", True) or (limit_ms is None and ratio is None):
        return None
    return (limit_ms is not None and switch > limit_ms) or bool(
        ratio is not None and steady and switch > ratio * steady
    )


def rollout_notes(rollout: Mapping[str, Any]) -> list[str]:
    """Sentences on what the rollout's latency means: not measurable (why), the rate it fell back to, the
    stall and the budgets."""
    notes = []
    if not rollout.get("measurable", True):
        notes.append(f"Not measurable: {rollout.get('not_measurable', '')}. No latency budget was judged.")
    if rollout.get("rate_lowered_from"):
        notes.append(
            f"The server did not sustain {rollout['rate_lowered_from']:.3g} requests/s before the switch; "
            f"the rollout ran at {rollout['rate']:.3g}."
        )
    stalled = rollout.get("stall_seconds") or []
    if stalled and rollout.get("stall_level_ms") is not None and rollout.get("measurable", True):
        notes.append(
            f"Stall: p99 above {rollout['stall_level_ms']:.0f} ms (twice the steady p99) in "
            f"{'second' if len(stalled) == 1 else 'seconds'} {', '.join(map(str, stalled))} of the chart, "
            f"{rollout['stall_s']:g} s in all."
        )
    budgets = [
        text
        for text, value in (
            (f"{rollout.get('max_p99_ms')} ms", rollout.get("max_p99_ms")),
            (f"{rollout.get('max_p99_ratio')}x the steady p99", rollout.get("max_p99_ratio")),
        )
        if value is not None
    ]
    if budgets:
        notes.append("Budget of p99 during the switch: " + " and ".join(budgets) + ".")
    return notes


def _release_table(release: Mapping[str, Any]) -> str:
    current, candidate = release.get("current", {}), release.get("candidate", {})
    accuracy, latency = release.get("accuracy", {}), release.get("latency", {})
    rows = [
        [label, escape(str(current.get(key, "-"))), escape(str(candidate.get(key, "-"))), "", ""]
        for key, label in (("model", "model"), ("server_version", "version on the server"))
    ]
    classes: list[list[str]] = [[""] * 5, [""] * 5]
    if accuracy.get("measured"):
        rows.append(
            [
                f"top-1 (n={accuracy['n']})",
                percent(accuracy["current_top1"]),
                percent(accuracy["candidate_top1"]),
                (
                    f"{-accuracy['drop_points']:+.1f} points; McNemar p={accuracy['p_value']:.2g} "
                    f"({accuracy['only_current']} only current, {accuracy['only_candidate']} only candidate); "
                    f"agreement {percent(accuracy['agreement'])}"
                ),
                escape(str(accuracy["verdict"])),
            ]
        )
        classes.append(["", "", "", "", VERDICT_CLASS.get(str(accuracy["verdict"]), "")])
    for key, label in (("p95", "p95 latency ms"), ("throughput", "throughput req/s")):
        interval = latency.get(key)
        if not interval:
            continue
        needed = interval.get("windows_needed")
        advice = f"; ~{needed} windows each would decide" if interval["verdict"] == "inconclusive" and needed else ""
        rows.append(
            [
                f"{label} ({interval['windows']} windows each, trimmed geometric mean)",
                number(interval["current"]),
                number(interval["candidate"]),
                (
                    f"{interval['ratio']:.3f} ({100 * interval.get('confidence', 0.95):.3g}% CI "
                    f"{interval['low']:.3f}-{interval['high']:.3f}){advice}"
                ),
                escape(str(interval["verdict"])),
            ]
        )
        classes.append(["", "", "", "", VERDICT_CLASS.get(str(interval["verdict"]), "")])
    limits = (
        f"limits: accuracy drop {accuracy.get('max_drop_points', '-')} points, "
        f"speed regression {latency.get('max_regression_pct', '-')}%"
    )
    return (
        _table(["", "current", "candidate", "candidate vs current", "verdict"], rows, classes)
        + (f"<p class='note'>{escape(limits)}</p>")
        + (
            f"<p class='note'>Cost of the decision: {escape(cost_line(latency['cost']))}</p>"
            if latency.get("cost")
            else ""
        )
    )


def _correctness_section(results: Mapping[str, Any]) -> str:
    parts = ["<h2>Correctness</h2>"]
    rows = []
    for name, data in target_results(results).items():
        summary = data.get("correctness")
        if summary and summary.get("failures"):
            unanswered = f"{summary['failures']} unanswered: {summary['first_error']}"
            rows.append([escape(name), str(summary["n"]), escape(unanswered), "-", "-", "-", "-", "-"])
        elif summary:
            rows.append(
                [
                    escape(name),
                    str(summary["n"]),
                    percent(summary["top1"]),
                    percent(summary["top5"]),
                    percent(summary["reference_top1"]),
                    percent(summary["reference_top5"]),
                    percent(summary["agreement"]),
                    f"{summary['max_probability_difference']:.2g}",
                ]
            )
    if not rows:
        return parts[0] + "<p class='note'>No contract results.</p>"
    parts.append(
        "<p class='note'>Top-1/top-5: the label among the server's first 1 or 5 classes. Agreement: the server's "
        "top-1 equals the in-process model's (or is within a near tie of it). n: samples.</p>"
    )
    parts.append(
        _table(["target", "n", "top-1", "top-5", "in-process top-1", "in-process top-5", "agreement", "max |Δp|"], rows)
    )
    parts.append(_per_class_table(results))
    matrix = agreement_matrix(results)
    names = sorted({first for first, _ in matrix})
    if names:
        parts.append("<h3>Cross-target top-1 agreement</h3>")
        matrix_rows = [
            [escape(first), *(_agreement_cell(matrix.get((first, second))) for second in names)] for first in names
        ]
        parts.append(_table(["", *map(escape, names)], matrix_rows))
    return "\n".join(parts)


def _per_class_table(results: Mapping[str, Any]) -> str:
    """Top-1 per class and target, beside the in-process model's: where a deployment is worse."""
    targets = {
        name: data["correctness"].get("per_class", {})
        for name, data in target_results(results).items()
        if data.get("correctness")
    }
    labels = sorted({label for per_class in targets.values() for label in per_class})
    if not labels:
        return ""
    rows = []
    for label in labels:
        cells = [escape(label)]
        reference = next((per_class[label] for per_class in targets.values() if label in per_class), None)
        cells.append(str(reference["n"]) if reference else "-")
        cells.append(percent(reference["reference_top1"]) if reference else "-")
        cells += [percent(per_class[label]["top1"]) if label in per_class else "-" for per_class in targets.values()]
        rows.append(cells)
    header = ["class", "n", "in-process top-1", *(f"{escape(name)} top-1" for name in targets)]
    return "<h3>Top-1 per class</h3>" + _table(header, rows)


def _agreement_cell(agreement: Agreement | None) -> str:
    return "-" if agreement is None else f"{percent(agreement.rate)} (n={agreement.n})"


def _robustness_section(results: Mapping[str, Any]) -> str:
    targets = {name: data for name, data in target_results(results).items() if data.get("robustness")}
    parts = ["<h2>Robustness</h2>"]
    if not targets:
        return parts[0] + "<p class='note'>No robustness results.</p>"
    names = sorted(targets)
    counts = {name: robustness_counts(data) for name, data in targets.items()}
    parts.append(_table(["outcome", *map(escape, names)], [[o, *(str(counts[n][o]) for n in names)] for o in OUTCOMES]))
    parts.append(
        "<p class='note'>Each cell: outcome, HTTP status, and whether the server survived (still ready, same "
        "workers, next valid request answered right). A deviation is a known server behaviour recorded with "
        "its reason (hover).</p>"
    )
    cases = sorted({case for data in targets.values() for case in data["robustness"]})
    rows, classes = [], []
    for case in cases:
        row, row_classes = [escape(case)], [""]
        for name in names:
            record = targets[name]["robustness"].get(case)
            if record is None:
                row.append("<span class='missing'>not run</span>")
                row_classes.append("")
                continue
            outcome = str(record.get("outcome", "fail"))
            survived = "survived" if record.get("survived") else "DID NOT SURVIVE"
            reason = record.get("deviation") or "; ".join(record.get("problems", []))
            title = f" title='{escape(str(reason))}'" if reason else ""
            row.append(f"<span{title}>{escape(outcome)} · {escape(str(record.get('status')))} · {survived}</span>")
            row_classes.append(outcome if outcome in OUTCOMES else "fail")
        rows.append(row)
        classes.append(row_classes)
    parts.append(_table(["case", *map(escape, names)], rows, classes))
    poisoned = {
        name: data["robustness_poisoned_load"] for name, data in targets.items() if "robustness_poisoned_load" in data
    }
    if poisoned:
        parts.append("<h3>Poisoned load (valid and corrupted requests at once)</h3>")
        parts.append(
            _table(
                ["target", "requests", "corrupted", "threads", "valid failed", "corrupted mis-answered", "survived"],
                [
                    [
                        escape(name),
                        str(record.get("requests", "-")),
                        str(record.get("corrupted", "-")),
                        str(record.get("threads", "-")),
                        str(record.get("valid_failed", "-")),
                        str(record.get("corrupted_misanswered", "-")),
                        "yes" if record.get("survived") else "no",
                    ]
                    for name, record in sorted(poisoned.items())
                ],
            )
        )
    return "\n".join(parts)
