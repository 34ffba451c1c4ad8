"""BentoML's HTTP API for a service whose API takes the image file as its root input.

``POST /classify/{model}`` carries the file as the whole body (BentoML reads a root-input
file from any body whose Content-Type is not a form) and answers the project's
``{"classes": [...], "probabilities": [...]}``. BentoML's errors are JSON with an
``error`` field; 1.4 wraps the ones its ``BentoMLException`` subclasses raise (400 for
``InvalidArgument``) in a one-element list.
"""

from __future__ import annotations

import json

from .base import HttpRequest, Prediction, Protocol, ProtocolError


class BentoMLProtocol(Protocol):
    """Image-in/top-5-out over a BentoML service API."""

    name = "bentoml-http"
    carries_image = True
    binary_body = True

    @property
    def infer_path(self) -> str:
        """``/classify/{model}``: the route of ``model_repo/bentoml/service.py``'s API, which names its model.

        BentoML has no model versions: a versioned path, ``/classify/{model}/{version}``, is a route it lacks.
        """
        return f"/classify/{self.model_name}" + (f"/{self.version}" if self.version else "")

    def encode(self, image: bytes) -> HttpRequest:
        return HttpRequest("POST", self.infer_path, image, {"Content-Type": "application/octet-stream"})

    def decode(self, status: int, body: bytes) -> Prediction:
        if status != 200:
            raise ProtocolError(f"{self.name}: HTTP {status}: {error_message(body)}")
        try:
            answer = json.loads(body)
            classes = tuple(int(c) for c in answer["classes"])
            probabilities = tuple(float(p) for p in answer["probabilities"])
        except (ValueError, KeyError, TypeError) as error:
            raise ProtocolError(f"{self.name}: response is not a top-5 prediction: {error}: {body[:300]!r}") from None
        if not classes or len(classes) != len(probabilities):
            raise ProtocolError(f"{self.name}: {len(classes)} classes but {len(probabilities)} probabilities")
        return Prediction(classes, probabilities)


def error_message(body: bytes) -> str:
    """The ``error`` text of a BentoML error body (bare or in a one-element list), else the body's start."""
    try:
        error = json.loads(body)
        if isinstance(error, list) and len(error) == 1:
            error = error[0]
        return str(error["error"])
    except (ValueError, KeyError, TypeError):
        return body[:500].decode("utf-8", "replace")
