"""Does report.html show every chart in a real browser? Headless Chromium answers, with a screenshot.

A report that is written but does not display (a truncated data URI, a chart
pushed off the page, a style that hides it) fails silently in CI artifacts.
This opens a copy of the page in headless Chromium twice: once with a probe
script appended that writes, for every ``<img>``, whether it decoded and where
it sits (read back through ``--dump-dom``); once to take a screenshot as tall
as the page. Each chart's region of the screenshot must then look like the
chart itself. The report stays free of scripts: only the copy is probed.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "apt-get install -y chromium"
WINDOW_WIDTH = 1400
# Chromium draws at most this many pixels tall in one screenshot.
MAX_SCREENSHOT_HEIGHT = 16384
BROWSER_TIMEOUT_S = 180
# A displayed chart may differ from its PNG by scaling and anti-aliasing, not by content: compared
# where the chart has ink (not near-white), the two must agree to this mean difference (of 255).
INK_BELOW = 230
MAX_INK_DIFFERENCE = 40.0
# The browser places an image at a fractional position and snaps it to whole pixels, up or down: the
# chart is compared at every shift up to this many pixels and the best one counts (a thin line one
# pixel off doubled the difference, 30 -> 40 of 255).
MAX_SHIFT_PX = 2
PROBE = """
<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images).map((image) => {
    const box = image.getBoundingClientRect();
    return {complete: image.complete, width: image.naturalWidth, left: box.left + scrollX, top: box.top + scrollY,
            shown_width: box.width, shown_height: box.height};
  });
  const probe = document.createElement('pre');
  probe.id = 'render-probe';
  probe.textContent = JSON.stringify({height: document.documentElement.scrollHeight, images});
  document.body.appendChild(probe);
});
</script>
"""
PROBE_RESULT = re.compile(r"<pre id=\"render-probe\">(.*?)</pre>", re.DOTALL)


class BrowserMissing(RuntimeError):
    """No headless Chromium on this machine."""


@dataclass
class RenderCheck:
    """What the browser showed: charts found in the HTML, charts seen on the screenshot, and every problem."""

    report: Path
    screenshot: Path
    charts: int = 0
    visible: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.charts > 0 and not self.problems


def find_browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(f"headless Chromium not found ({', '.join(BROWSERS)}): {INSTALL}")


def check_report(report: Path, screenshot: Path, browser: str | None = None) -> RenderCheck:
    """Open ``report`` in headless Chromium, save a full-page ``screenshot`` and check every chart shows."""
    browser = browser or find_browser()
    report, screenshot = report.resolve(), screenshot.resolve()  # Chromium opens file:// URIs
    html = report.read_text(encoding="utf-8")
    sources = image_sources(html)
    check = RenderCheck(report, screenshot, charts=len(sources))
    with tempfile.TemporaryDirectory(prefix="pytest-serving-render-") as scratch:
        probed = Path(scratch) / "probed.html"
        probed.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = _chromium(browser, Path(scratch), ["--dump-dom", "--virtual-time-budget=10000"], probed, 3000)
        found = PROBE_RESULT.search(dom.stdout)
        if found is None:
            check.problems.append(f"the page did not finish loading in Chromium: {dom.stderr[-1000:]}")
            return check
        layout = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
        height = min(int(layout["height"]), MAX_SCREENSHOT_HEIGHT)
        _chromium(browser, Path(scratch), [f"--screenshot={screenshot}"], report, height)
    if not screenshot.is_file():
        check.problems.append("Chromium wrote no screenshot")
        return check
    page = np.asarray(Image.open(screenshot).convert("RGB")).astype(np.int16)
    for number, (source, placed) in enumerate(zip(sources, layout["images"], strict=True), start=1):
        problem = _chart_problem(source, placed, page)
        if problem:
            check.problems.append(f"chart {number}: {problem}")
        else:
            check.visible += 1
    return check


def _chart_problem(source: str, placed: dict, page: np.ndarray) -> str | None:
    if not source.startswith("data:image/png;base64,"):
        return f"not an embedded PNG: {source[:60]!r}"
    if not placed["complete"] or placed["width"] == 0:
        return "the browser could not decode the image"
    left, top = round(placed["left"]), round(placed["top"])
    width, height = round(placed["shown_width"]), round(placed["shown_height"])
    if width < 100 or height < 50:
        return f"shown at {width}x{height} px only"
    if top + height > page.shape[0] or left + width > page.shape[1]:
        return f"below or beside the screenshot ({page.shape[1]}x{page.shape[0]} px) at {left},{top}"
    chart = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB")
    expected = np.asarray(chart.resize((width, height), Image.BILINEAR)).astype(np.int16)
    ink = (expected < INK_BELOW).any(axis=2)
    if not ink.any():
        return "the chart itself is blank"
    shifts = range(-MAX_SHIFT_PX, MAX_SHIFT_PX + 1)
    difference = min(
        float(np.abs(page[y : y + height, x : x + width] - expected)[ink].mean())
        for y in (top + dy for dy in shifts)
        for x in (left + dx for dx in shifts)
        if 0 <= y and y + height <= page.shape[0] and 0 <= x and x + width <= page.shape[1]
    )
    if difference > MAX_INK_DIFFERENCE:
        return f"its place on the page does not look like the chart (mean difference {difference:.0f}/255 on its ink)"
    return None


def _chromium(browser: str, scratch: Path, extra: list[str], page: Path, height: int) -> subprocess.CompletedProcess:
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        f"--user-data-dir={scratch / 'profile'}", f"--window-size={WINDOW_WIDTH},{height}", *extra, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)


class _ImageSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs).get("src") or "")


def image_sources(html: str) -> list[str]:
    """The src of every <img>, in page order."""
    parser = _ImageSources()
    parser.feed(html)
    return parser.sources
