"""Existing deployments: --serving-url tests a server the plugin did not start, and never loads a remote one."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests
from docker.models.containers import Container

from pytest_serving.containers.labels import SESSION_LABEL, container_labels
from pytest_serving.deployment import EMBEDDED_MODEL_REPO, built_deployment
from pytest_serving.model.card import load_card
from pytest_serving.report.results import ResultsStore
from pytest_serving.targets.base import Endpoint, TargetOptions
from pytest_serving.targets.triton import Triton

STARTUP_TIMEOUT_S = 300
#: Never contacted: the refusal test proves that load is refused before anything is sent.
REMOTE_URL = "http://10.255.255.1:1"


@pytest.fixture
def existing_triton(docker_client, offline_image) -> Iterator[tuple[str, Container]]:
    """A Triton started as a team runs its own deployment: Docker directly, none of the plugin's machinery.

    Labelled like the plugin's containers so `pytest-serving cleanup` would still find it if this
    process died; yields (base URL on 127.0.0.1, the docker container).
    """
    image = offline_image("triton")
    card = load_card("efficientnet_lite0")
    target = Triton(TargetOptions(model_name=card.name, card=card, model_repo=EMBEDDED_MODEL_REPO))
    folder = built_deployment(target, EMBEDDED_MODEL_REPO / Triton.model_repo_folder)
    http_port = f"{Triton.ports['http']}/tcp"
    container = docker_client.containers.run(
        image,
        target.command(),
        detach=True,
        ports={http_port: ("127.0.0.1", None)},
        volumes={str(folder.resolve()): {"bind": Triton.model_mount, "mode": "ro"}},
        labels=container_labels(Triton.name, instance="started-outside-pytest"),
    )
    try:
        container.reload()
        url = f"http://127.0.0.1:{container.ports[http_port][0]['HostPort']}"
        wait_until_ready(target, Endpoint(Triton.name, {"http": url}, image, started_by_plugin=False), container)
        yield url, container
    finally:
        container.remove(force=True, v=True)


def wait_until_ready(target: Triton, endpoint: Endpoint, container: Container) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with requests.Session() as session:
        while not target.is_ready(endpoint, session):
            container.reload()
            logs = container.logs(tail=40).decode(errors="replace")
            assert container.status == "running", f"Triton {container.status} before it was ready:\n{logs}"
            assert time.monotonic() < deadline, f"Triton not ready after {STARTUP_TIMEOUT_S} s:\n{logs}"
            time.sleep(0.5)


def test_contract_and_smoke_load_run_against_an_existing_server(pytester, existing_triton, docker_client, session_id):
    url, container = existing_triton
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider",
        "--serving=triton",
        f"--serving-url=triton={url}",
        "--serving-samples-limit=5",
        "--serving-report=out",
        "-m", "serving_contract or serving_load_suite",
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert outcomes["passed"] + outcomes.get("xfailed", 0) == 5 + 1 + 1  # per sample, aggregate, smoke load
    result.stdout.fnmatch_lines(["triton: ran: external (triton *)"])
    triton = json.loads((pytester.path / "out" / "results.json").read_text())["targets"]["triton"]
    assert triton["server"]["started_by_plugin"] is False
    assert triton["server"]["image"] == "external"
    assert triton["correctness"]["n"] == 5
    assert [entry["configuration"]["base_url"] for entry in triton["load"]] == [url]
    container.reload()
    assert container.status == "running", "the plugin must leave a server it did not start alone"
    assert docker_client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session_id}"}) == []


#: The --serving-url endpoint handed to the fixtures as given (the plugin's own deployment would
#: probe it for readiness), and a tripwire: a connection to any address but loopback fails the
#: test instead of leaving the machine. Locust runs in child processes, which start only once
#: the safety check has passed.
UNCONTACTED_DEPLOYMENT = """
import ipaddress
import socket

import pytest

from pytest_serving.deployment import Deployment, target_options
from pytest_serving.targets import TARGETS
from pytest_serving.targets.base import Endpoint


@pytest.fixture(scope="session", autouse=True)
def connections_stay_on_loopback():
    connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"connection attempted to {address[0]}")
        return connect(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", loopback_only)
        yield


@pytest.fixture(scope="session")
def serving_deployment(serving_settings, serving_target_name):
    target = TARGETS[serving_target_name](target_options(serving_settings), image_origin="external")
    endpoint = Endpoint(
        serving_target_name,
        {"http": serving_settings.urls[serving_target_name]},
        "external",
        started_by_plugin=False,
        model_name=target.model_name,
        protocol=target.protocol(),
    )
    return Deployment(target, endpoint, None)
"""

REMOTE_LOAD_TESTS = """
import socket

import pytest


def test_remote_load(serving_load):
    serving_load(users=1, duration=1)


def test_remote_load_tripwire_holds():
    # 0.0.0.0 is not loopback to the tripwire, and reaches only this host should the tripwire fail.
    with pytest.raises(AssertionError, match="connection attempted to 0.0.0.0"):
        socket.create_connection(("0.0.0.0", 9), timeout=1)
"""


def test_load_on_a_remote_server_is_refused_before_anything_is_sent(pytester):
    pytester.makeconftest(UNCONTACTED_DEPLOYMENT)
    pytester.makepyfile(test_remote=REMOTE_LOAD_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider",
        f"--serving-url=triton={REMOTE_URL}",
        "--serving-report=out",
        "-k", "test_remote_load",  # the built-in suites would classify through the same endpoint
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert (outcomes.get("failed"), outcomes.get("passed")) == (1, 1), result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*refusing to send load to '10.255.255.1'*not a loopback address and pytest-serving did not start it*"]
    )
    result.stdout.no_fnmatch_line("*connection attempted to*")
    recorded = ResultsStore(pytester.path / "out" / "results.json").read()
    assert "load" not in recorded.get("targets", {}).get("triton", {}), "a load phase was recorded"
