"""Guard against pointing load at a machine nobody agreed to load."""

from __future__ import annotations

from urllib.parse import urlsplit

from pytest_serving.rawhttp import is_loopback_host


class UnsafeTargetError(ValueError):
    """Load was aimed at a host that is neither loopback nor started by the plugin."""


def check_load_target(url: str, started_by_plugin: bool, allow_remote: bool) -> None:
    """Raise UnsafeTargetError unless ``url`` is loopback, a server the plugin started, or remote load is allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTargetError(f"load target {url!r} is not an http(s) URL with a host")
    if started_by_plugin or allow_remote or is_loopback_host(parts.hostname):
        return
    raise UnsafeTargetError(
        f"refusing to send load to {parts.hostname!r} ({url}): it is not a loopback address and "
        "pytest-serving did not start it; allow remote load explicitly if you own that server"
    )
