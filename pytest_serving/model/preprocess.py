"""Image decoding and preprocessing shared by the in-process reference and every server handler.

This file has no dependency beyond numpy and Pillow: the model export copies it verbatim
next to each server's handler (as ``serving_preprocess.py``), so the servers and the
reference run the same bytes of code and any disagreement comes from the serving path.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

RESIZE_SHORTER_SIDE = 256
CROP_SIZE = 224
MEAN = 0.5
STD = 0.5
# Refuse before decoding pixels: a small file can declare enormous dimensions (a decompression bomb).
MAX_PIXELS = 40_000_000
# 10000x1 images would be resized to millions of pixels on the long side.
MAX_ASPECT_RATIO = 20.0
# The last line of defence against oversized uploads, for servers whose HTTP layer has no limit.
MAX_FILE_BYTES = 32 * 1024 * 1024


class InvalidImage(ValueError):
    """The bytes are not an image this model can classify; servers answer 400 with this message."""


def decode(data: bytes) -> Image.Image:
    """Decode any Pillow-readable image to upright RGB, or raise InvalidImage saying why."""
    if not data:
        raise InvalidImage("empty image: the request carried no bytes")
    if len(data) > MAX_FILE_BYTES:
        raise InvalidImage(f"image file too large: {len(data)} bytes exceeds {MAX_FILE_BYTES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise InvalidImage(f"image too large: {width}x{height} exceeds {MAX_PIXELS} pixels")
            if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
                raise InvalidImage(f"aspect ratio of {width}x{height} exceeds {MAX_ASPECT_RATIO:g}:1")
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidImage(f"image too large: {error}") from None
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for broken files; all mean "not decodable".
        raise InvalidImage(f"cannot decode image: {type(error).__name__}: {error}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything to white.
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max()), 1.0)
        scale = 65535.0 if peak > 255 else 255.0
        image = Image.fromarray(np.clip(array / scale * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def preprocess_image(image: Image.Image) -> np.ndarray:
    """Resize the shorter side to 256, centre-crop 224, scale to [-1, 1]; CHW float32."""
    width, height = image.size
    if width <= height:
        size = (RESIZE_SHORTER_SIDE, int(RESIZE_SHORTER_SIDE * height / width))
    else:
        size = (int(RESIZE_SHORTER_SIDE * width / height), RESIZE_SHORTER_SIDE)
    image = image.resize(size, Image.BILINEAR)
    left = round((size[0] - CROP_SIZE) / 2.0)
    top = round((size[1] - CROP_SIZE) / 2.0)
    image = image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - MEAN) / STD
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def preprocess(data: bytes) -> np.ndarray:
    """Encoded image bytes to the model's input tensor (3, 224, 224)."""
    return preprocess_image(decode(data))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stable top-k probabilities."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Indices and probabilities of the k largest entries of each row, best first."""
    order = np.argsort(-probabilities, axis=-1, kind="stable")[..., :k]
    return order, np.take_along_axis(probabilities, order, axis=-1)
