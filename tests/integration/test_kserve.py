"""KServe end to end: one real container serving the TF SavedModel over V1 and V2 REST."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace

import numpy as np
import pytest
import requests
from PIL import Image
from skimage import data

from pytest_serving.deployment import Deployment, deploy
from pytest_serving.model.card import load_card
from pytest_serving.model.reference import ReferenceClassifier
from pytest_serving.protocols.base import HttpRequest, Protocol
from pytest_serving.protocols.client import ClassifierClient
from pytest_serving.protocols.kserve_v2 import KServeV2Protocol
from pytest_serving.protocols.tfserving import V1ImageProtocol, V1TensorProtocol
from pytest_serving.protocols.v2 import V2Protocol
from pytest_serving.settings import Settings
from pytest_serving.targets import TARGETS
from pytest_serving.targets.kserve import KSERVE_VERSION

MODEL = "efficientnet_lite0"
UNDECODABLE = b"\xff\xd8 this is not a JPEG"
#: The server's onnxruntime and the host's may differ in the last bits.
PROBABILITY_TOLERANCE = 1e-4


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


PHOTOS = {"chelsea": jpeg(data.chelsea()), "coffee": jpeg(data.coffee())}


@pytest.fixture(scope="module")
def kserve_server(pytestconfig) -> Iterator[Callable[[str], Deployment]]:
    """Boots the ``kserve`` target from an image once per module, on first use; removed at the end."""
    with ExitStack() as stack:
        booted: list[Deployment] = []

        def server(image: str) -> Deployment:
            if not booted:
                settings = Settings.from_config(pytestconfig, list(TARGETS))
                settings = replace(settings, images={"kserve": image}, startup_timeout=300)
                booted.append(stack.enter_context(deploy("kserve", settings)))
            return booted[0]

        yield server


@pytest.fixture
def deployment(kserve_server, offline_image) -> Deployment:
    return kserve_server(offline_image("kserve"))


def send(deployment: Deployment, request: HttpRequest) -> requests.Response:
    endpoint = deployment.endpoint
    return requests.request(
        request.method, endpoint.base_url + request.path, data=request.body, headers=request.headers, timeout=120
    )


def test_v1_and_v2_answer_like_the_in_process_model(deployment):
    endpoint = deployment.endpoint
    assert endpoint.server_version == f"kserve {KSERVE_VERSION}"
    assert isinstance(endpoint.protocol, KServeV2Protocol)
    reference = ReferenceClassifier(load_card(MODEL), threads=1)
    protocols: list[Protocol] = [endpoint.protocol, V1ImageProtocol(MODEL), V1TensorProtocol(MODEL)]
    for name, photo in PHOTOS.items():
        expected = reference.predict(photo)
        for protocol in protocols:
            client = ClassifierClient(endpoint.base_url, protocol)
            prediction = client.classify(photo)
            client.close()
            assert prediction.classes == expected.classes, f"{name} over {protocol.name}"
            np.testing.assert_allclose(prediction.probabilities, expected.probabilities, atol=PROBABILITY_TOLERANCE)


def test_requests_without_a_usable_image_get_400_with_the_reason(deployment):
    def post_json(path: str, body: dict) -> HttpRequest:
        return HttpRequest("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})

    v1_path = f"/v1/models/{MODEL}:predict"
    not_an_image = {"name": "INPUT0", "shape": [1], "datatype": "INT32", "data": [1]}
    cases = {
        "v2 undecodable": (KServeV2Protocol(MODEL).encode(UNDECODABLE), "cannot decode image"),
        "v2 wrong input": (post_json(f"/v2/models/{MODEL}/infer", {"inputs": [not_an_image]}), "missing input IMAGE"),
        "v1 undecodable": (V1ImageProtocol(MODEL).encode(UNDECODABLE), "cannot decode image"),
        "v1 bad base64": (post_json(v1_path, {"instances": [{"b64": "not base64!"}]}), "invalid base64"),
        "v1 wrong shape": (post_json(v1_path, {"instances": [[[0.0] * 224] * 224]}), "expected shape [3, 224, 224]"),
        "v1 no instances": (post_json(v1_path, {"inputs": []}), "instances"),
    }
    for case, (request, reason) in cases.items():
        answer = send(deployment, request)
        assert answer.status_code == 400, f"{case}: {answer.status_code} {answer.text[:300]}"
        assert reason in answer.json()["error"], f"{case}: {answer.text[:300]}"


def test_kserve_rest_still_turns_binary_bytes_tensors_into_text(deployment):
    """Why the kserve target sends UINT8: when this fails, KServe passes BYTES through and the
    target can use protocols.v2.V2Protocol like Triton does."""
    answer = send(deployment, V2Protocol(MODEL).encode(PHOTOS["chelsea"]))
    assert answer.status_code == 500, answer.text[:300]
    assert "using UTF-8" in answer.json()["error"]


def test_v1_answers_one_row_of_logits_per_instance(deployment):
    answer = requests.get(f"{deployment.endpoint.base_url}/v1/models/{MODEL}", timeout=10)
    assert answer.json() == {"name": MODEL, "ready": True}
    b64 = base64.b64encode(PHOTOS["coffee"]).decode()
    batch = requests.post(
        f"{deployment.endpoint.base_url}/v1/models/{MODEL}:predict",
        json={"instances": [{"b64": b64}, {"b64": b64}]},
        timeout=120,
    ).json()["predictions"]
    assert np.asarray(batch).shape == (2, 1000)
    np.testing.assert_allclose(batch[0], batch[1], atol=1e-5)
