"""Container lifecycle against a real Triton: failed starts, interrupts and cleanup leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from pytest_serving.containers.labels import SESSION_LABEL, TARGET_LABEL, container_labels
from pytest_serving.containers.server import ServingContainer, running_server
from pytest_serving.targets.base import TargetOptions
from pytest_serving.targets.triton import Triton


def session_containers(docker_client, session_id):
    return docker_client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session_id}"})


def test_a_server_that_fails_to_start_shows_its_log_and_leaves_no_container(
    pytester, offline_image, docker_client, session_id
):
    offline_image("triton")
    broken_repo = pytester.mkdir("repo")
    (broken_repo / "triton").mkdir()  # no model in it: Triton exits on the failed load
    result = pytester.runpytest_subprocess(
        "--serving=triton", f"--serving-model-repo={broken_repo}", "--serving-startup-timeout=120", "-x"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*container log tail*", "*efficientnet_lite0*"])
    assert session_containers(docker_client, session_id) == []


def unique_target(command: list[str]) -> Triton:
    """Triton's container spec under a name of its own, running ``command``."""
    target_class = type("Probe", (Triton,), {"name": f"probe-{uuid.uuid4().hex[:8]}", "command": lambda self: command})
    return target_class(TargetOptions())


def target_containers(docker_client, target):
    return docker_client.containers.list(all=True, filters={"label": f"{TARGET_LABEL}={target.name}"})


def test_a_container_created_but_not_started_is_removed(offline_image, docker_client):
    target = unique_target(["/no/such/server"])  # Docker creates the container, then cannot start it
    with pytest.raises(Exception, match="no/such/server"), running_server(target, offline_image("triton"), None, 30):
        pass
    assert target_containers(docker_client, target) == []


def test_a_container_the_daemon_creates_after_an_interrupt_is_removed(offline_image, docker_client, monkeypatch):
    """Ctrl-C while docker run is in flight: the daemon may finish creating the container afterwards."""
    target, image = unique_target(["sleep", "600"]), offline_image("triton")

    late_create: list[threading.Timer] = []

    def interrupted_start(container: ServingContainer) -> None:
        labels = container._kwargs["labels"]
        late_create.append(
            threading.Timer(1.0, docker_client.containers.create, [image, ["sleep", "600"]], {"labels": labels})
        )
        late_create[0].start()
        raise KeyboardInterrupt

    monkeypatch.setattr(ServingContainer, "start", interrupted_start)
    with pytest.raises(KeyboardInterrupt), running_server(target, image, None, 30):
        pass
    late_create[0].join()
    assert target_containers(docker_client, target) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupting_a_run_removes_its_container(tmp_path, offline_image, docker_client, session_id, signum):
    offline_image("triton")
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--serving=triton", "-q", str(tmp_path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTEST_SERVING_SESSION_ID": session_id},
        # A shell that starts a job in the background makes it ignore SIGINT; a terminal user's does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - no threads yet
    )
    try:
        deadline = time.monotonic() + 300
        while not session_containers(docker_client, session_id):
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the run never started a container"
            time.sleep(0.5)
        time.sleep(3)  # inside the run: the container is booting or answering
        process.send_signal(signum)
        output = process.communicate(timeout=120)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0, output
    assert session_containers(docker_client, session_id) == [], output


def test_imagefolder_layout_gives_the_same_kind_of_result(pytester, offline_image, shared_samples, session_id):
    offline_image("triton")
    folder = pytester.mkdir("val")
    picked = sorted(shared_samples.glob("n*.JPEG"))[::8]
    for index, path in enumerate(picked):
        wnid = path.name.split("_")[0]
        (folder / wnid).mkdir(exist_ok=True)
        (folder / wnid / f"ILSVRC2012_val_{index:08d}.JPEG").symlink_to(path)
    result = pytester.runpytest_subprocess(
        "--serving=triton",
        f"--serving-samples={folder}",
        f"--serving-classes={shared_samples / 'classes.tsv'}",
        f"--serving-report={pytester.path / 'out'}",
        "-m",
        "serving_contract",
    )
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK
    assert outcomes["passed"] + outcomes.get("xfailed", 0) == len(picked) + 1  # per-sample tests + aggregate
    correctness = json.loads((pytester.path / "out" / "results.json").read_text())["targets"]["triton"]["correctness"]
    assert correctness["n"] == len(picked)
    assert correctness["agreement"] >= 0.99


def test_a_pytest_a_test_starts_leaves_the_sessions_other_servers_running(pytester, offline_image, docker_client):
    """A pytest run in a subprocess (pytester, a user's own) inherits the session id; at its end it
    once removed every container of the session, the servers other xdist workers were loading included."""
    image = offline_image("triton")
    sibling = docker_client.containers.run(
        image,
        ["sleep", "300"],
        detach=True,
        labels=container_labels(Triton.name, instance=f"sibling-{uuid.uuid4().hex[:8]}"),
    )
    try:
        pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
        assert pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q").ret == pytest.ExitCode.OK
        sibling.reload()
        assert sibling.status == "running"
    finally:
        sibling.remove(force=True, v=True)
