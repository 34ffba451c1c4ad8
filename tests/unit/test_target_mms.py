"""Multi Model Server's target: its readiness and health parsing, start command and deviations, without a server."""

import json
import shlex

import pytest

from pytest_serving.protocols.endpoint import Endpoint
from pytest_serving.robustness import catalogue
from pytest_serving.robustness.catalogue import UNKNOWN_VERSION_NAME
from pytest_serving.targets import TARGETS
from pytest_serving.targets.base import TargetOptions
from pytest_serving.targets.mms import MODEL_FILES, MultiModelServer, canary_image, management_url, ready_workers


def describe(*statuses: str, min_workers: int = 1) -> bytes:
    """A describe-model answer as MMS 1.1 writes it: one object, not TorchServe's list of one."""
    workers = [{"id": f"9000-{index}", "status": status, "gpu": False} for index, status in enumerate(statuses)]
    return json.dumps({"modelName": "m", "minWorkers": min_workers, "maxWorkers": 4, "workers": workers}).encode()


def test_ready_once_min_workers_are_ready():
    assert ready_workers(describe("READY")) == ("9000-0",)
    assert ready_workers(describe("READY", "UNLOADING", "READY", min_workers=2)) == ("9000-0", "9000-2")


@pytest.mark.parametrize(
    "body",
    [
        describe(),
        describe("UNLOADING"),
        describe("READY", "STARTING", min_workers=2),
        b'[{"workers": [{"id": "1", "status": "READY"}]}]',
        b"<html>",
        b"",
    ],
    ids=["no-workers", "not-ready", "fewer-than-min", "torchserve-list", "html", "empty"],
)
def test_not_ready_otherwise(body):
    assert ready_workers(body) == ()


def test_management_url_is_published_or_the_next_port():
    published = Endpoint("mms", {"http": "http://127.0.0.1:1000", "management": "http://127.0.0.1:2000"}, "i", True)
    assert management_url(published) == "http://127.0.0.1:2000"
    assert management_url(Endpoint("mms", {"http": "http://host:8080"}, "i", False)) == "http://host:8081"
    assert management_url(Endpoint("mms", {"http": "http://host"}, "i", False)) == "http://host:81"


def test_start_command_archives_with_mms_archiver_then_serves_the_archive():
    (shell, flag, script) = MultiModelServer(TargetOptions(model_name="resnet50")).command()
    assert (shell, flag) == ("sh", "-c")
    steps = [shlex.split(step) for step in script.split(" && ")]
    copy = next(step for step in steps if step[0] == "cp")
    assert copy[1:-1] == ["/models/handler.py", *(f"/models/resnet50/{name}" for name in MODEL_FILES)]
    archiver = next(step for step in steps if step[0] == "model-archiver")
    assert archiver[archiver.index("--model-name") + 1] == "resnet50"
    assert archiver[archiver.index("--handler") + 1] == "handler:handle"
    serve = steps[-1]
    assert serve[:4] == ["exec", "multi-model-server", "--start", "--foreground"]
    assert serve[serve.index("--models") + 1] == "resnet50=resnet50.mar"
    assert serve[serve.index("--mms-config") + 1] == "/models/config.properties"


def test_is_discovered_with_no_server_metrics():
    assert TARGETS["mms"] is MultiModelServer
    assert MultiModelServer.server_metrics is None


def test_known_deviations_name_cases_sent_to_mms():
    """A deviation keyed by a case that does not exist, or that MMS's protocol never sends, would never apply."""
    protocol = MultiModelServer(TargetOptions(model_name="m")).protocol()
    cases = {case.name: case for case in catalogue(canary_image())}
    for deviations in MultiModelServer.known_deviations.values():
        for name in deviations:
            assert name in cases and cases[name].applies_to(protocol), name
    # MMS has no versions: the request the deviation excuses names one in its path.
    assert cases["unknown-version"].request(protocol, canary_image()).path == f"/predictions/m/{UNKNOWN_VERSION_NAME}"
