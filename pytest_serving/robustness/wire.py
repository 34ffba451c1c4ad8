"""Hand-built requests for each protocol family, so a case can break exactly one thing a real encoder gets right."""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
from collections.abc import Callable

from ..protocols.base import HttpRequest
from ..protocols.v2 import CLASSES_OUTPUT, INPUT_NAME, PROBABILITIES_OUTPUT, binary_request, serialize_bytes_tensor

V2 = "v2"
TORCHSERVE = "torchserve"
TFSERVING_REST = "tfserving-rest"
FAMILIES = frozenset({V2, TORCHSERVE, TFSERVING_REST})
JSON_FAMILIES = frozenset({V2, TFSERVING_REST})
#: Families whose request body carries the image bytes themselves, so the Content-Type header describes them.
BINARY_FAMILIES = frozenset({V2, TORCHSERVE})

#: Builds one protocol-level case: (family, model name, valid image) -> request.
RequestBuilder = Callable[[str, str, bytes], HttpRequest]
#: Turns the valid image into a JSON body (a dict to serialise, or raw bytes sent as they are).
JsonBody = Callable[[bytes], "dict | bytes"]

V2_OUTPUTS = [{"name": CLASSES_OUTPUT}, {"name": PROBABILITIES_OUTPUT}]
V2_HEADER_LENGTH = "Inference-Header-Content-Length"


def infer_path(family: str, model_name: str, version: str | None = None) -> str:
    """The inference endpoint of ``model_name`` (optionally one version of it) in ``family``."""
    if family == V2:
        return f"/v2/models/{model_name}" + (f"/versions/{version}" if version else "") + "/infer"
    if family == TORCHSERVE:
        return f"/predictions/{model_name}" + (f"/{version}" if version else "")
    if family == TFSERVING_REST:
        return f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "") + ":predict"
    raise ValueError(f"unknown protocol family {family!r}; expected one of {sorted(FAMILIES)}")


def v2_binary_request(path: str, tensor: bytes, *, binary_data_size: int | None = None) -> HttpRequest:
    """The V2 binary-extension request for a BYTES ``tensor`` as input IMAGE, its declared size optionally a lie."""
    size = len(tensor) if binary_data_size is None else binary_data_size
    image_input = {"name": INPUT_NAME, "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": size}}
    return binary_request(path, [image_input], [CLASSES_OUTPUT, PROBABILITIES_OUTPUT], tensor)


def v2_replace_header(request: HttpRequest, header: bytes) -> HttpRequest:
    """``request`` with its JSON header swapped for ``header``; the declared header length follows it."""
    tensor = request.body[int(request.headers[V2_HEADER_LENGTH]) :]
    return with_header(dataclasses.replace(request, body=header + tensor), V2_HEADER_LENGTH, str(len(header)))


def with_header(request: HttpRequest, name: str, value: str) -> HttpRequest:
    """``request`` with one HTTP header set to ``value``."""
    return dataclasses.replace(request, headers={**request.headers, name: value})


def v2_element_claiming(length: int, data: bytes) -> bytes:
    """One BYTES element whose 4-byte length prefix says ``length`` whatever ``data`` really holds."""
    return struct.pack("<I", length) + data


def image_request(family: str, model_name: str, image: bytes, version: str | None = None) -> HttpRequest:
    """A well-formed classify request, built by hand so that a case can change one thing about it."""
    path = infer_path(family, model_name, version)
    if family == V2:
        return v2_binary_request(path, serialize_bytes_tensor([image]))
    if family == TORCHSERVE:
        return HttpRequest("POST", path, image, {"Content-Type": "image/jpeg"})
    return json_request(path, tfserving_body(image))


def json_request(path: str, body: dict | bytes) -> HttpRequest:
    """POST ``body`` as JSON the way Python clients write it: NaN and Infinity come out as bare tokens."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpRequest("POST", path, data, {"Content-Type": "application/json"})


def v2_json_input(image: bytes, **fields: object) -> dict:
    """The IMAGE input as V2 JSON (base64 text, no binary part), with ``fields`` replaced."""
    return {"name": INPUT_NAME, "shape": [1, 1], "datatype": "BYTES", "data": [base64_text(image)], **fields}


def v2_json_body(image: bytes, **fields: object) -> dict:
    """A V2 JSON inference request for one image, its input's ``fields`` replaced."""
    return {"inputs": [v2_json_input(image, **fields)], "outputs": V2_OUTPUTS}


def tfserving_body(image: bytes) -> dict:
    """TF Serving's row format with the image as a base64 string instance."""
    return {"instances": [{"b64": base64_text(image)}]}


def json_case(bodies: dict[str, JsonBody]) -> RequestBuilder:
    """A builder posting, for each JSON family in ``bodies``, the JSON body it makes from the image."""
    unknown = set(bodies) - JSON_FAMILIES
    if unknown:
        raise ValueError(f"json_case: {sorted(unknown)} are not JSON protocol families")

    def build(family: str, model_name: str, image: bytes) -> HttpRequest:
        return json_request(infer_path(family, model_name), bodies[family](image))

    return build


def base64_text(data: bytes) -> str:
    """Base64 as JSON-based protocols carry binary data."""
    return base64.b64encode(data).decode("ascii")
