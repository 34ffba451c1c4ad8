"""Value types shared across the package: requests, predictions, resource readings and options.

This module imports nothing of the package, so every other module may import it without
making a cycle (targets, protocols, metrics, load and model all speak these types). A ready server's
``Endpoint`` holds its protocol, so it lives with the protocols (``protocols.endpoint``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


class ProtocolError(Exception):
    """The server answered something that is not a valid prediction."""


@dataclass(frozen=True)
class HttpRequest:
    """One request, relative to an endpoint's base URL, ready to send by any HTTP client."""

    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def with_header(self, name: str, value: str) -> HttpRequest:
        """This request with one HTTP header set to ``value`` (robustness cases change one thing at a time)."""
        return dataclasses.replace(self, headers={**self.headers, name: value})


@dataclass(frozen=True)
class Prediction:
    """The top-k answer of a classifier, best first."""

    classes: tuple[int, ...]
    probabilities: tuple[float, ...]

    @property
    def top1(self) -> int:
        return self.classes[0]


@dataclass(frozen=True)
class ResourceSample:
    """One reading of a container: wall-clock time (epoch s), memory in use (MB, page cache excluded)
    and CPU used since the previous reading (cores)."""

    at: float
    memory_mb: float
    cpu: float


@dataclass(frozen=True)
class Option:
    """One plugin option: a command-line flag, a ``PYTEST_SERVING_*`` environment variable and an ini key.

    ``default`` is the option's only default (``settings`` applies it when nothing else is set).
    Targets declare their own options (``ServingTarget.extra_options``) with this type too.
    """

    name: str  # command-line name without the leading dashes
    help: str
    default: str | None = None
    flag: bool = False
    multiple: bool = False

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "PYTEST_" + self.dest.upper()
