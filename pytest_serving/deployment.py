"""Bring one target to a ready endpoint: pick its image, prepare its model repository, boot or attach."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from .cache import cache_root
from .containers.docker_env import docker_unavailable_reason
from .containers.resources import ResourceMonitor
from .containers.server import ServerStartError, ServingContainer, running_server
from .correctness import same_top1
from .files import build_atomically
from .image_selection import choose_image
from .model.card import ModelCard
from .protocols.client import ClassifierClient
from .protocols.endpoint import Endpoint
from .settings import Settings
from .targets import TARGETS
from .targets.base import ServingTarget, TargetOptions
from .types import Prediction, ProtocolError

#: The embedded default model repository (one folder per target): inside the package when installed
#: from a wheel, beside it in a checkout or an editable install.
EMBEDDED_MODEL_REPO = next(
    (
        path
        for path in (
            Path(__file__).resolve().parent / "model_repo",
            Path(__file__).resolve().parent.parent / "model_repo",
        )
        if path.is_dir()
    ),
    Path(__file__).resolve().parent.parent / "model_repo",
)


#: Bump when what build_deployment writes changes for the same card and sources.
DEPLOYMENT_FORMAT = 1


#: A server whose health API says ready must answer its first known sample right within this long.
FIRST_ANSWER_TIMEOUT_S = 60.0
FIRST_ANSWER_RETRY_S = 1.0


@dataclass(frozen=True)
class KnownAnswer:
    """A sample and the in-process model's answer to it: the first request every new deployment must
    answer right before it counts as ready, since health endpoints can be green over a dead model."""

    sample_id: str
    data: bytes
    expected: Prediction


class Unavailable(Exception):
    """The target cannot run on this machine; the message says why and how to fix it.

    ``provable`` is False only when nothing on this machine could make the target run (no
    offline recipe and no registry): --serving-strict then still skips instead of failing.
    """

    def __init__(self, reason: str, provable: bool = True) -> None:
        super().__init__(reason)
        self.provable = provable


@dataclass(frozen=True)
class Deployment:
    """A target that answers: its description, its ready endpoint and, if the plugin booted it, its container."""

    target: ServingTarget
    endpoint: Endpoint
    container: ServingContainer | None

    def log_tail(self) -> str:
        return self.container.log_tail() if self.container else "(server not started by pytest-serving: no logs)"

    def postmortem(self) -> str:
        """The container's state, exit code and log tail, for a failure that may mean the server died."""
        return self.container.postmortem() if self.container else "(server not started by pytest-serving: no logs)"

    @property
    def monitor(self) -> ResourceMonitor | None:
        """Memory and CPU readings of the container and its cold start; None for a server not started here."""
        return self.container.monitor if self.container else None


def target_options(settings: Settings) -> TargetOptions:
    card = settings.card
    return TargetOptions(
        model_name=card.name,
        card=card,
        model_repo=settings.model_repo or EMBEDDED_MODEL_REPO,
        gpus=settings.gpus,
        extra=settings.target_extra,
    )


@contextmanager
def deploy(
    name: str, settings: Settings, known: KnownAnswer | None = None, candidate: ModelCard | None = None
) -> Iterator[Deployment]:
    """Yield a ready deployment of target ``name``; raise Unavailable when Docker or the image is missing.

    With ``candidate``, the server hosts the current card and the candidate side by side (the
    target's ``release_versions``), from a model repository built for the pair.

    Ready means the server's health API says so and, given ``known``, that it answered that sample
    as the in-process model does (ServerStartError with the log tail otherwise).
    """
    target_class = TARGETS[name]
    options = replace(target_options(settings), candidate=candidate)
    problem = target_class(options).unavailable_reason()
    if candidate is not None:
        problem = problem or target_class(options).release_unsupported()
    if problem:
        raise Unavailable(problem, provable=False)
    if candidate is not None and name in settings.urls:
        raise Unavailable(f"{name}: --serving-url points at a server this session did not deploy; the release "
                          "comparison deploys both versions itself (drop --serving-url for it)", provable=False)  # fmt: skip
    if name in settings.urls:
        target = target_class(options, image_origin="external")
        endpoint = Endpoint(name, {"http": settings.urls[name].rstrip("/")}, "external", started_by_plugin=False)
        deployment = Deployment(target, _complete(target, _await_external(target, endpoint, settings)), None)
        await_first_answer(deployment, known)
        yield deployment
        return
    problem = docker_unavailable_reason()
    if problem:
        raise Unavailable(problem)
    choice = choose_image(target_class, settings.gpus, settings.images.get(name))
    if choice.reference is None:
        raise Unavailable(choice.problem, provable=target_class.offline_image is not None or name in settings.images)
    target = target_class(options, image_origin=choice.origin)
    if candidate is not None and (unsupported := target.release_unsupported()):
        raise Unavailable(unsupported, provable=False)
    folder = options.model_repo / target.model_repo_folder
    if not folder.is_dir():
        raise Unavailable(f"model repository folder {folder} does not exist (see --serving-model-repo)")
    if settings.model_repo is None or candidate is not None:
        folder = built_deployment(target, folder, candidate)
    with running_server(target, choice.reference, folder, settings.startup_timeout) as (container, endpoint):
        deployment = Deployment(target, _complete(target, endpoint), container)
        await_first_answer(deployment, known)
        yield deployment


