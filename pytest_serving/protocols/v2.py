"""KServe V2 / Open Inference Protocol, as Triton, KServe and MLServer speak it over HTTP.

The image travels as a BYTES tensor in Triton's binary-data extension (a JSON header
followed by the raw tensor), the only way to send arbitrary bytes without base64. Servers
whose REST API reads JSON only take the file as base64 text instead (``V2JsonProtocol``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Mapping

import numpy as np

from ..model.preprocess import DEFAULT_SPEC, preprocess, probabilities, top_k
from .base import FramingMistake, HttpRequest, JsonMistake, Prediction, Protocol, ProtocolError, base64_text

INPUT_NAME = "IMAGE"
CLASSES_OUTPUT = "CLASSES"
PROBABILITIES_OUTPUT = "PROBABILITIES"
#: The outputs a JSON request asks for.
JSON_OUTPUTS = [{"name": CLASSES_OUTPUT}, {"name": PROBABILITIES_OUTPUT}]
#: The header that says where the binary extension's JSON header ends.
HEADER_LENGTH = "Inference-Header-Content-Length"


def binary_request(path: str, inputs: list[dict], outputs: list[str], tensors: bytes) -> HttpRequest:
    """A V2 request with the binary-data extension: JSON header, then the raw input tensors."""
    header = {
        "inputs": inputs,
        "outputs": [{"name": name, "parameters": {"binary_data": False}} for name in outputs],
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    return HttpRequest(
        method="POST",
        path=path,
        body=header_bytes + tensors,
        headers={
            "Content-Type": "application/octet-stream",
            HEADER_LENGTH: str(len(header_bytes)),
        },
    )


def serialize_bytes_tensor(elements: list[bytes]) -> bytes:
    """BYTES elements as the V2 binary extension lays them out: 4-byte little-endian length, then data."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


class V2Protocol(Protocol):
    """Image-in/top-5-out over ``POST /v2/models/{model}/infer`` with binary data."""

    name = "v2"
    carries_image = True
    binary_body = True
    json_inputs_key = "inputs"

    @property
    def infer_path(self) -> str:
        return self.model_path("v2") + "/infer"

    def bytes_request(self, tensor: bytes, *, binary_data_size: int | None = None) -> HttpRequest:
        """The binary-extension request with ``tensor`` as the BYTES input IMAGE, its declared size optionally a lie."""
        size = len(tensor) if binary_data_size is None else binary_data_size
        image_input = {
            "name": INPUT_NAME,
            "shape": [1, 1],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": size},
        }
        return binary_request(self.infer_path, [image_input], [CLASSES_OUTPUT, PROBABILITIES_OUTPUT], tensor)

    def json_body(self, image: bytes, **fields: object) -> dict:
        """The image as V2 JSON (base64 text, no binary part), with the input's ``fields`` replaced."""
        image_input = {"name": INPUT_NAME, "shape": [1, 1], "datatype": "BYTES", "data": [base64_text(image)]}
        return {"inputs": [{**image_input, **fields}], "outputs": JSON_OUTPUTS}

    def json_mistakes(self) -> Mapping[str, JsonMistake]:
        return {
            "json-missing-inputs": lambda image: {"outputs": JSON_OUTPUTS},
            "json-missing-tensor-fields": lambda image: {
                "inputs": [{"name": INPUT_NAME, "data": [base64_text(image)]}]
            },
            "json-unknown-input-name": lambda image: self.json_body(image, name="INPUT__0"),
            "json-wrong-shape": lambda image: self.json_body(image, shape=[1]),
            "json-wrong-datatype": lambda image: self.json_body(image, datatype="FP32", data=[0.5]),
            "json-nan-inf": lambda image: self.json_body(image, shape=[math.nan, math.inf]),
            "json-count-mismatch": lambda image: self.json_body(image, shape=[2, 1]),
        }

    def framing_mistakes(self) -> Mapping[str, FramingMistake]:
        """The binary extension's lengths and header, each falsified in the BYTES request for the image."""

        def valid(image: bytes) -> HttpRequest:
            return self.bytes_request(serialize_bytes_tensor([image]))

        def header_beyond_body(image: bytes) -> HttpRequest:
            request = valid(image)
            return request.with_header(HEADER_LENGTH, str(len(request.body) + 1000))

        def size_beyond_body(image: bytes) -> HttpRequest:
            tensor = serialize_bytes_tensor([image])
            return self.bytes_request(tensor, binary_data_size=len(tensor) + 1_000_000)

        return {
            "v2-header-length-beyond-body": header_beyond_body,
            "v2-header-length-not-a-number": lambda image: valid(image).with_header(HEADER_LENGTH, "sixty"),
            "v2-header-not-json": lambda image: replace_header(valid(image), b"\x00not json\xff" * 20),
            "v2-binary-size-beyond-body": size_beyond_body,
            "v2-element-length-beyond-tensor": lambda image: self.bytes_request(element_claiming(0xFFFF_FFF0, image)),
        }

    def encode(self, image: bytes) -> HttpRequest:
        return self.bytes_request(serialize_bytes_tensor([image]))

    def decode(self, status: int, body: bytes) -> Prediction:
        self.raise_for_status(status, body)
        try:
            outputs = {output["name"]: output for output in json.loads(body)["outputs"]}
            classes = np.asarray(outputs[CLASSES_OUTPUT]["data"], dtype=np.int64).reshape(-1)
            probabilities = np.asarray(outputs[PROBABILITIES_OUTPUT]["data"], dtype=np.float64).reshape(-1)
        except (ValueError, KeyError, TypeError) as error:
            raise ProtocolError(f"v2: response is not a top-5 prediction: {error}: {body[:300]!r}") from None
        if classes.size == 0 or classes.size != probabilities.size:
            raise ProtocolError(f"v2: {classes.size} classes but {probabilities.size} probabilities")
        return Prediction(tuple(int(c) for c in classes), tuple(float(p) for p in probabilities))


