"""A user's own model, as another repository gates it: only a model card and a folder of labelled images.

The model is examples/own-model's 12-class classifier (NHWC, 240 px, ImageNet mean/std, its own
label names), made by its script; the images are shared ImageNet photos of those 12 classes laid
out as an ImageFolder named by the card's labels, each also mirrored. The inner run starts from an
empty project directory, so nothing of this repository is on its path but the installed plugin.
"""

from __future__ import annotations

import json
import shutil

import pytest

from pytest_serving.containers.labels import SESSION_LABEL

TARGETS = ("triton", "torchserve", "kserve", "kserve-v1")


def test_a_user_card_runs_the_contract_suite_and_the_examples_checks_on_every_target(
    pytester, offline_image, example_project, own_model, labelled_images, session_id
):
    for target in TARGETS:
        offline_image(target)
    for name in ("conftest.py", "test_release.py", "pytest.ini"):  # the example project's own checks
        shutil.copyfile(example_project / name, pytester.path / name)
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
