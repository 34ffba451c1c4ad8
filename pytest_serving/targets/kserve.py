"""KServe's Python model server running the model card's ONNX with onnxruntime.

One image, one server, two protocols: ``kserve`` talks V2 / Open Inference Protocol and
``kserve-v1`` the V1 (TF Serving) REST API, so the contract suite checks both paths of the
same deployment. The served ``kserve.Model`` is ``model_repo/kserve/kserve_model.py``, one
generic class for every card; it decodes images with ``serving_preprocess.py`` and runs
``<model>/model.onnx`` as ``<model>/serving_card.json`` says, all written by ``build_deployment``.

KServe 0.21 turns V2's binary BYTES tensors into UTF-8 text before the model runs, so the V2
target sends the image file as a UINT8 tensor: ``protocols.kserve_v2.KServeV2Protocol``.

A release deployment (``--serving-candidate``) is two models in one server, since KServe's models
have no versions: the current card under its own name (as in a plain deployment) and the candidate
under its name with ``-candidate`` appended (the two cards may be one). The server cannot move a
name's traffic from one model to another, so there is no rollout (``rollout_unsupported``).

KServe publishes no image for custom Python models (each user builds one), so the
"official" image is this recipe's tag: build it with ``pytest-serving build-images kserve``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import requests

from ..images.recipe import ONNXRUNTIME, OfflineImage
from ..metrics.server import ServerMetricsSpec
from ..model.deploy_files import copy_preprocess, write_card_files
from ..protocols.base import Protocol
from ..protocols.kserve_v2 import KServeV2Protocol
from ..protocols.tfserving import V1ImageProtocol
from .base import Endpoint, ServingTarget, v2_ready, v2_server_version

if TYPE_CHECKING:
    from ..model.card import ModelCard

KSERVE_VERSION = "0.21.0"
SERVER_SCRIPT = "kserve_model.py"
#: Appended to the candidate card's name: the name the release deployment's server knows it by.
CANDIDATE_SUFFIX = "-candidate"

KSERVE_OFFLINE_IMAGE = OfflineImage(
    # "-ort": onnxruntime runs the card's ONNX (images before model cards ran a TF SavedModel).
    tag=f"pytest-serving/kserve:{KSERVE_VERSION}-ort-cpu",
    # numpy and Pillow as on the host that computes the in-process reference, so both decode alike.
    wheels=(f"kserve=={KSERVE_VERSION}", ONNXRUNTIME, "numpy==2.4.6", "pillow==13.0.0"),
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

    #: The two models of a release deployment, named by their role (KServe's models have no versions).
    release_versions: ClassVar[tuple[str, str]] = ("current", "candidate")

    def release_unsupported(self) -> str | None:
        candidate = self.options.candidate
        if candidate is not None and candidate.name + CANDIDATE_SUFFIX == self.model_name:
            return (
                f"{self.name}: the current model's name {self.model_name!r} is the name the candidate "
                f"{candidate.name!r} would be served under; rename one of the cards"
            )
        return None

    def build_release_deployment(self, sources: Path, dest: Path, candidate: ModelCard) -> None:
        """The plain deployment of the current card, and ``<candidate>-candidate/`` with the candidate's files."""
        self.build_deployment(sources, dest)
        write_card_files(candidate, dest / (candidate.name + CANDIDATE_SUFFIX))

    def version_card(self, version: str) -> ModelCard:
        """The card of one of ``release_versions`` (the candidate's only in a release deployment)."""
        current, candidate = self.release_versions
        if version == current:
            return self.card
        if version == candidate and self.options.candidate is not None:
            return self.options.candidate
        raise ValueError(f"{self.name}: no model of version {version!r} in this deployment")

    def served_model(self, version: str) -> str:
        """The name the server knows one of ``release_versions`` by."""
        card = self.version_card(version)
        return self.model_name if version == self.release_versions[0] else card.name + CANDIDATE_SUFFIX

    def served_models(self) -> list[str]:
        """Every model the server hosts: the current card's, and the candidate's in a release deployment."""
        if self.options.candidate is None:
            return [self.model_name]
        return [self.served_model(version) for version in self.release_versions]

    def rollout_unsupported(self) -> str | None:
        return (
            f"{self.name}: KServe's model server cannot switch the model live: it serves each model under "
            "its own name, without versions (a versioned V2 path answers 501 'Model versioning not supported "
            "yet') or aliases, so its repository API can load and unload a model but never move a name's "
            "requests to another model; KServe rolls out with a canary traffic split between InferenceService "
            "revisions, in a cluster, outside one server"
        )

    def command(self) -> list[str]:
        return [
            "python3",
            f"{self.model_mount}/{SERVER_SCRIPT}",
            "--models",
            *(f"{name}={self.model_mount}/{name}" for name in self.served_models()),
            f"--http_port={self.ports['http']}",
            f"--grpc_port={self.ports['grpc']}",
        ]

    def ready_paths(self) -> list[str]:
        """The protocol's model-readiness path of every model the server hosts."""
        return [self.model_ready_path.format(model=name) for name in self.served_models()]

    def is_ready(self, endpoint: Endpoint, session: requests.Session) -> bool:
        """Ready once the server and every model it hosts are (both models, in a release deployment)."""
        return all(v2_ready(session, endpoint.base_url, path) for path in self.ready_paths())

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

    def version_protocol(self, version: str) -> Protocol:
        return KServeV2Protocol(self.served_model(version))


class KServeV1(KServeTarget):
    name = "kserve-v1"
    model_ready_path = "/v1/models/{model}"
    known_deviations: ClassVar[Mapping[str, Mapping[str, str]]] = {"0.21": HEADER_1MIB_DEVIATION}

    def protocol(self) -> Protocol:
        return V1ImageProtocol(self.model_name, spec=self.card.serving_spec())

    def version_protocol(self, version: str) -> Protocol:
        return V1ImageProtocol(self.served_model(version), spec=self.version_card(version).serving_spec())
