"""V2 as KServe's Python model server reads it: the image file as a UINT8 tensor.

KServe 0.21 reads V2's binary-data extension (``Inference-Header-Content-Length``), but its
REST decoder converts every binary BYTES tensor to UTF-8 text before the model runs, so an
image file sent as Triton's clients send it (``V2Protocol``) gets a 500 "Failed to encode ...
using UTF-8". The closest faithful request is the same binary extension with the file as a
UINT8 tensor, which KServe passes on byte for byte.
"""

from __future__ import annotations

from .base import HttpRequest
from .v2 import CLASSES_OUTPUT, INPUT_NAME, PROBABILITIES_OUTPUT, V2Protocol, binary_request


class KServeV2Protocol(V2Protocol):
    """V2 with the binary-data extension, the image file as IMAGE UINT8 [1, n].

    Its ``name`` is the V2 family's: the answers (CLASSES, PROBABILITIES), every path and the
    robustness requests that falsify V2's BYTES framing are V2's.
    """

    def encode(self, image: bytes) -> HttpRequest:
        image_input = {"name": INPUT_NAME, "shape": [1, len(image)], "datatype": "UINT8"}
        image_input["parameters"] = {"binary_data_size": len(image)}
        return binary_request(self.infer_path, [image_input], [CLASSES_OUTPUT, PROBABILITIES_OUTPUT], image)
