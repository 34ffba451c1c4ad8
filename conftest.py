"""Configuration for this repository's own tests (the plugin itself is loaded by its entry point)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: ImageNet samples shared beside the checkout (never copied into the repository).
SHARED_SAMPLES = (
    Path(os.environ.get("PYTEST_SERVING_SHARED", Path(__file__).parent.parent / "shared")) / "imagenet-samples"
)


@pytest.fixture(scope="session")
def shared_samples() -> Path:
    """The shared ImageNet sample folder; skips (fails under PYTEST_SERVING_STRICT) when it is missing."""
    if not SHARED_SAMPLES.is_dir():
        reason = f"shared ImageNet samples not found at {SHARED_SAMPLES} (set PYTEST_SERVING_SHARED)"
        if os.environ.get("PYTEST_SERVING_STRICT"):
            pytest.fail(reason)
        pytest.skip(reason)
    return SHARED_SAMPLES


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs real processes (Locust workers, servers); slower than unit tests"
    )
