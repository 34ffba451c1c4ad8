"""The TF SavedModel export computes what the PyTorch model computes, on real photos."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from pytest_serving.model.preprocess import preprocess
from pytest_serving.model.registry import get_model

tf = pytest.importorskip("tensorflow", reason="the TF export needs the `tf` extra: pip install 'pytest-serving[tf]'")
from pytest_serving.model import tf_export

#: The issue's bound on the largest logit difference between the export and PyTorch.
MAX_LOGIT_DIFFERENCE = 1e-4


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def torch_model():
    return get_model("efficientnet_lite0").load().module


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """chelsea (a tabby cat) and coffee (a cup), preprocessed like every server does: [2, 3, 224, 224]."""
    return np.stack([preprocess(jpeg(data.chelsea())), preprocess(jpeg(data.coffee()))])


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return tf_export.export_saved_model(tmp_path_factory.mktemp("tf") / "saved_model")


def test_saved_model_matches_pytorch_on_real_photos(saved_model, torch_model, photos):
    signature = tf.saved_model.load(str(saved_model)).signatures[tf_export.SIGNATURE]
    exported = signature(input=tf.constant(photos))["logits"].numpy()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(photos)).numpy()
    assert exported.shape == (2, 1000)
    assert np.abs(exported - expected).max() < MAX_LOGIT_DIFFERENCE
    assert list(exported.argmax(axis=1)) == list(expected.argmax(axis=1))


def test_signature_takes_nchw_floats_and_returns_logits(saved_model):
    signature = tf.saved_model.load(str(saved_model)).signatures[tf_export.SIGNATURE]
    _, inputs = signature.structured_input_signature
    assert inputs["input"].shape.as_list() == [None, 3, 224, 224]
    assert inputs["input"].dtype == tf.float32
    assert signature.structured_outputs["logits"].shape.as_list() == [None, 1000]


def test_convolutions_copy_pytorchs_explicit_padding(torch_model):
    ported = tf_export.port_efficientnet_lite(torch_model)
    # The stem pads 224 -> 225 on the right and bottom only, as its ZeroPad2d((0, 1, 0, 1)) does.
    assert torch_model._conv_stem.static_padding.padding == (0, 1, 0, 1)
    assert ported.stem[0].paddings == [[0, 0], [0, 1], [0, 1], [0, 0]]
    # A 1x1 projection pads nothing.
    assert ported.blocks[0].project[0].paddings is None
    assert ported.stem[1].epsilon == pytest.approx(torch_model._bn0.eps)


def test_export_is_reused_while_its_stamp_matches(saved_model):
    graph = saved_model / "saved_model.pb"
    written = graph.stat().st_mtime_ns
    assert tf_export.export_saved_model(saved_model) == saved_model
    assert graph.stat().st_mtime_ns == written


def test_outdated_export_is_replaced_whole(tmp_path, monkeypatch):
    saves = []

    def save(module, folder, signatures):
        saves.append(folder)
        (tmp_path / folder).joinpath("saved_model.pb").write_bytes(b"graph %d" % len(saves))

    monkeypatch.setattr(tf.saved_model, "save", save)
    dest = tmp_path / "1"
    dest.mkdir()
    (dest / "left-over").write_text("from an older export")
    (dest / tf_export.STAMP_NAME).write_text("{}")

    tf_export.export_saved_model(dest)
    assert sorted(path.name for path in dest.iterdir()) == [tf_export.STAMP_NAME, "saved_model.pb"]
    assert (dest / "saved_model.pb").read_bytes() == b"graph 1"
    tf_export.export_saved_model(dest)
    assert len(saves) == 1
    # Nothing temporary is left beside the export.
    assert [path.name for path in tmp_path.iterdir()] == ["1"]


def test_models_without_a_port_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no TensorFlow port of model 'resnet50'"):
        tf_export.export_saved_model(tmp_path / "saved_model", "resnet50")
