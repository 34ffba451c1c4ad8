"""The embedded models: registry, ResNet-50 layout, in-process reference and exports."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image
from skimage import data

from pytest_serving.model import deploy_files, export, registry, resnet
from pytest_serving.model.card import load_card
from pytest_serving.model.preprocess import InvalidImage, preprocess
from pytest_serving.model.reference import ReferenceClassifier, to_predictions
from pytest_serving.protocols.base import Prediction

# ImageNet classes a person would accept for scikit-image's photos.
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup
MAX_LOGIT_DIFFERENCE = 1e-4


def jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def torchvision_resnet50_keys() -> list[str]:
    """torchvision.models.resnet50().state_dict().keys(), in order, written out from its source."""
    batch_norm = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight", *(f"bn1.{name}" for name in batch_norm)]
    for layer, blocks in enumerate((3, 4, 6, 3), start=1):
        for block in range(blocks):
            prefix = f"layer{layer}.{block}."
            for index in (1, 2, 3):
                keys.append(f"{prefix}conv{index}.weight")
                keys.extend(f"{prefix}bn{index}.{name}" for name in batch_norm)
            if block == 0:
                keys.append(f"{prefix}downsample.0.weight")
                keys.extend(f"{prefix}downsample.1.{name}" for name in batch_norm)
    return [*keys, "fc.weight", "fc.bias"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """These tests share two cores with other processes: spinning OpenMP threads make torch several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def random_resnet() -> torch.nn.Module:
    model, _ = resnet.load_resnet50()
    return model


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return [jpeg(Image.fromarray(data.chelsea())), jpeg(Image.fromarray(data.coffee()))]


@pytest.fixture(scope="module")
def reference() -> ReferenceClassifier:
    return ReferenceClassifier(load_card("efficientnet_lite0"), threads=1)


@pytest.fixture(scope="module")
def eager_logits(photos: list[bytes]) -> np.ndarray:
    module = registry.get_model("efficientnet_lite0").load().module
    with torch.inference_mode():
        return module(torch.from_numpy(np.stack([preprocess(photo) for photo in photos]))).numpy()


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("exports")
    export.export_onnx(directory / "model.onnx")
    export.export_torchscript(directory / "model.pt")
    return directory


def test_registry_names_the_models_servers_deploy() -> None:
    assert registry.DEFAULT_MODEL == "efficientnet_lite0"
    assert {"efficientnet_lite0", "resnet50"} <= set(registry.MODELS)
    for spec in registry.MODELS.values():
        assert (spec.input_name, spec.output_name, spec.input_shape, spec.num_classes) == (
            "input",
            "logits",
            (3, 224, 224),
            1000,
        )


def test_unknown_model_error_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg16': known models are efficientnet_lite0, resnet50"):
        registry.get_model("vgg16")


def test_registry_imports_without_torch() -> None:
    script = "import sys, pytest_serving.model.registry as r; r.MODELS; assert 'torch' not in sys.modules"
    package_root = Path(registry.__file__).parents[2]
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONPATH": str(package_root)})


def test_efficientnet_weights_id_is_the_sha256_of_the_packaged_file() -> None:
    spec = registry.get_model("efficientnet_lite0")
    path = spec.weights_file()
    assert path is not None and path.name.startswith("efficientnet-lite0")
    assert spec.weights_id() == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_resnet50_random_weights_id_names_the_seed() -> None:
    spec = registry.get_model("resnet50")
    assert spec.weights_file() is None
    assert spec.weights_id() == f"random-seed-{resnet.RANDOM_SEED}"


def test_resnet50_state_dict_has_torchvision_keys_and_shapes(random_resnet: torch.nn.Module) -> None:
    state_dict = random_resnet.state_dict()
    assert list(state_dict) == torchvision_resnet50_keys()
    shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.conv3.weight": (1024, 256, 1, 1),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
        "layer4.2.bn3.running_var": (2048,),
        "fc.weight": (1000, 2048),
    }
    assert {key: tuple(state_dict[key].shape) for key in shapes} == shapes
    # ResNet v1.5, like torchvision: a stage's stride is on its 3x3 convolution, not the first 1x1.
    assert (random_resnet.layer2[0].conv1.stride, random_resnet.layer2[0].conv2.stride) == ((1, 1), (2, 2))


