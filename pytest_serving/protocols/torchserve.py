"""TorchServe's REST APIs: ``POST /predictions/{model}`` with the image file as the body.

The project's handler answers ``{"classes": [...], "probabilities": [...]}`` (top-5, best
first). Errors, TorchServe's own and the handler's per-request ones alike, are
``{"code": ..., "type": ..., "message": ...}``. The management-side answers the target reads
(the key file, describe-model, the API description) are parsed here too, as pure functions,
so that all of TorchServe's wire formats are tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from .base import HttpRequest
from .image_file import ImageFileProtocol

#: The error type of a request whose bearer key is missing, wrong or expired.
INVALID_KEY = "InvalidKeyException"


class TorchServeProtocol(ImageFileProtocol):
    """Image-in/top-5-out over TorchServe's inference API: ``/predictions/{model}[/{version}]``."""

    #: TorchServe's inference API, which Multi Model Server shares.
    name = "torchserve-rest"
    route = "predictions"

    def error_text(self, body: bytes) -> str:
        return error_message(body)


def error_message(body: bytes) -> str:
    """``type: message`` of a TorchServe error body, or the body's start when it is not one."""
    try:
        error = json.loads(body)
        return f"{error['type']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return body[:500].decode("utf-8", "replace")


def key_refused(status: int, body: bytes) -> bool:
    """Whether TorchServe refused a request's key (it answers 400 InvalidKeyException, not 401)."""
    return status != 200 and error_message(body).startswith(f"{INVALID_KEY}:")


@dataclass(frozen=True)
class TokenKeys:
    """The bearer keys of a TorchServe with token authorization: one for inference, one for management."""

    inference: str
    management: str

    @classmethod
    def from_key_file(cls, content: bytes) -> TokenKeys:
        """Parse the ``key_file.json`` TorchServe writes at start; ValueError if it is not one (yet)."""
        try:
            keys = json.loads(content)
            return cls(inference=str(keys["inference"]["key"]), management=str(keys["management"]["key"]))
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a TorchServe key file: missing {error}") from None


def bearer(key: str | None) -> dict[str, str]:
    """The Authorization header for ``key``; none when authorization is off."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def workers_ready(describe_body: bytes) -> bool:
    """Whether a describe-model answer (``GET /models/{name}``) shows its workers loaded.

    TorchServe answers ``/ping`` Healthy before any worker has loaded the model; only READY
    workers answer predictions. Ready means at least ``minWorkers`` (and at least one) READY.
    """
    try:
        (model,) = json.loads(describe_body)
        return _loaded(model)
    except (ValueError, TypeError, AttributeError):
        return False


def versions_ready(describe_all_body: bytes, versions: Iterable[str]) -> bool:
    """Whether a describe-all answer (``GET /models/{name}/all``) shows each of ``versions``
    registered with its workers loaded (as ``workers_ready`` judges one version)."""
    try:
        models = {str(model.get("modelVersion")): model for model in json.loads(describe_all_body)}
        return all(version in models and _loaded(models[version]) for version in versions)
    except (ValueError, TypeError, AttributeError):
        return False


def registered_versions(describe_all_body: bytes) -> list[str]:
    """The versions a describe-all answer lists; ValueError when it is not one."""
    try:
        return [str(model["modelVersion"]) for model in json.loads(describe_all_body)]
    except (KeyError, TypeError) as error:
        raise ValueError(f"not a TorchServe describe-model answer: {describe_all_body[:300]!r}") from error


def _loaded(model: dict) -> bool:
    ready = sum(worker.get("status") == "READY" for worker in model.get("workers", []))
    return ready >= max(1, int(model.get("minWorkers", 1)))


@dataclass(frozen=True)
class ModelManagement:
    """Requests to TorchServe's management API for the versions of one model, relative to its base URL.

    Registering and unregistering need a server started with ``--enable-model-api`` (TorchServe
    0.12 refuses both with 405 otherwise); setting the default version does not.
    """

    model_name: str

    def _path(self, version: str) -> str:
        return f"/models/{quote(self.model_name, safe='')}/{quote(version, safe='')}"

    def describe_all(self) -> HttpRequest:
        """Every registered version with its workers (``versions_ready``, ``registered_versions`` read it)."""
        return HttpRequest("GET", self._path("all"))

    def register(self, archive: str, initial_workers: int = 1) -> HttpRequest:
        """Register ``archive`` (a file in the model store) as a version of the model; ``synchronous``:
        TorchServe answers once the initial workers are up, or with the error that stopped them."""
        query = urlencode(
            {
                "url": archive,
                "model_name": self.model_name,
                "initial_workers": initial_workers,
                "synchronous": "true",
            }
        )
        return HttpRequest("POST", f"/models?{query}")

    def set_default(self, version: str) -> HttpRequest:
        """Make ``version`` answer the model's unversioned requests."""
        return HttpRequest("PUT", self._path(version) + "/set-default")

    def unregister(self, version: str) -> HttpRequest:
        """Remove ``version``; TorchServe answers once its workers have stopped, and refuses (403) to
        remove the default version while others are registered."""
        return HttpRequest("DELETE", self._path(version))


def worker_states(describe_body: bytes) -> dict[str, str]:
    """Each worker's id and pid with its status, from a describe-model answer: a worker that crashed
    and was restarted comes back with another pid; one that is stuck shows UNLOADING or UNREADY."""
    try:
        (model,) = json.loads(describe_body)
        return {
            f"worker {worker.get('id')} pid {worker.get('pid')}": str(worker.get("status"))
            for worker in model.get("workers", [])
        }
    except (ValueError, TypeError, AttributeError) as error:
        return {"(describe-model unreadable)": f"{type(error).__name__}: {error}"}


def api_version(description_body: bytes) -> str | None:
    """The server version in TorchServe's OpenAPI description (``GET /api-description``)."""
    try:
        return str(json.loads(description_body)["info"]["version"])
    except (ValueError, KeyError, TypeError):
        return None
