import base64
import json

import numpy as np
import pytest
import tritonclient.http as triton_http

from pytest_serving.protocols.base import ProtocolError
from pytest_serving.protocols.v2 import V2JsonProtocol, V2Protocol, V2TensorProtocol, serialize_bytes_tensor


def split(request):
    header_length = int(request.headers["Inference-Header-Content-Length"])
    return json.loads(request.body[:header_length]), request.body[header_length:]


def test_bytes_tensor_layout_matches_tritonclient():
    elements = [b"\xff\xd8jpeg", b""]
    expected = triton_http.InferInput("IMAGE", [2], "BYTES")
    expected.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=True)
    assert serialize_bytes_tensor(elements) == expected._get_binary_data()


def test_encode_is_what_tritonclient_would_send():
    image = b"\xff\xd8\xff\xe0 not really a jpeg"
    request = V2Protocol("efficientnet_lite0").encode(image)
    assert request.method == "POST"
    assert request.path == "/v2/models/efficientnet_lite0/infer"
    header, tensor = split(request)

    infer_input = triton_http.InferInput("IMAGE", [1, 1], "BYTES")
    infer_input.set_data_from_numpy(np.array([[image]], dtype=np.object_), binary_data=True)
    outputs = [triton_http.InferRequestedOutput(name, binary_data=False) for name in ("CLASSES", "PROBABILITIES")]
    body, json_size = triton_http.InferenceServerClient.generate_request_body([infer_input], outputs=outputs)
    assert header == json.loads(body[:json_size])
    assert tensor == body[json_size:]


def test_versioned_path():
    assert V2Protocol("m", version="3").encode(b"x").path == "/v2/models/m/versions/3/infer"


def response(classes, probabilities):
    return json.dumps(
        {
            "model_name": "m",
            "outputs": [
                {"name": "CLASSES", "datatype": "INT64", "shape": [1, 5], "data": classes},
                {"name": "PROBABILITIES", "datatype": "FP32", "shape": [1, 5], "data": probabilities},
            ],
        }
    ).encode()


def test_decode_top5():
    prediction = V2Protocol("m").decode(200, response([281, 282, 285, 287, 728], [0.6, 0.2, 0.1, 0.05, 0.01]))
    assert prediction.classes == (281, 282, 285, 287, 728)
    assert prediction.top1 == 281
    assert prediction.probabilities[0] == pytest.approx(0.6)


def test_decode_error_status_carries_the_servers_message():
    with pytest.raises(ProtocolError, match="HTTP 400.*cannot decode image"):
        V2Protocol("m").decode(400, b'{"error":"cannot decode image"}')


@pytest.mark.parametrize(
    "body", [b"not json", b'{"outputs": []}', response([1, 2], [0.5]), b'{"outputs":[{"name":"CLASSES"}]}']
)
def test_decode_rejects_malformed_answers(body):
    with pytest.raises(ProtocolError):
        V2Protocol("m").decode(200, body)


def test_tensor_variant_preprocesses_on_the_client_and_decodes_logits():
    import io

    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, format="JPEG")
    protocol = V2TensorProtocol("m_onnx")
    header, tensor = split(protocol.encode(buffer.getvalue()))
    assert header["inputs"][0]["shape"] == [1, 3, 224, 224] and header["inputs"][0]["datatype"] == "FP32"
    assert len(tensor) == 3 * 224 * 224 * 4
    logits = np.zeros(1000)
    logits[[7, 3]] = [5.0, 4.0]
    body = json.dumps({"outputs": [{"name": "logits", "data": logits.tolist()}]}).encode()
    prediction = protocol.decode(200, body)
    assert prediction.classes[:2] == (7, 3)
    assert sum(prediction.probabilities) < 1.0


def test_json_encode_carries_the_file_as_base64_bytes():
    image = b"\xff\xd8\xff\xe0\x00 not really a jpeg \xff"
    request = V2JsonProtocol("efficientnet_lite0").encode(image)
    assert (request.method, request.path) == ("POST", "/v2/models/efficientnet_lite0/infer")
    assert request.headers == {"Content-Type": "application/json"}
    (image_input,) = json.loads(request.body)["inputs"]
    assert image_input["shape"] == [1, 1] and image_input["datatype"] == "BYTES"
    assert image_input["parameters"] == {"content_type": "base64"}
    assert base64.b64decode(image_input["data"][0], validate=True) == image


def test_json_variant_has_no_binary_framing_and_keeps_the_base64_marker_in_its_mistakes():
    protocol = V2JsonProtocol("m")
    assert protocol.carries_image and not protocol.binary_body and protocol.json_inputs_key == "inputs"
    assert protocol.framing_mistakes() == {}
    (image_input,) = protocol.json_mistakes()["json-wrong-shape"](b"img")["inputs"]
    assert image_input["shape"] == [1] and image_input["parameters"] == {"content_type": "base64"}
