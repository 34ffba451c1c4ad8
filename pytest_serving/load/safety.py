"""Guard against pointing load at a machine nobody agreed to load."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


class UnsafeTargetError(ValueError):
    """Load was aimed at a host that is neither loopback nor started by the plugin."""


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (127.0.0.0/8, ::1, IPv4-mapped loopback); no DNS lookup."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


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
