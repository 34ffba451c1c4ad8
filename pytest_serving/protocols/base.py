"""Shared types of every serving protocol."""

from __future__ import annotations

import base64
import copy
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import ClassVar

from ..types import HttpRequest, Prediction, ProtocolError

#: Turns the valid image into one malformed JSON body (a dict to serialise, or raw bytes sent as they are).
JsonMistake = Callable[[bytes], "dict | bytes"]
#: Turns the valid image into one request whose binary framing lies.
FramingMistake = Callable[[bytes], HttpRequest]

__all__ = ["FramingMistake", "HttpRequest", "JsonMistake", "Prediction", "Protocol", "ProtocolError", "base64_text"]


class Protocol(ABC):
    """Encodes a JPEG for one server API and decodes its answer; no I/O.

    A protocol also builds the requests the robustness catalogue sends, so that the catalogue
    asks the protocol instead of switching on its name: a valid request for another model or
    version (``for_model``), a request with a given JSON body (``json_request``), the malformed
    JSON bodies and binary framings its wire format allows (``json_mistakes``,
    ``framing_mistakes``). A new protocol states these facts on its class.
    """

    #: The protocol family, named in skips and messages: protocols of one family share paths and bodies.
    name: ClassVar[str] = "protocol"
    #: The request carries the image file's own bytes (not a tensor the client made from it), so the
    #: robustness catalogue's cases and the poisoned load apply.
    carries_image: ClassVar[bool] = False
    #: The body is binary (the file, or a binary tensor holding it), so its Content-Type describes bytes.
    binary_body: ClassVar[bool] = False
    #: The key of a JSON request's inputs ("inputs", "instances"); None when requests are not JSON.
    json_inputs_key: ClassVar[str | None] = None

    def __init__(self, model_name: str, version: str | None = None) -> None:
        self.model_name = model_name
        self.version = version

    def model_path(self, api: str) -> str:
        """``/{api}/models/{model}[/versions/{version}]``: the model's path in the V1 and V2 REST APIs."""
        versioned = f"/versions/{self.version}" if self.version else ""
        return f"/{api}/models/{self.model_name}{versioned}"

    @property
    @abstractmethod
    def infer_path(self) -> str:
        """The path ``encode`` sends to, for this model and version."""

    def for_model(self, model_name: str | None = None, version: str | None = None) -> Protocol:
        """This protocol addressing another model, or one version of the model (the server may lack either)."""
        other = copy.copy(self)
        other.model_name = self.model_name if model_name is None else model_name
        other.version = self.version if version is None else version
        return other

    def json_request(self, body: dict | bytes) -> HttpRequest:
        """POST ``body`` to ``infer_path`` as JSON the way Python clients write it (NaN and Infinity as
        bare tokens); bytes go as they are."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return HttpRequest("POST", self.infer_path, data, {"Content-Type": "application/json"})

    def json_body(self, image: bytes) -> dict | None:
        """The well-formed JSON request body carrying ``image``; None when requests are not JSON."""
        return None

    def json_mistakes(self) -> Mapping[str, JsonMistake]:
        """Malformed JSON bodies this wire format allows, by robustness case name; empty for non-JSON protocols."""
        return {}

    def framing_mistakes(self) -> Mapping[str, FramingMistake]:
        """Requests whose binary framing lies (declared lengths, headers), by robustness case name;
        empty for protocols without such framing."""
        return {}

    @abstractmethod
    def encode(self, image: bytes) -> HttpRequest:
        """The request that asks the server to classify ``image`` (encoded file bytes)."""

    @abstractmethod
    def decode(self, status: int, body: bytes) -> Prediction:
        """The prediction in a response; raises ProtocolError when it holds none."""

    def raise_for_status(self, status: int, body: bytes) -> None:
        if status != 200:
            raise ProtocolError(f"{self.name}: HTTP {status}: {self.error_text(body)}")

    def error_text(self, body: bytes) -> str:
        """What an error answer says; a protocol whose servers shape their errors reads that shape."""
        return body[:500].decode("utf-8", "replace")


def base64_text(data: bytes) -> str:
    """Base64 as JSON-based protocols carry binary data."""
    return base64.b64encode(data).decode("ascii")
