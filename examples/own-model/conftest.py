"""This project's own release checks, next to pytest-serving's built-in suites.

pytest-serving is loaded by its entry point once installed; nothing here configures it. The
model card, the labelled images and the targets come from the command line (README.md), so the
same tests gate any release of the model.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def release_labels(serving_settings) -> tuple[str, ...]:
    """The labels of the card under test, in the model's output order."""
    return serving_settings.card.labels
