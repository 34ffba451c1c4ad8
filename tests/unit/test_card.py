"""Model cards: each malformed card is one usage error naming the field, before any container starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from pytest_serving.model.card import CardError, load_card
from pytest_serving.model.preprocess import Classifier, preprocess
from pytest_serving.robustness.images import encode

LABELS = [f"class_{index}" for index in range(12)]


def tiny_onnx(
    path: Path, *, layout: str = "NHWC", size: int = 240, classes: int = 12, dtype: int = TensorProto.FLOAT
) -> Path:
    """A real (tiny) ONNX classifier: mean colour per channel times a [3, classes] matrix."""
    shape = ["batch", size, size, 3] if layout == "NHWC" else ["batch", 3, size, size]
    axes = [1, 2] if layout == "NHWC" else [2, 3]
    nodes = [
        helper.make_node("Cast", ["pixel_values"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["as_float", "axes"], ["colour"], keepdims=0),
        helper.make_node("MatMul", ["colour", "weights"], ["scores"]),
    ]
    weights = np.random.default_rng(0).normal(size=(3, classes)).astype(np.float32)
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixel_values", dtype, shape)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(np.array(axes, np.int64), "axes"),
            numpy_helper.from_array(weights, "weights"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


GOOD_CARD = """
name = "user12"
artifact = "model.onnx"
labels = "labels.txt"
[input]
name = "pixel_values"
layout = "NHWC"
size = 240
dtype = "float32"
[preprocess]
resize_shorter = 274
crop = "center"
scale = 255.0
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
channels = "RGB"
[output]
name = "scores"
kind = "logits"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    tiny_onnx(tmp_path / "model.onnx")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return tmp_path


def write_card(folder: Path, text: str = GOOD_CARD, **replace: str) -> Path:
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "card.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cards(folder: Path) -> tuple:
    """A user card and a candidate card beside it (same model and labels, another name and mean):
    the pair a release deployment hosts."""
    current = load_card(write_card(folder))
    candidate_folder = folder / "candidate"
    candidate_folder.mkdir()
    for name in ("model.onnx", "labels.txt"):
        (candidate_folder / name).write_bytes((folder / name).read_bytes())
    changes = {'name = "user12"': 'name = "cand12"', "mean = [0.485, 0.456, 0.406]": "mean = [0.5, 0.5, 0.5]"}
    candidate = load_card(write_card(candidate_folder, GOOD_CARD, **changes))
    return current, candidate


def test_a_good_card_is_validated_against_its_onnx(folder: Path) -> None:
    card = load_card(write_card(folder))
    assert (card.name, card.num_classes, card.labels[0], card.input.layout) == ("user12", 12, "class_0", "NHWC")
    assert card.card_id.startswith("sha256:")
    assert card.artifact == (folder / "model.onnx").resolve()


def test_card_id_changes_with_the_artifact_and_with_any_field(folder: Path) -> None:
    first = load_card(write_card(folder)).card_id
    assert load_card(write_card(folder, **{'kind = "logits"': 'kind = "probabilities"'})).card_id != first
    tiny_onnx(folder / "model.onnx", classes=12).write_bytes((folder / "model.onnx").read_bytes() + b"")
    assert load_card(write_card(folder)).card_id == first


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {'artifact = "model.onnx"': 'artifact = "missing.onnx"'},
            r"artifact = 'missing.onnx': expected an ONNX file; .*missing.onnx does not exist",
        ),
        (
            {'name = "pixel_values"': 'name = "image"'},
            r"input.name = 'image': expected one of the model's inputs: pixel_values",
        ),
        ({'layout = "NHWC"': 'layout = "NWHC"'}, r"input.layout = 'NWHC': expected one of 'NCHW', 'NHWC'"),
        (
            {'layout = "NHWC"': 'layout = "NCHW"'},
            r"input.layout = 'NCHW': expected NHWC: the model's input pixel_values has shape \[batch, 240, 240, 3\]",
        ),
        ({"size = 240": "size = 224"}, r"input.size = 224: expected the model's input side"),
        (
            {'name = "scores"': 'name = "logits"'},
            r"output.name = 'logits': expected one of the model's outputs: scores",
        ),
        (
            {'kind = "logits"': 'kind = "softmax"'},
            r"output.kind = 'softmax': expected one of 'logits', 'probabilities'",
        ),
        ({'channels = "RGB"': 'channels = "RGBA"'}, r"preprocess.channels = 'RGBA'"),
        ({'dtype = "float32"': 'dtype = "uint8"'}, r"input.dtype = 'uint8': expected float32 when preprocess"),
        (
            {"std = [0.229, 0.224, 0.225]": "std = [0.2, 0.2]"},
            r"preprocess.std = \[0.2, 0.2\]: expected a list of 3 numbers",
        ),
        (
            {'labels = "labels.txt"': 'labels = "imagenet"'},
            r"labels = 'imagenet': expected as many labels as output scores has columns \(12\)",
        ),
        ({'name = "user12"': 'name = "user 12"'}, r"name = 'user 12': expected letters, digits"),
        ({"[output]": "[outputs]"}, r"unknown field\(s\) outputs"),
        ({'crop = "center"': 'crop = "center"\nflip = true'}, r"unknown field\(s\) \[preprocess\] flip"),
    ],
)
def test_each_malformed_card_is_one_error_naming_the_field(folder: Path, change: dict, message: str) -> None:
    with pytest.raises(CardError, match=message):
        load_card(write_card(folder, **change))


