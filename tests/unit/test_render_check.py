"""The chart comparison of check-report: a chart a pixel off its fractional position still counts as
shown; one further off, or another picture in its place, does not."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pytest_serving.report.render_check import MAX_SHIFT_PX, _chart_problem

WIDTH, HEIGHT, LEFT, TOP = 300, 120, 40, 60


def thin_line_chart() -> Image.Image:
    chart = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(chart)
    for y in range(10, HEIGHT, 20):
        draw.line([(5, y), (WIDTH - 5, y + 7)], fill=(31, 119, 180), width=1)
    return chart


def page_with(chart: Image.Image, dx: int, dy: int) -> np.ndarray:
    page = Image.new("RGB", (WIDTH + 2 * LEFT, HEIGHT + 2 * TOP), "white")
    page.paste(chart, (LEFT + dx, TOP + dy))
    return np.asarray(page).astype(np.int16)


def source(chart: Image.Image) -> str:
    buffer = io.BytesIO()
    chart.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


PLACED = {"complete": True, "width": WIDTH, "left": LEFT, "top": TOP, "shown_width": WIDTH, "shown_height": HEIGHT}


@pytest.mark.parametrize(("dx", "dy"), [(0, 0), (0, 1), (-1, 0), (MAX_SHIFT_PX, -MAX_SHIFT_PX)])
def test_a_chart_snapped_a_pixel_or_two_from_its_position_is_shown(dx, dy):
    chart = thin_line_chart()
    assert _chart_problem(source(chart), PLACED, page_with(chart, dx, dy)) is None


def test_a_chart_further_off_or_another_picture_is_not():
    chart = thin_line_chart()
    assert "does not look like" in _chart_problem(source(chart), PLACED, page_with(chart, 0, 5))
    other = chart.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    assert "does not look like" in _chart_problem(source(chart), PLACED, page_with(other, 0, 0))
