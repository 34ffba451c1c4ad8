"""Integration tests run real containers; they skip loudly (fail under PYTEST_SERVING_STRICT) without Docker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from PIL import Image, ImageOps

from pytest_serving.containers.docker_env import docker_unavailable_reason, image_present
from pytest_serving.targets import TARGETS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own-model"


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


@pytest.fixture(scope="session")
def example_project() -> Path:
    """The example project of a user's own model: its card, make_model.py, make_candidate.py and checks."""
    return EXAMPLE


@pytest.fixture(scope="session")
def own_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's card beside the model.onnx and labels.txt its script writes."""
    folder = tmp_path_factory.mktemp("own-model")
    subprocess.run([sys.executable, str(EXAMPLE / "make_model.py"), "--out", str(folder)], check=True)
    shutil.copyfile(EXAMPLE / "card.toml", folder / "card.toml")
    return folder / "card.toml"


@pytest.fixture(scope="session")
def own_candidate(tmp_path_factory: pytest.TempPathFactory, own_model: Path) -> Callable[[str], Path]:
    """Returns a function giving the card of one of make_candidate.py's candidates of the own model
    (``worse``: three classes always wrong; ``heavier``: the same answers for twice the compute)."""

    def build(kind: str) -> Path:
        folder = tmp_path_factory.getbasetemp() / f"candidate-{kind}"
        if not folder.is_dir():
            command = [
                sys.executable,
                str(EXAMPLE / "make_candidate.py"),
                kind,
                "--model",
                str(own_model.with_name("model.onnx")),
            ]
            subprocess.run([*command, "--out", str(folder)], check=True)
        return folder / "card.toml"

    return build


@pytest.fixture(scope="session")
def labelled_images(tmp_path_factory: pytest.TempPathFactory, shared_samples: Path, own_model: Path) -> Path:
    """ImageFolder ``<label>/*.jpg`` for the card's 12 labels: the shared photo of each class and its mirror image."""
    classes = dict(line.split("\t")[:2] for line in (shared_samples / "classes.tsv").read_text().splitlines()[1:])
    sys.path.insert(0, str(EXAMPLE))
    try:
        from make_model import CLASSES
    finally:
        sys.path.remove(str(EXAMPLE))
    folder = tmp_path_factory.mktemp("val")
    for index, label in CLASSES:
        (photo,) = shared_samples.glob(f"{classes[str(index)]}_*.JPEG")
        (folder / label).mkdir()
        (folder / label / photo.name).symlink_to(photo)
        ImageOps.mirror(Image.open(photo).convert("RGB")).save(
            folder / label / f"mirrored-{photo.stem}.jpg", quality=92
        )
    return folder
