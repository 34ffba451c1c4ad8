"""What a serving system's CPU image is made of when no image registry can be reached.

A recipe only says what goes in; ``builder.build_offline_image`` downloads the wheels on
the host (where PyPI works), serves them to ``docker build`` over loopback and renders the
Dockerfile with ``render_dockerfile`` below.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

BASE_IMAGE = "pytest-serving/base:bookworm"
PROJECT_LABEL = "io.pytest-serving.project"
PROJECT = "pytest-serving"
#: Build argument that carries the loopback URL the downloaded wheels are served from.
WHEELS_URL_ARG = "WHEELS_URL"
#: Folder of the build context whose tree is copied onto the image's root.
ROOTFS = "rootfs"
#: The one onnxruntime every image runs a model card's ONNX with: the version the host's in-process reference
#: uses (pyproject's lower bound aside), so server and reference infer alike. An image's tag does not name it:
#: after changing it, rebuild the images (``pytest-serving build-images --rebuild NAME...``).
ONNXRUNTIME = "onnxruntime==1.32.0"


@dataclass(frozen=True)
class WheelFiles:
    """Files taken out of a wheel on the host instead of pip-installing it.

    Some wheels ship a whole server (``nvidia-pytriton`` carries ``tritonserver``) that we
    want without its Python package and its dependencies. ``members`` maps a path inside the
    wheel to a folder in the image: a path ending in ``/`` copies that folder's contents, any
    other path copies that one file.
    """

    requirement: str
    members: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class OfflineImage:
    """How one serving system's CPU image is built from the base image with no registry.

    ``wheels`` are pip requirements (or paths to local ``.whl`` files) installed with their
    dependencies into the image's system Python; ``wheels_no_deps`` are installed without
    them (for packages whose declared dependencies would drag in what the image must not
    have). ``dockerfile_steps`` are appended verbatim after the common preamble.
    """

    tag: str
    apt_packages: tuple[str, ...] = ()
    wheels: tuple[str, ...] = ()
    wheels_no_deps: tuple[str, ...] = ()
    wheel_files: tuple[WheelFiles, ...] = ()
    dockerfile_steps: str = ""
    #: The image's Python (Debian bookworm ships 3.11); wheels are downloaded for it.
    python_version: str = "3.11"
    base: str = BASE_IMAGE

    @property
    def slug(self) -> str:
        return slug(self.tag)

    @property
    def installs_wheels(self) -> bool:
        return bool(self.wheels or self.wheels_no_deps)


def slug(tag: str) -> str:
    """A file-name-safe form of an image tag, naming its build folder and lock."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", tag).strip("-")


def install_spec(requirement: str) -> str:
    """The name pip inside the image installs for ``requirement``.

    A local wheel path means nothing inside the image, where only the served folder of
    downloaded wheels exists, so ``/opt/wheels/torch-2.13.0+cpu-cp311-....whl`` becomes
    ``torch==2.13.0+cpu``.
    """
    if not requirement.endswith(".whl"):
        return requirement
    name, version = PurePosixPath(requirement).name.split("-")[:2]
    return f"{name}=={version}"


def apt_packages(recipe: OfflineImage) -> tuple[str, ...]:
    """The recipe's packages, plus Python and pip when it installs wheels."""
    needed = ("python3", "python3-pip") if recipe.installs_wheels else ()
    return tuple(dict.fromkeys(recipe.apt_packages + needed))


def render_dockerfile(recipe: OfflineImage) -> str:
    """The Dockerfile of ``recipe``: common preamble, then the recipe's own steps.

    Layers that do not depend on the wheel server's port (apt, extracted files) come first
    so that a rebuild after a failed later step reuses them.
    """
    lines = [
        f"FROM {recipe.base}",
        f'LABEL {PROJECT_LABEL}="{PROJECT}"',
        (
            "ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "
            "PIP_ROOT_USER_ACTION=ignore"
        ),
    ]
    packages = apt_packages(recipe)
    if packages:
        lines.append(
            "RUN apt-get update \\\n"
            f" && apt-get install -y --no-install-recommends {' '.join(packages)} \\\n"
            " && apt-get clean && rm -rf /var/lib/apt/lists/*"
        )
    if recipe.wheel_files:
        lines.append(f"COPY {ROOTFS}/ /")
    if recipe.installs_wheels:
        lines.append(f"ARG {WHEELS_URL_ARG}")
        pip = f'RUN python3 -m pip install --break-system-packages --no-index --find-links "${WHEELS_URL_ARG}"'
        for requirements, extra in ((recipe.wheels, ""), (recipe.wheels_no_deps, " --no-deps")):
            if requirements:
                specs = " ".join(shlex.quote(install_spec(r)) for r in requirements)
                lines.append(f"{pip}{extra} {specs}")
    if recipe.dockerfile_steps.strip():
        lines.append(recipe.dockerfile_steps.strip())
    return "\n".join(lines) + "\n"
