"""TensorFlow Serving's predict APIs: REST (which KServe's V1 protocol copies) and gRPC.

REST: ``POST /v1/models/{model}[/versions/{v}]:predict`` with the row format
``{"instances": [...]}``, answered by ``{"predictions": [row, ...]}``. Two encodings of an
image are in use: the preprocessed float array (what the study sent to TF Serving, whose
SavedModel has no image-decoding signature) and ``{"b64": ...}`` holding the file itself
(TF Serving's convention for binary values, which KServe's model decodes with Pillow).
Either way each prediction row is the model's 1000 logits, and top-5 is computed here.

gRPC: ``tensorflow.serving.PredictionService/Predict`` from ``tensorflow-serving-api``
(imported on first use: it loads TensorFlow), with the same tensor as REST.
"""

from __future__ import annotations

import json
import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ..model.preprocess import DEFAULT_SPEC, preprocess, probabilities, softmax, top_k
from ..model.registry import INPUT_NAME, OUTPUT_NAME
from .base import HttpRequest, JsonMistake, Prediction, Protocol, ProtocolError, base64_text

if TYPE_CHECKING:
    from tensorflow_serving.apis.predict_pb2 import PredictRequest, PredictResponse

SIGNATURE = "serving_default"
GRPC_TIMEOUT = 60.0


def prediction_from_logits(logits: np.ndarray) -> Prediction:
    """Top-5 of one row of logits, computed as the in-process reference does."""
    classes, probabilities = top_k(softmax(np.asarray(logits, dtype=np.float64).reshape(1, -1)))
    return Prediction(tuple(int(c) for c in classes[0]), tuple(float(p) for p in probabilities[0]))


class V1Protocol(Protocol):
    """One image per request over the TF Serving REST predict API; subclasses choose the instance.

    Each prediction row is the model's output as the card's ``spec`` describes it (logits or
    probabilities); top-5 is computed here, as the reference does.
    """

    def __init__(self, model_name: str, version: str | None = None, *, spec: Mapping = DEFAULT_SPEC) -> None:
        super().__init__(model_name, version)
        self.spec = spec

    json_inputs_key = "instances"

    @property
    def predict_path(self) -> str:
        return self.model_path("v1") + ":predict"

    @property
    def infer_path(self) -> str:
        return self.predict_path

    @abstractmethod
    def instance_json(self, image: bytes) -> str:
        """The JSON text standing for ``image`` in ``instances``."""

    def encode(self, image: bytes) -> HttpRequest:
        body = '{"instances":[' + self.instance_json(image) + "]}"
        return HttpRequest("POST", self.predict_path, body.encode(), {"Content-Type": "application/json"})

    def decode(self, status: int, body: bytes) -> Prediction:
        self.raise_for_status(status, body)
        try:
            predictions = json.loads(body)["predictions"]
            scores = np.asarray(predictions, dtype=np.float64)
        except (ValueError, KeyError, TypeError) as error:
            raise ProtocolError(f"{self.name}: response holds no predictions: {error}: {body[:300]!r}") from None
        if scores.ndim != 2 or scores.shape[0] != 1 or scores.shape[1] < 2:
            raise ProtocolError(f"{self.name}: expected one row of class scores, got shape {list(scores.shape)}")
        classes, top = top_k(probabilities(scores, self.spec))
        return Prediction(tuple(int(c) for c in classes[0]), tuple(float(p) for p in top[0]))


class V1TensorProtocol(V1Protocol):
    """The client preprocesses exactly like the reference and sends the [3, 224, 224] float array."""

    name = "v1-tensor"

    def instance_json(self, image: bytes) -> str:
        return float32_json(preprocess(image, self.spec))