def test_resnet50_converts_the_shared_input_to_imagenet_normalisation() -> None:
    pixels = torch.arange(256, dtype=torch.float32).repeat(3, 1).view(1, 3, 16, 16) / 255
    shared = (pixels - 0.5) / 0.5
    mean = torch.tensor(resnet.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(resnet.IMAGENET_STD).view(1, 3, 1, 1)
    converted = resnet.SharedToImageNetInput()(shared)
    torch.testing.assert_close(converted, (pixels - mean) / std, atol=1e-6, rtol=0)


def test_resnet50_random_weights_are_seeded_and_leave_the_global_rng_alone(random_resnet: torch.nn.Module) -> None:
    torch.manual_seed(1234)
    expected_next = torch.rand(1)
    torch.manual_seed(1234)
    model, origin = resnet.load_resnet50()
    assert torch.equal(torch.rand(1), expected_next)
    assert origin == resnet.RANDOM_ORIGIN
    torch.testing.assert_close(model.state_dict(), random_resnet.state_dict(), atol=0, rtol=0)


def test_resnet50_loads_a_torchvision_state_dict_file(random_resnet: torch.nn.Module, tmp_path: Path) -> None:
    saved = {key: value + 1 for key, value in random_resnet.state_dict().items()}
    weights = tmp_path / "resnet50-custom.pth"
    torch.save(saved, weights)
    model, origin = resnet.load_resnet50(weights)
    assert origin == str(weights)
    assert not model.training
    torch.testing.assert_close(model.state_dict(), saved, atol=0, rtol=0)
    assert registry.get_model("resnet50").weights_id(weights).startswith("sha256:")


def test_resnet50_rejects_a_file_that_is_not_its_state_dict(tmp_path: Path) -> None:
    weights = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, weights)
    with pytest.raises(ValueError, match="is not a torchvision resnet50 state dict"):
        resnet.load_resnet50(weights)


def test_resnet50_classifies_a_batch_into_1000_classes(random_resnet: torch.nn.Module) -> None:
    with torch.inference_mode():
        logits = random_resnet(torch.zeros(2, 3, 64, 64))
    assert logits.shape == (2, 1000)
    assert torch.isfinite(logits).all()


def test_reference_recognises_real_photos(reference: ReferenceClassifier, photos: list[bytes]) -> None:
    cat, coffee = reference.predict_many(photos)
    assert cat.top1 in CAT_CLASSES
    assert coffee.top1 in COFFEE_CLASSES


def test_prediction_is_top5_best_first(reference: ReferenceClassifier, photos: list[bytes]) -> None:
    prediction = reference.predict(photos[0])
    assert len(prediction.classes) == len(set(prediction.classes)) == 5
    assert all(isinstance(index, int) and 0 <= index < 1000 for index in prediction.classes)
    assert list(prediction.probabilities) == sorted(prediction.probabilities, reverse=True)
    assert 0 < sum(prediction.probabilities) <= 1 + 1e-9


def test_batched_predictions_match_single_ones(reference: ReferenceClassifier, photos: list[bytes]) -> None:
    images = [photos[0], photos[1], photos[0]]
    batched = reference.predict_many(images, batch_size=2)
    single = [reference.predict(image) for image in images]
    assert [p.classes for p in batched] == [p.classes for p in single]
    np.testing.assert_allclose([p.probabilities for p in batched], [p.probabilities for p in single], atol=1e-5)


def test_reference_runs_the_cards_onnx_as_the_eager_model_does(
    reference: ReferenceClassifier, photos: list[bytes], eager_logits: np.ndarray
) -> None:
    from pytest_serving.model.preprocess import softmax

    np.testing.assert_allclose(reference.probabilities(photos), softmax(eager_logits), atol=1e-5)


def test_predict_many_rejects_a_batch_size_below_one(reference: ReferenceClassifier, photos: list[bytes]) -> None:
    with pytest.raises(ValueError, match="batch size must be at least 1"):
        reference.predict_many(photos, batch_size=0)


def test_reference_raises_invalid_image(reference: ReferenceClassifier) -> None:
    with pytest.raises(InvalidImage):
        reference.predict(b"not an image")


