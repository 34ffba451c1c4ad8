import base64
import io
import json

import numpy as np
import pytest
import tritonclient.http as triton_http
from PIL import Image
from skimage import data

from pytest_serving.model.preprocess import preprocess
from pytest_serving.protocols.base import ProtocolError
from pytest_serving.protocols.kserve_v2 import KServeV2Protocol
from pytest_serving.protocols.tfserving import (
    V1ImageProtocol,
    V1TensorProtocol,
    float32_json,
    prediction_from_logits,
)


@pytest.fixture(scope="module")
def chelsea_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, format="JPEG")
    return buffer.getvalue()


def logits_with(top: dict[int, float]) -> list[float]:
    logits = np.zeros(1000)
    for index, value in top.items():
        logits[index] = value
    return logits.tolist()


def test_tensor_rows_carry_the_reference_preprocessing(chelsea_jpeg):
    request = V1TensorProtocol("efficientnet_lite0").encode(chelsea_jpeg)
    assert (request.method, request.path) == ("POST", "/v1/models/efficientnet_lite0:predict")
    assert request.headers["Content-Type"] == "application/json"
    (instance,) = json.loads(request.body)["instances"]
    sent = np.asarray(instance, dtype=np.float32)
    assert sent.shape == (3, 224, 224)
    # The server reads back the reference's very tensor, bit for bit.
    np.testing.assert_array_equal(sent, preprocess(chelsea_jpeg))


def test_float32_json_reads_back_as_the_same_float32_values():
    values = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    values[0, 0, :] = [0.0, -1.0, np.finfo(np.float32).max, np.finfo(np.float32).tiny]
    text = float32_json(values)
    np.testing.assert_array_equal(np.asarray(json.loads(text), dtype=np.float32), values)
    assert len(text) < len(json.dumps(values.tolist()))


def test_float32_json_refuses_what_json_cannot_say():
    with pytest.raises(ValueError, match="NaN or infinity"):
        float32_json(np.array([1.0, np.nan], dtype=np.float32))


def test_image_instances_carry_the_file_in_b64(chelsea_jpeg):
    request = V1ImageProtocol("m", version="2").encode(chelsea_jpeg)
    assert request.path == "/v1/models/m/versions/2:predict"
    assert json.loads(request.body) == {"instances": [{"b64": base64.b64encode(chelsea_jpeg).decode()}]}


@pytest.mark.parametrize("protocol", [V1TensorProtocol("m"), V1ImageProtocol("m")])
def test_decode_takes_top5_of_the_logits_row(protocol):
    body = json.dumps({"predictions": [logits_with({281: 9.0, 282: 8.0, 7: 7.5, 3: 7.0, 999: 6.0})]}).encode()
    prediction = protocol.decode(200, body)
    assert prediction.classes == (281, 282, 7, 3, 999)
    assert prediction.probabilities == tuple(sorted(prediction.probabilities, reverse=True))
    assert 0.0 < sum(prediction.probabilities) < 1.0


def test_decode_error_status_carries_the_servers_message():
    with pytest.raises(ProtocolError, match="tfserving-rest: HTTP 400.*cannot decode image"):
        V1ImageProtocol("m").decode(400, b'{"error":"image 0: cannot decode image: UnidentifiedImageError"}')


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"outputs": []}',
        b'{"predictions": []}',
        b'{"predictions": [[0.1]]}',
        json.dumps({"predictions": [logits_with({1: 1.0}), logits_with({2: 1.0})]}).encode(),
        b'{"predictions": [{"logits": [1, 2, 3, 4, 5, 6]}]}',
    ],
)
def test_decode_rejects_anything_but_one_row_of_logits(body):
    with pytest.raises(ProtocolError):
        V1TensorProtocol("m").decode(200, body)


def test_kserve_v2_sends_the_file_as_a_uint8_tensor_with_binary_data(chelsea_jpeg):
    request = KServeV2Protocol("efficientnet_lite0").encode(chelsea_jpeg)
    assert request.path == "/v2/models/efficientnet_lite0/infer"
    header_length = int(request.headers["Inference-Header-Content-Length"])
    header = json.loads(request.body[:header_length])

    infer_input = triton_http.InferInput("IMAGE", [1, len(chelsea_jpeg)], "UINT8")
    infer_input.set_data_from_numpy(np.frombuffer(chelsea_jpeg, np.uint8)[np.newaxis], binary_data=True)
    outputs = [triton_http.InferRequestedOutput(name, binary_data=False) for name in ("CLASSES", "PROBABILITIES")]
    body, json_size = triton_http.InferenceServerClient.generate_request_body([infer_input], outputs=outputs)
    assert header == json.loads(body[:json_size])
    assert request.body[header_length:] == chelsea_jpeg == body[json_size:]


def test_prediction_from_logits_matches_softmax():
    prediction = prediction_from_logits(np.array(logits_with({5: 2.0})))
    expected = np.exp(2.0) / (np.exp(2.0) + 999)
    assert prediction.top1 == 5
    assert prediction.probabilities[0] == pytest.approx(expected)


class TestGrpc:
    """The PredictionService messages, built and read without a server."""

    @pytest.fixture(scope="class")
    def tf(self):
        pytest.importorskip("tensorflow_serving", reason="gRPC needs the `tf` extra: pip install 'pytest-serving[tf]'")
        import tensorflow

        return tensorflow

    def test_request_names_model_signature_and_input(self, tf, chelsea_jpeg):
        from pytest_serving.protocols.tfserving import predict_request

        batch = preprocess(chelsea_jpeg)[np.newaxis]
        request = predict_request("efficientnet_lite0", batch, version=1)
        assert request.model_spec.name == "efficientnet_lite0"
        assert request.model_spec.signature_name == "serving_default"
        assert request.model_spec.version.value == 1
        assert list(request.inputs) == ["input"]
        tensor = request.inputs["input"]
        assert tensor.dtype == tf.float32.as_datatype_enum
        assert [dim.size for dim in tensor.tensor_shape.dim] == [1, 3, 224, 224]
        np.testing.assert_array_equal(tf.make_ndarray(tensor), batch)

    def test_unversioned_request_leaves_the_version_to_the_server(self, tf):
        from pytest_serving.protocols.tfserving import predict_request

        request = predict_request("m", np.zeros((1, 3, 224, 224), np.float32))
        assert not request.model_spec.HasField("version")

    def test_response_logits_become_top5(self, tf):
        from tensorflow_serving.apis import predict_pb2

        from pytest_serving.protocols.tfserving import logits_from_response

        response = predict_pb2.PredictResponse()
        logits = np.array([logits_with({42: 3.0, 7: 2.0})], dtype=np.float32)
        response.outputs["logits"].CopyFrom(tf.make_tensor_proto(logits))
        decoded = logits_from_response(response)
        np.testing.assert_array_equal(decoded, logits)
        assert prediction_from_logits(decoded[0]).classes[:2] == (42, 7)

    def test_response_without_logits_is_a_protocol_error(self, tf):
        from tensorflow_serving.apis import predict_pb2

        from pytest_serving.protocols.tfserving import logits_from_response

        response = predict_pb2.PredictResponse()
        response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 1000), np.float32)))
        with pytest.raises(ProtocolError, match="no output 'logits'.*probabilities"):
            logits_from_response(response)
