"""Release: --serving-candidate against the current model, side by side on the same server."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.serving, pytest.mark.serving_release]


def test_release(serving_release):
    """Accuracy, agreement and speed of the candidate against the current model; fails on a fail verdict."""
    serving_release()
