"""Integration tests run real containers; they skip loudly (fail under PYTEST_SERVING_STRICT) without Docker."""

from __future__ import annotations

import os
import uuid

import docker
import pytest

from pytest_serving.containers.docker_env import docker_unavailable_reason, image_present
from pytest_serving.targets import TARGETS


def _unavailable(reason: str) -> None:
    if os.environ.get("PYTEST_SERVING_STRICT"):
        pytest.fail(f"{reason} [PYTEST_SERVING_STRICT is set]", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    """A Docker client, or a loud skip saying how to get Docker."""
    reason = docker_unavailable_reason()
    if reason:
        _unavailable(reason)
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def offline_image(docker_client):
    """Returns a function giving a target's offline image tag, or skipping with the build command."""

    def require(target: str) -> str:
        tag = TARGETS[target].offline_image.tag
        if not image_present(tag):
            _unavailable(f"image {tag} missing: run `pytest-serving build-images {target}`")
        return tag

    return require


@pytest.fixture
def session_id(monkeypatch):
    """A fresh pytest-serving session id for an inner pytest run, so its containers and cleanup are its own."""
    value = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PYTEST_SERVING_SESSION_ID", value)
    return value
