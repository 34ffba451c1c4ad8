"""Shared types of every serving protocol."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..types import HttpRequest, Prediction, ProtocolError

__all__ = ["HttpRequest", "Prediction", "Protocol", "ProtocolError"]


class Protocol(ABC):
    """Encodes a JPEG for one server API and decodes its answer; no I/O."""

    name: str = "protocol"

    def __init__(self, model_name: str, version: str | None = None) -> None:
        self.model_name = model_name
        self.version = version

    def model_path(self, api: str) -> str:
        """``/{api}/models/{model}[/versions/{version}]``: the model's path in the V1 and V2 REST APIs."""
        versioned = f"/versions/{self.version}" if self.version else ""
        return f"/{api}/models/{self.model_name}{versioned}"

    @abstractmethod
    def encode(self, image: bytes) -> HttpRequest:
        """The request that asks the server to classify ``image`` (encoded file bytes)."""

    @abstractmethod
    def decode(self, status: int, body: bytes) -> Prediction:
        """The prediction in a response; raises ProtocolError when it holds none."""

    def raise_for_status(self, status: int, body: bytes) -> None:
        if status != 200:
            text = body[:500].decode("utf-8", "replace")
            raise ProtocolError(f"{self.name}: HTTP {status}: {text}")
