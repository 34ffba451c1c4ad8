"""The one atomic write: readers (servers loading a model, a person opening results.json) never see half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

#: Servers in containers often run as a non-root user; mkstemp's files are owner-only.
SHARED_MODE = 0o644


def write_atomically(dest: Path, write: Callable[[Path], None], *, fsync: bool = False) -> None:
    """Run ``write`` on a temporary file beside ``dest`` (world-readable), then rename it over ``dest``.

    The temporary name starts with ``.tmp-`` and ends like ``dest``, so ignore patterns for
    ``dest`` also cover it. ``fsync`` flushes it to disk first (results that must survive a crash).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=f"-{dest.name}")
    os.close(descriptor)
    try:
        write(Path(temporary))
        if fsync:
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(temporary, SHARED_MODE)
        os.replace(temporary, dest)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