def await_first_answer(
    deployment: Deployment, known: KnownAnswer | None, timeout: float = FIRST_ANSWER_TIMEOUT_S
) -> None:
    """Send ``known`` until the server answers it; a wrong answer, or none within ``timeout``, is a
    ServerStartError with the container's log tail. Retries ride out a warm-up's transient errors."""
    if known is None:
        return
    endpoint = deployment.endpoint
    deadline = time.monotonic() + timeout
    client = ClassifierClient(endpoint.base_url, endpoint.protocol, headers=endpoint.headers, timeout=timeout)
    try:
        while True:
            try:
                prediction = client.classify(known.data)
            except (ProtocolError, requests.RequestException) as error:
                last_error = f"{type(error).__name__}: {error}"
            else:
                if same_top1(prediction, known.expected):
                    return
                raise ServerStartError(
                    f"{endpoint.target} ({endpoint.server_version}) says ready but answers its first sample "
                    f"{known.sample_id} wrong: top-5 {list(prediction.classes)}, in-process "
                    f"{list(known.expected.classes)}.\n--- container log tail ---\n{deployment.log_tail()}"
                )
            if time.monotonic() + FIRST_ANSWER_RETRY_S > deadline:
                raise ServerStartError(
                    f"{endpoint.target} ({endpoint.server_version}) says ready but gave no prediction for its first "
                    f"sample {known.sample_id} within {timeout:.0f} s; last error: {last_error}\n"
                    f"--- container log tail ---\n{deployment.log_tail()}"
                )
            time.sleep(FIRST_ANSWER_RETRY_S)
    finally:
        client.close()


def built_deployment(target: ServingTarget, sources: Path, candidate: ModelCard | None = None) -> Path:
    """The target's model repository for its card (and ``candidate`` beside it, for a release),
    built once into the cache and reused.

    Keyed by the card (artifact bytes and every field), the candidate's, the target and the bytes
    of its handler sources, so an edited handler or a new artifact gets a new deployment; built
    under a temporary name and renamed, so concurrent sessions never mount half a repository.
    """
    pair = f"\0{candidate.card_id}" if candidate is not None else ""
    digest = hashlib.sha256(f"{DEPLOYMENT_FORMAT}\0{target.name}\0{target.card.card_id}{pair}".encode())
    for path in sorted(p for p in sources.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(f"\0{path.relative_to(sources)}\0".encode() + path.read_bytes())
    names = target.card.name + (f"+{candidate.name}" if candidate is not None else "")
    dest = cache_root() / "deployments" / f"{target.name}-{names}-{digest.hexdigest()[:16]}"
    if dest.is_dir():
        return dest

    def build(scratch: Path) -> Path:
        built = scratch / "repo"
        built.mkdir()
        if candidate is None:
            target.build_deployment(sources, built)
        else:
            target.build_release_deployment(sources, built, candidate)
        return built

    # A finished folder is another session's identical build: keep it.
    return build_atomically(dest, build, done=Path.is_dir)


def _await_external(target: ServingTarget, endpoint: Endpoint, settings: Settings) -> Endpoint:
    deadline = time.monotonic() + settings.startup_timeout
    with requests.Session() as session:
        while time.monotonic() < deadline:
            if target.is_ready(endpoint, session):
                return endpoint
            time.sleep(0.5)
    raise ServerStartError(f"{target.name} at {endpoint.base_url} not ready after {settings.startup_timeout:.0f} s")


def _complete(target: ServingTarget, endpoint: Endpoint) -> Endpoint:
    """Add what the suites need once the server is ready: protocol, headers, the server's version."""
    endpoint = replace(
        endpoint,
        model_name=target.model_name,
        protocol=target.protocol(),
        headers=target.request_headers(endpoint),
    )
    with requests.Session() as session:
        session.headers.update(endpoint.headers)
        return replace(endpoint, server_version=target.server_version(endpoint, session))
