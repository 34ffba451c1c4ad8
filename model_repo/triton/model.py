"""Triton python backend for any model card: encoded image bytes in, top-5 classes out.

Decoding, preprocessing and the ONNX run come from ``serving_preprocess.py`` beside this file,
a verbatim copy of ``pytest_serving/model/preprocess.py``, parameterised by ``serving_card.json``,
so the server and the in-process reference run the same code. The images of all requests in
a dynamic batch go through the model together; a request whose bytes are not a usable image
gets an INVALID_ARG error (HTTP 400) and the other requests of the batch are still answered.

``PYTEST_SERVING_INTRA_OP_THREADS`` sets onnxruntime's thread count (default: the CPUs this
process may use, at most 4), so one model instance does not oversubscribe the host.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import serving_preprocess
import triton_python_backend_utils as pb_utils


class InvalidInput(ValueError):
    """The request's IMAGE tensor cannot be classified; its message is sent to the client."""


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.classifier = serving_preprocess.Classifier(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        files: list[tuple[int, list[bytes]]] = []
        for index, request in enumerate(requests):
            try:
                files.append((index, _image_files(request)))
            except InvalidInput as error:
                responses[index] = _error(str(error), pb_utils.TritonError.INVALID_ARG)
        results = iter(self.classifier.classify([data for _, images in files for data in images]))
        for index, images in files:
            answers = [next(results) for _ in images]
            failed = [(position, answer) for position, answer in enumerate(answers) if isinstance(answer, Exception)]
            if failed:
                position, error = failed[0]
                if isinstance(error, serving_preprocess.InvalidImage):
                    responses[index] = _error(f"IMAGE[{position}]: {error}", pb_utils.TritonError.INVALID_ARG)
                else:
                    message = f"cannot classify IMAGE[{position}]: {type(error).__name__}: {error}"
                    responses[index] = _error(message, pb_utils.TritonError.INTERNAL)
                continue
            responses[index] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("CLASSES", np.array([a["classes"] for a in answers], dtype=np.int64)),
                    pb_utils.Tensor("PROBABILITIES", np.array([a["probabilities"] for a in answers], dtype=np.float32)),
                ]
            )
        return responses


def _image_files(request) -> list[bytes]:
    """The encoded image files of the request's IMAGE tensor, or InvalidInput."""
    tensor = pb_utils.get_input_tensor_by_name(request, "IMAGE")
    if tensor is None:
        raise InvalidInput("missing input IMAGE")
    items = tensor.as_numpy()
    if items.dtype != np.object_ or items.ndim != 2 or items.shape[1] != 1 or items.shape[0] == 0:
        raise InvalidInput(
            f"IMAGE must be BYTES of shape [batch, 1] holding image files, got {items.dtype} {list(items.shape)}"
        )
    for position, item in enumerate(items[:, 0]):
        if not isinstance(item, bytes):
            raise InvalidInput(f"IMAGE[{position}] is {type(item).__name__}, expected the bytes of an image file")
    return list(items[:, 0])


def _error(message: str, code: int):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
