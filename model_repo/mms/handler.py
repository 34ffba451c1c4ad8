"""Multi Model Server handler for any model card: encoded image bytes in, top-5 JSON out.

A prediction is ``{"classes": [top-5 class indices], "probabilities": [5 floats]}``, best first.
Decoding, preprocessing and the ONNX run come from ``serving_preprocess.py`` (packed beside this
file in the .mar with ``serving_card.json`` and ``model.onnx``), a verbatim copy of
``pytest_serving/model/preprocess.py``, so the server and the in-process reference run the same
code; the image has neither torch nor MXNet.

MMS 1.1 imports this module and, finding a ``handle`` function, calls ``handle(None, context)``
once when a worker loads the model, then ``handle(batch, context)`` with each batch. (A class
would have to be the module's only one, and MMS logs and ignores its ``initialize`` errors.)
MMS fails every request of a batch when the handler raises, so each image is judged on its own:
one that is not a usable image gets its own HTTP 400 through ``context.set_response_status``,
with a body shaped like MMS's own errors (``{"code", "type", "message"}``). config.properties
sets ``decode_input_request=false``, so bodies arrive as bytes whatever their Content-Type.
"""

from __future__ import annotations

import json
from http import HTTPStatus

import serving_preprocess

JSON = "application/json"

_classifier: serving_preprocess.Classifier | None = None


def handle(data: list[dict] | None, context) -> list[str] | None:
    """MMS's entry point: ``data`` None loads the model, else one answer per request of the batch."""
    global _classifier
    if data is None:
        _classifier = serving_preprocess.Classifier(context.system_properties["model_dir"])
        return None
    files: list[bytes | None] = []
    for request in data:
        image = request.get("data", request.get("body"))
        files.append(bytes(image) if isinstance(image, (bytes, bytearray)) else None)
    answers = _classifier.classify([file or b"" for file in files])
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
            responses.append(json.dumps(answer))
    return responses


def _error(context, index: int, code: int, kind: str, message: str) -> str:
    # The standard reason phrase: the message, which may hold anything, goes in the body.
    context.set_response_status(code, HTTPStatus(code).phrase, idx=index)
    context.set_response_content_type(index, JSON)
    return json.dumps({"code": code, "type": kind, "message": message})
