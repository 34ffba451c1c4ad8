"""Image files derived from one sample JPEG: unusual encodings a server must classify, broken ones it must refuse.

Everything is built from bytes and small arrays: the bombs declare enormous sizes in their
headers without the pixels ever existing, and the oversized file is assembled in one copy.
"""

from __future__ import annotations

import functools
import io
import itertools
import random
import struct
import zlib

import numpy as np
from PIL import Image

JPEG_SOI = b"\xff\xd8"
JPEG_SOS = 0xDA
JPEG_COMMENT = b"\xff\xfe"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GRAYSCALE = 0
PNG_RGB = 2
EXIF_ORIENTATION = 0x0112
# Orientation 6: the stored pixels are turned 90 degrees counter-clockwise; viewers turn them back.
ROTATED_CLOCKWISE_ON_DISPLAY = 6


def encode(image: Image.Image, image_format: str, **params: object) -> bytes:
    """``image`` saved by Pillow in ``image_format`` (deterministic for a given Pillow build)."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    """``image`` as a PNG compressed for speed: these files are sent once, never stored."""
    return encode(image, "PNG", compress_level=1)


def gif(image: Image.Image) -> bytes:
    """``image`` as a GIF: quantised to a dithered 256-colour palette, as GIF encoders do."""
    palette = image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG)
    return encode(palette, "GIF")


def jpeg_header_markers(jpeg: bytes) -> list[int]:
    """Offsets of every marker after SOI up to and including start-of-scan, where entropy-coded data begins."""
    if not jpeg.startswith(JPEG_SOI):
        raise ValueError("not a JPEG: it does not start with the SOI marker")
    markers = []
    position = len(JPEG_SOI)
    while position + 4 <= len(jpeg):
        if jpeg[position] != 0xFF:
            raise ValueError(f"not a JPEG: no marker at offset {position}")
        if jpeg[position + 1] == 0xFF:  # fill byte before a marker
            position += 1
            continue
        markers.append(position)
        if jpeg[position + 1] == JPEG_SOS:
            return markers
        position += 2 + int.from_bytes(jpeg[position + 2 : position + 4], "big")
    raise ValueError("not a JPEG: no start-of-scan marker")


def jpeg_scan_start(jpeg: bytes) -> int:
    """Offset of the first entropy-coded byte: everything before it is header."""
    sos = jpeg_header_markers(jpeg)[-1]
    return sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")


def flip_bits(data: bytes, positions: list[int], rng: random.Random) -> bytes:
    """``data`` with one random bit flipped at each position."""
    flipped = bytearray(data)
    for position in positions:
        flipped[position] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def padded_jpeg(jpeg: bytes, size: int) -> bytes:
    """``jpeg`` grown to at least ``size`` bytes with comment segments: still a valid JPEG, only huge."""
    payload = 0xFFFF - 2  # a segment length counts its own two bytes
    segment = JPEG_COMMENT + struct.pack(">H", 0xFFFF) + b"\x00" * payload
    count = -(-max(size - len(jpeg), 0) // len(segment))
    return b"".join(itertools.chain([JPEG_SOI], itertools.repeat(segment, count), [jpeg[len(JPEG_SOI) :]]))


def exif_rotated_jpeg(image: Image.Image) -> bytes:
    """The pixels stored turned on their side, with the EXIF Orientation tag that makes them upright again."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATED_CLOCKWISE_ON_DISPLAY
    return encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)


def png_file(width: int, height: int, bit_depth: int, color_type: int, compressed_rows: bytes) -> bytes:
    """A PNG written chunk by chunk, so its header may declare any size regardless of the data."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", compressed_rows) + _png_chunk(b"IEND", b"")


def png_16bit(image: Image.Image) -> bytes:
    """A 16-bit-per-channel PNG (RGB, or greyscale for mode L) holding exactly the 8-bit pixels scaled by 257."""
    pixels = np.asarray(image, dtype=np.uint16) * 257
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + pixels[0].size * 2), dtype=np.uint8)  # filter byte 0, then big-endian samples
    rows[:, 1:] = pixels.astype(">u2").view(np.uint8).reshape(height, -1)
    color_type = PNG_GRAYSCALE if pixels.ndim == 2 else PNG_RGB
    return png_file(width, height, 16, color_type, zlib.compress(rows.tobytes(), 1))


def png_bomb(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG declaring ``width`` x ``height`` greyscale pixels, with one row of data."""
    return png_file(width, height, 8, PNG_GRAYSCALE, zlib.compress(bytes(1 + width)))


@functools.lru_cache(maxsize=1)  # about 200 KiB, but deflating its 49 MB of pixels takes a while
def blank_png(side: int) -> bytes:
    """A complete, valid all-black greyscale PNG of side x side pixels that deflates to a few hundred KiB."""
    compressor = zlib.compressobj(1)
    row = bytes(1 + side)  # filter byte 0, then black pixels
    rows = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_file(side, side, 8, PNG_GRAYSCALE, rows)


def gif_bomb(width: int, height: int) -> bytes:
    """A 1x1 GIF whose logical screen claims ``width`` x ``height`` pixels (at most 65535 each)."""
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen descriptor right after "GIF89a"
    return bytes(data)


def with_opaque_center(image: Image.Image, border: int) -> Image.Image:
    """RGBA copy of ``image`` with a fully transparent border, as cut-out product photos have."""
    alpha = Image.new("L", image.size, 0)
    alpha.paste(255, (border, border, image.width - border, image.height - border))
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
