"""KServe model server for EfficientNet-Lite0: the TF SavedModel behind KServe's V1 and V2 REST APIs.

Run as ``python3 kserve_model.py --model_name NAME --model_dir SAVED_MODEL`` (plus any
``kserve.ModelServer`` option). Decoding and preprocessing come from ``serving_preprocess.py``
beside this file, a verbatim copy of ``pytest_serving/model/preprocess.py``, so the server
and the in-process reference run the same code. The SavedModel's ``serving_default``
signature maps ``input`` [N, 3, 224, 224] float32 to ``logits`` [N, 1000].

V1 (``POST /v1/models/NAME:predict``, TF Serving's row format) takes ``instances`` that are
each either ``{"b64": "<base64 image file>"}`` or an already preprocessed [3, 224, 224]
array, and answers ``{"predictions": [[1000 logits], ...]}`` like TF Serving would.

V2 (``POST /v2/models/NAME/infer``) takes ``IMAGE``: BYTES [N, 1] of image files, or the
bytes of one image file as UINT8 [1, n]. KServe's REST decoder turns binary BYTES tensors
into UTF-8 text before the model sees them, so an image file (never valid UTF-8) can only
travel over REST as UINT8; BYTES works over gRPC. The answer holds ``CLASSES`` INT64 [N, 5]
and ``PROBABILITIES`` FP32 [N, 5].

Requests that are not classifiable images get KServe's 400 with the reason. Inference runs
in a worker thread, so health probes are answered while a request is being computed.
``PYTEST_SERVING_INTRA_OP_THREADS`` sets TensorFlow's thread count (default: the CPUs this
process may use, at most 4).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import os
import uuid

import numpy as np
import serving_preprocess
import tensorflow as tf
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.errors import InvalidInput

INPUT_NAME = "IMAGE"
TOP_K = 5
MAX_DEFAULT_THREADS = 4
SIGNATURE = "serving_default"
INPUT_SHAPE = (3, serving_preprocess.CROP_SIZE, serving_preprocess.CROP_SIZE)


class EfficientNetLite0(Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.signature = None

    def load(self) -> bool:
        threads = _intra_op_threads()
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.signature = tf.saved_model.load(self.model_dir).signatures[SIGNATURE]
        self.ready = True
        return self.ready

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            return await asyncio.to_thread(self._infer_v2, payload)
        return await asyncio.to_thread(self._predict_v1, payload)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.signature(input=tf.constant(batch))["logits"].numpy()

    def _predict_v1(self, payload: dict) -> dict:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise InvalidInput('expected {"instances": [...]} with at least one instance')
        batch = np.stack([_v1_instance(position, instance) for position, instance in enumerate(instances)])
        return {"predictions": self.logits(batch).tolist()}

    def _infer_v2(self, request: InferRequest) -> InferResponse:
        image = request.get_input_by_name(INPUT_NAME)
        if image is None:
            names = [infer_input.name for infer_input in request.inputs]
            raise InvalidInput(f"missing input {INPUT_NAME} (got {names})")
        batch = np.stack([_preprocess(position, data) for position, data in enumerate(_image_files(image))])
        probabilities = serving_preprocess.softmax(self.logits(batch))
        classes, top_probabilities = serving_preprocess.top_k(probabilities, TOP_K)
        outputs = [
            InferOutput("CLASSES", list(classes.shape), "INT64", classes.astype(np.int64)),
            InferOutput("PROBABILITIES", list(top_probabilities.shape), "FP32", top_probabilities.astype(np.float32)),
        ]
        return InferResponse(
            # The response model requires an id; requests need not carry one.
            response_id=request.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )


def _image_files(image) -> list[bytes]:
    """The encoded image files an IMAGE input carries, or InvalidInput saying what it should be."""
    shape = list(image.shape)
    if image.datatype == "UINT8" and len(shape) == 2 and shape[0] == 1:
        return [_tensor(image).astype(np.uint8).tobytes()]
    if image.datatype == "BYTES" and len(shape) == 2 and shape[1] == 1 and shape[0] > 0:
        return [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in _tensor(image)[:, 0]]
    raise InvalidInput(
        f"{INPUT_NAME} must be BYTES [batch, 1] of image files, or UINT8 [1, n] holding one image file; "
        f"got {image.datatype} {shape}"
    )


def _tensor(image) -> np.ndarray:
    """The input's data in its declared shape; JSON data can disagree with the shape it declares."""
    try:
        return image.as_numpy()
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInput(f"{INPUT_NAME}: data does not fit shape {list(image.shape)}: {error}") from None


def _v1_instance(position: int, instance) -> np.ndarray:
    """One V1 instance as the model's input [3, 224, 224]: a base64 image file or a preprocessed array."""
    if isinstance(instance, dict):
        if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
            expected = '{"b64": "<base64 image file>"}'
            raise InvalidInput(f"instances[{position}]: expected {expected}, got keys {sorted(instance)}")
        try:
            data = base64.b64decode(instance["b64"], validate=True)
        except binascii.Error as error:
            raise InvalidInput(f"instances[{position}]: invalid base64: {error}") from None
        return _preprocess(position, data)
    try:
        array = np.asarray(instance, dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"instances[{position}]: not a numeric array: {error}") from None
    if array.shape != INPUT_SHAPE:
        raise InvalidInput(f"instances[{position}]: expected shape {list(INPUT_SHAPE)}, got {list(array.shape)}")
    if not np.isfinite(array).all():
        raise InvalidInput(f"instances[{position}]: array holds NaN or infinity")
    return array


def _preprocess(position: int, data: bytes) -> np.ndarray:
    try:
        return serving_preprocess.preprocess(data)
    except serving_preprocess.InvalidImage as error:
        raise InvalidInput(f"image {position}: {error}") from None


def _intra_op_threads() -> int:
    configured = os.environ.get("PYTEST_SERVING_INTRA_OP_THREADS")
    if configured:
        return int(configured)
    return min(MAX_DEFAULT_THREADS, len(os.sched_getaffinity(0)))


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    parser.add_argument("--model_dir", required=True, help="the SavedModel folder")
    args, _ = parser.parse_known_args()
    model = EfficientNetLite0(args.model_name, args.model_dir)
    model.load()
    ModelServer().start([model])


if __name__ == "__main__":
    main()
