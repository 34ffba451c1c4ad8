"""The load suites' answer and memory checks against deliberately broken Triton deployments.

Each broken deployment is a copy of the exported model repository with one realistic bug put
into the python backend's model.py by a text substitution (the test asserts the pattern is
there, so a rewrite of model.py breaks this test loudly instead of testing nothing), deployed
with --serving-model-repo; the unmodified copy passes the same command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from broken import literal, plant

from pytest_serving.cli import export_model

MODEL = "efficientnet_lite0"
#: Responses of a dynamic batch rotated by one, but only when the batch holds three or more requests.
SWAP_BIG_BATCHES = (
    "        return responses\n",
    "        if len(requests) >= 3:\n            responses = responses[1:] + responses[:1]\n        return responses\n",
)
#: 2 MB kept for every request the model executes (bytes filled, so the pages are really used).
LEAK_2MB_PER_REQUEST = (
    "        responses: list = [None] * len(requests)\n",
    (
        "        responses: list = [None] * len(requests)\n"
        '        self.__dict__.setdefault("leaked", []).extend(b"x" * 2**21 for _ in requests)\n'
    ),
)
SOAK_S = 20


@pytest.fixture(scope="module")
def exported_repo(tmp_path_factory) -> Path:
    """The model repository ``pytest-serving export-model triton --out DIR`` writes for the default card."""
    root = tmp_path_factory.mktemp("exported")
    assert export_model(["triton"], MODEL, root) == 0
    return root


def broken_copy(exported: Path, destination: Path, pattern: str, replacement: str) -> Path:
    """A copy of ``exported`` whose model.py has ``pattern`` (found exactly once) replaced."""
    shutil.copytree(exported, destination)
    plant(destination / "triton" / MODEL / "1", *literal("model.py", pattern, replacement))
    return destination


def run_triton(pytester, offline_image, shared_samples: Path, repo: Path, *args: str):
    return pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--serving=triton",
        f"--serving-image=triton={offline_image('triton')}",
        f"--serving-samples={shared_samples}",
        "--serving-samples-limit=5",
        f"--serving-model-repo={repo}",
        "--serving-report=out",
        *args,
    )


def load_entries(pytester) -> list[dict]:
    return json.loads((pytester.path / "out" / "results.json").read_text())["targets"]["triton"]["load"]


def test_the_unmodified_copy_passes_smoke_with_every_answer_right_and_soak_under_the_growth_budget(
    pytester, offline_image, shared_samples, exported_repo, session_id
):
    result = run_triton(
        pytester,
        offline_image,
        shared_samples,
        exported_repo,
        f"--serving-soak={SOAK_S}",
        "-k",
        "test_smoke or test_soak",
    )
    result.assert_outcomes(passed=2)
    smoke, soak = load_entries(pytester)
    for entry in (smoke, soak):
        assert entry["answers"]["mismatches"] == 0
        assert entry["answers"]["checked"] == entry["answers"]["answered"] > 0
    assert soak["resources"]["memory_growth_mb_per_1k"] is not None


def test_answers_swapped_within_big_batches_fail_the_smoke_phase(
    pytester, offline_image, shared_samples, exported_repo, tmp_path, session_id
):
    repo = broken_copy(exported_repo, tmp_path / "swapped", *SWAP_BIG_BATCHES)
    result = run_triton(pytester, offline_image, shared_samples, repo, "-k", "test_smoke")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r".*users=4, n=\d+: \d+ of \d+ checked answers differ from the in-process reference"])
    (smoke,) = load_entries(pytester)
    assert smoke["answers"]["mismatches"] > 0 and smoke["failures"] == 0  # every request got a 200


def test_a_handler_leaking_2mb_per_request_fails_the_soak_on_memory_growth(
    pytester, offline_image, shared_samples, exported_repo, tmp_path, session_id
):
    repo = broken_copy(exported_repo, tmp_path / "leaking", *LEAK_2MB_PER_REQUEST)
    result = run_triton(pytester, offline_image, shared_samples, repo, f"--serving-soak={SOAK_S}", "-k", "test_soak")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r".*memory growth \d+\.\d MB per 1000 requests .* exceeds budget 50 MB"])
    (soak,) = load_entries(pytester)
    assert soak["resources"]["memory_growth_mb_per_1k"] > 1000  # 2 MB per request: about 2000