def replace_header(request: HttpRequest, header: bytes) -> HttpRequest:
    """``request`` with its JSON header swapped for ``header``; the declared header length follows it."""
    tensor = request.body[int(request.headers[HEADER_LENGTH]) :]
    return dataclasses.replace(request, body=header + tensor).with_header(HEADER_LENGTH, str(len(header)))


def element_claiming(length: int, data: bytes) -> bytes:
    """One BYTES element whose 4-byte length prefix says ``length`` whatever ``data`` really holds."""
    return struct.pack("<I", length) + data


class V2JsonProtocol(V2Protocol):
    """V2 in plain JSON: the image file as one base64 BYTES element marked ``content_type: base64``.

    For servers without the binary-data extension (MLServer's REST API parses the body as
    JSON only); the parameter is MLServer's way of saying the text is base64 of raw bytes.
    No binary framing, so the binary extension's mistakes do not apply.
    """

    name = "v2-json"
    binary_body = False

    def json_body(self, image: bytes, **fields: object) -> dict:
        return super().json_body(image, **{"parameters": {"content_type": "base64"}, **fields})

    def framing_mistakes(self) -> Mapping[str, FramingMistake]:
        return {}

    def encode(self, image: bytes) -> HttpRequest:
        return self.json_request(self.json_body(image))


class V2TensorProtocol(V2Protocol):
    """Tensor-in/outputs-out over V2, for model variants that cannot decode images in the server
    (official images without our Python dependencies): the client preprocesses exactly like the
    reference does, with the card's ``spec`` (``ModelCard.serving_spec``)."""

    carries_image = False
    name = "v2-tensor"

    def __init__(self, model_name: str, version: str | None = None, *, spec: Mapping = DEFAULT_SPEC) -> None:
        super().__init__(model_name, version)
        self.spec = spec

    @property
    def input_name(self) -> str:
        return self.spec["input"]["name"]

    @property
    def output_name(self) -> str:
        return self.spec["output"]["name"]

    def encode(self, image: bytes) -> HttpRequest:
        array = preprocess(image, self.spec)[np.newaxis]
        datatype, dtype = ("UINT8", "u1") if array.dtype == np.uint8 else ("FP32", "<f4")
        tensor = array.astype(dtype).tobytes()
        tensor_input = {"name": self.input_name, "shape": list(array.shape), "datatype": datatype}
        tensor_input["parameters"] = {"binary_data_size": len(tensor)}
        return binary_request(self.infer_path, [tensor_input], [self.output_name], tensor)

    def decode(self, status: int, body: bytes) -> Prediction:
        self.raise_for_status(status, body)
        try:
            outputs = {output["name"]: output for output in json.loads(body)["outputs"]}
            scores = np.asarray(outputs[self.output_name]["data"], dtype=np.float64).reshape(1, -1)
        except (ValueError, KeyError, TypeError) as error:
            raise ProtocolError(f"v2-tensor: response holds no {self.output_name}: {error}: {body[:300]!r}") from None
        classes, top = top_k(probabilities(scores, self.spec))
        return Prediction(tuple(int(c) for c in classes[0]), tuple(float(p) for p in top[0]))
