"""Broken deployments: each new check catches the breakage it is for, and passes the unbroken model.

Each test builds one target's deployment from a copy of its sources with one realistic bug planted in
its handler (tests/integration/broken.py: a substitution on a small, well-defined spot that must be
found exactly once, so a rewritten handler fails here loudly instead of silently testing nothing), deploys
it with ``--serving-model-repo`` in an inner pytest run and checks that the run fails with
a message naming the broken property; the unmodified copy must pass the same command.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import broken
import pytest
from broken import Bug

MODEL = "efficientnet_lite0"
#: Where each target's handler lives among its deployment sources (``model_repo/<folder>/``).
HANDLERS = {"triton": "model.py", "torchserve": "handler.py"}

HALVED_PROBABILITIES: dict[str, Bug] = {
    # The tensor of probabilities the python backend answers with, halved.
    "triton": (HANDLERS["triton"], r'pb_utils\.Tensor\("PROBABILITIES", ', 'pb_utils.Tensor("PROBABILITIES", 0.5 * '),
    # The per-request JSON answer's probabilities, halved (error answers have none).
    "torchserve": broken.after_torchserve_answers(
        "        answers = [__import__('json').loads(response) for response in responses]\n"
        "        responses = [__import__('json').dumps({**answer, 'probabilities': [0.5 * p for p in answer['probabilities']]})"
        " if 'probabilities' in answer else response for answer, response in zip(answers, responses)]\n"
    ),
}
#: The python-backend stub exits (as a segfaulting native library would make it) when a request holds a PNG.
DIES_ON_PNG: Bug = (
    HANDLERS["triton"],
    r"(\n(?P<indent> +)def execute\(self, requests[^\n]*\n)",
    (
        r"\1\g<indent>    if any(isinstance(item, bytes) and item.startswith(b'\\x89PNG') for request in requests"
        r" for tensor in request.inputs() for item in tensor.as_numpy().ravel()):\n"
        r"\g<indent>        __import__('os')._exit(1)\n"
    ),
)
#: The TorchServe worker exits when a request holds a PNG; TorchServe starts another one.
WORKER_DIES_ON_PNG: Bug = (
    HANDLERS["torchserve"],
    r"(\n(?P<indent> +)def handle\(self, data[^\n]*\n)",
    (
        r"\1\g<indent>    if any(bytes(request.get('data') or request.get('body') or b'')[:4] == b'\\x89PNG'"
        r" for request in data):\n"
        r"\g<indent>        __import__('os')._exit(1)\n"
    ),
)
#: The stub exits on its second call: the first answer (readiness) is right, every later request gets 500.
DIES_AFTER_FIRST_CALL: Bug = (
    HANDLERS["triton"],
    r"(\n(?P<indent> +)def execute\(self, requests[^\n]*\n)",
    (
        r"\1\g<indent>    globals()['_calls'] = globals().get('_calls', 0) + 1\n"
        r"\g<indent>    if globals()['_calls'] > 1:\n"
        r"\g<indent>        __import__('os')._exit(1)\n"
    ),
)
#: Every class index shifted by one: health is green, every answer is wrong.
SHIFTED_CLASSES: Bug = (HANDLERS["triton"], r'pb_utils\.Tensor\("CLASSES", ', 'pb_utils.Tensor("CLASSES", 1 + ')

CONTRACT = ("-m", "serving_contract", "--serving-load=off")
ROBUSTNESS_PNG = ("-m", "serving_robustness", "--serving-load=off", "-k", "test_case and png and not bomb")


def deployment_copy(target: str, root: Path, bug: Bug | None) -> Path:
    """``target``'s deployment of the built-in card with ``bug`` planted in its handler."""
    return broken.deployment_copy(target, MODEL, root, bug)


