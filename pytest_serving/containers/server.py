"""Boot one serving target in a container and wait until its model answers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import requests
from testcontainers.core.container import DockerContainer
from testcontainers.core.exceptions import ContainerStartException

from .. import progress
from ..protocols.endpoint import Endpoint
from ..targets.base import ServingTarget
from .cleanup import install_handlers, remove_instance
from .labels import container_labels
from .resources import ResourceMonitor

LOG_TAIL_LINES = 60
LOOPBACK = "127.0.0.1"
#: After an interrupted docker run, how long the daemon may still take to create the container.
CREATE_GRACE_S = 5.0


class ServerStartError(RuntimeError):
    """The server did not become ready; the message carries the container's log tail."""


class ServingContainer(DockerContainer):
    """A target's container: labelled, ports on loopback only, model repository read-only."""

    def __init__(self, target: ServingTarget, image: str, model_folder: Path | None) -> None:
        super().__init__(image)
        self.target = target
        self.instance = uuid.uuid4().hex
        self.with_command(target.command())
        for key, value in target.environment().items():
            self.with_env(key, value)
        for port in target.ports.values():
            # A random host port bound to 127.0.0.1: nothing outside this machine can reach the server.
            self.ports[f"{port}/tcp"] = (LOOPBACK, None)
        if model_folder is not None:
            self.with_volume_mapping(str(model_folder.resolve()), target.model_mount, "ro")
        self.with_kwargs(**container_options(target, self.instance))
        #: Memory and CPU readings from start to removal, and the cold start; set once started.
        self.monitor: ResourceMonitor | None = None

    def created(self) -> bool:
        """Whether Docker handed back this container (a failed or interrupted docker run does not)."""
        try:
            self.get_wrapped_container()
        except ContainerStartException:
            return False
        return True

    def endpoint(self) -> Endpoint:
        docker_api = self.get_docker_client().client.api
        urls = {}
        for role, port in self.target.ports.items():
            mapping = docker_api.port(self.get_container_id(), port)
            urls[role] = f"http://{LOOPBACK}:{mapping[0]['HostPort']}"
        return Endpoint(self.target.name, urls, self.image, started_by_plugin=True, read_file=self.read_file)

    def read_file(self, path: str) -> bytes:
        """A file's bytes from inside the running container (keys and tokens servers write at start)."""
        result = self.exec(["cat", path])
        if result.exit_code != 0:
            raise FileNotFoundError(f"{path} in {self.target.name} container: {result.output!r}")
        return result.output

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            stdout, stderr = self.get_logs()
        except docker.errors.DockerException as error:
            return f"(no logs: {error})"
        text = (stdout + stderr).decode("utf-8", "replace").splitlines()
        return "\n".join(text[-lines:])

    def postmortem(self) -> str:
        """What Docker says of the container now (state; for a stopped one its exit code and whether the
        kernel killed it for memory) and its log tail: why a server stopped answering mid-test."""
        try:
            container = self.get_wrapped_container()
            container.reload()
        except docker.errors.NotFound:
            return f"{self.target.name} container ({self.image}): removed"
        state = container.attrs.get("State", {})
        line = f"{self.target.name} container ({self.image}): {state.get('Status', container.status)}"
        if not state.get("Running", False):
            line += (
                f", exit code {state.get('ExitCode')}, OOM-killed: {state.get('OOMKilled')}, "
                f"finished {state.get('FinishedAt')}"
            )
        return f"{line}\n--- container log tail ---\n{self.log_tail()}"

    def state(self) -> str:
        """Docker's status of the container ("running", "exited"…), "removed" once gone."""
        try:
            container = self.get_wrapped_container()
            container.reload()
            return container.status
        except docker.errors.NotFound:
            return "removed"


def container_options(target: ServingTarget, instance: str) -> dict:
    """docker-py create() options: labels, and a GPU device request only when asked for."""
    options: dict = {"labels": container_labels(target.name, instance)}
    gpus = target.options.gpus
    if gpus:
        count = -1 if gpus == "all" else int(gpus)
        options["device_requests"] = [docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])]
    return options


def wait_until_ready(container: ServingContainer, timeout: float) -> Endpoint:
    """Poll the target's readiness probe; fail fast if the container exits, show logs on failure."""
    endpoint = container.endpoint()
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        while time.monotonic() < deadline:
            if container.target.is_ready(endpoint, session):
                return endpoint
            state = container.state()
            if state in ("exited", "dead", "removed"):
                raise ServerStartError(
                    f"{container.target.name} container ({container.image}) {state} before it was ready.\n"
                    f"--- container log tail ---\n{container.log_tail()}"
                )
            time.sleep(0.5)
    raise ServerStartError(
        f"{container.target.name} ({container.image}) not ready after {timeout:.0f} s "
        f"(raise --serving-startup-timeout if the machine is slow).\n"
        f"--- container log tail ---\n{container.log_tail()}"
    )


@contextmanager
def running_server(
    target: ServingTarget, image: str, model_folder: Path | None, startup_timeout: float
) -> Iterator[tuple[ServingContainer, Endpoint]]:
    """Start the target, yield it once ready, and always remove the container afterwards.

    From the start, a thread reads the container's memory and CPU (``container.monitor``);
    ``monitor.startup_s`` is the time from the start to the first passed readiness probe.
    """
    install_handlers()
    container = ServingContainer(target, image, model_folder)
    try:
        started = time.monotonic()
        with progress.activity(target.name, "boot", image):
            container.start()
            container.monitor = ResourceMonitor(container.get_wrapped_container()).start()
            endpoint = wait_until_ready(container, startup_timeout)
            container.monitor.startup_s = time.monotonic() - started
            progress.note(f"ready, cold start {container.monitor.startup_s:.1f} s")
        yield container, endpoint
    except BaseException as error:
        if not container.created():
            # docker run did not hand back a container: its start failed after the create, or a
            # signal interrupted the call while the daemon was still creating it.
            interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
            remove_instance(container.instance, wait_s=CREATE_GRACE_S if interrupted else 0.0)
        raise
    finally:
        if container.monitor is not None:
            container.monitor.stop()
        try:
            container.stop(force=True)
        except docker.errors.NotFound:
            pass
