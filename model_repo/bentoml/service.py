"""BentoML service for any model card: an image file in, its top-5 classes out.

Run by ``bentoml serve service:ImageClassifier`` from the deployment (mounted at ``/models``),
which holds this file, ``serving_preprocess.py`` (a verbatim copy of
``pytest_serving/model/preprocess.py``, so the server and the in-process reference decode,
preprocess and infer with the same code) and ``<model>/`` with the card's files.
``PYTEST_SERVING_MODEL`` names that folder, the service and the API's route;
``PYTEST_SERVING_INTRA_OP_THREADS`` sets onnxruntime's threads.

``POST /classify/<model>`` takes the image file as the whole request body (BentoML's root
input: one positional-only parameter, no JSON key or multipart form around it) and answers
``{"classes": [5 ints], "probabilities": [5 floats]}``, best first. Bytes that are not a
classifiable image get BentoML's 400 with the decoder's reason; ``POST /metadata`` names
the server and its version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import bentoml
import serving_preprocess
from bentoml.exceptions import InvalidArgument
from bentoml.validators import ContentType

MODEL_NAME = os.environ.get("PYTEST_SERVING_MODEL", "efficientnet_lite0")


@bentoml.service(name=MODEL_NAME, workers=1, traffic={"timeout": 60})
class ImageClassifier:
    def __init__(self) -> None:
        self.classifier = serving_preprocess.Classifier(Path(__file__).parent / MODEL_NAME)

    @bentoml.api(route=f"/classify/{MODEL_NAME}")
    def classify(self, image: Annotated[Path, ContentType("image/*")], /) -> dict:
        (answer,) = self.classifier.classify([image.read_bytes()])
        if isinstance(answer, serving_preprocess.InvalidImage):
            raise InvalidArgument(str(answer))
        if isinstance(answer, Exception):
            raise answer  # a fault of ours: BentoML answers 500
        return answer

    @bentoml.api
    def metadata(self) -> dict:
        return {"server": "bentoml", "version": bentoml.__version__, "model": MODEL_NAME}
