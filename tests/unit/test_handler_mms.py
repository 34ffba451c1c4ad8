"""The MMS handler on a small real ONNX model, called the way MMS 1.1's worker calls it.

``Context`` below keeps the part of ``mms.context.Context`` the handler uses, with the same
signatures (MMS cannot be installed beside torch-model-archiver: both own ``model_archiver``);
the per-request statuses it records are what MMS's worker sends back for each request.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from pytest_serving.deployment import EMBEDDED_MODEL_REPO
from pytest_serving.model.deploy_files import copy_preprocess
from pytest_serving.model.preprocess import CARD_FILE, DEFAULT_SPEC, MODEL_FILE

CLASSES = 1000


class Context:
    """MMS 1.1's per-batch context, as far as the handler uses it."""

    def __init__(self, model_dir: str, batch: int = 0) -> None:
        self.system_properties = {"model_dir": model_dir, "gpu_id": None, "batch_size": 1, "server_name": "MMS"}
        self.statuses = [(200, None)] * batch
        self.content_types: list[str | None] = [None] * batch

    def set_response_status(self, code=200, phrase="", idx=0):
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx, value):
        self.content_types[idx] = value


def write_model(path) -> None:
    """input [N,3,224,224] -> per-channel means [N,3] -> logits [N,1000] through fixed weights."""
    weights = np.random.default_rng(0).normal(size=(3, CLASSES)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"]),
            helper.make_node("MatMul", ["features", "weights"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        [helper.make_tensor("weights", TensorProto.FLOAT, weights.shape, weights.flatten())],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture
def handler(tmp_path, monkeypatch):
    """handler.py imported as MMS imports it: from the unpacked archive, its files on sys.path."""
    copy_preprocess(tmp_path)
    write_model(tmp_path / MODEL_FILE)
    (tmp_path / CARD_FILE).write_text(json.dumps(DEFAULT_SPEC))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.spec_from_file_location("handler", EMBEDDED_MODEL_REPO / "mms" / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("serving_preprocess", None)


def jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_bad_request_gets_its_own_400_and_its_batch_mates_their_answers(handler, tmp_path):
    assert handler.handle(None, Context(str(tmp_path))) is None
    batch = [{"body": jpeg((200, 10, 10))}, {"body": b"\xff\xd8 not a JPEG"}, {"data": jpeg((10, 10, 200))}, {}]
    context = Context(str(tmp_path), len(batch))
    answers = handler.handle(batch, context)
    assert [code for code, _ in context.statuses] == [200, 400, 200, 400]
    assert context.statuses[1] == (400, "Bad Request")
    assert context.content_types == ["application/json"] * 4
    red, bad, blue, missing = (json.loads(answer) for answer in answers)
    assert len(red["classes"]) == len(red["probabilities"]) == 5
    assert red["probabilities"] == sorted(red["probabilities"], reverse=True)
    assert red["classes"] != blue["classes"]
    assert bad["type"] == "InvalidImage" and "cannot decode image" in bad["message"]
    assert missing["code"] == 400 and "expected the image file" in missing["message"]
