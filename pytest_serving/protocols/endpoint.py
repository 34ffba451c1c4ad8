"""A ready server and how to talk to it; above ``protocols.base`` because it holds a protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .base import Protocol


@dataclass(frozen=True)
class Endpoint:
    """A ready server: one base URL per port role (``http``, ``grpc``, ``metrics``…), and how to talk to it."""

    target: str
    urls: dict[str, str]
    image: str
    started_by_plugin: bool
    model_name: str = ""
    protocol: Protocol | None = None
    server_version: str = "unknown"
    headers: dict[str, str] = field(default_factory=dict)
    #: Reads a file inside the server's container (keys servers write at start); None when the
    #: plugin did not start the server.
    read_file: Callable[[str], bytes] | None = None

    @property
    def base_url(self) -> str:
        return self.urls["http"]
