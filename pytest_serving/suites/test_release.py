"""Release: --serving-candidate against the current model, side by side on the same server."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.serving, pytest.mark.serving_release]


def test_release(serving_release):
    record = serving_release()
    assert record.latency["p95"]["windows"] >= 5, "the latency verdict rests on fewer than 5 windows per version"
