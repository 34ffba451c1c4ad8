"""Is Docker usable, and is an image here? Answers carry the command that fixes a 'no'."""

from __future__ import annotations

import docker


def docker_unavailable_reason() -> str | None:
    """None when the Docker engine answers; otherwise why not and how to fix it."""
    try:
        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except docker.errors.DockerException as error:
        return (
            f"Docker engine not reachable ({error}). Install and start it: "
            "`apt-get install -y docker.io && (dockerd >/var/log/dockerd.log 2>&1 &)`, "
            "or set DOCKER_HOST."
        )
    return None


def image_present(reference: str) -> bool:
    client = docker.from_env()
    try:
        client.images.get(reference)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def pull_image(reference: str) -> str | None:
    """Pull an image; None on success, else the registry's error."""
    client = docker.from_env(timeout=600)
    try:
        client.images.pull(reference)
        return None
    except docker.errors.DockerException as error:
        return str(error).splitlines()[0]
    finally:
        client.close()
