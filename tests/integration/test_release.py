"""The release suite on real servers: an identical candidate never fails, the rollout to it loses
nothing, and a server that cannot switch live says why.

One inner pytest run deploys the built-in card as current and candidate on Triton and TorchServe
(versions 1 and 2 of one model) and on KServe (two models of one server), with the shortest windows
the suite allows (5 per version of 0.5 s, one user), then switches from 1 to 2 under load where the
server can. The rollout must see answers from both versions (else "no stale answer" would prove
nothing), no failed request and no answer from version 1 once the switch and its grace are over.
A candidate that is worse failing the gate is shown in docs/benchmarks.md section 7 (CI time).
"""

from __future__ import annotations

import json
import math

import pytest

# Imported here, before any test: pytester restores sys.modules after each test, and torch (which the
# built-in card's export imports) aborts the process when it is imported a second time.
import pytest_serving.model.export  # noqa: F401

MODEL = "efficientnet_lite0"
ROLLING = ("triton", "torchserve")
TARGETS = (*ROLLING, "kserve")


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
        "--serving-release-windows=5",
        "--serving-release-window=0.5",
        "--serving-release-users=1",
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
