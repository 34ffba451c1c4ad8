"""Decoding and preprocessing of the images clients really send, and of the ones attackers send."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from skimage import data

from pytest_serving.model.preprocess import (
    CROP_SIZE,
    MAX_PIXELS,
    InvalidImage,
    decode,
    preprocess,
    softmax,
    top_k,
)
from pytest_serving.robustness.images import encode

EXIF_ORIENTATION = 0x0112
# EXIF orientation 6: the stored pixels must be turned 90 degrees clockwise to stand upright.
ROTATE_CLOCKWISE = 6


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims width x height 8-bit grey pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(data.chelsea())


def rgb(data_bytes: bytes) -> np.ndarray:
    return np.asarray(decode(data_bytes), dtype=np.int16)


def test_preprocess_gives_the_model_input_tensor(chelsea: Image.Image) -> None:
    tensor = preprocess(encode(chelsea, "JPEG", quality=95))
    assert tensor.shape == (3, CROP_SIZE, CROP_SIZE)
    assert tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    assert -1.0 <= tensor.min() < tensor.max() <= 1.0


def test_centre_crop_keeps_the_middle_of_the_shorter_side_resize() -> None:
    # 512x256: resized to 512x256 (shorter side already 256), then cropped to columns 144..368.
    columns = np.repeat((np.arange(512)[None, :] // 2).astype(np.uint8), 256, axis=0)
    tensor = preprocess(encode(Image.fromarray(columns), "PNG"))
    first_column = round((tensor[0, :, 0].mean() * 0.5 + 0.5) * 255)
    last_column = round((tensor[0, :, -1].mean() * 0.5 + 0.5) * 255)
    assert (first_column, last_column) == (144 // 2, (144 + CROP_SIZE - 1) // 2)


def test_grayscale_becomes_three_equal_channels(chelsea: Image.Image) -> None:
    pixels = rgb(encode(chelsea.convert("L"), "JPEG"))
    assert pixels.shape == (300, 451, 3)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


def test_cmyk_jpeg_decodes_to_the_same_colours(chelsea: Image.Image) -> None:
    from_rgb = rgb(encode(chelsea, "JPEG", quality=95))
    from_cmyk = rgb(encode(chelsea.convert("CMYK"), "JPEG", quality=95))
    assert np.abs(from_cmyk - from_rgb).mean() < 3


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_become_white(mode: str) -> None:
    image = Image.new("RGBA", (4, 2), (200, 30, 30, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    converted = image.convert(mode)
    pixels = rgb(encode(converted, "PNG"))
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[1, 1]) == converted.convert("RGB").getpixel((1, 1))


def test_palette_transparency_becomes_white() -> None:
    image = Image.new("P", (4, 2), 1)
    image.putpalette([0, 0, 0, 10, 120, 240] + [0] * 762)
    image.putpixel((0, 0), 0)
    pixels = rgb(encode(image, "PNG", transparency=0))
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[1, 1]) == (10, 120, 240)


def test_16_bit_png_is_scaled_not_clipped_to_white() -> None:
    ramp = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16)
    encoded = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(encoded)).mode.startswith("I")
    grey = rgb(encoded)[..., 0]
    assert grey.min() == 0 and grey.max() >= 254
    assert abs(grey.mean() - 127.5) < 2


def test_exif_orientation_is_applied_exactly(chelsea: Image.Image) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_CLOCKWISE
    stored_sideways = chelsea.transpose(Image.Transpose.ROTATE_90)
    rotated = encode(stored_sideways, "PNG", exif=exif.tobytes())
    assert np.array_equal(preprocess(rotated), preprocess(encode(chelsea, "PNG")))


def test_one_pixel_image_fills_the_crop() -> None:
    tensor = preprocess(encode(Image.new("RGB", (1, 1), (255, 0, 128)), "PNG"))
    assert tensor.shape == (3, CROP_SIZE, CROP_SIZE)
    np.testing.assert_allclose(tensor[:, 100, 100], [1.0, -1.0, 128 / 255 * 2 - 1], atol=1e-6)
    assert np.ptp(tensor, axis=(1, 2)).max() == 0


@pytest.mark.parametrize("size", [(10000, 1), (1, 10000)])
def test_extreme_aspect_ratio_is_rejected_with_its_size(size: tuple[int, int]) -> None:
    with pytest.raises(InvalidImage, match=rf"aspect ratio of {size[0]}x{size[1]} exceeds 20:1"):
        decode(encode(Image.new("L", size), "PNG"))


@pytest.mark.parametrize(
    "side",
    [
        int(MAX_PIXELS**0.5) + 1,  # above this project's limit, below Pillow's own warning
        100_000,  # far above Pillow's DecompressionBombError threshold
    ],
)
def test_decompression_bomb_is_rejected_from_its_header(side: int) -> None:
    bomb = png_declaring(side, side)
    assert len(bomb) < 200
    # The pixel data is garbage: "too large" rather than "cannot decode" proves nothing was decoded.
    with pytest.raises(InvalidImage, match="image too large"):
        decode(bomb)


def test_truncated_jpeg_is_rejected(chelsea: Image.Image) -> None:
    encoded = encode(chelsea, "JPEG")
    with pytest.raises(InvalidImage, match="cannot decode image.*truncated"):
        decode(encoded[: len(encoded) // 2])


def test_empty_bytes_are_rejected() -> None:
    with pytest.raises(InvalidImage, match="empty image"):
        decode(b"")


def test_random_bytes_are_rejected() -> None:
    with pytest.raises(InvalidImage, match="cannot decode image"):
        decode(np.random.default_rng(0).bytes(4096))


def test_invalid_image_is_a_value_error_for_callers_that_map_errors_to_400() -> None:
    assert issubclass(InvalidImage, ValueError)


def test_softmax_is_stable_for_large_logits() -> None:
    probabilities = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(probabilities[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(probabilities[1], [1 / 3] * 3)


def test_top_k_is_best_first_and_keeps_index_order_on_ties() -> None:
    probabilities = np.full((1, 1000), 0.5 / 997)
    probabilities[0, [900, 10, 500]] = [0.2, 0.15, 0.15]
    classes, top = top_k(probabilities, k=5)
    assert classes.tolist() == [[900, 10, 500, 0, 1]]
    np.testing.assert_allclose(top, [[0.2, 0.15, 0.15, 0.5 / 997, 0.5 / 997]])
