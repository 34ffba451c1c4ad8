"""ResNet-50 in plain torch with torchvision's state-dict layout.

ResNet-50 is the model of the serving study this project follows. torchvision is not a
dependency (it pins torch versions and drags in image codecs the servers do not need),
so the architecture is written out here with the same module names: a torchvision
``resnet50`` weights file (v1 or v2, both are ResNet v1.5) loads without renaming.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

# Channels per stage before expansion, blocks per stage, and stride of each stage's first block.
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
EXPANSION = 4
NUM_CLASSES = 1000
# torchvision's ImageNet weights were trained on this normalisation of [0, 1] pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# preprocess.py gives every model (x - 0.5) / 0.5 of [0, 1] pixels.
SHARED_MEAN = 0.5
SHARED_STD = 0.5
RANDOM_SEED = 0
RANDOM_ORIGIN = "random (load tests only)"


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class SharedToImageNetInput(nn.Module):
    """Turns the shared input, (x/255 - 0.5) / 0.5, into ImageNet's mean/std normalisation.

    Its constants are non-persistent buffers: they add no state-dict keys.
    """

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        # ((x * SHARED_STD + SHARED_MEAN) - mean) / std, folded into one multiply-add.
        self.register_buffer("scale", SHARED_STD / std, persistent=False)
        self.register_buffer("shift", (SHARED_MEAN - mean) / std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class ResNet50(nn.Module):
    """torchvision's ``resnet50`` that takes the project's shared input normalisation.

    The input is what ``preprocess.preprocess`` returns for every model; converting it to
    the normalisation the torchvision weights expect inside the graph means one
    preprocessing file serves every model and every server unchanged.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.normalise = SharedToImageNetInput()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        for index, (width, blocks, stride) in enumerate(STAGES, start=1):
            layer = []
            for block in range(blocks):
                layer.append(Bottleneck(in_channels, width, stride if block == 0 else 1))
                in_channels = width * EXPANSION
            setattr(self, f"layer{index}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, num_classes)
        self._initialise()

    def _initialise(self) -> None:
        """torchvision's initialisation, so random weights behave like an untrained torchvision model."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def load_resnet50(weights: Path | None = None) -> tuple[nn.Module, str]:
    """ResNet-50 in eval mode and where its weights came from.

    ``weights`` is a torchvision ``resnet50`` state-dict file (for example
    ``resnet50-11ad3fa6.pth``); without one the weights are random but seeded, good for
    load tests that measure serving cost and nothing about accuracy.
    """
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = ResNet50()
        return model.eval(), RANDOM_ORIGIN
    model = ResNet50()
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    except (pickle.UnpicklingError, RuntimeError, TypeError) as error:
        raise ValueError(f"{weights} is not a torchvision resnet50 state dict: {error}") from None
    return model.eval(), str(weights)
