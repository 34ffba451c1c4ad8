"""The release suite on real servers: an identical candidate never fails, the rollout to it loses
nothing, a server that cannot switch live says why, and the candidates a gate exists to stop fail it.

One inner pytest run deploys the built-in card as current and candidate on Triton and TorchServe
(versions 1 and 2 of one model) and on KServe (two models of one server), with the shortest windows
the suite allows (5 per version of 0.5 s, one user), then switches from 1 to 2 under load where the
server can. The rollout must see answers from both versions (else "no stale answer" would prove
nothing), no failed request and no answer from version 1 once the switch and its grace are over.

The failing candidates are the own model's (examples/own-model/make_candidate.py), judged against
it on its 24 labelled images: three classes always answered wrong (25 points of top-1), and the
same answers for twice the compute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

# Imported here, before any test: pytester restores sys.modules after each test, and torch (which the
# built-in card's export imports) aborts the process when it is imported a second time.
import pytest_serving.model.export  # noqa: F401

MODEL = "efficientnet_lite0"
ROLLING = ("triton", "torchserve")
TARGETS = (*ROLLING, "kserve")
#: Windows that never grow: the identical candidate's test asks only that nothing fails.
SHORTEST_WINDOWS = (
    "--serving-release-windows=5",
    "--serving-release-max-windows=5",
    "--serving-release-window=0.5",
    "--serving-release-users=1",
)


def test_an_identical_candidate_does_not_fail_and_its_rollout_loses_nothing(pytester, offline_image, session_id):
    for target in TARGETS:
        offline_image(target)
    report = pytester.path / "report"
    result = pytester.runpytest_subprocess(
        f"--serving={','.join(TARGETS)}",
        f"--serving-model={MODEL}",
        f"--serving-candidate={MODEL}",
        "-m",
        "serving_release",
        f"--serving-report={report}",
        "--serving-samples-limit=5",
        *SHORTEST_WINDOWS,
        "--serving-startup-timeout=300",
        "-p",
        "no:cacheprovider",
    )
    output = result.stdout.str()[-4000:]
    assert result.ret == pytest.ExitCode.OK, output
    targets = json.loads((report / "results.json").read_text())["targets"]
    for target in TARGETS:
        release = targets[target]["release"]
        assert release["verdict"] in ("pass", "inconclusive"), (target, output)
        assert release["candidate"]["reference_agreement"] == 1.0, (target, release["candidate"])
    for target in ROLLING:
        rollout = targets[target]["rollout"]
        assert rollout["requests"] > 0 and (rollout["failed"], rollout["stale_answers"]) == (0, 0), (target, rollout)
        assert math.isfinite(rollout["switch_s"]), (target, rollout)
        answered_by = {version for second in rollout["timeline"] for version in second["versions"]}
        assert {"1", "2"} <= answered_by, (target, rollout["timeline"])
    # KServe's current and candidate are two models of one server, addressed by name.
    kserve = targets["kserve"]
    assert (kserve["release"]["current"]["server_version"], kserve["release"]["candidate"]["server_version"]) == (
        "current",
        "candidate",
    )
    assert "rollout" not in kserve
    assert kserve["rollout_skipped"].startswith("kserve: KServe's model server cannot switch the model live: ")
    assert "rollout: SKIPPED: " in result.stdout.str()


def run_release(pytester, current: Path, candidate: Path, samples: Path, targets: tuple[str, ...], *options: str):
    """One inner run of the release suite from an empty project; its outcome and results.json's targets."""
    report = pytester.path / "report"
    result = pytester.runpytest_subprocess(
        f"--serving={','.join(targets)}",
        f"--serving-model={current}",
        f"--serving-candidate={candidate}",
        f"--serving-samples={samples}",
        "-m",
        "serving_release",
        f"--serving-report={report}",
        "--serving-rollout=off",
        "--serving-startup-timeout=300",
        "-p",
        "no:cacheprovider",
        *options,
    )
    return result, json.loads((report / "results.json").read_text())["targets"]


def test_a_candidate_25_points_less_accurate_fails_naming_the_drop_and_n(
    pytester, offline_image, own_model, own_candidate, labelled_images, session_id
):
    offline_image("triton")
    result, targets = run_release(
        pytester, own_model, own_candidate("worse"), labelled_images, ("triton",), *SHORTEST_WINDOWS
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    release = targets["triton"]["release"]
    assert release["verdict"] == "fail"
    # The server hosts the worse candidate faithfully: the drop is the model's, not the deployment's.
    assert release["candidate"]["reference_agreement"] == 1.0
    assert (release["accuracy"]["n"], release["accuracy"]["drop_points"]) == (24, 25.0)
    reason = (
        "triton release: fail: accuracy: candidate top-1 75.0% vs current 100.0%, a drop of 25.0 points (limit 1) "
        "on n=24 samples; McNemar exact p=0.031 (6 samples only current got right, 0 only candidate)"
    )
    result.stdout.fnmatch_lines([f"*{reason}*"])


def test_a_candidate_with_the_same_answers_for_twice_the_compute_never_passes(
    pytester, offline_image, own_model, own_candidate, labelled_images, session_id
):
    """Triton and TorchServe: the latency verdict fails. KServe's model server spends most of a request outside the
    model (one request at a time 72 ms against Triton's 25 for the same model; under four users
    11 answers per second against Triton's 58), so there twice the model's compute cost 8 % of
    throughput and 2 % of p95 (docs/benchmarks.md section 7): a gate with a 10 % limit cannot
    call that a failure, but it must never pass it."""
    for target in TARGETS:
        offline_image(target)
    result, targets = run_release(
        pytester,
        own_model,
        own_candidate("heavier"),
        labelled_images,
        TARGETS,
        "--serving-release-window=2",
        # Room for more looks: beside another job, Triton's first 10 pairs once read p95 1.606 (95 % CI
        # 1.097-2.448) with one window per load process; with a look per load process and its warm-up,
        # Triton and TorchServe failed at the first look (docs/benchmarks.md 7.0a). A target that fails
        # stops at once; KServe, which never passes, stops at 20 pairs instead of 30 (about 60 s of CI).
        "--serving-release-max-windows=20",
    )
    output = result.stdout.str()[-4000:]
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    for target in TARGETS:
        release = targets[target]["release"]
        assert release["accuracy"]["verdict"] == "pass" and release["accuracy"]["agreement"] == 1.0, (target, output)
        assert release["verdict"] != "pass" and release["latency"]["p95"]["verdict"] != "pass", (target, output)
    for target in ROLLING:
        # The latency verdict is p95's and throughput's: on a busy machine one may still straddle its limit.
        latency = targets[target]["release"]["latency"]
        assert "fail" in (latency["p95"]["verdict"], latency["throughput"]["verdict"]), (target, output)
        assert targets[target]["release"]["verdict"] == "fail", (target, output)
