"""AWS Multi Model Server (MMS) 1.1, TorchServe's predecessor: a Java front end, Python workers.

It speaks TorchServe's inference API (``POST /predictions/{model}``, the same error bodies) with
no token authorization, so it reuses ``TorchServeProtocol``. The model travels as a model
archive (``<model>.mar``) that MMS's own ``model-archiver`` builds around the project's
generic ``handler.py`` and the card's files (``model.onnx``, ``serving_card.json``,
``serving_preprocess.py``); the handler runs the ONNX with onnxruntime, so the image has neither torch nor MXNet (MMS imports MXNet only for
legacy 0.4 archives, which have ``MANIFEST.json`` at their root instead of ``MAR-INF/``).

The archive is built inside the container when it starts (about a second): model-archiver
1.0.3 and torch-model-archiver both install the Python package ``model_archiver``, so MMS's
archiver cannot sit beside TorchServe's on the host; it runs in the image it belongs to.

Java: the front end (``model-server.jar``) is compiled for Java 8 (class files 52.0) and runs
unchanged, with no JVM flags, on Debian bookworm's openjdk-17-jre-headless, the only OpenJDK
bookworm packages.

Readiness is a prediction: MMS 1.1 reports a worker READY (and ``/ping`` Healthy) as soon as its
thread runs, also while the worker dies loading the model and is restarted again and again.

MMS 1.1 publishes no Prometheus endpoint: its metrics are log lines (``MMS_METRICS``, StatsD
format) and its APIs (``/ping``, ``/predictions``, ``/models``, ``/api-description``) report
no counters, so ``server_metrics`` is None and the load reports show client-side times only.
The AWS images of MMS carry MXNet and no onnxruntime, so the "official" image is this recipe's
tag: build it with ``pytest-serving build-images mms``.
"""

from __future__ import annotations

import functools
import io
import json
import shlex
import shutil
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

import requests
from PIL import Image

from ..images.recipe import ONNXRUNTIME, OfflineImage
from ..model.deploy_files import SERVING_PREPROCESS, write_card_files
from ..model.preprocess import CARD_FILE, MODEL_FILE
from ..protocols.base import Protocol
from ..protocols.endpoint import Endpoint
from ..protocols.torchserve import TorchServeProtocol
from ..types import ProtocolError
from .base import JVM_MEMORY_SWING_MB, ServingTarget, probe

MMS_VERSION = "1.1.11"
ARCHIVER_VERSION = "1.0.3"
#: The sources in ``model_repo/mms/`` beside the model's folder.
HANDLER = "handler.py"
SERVER_CONFIG = "config.properties"
#: The card's files, which ``build_deployment`` writes into ``<model>/`` and the archive packs beside the handler.
MODEL_FILES = (MODEL_FILE, CARD_FILE, SERVING_PREPROCESS)
#: Written by the start command into the working directory: MMS's APIs do not report its version.
VERSION_FILE = "mms-version"
HOME = "/home/model-server"
#: The readiness probe's prediction: an answer within this long, on an image this many pixels wide.
PROBE_TIMEOUT_S = 5.0
CANARY_SIZE = 32

MMS_OFFLINE_IMAGE = OfflineImage(
    tag=f"pytest-serving/mms:{MMS_VERSION}-cpu",
    apt_packages=("openjdk-17-jre-headless",),
    wheels=(
        f"multi-model-server=={MMS_VERSION}",
        f"model-archiver=={ARCHIVER_VERSION}",
        # The same versions as the in-process reference, so both sides decode and infer alike.
        "numpy==2.4.6",
        "pillow==13.0.0",
        ONNXRUNTIME,
    ),
    dockerfile_steps=f"""
RUN useradd --create-home --uid 1000 model-server \\
 && java -version \\
 && python3 -c 'import mms, model_archiver, numpy, PIL, onnxruntime'
USER model-server
WORKDIR {HOME}
CMD ["multi-model-server", "--start", "--foreground"]
""",
)