def test_exif_rotated_jpeg_is_classified_like_the_upright_one(
    reference: ReferenceClassifier, photos: list[bytes]
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored pixels must be turned 90 degrees clockwise
    upright = [Image.open(io.BytesIO(photo)) for photo in photos]
    sideways = [jpeg(image.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes()) for image in upright]
    expected = reference.predict_many(photos)
    # Same top-5 in the same order: sideways, these photos keep their top-1 but not their top-5.
    for rotated, upright_prediction in zip(reference.predict_many(sideways), expected):
        assert rotated.classes == upright_prediction.classes
        np.testing.assert_allclose(rotated.probabilities, upright_prediction.probabilities, atol=0.03)


def test_to_predictions_orders_classes_by_probability() -> None:
    probabilities = np.array([[0.0, 0.3, 0.1, 0.2, 0.0, 0.4], [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]])
    first, second = to_predictions(probabilities, k=3)
    assert first.classes == (5, 1, 3)
    assert second.top1 == 0
    assert isinstance(first, Prediction)
    assert first.probabilities == pytest.approx((0.4, 0.3, 0.2))


def test_onnx_export_has_the_serving_contract(exports: Path) -> None:
    model = onnx.load(str(exports / "model.onnx"))
    assert [opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")] == [17]
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert (graph_input.name, dims(graph_input)) == ("input", ["batch", 3, 224, 224])
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert (graph_output.name, dims(graph_output)) == ("logits", ["batch", 1000])


@pytest.mark.parametrize("batch", [1, 2])
def test_onnx_matches_eager_on_real_photos(
    exports: Path, photos: list[bytes], eager_logits: np.ndarray, batch: int
) -> None:
    session = onnxruntime.InferenceSession(str(exports / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = np.stack([preprocess(photo) for photo in photos[:batch]])
    (logits,) = session.run(["logits"], {"input": inputs})
    assert np.abs(logits - eager_logits[:batch]).max() < MAX_LOGIT_DIFFERENCE


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("batch", [1, 2])
def test_torchscript_matches_eager_on_real_photos(
    exports: Path, photos: list[bytes], eager_logits: np.ndarray, batch: int
) -> None:
    traced = torch.jit.load(str(exports / "model.pt"))
    inputs = torch.from_numpy(np.stack([preprocess(photo) for photo in photos[:batch]]))
    with torch.inference_mode():
        logits = traced(inputs).numpy()
    assert np.abs(logits - eager_logits[:batch]).max() < MAX_LOGIT_DIFFERENCE


def test_exports_are_readable_by_other_users(exports: Path) -> None:
    for name in ("model.onnx", "model.pt", "model.onnx" + export.STAMP_SUFFIX):
        assert stat.S_IMODE((exports / name).stat().st_mode) == 0o644


def test_export_is_skipped_while_its_stamp_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[Path] = []

    def record(spec: registry.ModelSpec, module: torch.nn.Module, path: Path) -> None:
        writes.append(path)
        path.write_bytes(b"exported")

    monkeypatch.setattr(export, "_write_onnx", record)
    dest = tmp_path / "model.onnx"
    assert export.export_onnx(dest) == dest
    export.export_onnx(dest)
    assert len(writes) == 1
    monkeypatch.setattr(export, "EXPORT_VERSION", export.EXPORT_VERSION + 1)
    export.export_onnx(dest)
    assert len(writes) == 2
    dest.unlink()
    export.export_onnx(dest)
    assert len(writes) == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", "model.onnx" + export.STAMP_SUFFIX]


def test_failed_export_leaves_neither_file_nor_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(spec: registry.ModelSpec, module: torch.nn.Module, path: Path) -> None:
        path.write_bytes(b"half a model")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export, "_write_onnx", fail)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export.export_onnx(tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_copy_preprocess_is_verbatim_and_refreshes_a_stale_copy(tmp_path: Path) -> None:
    source = Path(export.__file__).with_name("preprocess.py").read_bytes()
    copied = deploy_files.copy_preprocess(tmp_path)
    assert copied == tmp_path / "serving_preprocess.py"
    assert copied.read_bytes() == source
    copied.write_text("stale")
    deploy_files.copy_preprocess(tmp_path)
    assert copied.read_bytes() == source
