"""Which image runs a target: the user's, the official one, or the locally built offline one."""

from __future__ import annotations

from dataclasses import dataclass

from .containers.docker_env import image_present, pull_image
from .targets.base import ServingTarget


@dataclass(frozen=True)
class ImageChoice:
    """The image to run, or why there is none (with the commands that fix it)."""

    reference: str | None
    origin: str  # "override", "official", "offline" or "missing"
    problem: str = ""


def choose_image(
    target: type[ServingTarget], gpus: str | None, override: str | None, *, allow_pull: bool = True
) -> ImageChoice:
    """The user's image if given; else the official image if present; else the offline build; else pull."""
    if override:
        if image_present(override) or (allow_pull and pull_image(override) is None):
            return ImageChoice(override, "override")
        return ImageChoice(
            None, "missing", f"image {override} (from --serving-image) is not present and cannot be pulled"
        )
    official = target.default_image(gpus)
    if image_present(official):
        return ImageChoice(official, "official")
    offline = target.offline_image
    if offline is not None and not gpus and image_present(offline.tag):
        return ImageChoice(offline.tag, "offline")
    error = pull_image(official) if allow_pull else "pulling disabled"
    if error is None:
        return ImageChoice(official, "official")
    fixes = [f"`docker pull {official}` where a registry is reachable"]
    if offline is not None:
        fixes.append(f"`pytest-serving build-images {target.name}` (offline CPU image {offline.tag}, from wheels)")
    fixes.append(f"`--serving-image {target.name}=IMAGE`")
    return ImageChoice(
        None, "missing", f"no image for {target.name}: {pull_problem(official, error)}. Fix: {'; or '.join(fixes)}"
    )


#: Words of Docker's pull errors when no registry can be reached (DNS, routing, refused, timeouts).
UNREACHABLE_MARKERS = (
    "no such host",
    "server misbehaving",
    "temporary failure in name resolution",
    "network is unreachable",
    "no route to host",
    "connection refused",
    "i/o timeout",
    "timeout exceeded",
    "tls handshake timeout",
    "dial tcp",
)


def pull_problem(reference: str, error: str) -> str:
    """Why ``reference`` cannot run, in the user's terms: Docker's raw daemon error (resolver
    addresses and all) only when it is something other than an unreachable registry."""
    if any(marker in error.lower() for marker in UNREACHABLE_MARKERS):
        return f"image {reference} is not present locally and no registry is reachable"
    return f"image {reference} is not present locally and could not be pulled ({error})"
