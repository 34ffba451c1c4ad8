"""Image decoding, preprocessing and ONNX classification shared by the in-process reference and every server handler.

This file has no dependency beyond numpy and Pillow (onnxruntime is imported when a
``Classifier`` is made): each deployment copies it verbatim next to the server's handler
(as ``serving_preprocess.py``), beside ``model.onnx`` and ``serving_card.json`` (the model
card's input, preprocessing, output and labels), so the servers and the reference run the
same bytes of code with the same parameters and any disagreement comes from the serving path.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from http import HTTPStatus
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: The files a deployment folder holds beside its handler.
CARD_FILE = "serving_card.json"
MODEL_FILE = "model.onnx"
#: The embedded EfficientNet-Lite0's card as ``serving_card.json`` holds it: the default of every function here.
DEFAULT_SPEC: Mapping = {
    "input": {"name": "input", "layout": "NCHW", "size": 224, "dtype": "float32"},
    "preprocess": {
        "resize_shorter": 256,
        "crop": "center",
        "scale": 255.0,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "channels": "RGB",
    },
    "output": {"name": "logits", "kind": "logits"},
}
RESIZE_SHORTER_SIDE = DEFAULT_SPEC["preprocess"]["resize_shorter"]
CROP_SIZE = DEFAULT_SPEC["input"]["size"]
TOP_K = 5
#: Content type of the handlers' answers (``Classifier.answer_batch``).
JSON = "application/json"
# Refuse before decoding pixels: a small file can declare enormous dimensions (a decompression bomb).
MAX_PIXELS = 40_000_000
# 10000x1 images would be resized to millions of pixels on the long side.
MAX_ASPECT_RATIO = 20.0
# The last line of defence against oversized uploads, for servers whose HTTP layer has no limit.
MAX_FILE_BYTES = 32 * 1024 * 1024
# onnxruntime threads per model when the server does not say (PYTEST_SERVING_INTRA_OP_THREADS).
MAX_DEFAULT_THREADS = 4


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


def preprocess_image(image: Image.Image, spec: Mapping = DEFAULT_SPEC) -> np.ndarray:
    """The card's preprocessing of one decoded image: resize the shorter side, centre-crop the
    square (or resize straight to it), channel order, scale/mean/std (float32) or raw pixels
    (uint8), in the card's layout without the batch axis."""
    steps, tensor = spec["preprocess"], spec["input"]
    size = int(tensor["size"])
    if steps.get("crop", "center") == "none":
        image = image.resize((size, size), Image.BILINEAR)
    else:
        shorter = int(steps.get("resize_shorter", size))
        width, height = image.size
        if width <= height:
            scaled = (shorter, int(shorter * height / width))
        else:
            scaled = (int(shorter * width / height), shorter)
        image = image.resize(scaled, Image.BILINEAR)
        left = round((scaled[0] - size) / 2.0)
        top = round((scaled[1] - size) / 2.0)
        image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.uint8)
    if steps.get("channels", "RGB") == "BGR":
        pixels = pixels[..., ::-1]
    if tensor.get("dtype", "float32") == "uint8":
        array = pixels
    else:
        mean = np.asarray(steps.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
        std = np.asarray(steps.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
        array = (pixels.astype(np.float32) / np.float32(steps.get("scale", 1.0)) - mean) / std
    if tensor.get("layout", "NCHW") == "NCHW":
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def preprocess(data: bytes, spec: Mapping = DEFAULT_SPEC) -> np.ndarray:
    """Encoded image bytes to the model's input for one image, as the card says."""
    return preprocess_image(decode(data), spec)


def probabilities(outputs: np.ndarray, spec: Mapping = DEFAULT_SPEC) -> np.ndarray:
    """The model's output rows as probabilities (float64): softmax of logits, or as they are."""
    outputs = np.atleast_2d(outputs)
    if spec["output"].get("kind", "logits") == "probabilities":
        return outputs.astype(np.float64)
    return softmax(outputs)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stable top-k probabilities."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Indices and probabilities of the k largest entries of each row, best first."""
    order = np.argsort(-probabilities, axis=-1, kind="stable")[..., :k]
    return order, np.take_along_axis(probabilities, order, axis=-1)


def load_spec(folder: str | os.PathLike) -> dict:
    """The card a deployment folder carries (``serving_card.json``)."""
    return json.loads((Path(folder) / CARD_FILE).read_text())


class Classifier:
    """The card's ONNX model run with onnxruntime on encoded images: what every handler and the
    in-process reference call, so both decode, preprocess, infer and rank alike.

    ``threads`` is onnxruntime's intra-op thread count; default ``PYTEST_SERVING_INTRA_OP_THREADS``,
    else the CPUs this process may use, at most 4, so one model does not oversubscribe the host.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        threads: int | None = None,
        *,
        spec: Mapping | None = None,
        model_file: str | os.PathLike | None = None,
    ) -> None:
        import onnxruntime

        self.spec = dict(spec) if spec is not None else load_spec(folder)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or _default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        path = str(model_file or Path(folder) / MODEL_FILE)
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.spec["input"]["name"]
        self.output_name = self.spec["output"]["name"]
        self.labels = list(self.spec.get("labels") or [])

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities [n, classes] for a batch of preprocessed inputs."""
        (outputs,) = self.session.run([self.output_name], {self.input_name: batch})
        return probabilities(outputs, self.spec)

    def classify(self, files: Sequence[bytes], k: int = TOP_K) -> list:
        """Per encoded image, ``{"classes": [...], "probabilities": [...]}`` (top-k, best first), or the
        exception that says why not: ``InvalidImage`` for bytes that are no usable image (the client's
        fault: 400), any other for a fault of ours (500); one bad image never fails the others."""
        results: list = [None] * len(files)
        valid: list[tuple[int, np.ndarray]] = []
        for index, data in enumerate(files):
            try:
                valid.append((index, preprocess(data, self.spec)))
            except Exception as error:  # noqa: BLE001 - returned per image, so its batch mates are still answered
                results[index] = error
        if valid:
            classes, top = top_k(self.infer(np.stack([tensor for _, tensor in valid])), k)
            for row, (index, _) in enumerate(valid):
                results[index] = {"classes": classes[row].tolist(), "probabilities": top[row].tolist()}
        return results

    def answer_batch(self, data: Sequence[Mapping], context, extra: Mapping | None = None) -> list[str]:
        """One JSON answer per request of a TorchServe or MMS batch (their handlers get the same ``data`` and
        ``context``): the top-k with ``extra`` fields, or that request's own HTTP 400 (no usable image) or 500,
        with a body shaped like those servers' own errors, so one bad image never fails its batch mates."""
        files: list[bytes | None] = []
        for request in data:
            image = request.get("data", request.get("body"))
            files.append(bytes(image) if isinstance(image, (bytes, bytearray)) else None)
        answers = self.classify([file or b"" for file in files])
        responses = []
        for index, (file, answer) in enumerate(zip(files, answers)):
            if file is None:
                message = f"expected the image file as the request body, got {type(data[index].get('body')).__name__}"
                responses.append(_error_answer(context, index, 400, "InvalidImage", message))
            elif isinstance(answer, InvalidImage):
                responses.append(_error_answer(context, index, 400, "InvalidImage", str(answer)))
            elif isinstance(answer, Exception):
                message = f"cannot classify the image: {type(answer).__name__}: {answer}"
                responses.append(_error_answer(context, index, 500, "InternalServerException", message))
            else:
                context.set_response_content_type(index, JSON)
                responses.append(json.dumps({**answer, **(extra or {})}))
        return responses


def _error_answer(context, index: int, code: int, kind: str, message: str) -> str:
    # The standard reason phrase: the message, which may hold anything, goes in the body.
    context.set_response_status(code, HTTPStatus(code).phrase, idx=index)
    context.set_response_content_type(index, JSON)
    return json.dumps({"code": code, "type": kind, "message": message})


def _default_threads() -> int:
    configured = os.environ.get("PYTEST_SERVING_INTRA_OP_THREADS")
    if configured:
        return int(configured)
    return min(MAX_DEFAULT_THREADS, len(os.sched_getaffinity(0)))
