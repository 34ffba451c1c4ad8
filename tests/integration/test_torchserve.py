"""TorchServe end to end: the real container, booted by the plugin's deployment machinery."""

from __future__ import annotations

import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from pytest_serving.deployment import EMBEDDED_MODEL_REPO, Deployment, deploy
from pytest_serving.model.card import load_card
from pytest_serving.protocols.client import ClassifierClient
from pytest_serving.protocols.torchserve import bearer, key_refused
from pytest_serving.samples import Sample, discover
from pytest_serving.settings import Settings
from pytest_serving.targets import TARGETS
from pytest_serving.targets.base import TargetOptions
from pytest_serving.targets.torchserve import MODEL_CONFIG, TORCHSERVE_VERSION, TorchServe

MODEL = "efficientnet_lite0"
BATCH = 8
#: One request of the batch that is not an image.
UNDECODABLE = b"\xff\xd8 this is not a JPEG"
#: The metric TorchServe logs once per handler call, naming every request of the batch.
BATCH_METRIC = re.compile(r"PredictionTime\.ms:.*requestID:([\w,-]+),timestamp")


@pytest.fixture
def settings(pytestconfig, offline_image) -> Settings:
    """The plugin's settings with the offline TorchServe image, auth on (the default)."""
    defaults = Settings.from_config(pytestconfig, list(TARGETS))
    return replace(defaults, images={"torchserve": offline_image("torchserve")}, startup_timeout=300)


@pytest.fixture(scope="module")
def samples(shared_samples: Path) -> list[Sample]:
    return discover(shared_samples, limit=BATCH - 1)


def predict(deployment: Deployment, body: bytes, headers: dict[str, str]) -> requests.Response:
    endpoint = deployment.endpoint
    return requests.post(f"{endpoint.base_url}/predictions/{MODEL}", data=body, headers=headers, timeout=120)


def test_answers_with_the_inference_key_and_refuses_requests_without_it(settings, samples, docker_client):
    with deploy("torchserve", settings) as deployment:
        endpoint = deployment.endpoint
        assert endpoint.server_version == f"torchserve {TORCHSERVE_VERSION}"
        client = ClassifierClient(endpoint.base_url, endpoint.protocol, headers=endpoint.headers)
        prediction = client.classify(samples[0].data)
        assert samples[0].accepted & set(prediction.classes), f"{samples[0].id}: {prediction}"

        refused = predict(deployment, samples[0].data, headers={})
        assert key_refused(refused.status_code, refused.content), refused.text
        keys = deployment.target.token_keys(endpoint)
        assert keys is not None and endpoint.headers == bearer(keys.inference)
        wrong_key = predict(deployment, samples[0].data, headers=bearer(keys.management))
        assert key_refused(wrong_key.status_code, wrong_key.content), wrong_key.text

        # The archive's model-config.yaml is what the server runs with.
        described = requests.get(
            f"{endpoint.urls['management']}/models/{MODEL}", headers=bearer(keys.management), timeout=10
        ).json()[0]
        assert (described["batchSize"], described["maxBatchDelay"]) == (8, 10)
        container_id = deployment.container.get_wrapped_container().id
    assert docker_client.containers.list(all=True, filters={"id": container_id}) == []


@pytest.fixture
def slow_batching_repo(tmp_path: Path) -> Path:
    """A model repository whose batches wait 3 s to fill, so concurrent requests surely share one, and
    whose server logs its metrics."""
    sources = tmp_path / "sources"
    shutil.copytree(EMBEDDED_MODEL_REPO / "torchserve", sources)
    (sources / MODEL_CONFIG).write_text(f"minWorkers: 1\nmaxWorkers: 1\nbatchSize: {BATCH}\nmaxBatchDelay: 3000\n")
    # The batches are read back from the per-batch metric lines TorchServe logs in its "log" metrics mode.
    config = sources / "config.properties"
    config.write_text(config.read_text().replace("metrics_mode=prometheus", "metrics_mode=log"))
    folder = tmp_path / "repo" / "torchserve"
    folder.mkdir(parents=True)
    card = load_card(MODEL)
    TorchServe(TargetOptions(model_name=card.name, card=card)).build_deployment(sources, folder)
    return tmp_path / "repo"


def test_an_undecodable_request_gets_its_own_400_and_spares_its_batch(settings, samples, slow_batching_repo):
    bodies = [sample.data for sample in samples] + [UNDECODABLE]
    with deploy("torchserve", replace(settings, model_repo=slow_batching_repo)) as deployment:
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda body: predict(deployment, body, deployment.endpoint.headers), bodies))
        *good, bad = answers
        assert [answer.status_code for answer in good] == [200] * len(good), [a.text for a in good]
        for sample, answer in zip(samples, good):
            prediction = deployment.endpoint.protocol.decode(answer.status_code, answer.content)
            assert len(prediction.classes) == 5, sample.id
        assert bad.status_code == 400
        assert bad.json()["type"] == "InvalidImage" and "cannot decode image" in bad.json()["message"]
        batches = handled_batches(deployment, {answer.headers["x-request-id"] for answer in answers})
    bad_batch = next((batch for batch in batches if bad.headers["x-request-id"] in batch), set())
    assert len(bad_batch) > 1, f"the undecodable request was not handled with others; batches: {batches}"


def handled_batches(deployment: Deployment, request_ids: set[str], timeout: float = 10.0) -> list[set[str]]:
    """The request ids of each handler call, from TorchServe's per-batch PredictionTime metric log lines."""
    deadline = time.monotonic() + timeout
    while True:
        stdout, stderr = deployment.container.get_logs()
        logs = (stdout + stderr).decode("utf-8", "replace")
        batches = [set(ids.split(",")) for ids in BATCH_METRIC.findall(logs)]
        if set().union(*batches) >= request_ids or time.monotonic() > deadline:
            return batches
        time.sleep(0.5)


def test_auth_off_is_an_explicit_choice_the_server_honours(pytester, offline_image):
    pytester.makepyfile(
        test_open="""
        import requests

        def test_no_key_is_needed(serving_endpoint, serving_samples):
            assert serving_endpoint.headers == {}
            answer = requests.post(
                serving_endpoint.base_url + "/predictions/efficientnet_lite0", data=serving_samples[0].data
            )
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["classes"]) == 5
        """
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--serving=torchserve",
        f"--serving-image=torchserve={offline_image('torchserve')}",
        "--serving-torchserve-auth=off",
        "-k",
        "test_no_key_is_needed",
    )
    result.assert_outcomes(passed=1)
