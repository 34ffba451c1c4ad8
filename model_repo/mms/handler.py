"""Multi Model Server handler for any model card: encoded image bytes in, top-5 JSON out.

A prediction is ``{"classes": [top-5 class indices], "probabilities": [5 floats]}``, best first.
Decoding, preprocessing and the ONNX run come from ``serving_preprocess.py`` (packed beside this
file in the .mar with ``serving_card.json`` and ``model.onnx``), a verbatim copy of
``pytest_serving/model/preprocess.py``, so the server and the in-process reference run the same
code; the image has neither torch nor MXNet.

MMS 1.1 imports this module and, finding a ``handle`` function, calls ``handle(None, context)``
once when a worker loads the model, then ``handle(batch, context)`` with each batch. (A class
would have to be the module's only one, and MMS logs and ignores its ``initialize`` errors.)
MMS fails every request of a batch when the handler raises, so each image is judged on its own
(``Classifier.answer_batch``): one that is not a usable image gets its own HTTP 400 through
``context.set_response_status``, with a body shaped like MMS's own errors (``{"code", "type",
"message"}``). config.properties sets ``decode_input_request=false``, so bodies arrive as bytes
whatever their Content-Type.
"""

from __future__ import annotations

import serving_preprocess

_classifier: serving_preprocess.Classifier | None = None


def handle(data: list[dict] | None, context) -> list[str] | None:
    """MMS's entry point: ``data`` None loads the model, else one answer per request of the batch."""
    global _classifier
    if data is None:
        _classifier = serving_preprocess.Classifier(context.system_properties["model_dir"])
        return None
    return _classifier.answer_batch(data, context)
