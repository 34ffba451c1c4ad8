"""PyTorch TorchServe.

The model travels as a model archive (``<model>.mar``) that ``torch-model-archiver`` builds
on the host from the card's ONNX, the project's generic ``handler.py`` (onnxruntime), the
card's ``serving_preprocess.py`` and ``serving_card.json``, and ``model-config.yaml`` (workers
and server-side batching). The same command runs the official images and the offline one;
the official images lack onnxruntime, so there the handler needs an image with it
(``--serving-image torchserve=...``).

TorchServe 0.12 enforces token authorization by default: at start it writes
``key_file.json`` into its working directory, with one key for the inference API and one
for the management API. For servers the plugin starts, the keys are read from that file
inside the container; for ``--serving-url`` servers they come from the environment
variables ``PYTEST_SERVING_TORCHSERVE_INFERENCE_KEY`` and
``PYTEST_SERVING_TORCHSERVE_MANAGEMENT_KEY``, and the management API is found at
``PYTEST_SERVING_TORCHSERVE_MANAGEMENT_URL`` (default: the inference URL's port + 1, as in
TorchServe's 8080/8081 layout). ``--serving-torchserve-auth=off`` is the explicit opt-out: it
starts the server with ``--disable-token-auth`` and sends no keys.

A release deployment (``--serving-candidate``) holds two archives of one model, the current card
as version 1 and the candidate as version 2, both named at start with ``--models name=<v1>.mar
name=<v2>.mar``: TorchServe 0.12 registers each pair in turn under the given name, the first as the
default version, and starts each version's workers (``--models all`` would name models after their
files and register them in directory order). The rollout needs the management API's register and
unregister calls, which 0.12 refuses unless the server runs with ``--enable-model-api``; only
release deployments get it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit, urlunsplit

import requests

from ..files import build_atomically
from ..images.recipe import ONNXRUNTIME, OfflineImage
from ..metrics.server import ServerMetricsSpec
from ..model.deploy_files import SERVING_PREPROCESS, write_card_files
from ..model.preprocess import CARD_FILE, MODEL_FILE
from ..protocols.base import Protocol
from ..protocols.torchserve import (
    ModelManagement,
    TokenKeys,
    TorchServeProtocol,
    api_version,
    bearer,
    error_message,
    key_refused,
    registered_versions,
    versions_ready,
    worker_states,
    workers_ready,
)
from ..types import HttpRequest, Option
from .base import JVM_MEMORY_SWING_MB, Endpoint, ServingTarget, TargetOptions, probe

if TYPE_CHECKING:
    from ..model.card import ModelCard

TORCHSERVE_VERSION = "0.12.0"
#: Relative on purpose: ``docker exec`` runs in the container's working directory, where
#: torchserve is started and writes the file (/home/model-server in both image families).
KEY_FILE = "key_file.json"
INFERENCE_KEY_ENV = "PYTEST_SERVING_TORCHSERVE_INFERENCE_KEY"
MANAGEMENT_KEY_ENV = "PYTEST_SERVING_TORCHSERVE_MANAGEMENT_KEY"
MANAGEMENT_URL_ENV = "PYTEST_SERVING_TORCHSERVE_MANAGEMENT_URL"
#: The sources in ``model_repo/torchserve/`` that go into every archive.
HANDLER = "handler.py"
MODEL_CONFIG = "model-config.yaml"
SERVER_CONFIG = "config.properties"
#: The body of ``TorchServe._drain``'s request: no image, so the handler answers it without running the model.
DRAIN_BODY = b"pytest-serving: drain the old version"

#: ``--serving-torchserve-auth``: whether the plugin sends TorchServe's keys (see the module docstring).
AUTH_OPTION = Option(
    "serving-torchserve-auth", "TorchServe token authorization: on (send the server's keys) or off", default="on"
)

TORCHSERVE_OFFLINE_IMAGE = OfflineImage(
    # "-ort": the handler runs the card's ONNX with onnxruntime (images before model cards had none);
    # "-procps": TorchServe stops a worker with `kill -9 <pid>` (OSUtils.getKillCmd) when a model or
    # version is unregistered or scaled down; without a kill binary (minbase has none) every
    # unregistration answers 500 "Interrupted while cleaning resources" (images before the rollout had none).
    tag=f"pytest-serving/torchserve:{TORCHSERVE_VERSION}-ort-procps-cpu",
    apt_packages=("openjdk-17-jre-headless", "procps"),
    wheels=(
        f"torchserve=={TORCHSERVE_VERSION}",
        f"torch-model-archiver=={TORCHSERVE_VERSION}",
        # TorchServe's workers import yaml without declaring it.
        "pyyaml==6.0.3",
        # The same versions as the in-process reference, so both sides decode and infer alike.
        "numpy==2.4.6",
        "pillow==13.0.0",
        ONNXRUNTIME,
        # TorchServe's worker imports torch whatever the handler runs. The CPU build: pip on the host must find it (a find-links folder holding the wheel,
        # or https://download.pytorch.org/whl/cpu as an extra index); PyPI has no +cpu builds.
        "torch==2.13.0+cpu",
    ),
    # The official images' user and working directory, so the key file is found alike.
    dockerfile_steps="""