class MultiModelServer(ServingTarget):
    #: The Java frontend's heap grows towards its maximum (a quarter of the machine's memory) without a
    #: leak: a smoke phase of the unmodified MMS grew 38 MB over 251 requests (150 MB per 1000, 99 %
    #: interval 102 to 199). A handler keeping 2 MiB per request grows by that much in 50 requests.
    memory_swing_mb = JVM_MEMORY_SWING_MB
    name = "mms"
    official_image = MMS_OFFLINE_IMAGE.tag
    official_gpu_image = MMS_OFFLINE_IMAGE.tag
    offline_image = MMS_OFFLINE_IMAGE
    ports: ClassVar[dict[str, int]] = {"http": 8080, "management": 8081}
    model_repo_folder = "mms"
    #: No Prometheus endpoint in MMS 1.1 (see the module docstring).
    server_metrics = None
    known_deviations: ClassVar[dict[str, dict[str, str]]] = {
        "1.1": {
            "oversize-80mib": (
                "MMS 1.1.11 refuses bodies over max_request_size (6553500 bytes by default) at its Netty HTTP "
                "layer with 413 and an empty body, before the handler runs: the status is right, the error has no text"
            ),
            "unknown-version": (
                "MMS 1.1.11 has no model versions: its inference handler routes /predictions/{model}/{anything} "
                "by the model's name alone, so the handler, which never sees the URL, answers a request for a "
                "version that does not exist"
            ),
        }
    }

    def build_deployment(self, sources: Path, dest: Path) -> None:
        """The handler and config.properties, and the card's files in ``<model>/``; the start command
        archives them."""
        for name in (HANDLER, SERVER_CONFIG):
            shutil.copyfile(sources / name, dest / name)
        write_card_files(self.card, dest / self.model_name)

    def command(self) -> list[str]:
        """Archive the handler and the model with MMS's model-archiver, then run MMS in the foreground."""
        name, mount = self.model_name, self.model_mount
        sources = [f"{mount}/{HANDLER}", *(f"{mount}/{name}/{file}" for file in MODEL_FILES)]
        script = " && ".join(
            [
                "mkdir -p archive store",
                shlex.join(["cp", *sources, "archive/"]),
                shlex.join(
                    [
                        "model-archiver",
                        "--model-name",
                        name,
                        "--model-path",
                        "archive",
                        "--handler",
                        "handler:handle",
                        "--export-path",
                        "store",
                        "--force",
                    ]
                ),
                f"python3 -c 'import mms; print(mms.__version__)' > {VERSION_FILE}",
                shlex.join(
                    [
                        "exec",
                        "multi-model-server",
                        "--start",
                        "--foreground",
                        "--mms-config",
                        f"{mount}/{SERVER_CONFIG}",
                        "--model-store",
                        "store",
                        "--models",
                        f"{name}={name}.mar",
                    ]
                ),
            ]
        )
        return ["sh", "-c", script]

    def is_ready(self, endpoint: Endpoint, session: requests.Session) -> bool:
        """Ready once a READY worker classifies a small image.

        MMS 1.1 calls a worker READY as soon as its thread runs, before (or without) loading the
        model, and ``/ping`` counts started workers: a handler that fails to load shows READY
        workers restarting forever. Only an answer proves the model is loaded.
        """
        described = probe(session, f"{management_url(endpoint)}/models/{self.model_name}")
        if described is None or not described.ok or not ready_workers(described.content):
            return False
        protocol = self.protocol()
        request = protocol.encode(canary_image())
        try:
            answer = session.request(
                request.method,
                endpoint.base_url + request.path,
                data=request.body,
                headers={**endpoint.headers, **request.headers},
                timeout=PROBE_TIMEOUT_S,
            )
            protocol.decode(answer.status_code, answer.content)
        except (requests.RequestException, ProtocolError):
            return False
        return True

    def protocol(self) -> Protocol:
        return TorchServeProtocol(self.model_name)

    def server_version(self, endpoint: Endpoint, session: requests.Session) -> str:
        """The version the start command read from the installed ``mms`` package (none for external servers)."""
        if endpoint.read_file is None:
            return "unknown"
        try:
            return f"mms {endpoint.read_file(VERSION_FILE).decode().strip()}"
        except (OSError, UnicodeDecodeError):
            return "unknown"

    def health(self, endpoint: Endpoint, session: requests.Session) -> dict[str, object]:
        """Readiness and the READY workers' ids: a worker that died and was restarted gets a new id."""
        response = probe(session, f"{management_url(endpoint)}/models/{self.model_name}")
        workers = ready_workers(response.content) if response is not None and response.ok else ()
        return {"ready": self.is_ready(endpoint, session), "workers": sorted(workers)}


@functools.cache
def canary_image() -> bytes:
    """The JPEG the readiness probe classifies: small, so a probe costs little."""
    buffer = io.BytesIO()
    Image.new("RGB", (CANARY_SIZE, CANARY_SIZE), (128, 128, 128)).save(buffer, "JPEG")
    return buffer.getvalue()


def management_url(endpoint: Endpoint) -> str:
    """The management API: published by our container, else the inference port + 1 (MMS's 8080/8081)."""
    if "management" in endpoint.urls:
        return endpoint.urls["management"]
    parts = urlsplit(endpoint.base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port + 1}")).rstrip("/")


def ready_workers(describe_body: bytes) -> tuple[str, ...]:
    """The ids of READY workers in a describe-model answer (``GET /models/{name}``), once at least
    ``minWorkers`` (and at least one) are READY; empty before.

    MMS answers one JSON object (TorchServe, a list of one).
    """
    try:
        model = json.loads(describe_body)
        ready = tuple(str(worker["id"]) for worker in model.get("workers", []) if worker.get("status") == "READY")
        return ready if len(ready) >= max(1, int(model.get("minWorkers", 1))) else ()
    except (ValueError, TypeError, AttributeError, KeyError):
        return ()
