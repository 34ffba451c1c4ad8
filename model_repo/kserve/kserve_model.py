"""KServe model server for any model card: the card's ONNX behind KServe's V1 and V2 REST APIs.

Run as ``python3 kserve_model.py --models NAME=FOLDER [NAME=FOLDER ...]`` (plus any
``kserve.ModelServer`` option), each FOLDER holding a card's ``model.onnx`` and ``serving_card.json``;
one server serves every model under its NAME (a release deployment: the current model and the candidate).
All are loaded before the server starts listening, so it is never ready with one model missing.
``serving_preprocess.py`` beside this file is a verbatim copy of ``pytest_serving/model/preprocess.py``,
so the server and the in-process reference decode, preprocess and infer with the same code.

V1 (``POST /v1/models/NAME:predict``, TF Serving's row format) takes ``instances`` that are
each either ``{"b64": "<base64 image file>"}`` or an already preprocessed input (the card's
layout, size and dtype), and answers ``{"predictions": [[the model's output row], ...]}`` as
TF Serving would (logits or probabilities, as the card says).

V2 (``POST /v2/models/NAME/infer``) takes ``IMAGE``: BYTES [N, 1] of image files, or the
bytes of one image file as UINT8 [1, n]. KServe's REST decoder turns binary BYTES tensors
into UTF-8 text before the model sees them, so an image file (never valid UTF-8) can only
travel over REST as UINT8; BYTES works over gRPC. The answer holds ``CLASSES`` INT64 [N, k]
and ``PROBABILITIES`` FP32 [N, k] (top-5, best first).

Requests that are not classifiable images get KServe's 400 with the reason. Inference runs
in a worker thread, so health probes are answered while a request is being computed.
``PYTEST_SERVING_INTRA_OP_THREADS`` sets onnxruntime's thread count (default: the CPUs this
process may use, at most 4).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import uuid

import numpy as np
import serving_preprocess
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.errors import InvalidInput

INPUT_NAME = "IMAGE"


class CardModel(Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.classifier = None

    def load(self) -> bool:
        self.classifier = serving_preprocess.Classifier(self.model_dir)
        self.ready = True
        return self.ready

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            return await asyncio.to_thread(self._infer_v2, payload)
        return await asyncio.to_thread(self._predict_v1, payload)

    def _predict_v1(self, payload: dict) -> dict:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise InvalidInput('expected {"instances": [...]} with at least one instance')
        spec = self.classifier.spec
        batch = np.stack([_v1_instance(spec, position, instance) for position, instance in enumerate(instances)])
        (outputs,) = self.classifier.session.run([spec["output"]["name"]], {spec["input"]["name"]: batch})
        return {"predictions": outputs.tolist()}

    def _infer_v2(self, request: InferRequest) -> InferResponse:
        image = request.get_input_by_name(INPUT_NAME)
        if image is None:
            names = [infer_input.name for infer_input in request.inputs]
            raise InvalidInput(f"missing input {INPUT_NAME} (got {names})")
        answers = self.classifier.classify(_image_files(image))
        for position, answer in enumerate(answers):
            if isinstance(answer, serving_preprocess.InvalidImage):
                raise InvalidInput(f"image {position}: {answer}")
            if isinstance(answer, Exception):
                raise answer  # a fault of ours: KServe answers 500 with its message
        classes = np.array([answer["classes"] for answer in answers], dtype=np.int64)
        top_probabilities = np.array([answer["probabilities"] for answer in answers], dtype=np.float32)
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


def _v1_instance(spec: dict, position: int, instance) -> np.ndarray:
    """One V1 instance as the model's input: a base64 image file, or an already preprocessed array."""
    if isinstance(instance, dict):
        if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
            expected = '{"b64": "<base64 image file>"}'
            raise InvalidInput(f"instances[{position}]: expected {expected}, got keys {sorted(instance)}")
        try:
            data = base64.b64decode(instance["b64"], validate=True)
        except binascii.Error as error:
            raise InvalidInput(f"instances[{position}]: invalid base64: {error}") from None
        try:
            return serving_preprocess.preprocess(data, spec)
        except serving_preprocess.InvalidImage as error:
            raise InvalidInput(f"image {position}: {error}") from None
    side = spec["input"]["size"]
    shape = (3, side, side) if spec["input"]["layout"] == "NCHW" else (side, side, 3)
    try:
        array = np.asarray(instance, dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"instances[{position}]: not a numeric array: {error}") from None
    if array.shape != shape:
        raise InvalidInput(f"instances[{position}]: expected shape {list(shape)}, got {list(array.shape)}")
    if not np.isfinite(array).all():
        raise InvalidInput(f"instances[{position}]: array holds NaN or infinity")
    return array.astype(spec["input"]["dtype"])


def named_folder(value: str) -> tuple[str, str]:
    """``NAME=FOLDER`` as (name, folder)."""
    name, separator, folder = value.partition("=")
    if not (name and separator and folder):
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER, got {value!r}")
    return name, folder


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    parser.add_argument(
        "--models",
        nargs="+",
        type=named_folder,
        required=True,
        help="NAME=FOLDER for each model to serve, FOLDER holding model.onnx and serving_card.json",
    )
    args, _ = parser.parse_known_args()
    names = [name for name, _ in args.models]
    if len(set(names)) != len(names):
        parser.error(f"--models: each NAME once, got {names}")
    models = [CardModel(name, folder) for name, folder in args.models]
    for model in models:
        model.load()
    ModelServer().start(models)


if __name__ == "__main__":
    main()
