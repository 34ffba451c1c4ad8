"""The one atomic write and the one atomic build: readers (servers loading a model, a person opening results.json)
never see half a file or half a folder."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

#: Servers in containers often run as a non-root user; mkstemp's files are owner-only.
SHARED_MODE = 0o644
SHARED_FOLDER_MODE = 0o755


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


def build_atomically(
    dest: Path, build: Callable[[Path], Path], *, done: Callable[[Path], bool] = lambda _: False
) -> Path:
    """Build ``dest`` (a file or a folder) in a scratch folder beside it, then rename it into place.

    ``build`` gets the empty scratch folder and returns what it built inside it; that is made world-readable
    at its top and renamed to ``dest``. An existing ``dest`` folder that ``done`` does not accept (an outdated
    build) is moved into the scratch folder first and removed with it; when the rename fails because a
    concurrent writer put a ``dest`` there that ``done`` accepts, theirs is kept.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".tmp-", suffix=f"-{dest.name}") as scratch:
        built = build(Path(scratch))
        built.chmod(SHARED_FOLDER_MODE if built.is_dir() else SHARED_MODE)
        if dest.is_dir() and not done(dest):
            with contextlib.suppress(FileNotFoundError):  # another writer moved it first
                os.replace(dest, Path(scratch) / ".retired")
        try:
            os.replace(built, dest)
        except OSError:
            if not done(dest):
                raise
    return dest