def test_label_count_must_equal_the_output_width(folder: Path) -> None:
    (folder / "labels.txt").write_text("\n".join(LABELS[:10]))
    with pytest.raises(
        CardError, match=r"labels = '10 labels': expected as many labels as output scores has columns \(12\)"
    ):
        load_card(write_card(folder))


def test_a_file_that_is_not_onnx_is_named(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(CardError, match="artifact = .*: expected an ONNX model"):
        load_card(write_card(folder))


def test_unknown_builtin_lists_the_known_ones() -> None:
    with pytest.raises(CardError, match="neither a card file nor a built-in model .*efficientnet_lite0, resnet50"):
        load_card("mobilenet")


def test_loading_a_user_card_and_its_reference_imports_no_torch(folder: Path) -> None:
    card = write_card(folder)
    code = (
        "import sys; from pytest_serving.model.card import load_card; "
        "from pytest_serving.model.reference import ReferenceClassifier; "
        f"ReferenceClassifier(load_card({str(card)!r})); import pytest_serving.plugin; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_classifier_preprocesses_as_the_card_says(folder: Path) -> None:
    card = load_card(write_card(folder))
    image = np.zeros((300, 400, 3), np.uint8)
    image[..., 0] = 255  # pure red
    data = encode(Image.fromarray(image), "PNG")
    tensor = preprocess(data, card.serving_spec())
    assert tensor.shape == (240, 240, 3) and tensor.dtype == np.float32
    np.testing.assert_allclose(
        tensor[0, 0], (np.array([1.0, 0.0, 0.0]) - card.preprocess.mean) / card.preprocess.std, rtol=1e-6
    )
    bgr = {**card.serving_spec(), "preprocess": {**card.serving_spec()["preprocess"], "channels": "BGR"}}
    blue_first = (np.array([0.0, 0.0, 1.0]) - card.preprocess.mean) / card.preprocess.std
    np.testing.assert_allclose(preprocess(data, bgr)[0, 0], blue_first, rtol=1e-6)
    nchw = {**card.serving_spec(), "input": {**card.serving_spec()["input"], "layout": "NCHW"}}
    assert preprocess(data, nchw).shape == (3, 240, 240)
    raw = {**card.serving_spec(), "input": {**card.serving_spec()["input"], "dtype": "uint8"}}
    assert preprocess(data, raw).dtype == np.uint8 and preprocess(data, raw)[0, 0].tolist() == [255, 0, 0]


def test_classifier_answers_each_image_or_says_why_not(folder: Path) -> None:
    card = load_card(write_card(folder))
    classifier = Classifier(folder, threads=1, spec=card.serving_spec())
    good = encode(Image.fromarray(np.full((64, 64, 3), 200, np.uint8)), "PNG")
    answers = classifier.classify([good, b"not an image", good])
    assert answers[0] == answers[2] and len(answers[0]["classes"]) == 5
    assert sorted(answers[0]["probabilities"], reverse=True) == answers[0]["probabilities"]
    assert type(answers[1]).__name__ == "InvalidImage"
