"""TorchServe handler for the project's classifiers: encoded image bytes in, top-5 JSON out.

A prediction is ``{"classes": [5 ImageNet indices], "probabilities": [5 floats]}``, best
first. Decoding and preprocessing come from ``serving_preprocess.py`` (packed beside this
file in the .mar), a verbatim copy of ``pytest_serving/model/preprocess.py``, so the server
and the in-process reference run the same code.

TorchServe fails every request of a batch when the handler raises, so each request is
decoded on its own: one that is not a usable image gets its own HTTP 400, with a body shaped
like TorchServe's own errors (``{"code", "type", "message"}``), and the rest of the batch is
still answered. config.properties sets ``decode_input_request=false``, so bodies arrive as
bytes whatever their Content-Type.
"""

from __future__ import annotations

import json
import os
from http import HTTPStatus

import numpy as np
import serving_preprocess
import torch

TOP_K = 5
JSON = "application/json"


class ImageClassifierHandler:
    """TorchServe calls ``initialize`` once per worker, then ``handle`` with each batch."""

    def initialize(self, context) -> None:
        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        use_gpu = torch.cuda.is_available() and gpu_id is not None
        self.device = torch.device(f"cuda:{gpu_id}" if use_gpu else "cpu")
        serialized = os.path.join(properties["model_dir"], context.manifest["model"]["serializedFile"])
        self.model = torch.jit.load(serialized, map_location=self.device).eval()
        # TorchScript optimises on its first runs (seconds); do it before the worker reports READY.
        size = serving_preprocess.CROP_SIZE
        with torch.inference_mode():
            self.model(torch.zeros(1, 3, size, size, device=self.device))

    def handle(self, data: list[dict], context) -> list[str]:
        responses: list[str | None] = [None] * len(data)
        valid: list[tuple[int, np.ndarray]] = []
        for index, request in enumerate(data):
            try:
                valid.append((index, serving_preprocess.preprocess(_image_bytes(request))))
            except serving_preprocess.InvalidImage as error:
                responses[index] = _error(context, index, 400, "InvalidImage", str(error))
            except Exception as error:  # noqa: BLE001 - a fault of ours on one input must not fail its batch mates.
                message = f"cannot preprocess the image: {type(error).__name__}: {error}"
                responses[index] = _error(context, index, 500, "InternalServerException", message)
        if valid:
            batch = torch.from_numpy(np.stack([tensor for _, tensor in valid])).to(self.device)
            with torch.inference_mode():
                logits = self.model(batch).float().cpu().numpy()
            classes, probabilities = serving_preprocess.top_k(serving_preprocess.softmax(logits), TOP_K)
            for row, (index, _) in enumerate(valid):
                context.set_response_content_type(index, JSON)
                responses[index] = json.dumps(
                    {"classes": classes[row].tolist(), "probabilities": probabilities[row].tolist()}
                )
        return responses


def _image_bytes(request: dict) -> bytes:
    """The image file of one request: the raw body, or the ``data`` field of a multipart form."""
    image = request.get("data", request.get("body"))
    if not isinstance(image, (bytes, bytearray)):
        raise serving_preprocess.InvalidImage(
            f"expected the image file as the request body, got {type(image).__name__}"
        )
    return bytes(image)


def _error(context, index: int, code: int, kind: str, message: str) -> str:
    # The standard reason phrase: the message, which may hold anything, goes in the body.
    context.set_response_status(code, HTTPStatus(code).phrase, idx=index)
    context.set_response_content_type(index, JSON)
    return json.dumps({"code": code, "type": kind, "message": message})
