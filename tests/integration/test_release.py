"""The release suite on real servers: an identical candidate never fails, and the rollout to it loses nothing.

An inner pytest run deploys the built-in card as versions 1 and 2 of one model, with the shortest
windows the suite allows (5 per version of 0.5 s, one user), and switches from 1 to 2 under load.
The rollout must see answers from both versions (else "no stale answer" would prove nothing),
no failed request and no answer from version 1 once the switch and its grace are over.
"""

from __future__ import annotations

import json
import math

import pytest

# Imported here, before any test: pytester restores sys.modules after each test, and torch (which the
# built-in card's export imports) aborts the process when it is imported a second time.
import pytest_serving.model.export  # noqa: F401

MODEL = "efficientnet_lite0"


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_an_identical_candidate_does_not_fail_and_its_rollout_loses_nothing(
    pytester, offline_image, session_id, target
):
    offline_image(target)
    report = pytester.path / "report"
    result = pytester.runpytest_subprocess(
        f"--serving={target}",
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
    output = result.stdout.str()[-3000:]
    assert result.ret == pytest.ExitCode.OK, output
    record = json.loads((report / "results.json").read_text())["targets"][target]
    assert record["release"]["verdict"] in ("pass", "inconclusive"), output
    rollout = record["rollout"]
    assert rollout["requests"] > 0 and (rollout["failed"], rollout["stale_answers"]) == (0, 0), rollout
    assert math.isfinite(rollout["switch_s"]), rollout
    answered_by = {version for second in rollout["timeline"] for version in second["versions"]}
    assert {"1", "2"} <= answered_by, rollout["timeline"]
