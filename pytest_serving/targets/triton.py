"""NVIDIA Triton Inference Server.

The offline CPU image runs the project's generic python-backend model (image bytes in, top-5
out) on the card's ONNX; the official NGC image has no Pillow or onnxruntime for that Python,
so there the ``<model>_onnx`` variant runs the same ONNX on the onnxruntime backend and the
client preprocesses as the card says.

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

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import requests

from ..images.recipe import ONNXRUNTIME, OfflineImage, WheelFiles
from ..metrics.server import ServerMetricsSpec
from ..model.deploy_files import write_card_files
from ..model.preprocess import MODEL_FILE
from ..protocols.base import Protocol
from ..protocols.v2 import V2Protocol, V2TensorProtocol
from .base import Endpoint, ServingTarget, v2_ready, v2_server_version

if TYPE_CHECKING:
    from ..model.card import ModelCard

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
    wheels=("numpy==1.26.4", "pillow==13.0.0", ONNXRUNTIME),
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
    #: Triton's per-model counters on the metrics port; compute is split into input, infer and output.
    server_metrics = ServerMetricsSpec(
        requests="nv_inference_request_success",
        queue=("nv_inference_queue_duration_us",),
        compute=(
            "nv_inference_compute_input_duration_us",
            "nv_inference_compute_infer_duration_us",
            "nv_inference_compute_output_duration_us",
        ),
        server=("nv_inference_request_duration_us",),
        executions="nv_inference_exec_count",
        missing_hint="start tritonserver with --allow-metrics=true",
    )

    known_deviations: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "2.51": {
            **{
                case: (
                    f"Triton 2.51.0's HTTP front end answers 500 to {what}: its JSON errors (TritonJson) are "
                    "TRITONSERVER_ERROR_INTERNAL, which it maps to 500, before any model code runs"
                )
                for case, what in (
                    ("json-malformed", "a request body that is not valid JSON"),
                    ("v2-header-not-json", "a binary request whose JSON header is not JSON"),
                    ("json-missing-inputs", "request JSON without 'inputs'"),
                    ("json-missing-tensor-fields", "an input without 'datatype' and 'shape'"),
                    ("json-nan-inf", "a shape holding NaN and Infinity"),
                )
            },
            "oversize-80mib": (
                "Triton 2.51.0 has no HTTP request-size limit (--http-max-input-size came later, "
                "triton-inference-server/server#8174): the 80 MiB input reaches the python backend, which answers "
                "500 when its shared-memory pool cannot grow beyond the container's /dev/shm (64 MiB by Docker's "
                "default), before model.py runs"
            ),
            "json-nesting-150000": (
                "Triton 2.51.0 crashes on a JSON body nested 150 000 arrays deep: its recursive JSON parser "
                "overflows the HTTP thread's stack and the process dies without a word in its log, before any "
                "model code runs (100 000 deep is refused with a 4xx)"
            ),
            **{
                f"{encoding}-bomb": (
                    f"Triton 2.51.0 inflates a {encoding} Content-Encoding body whole, with no limit (256 MiB of "
                    "zeros take it 7 s), then answers 500 to the JSON it cannot parse (TritonJson errors are "
                    "INTERNAL)"
                )
                for encoding in ("gzip", "deflate")
            },
        }
    }

    @property
    def deployed_model(self) -> str:
        return self.model_name if self.image_origin != "official" else f"{self.model_name}_onnx"

    def build_deployment(self, sources: Path, dest: Path) -> None:
        """``<card>/`` (python backend: config.pbtxt, 1/model.py and the card's files) and
        ``<card>_onnx/`` (onnxruntime backend, for the official image)."""
        model = dest / self.card.name
        version = write_card_files(self.card, model / "1")
        shutil.copyfile(sources / "config.pbtxt", model / "config.pbtxt")
        shutil.copyfile(sources / "model.py", version / "model.py")
        onnx_version = dest / f"{self.card.name}_onnx" / "1"
        onnx_version.mkdir(parents=True)
        os.link(version / MODEL_FILE, onnx_version / MODEL_FILE)
        (onnx_version.parent / "config.pbtxt").write_text(onnx_backend_config(self.card))

    def release_unsupported(self) -> str | None:
        if self.image_origin == "official":
            return (
                "triton: the official image runs the onnxruntime variant; side-by-side versions need the offline image"
            )
        return None

    def build_release_deployment(self, sources: Path, dest: Path, candidate: ModelCard) -> None:
        """One model folder (named after the current card) with version 1 (the current card) and 2
        (``candidate``), both named in its version policy, so explicit model control loads both."""
        model = dest / self.card.name
        for version, card in zip(self.release_versions, (self.card, candidate)):
            folder = write_card_files(card, model / version)
            shutil.copyfile(sources / "model.py", folder / "model.py")
        versions = ", ".join(self.release_versions)
        (model / "config.pbtxt").write_text(
            (sources / "config.pbtxt").read_text() + f"\nversion_policy: {{ specific: {{ versions: [{versions}] }} }}\n"
        )

    def version_protocol(self, version: str) -> Protocol:
        return V2Protocol(self.deployed_model, version=version)

    #: Triton's V2 answers open with the model's name and version.
    answer_version_pattern = r'"model_version":"([^"]*)"'

    def rollout_unsupported(self) -> str | None:
        return self.release_unsupported()

    def serve_only(self, endpoint: Endpoint, version: str, timeout: float) -> None:
        self._load_versions(endpoint, [version], timeout)

    def switch(self, endpoint: Endpoint, old: str, new: str, timeout: float) -> None:
        """Explicit model control: load the model with both versions (unversioned requests go to the
        highest loaded one, the new), then with the new alone, which unloads the old."""
        self._load_versions(endpoint, [old, new], timeout)
        self._load_versions(endpoint, [new], timeout)

    def _load_versions(self, endpoint: Endpoint, versions: list[str], timeout: float) -> None:
        """(Re)load the model with its own configuration, its version policy replaced by ``versions``;
        Triton answers once the load is done (or failed)."""
        model = f"{endpoint.base_url}/v2/models/{self.deployed_model}"
        with requests.Session() as session:
            session.headers.update(endpoint.headers)
            response = session.get(f"{model}/config", timeout=timeout)
            response.raise_for_status()
            config = response.json()
            config["version_policy"] = {"specific": {"versions": [int(version) for version in versions]}}
            response = session.post(
                f"{endpoint.base_url}/v2/repository/models/{self.deployed_model}/load",
                json={"parameters": {"config": json.dumps(config)}},
                timeout=timeout,
            )
            if not response.ok:
                raise RuntimeError(
                    f"triton: loading {self.deployed_model} versions {versions} answered HTTP {response.status_code}: "
                    f"{response.text[:500]}"
                )

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
        return v2_ready(session, endpoint.base_url, f"/v2/models/{self.deployed_model}/ready")

    def protocol(self) -> Protocol:
        if self.image_origin == "official":
            return V2TensorProtocol(self.deployed_model, spec=self.card.serving_spec())
        return V2Protocol(self.deployed_model)

    def server_version(self, endpoint: Endpoint, session: requests.Session) -> str:
        return v2_server_version(session, endpoint.base_url, "triton")

    def health(self, endpoint: Endpoint, session: requests.Session) -> dict[str, object]:
        """Readiness, and the state of every model version in the repository index: a model that
        bad requests made UNAVAILABLE, or that Triton reloaded, shows as a change.

        Triton 2.51 exposes nothing about its python stubs: when a stub dies, server and model
        readiness and the index all stay READY while every request gets 500 "Stub process ... is not
        healthy" (stub health in model readiness, TRITONBACKEND_ModelInstanceReady, came later). The
        robustness suite's inference of a known sample after each case is what sees it."""
        try:
            response = session.post(f"{endpoint.base_url}/v2/repository/index", json={}, timeout=5.0)
            response.raise_for_status()
            index = response.json()
            models = {f"{model['name']}/{model.get('version', '')}": model.get("state", "") for model in index}
        except (requests.RequestException, ValueError, KeyError, TypeError) as error:
            models = {"(repository index unreadable)": f"{type(error).__name__}: {error}"}
        return {"ready": self.is_ready(endpoint, session), "models": models}


def onnx_backend_config(card: ModelCard) -> str:
    """config.pbtxt of the card's ONNX on Triton's onnxruntime backend: the client sends the
    preprocessed tensor (``V2TensorProtocol``) and reads the raw outputs."""
    side = card.input.size
    dims = [3, side, side] if card.input.layout == "NCHW" else [side, side, 3]
    dtype = "TYPE_FP32" if card.input.dtype == "float32" else "TYPE_UINT8"
    return f"""# {card.name} on the onnxruntime backend (official images); generated from the model card.
backend: "onnxruntime"
max_batch_size: 8
input [ {{ name: "{card.input.name}" data_type: {dtype} dims: {dims} }} ]
output [ {{ name: "{card.output.name}" data_type: TYPE_FP32 dims: [ {card.num_classes} ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""
