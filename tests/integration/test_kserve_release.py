"""The release suite on a real KServe server hosting two models: an identical candidate never fails,
a different one is answered by its own model, and the rollout is skipped with the reason.

Inner pytest runs deploy the built-in card and a candidate as two models of one KServe server,
with the shortest windows the suite allows (5 per version of 0.5 s, one user).
"""

from __future__ import annotations

import json

import pytest

# Imported here, before any test: pytester restores sys.modules after each test, and torch (which the
# built-in cards' export imports) aborts the process when it is imported a second time.
import pytest_serving.model.export  # noqa: F401

MODEL = "efficientnet_lite0"
#: resnet50 without a weights file: random weights, so about 0% top-1 (the in-process model agrees).
WORSE = "resnet50"


def release_run(pytester, target: str, candidate: str):
    report = pytester.path / "report"
    result = pytester.runpytest_subprocess(
        f"--serving={target}",
        f"--serving-model={MODEL}",
        f"--serving-candidate={candidate}",
        "-m",
        "serving_release",
        f"--serving-report={report}",
        "--serving-samples-limit=5",
        "--serving-release-windows=5",
        "--serving-release-window=0.5",
        "--serving-release-users=1",
        "--serving-startup-timeout=300",
        "-p",
        "no:cacheprovider",
    )
    return result, json.loads((report / "results.json").read_text())["targets"][target]


@pytest.mark.parametrize("target", ["kserve", "kserve-v1"])
def test_an_identical_candidate_does_not_fail_and_the_rollout_is_skipped_with_the_reason(
    pytester, offline_image, session_id, target
):
    offline_image(target)
    result, record = release_run(pytester, target, MODEL)
    output = result.stdout.str()[-3000:]
    assert result.ret == pytest.ExitCode.OK, output
    release = record["release"]
    assert release["verdict"] in ("pass", "inconclusive"), output
    assert (release["current"]["server_version"], release["candidate"]["server_version"]) == ("current", "candidate")
    assert release["candidate"]["reference_agreement"] == 1.0, release["candidate"]
    assert "rollout" not in record
    assert record["rollout_skipped"].startswith(f"{target}: KServe's model server cannot switch the model live: ")
    assert "rollout: SKIPPED: " in result.stdout.str()


def test_a_worse_candidate_is_answered_by_its_own_model_and_fails_on_accuracy(pytester, offline_image, session_id):
    offline_image("kserve")
    result, record = release_run(pytester, "kserve", WORSE)
    output = result.stdout.str()[-3000:]
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    release = record["release"]
    assert release["verdict"] == "fail", output
    # The candidate's answers are its own model's (the contract check), not the current model's.
    assert release["candidate"]["model"] == WORSE and release["candidate"]["reference_agreement"] >= 0.99, release
    (accuracy,) = [reason for reason in release["reasons"] if reason.startswith("accuracy:")]
    assert "on n=5 samples" in accuracy and "a drop of" in accuracy, accuracy
