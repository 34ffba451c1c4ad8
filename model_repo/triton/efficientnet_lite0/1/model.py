"""Triton python backend for EfficientNet-Lite0: encoded image bytes in, top-5 classes out.

Decoding and preprocessing come from ``serving_preprocess.py`` beside this file, a verbatim
copy of ``pytest_serving/model/preprocess.py``, so the server and the in-process reference
run the same code. Each request of a dynamic batch is decoded on its own: a request whose
bytes are not a usable image gets an INVALID_ARG error (HTTP 400) and the other requests
of the batch are still answered.

``PYTEST_SERVING_INTRA_OP_THREADS`` sets onnxruntime's thread count (default: the CPUs
this process may use, at most 4), so one model instance does not oversubscribe the host.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime
import serving_preprocess
import triton_python_backend_utils as pb_utils

TOP_K = 5
MAX_DEFAULT_THREADS = 4


class InvalidInput(ValueError):
    """The request's IMAGE tensor cannot be classified; its message is sent to the client."""


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model_file = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = _intra_op_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        valid: list[tuple[int, np.ndarray]] = []
        for index, request in enumerate(requests):
            try:
                valid.append((index, _images(request)))
            except InvalidInput as error:
                responses[index] = _error(str(error), pb_utils.TritonError.INVALID_ARG)
            except Exception as error:  # noqa: BLE001 - a fault of ours on one input must not fail its batch mates.
                responses[index] = _error(
                    f"cannot preprocess IMAGE: {type(error).__name__}: {error}", pb_utils.TritonError.INTERNAL
                )
        if valid:
            batch = np.concatenate([images for _, images in valid])
            (logits,) = self.session.run(None, {self.input_name: batch})
            classes, probabilities = serving_preprocess.top_k(serving_preprocess.softmax(logits), TOP_K)
            start = 0
            for index, images in valid:
                rows = slice(start, start + len(images))
                start += len(images)
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("CLASSES", classes[rows].astype(np.int64)),
                        pb_utils.Tensor("PROBABILITIES", probabilities[rows].astype(np.float32)),
                    ]
                )
        return responses


def _images(request) -> np.ndarray:
    """The request's images as one preprocessed batch [n, 3, 224, 224], or InvalidInput."""
    tensor = pb_utils.get_input_tensor_by_name(request, "IMAGE")
    if tensor is None:
        raise InvalidInput("missing input IMAGE")
    items = tensor.as_numpy()
    if items.dtype != np.object_ or items.ndim != 2 or items.shape[1] != 1 or items.shape[0] == 0:
        raise InvalidInput(
            f"IMAGE must be BYTES of shape [batch, 1] holding image files, got {items.dtype} {list(items.shape)}"
        )
    batch = []
    for position, item in enumerate(items[:, 0]):
        if not isinstance(item, bytes):
            raise InvalidInput(f"IMAGE[{position}] is {type(item).__name__}, expected the bytes of an image file")
        try:
            batch.append(serving_preprocess.preprocess(item))
        except serving_preprocess.InvalidImage as error:
            raise InvalidInput(f"IMAGE[{position}]: {error}") from None
    return np.stack(batch)


def _error(message: str, code: int):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def _intra_op_threads() -> int:
    configured = os.environ.get("PYTEST_SERVING_INTRA_OP_THREADS")
    if configured:
        return int(configured)
    return min(MAX_DEFAULT_THREADS, len(os.sched_getaffinity(0)))