RUN useradd --create-home --uid 1000 model-server \\
 && java -version \\
 && which kill \\
 && python3 -c 'import torch, ts, model_archiver, yaml, numpy, PIL, onnxruntime'
USER model-server
WORKDIR /home/model-server
CMD ["torchserve", "--start", "--foreground", "--ncs", "--model-store", "/models"]
""",
)


class TorchServeAuthError(RuntimeError):
    """TorchServe refuses our keys, or we have none to send; the message says how to fix it."""


class ModelArchiveError(RuntimeError):
    """torch-model-archiver failed or is not installed."""


class ManagementError(RuntimeError):
    """TorchServe's management API answered a register, set-default or unregister call with an error."""


class TorchServe(ServingTarget):
    #: The Java frontend's heap grows towards its maximum (a quarter of the machine's memory) without a
    #: leak: a smoke phase of the unmodified MMS grew 38 MB over 251 requests (150 MB per 1000, 99 %
    #: interval 102 to 199). A handler keeping 2 MiB per request grows by that much in 50 requests.
    memory_swing_mb = JVM_MEMORY_SWING_MB
    name = "torchserve"
    official_image = f"pytorch/torchserve:{TORCHSERVE_VERSION}-cpu"
    official_gpu_image = f"pytorch/torchserve:{TORCHSERVE_VERSION}-gpu"
    offline_image = TORCHSERVE_OFFLINE_IMAGE
    ports: ClassVar[dict[str, int]] = {"http": 8080, "management": 8081, "metrics": 8082}
    model_repo_folder = "torchserve"
    #: TorchServe's frontend counters; its inference latency includes the queue time.
    server_metrics = ServerMetricsSpec(
        requests="ts_inference_requests_total",
        queue=("ts_queue_latency_microseconds",),
        server=("ts_inference_latency_microseconds",),
        missing_hint="set metrics_mode=prometheus in TorchServe's config.properties (or TS_METRICS_MODE=prometheus)",
    )
    extra_options: ClassVar[tuple[Option, ...]] = (AUTH_OPTION,)
    reads_environment: ClassVar[Mapping[str, tuple[str, str]]] = {
        INFERENCE_KEY_ENV: (
            "none",
            (
                "TorchServe inference API key for a `--serving-url` server (keys of servers the plugin starts "
                "are read from the container)"
            ),
        ),
        MANAGEMENT_KEY_ENV: ("none", "TorchServe management API key for a `--serving-url` server"),
        MANAGEMENT_URL_ENV: (
            "the inference URL with port + 1",
            "TorchServe management API of a `--serving-url` server",
        ),
    }
    known_deviations: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "0.12": {
            "oversize-80mib": (
                "TorchServe 0.12.0 refuses bodies over max_request_size at its HTTP layer with 413 and an empty "
                "body, before the handler runs: the status is right, the error has no text"
            )
        }
    }

    def __init__(self, options: TargetOptions, image_origin: str = "offline") -> None:
        super().__init__(options, image_origin)
        self.auth = parse_auth(options.extra.get(AUTH_OPTION.dest, AUTH_OPTION.default))
        self._keys: TokenKeys | None = None

    def build_deployment(self, sources: Path, dest: Path) -> None:
        """``<model>.mar`` (handler, card files, model-config.yaml) and the server's config.properties."""
        shutil.copyfile(sources / SERVER_CONFIG, dest / SERVER_CONFIG)
        build_model_archive(self.card, sources, dest)

    def release_unsupported(self) -> str | None:
        return None

    def build_release_deployment(self, sources: Path, dest: Path, candidate: ModelCard) -> None:
        """Two archives of the model (the current card's name): ``release_versions[0]`` holds the
        current card, ``release_versions[1]`` the candidate; each archive's version is what the
        handler puts in its answers' ``model_version``."""
        shutil.copyfile(sources / SERVER_CONFIG, dest / SERVER_CONFIG)
        for version, card in zip(self.release_versions, (self.card, candidate)):
            build_model_archive(
                card,
                sources,
                dest,
                version=version,
                model_name=self.model_name,
                archive=release_archive(self.model_name, version),
            )

    def version_protocol(self, version: str) -> Protocol:
        return TorchServeProtocol(self.model_name, version=version)

    #: The handler's JSON answers end with the archive's version (json.dumps: a space after the colon).
    answer_version_pattern = r'"model_version": ?"([^"]*)"'

    def rollout_unsupported(self) -> str | None:
        return None

    def serve_only(self, endpoint: Endpoint, version: str, timeout: float) -> None:
        """``version`` becomes the default and every other version is unregistered."""
        management = ModelManagement(self.model_name)
        self._manage(endpoint, management.set_default(version), timeout)
        listed = self._manage(endpoint, management.describe_all(), timeout)
        for other in registered_versions(listed.content):
            if other != version:
                self._manage(endpoint, management.unregister(other), timeout)

    def switch(self, endpoint: Endpoint, old: str, new: str, timeout: float) -> None:
        """Register ``new`` (synchronously, one worker up), make it the default, let ``old`` answer what
        it was given (``_drain``), unregister it (TorchServe answers once its workers have stopped);
        return once ``old`` is no longer listed."""
        management = ModelManagement(self.model_name)
        self._manage(endpoint, management.register(release_archive(self.model_name, new)), timeout)
        self._manage(endpoint, management.set_default(new), timeout)
        self._drain(endpoint, old, timeout)
        self._manage(endpoint, management.unregister(old), timeout)
        listed = registered_versions(self._manage(endpoint, management.describe_all(), timeout).content)
        if old in listed:
            raise ManagementError(
                f"torchserve: version {old} of {self.model_name} still listed after its unregistration: {listed}"
            )

    def _drain(self, endpoint: Endpoint, version: str, timeout: float) -> None:
        """Return once ``version`` has answered every request it took before it stopped being the default.

        TorchServe 0.12 kills a version's workers when it is unregistered, and requests it had taken
        but not answered are never answered (measured without this: 2 of 307 requests of 4 users hung
        until the client's 60 s timeout; through the rollout, 41 of 282 failed). A request addressed to
        the version by name queues behind them and its worker takes them in order, so its answer (the
        handler's 4xx for a body that is no image: no model runs) comes after theirs. Exact with one
        worker per version (model-config.yaml); a batch another worker still runs would show as failed
        requests in the rollout.
        """
        request = self.version_protocol(version).encode(DRAIN_BODY)
        headers = {**request.headers, **self.request_headers(endpoint)}
        requests.request(
            request.method, endpoint.base_url + request.path, data=request.body, headers=headers, timeout=timeout
        )

    def _manage(self, endpoint: Endpoint, request: HttpRequest, timeout: float) -> requests.Response:
        """Send one management request with the management key; ManagementError with the status and
        the body's text on any answer but 2xx."""
        keys = self.token_keys(endpoint) if self.auth else None
        url = management_url(endpoint) + request.path
        headers = {**request.headers, **bearer(keys.management if keys else None)}
        response = requests.request(request.method, url, data=request.body, headers=headers, timeout=timeout)
        if not response.ok:
            raise ManagementError(
                f"torchserve: {request.method} {url} answered HTTP {response.status_code}: {error_message(response.content)}"
            )
        return response

    def command(self) -> list[str]:
        candidate = self.options.candidate is not None
        models = (
            [f"{self.model_name}={release_archive(self.model_name, version)}" for version in self.release_versions]
            if candidate
            else [f"{self.model_name}={self.model_name}.mar"]
        )
        command = [
            "torchserve",
            "--start",
            "--foreground",
            "--ncs",
            "--model-store",
            self.model_mount,
            "--ts-config",
            f"{self.model_mount}/{SERVER_CONFIG}",
            *(["--enable-model-api"] if candidate else []),
            "--models",
            *models,
        ]
        return command if self.auth else [*command, "--disable-token-auth"]

    def is_ready(self, endpoint: Endpoint, session: requests.Session) -> bool:
        """Ready once the model's workers are (of both versions, in a release deployment): ``/ping``
        says Healthy before any worker has loaded the model."""
        if self.auth and self.token_keys(endpoint) is None:
            return False
        if self.options.candidate is not None:
            response = self._management_get(endpoint, session, ModelManagement(self.model_name).describe_all().path)
            return response is not None and response.ok and versions_ready(response.content, self.release_versions)
        response = self._management_get(endpoint, session, f"/models/{self.model_name}")
        return response is not None and response.ok and workers_ready(response.content)

    def health(self, endpoint: Endpoint, session: requests.Session) -> dict[str, object]:
        """Readiness, and every worker's id, pid and status: a worker that bad requests crashed and
        TorchServe restarted shows as another pid, a stuck one as a status other than READY. Both from one
        describe-model answer, so they never disagree."""
        if self.auth and self.token_keys(endpoint) is None:
            return {"ready": False, "workers": {}}
        response = self._management_get(endpoint, session, f"/models/{self.model_name}")
        body = response.content if response is not None else b""
        ready = response is not None and response.ok and workers_ready(body)
        return {"ready": ready, "workers": worker_states(body)}

    def protocol(self) -> Protocol:
        return TorchServeProtocol(self.model_name)

    def request_headers(self, endpoint: Endpoint) -> dict[str, str]:
        keys = self.token_keys(endpoint) if self.auth else None
        return bearer(keys.inference if keys else None)

    def server_version(self, endpoint: Endpoint, session: requests.Session) -> str:
        response = self._management_get(endpoint, session, "/api-description")
        found = api_version(response.content) if response is not None and response.ok else None
        return f"torchserve {found}" if found else "unknown"

    def token_keys(self, endpoint: Endpoint) -> TokenKeys | None:
        """The server's keys; None while a server we started has not written its key file yet."""
        if self._keys is not None:
            return self._keys
        if endpoint.read_file is None:
            self._keys = keys_from_environment()
            return self._keys
        try:
            self._keys = TokenKeys.from_key_file(endpoint.read_file(KEY_FILE))
        except (OSError, ValueError):
            # Not written yet, half written, or the container stopped (Docker's errors are
            # OSErrors): not ready, and the readiness loop reports an exited container.
            return None
        return self._keys

    def _management_get(self, endpoint: Endpoint, session: requests.Session, path: str) -> requests.Response | None:
        keys = self.token_keys(endpoint) if self.auth else None
        url = management_url(endpoint) + path
        response = probe(session, url, headers=bearer(keys.management if keys else None))
        if response is not None and key_refused(response.status_code, response.content):
            raise TorchServeAuthError(
                f"TorchServe at {url} refused the management key ({error_message(response.content)}); "
                f"check {MANAGEMENT_KEY_ENV}, or pass --serving-torchserve-auth=off "
                "if it runs with --disable-token-auth"
            )
        return response


