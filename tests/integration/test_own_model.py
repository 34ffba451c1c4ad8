"""A user's own model, as another repository gates it: only a model card and a folder of labelled images.

The model is examples/own-model's 12-class classifier (NHWC, 240 px, ImageNet mean/std, its own
label names), made by its script; the images are shared ImageNet photos of those 12 classes laid
out as an ImageFolder named by the card's labels, each also mirrored. The inner run starts from an
empty project directory, so nothing of this repository is on its path but the installed plugin.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from pytest_serving.containers.labels import SESSION_LABEL

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own-model"
TARGETS = ("triton", "torchserve", "kserve", "kserve-v1")


@pytest.fixture(scope="module")
def own_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's card beside the model.onnx and labels.txt its script writes."""
    folder = tmp_path_factory.mktemp("own-model")
    subprocess.run([sys.executable, str(EXAMPLE / "make_model.py"), "--out", str(folder)], check=True)
    shutil.copyfile(EXAMPLE / "card.toml", folder / "card.toml")
    return folder / "card.toml"


@pytest.fixture(scope="module")
def labelled_images(tmp_path_factory: pytest.TempPathFactory, shared_samples: Path, own_model: Path) -> Path:
    """ImageFolder ``<label>/*.jpg`` for the card's 12 labels: the shared photo of each class and its mirror image."""
    classes = dict(line.split("\t")[:2] for line in (shared_samples / "classes.tsv").read_text().splitlines()[1:])
    sys.path.insert(0, str(EXAMPLE))
    try:
        from make_model import CLASSES
    finally:
        sys.path.remove(str(EXAMPLE))
    folder = tmp_path_factory.mktemp("val")
    for index, label in CLASSES:
        (photo,) = shared_samples.glob(f"{classes[str(index)]}_*.JPEG")
        (folder / label).mkdir()
        (folder / label / photo.name).symlink_to(photo)
        ImageOps.mirror(Image.open(photo).convert("RGB")).save(folder / label / f"mirrored-{photo.stem}.jpg", quality=92)
    return folder


def test_a_user_card_runs_the_contract_suite_and_the_examples_checks_on_every_target(
    pytester, offline_image, own_model, labelled_images, session_id
):
    for target in TARGETS:
        offline_image(target)
    for name in ("conftest.py", "test_release.py", "pytest.ini"):  # the example project's own checks
        shutil.copyfile(EXAMPLE / name, pytester.path / name)
    result = pytester.runpytest_subprocess(
        f"--serving={','.join(TARGETS)}",
        f"--serving-model={own_model}",
        f"--serving-samples={labelled_images}",
        f"--serving-report={pytester.path / 'out'}",
        "--serving-load=off",
        # The example's p95 budget is for its own CI runner; speed is not this test's business, so the
        # ini override (which beats the marker, as a team's per-runner budgets do) widens it.
        "-o",
        "serving_budgets=p95_ms = 600000",
        "-m",
        "not serving_robustness",
        "-p",
        "no:cacheprovider",
    )
    samples = sum(1 for _ in labelled_images.glob("*/*"))
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    # Per target: the per-sample tests, the aggregate, and the example's two checks.
    assert result.parseoutcomes()["passed"] == len(TARGETS) * (samples + 1 + 2)
    results = json.loads((pytester.path / "out" / "results.json").read_text())
    for target in TARGETS:
        correctness = results["targets"][target]["correctness"]
        assert correctness["n"] == samples, target
        assert correctness["agreement"] >= 0.99, (target, correctness)
        assert correctness["max_probability_difference"] <= 1e-3, (target, correctness)
        assert set(correctness["per_class"]) == {path.name for path in labelled_images.iterdir()}
    assert results["session"]["model"] == "birds_and_beasts"


def test_a_card_that_does_not_fit_its_model_stops_before_any_container(pytester, own_model, session_id, docker_client):
    broken = own_model.with_name("broken.toml")
    broken.write_text(own_model.read_text().replace('layout = "NHWC"', 'layout = "NCHW"'))
    result = pytester.runpytest_subprocess("--serving=triton", f"--serving-model={broken}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*input.layout = 'NCHW': expected NHWC: the model's input pixel_values has shape*"])
    created = docker_client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session_id}"})
    assert created == []
