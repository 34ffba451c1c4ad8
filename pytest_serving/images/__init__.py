"""Local, registry-free images for the serving systems (see ``recipe`` and ``builder``)."""

from __future__ import annotations

from .builder import ImageBuildError, build_offline_image, ensure_base_image, image_exists
from .recipe import BASE_IMAGE, OfflineImage, WheelFiles

__all__ = [
    "BASE_IMAGE",
    "ImageBuildError",
    "OfflineImage",
    "WheelFiles",
    "build_offline_image",
    "ensure_base_image",
    "image_exists",
]
