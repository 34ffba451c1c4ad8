"""BentoML: a ``bentoml.service`` class run by ``bentoml serve``, one worker on the CPU.

The service is ``model_repo/bentoml/service.py``, one generic class for every model card (the
image file is its API's root input, see ``protocols.bentoml``); ``build_deployment`` puts
``serving_preprocess.py`` beside it and the card's files into ``<model>/``. BentoML publishes no image for a user's service (``bentoml
containerize`` builds one per Bento, from a registry base), so the "official" image is this
recipe's tag: build it with ``pytest-serving build-images bentoml``.

BentoML counts every HTTP request in ``bentoml_service_request_*`` on the API port's
``/metrics``, its own ``/readyz`` too; the suites probe readiness only outside measured
phases, so a phase's increase is its inference requests.
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
from ..protocols.bentoml import BentoMLProtocol
from .base import Endpoint, ServingTarget, probe, uvicorn_chunk_overflow_deviation

BENTOML_VERSION = "1.4.40"
SERVICE_FILE = "service.py"
SERVICE = "service:ImageClassifier"

BENTOML_OFFLINE_IMAGE = OfflineImage(
    tag=f"pytest-serving/bentoml:{BENTOML_VERSION}-cpu",
    # numpy, Pillow and onnxruntime as on the host that computes the reference, so both decode alike.
    wheels=(f"bentoml=={BENTOML_VERSION}", "numpy==2.4.6", "pillow==13.0.0", ONNXRUNTIME),
    dockerfile_steps="""
ENV BENTOML_DO_NOT_TRACK=true
RUN python3 -c 'import bentoml, numpy, PIL, onnxruntime' && bentoml --version
WORKDIR /models
""",
)


class BentoML(ServingTarget):
    name = "bentoml"
    official_image = BENTOML_OFFLINE_IMAGE.tag
    official_gpu_image = BENTOML_OFFLINE_IMAGE.tag
    offline_image = BENTOML_OFFLINE_IMAGE
    ports: ClassVar[dict[str, int]] = {"http": 3000}
    model_repo_folder = "bentoml"
    known_deviations: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "1.4": uvicorn_chunk_overflow_deviation("BentoML 1.4.40's HTTP server")
    }
    #: The HTTP middleware's histogram: the whole time BentoML spent on a request (body read,
    #: root-input file, decode, inference, response); it does not split out a queue.
    server_metrics = ServerMetricsSpec(
        requests="bentoml_service_request_duration_seconds_count",
        server=("bentoml_service_request_duration_seconds_sum",),
        unit_ms=1000.0,
        url_role="http",
    )

    def build_deployment(self, sources: Path, dest: Path) -> None:
        """The service with ``serving_preprocess.py`` beside it, and ``<model>/`` with the card's files."""
        shutil.copyfile(sources / SERVICE_FILE, dest / SERVICE_FILE)
        copy_preprocess(dest)
        write_card_files(self.card, dest / self.card.name)

    def command(self) -> list[str]:
        return [
            "bentoml",
            "serve",
            SERVICE,
            "--working-dir",
            self.model_mount,
            "--host",
            "0.0.0.0",
            "--port",
            str(self.ports["http"]),
        ]

    def environment(self) -> dict[str, str]:
        return {"PYTEST_SERVING_MODEL": self.model_name, "BENTOML_DO_NOT_TRACK": "true"}

    def is_ready(self, endpoint: Endpoint, session: requests.Session) -> bool:
        response = probe(session, f"{endpoint.base_url}/readyz")
        return response is not None and response.ok

    def protocol(self) -> Protocol:
        return BentoMLProtocol(self.model_name)

    def server_version(self, endpoint: Endpoint, session: requests.Session) -> str:
        try:
            response = session.post(f"{endpoint.base_url}/metadata", json={}, timeout=5.0)
            return f"bentoml {response.json()['version']}" if response.ok else "unknown"
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return "unknown"
