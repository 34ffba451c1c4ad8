"""The in-process reference: what the model answers without any server in the way.

It runs exactly ``preprocess.preprocess`` and the eager torch model, so a server that
disagrees with it has a bug in its serving path, not in the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from pytest_serving.model.preprocess import preprocess, softmax, top_k
from pytest_serving.model.registry import DEFAULT_MODEL, get_model
from pytest_serving.protocols.base import Prediction

TOP_K = 5


def to_predictions(logits: np.ndarray, k: int = TOP_K) -> list[Prediction]:
    """One top-k Prediction (softmax probabilities, best first) per row of ``logits``."""
    classes, probabilities = top_k(softmax(np.atleast_2d(logits)), k)
    return [
        Prediction(tuple(int(index) for index in row), tuple(float(p) for p in row_probabilities))
        for row, row_probabilities in zip(classes, probabilities)
    ]


class ReferenceClassifier:
    """A registry model run eagerly in this process on encoded image bytes.

    ``threads=None`` keeps torch's default (one per core). On a small machine shared with
    servers and load generators, ``threads=1`` is often several times faster: OpenMP threads
    spin waiting for cores that other processes hold. The count is torch's process-wide
    setting, applied only while this classifier computes.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        weights: Path | None = None,
        k: int = TOP_K,
        threads: int | None = None,
    ) -> None:
        loaded = get_model(model_name).load(weights)
        self.model_name = model_name
        self.weights_id = loaded.weights_id
        self.origin = loaded.origin
        self.k = k
        self.threads = threads
        self._module = loaded.module

    def logits(self, images: Sequence[bytes]) -> np.ndarray:
        """Raw logits [len(images), classes] for one batch; raises InvalidImage for an undecodable image."""
        batch = torch.from_numpy(np.stack([preprocess(image) for image in images]))
        with torch.inference_mode(), _torch_threads(self.threads):
            return self._module(batch).numpy()

    def predict(self, image: bytes) -> Prediction:
        """Top-k classes of one encoded image."""
        return to_predictions(self.logits([image]), self.k)[0]

    def predict_many(self, images: Sequence[bytes], batch_size: int = 16) -> list[Prediction]:
        """Top-k classes of each image, in order, computed in batches of ``batch_size``."""
        return [
            prediction
            for batch in _batches(images, batch_size)
            for prediction in to_predictions(self.logits(batch), self.k)
        ]


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _batches(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]
