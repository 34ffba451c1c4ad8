"""The load suites' answer, memory and baseline checks against deliberately broken deployments, on Triton
and TorchServe.

Each broken deployment is one target's deployment built from a copy of its sources with one realistic
bug planted in its handler (tests/integration/broken.py: the substitution must find its spot exactly
once, so a rewritten handler breaks this test loudly instead of testing nothing), deployed with
--serving-model-repo; the unmodified copy passes the same command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from broken import Bug, after_torchserve_answers, deployment_copy, literal

MODEL = "efficientnet_lite0"
TARGETS = ["triton", "torchserve"]
#: Responses of a dynamic batch rotated by one, but only when the batch holds three or more requests.
SWAP_BIG_BATCHES: dict[str, Bug] = {
    "triton": literal(
        "model.py",
        "        return responses\n",
        "        if len(requests) >= 3:\n            responses = responses[1:] + responses[:1]\n        return responses\n",
    ),
    "torchserve": after_torchserve_answers(
        "        if len(responses) >= 3:\n            responses = responses[1:] + responses[:1]\n"
    ),
}
#: 2 MB kept for every request the model executes (bytes filled, so the pages are really used).
LEAK_2MB_PER_REQUEST: dict[str, Bug] = {
    "triton": literal(
        "model.py",
        "        responses: list = [None] * len(requests)\n",
        (
            "        responses: list = [None] * len(requests)\n"
            '        self.__dict__.setdefault("leaked", []).extend(b"x" * 2**21 for _ in requests)\n'
        ),
    ),
    "torchserve": after_torchserve_answers(
        '        self.__dict__.setdefault("leaked", []).extend(b"x" * 2**21 for _ in data)\n'
    ),
}
#: Seconds of soak: enough requests that the good handler's figure is a slope, not an allocator step
#: (TorchServe's JVM and workers swing by about 15 MB between readings, and it answers fewer requests:
#: over 20 s, 626 requests, the good handler once read 54.6 MB per 1000 in a CI run, over the budget of 50).
SOAK_S = {"triton": 10, "torchserve": 40}


def deployment(target: str, root: Path, bug: Bug | None) -> Path:
    """A model repository root holding ``target``'s deployment of the built-in card, ``bug`` planted."""
    return deployment_copy(target, MODEL, root, bug)


def run(pytester, offline_image, shared_samples: Path, target: str, repo: Path, *args: str):
    return pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        f"--serving={target}",
        f"--serving-image={target}={offline_image(target)}",
        f"--serving-samples={shared_samples}",
        "--serving-samples-limit=5",
        f"--serving-model-repo={repo}",
        "--serving-report=out",
        *args,
    )


def load_entries(pytester, target: str) -> list[dict]:
    return json.loads((pytester.path / "out" / "results.json").read_text())["targets"][target]["load"]


@pytest.mark.parametrize("target", TARGETS)
def test_the_unmodified_copy_passes_smoke_with_every_answer_right_and_soak_under_the_growth_budget(
    pytester, offline_image, shared_samples, tmp_path, session_id, target
):
    repo = deployment(target, tmp_path / "good", None)
    result = run(
        pytester,
        offline_image,
        shared_samples,
        target,
        repo,
        f"--serving-soak={SOAK_S[target]}",
        "-k",
        "test_smoke or test_soak",
    )
    result.assert_outcomes(passed=2)
    smoke, soak = load_entries(pytester, target)
    for entry in (smoke, soak):
        assert entry["answers"]["mismatches"] == 0
        assert entry["answers"]["checked"] == entry["answers"]["answered"] > 0
    assert soak["resources"]["memory_growth_mb_per_1k"] is not None


@pytest.mark.parametrize("target", TARGETS)
def test_answers_swapped_within_big_batches_fail_the_smoke_phase(
    pytester, offline_image, shared_samples, tmp_path, session_id, target
):
    repo = deployment(target, tmp_path / "swapped", SWAP_BIG_BATCHES[target])
    result = run(pytester, offline_image, shared_samples, target, repo, "-k", "test_smoke")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r".*users=4, n=\d+: \d+ of \d+ checked answers differ from the in-process reference"])
    (smoke,) = load_entries(pytester, target)
    assert smoke["answers"]["mismatches"] > 0 and smoke["failures"] == 0  # every request got a 200


@pytest.mark.parametrize("target", TARGETS)
def test_a_handler_leaking_2mb_per_request_fails_the_default_smoke_phase_on_memory_growth(
    pytester, offline_image, shared_samples, tmp_path, session_id, target
):
    """No --serving-soak: the smoke phase's own growth interval lies wholly above the default budget."""
    repo = deployment(target, tmp_path / "leaking", LEAK_2MB_PER_REQUEST[target])
    result = run(pytester, offline_image, shared_samples, target, repo, "-k", "test_smoke")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [r".*memory growth \d+\.\d MB per 1000 requests, 99% interval -?\d+\.\d to \d+\.\d .* exceeds budget 50 MB"]
    )
    (smoke,) = load_entries(pytester, target)
    low, _ = smoke["resources"]["memory_growth_interval"]
    assert low > 50 and smoke["resources"]["memory_growth_mb_per_1k"] > 1000  # 2 MB per request: about 2000


#: 300 ms more per handler call: the slowdown that hid in TorchServe's smoke noise before the adaptive warm-up.
SLOWER_BY_300MS: Bug = (
    "handler.py",
    r"(\n(?P<indent> +)def handle\(self, data[^\n]*\n)",
    r"\1\g<indent>    __import__('time').sleep(0.3)\n",
)


def test_a_300ms_slower_torchserve_handler_fails_the_smoke_phase_against_the_unmodified_copys_baseline(
    pytester, offline_image, shared_samples, tmp_path, session_id
):
    good = run(
        pytester,
        offline_image,
        shared_samples,
        "torchserve",
        deployment("torchserve", tmp_path / "good", None),
        "-k",
        "test_smoke",
    )
    good.assert_outcomes(passed=1)
    baseline = pytester.path / "baseline.json"
    (pytester.path / "out" / "results.json").rename(baseline)
    slow = deployment("torchserve", tmp_path / "slow", SLOWER_BY_300MS)
    result = run(
        pytester,
        offline_image,
        shared_samples,
        "torchserve",
        slow,
        f"--serving-baseline={baseline}",
        "-k",
        "test_smoke",
    )
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r".*--serving-baseline: fail: torchserve at users=4, .*p95 latency: now/baseline \d+\.\d+ .* lies wholly beyond the \+10% limit"
        ]
    )