class V1ImageProtocol(V1Protocol):
    """The image file travels as ``{"b64": ...}``; the server decodes and preprocesses it."""

    #: The robustness suite's family of TF Serving REST requests that carry the image file.
    name = "tfserving-rest"
    carries_image = True

    def instance_json(self, image: bytes) -> str:
        return json.dumps({"b64": base64_text(image)})

    def json_body(self, image: bytes) -> dict:
        return {"instances": [{"b64": base64_text(image)}]}

    def json_mistakes(self) -> Mapping[str, JsonMistake]:
        return {
            "json-missing-inputs": lambda image: {"signature_name": "serving_default"},
            "json-missing-tensor-fields": lambda image: {"instances": [{"image": base64_text(image)}]},
            "json-wrong-shape": lambda image: {"instances": [np.zeros((3, 7, 7)).tolist()]},
            "json-wrong-datatype": lambda image: {"instances": [{"b64": 12345}]},
            "json-nan-inf": lambda image: {"instances": [_non_finite_tensor(image).tolist()]},
            "json-count-mismatch": lambda image: {"instances": [_ragged_tensor(image)]},
            "tfserving-b64-invalid": lambda image: {"instances": [{"b64": "not base64 at all!"}]},
        }


def _sample_tensor(image: bytes) -> np.ndarray:
    """The image's model input, rounded to 4 decimals so its JSON stays about 1 MB."""
    return preprocess(image).astype(np.float64).round(4)


def _non_finite_tensor(image: bytes) -> np.ndarray:
    """The image's model input with a NaN, +Inf and -Inf patch in the corner of each channel."""
    tensor = _sample_tensor(image)
    tensor[:, :16, :16] = np.array([math.nan, math.inf, -math.inf])[:, None, None]
    return tensor


def _ragged_tensor(image: bytes) -> list:
    """The image's model input as nested lists, with the very last row one value short."""
    rows = _sample_tensor(image).tolist()
    rows[-1][-1].pop()
    return rows


def float32_json(array: np.ndarray) -> str:
    """``array`` as nested JSON lists, each number the shortest text that reads back as the same float32.

    ``json.dumps(array.tolist())`` writes float64 digits: twice the bytes, and ten times the
    client time (a preprocessed image has at most 256 distinct values, formatted once here),
    which would otherwise bound a load test's request rate on a small machine.
    """
    values, inverse = np.unique(np.asarray(array, dtype=np.float32), return_inverse=True)
    if not np.isfinite(values).all():
        raise ValueError("JSON has no NaN or infinity")
    words = np.array([np.format_float_positional(value, unique=True, trim="0") for value in values], dtype=object)
    return _nested_json(np.asarray(words[inverse.reshape(np.shape(array))], dtype=object))


def _nested_json(words: np.ndarray) -> str:
    if words.ndim == 0:
        return words.item()
    if words.ndim == 1:
        return "[" + ",".join(words) + "]"
    return "[" + ",".join(_nested_json(part) for part in words) + "]"


def predict_request(
    model_name: str,
    batch: np.ndarray,
    *,
    version: int | None = None,
    signature: str = SIGNATURE,
    input_name: str = INPUT_NAME,
) -> PredictRequest:
    """A gRPC PredictRequest carrying ``batch`` (float32 [N, 3, 224, 224]) as the signature's input."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(np.ascontiguousarray(batch, dtype=np.float32)))
    return request


def logits_from_response(response: PredictResponse, output_name: str = OUTPUT_NAME) -> np.ndarray:
    """The [N, classes] logits of a gRPC PredictResponse; ProtocolError when it has none."""
    import tensorflow as tf

    if output_name not in response.outputs:
        raise ProtocolError(f"grpc: response has no output {output_name!r} (got {sorted(response.outputs)})")
    logits = tf.make_ndarray(response.outputs[output_name])
    if logits.ndim != 2:
        raise ProtocolError(f"grpc: {output_name} has shape {list(logits.shape)}, expected [batch, classes]")
    return logits


class TFServingGrpcClient:
    """Classify images through TF Serving's gRPC PredictionService (port role ``grpc``)."""

    def __init__(self, address: str, model_name: str, *, timeout: float = GRPC_TIMEOUT) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.model_name = model_name
        self.timeout = timeout
        # Endpoint URLs carry an http:// scheme; gRPC wants host:port.
        self._channel = grpc.insecure_channel(address.removeprefix("http://"))
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def classify(self, image: bytes) -> Prediction:
        request = predict_request(self.model_name, preprocess(image)[np.newaxis])
        response = self._stub.Predict(request, timeout=self.timeout)
        return prediction_from_logits(logits_from_response(response)[0])

    def close(self) -> None:
        self._channel.close()
