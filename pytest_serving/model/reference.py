"""The in-process reference: what the model answers without any server in the way.

It runs the card's ONNX with onnxruntime through ``preprocess.Classifier``, the very code
every server's handler runs (copied beside it as ``serving_preprocess.py``), with the card's
parameters, so a server that disagrees with it has a bug in its serving path, not in the model.
No torch: a user's card needs only onnxruntime.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from pytest_serving.model.card import ModelCard
from pytest_serving.model.preprocess import TOP_K, Classifier, preprocess, top_k
from pytest_serving.types import Prediction


def to_predictions(probabilities: np.ndarray, k: int = TOP_K) -> list[Prediction]:
    """One top-k Prediction (best first) per row of class probabilities."""
    classes, top = top_k(np.atleast_2d(probabilities), k)
    return [
        Prediction(tuple(int(index) for index in row), tuple(float(p) for p in row_probabilities))
        for row, row_probabilities in zip(classes, top)
    ]


class ReferenceClassifier:
    """A model card run in this process on encoded image bytes.

    ``threads`` is onnxruntime's intra-op thread count (default: as the servers choose theirs).
    On a small machine shared with servers and load generators, ``threads=1`` avoids spinning
    threads competing for cores that other processes hold.
    """

    def __init__(self, card: ModelCard, k: int = TOP_K, threads: int | None = None) -> None:
        self.card = card
        self.k = k
        self._classifier = Classifier(card.artifact.parent, threads, spec=card.serving_spec(), model_file=card.artifact)

    def probabilities(self, images: Sequence[bytes]) -> np.ndarray:
        """Class probabilities [len(images), classes] for one batch; raises InvalidImage for an undecodable image."""
        return self._classifier.infer(np.stack([preprocess(image, self._classifier.spec) for image in images]))

    def predict(self, image: bytes) -> Prediction:
        """Top-k classes of one encoded image."""
        return to_predictions(self.probabilities([image]), self.k)[0]

    def predict_many(self, images: Sequence[bytes], batch_size: int = 16) -> list[Prediction]:
        """Top-k classes of each image, in order, computed in batches of ``batch_size``."""
        return [
            prediction
            for batch in _batches(images, batch_size)
            for prediction in to_predictions(self.probabilities(batch), self.k)
        ]


def _batches(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]
