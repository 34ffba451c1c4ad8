"""TorchServe handler for any model card: encoded image bytes in, top-5 JSON out.

A prediction is ``{"classes": [top-5 class indices], "probabilities": [5 floats], "model_version": "..."}``,
best first. Decoding, preprocessing and the ONNX run come from ``serving_preprocess.py``
(packed beside this file in the .mar with ``serving_card.json`` and ``model.onnx``), a verbatim
copy of ``pytest_serving/model/preprocess.py``, so the server and the in-process reference run
the same code. ``model_version`` is the archive's version, so a client can tell which version of
a model answered while the server switches between them.

TorchServe fails every request of a batch when the handler raises, so each image is judged on
its own (``Classifier.answer_batch``): one that is not a usable image gets its own HTTP 400, with a body shaped like
TorchServe's own errors (``{"code", "type", "message"}``), and the rest of the batch is still
answered. config.properties sets ``decode_input_request=false``, so bodies arrive as bytes
whatever their Content-Type.
"""

from __future__ import annotations

import serving_preprocess


class ImageClassifierHandler:
    """TorchServe calls ``initialize`` once per worker, then ``handle`` with each batch."""

    def initialize(self, context) -> None:
        self.classifier = serving_preprocess.Classifier(context.system_properties["model_dir"])
        self.version = str(context.manifest["model"].get("modelVersion", ""))

    def handle(self, data: list[dict], context) -> list[str]:
        return self.classifier.answer_batch(data, context, {"model_version": self.version})
