"""KServe's Python model server running the model card's ONNX with onnxruntime.

One image, one server, two protocols: ``kserve`` talks V2 / Open Inference Protocol and
``kserve-v1`` the V1 (TF Serving) REST API, so the contract suite checks both paths of the
same deployment. The served ``kserve.Model`` is ``model_repo/kserve/kserve_model.py``, one
generic class for every card; it decodes images with ``serving_preprocess.py`` and runs
``<model>/model.onnx`` as ``<model>/serving_card.json`` says, all written by ``build_deployment``.

KServe 0.21 turns V2's binary BYTES tensors into UTF-8 text before the model runs, so the V2
target sends the image file as a UINT8 tensor: ``protocols.kserve_v2.KServeV2Protocol``.

KServe publishes no image for custom Python models (each user builds one), so the
"official" image is this recipe's tag: build it with ``pytest-serving build-images kserve``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import requests

from ..images.recipe import OfflineImage
from ..metrics.server import ServerMetricsSpec
from ..model.deploy_files import copy_preprocess, write_card_files
from ..protocols.base import Protocol
from ..protocols.kserve_v2 import KServeV2Protocol
from ..protocols.tfserving import V1ImageProtocol
from .base import Endpoint, ServingTarget, v2_ready, v2_server_version

KSERVE_VERSION = "0.21.0"
SERVER_SCRIPT = "kserve_model.py"

KSERVE_OFFLINE_IMAGE = OfflineImage(
    # "-ort": onnxruntime runs the card's ONNX (images before model cards ran a TF SavedModel).
    tag=f"pytest-serving/kserve:{KSERVE_VERSION}-ort-cpu",
    # numpy and Pillow as on the host that computes the in-process reference, so both decode alike.
    wheels=(f"kserve=={KSERVE_VERSION}", "onnxruntime==1.31.1", "numpy==2.4.6", "pillow==13.0.0"),
    dockerfile_steps="""
RUN python3 -c 'import kserve, onnxruntime, PIL'
WORKDIR /models
""",
)


class KServeTarget(ServingTarget):
    """What both KServe targets share; subclasses pick the protocol and its model-readiness URL."""

    official_image = KSERVE_OFFLINE_IMAGE.tag
    official_gpu_image = KSERVE_OFFLINE_IMAGE.tag
    offline_image = KSERVE_OFFLINE_IMAGE
    ports: ClassVar[dict[str, int]] = {"http": 8080, "grpc": 8081}
    model_repo_folder = "kserve"
    #: KServe's per-model histograms on the REST port: the time in ``Model.predict`` (decode,
    #: preprocess and inference here), not KServe's own request parsing before it.
    server_metrics: ClassVar[ServerMetricsSpec | None] = ServerMetricsSpec(
        requests="request_predict_seconds_count",
        compute=("request_predict_seconds_sum",),
        unit_ms=1000.0,
        url_role="http",
    )
    #: The protocol's own model-readiness path, formatted with ``model``.
    model_ready_path: ClassVar[str]

    def build_deployment(self, sources: Path, dest: Path) -> None:
        """The server script with ``serving_preprocess.py`` beside it, and ``<model>/`` with the card's files."""
        shutil.copyfile(sources / SERVER_SCRIPT, dest / SERVER_SCRIPT)
        copy_preprocess(dest)
        write_card_files(self.card, dest / self.card.name)

    def command(self) -> list[str]:
        return [
            "python3",
            f"{self.model_mount}/{SERVER_SCRIPT}",
            f"--model_name={self.model_name}",
            f"--model_dir={self.model_mount}/{self.model_name}",
            f"--http_port={self.ports['http']}",
            f"--grpc_port={self.ports['grpc']}",
        ]

    def is_ready(self, endpoint: Endpoint, session: requests.Session) -> bool:
        return v2_ready(session, endpoint.base_url, self.model_ready_path.format(model=self.model_name))

    def server_version(self, endpoint: Endpoint, session: requests.Session) -> str:
        return v2_server_version(session, endpoint.base_url, "kserve")


#: Both protocols' deviation: the server, not a protocol's path, reads every header.
HEADER_1MIB_DEVIATION = {
    "header-1mib": (
        "KServe 0.21.0's REST server (uvicorn) sets no limit on the size of a header: a request carrying "
        "a 1 MiB header is read whole and answered 200"
    )
}


class KServe(KServeTarget):
    name = "kserve"
    model_ready_path = "/v2/models/{model}/ready"
    #: Mostly V2 only: the V1 path of the same server answers these cases (or does not have them).
    known_deviations: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "0.21": {
            **HEADER_1MIB_DEVIATION,
            **{
                case: f"KServe 0.21.0's REST layer answers 5xx to {what}, before the model's code runs"
                for case, what in (
                    ("json-nan-inf", "a shape holding NaN (FastAPI cannot write its own error message as JSON)"),
                    ("unknown-version", "a versioned V2 path (501: 'Model versioning not supported yet')"),
                    (
                        "v2-binary-size-beyond-body",
                        "a binary_data_size beyond the body (it decodes BYTES as UTF-8 first)",
                    ),
                    ("v2-element-length-beyond-tensor", "a BYTES element length beyond the tensor (struct.error)"),
                    ("v2-header-length-not-a-number", "a non-numeric Inference-Header-Content-Length (int() fails)"),
                )
            },
        }
    }

    def protocol(self) -> Protocol:
        return KServeV2Protocol(self.model_name)


class KServeV1(KServeTarget):
    name = "kserve-v1"
    model_ready_path = "/v1/models/{model}"
    known_deviations: ClassVar[Mapping[str, Mapping[str, str]]] = {"0.21": HEADER_1MIB_DEVIATION}

    def protocol(self) -> Protocol:
        return V1ImageProtocol(self.model_name, spec=self.card.serving_spec())
