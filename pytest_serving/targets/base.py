"""What every serving target declares, and the readiness helpers they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import requests

from ..images.recipe import OfflineImage
from ..metrics.server import ServerMetricsSpec
from ..protocols.base import Protocol
from ..protocols.endpoint import Endpoint
from ..types import Option

if TYPE_CHECKING:
    from ..model.card import ModelCard

#: Memory a server may gain within one load phase without leaking (``ServingTarget.memory_swing_mb``): a
#: good Triton grew in steps of 2 to 2.5 MB within 10 s phases (allocator arenas), which over 30 requests
#: reads as 75 MB per 1000. A leak of 2 MB per request passes it within 8 requests.
MEMORY_SWING_MB = 16.0
#: The same for a server whose frontend runs on a JVM (TorchServe, MMS): its heap grows by a hundred MB
#: and more (an unmodified TorchServe's smoke phase grew 112 MB over 727 requests in a CI run). A handler
#: keeping 2 MiB per request passes it within 200 requests.
JVM_MEMORY_SWING_MB = 400.0


@dataclass(frozen=True)
class TargetOptions:
    """The user's choices that shape how a target runs (from the command line or ini).

    ``card`` is the model to deploy (``--serving-model``); ``model_name``, the name the server
    knows it by, is the card's name. ``candidate`` (``--serving-candidate``) is set only for a
    release deployment, whose server hosts both (``ServingTarget.build_release_deployment``).
    """

    model_name: str = "efficientnet_lite0"
    card: ModelCard | None = None
    candidate: ModelCard | None = None
    model_repo: Path | None = None
    gpus: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class ServingTarget(ABC):
    """One serving system: images, ports, command, readiness and protocol.

    Subclasses set the class attributes and implement ``command``, ``is_ready`` and
    ``protocol``; everything about starting and stopping containers lives elsewhere.
    """

    name: ClassVar[str]
    official_image: ClassVar[str]
    official_gpu_image: ClassVar[str]
    offline_image: ClassVar[OfflineImage | None] = None
    #: Container port of each role; ``http`` is the inference API.
    ports: ClassVar[dict[str, int]]
    #: Folder under ``model_repo/`` mounted read-only at ``model_mount``.
    model_repo_folder: ClassVar[str]
    model_mount: ClassVar[str] = "/models"
    #: Which of the server's Prometheus counters count requests and where their time went; None:
    #: the load reports show client figures only.
    server_metrics: ClassVar[ServerMetricsSpec | None] = None
    #: Memory the server may gain within one load phase without leaking (allocator arenas, a JVM's heap
    #: as it grows towards its maximum): a phase that grew less is never judged a leak, whatever its slope.
    memory_swing_mb: ClassVar[float] = MEMORY_SWING_MB
    #: Robustness cases this server answers wrongly in ways no handler can change (a 5xx before any
    #: model code runs): server version prefix ("2.51" matches 2.51.x) -> case name -> reason naming
    #: server and version. The suite marks them xfail(strict=True), so a fixed one fails until removed.
    known_deviations: ClassVar[Mapping[str, Mapping[str, str]]] = {}
    #: Options of this target alone, named ``serving-<name>-...``: ``settings.register`` adds them to
    #: the command line, environment and ini like the plugin's own, and their values (or defaults)
    #: reach the target as ``options.extra[option.dest]``.
    extra_options: ClassVar[tuple[Option, ...]] = ()
    #: Environment variables this target reads beyond its options: name -> (default, what it does),
    #: listed in docs/options.md.
    reads_environment: ClassVar[Mapping[str, tuple[str, str]]] = {}

    def __init__(self, options: TargetOptions, image_origin: str = "offline") -> None:
        self.options = options
        #: "official", "offline" or "override": official images lack our Python dependencies,
        #: so some targets deploy a different model variant on them.
        self.image_origin = image_origin

    @property
    def model_name(self) -> str:
        return self.options.model_name

    @classmethod
    def default_image(cls, gpus: str | None) -> str:
        return cls.official_gpu_image if gpus else cls.official_image

    @property
    def card(self) -> ModelCard:
        if self.options.card is None:
            raise ValueError(f"{self.name}: no model card given (TargetOptions.card)")
        return self.options.card

    @abstractmethod
    def build_deployment(self, sources: Path, dest: Path) -> None:
        """Write this server's whole model repository for ``self.card`` into the empty folder ``dest``.

        ``sources`` is this target's folder of ``model_repo/`` (handler templates); the card's
        files go beside the handler through ``model.deploy_files.write_card_files``. The result is
        cached by the caller (keyed by card and sources) and mounted read-only at ``model_mount``.
        """

    def unavailable_reason(self) -> str | None:
        """Why this target cannot deploy ``self.card`` at all (e.g. it needs an artifact the card lacks)."""
        return None

    #: A release deployment's versions of the model: the current one, then the candidate.
    release_versions: ClassVar[tuple[str, str]] = ("1", "2")

    def release_unsupported(self) -> str | None:
        """Why this server cannot host the current model and a candidate side by side (None: it can)."""
        return f"{self.name}: serving the current model and a candidate side by side is not implemented for it"

    def build_release_deployment(self, sources: Path, dest: Path, candidate: ModelCard) -> None:
        """Write into the empty folder ``dest`` a model repository that serves the current model and
        ``candidate`` as ``release_versions`` of one model (or as two models, where the server has no
        versions), both loaded at start."""
        raise NotImplementedError(self.release_unsupported())

    def version_protocol(self, version: str) -> Protocol:
        """The protocol addressed to one version of the model."""
        raise NotImplementedError(self.release_unsupported())

    #: A regular expression whose first group, in the first bytes of an answer's body, names the
    #: model version that gave it (the load engine's ``answer_tag``); None: answers do not say.
    answer_version_pattern: ClassVar[str | None] = None

    def rollout_unsupported(self) -> str | None:
        """Why this server cannot switch from one version to the other under load (None: it can)."""
        return f"{self.name}: switching model versions live is not implemented for it"

    def serve_only(self, endpoint: Endpoint, version: str, timeout: float) -> None:
        """Leave only ``version`` serving the model's unversioned requests (the rollout's start)."""
        raise NotImplementedError(self.rollout_unsupported())

    def switch(self, endpoint: Endpoint, old: str, new: str, timeout: float) -> None:
        """Switch the model's unversioned requests from ``old`` to ``new`` live; return once ``old`` is gone."""
        raise NotImplementedError(self.rollout_unsupported())

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line inside the container."""

    def environment(self) -> dict[str, str]:
        return {}

    @abstractmethod
    def is_ready(self, endpoint: Endpoint, session: requests.Session) -> bool:
        """One readiness probe through the server's own health API; True once the model answers."""

    @abstractmethod
    def protocol(self) -> Protocol:
        """How the contract tests talk to this server."""

    def request_headers(self, endpoint: Endpoint) -> dict[str, str]:
        """Headers every request needs (authorization tokens, perhaps from ``endpoint.read_file``)."""
        return {}

    def server_version(self, endpoint: Endpoint, session: requests.Session) -> str:
        """The server's own report of its version, recorded with every figure."""
        return "unknown"

    def health(self, endpoint: Endpoint, session: requests.Session) -> dict[str, object]:
        """What must not change while the server takes bad requests; ``ready`` must stay True.

        The robustness suite compares a snapshot taken before its cases with one after each case.
        Targets add what their APIs expose beyond readiness (worker ids and pids, model states),
        so that a crashed and silently restarted worker shows as a change; never counters.
        """
        return {"ready": self.is_ready(endpoint, session)}


