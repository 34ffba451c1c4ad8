"""NVIDIA Triton Inference Server.

The offline CPU image runs the project's python-backend model (image bytes in, top-5 out);
the official NGC image has no Pillow or onnxruntime for that Python, so there the
``<model>_onnx`` variant runs on the onnxruntime backend and the client preprocesses.
"""

from __future__ import annotations

from pathlib import Path

import requests

from ..protocols.base import Protocol
from ..protocols.v2 import V2Protocol, V2TensorProtocol
from .base import Endpoint, ServingTarget, probe
from .triton_image import TRITON_OFFLINE_IMAGE


class Triton(ServingTarget):
    name = "triton"
    official_image = "nvcr.io/nvidia/tritonserver:24.10-py3"
    official_gpu_image = "nvcr.io/nvidia/tritonserver:24.10-py3"
    offline_image = TRITON_OFFLINE_IMAGE
    ports = {"http": 8000, "grpc": 8001, "metrics": 8002}
    model_repo_folder = "triton"

    @property
    def deployed_model(self) -> str:
        return self.model_name if self.image_origin != "official" else f"{self.model_name}_onnx"

    def prepare_model_repo(self, folder: Path) -> None:
        from ..model.export import copy_preprocess, export_onnx

        version = folder / self.model_name / "1"
        copy_preprocess(version)
        export_onnx(version / "model.onnx", self.model_name)
        onnx_variant = folder / f"{self.model_name}_onnx"
        if onnx_variant.is_dir():
            export_onnx(onnx_variant / "1" / "model.onnx", self.model_name)

    def command(self) -> list[str]:
        return [
            "tritonserver",
            f"--model-repository={self.model_mount}",
            "--model-control-mode=explicit",
            f"--load-model={self.deployed_model}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--allow-metrics=true",
        ]

    def is_ready(self, endpoint: Endpoint, session: requests.Session) -> bool:
        server = probe(session, f"{endpoint.base_url}/v2/health/ready")
        model = probe(session, f"{endpoint.base_url}/v2/models/{self.deployed_model}/ready")
        return bool(server is not None and server.ok and model is not None and model.ok)

    def protocol(self) -> Protocol:
        if self.image_origin == "official":
            return V2TensorProtocol(self.deployed_model)
        return V2Protocol(self.deployed_model)

    def server_version(self, endpoint: Endpoint, session: requests.Session) -> str:
        response = probe(session, f"{endpoint.base_url}/v2")
        if response is None or not response.ok:
            return "unknown"
        return f"triton {response.json().get('version', 'unknown')}"
