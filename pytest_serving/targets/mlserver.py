"""Seldon MLServer running a custom ``MLModel`` runtime around the ONNX export.

``mlserver start /models`` loads ``<model>/model-settings.json`` from the deployment, whose
runtime is ``model_repo/mlserver/runtime.py``, one generic class for every model card (the
card's ONNX through ``serving_preprocess.Classifier``); ``build_deployment`` puts
``serving_preprocess.py`` beside it and the card's files and ``model-settings.json`` into
``<model>/``. MLServer's REST API parses every V2 request as JSON and has no binary-data
extension (a Triton-style binary request never reaches the runtime), so the image
travels as base64 BYTES marked ``content_type: base64``, which MLServer's Base64Codec
decodes: ``protocols.v2.V2JsonProtocol``.

MLServer 1.7.1 answers 500, with a Python traceback as the body, to a request body that is
neither JSON nor UTF-8 (a Triton-style binary V2 request, for one): FastAPI's validation-error
handler tries to quote the body as UTF-8 text. No request of ``V2JsonProtocol`` is such a body.

Seldon's images (``seldonio/mlserver``) come from a registry and lack onnxruntime; the
offline image is this recipe: ``pytest-serving build-images mlserver``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import requests

from ..images.recipe import ONNXRUNTIME, OfflineImage
from ..metrics.server import ServerMetricsSpec
from ..model.deploy_files import copy_preprocess, write_card_files
from ..protocols.base import Protocol
from ..protocols.v2 import V2JsonProtocol
from .base import Endpoint, ServingTarget, uvicorn_chunk_overflow_deviation, v2_ready, v2_server_version

MLSERVER_VERSION = "1.7.1"
RUNTIME = "runtime.py"
MODEL_SETTINGS = "model-settings.json"

MLSERVER_OFFLINE_IMAGE = OfflineImage(
    tag=f"pytest-serving/mlserver:{MLSERVER_VERSION}-cpu",
    # numpy, Pillow and onnxruntime as on the host that computes the reference, so both decode alike.
    wheels=(
        f"mlserver=={MLSERVER_VERSION}",
        # MLServer leaves uvloop unpinned; from uvloop 0.22 on, get_event_loop() raises in a process
        # without a loop, and 1.7.1's inference workers die at start ("no current event loop"), so
        # the model never loads. 0.21 is the release MLServer 1.7 came out with.
        "uvloop==0.21.0",
        "numpy==2.4.6",
        "pillow==13.0.0",
        ONNXRUNTIME,
    ),
    dockerfile_steps="""
RUN python3 -c 'import mlserver, numpy, PIL, onnxruntime' && mlserver --help > /dev/null
WORKDIR /models
""",
)


class MLServer(ServingTarget):
    name = "mlserver"
    official_image = MLSERVER_OFFLINE_IMAGE.tag
    official_gpu_image = MLSERVER_OFFLINE_IMAGE.tag
    offline_image = MLSERVER_OFFLINE_IMAGE
    ports: ClassVar[dict[str, int]] = {"http": 8080, "grpc": 8081, "metrics": 8082}
    model_repo_folder = "mlserver"
    known_deviations: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "1.7": uvicorn_chunk_overflow_deviation("MLServer 1.7.1's REST server")
    }
    #: MLServer's per-model summary of the time in the runtime's ``predict`` (base64 decode,
    #: image decode, preprocessing, inference), and the REST layer's histogram of whole requests
    #: (JSON parsing included; it skips only the server health paths).
    server_metrics = ServerMetricsSpec(
        requests="model_infer_request_duration_count",
        compute=("model_infer_request_duration_sum",),
        server=("rest_server_request_duration_seconds_sum",),
        unit_ms=1000.0,
    )

    def build_deployment(self, sources: Path, dest: Path) -> None:
        """The runtime with ``serving_preprocess.py`` beside it; ``<model>/`` with the card's files and
        ``model-settings.json`` (MLServer names the model after its folder)."""
        shutil.copyfile(sources / RUNTIME, dest / RUNTIME)
        copy_preprocess(dest)
        model = write_card_files(self.card, dest / self.card.name)
        shutil.copyfile(sources / MODEL_SETTINGS, model / MODEL_SETTINGS)

    def command(self) -> list[str]:
        return ["mlserver", "start", self.model_mount]

    def environment(self) -> dict[str, str]:
        return {
            # runtime.py and serving_preprocess.py, for the server and its inference worker process.
            "PYTHONPATH": self.model_mount,
            "MLSERVER_HTTP_PORT": str(self.ports["http"]),
            "MLSERVER_GRPC_PORT": str(self.ports["grpc"]),
            "MLSERVER_METRICS_PORT": str(self.ports["metrics"]),
            # MLServer writes Prometheus' multi-process files and unpacked environments beside the
            # models by default, which are mounted read-only.
            "MLSERVER_METRICS_DIR": "/tmp/mlserver/metrics",
            "MLSERVER_ENVIRONMENTS_DIR": "/tmp/mlserver/envs",
        }

    def is_ready(self, endpoint: Endpoint, session: requests.Session) -> bool:
        return v2_ready(session, endpoint.base_url, f"/v2/models/{self.model_name}/ready")

    def protocol(self) -> Protocol:
        return V2JsonProtocol(self.model_name)

    def server_version(self, endpoint: Endpoint, session: requests.Session) -> str:
        return v2_server_version(session, endpoint.base_url, "mlserver")