def parse_auth(value: str) -> bool:
    """``--serving-torchserve-auth``: ``on`` or ``off``."""
    choices = {"on": True, "off": False}
    try:
        return choices[value.strip().lower()]
    except KeyError:
        raise ValueError(f"--serving-torchserve-auth: expected on or off, got {value!r}") from None


def keys_from_environment() -> TokenKeys:
    """The keys of a server the plugin did not start, which only its owner can read."""
    inference, management = os.environ.get(INFERENCE_KEY_ENV), os.environ.get(MANAGEMENT_KEY_ENV)
    if not inference or not management:
        raise TorchServeAuthError(
            f"TorchServe token authorization is on: set {INFERENCE_KEY_ENV} and {MANAGEMENT_KEY_ENV} to the "
            f"'inference' and 'management' keys of the server's {KEY_FILE}, or pass --serving-torchserve-auth=off "
            "if it runs with --disable-token-auth"
        )
    return TokenKeys(inference=inference, management=management)


def management_url(endpoint: Endpoint) -> str:
    """The management API's base URL: published by our container, else configured or derived."""
    if "management" in endpoint.urls:
        return endpoint.urls["management"]
    configured = os.environ.get(MANAGEMENT_URL_ENV)
    if configured:
        return configured.rstrip("/")
    parts = urlsplit(endpoint.base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port + 1}")).rstrip("/")


