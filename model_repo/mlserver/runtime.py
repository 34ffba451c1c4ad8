"""MLServer custom runtime for any model card: image files in, top-5 classes out, over V2.

``mlserver start /models`` finds ``<model>/model-settings.json`` in the deployment, whose
``implementation`` is ``runtime.ImageClassifier`` (this file, at the deployment's top, where
``PYTHONPATH`` points, beside ``serving_preprocess.py``: a verbatim copy of
``pytest_serving/model/preprocess.py``, so the server and the in-process reference decode,
preprocess and infer with the same code). ``<model>/`` holds the card's files.

MLServer's REST API reads V2 requests as JSON only (no binary-data extension), so the input
``IMAGE`` is BYTES [N, 1] whose elements are image files in base64 with the input parameter
``content_type: "base64"`` (MLServer's Base64Codec decodes them). The answer holds
``CLASSES`` INT64 [N, 5] and ``PROBABILITIES`` FP32 [N, 5]. Requests that are not
classifiable images get MLServer's 400 with the reason. ``PYTEST_SERVING_INTRA_OP_THREADS``
sets onnxruntime's threads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import serving_preprocess
from mlserver import MLModel
from mlserver.codecs import Base64Codec, NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput
from mlserver.utils import get_model_uri

INPUT_NAME = "IMAGE"


class ImageClassifier(MLModel):
    async def load(self) -> bool:
        # model-settings.json's uri is the card's model.onnx, beside its other files.
        self.classifier = serving_preprocess.Classifier(Path(await get_model_uri(self.settings)).parent)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = self._image_files(payload)
        # In a thread, so that health probes are answered while a request is computed.
        answers = await asyncio.to_thread(self.classifier.classify, images)
        for position, answer in enumerate(answers):
            if isinstance(answer, serving_preprocess.InvalidImage):
                raise InferenceError(f"image {position}: {answer}")
            if isinstance(answer, Exception):
                raise answer  # a fault of ours: MLServer answers 500
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output("CLASSES", np.array([a["classes"] for a in answers], dtype=np.int64)),
                NumpyCodec.encode_output(
                    "PROBABILITIES", np.array([a["probabilities"] for a in answers], dtype=np.float32)
                ),
            ],
        )

    def _image_files(self, payload: InferenceRequest) -> list[bytes]:
        """The image files of input IMAGE, or a 400 saying what it should be."""
        image = next((request_input for request_input in payload.inputs if request_input.name == INPUT_NAME), None)
        if image is None:
            raise InferenceError(f"missing input {INPUT_NAME} (got {[i.name for i in payload.inputs]})")
        shape = list(image.shape)
        if image.datatype != "BYTES" or len(shape) != 2 or shape[1] != 1 or shape[0] < 1:
            raise InferenceError(
                f"{INPUT_NAME} must be BYTES [batch, 1] of base64 image files, got {image.datatype} {shape}"
            )
        files = _base64_files(self, image)
        if len(files) != shape[0]:
            raise InferenceError(f"{INPUT_NAME} declares shape {shape} but holds {len(files)} elements")
        return files


def _base64_files(model: MLModel, image: RequestInput) -> list[bytes]:
    try:
        files = model.decode(image, default_codec=Base64Codec)
    except (ValueError, TypeError) as error:
        raise InferenceError(f"{INPUT_NAME}: cannot decode its elements as base64: {error}") from None
    if not isinstance(files, list) or not all(isinstance(item, bytes) for item in files):
        raise InferenceError(f"{INPUT_NAME}: elements must be base64 text of image files")
    return files
