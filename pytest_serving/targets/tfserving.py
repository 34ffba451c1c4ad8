"""TensorFlow Serving (``tensorflow_model_server``) running a SavedModel: the card's, or the built-in model's.

Only the official images run it: TF Serving ships no wheel, so there is no offline recipe,
and without a registry the target is skipped with the ``docker pull`` / ``--serving-image``
fix. The SavedModel (``<model>/1/``, written by ``build_deployment``)
has no image-decoding signature, so the client preprocesses and sends the float array in
the REST row format, as the study did; ``protocols.tfserving.TFServingGrpcClient`` speaks
the gRPC PredictionService on the ``grpc`` port with the same tensor.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

import requests

from ..protocols.base import Protocol
from ..protocols.tfserving import V1TensorProtocol
from .base import Endpoint, ServingTarget, probe

TFSERVING_VERSION = "2.18.0"
MODEL_VERSION = "1"


class TFServing(ServingTarget):
    name = "tfserving"
    official_image = f"tensorflow/serving:{TFSERVING_VERSION}"
    official_gpu_image = f"tensorflow/serving:{TFSERVING_VERSION}-gpu"
    ports: ClassVar[dict[str, int]] = {"http": 8501, "grpc": 8500}
    model_repo_folder = "tfserving"

    def unavailable_reason(self) -> str | None:
        if self.card.export is None and self.card.artifact_savedmodel is None:
            return (
                f"TF Serving serves SavedModels only: model card {self.card.source} names none "
                "(add artifact_savedmodel = 'FOLDER' to the card to test it on TF Serving)"
            )
        return None

    def build_deployment(self, sources: Path, dest: Path) -> None:
        """``<model>/1/``: the card's SavedModel, or the built-in model exported to one."""
        version = dest / self.card.name / MODEL_VERSION
        if self.card.artifact_savedmodel is not None:
            shutil.copytree(self.card.artifact_savedmodel, version)
            return
        from ..model.tf_export import export_saved_model

        export_saved_model(version, self.card.export)

    def command(self) -> list[str]:
        # The image's entrypoint already runs tensorflow_model_server on ports 8500/8501 with
        # --model_name=$MODEL_NAME --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME; these are extra
        # flags. The repository is complete before the server starts: look for versions once.
        return ["--file_system_poll_wait_seconds=0"]

    def environment(self) -> dict[str, str]:
        return {"MODEL_NAME": self.model_name, "MODEL_BASE_PATH": self.model_mount}

    def is_ready(self, endpoint: Endpoint, session: requests.Session) -> bool:
        response = probe(session, f"{endpoint.base_url}/v1/models/{self.model_name}")
        if response is None or not response.ok:
            return False
        versions = response.json().get("model_version_status", [])
        return any(status.get("state") == "AVAILABLE" for status in versions)

    def protocol(self) -> Protocol:
        return V1TensorProtocol(self.model_name, spec=self.card.serving_spec())

    def server_version(self, endpoint: Endpoint, session: requests.Session) -> str:
        # TF Serving's APIs report model versions only; the official image's tag is its release.
        _, _, tag = endpoint.image.rpartition(":")
        return f"tensorflow-serving {tag} (image tag)" if endpoint.started_by_plugin and tag else "unknown"