def uvicorn_chunk_overflow_deviation(server: str) -> dict[str, str]:
    """The known deviation of servers behind uvicorn (measured on BentoML 1.4 and MLServer 1.7): a chunk size beyond
    2**64 is neither answered nor refused; the server stays alive and answers the next request."""
    return {
        "chunk-size-overflow": (
            f"{server} (uvicorn) waits for the body of a chunk whose size is beyond 2**64 "
            "instead of refusing it: no answer within 15 s (the connection stays open)"
        )
    }


def probe(
    session: requests.Session, url: str, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> requests.Response | None:
    """GET ``url``; None while the server does not answer yet."""
    try:
        return session.get(url, timeout=timeout, headers=headers)
    except requests.RequestException:
        return None


def v2_ready(session: requests.Session, base_url: str, model_ready_path: str) -> bool:
    """The V2 protocol's readiness: the server's (``/v2/health/ready``) and the model's."""
    server = probe(session, f"{base_url}/v2/health/ready")
    model = probe(session, base_url + model_ready_path)
    return bool(server is not None and server.ok and model is not None and model.ok)


def v2_server_version(session: requests.Session, base_url: str, default_name: str) -> str:
    """``name version`` from the V2 server metadata (``GET /v2``); the name is ``default_name`` where the
    server gives none; "unknown" while the server does not say."""
    response = probe(session, f"{base_url}/v2")
    if response is None or not response.ok:
        return "unknown"
    try:
        metadata = response.json()
        return f"{metadata.get('name', default_name)} {metadata.get('version', 'unknown')}"
    except (ValueError, AttributeError):
        return "unknown"
