import json

import pytest
import requests

from pytest_serving.protocols.base import ProtocolError
from pytest_serving.protocols.torchserve import (
    TokenKeys,
    TorchServeProtocol,
    api_version,
    bearer,
    error_message,
    key_refused,
    worker_states,
    workers_ready,
)
from pytest_serving.targets.base import Endpoint, TargetOptions
from pytest_serving.targets.torchserve import (
    INFERENCE_KEY_ENV,
    MANAGEMENT_KEY_ENV,
    MANAGEMENT_URL_ENV,
    TorchServe,
    TorchServeAuthError,
    keys_from_environment,
    management_url,
    parse_auth,
)

# What TorchServe 0.12 writes to key_file.json at start.
KEY_FILE = json.dumps(
    {
        "management": {"key": "B-E5KSRM", "expiration time": "2024-02-16T21:12:24.801167Z"},
        "inference": {"key": "gNRuA7dS", "expiration time": "2024-02-16T21:12:24.801148Z"},
        "API": {"key": "yv9uQajP"},
    }
).encode()


# What TorchServe 0.12 answers a request without a valid key.
REFUSED_KEY = b"""{
  "code": 400,
  "type": "InvalidKeyException",
  "message": "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
}
"""
INVALID_IMAGE = b'{"code": 400, "type": "InvalidImage", "message": "cannot decode image: x"}'


def describe(*statuses, min_workers=1):
    workers = [{"id": str(9000 + i), "status": status, "pid": 100 + i} for i, status in enumerate(statuses)]
    return json.dumps(
        [{"modelName": "m", "minWorkers": min_workers, "maxWorkers": 1, "batchSize": 8, "workers": workers}]
    ).encode()


def test_encode_posts_the_image_file_as_the_body():
    image = b"\xff\xd8\xff\xe0 not really a jpeg"
    request = TorchServeProtocol("efficientnet_lite0").encode(image)
    assert (request.method, request.path, request.body) == ("POST", "/predictions/efficientnet_lite0", image)
    assert request.headers == {"Content-Type": "application/octet-stream"}


def test_decode_top5():
    body = json.dumps({"classes": [281, 282, 285, 287, 728], "probabilities": [0.6, 0.2, 0.1, 0.05, 0.01]})
    prediction = TorchServeProtocol("m").decode(200, body.encode())
    assert prediction.classes == (281, 282, 285, 287, 728)
    assert prediction.probabilities == pytest.approx((0.6, 0.2, 0.1, 0.05, 0.01))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # The handler's per-request error.
        (400, INVALID_IMAGE, r"HTTP 400: InvalidImage: cannot decode image: x"),
        # TorchServe's own errors have the same shape (pretty-printed); a refused key is a 400 too.
        (400, REFUSED_KEY, r"HTTP 400: InvalidKeyException: Token Authorization failed\."),
        (503, b"<html>proxy error</html>", r"HTTP 503: <html>proxy error</html>"),
    ],
)
def test_decode_error_status_carries_the_servers_message(status, body, expected):
    with pytest.raises(ProtocolError, match=expected):
        TorchServeProtocol("m").decode(status, body)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[281, 282]",
        b'{"classes": [1, 2]}',
        b'{"classes": [1, 2], "probabilities": [0.5]}',
        b'{"classes": [], "probabilities": []}',
        b'{"classes": ["cat"], "probabilities": [1.0]}',
    ],
)
def test_decode_rejects_malformed_answers(body):
    with pytest.raises(ProtocolError):
        TorchServeProtocol("m").decode(200, body)


def test_error_message_of_a_non_json_body_is_its_start():
    assert error_message(b"x" * 800) == "x" * 500


def test_a_refused_key_is_told_apart_from_other_errors():
    assert key_refused(400, REFUSED_KEY)
    assert not key_refused(400, INVALID_IMAGE)
    assert not key_refused(400, b"InvalidKeyException")


def test_key_file_gives_the_inference_and_management_keys():
    assert TokenKeys.from_key_file(KEY_FILE) == TokenKeys(inference="gNRuA7dS", management="B-E5KSRM")


@pytest.mark.parametrize("content", [b"", b"{", b"{}", b'{"inference": {"key": "a"}}', b"[]"])
def test_incomplete_key_file_is_a_value_error(content):
    with pytest.raises(ValueError):
        TokenKeys.from_key_file(content)


def test_bearer_header():
    assert bearer("gNRuA7dS") == {"Authorization": "Bearer gNRuA7dS"}
    assert bearer(None) == {}


@pytest.mark.parametrize(
    ("body", "ready"),
    [
        (describe("READY"), True),
        (describe(), False),  # registered, no worker started yet: /ping already says Healthy
        (describe("UNLOADING"), False),
        (describe("READY", "UNLOADING", min_workers=2), False),
        (describe("READY", "READY", min_workers=2), True),
        (b'{"code": 404, "type": "ModelNotFoundException", "message": "Model not found: m"}', False),
        (b"not json", False),
    ],
)
def test_workers_ready(body, ready):
    assert workers_ready(body) is ready


