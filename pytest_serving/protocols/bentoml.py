"""BentoML's HTTP API for a service whose API takes the image file as its root input.

``POST /classify/{model}`` carries the file as the whole body (BentoML reads a root-input
file from any body whose Content-Type is not a form) and answers the project's
``{"classes": [...], "probabilities": [...]}``. BentoML's errors are JSON with an
``error`` field; 1.4 wraps the ones its ``BentoMLException`` subclasses raise (400 for
``InvalidArgument``) in a one-element list.
"""

from __future__ import annotations

import json

from .image_file import ImageFileProtocol


class BentoMLProtocol(ImageFileProtocol):
    """Image-in/top-5-out over a BentoML service API: ``/classify/{model}``, the route of
    ``model_repo/bentoml/service.py``'s API, which names its model. BentoML has no model versions:
    a versioned path, ``/classify/{model}/{version}``, is a route it lacks."""

    name = "bentoml-http"
    route = "classify"

    def error_text(self, body: bytes) -> str:
        return error_message(body)


def error_message(body: bytes) -> str:
    """The ``error`` text of a BentoML error body (bare or in a one-element list), else the body's start."""
    try:
        error = json.loads(body)
        if isinstance(error, list) and len(error) == 1:
            error = error[0]
        return str(error["error"])
    except (ValueError, KeyError, TypeError):
        return body[:500].decode("utf-8", "replace")
