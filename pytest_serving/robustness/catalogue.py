"""The corrupt, unusual and malformed requests every serving target must survive.

Each case says what a well-behaved server answers (``expect``), with which statuses, and
which layer of the server should notice the problem (``rejected_by``):

* ``decoder``: the shared ``preprocess.decode`` raises ``InvalidImage``, which handlers turn into 400;
* ``protocol``: the server's own request parsing, validation or routing, before any handler runs;
* ``http``: limits of the HTTP front end (body size, content type), before the request is parsed.

Image-level cases go through the target protocol's normal encoder; protocol-level cases ask the
protocol for the whole request (``Protocol.for_model``, ``json_request``, ``json_mistakes``,
``framing_mistakes``), so a case applies to every protocol that has its mistake and the
catalogue never switches on a protocol's name. Every case needs a protocol whose requests carry
the image file itself (``Protocol.carries_image``).
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from ..model.preprocess import MAX_ASPECT_RATIO, MAX_PIXELS, decode
from ..protocols.base import HttpRequest, Protocol
from . import images

Expect = Literal["reject", "classify", "survive"]
Layer = Literal["decoder", "protocol", "http"]
#: Whether a case applies to a protocol, asked of the protocol's own facts.
Applies = Callable[[Protocol], bool]
#: Builds a protocol-level case's request: (protocol, valid image) -> request.
Builder = Callable[[Protocol, bytes], HttpRequest]

MiB = 1 << 20
DEFAULT_OVERSIZE_BYTES = 80 * MiB
REJECT_STATUSES = frozenset({400, 404, 413, 415, 422})
INVALID = frozenset({400, 422})
UNSUPPORTED = frozenset({400, 415, 422})
TOO_LARGE = frozenset({400, 413, 422})
BODY_TOO_LARGE = frozenset({400, 413})
NOT_FOUND = frozenset({404})
UNKNOWN_VERSION = frozenset({400, 404})

BOMB_PNG_SIDE = 100_000
BOMB_GIF_SIDE = 65_535  # the largest a GIF header can state
# Above MAX_PIXELS yet below Pillow's own bomb threshold: only the server's limit stops it.
PIXEL_FLOOD_SIDE = 7_000
JSON_NESTING_DEPTH = 100_000
UNKNOWN_VERSION_NAME = "999999"
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Case:
    """One robustness request and the answers that count as handling it well.

    ``expect`` is ``classify`` (2xx with a prediction), ``reject`` (one of ``statuses``) or
    ``survive`` (either; for inputs where refusing and classifying are both reasonable).
    Exactly one of ``image`` (image-level) and ``build`` (protocol-level) is set.
    """

    name: str
    description: str
    expect: Expect
    rejected_by: Layer | None = None
    statuses: frozenset[int] = frozenset()
    #: Produces the image bytes on demand, so the 80 MiB case is never held in the catalogue.
    image: Callable[[], bytes] | None = None
    #: Replaces the Content-Type header the protocol's encoder sets.
    content_type: str | None = None
    build: Builder | None = None
    #: Beyond carrying the image: what the protocol must have for this case (a binary body, a JSON
    #: mistake, a binary framing); default: nothing more.
    applies: Applies | None = None
    #: The decoded pixels equal the sample's up to re-encoding noise: the top-1 must be the sample's.
    same_label_as_sample: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not _NAME.match(self.name):
            problems.append("name must be lower-case words joined by '-'")
        if (self.image is None) == (self.build is None):
            problems.append("exactly one of image and build must be set")
        if self.expect == "classify" and (self.statuses or self.rejected_by):
            problems.append("classify cases have no rejection statuses or layer")
        if self.expect != "classify" and not (self.statuses and self.statuses <= REJECT_STATUSES and self.rejected_by):
            problems.append(f"{self.expect} cases need a rejecting layer and statuses within {sorted(REJECT_STATUSES)}")
        if self.same_label_as_sample and self.expect != "classify":
            problems.append("only classify cases can keep the sample's label")
        if self.content_type and self.image is None:
            problems.append("content_type overrides apply to image-level cases")
        if problems:
            raise ValueError(f"case {self.name!r}: " + "; ".join(problems))

    def image_bytes(self) -> bytes:
        """The image this image-level case sends."""
        if self.image is None:
            raise TypeError(f"case {self.name!r} is protocol-level: it builds whole requests")
        return self.image()

    def applies_to(self, protocol: Protocol) -> bool:
        """Whether this case can be sent through ``protocol``: it carries the image, and has what the case needs."""
        return protocol.carries_image and (self.applies is None or self.applies(protocol))

    def request(self, protocol: Protocol, valid_image: bytes) -> HttpRequest:
        """The request to send to a server that ``protocol`` talks to."""
        if not self.applies_to(protocol):
            raise ValueError(f"case {self.name!r} does not apply to the {protocol.name!r} protocol")
        if self.build is not None:
            return self.build(protocol, valid_image)
        request = protocol.encode(self.image_bytes())
        if self.content_type is None:
            return request
        return request.with_header("Content-Type", self.content_type)

    def accepts(self, status: int) -> bool:
        """Whether an HTTP status is a correct answer; a 2xx must still carry the right prediction."""
        success = 200 <= status < 300
        if self.expect == "classify":
            return success
        if self.expect == "reject":
            return status in self.statuses
        return success or status in self.statuses


def catalogue(valid_jpeg: bytes, seed: int = 0, oversize_bytes: int = DEFAULT_OVERSIZE_BYTES) -> list[Case]:
    """Every robustness case derived from one real JPEG; the same arguments give the same bytes."""
    try:
        images.jpeg_header_markers(valid_jpeg)
        sample = decode(valid_jpeg)
    except ValueError as error:  # InvalidImage is a ValueError
        raise ValueError(f"the robustness sample must be a decodable JPEG: {error}") from None
    return _image_cases(valid_jpeg, sample, seed, oversize_bytes) + _protocol_cases()


def _image_cases(jpeg: bytes, sample: Image.Image, seed: int, oversize_bytes: int) -> list[Case]:
    scan_start = images.jpeg_scan_start(jpeg)

    def rng(name: str) -> random.Random:
        return random.Random(f"{seed}:{name}")

    def flipped(name: str, positions: Sequence[int], count: int | None = None) -> bytes:
        """The sample with a random bit flipped at each of ``positions`` (or at ``count`` of them)."""
        generator = rng(name)
        chosen = positions if count is None else generator.sample(positions, count)
        return images.flip_bits(jpeg, list(chosen), generator)

    def case(name: str, description: str, expect: Expect, data: bytes, **fields: object) -> Case:
        return Case(name, description, expect, image=functools.partial(bytes, data), **fields)

    def reject(name: str, description: str, data: bytes, statuses: frozenset[int] = INVALID) -> Case:
        return case(name, description, "reject", data, rejected_by="decoder", statuses=statuses)

    def classify(name: str, description: str, data: bytes, same_label: bool) -> Case:
        return case(name, description, "classify", data, same_label_as_sample=same_label)

    gray = sample.convert("L")
    trailing = jpeg + rng("trailing-garbage").randbytes(1024)
    progressive = images.encode(sample, "JPEG", quality=95, progressive=True)
    cmyk = images.encode(sample.convert("CMYK"), "JPEG", quality=95)
    rgba = images.png(images.with_opaque_center(sample, 8))
    oversize_mib = math.ceil(oversize_bytes / MiB)
    return [
        reject("empty", "Empty body: the client sent no image at all.", b"", UNSUPPORTED),
        reject("random-bytes", "4 KiB of random bytes.", rng("random-bytes").randbytes(4096), UNSUPPORTED),
        reject("html-page", "An HTML error page forwarded by a proxy instead of the image.", _HTML_PAGE, UNSUPPORTED),
        reject("svg-image", "A vector SVG image, which no raster decoder reads.", _SVG_IMAGE, UNSUPPORTED),
        reject("truncated-soi-only", "Only the 2-byte JPEG start-of-image marker.", jpeg[:2]),
        reject("truncated-header-only", "All JPEG headers, cut right before the scan data.", jpeg[:scan_start]),
        *(
            reject(
                f"truncated-{percent}pct",
                f"The JPEG cut after {percent}% of its bytes.",
                jpeg[: len(jpeg) * percent // 100],
            )
            for percent in (10, 50, 90)
        ),
        reject(
            "bitflip-header-markers",
            "One bit flipped in the 0xFF of every header segment marker: the file's structure is lost.",
            flipped("bitflip-header-markers", images.jpeg_header_markers(jpeg)),
        ),
        case(
            "bitflip-header-random",
            "8 random bit flips in the JPEG headers; some hit only metadata and the image still decodes.",
            "survive",
            flipped("bitflip-header-random", range(2, scan_start), count=8),
            rejected_by="decoder",
            statuses=INVALID,
        ),
        case(
            "bitflip-body",
            "8 random bit flips in the scan data; libjpeg usually decodes it with artefacts.",
            "survive",
            flipped("bitflip-body", range(scan_start, len(jpeg) - 2), count=8),  # up to the EOI marker
            rejected_by="decoder",
            statuses=INVALID,
        ),
        classify(
            "trailing-garbage", "The JPEG followed by 1 KiB of random bytes after its EOI marker.", trailing, True
        ),
        classify("jpeg-progressive", "Progressive JPEG re-encoding (quality 95).", progressive, True),
        classify("png", "Lossless PNG re-encoding.", images.png(sample), True),
        classify("bmp", "Uncompressed BMP re-encoding.", images.encode(sample, "BMP"), True),
        classify(
            "tiff", "LZW-compressed TIFF re-encoding.", images.encode(sample, "TIFF", compression="tiff_lzw"), True
        ),
        classify("webp", "Lossy WebP re-encoding (quality 90).", images.encode(sample, "WEBP", quality=90), False),
        classify("gif", "GIF re-encoding: 256-colour palette with dithering.", images.gif(sample), False),
        classify("jpeg-grayscale", "Single-channel greyscale JPEG.", images.encode(gray, "JPEG", quality=95), False),
        classify("jpeg-cmyk", "CMYK JPEG, as print workflows produce.", cmyk, True),
        classify("png-rgba", "RGBA PNG with a transparent 8-pixel border (a cut-out).", rgba, True),
        classify("png-16bit-rgb", "16 bits per channel RGB PNG.", images.png_16bit(sample), True),
        classify("png-16bit-grayscale", "16-bit greyscale PNG.", images.png_16bit(gray), False),
        classify(
            "jpeg-exif-rotated",
            "Pixels stored turned 90 degrees with EXIF Orientation 6 that turns them upright, as phones save photos.",
            images.exif_rotated_jpeg(sample),
            True,
        ),
        case(
            "tiny-1x1",
            "A 1x1 PNG: decodable, but nothing to classify.",
            "survive",
            images.png(sample.resize((1, 1))),
            rejected_by="decoder",
            statuses=INVALID,
        ),
        reject(
            "wide-10000x1",
            f"A 10000x1 PNG, beyond the {MAX_ASPECT_RATIO:g}:1 aspect-ratio limit.",
            images.png(sample.resize((10_000, 1))),
        ),
        reject(
            "tall-1x10000",
            f"A 1x10000 PNG, beyond the {MAX_ASPECT_RATIO:g}:1 aspect-ratio limit.",
            images.png(sample.resize((1, 10_000))),
        ),
        reject(
            f"bomb-png-{BOMB_PNG_SIDE}x{BOMB_PNG_SIDE}",
            "Decompression bomb: a tiny PNG declaring 10^10 pixels (30 GB decoded).",
            images.png_bomb(BOMB_PNG_SIDE, BOMB_PNG_SIDE),
            TOO_LARGE,
        ),
        reject(
            f"bomb-gif-{BOMB_GIF_SIDE}x{BOMB_GIF_SIDE}",
            "Decompression bomb: a 1x1 GIF whose logical screen claims 4.3 gigapixels.",
            images.gif_bomb(BOMB_GIF_SIDE, BOMB_GIF_SIDE),
            TOO_LARGE,
        ),
        Case(
            f"pixel-flood-{PIXEL_FLOOD_SIDE}x{PIXEL_FLOOD_SIDE}",
            f"A complete, valid {PIXEL_FLOOD_SIDE}x{PIXEL_FLOOD_SIDE} PNG of a few hundred KiB: "
            f"{PIXEL_FLOOD_SIDE**2 / 1e6:.0f} Mpx, over the {MAX_PIXELS / 1e6:.0f} Mpx limit.",
            "reject",
            rejected_by="decoder",
            statuses=TOO_LARGE,
            image=functools.partial(images.blank_png, PIXEL_FLOOD_SIDE),
        ),
        Case(
            f"oversize-{oversize_mib}mib",
            f"A valid JPEG padded with comment segments to {oversize_mib} MiB, beyond any sane upload limit: "
            "the HTTP layer should refuse it (413), else the decoder's file-size limit does (400).",
            "reject",
            rejected_by="decoder",
            statuses=BODY_TOO_LARGE,
            image=functools.partial(images.padded_jpeg, jpeg, oversize_bytes),
        ),
        *(
            Case(
                f"content-type-{label}",
                f"The valid JPEG sent as {content_type}; sniffing the bytes and classifying is fine too.",
                "survive",
                rejected_by="http",
                statuses=UNSUPPORTED,
                image=functools.partial(bytes, jpeg),
                content_type=content_type,
                applies=_binary_body,
            )
            for label, content_type in (("text-plain", "text/plain"), ("json", "application/json"))
        ),
    ]


def _protocol_cases() -> list[Case]:
    """Requests the protocol builds for this catalogue: each case applies to the protocols that have its mistake."""

    def case(name: str, description: str, statuses: frozenset[int], applies: Applies | None, build: Builder) -> Case:
        return Case(
            name, description, "reject", rejected_by="protocol", statuses=statuses, applies=applies, build=build
        )

    def json_case(name: str, description: str, statuses: frozenset[int] = INVALID) -> Case:
        """A malformed JSON body the protocol makes (``Protocol.json_mistakes``), sent as JSON."""
        return case(
            name,
            description,
            statuses,
            lambda protocol: name in protocol.json_mistakes(),
            lambda protocol, image: protocol.json_request(protocol.json_mistakes()[name](image)),
        )

    def framing_case(name: str, description: str) -> Case:
        """A request whose binary framing lies, as the protocol falsifies it (``Protocol.framing_mistakes``)."""
        return case(
            name,
            description,
            INVALID,
            lambda protocol: name in protocol.framing_mistakes(),
            lambda protocol, image: protocol.framing_mistakes()[name](image),
        )

    def json_protocol(protocol: Protocol) -> bool:
        return protocol.json_inputs_key is not None

    nested = b"[" * JSON_NESTING_DEPTH + b"]" * JSON_NESTING_DEPTH
    return [
        case(
            "json-malformed",
            "A valid JSON request cut in half.",
            INVALID,
            json_protocol,
            lambda protocol, image: protocol.json_request(_half(protocol.json_body(image))),
        ),
        json_case(
            "json-missing-inputs", "A JSON object without the inputs: no 'inputs' (V2) or 'instances' (TF Serving)."
        ),
        json_case(
            "json-missing-tensor-fields",
            "The input lacks its metadata: V2 input without shape and datatype; TF Serving instance without 'b64'.",
        ),
        json_case("json-unknown-input-name", "A V2 input named INPUT__0, which the model does not have."),
        json_case(
            "json-wrong-shape", "Wrong tensor shape: V2 shape [1] instead of [1, 1]; TF Serving a 3x7x7 float image."
        ),
        json_case(
            "json-wrong-datatype",
            "Wrong datatype: V2 FP32 numbers for the BYTES input; TF Serving a number where base64 text belongs.",
        ),
        json_case(
            "json-nan-inf",
            "NaN and Infinity tokens: in the V2 shape; in a 3x224x224 TF Serving float tensor of the sample.",
        ),
        json_case(
            "json-count-mismatch",
            "Element count disagrees with the shape: V2 shape [2, 1] with one element; a ragged TF Serving tensor.",
        ),
        case(
            "json-deep-nesting",
            f"Inputs nested {JSON_NESTING_DEPTH} arrays deep (200 KB): a recursive JSON parser overflows its stack.",
            TOO_LARGE,
            json_protocol,
            lambda protocol, image: protocol.json_request(
                b'{"' + str(protocol.json_inputs_key).encode() + b'": ' + nested + b"}"
            ),
        ),
        json_case("tfserving-b64-invalid", "A 'b64' instance that is not base64."),
        case(
            "unknown-model",
            "A valid request for a model the server does not serve.",
            NOT_FOUND,
            None,
            lambda protocol, image: protocol.for_model(f"{protocol.model_name}-does-not-exist").encode(image),
        ),
        case(
            "unknown-version",
            f"A valid request for version {UNKNOWN_VERSION_NAME} of the served model.",
            UNKNOWN_VERSION,
            None,
            lambda protocol, image: protocol.for_model(version=UNKNOWN_VERSION_NAME).encode(image),
        ),
        framing_case("v2-header-length-beyond-body", "Inference-Header-Content-Length larger than the whole body."),
        framing_case("v2-header-length-not-a-number", "Inference-Header-Content-Length is not a number."),
        framing_case(
            "v2-header-not-json",
            "The binary request's JSON header replaced by 200 bytes of garbage, its length declared correctly.",
        ),
        framing_case("v2-binary-size-beyond-body", "binary_data_size claims 1 MB more than the body holds."),
        framing_case(
            "v2-element-length-beyond-tensor",
            "The BYTES element's 4-byte length prefix claims 4 GB inside a tensor of the image's size.",
        ),
    ]


def _binary_body(protocol: Protocol) -> bool:
    """The body is the image's bytes (or a binary tensor of them), so a Content-Type can misdescribe it."""
    return protocol.binary_body


def _half(body: dict | None) -> bytes:
    data = json.dumps(body).encode()
    return data[: len(data) // 2]


_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>502 Bad Gateway</h1><p>The upstream image store did not answer.</p></body></html>\n"
)
_SVG_IMAGE = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="224" height="224">'
    b'<circle cx="112" cy="112" r="100" fill="orange"/></svg>\n'
)