def test_api_version_from_the_openapi_description():
    assert api_version(b'{"openapi": "3.0.1", "info": {"title": "TorchServe APIs", "version": "0.12.0"}}') == "0.12.0"
    assert api_version(b"{}") is None


def target(auth="on"):
    return TorchServe(TargetOptions(model_name="m", extra={"serving_torchserve_auth": auth}))


def started(files):
    """An endpoint of a container holding ``files``, read as ServingContainer.read_file does."""

    def read_file(path):
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    urls = {"http": "http://127.0.0.1:1", "management": "http://127.0.0.1:2"}
    return Endpoint("torchserve", urls, "img", started_by_plugin=True, read_file=read_file)


def test_command_serves_the_archive_with_token_authorization_by_default():
    command = TorchServe(TargetOptions(model_name="m")).command()
    assert command[:3] == ["torchserve", "--start", "--foreground"]
    assert "m=m.mar" in command
    assert "--disable-token-auth" not in command


def test_auth_off_starts_the_server_without_keys_and_sends_none():
    unauthorized = target("off")
    assert unauthorized.command()[-1] == "--disable-token-auth"
    endpoint = Endpoint("torchserve", {"http": "http://127.0.0.1:1"}, "img", started_by_plugin=False)
    assert unauthorized.request_headers(endpoint) == {}


@pytest.mark.parametrize("value", ["maybe", ""])
def test_auth_option_accepts_only_on_and_off(value):
    with pytest.raises(ValueError, match="on or off"):
        parse_auth(value)


def test_keys_of_a_server_we_started_come_from_its_key_file():
    assert target().request_headers(started({"key_file.json": KEY_FILE})) == {"Authorization": "Bearer gNRuA7dS"}


def test_no_keys_while_the_key_file_is_not_written_or_half_written():
    assert target().token_keys(started({})) is None
    assert target().token_keys(started({"key_file.json": KEY_FILE[:40]})) is None


def test_keys_of_an_external_server_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(INFERENCE_KEY_ENV, "inf")
    monkeypatch.setenv(MANAGEMENT_KEY_ENV, "mgmt")
    assert keys_from_environment() == TokenKeys(inference="inf", management="mgmt")


def test_missing_environment_keys_say_how_to_fix_it(monkeypatch):
    monkeypatch.delenv(INFERENCE_KEY_ENV, raising=False)
    monkeypatch.setenv(MANAGEMENT_KEY_ENV, "mgmt")
    with pytest.raises(TorchServeAuthError, match=INFERENCE_KEY_ENV):
        keys_from_environment()


def test_management_url_of_an_external_server(monkeypatch):
    monkeypatch.delenv(MANAGEMENT_URL_ENV, raising=False)
    external = Endpoint("torchserve", {"http": "http://10.0.0.5:8080"}, "external", started_by_plugin=False)
    assert management_url(external) == "http://10.0.0.5:8081"
    monkeypatch.setenv(MANAGEMENT_URL_ENV, "http://mgmt.example:9000/")
    assert management_url(external) == "http://mgmt.example:9000"
    ours = Endpoint("torchserve", {"http": "a", "management": "http://127.0.0.1:5"}, "img", started_by_plugin=True)
    assert management_url(ours) == "http://127.0.0.1:5"


class RecordingSession:
    """Answers every GET with one canned response and records the headers it was sent."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body, self.sent = status, body, []

    def get(self, url, timeout, headers):
        self.sent.append((url, headers))
        response = requests.Response()
        response.status_code, response._content = self.status, self.body
        return response


def test_readiness_asks_the_management_api_with_the_management_key():
    session = RecordingSession(200, describe("READY"))
    assert target().is_ready(started({"key_file.json": KEY_FILE}), session)
    assert session.sent == [("http://127.0.0.1:2/models/m", {"Authorization": "Bearer B-E5KSRM"})]


def test_not_ready_and_not_asked_before_the_key_file_exists():
    session = RecordingSession(200, describe("READY"))
    assert not target().is_ready(started({}), session)
    assert session.sent == []


def test_a_refused_management_key_fails_at_once_instead_of_waiting_for_the_timeout():
    with pytest.raises(TorchServeAuthError, match="refused the management key"):
        target().is_ready(started({"key_file.json": KEY_FILE}), RecordingSession(400, REFUSED_KEY))


def test_worker_states_name_each_worker_by_id_and_pid():
    assert worker_states(describe("READY", "UNLOADING")) == {
        "worker 9000 pid 100": "READY",
        "worker 9001 pid 101": "UNLOADING",
    }
    assert list(worker_states(b"not json")) == ["(describe-model unreadable)"]
