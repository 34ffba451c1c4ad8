"""NVIDIA Triton Inference Server.

The offline CPU image runs the project's python-backend model (image bytes in, top-5 out);
the official NGC image has no Pillow or onnxruntime for that Python, so there the
``<model>_onnx`` variant runs on the onnxruntime backend and the client preprocesses.

The offline image is built without NGC, from the ``tritonserver`` that the PyPI wheel
nvidia-pytriton ships. The wheel is auditwheel-repaired: ``tritonserver``, its python backend and the stubs find
their bundled libraries (``nvidia_pytriton.libs``, names with hashes) through RPATHs
relative to the wheel's layout. The image flattens that layout under /opt/tritonserver and
registers ``lib/`` with ldconfig instead, then fails the build if ``ldd`` finds any library
missing. The stub for the image's Python (Debian bookworm: 3.11) goes into
``backends/python``, where the python backend looks for it.

The wheel has no onnxruntime backend: only the python backend (our model.py runs ONNX
through the onnxruntime wheel) and the local response cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import requests

from ..images.recipe import OfflineImage, WheelFiles
from ..protocols.base import Protocol
from ..protocols.v2 import V2Protocol, V2TensorProtocol
from .base import Endpoint, ServingTarget, probe

#: What ``GET /v2`` of this build reports: nvidia-pytriton 0.7.0 carries Triton 2.51.0 (r24.10).
TRITON_SERVER_VERSION = "2.51.0"
TRITON_HOME = "/opt/tritonserver"
#: Debian bookworm's Python, which the backend stub is linked against and runs model.py in.
_PYTHON = "3.11"
_WHEEL_ROOT = "pytriton/tritonserver/"
_LINKED = (
    "bin/tritonserver",
    "backends/python/libtriton_python.so",
    "backends/python/triton_python_backend_stub",
    "caches/local/libtritoncache_local.so",
)

TRITON_OFFLINE_IMAGE = OfflineImage(
    tag=f"pytest-serving/triton:{TRITON_SERVER_VERSION}-cpu",
    # The only library ldd finds missing from minbase: the wheel bundles all the others.
    apt_packages=(f"libpython{_PYTHON}",),
    # Pillow and onnxruntime as in the in-process reference, so both sides decode and infer alike.
    # numpy stays 1.x: this stub's pybind11 reads numpy 2's dtypes wrongly (BYTES inputs arrive
    # as the first byte repeated, and the stub dies).
    wheels=("numpy==1.26.4", "pillow==13.0.0", "onnxruntime==1.31.1"),
    python_version=_PYTHON,
    wheel_files=(
        WheelFiles(
            requirement="nvidia-pytriton==0.7.0",
            members=(
                (_WHEEL_ROOT + "bin/", f"{TRITON_HOME}/bin"),
                (_WHEEL_ROOT + "backends/", f"{TRITON_HOME}/backends"),
                (_WHEEL_ROOT + "caches/", f"{TRITON_HOME}/caches"),
                (
                    f"{_WHEEL_ROOT}python_backend_stubs/{_PYTHON}/triton_python_backend_stub",
                    f"{TRITON_HOME}/backends/python",
                ),
                ("nvidia_pytriton.libs/", f"{TRITON_HOME}/lib"),
            ),
        ),
    ),
    dockerfile_steps=f"""
RUN echo {TRITON_HOME}/lib > /etc/ld.so.conf.d/tritonserver.conf && ldconfig \\
 && ldd {" ".join(f"{TRITON_HOME}/{path}" for path in _LINKED)} > /tmp/ldd.txt \\
 && if grep 'not found' /tmp/ldd.txt; then exit 1; fi && rm /tmp/ldd.txt \\
 && python3 -c 'import numpy, PIL, onnxruntime'
ENV PATH={TRITON_HOME}/bin:$PATH
WORKDIR {TRITON_HOME}
CMD ["tritonserver", "--model-repository=/models"]
""",
)


class Triton(ServingTarget):
    name = "triton"
    official_image = "nvcr.io/nvidia/tritonserver:24.10-py3"
    official_gpu_image = "nvcr.io/nvidia/tritonserver:24.10-py3"
    offline_image = TRITON_OFFLINE_IMAGE
    ports: ClassVar[dict[str, int]] = {"http": 8000, "grpc": 8001, "metrics": 8002}
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

    def health(self, endpoint: Endpoint, session: requests.Session) -> dict[str, object]:
        """Readiness, and the state of every model version in the repository index: a model that
        bad requests made UNAVAILABLE, or that Triton reloaded, shows as a change."""
        try:
            response = session.post(f"{endpoint.base_url}/v2/repository/index", json={}, timeout=5.0)
            response.raise_for_status()
            index = response.json()
            models = {f"{model['name']}/{model.get('version', '')}": model.get("state", "") for model in index}
        except (requests.RequestException, ValueError, KeyError, TypeError) as error:
            models = {"(repository index unreadable)": f"{type(error).__name__}: {error}"}
        return {"ready": self.is_ready(endpoint, session), "models": models}
