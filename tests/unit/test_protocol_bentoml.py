import io
import json

import pytest
from PIL import Image

from pytest_serving.protocols.base import ProtocolError
from pytest_serving.protocols.bentoml import BentoMLProtocol, error_message
from pytest_serving.robustness import catalogue

# What BentoML 1.4 answers when the service raises InvalidArgument: the error in a one-element list.
INVALID_IMAGE = b'[{"error":"cannot decode image: UnidentifiedImageError: cannot identify image file"}]'
# What it answers when pydantic refuses the input.
VALIDATION = b'{"error":"1 validation error for Input","detail":[{"type":"missing"}]}'


def test_encode_sends_the_file_as_the_body():
    image = b"\xff\xd8\xff\xe0 not really a jpeg"
    request = BentoMLProtocol("efficientnet_lite0").encode(image)
    assert (request.method, request.path, request.body) == ("POST", "/classify/efficientnet_lite0", image)
    assert request.headers == {"Content-Type": "application/octet-stream"}


def test_decode_top5():
    body = json.dumps({"classes": [281, 282, 285, 287, 728], "probabilities": [0.6, 0.2, 0.1, 0.05, 0.01]})
    prediction = BentoMLProtocol("m").decode(200, body.encode())
    assert prediction.classes == (281, 282, 285, 287, 728)
    assert prediction.probabilities[0] == pytest.approx(0.6)


@pytest.mark.parametrize(
    "body",
    [b"{}", b"not json", b'{"classes": [1, 2], "probabilities": [0.5]}', b'{"classes": [], "probabilities": []}'],
)
def test_decode_refuses_what_is_not_a_prediction(body):
    with pytest.raises(ProtocolError, match="bentoml"):
        BentoMLProtocol("m").decode(200, body)


def test_error_statuses_quote_the_error_text():
    with pytest.raises(ProtocolError, match="HTTP 400: cannot decode image"):
        BentoMLProtocol("m").decode(400, INVALID_IMAGE)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (INVALID_IMAGE, "cannot decode image: UnidentifiedImageError: cannot identify image file"),
        (VALIDATION, "1 validation error for Input"),
        (b"Internal Server Error", "Internal Server Error"),
    ],
)
def test_error_message(body, message):
    assert error_message(body) == message


def test_a_version_is_a_path_segment_bentoml_does_not_route():
    assert BentoMLProtocol("m", version="3").encode(b"x").path == "/classify/m/3"


def test_the_robustness_cases_that_apply_are_the_image_ones_the_content_types_and_unknown_model_and_version():
    protocol = BentoMLProtocol("m")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "JPEG")
    cases = catalogue(buffer.getvalue(), oversize_bytes=1024)
    applying = {case.name for case in cases if case.applies_to(protocol)}
    assert {"content-type-text-plain", "content-type-json", "unknown-model", "unknown-version"} <= applying
    assert not {name for name in applying if name.startswith(("json-", "v2-", "tfserving-"))}
