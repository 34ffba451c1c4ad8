"""TorchServe handler for any model card: encoded image bytes in, top-5 JSON out.

A prediction is ``{"classes": [top-5 class indices], "probabilities": [5 floats], "model_version": "..."}``,
best first. Decoding, preprocessing and the ONNX run come from ``serving_preprocess.py``
(packed beside this file in the .mar with ``serving_card.json`` and ``model.onnx``), a verbatim
copy of ``pytest_serving/model/preprocess.py``, so the server and the in-process reference run
the same code. ``model_version`` is the archive's version, so a client can tell which version of
a model answered while the server switches between them.

TorchServe fails every request of a batch when the handler raises, so each image is judged on
its own: one that is not a usable image gets its own HTTP 400, with a body shaped like
TorchServe's own errors (``{"code", "type", "message"}``), and the rest of the batch is still
answered. config.properties sets ``decode_input_request=false``, so bodies arrive as bytes
whatever their Content-Type.
"""

from __future__ import annotations

import json
from http import HTTPStatus

import serving_preprocess

JSON = "application/json"


class ImageClassifierHandler:
    """TorchServe calls ``initialize`` once per worker, then ``handle`` with each batch."""

    def initialize(self, context) -> None:
        self.classifier = serving_preprocess.Classifier(context.system_properties["model_dir"])
        self.version = str(context.manifest["model"].get("modelVersion", ""))

    def handle(self, data: list[dict], context) -> list[str]:
        files: list[bytes | None] = []
        for request in data:
            image = request.get("data", request.get("body"))
            files.append(bytes(image) if isinstance(image, (bytes, bytearray)) else None)
        answers = self.classifier.classify([file or b"" for file in files])
        responses = []
        for index, (file, answer) in enumerate(zip(files, answers)):
            if file is None:
                message = f"expected the image file as the request body, got {type(data[index].get('body')).__name__}"
                responses.append(_error(context, index, 400, "InvalidImage", message))
            elif isinstance(answer, serving_preprocess.InvalidImage):
                responses.append(_error(context, index, 400, "InvalidImage", str(answer)))
            elif isinstance(answer, Exception):
                message = f"cannot classify the image: {type(answer).__name__}: {answer}"
                responses.append(_error(context, index, 500, "InternalServerException", message))
            else:
                context.set_response_content_type(index, JSON)
                responses.append(json.dumps({**answer, "model_version": self.version}))
        return responses


def _error(context, index: int, code: int, kind: str, message: str) -> str:
    # The standard reason phrase: the message, which may hold anything, goes in the body.
    context.set_response_status(code, HTTPStatus(code).phrase, idx=index)
    context.set_response_content_type(index, JSON)
    return json.dumps({"code": code, "type": kind, "message": message})
