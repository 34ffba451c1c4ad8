"""Where pytest-serving keeps build output between sessions (images' wheels, model exports, deployments)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """pytest-serving's cache: ``$PYTEST_SERVING_CACHE``, else ``~/.cache/pytest-serving``."""
    configured = os.environ.get("PYTEST_SERVING_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "pytest-serving"