@pytest.fixture
def run_against(pytester, offline_image, session_id) -> Callable[..., tuple[pytest.RunResult, dict]]:
    """Runs ``pytest --serving=TARGET --serving-model-repo=REPO ARGS`` in a subprocess; gives its result and
    its results.json."""

    def run(target: str, repo: Path, *args: str) -> tuple[pytest.RunResult, dict]:
        offline_image(target)
        report = pytester.path / f"report-{repo.parent.name}"
        result = pytester.runpytest_subprocess(
            f"--serving={target}",
            f"--serving-model-repo={repo}",
            f"--serving-report={report}",
            "--serving-samples-limit=5",
            "--serving-startup-timeout=300",
            "-p",
            "no:cacheprovider",
            *args,
        )
        results_file = report / "results.json"
        return result, json.loads(results_file.read_text()) if results_file.exists() else {}

    return run


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_halved_probabilities_fail_the_contract_and_the_unbroken_copy_passes(run_against, tmp_path, target):
    broken, results = run_against(
        target, deployment_copy(target, tmp_path / "broken", HALVED_PROBABILITIES[target]), *CONTRACT
    )
    assert broken.ret == pytest.ExitCode.TESTS_FAILED, broken.stdout.str()[-3000:]
    broken.stdout.fnmatch_lines(
        [
            "*top-5 probabilities differ from the in-process model's by up to 0.4*--serving-max-probability-difference=0.001*",
        ]
    )
    assert results["targets"][target]["correctness"]["max_probability_difference"] > 0.1

    good, results = run_against(target, deployment_copy(target, tmp_path / "good", None), *CONTRACT)
    assert good.ret == pytest.ExitCode.OK, good.stdout.str()[-3000:]
    assert results["targets"][target]["correctness"]["max_probability_difference"] <= 1e-3


def test_a_dead_python_stub_behind_ready_health_is_recorded_dead_and_the_unbroken_copy_survives(run_against, tmp_path):
    broken, results = run_against(
        "triton", deployment_copy("triton", tmp_path / "broken", DIES_ON_PNG), *ROBUSTNESS_PNG
    )
    assert broken.ret == pytest.ExitCode.TESTS_FAILED, broken.stdout.str()[-3000:]
    broken.stdout.fnmatch_lines(
        [
            "*server survived: NO, it died: a valid sample gets no prediction (its health endpoints still say ready)*",
            "*next valid sample: WRONG: sample *HTTP 500*",
        ]
    )
    record = results["targets"]["triton"]["robustness"]["png"]
    assert (record["survived"], record["died"]) == (False, True)

    good, results = run_against("triton", deployment_copy("triton", tmp_path / "good", None), *ROBUSTNESS_PNG)
    assert good.ret == pytest.ExitCode.OK, good.stdout.str()[-3000:]
    assert results["targets"]["triton"]["robustness"]["png"]["survived"] is True


def test_a_server_ready_by_its_health_api_that_answers_wrong_never_counts_as_ready(run_against, tmp_path):
    broken, _ = run_against("triton", deployment_copy("triton", tmp_path / "broken", SHIFTED_CLASSES), *CONTRACT)
    assert broken.ret == pytest.ExitCode.TESTS_FAILED, broken.stdout.str()[-3000:]
    broken.stdout.fnmatch_lines(["*triton (triton 2.51.0) says ready but answers its first sample * wrong*"])


def test_a_server_that_answers_no_sample_after_its_first_records_what_is_known(run_against, tmp_path):
    broken, results = run_against(
        "triton", deployment_copy("triton", tmp_path / "broken", DIES_AFTER_FIRST_CALL), *CONTRACT
    )
    assert broken.ret == pytest.ExitCode.TESTS_FAILED, broken.stdout.str()[-3000:]
    broken.stdout.fnmatch_lines(["*triton: 5 of 5 samples got no prediction; first: sample *HTTP 500*"])
    correctness = results["targets"]["triton"]["correctness"]
    assert (correctness["n"], correctness["answered"], correctness["failures"]) == (5, 0, 5)


def test_a_torchserve_worker_that_crashes_and_is_restarted_did_not_survive(run_against, tmp_path):
    repo = deployment_copy("torchserve", tmp_path / "broken", WORKER_DIES_ON_PNG)
    broken, results = run_against(
        "torchserve", repo, "-m", "serving_robustness", "--serving-load=off", "-k", "test_case and png-rgba"
    )
    assert broken.ret == pytest.ExitCode.TESTS_FAILED, broken.stdout.str()[-3000:]
    broken.stdout.fnmatch_lines(["*server survived: NO: *workers changed from {'worker * pid *': 'READY'} to *"])
    assert results["targets"]["torchserve"]["robustness"]["png-rgba"]["survived"] is False
