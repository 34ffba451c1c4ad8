"""The image file as the whole request body, the project's top-5 JSON back.

The handlers this project deploys on TorchServe, MMS and BentoML take the file's bytes as the
body and answer ``{"classes": [...], "probabilities": [...]}`` (top-5, best first); only the
route and the shape of the servers' own errors differ.
"""

from __future__ import annotations

import json
from typing import ClassVar

from .base import HttpRequest, Prediction, Protocol, ProtocolError


class ImageFileProtocol(Protocol):
    """File in, top-5 JSON out, at ``/{route}/{model}[/{version}]``."""

    carries_image = True
    binary_body = True
    #: The first segment of the server's inference path.
    route: ClassVar[str]

    @property
    def infer_path(self) -> str:
        return f"/{self.route}/{self.model_name}" + (f"/{self.version}" if self.version else "")

    def encode(self, image: bytes) -> HttpRequest:
        # octet-stream, not image/jpeg: the handler decodes whatever Pillow reads.
        return HttpRequest("POST", self.infer_path, image, {"Content-Type": "application/octet-stream"})

    def decode(self, status: int, body: bytes) -> Prediction:
        self.raise_for_status(status, body)
        try:
            answer = json.loads(body)
            classes = tuple(int(c) for c in answer["classes"])
            probabilities = tuple(float(p) for p in answer["probabilities"])
        except (ValueError, KeyError, TypeError) as error:
            raise ProtocolError(f"{self.name}: response is not a top-5 prediction: {error}: {body[:300]!r}") from None
        if not classes or len(classes) != len(probabilities):
            raise ProtocolError(f"{self.name}: {len(classes)} classes but {len(probabilities)} probabilities")
        return Prediction(classes, probabilities)