def release_archive(model_name: str, version: str) -> str:
    """The file name of one version's archive in a release deployment (both hold ``model_name``)."""
    return f"{model_name}-v{version}.mar"


def build_model_archive(
    card: ModelCard,
    sources: Path,
    dest: Path,
    version: str = "1.0",
    *,
    model_name: str | None = None,
    archive: str | None = None,
) -> Path:
    """``dest/<archive>`` (default ``<card>.mar``) from the card's files and the handler sources in
    ``sources``; the server knows it as ``model_name`` (default: the card's name) at ``version``."""
    model_name = model_name or card.name
    if importlib.util.find_spec("model_archiver") is None:
        raise ModelArchiveError(
            f"torch-model-archiver is not installed: pip install torch-model-archiver=={TORCHSERVE_VERSION} "
            "(part of pytest-serving[model])"
        )

    def archive_into(scratch: Path) -> Path:
        files = write_card_files(card, scratch / "files")
        command = [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            model_name,
            "--version",
            version,
            "--serialized-file",
            str(files / MODEL_FILE),
            "--handler",
            str(sources / HANDLER),
            "--extra-files",
            f"{files / SERVING_PREPROCESS},{files / CARD_FILE}",
            "--config-file",
            str(sources / MODEL_CONFIG),
            "--export-path",
            str(scratch),
            "--force",
        ]
        # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps
        # concurrent builds (pytest-xdist workers) out of each other's way.
        result = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(scratch)}, check=False
        )
        built = scratch / f"{model_name}.mar"
        if result.returncode != 0 or not built.is_file():
            raise ModelArchiveError(f"torch-model-archiver failed (exit {result.returncode}): {result.stderr[-2000:]}")
        return built

    return build_atomically(dest / (archive or f"{card.name}.mar"), archive_into)
