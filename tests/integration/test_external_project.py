"""pytest-serving as another repository uses it: loaded through its entry point, nothing from this repo's tests.

Each test writes a separate project (its own conftest.py and tests) and runs pytest on it in a
subprocess, against a real Triton container for the tests that need a server.
"""

from __future__ import annotations

import inspect
import json
import re

import pytest

from pytest_serving import fixtures
from pytest_serving.containers.labels import SESSION_LABEL
from pytest_serving.targets.triton import TRITON_SERVER_VERSION

#: What another repository can ask for; each must be listed by ``pytest --fixtures`` with its docstring.
PUBLIC_FIXTURES = (
    "serving_settings",
    "serving_samples",
    "serving_reference",
    "serving_results",
    "serving_deployment",
    "serving_target",
    "serving_endpoint",
    "serving_client",
    "serving_load",
)

#: The downstream project's conftest: its own single sample replaces the plugin's samples.
USER_CONFTEST = '''
import io

import pytest
import skimage.data
from PIL import Image

from pytest_serving.samples import Sample


@pytest.fixture(scope="session")
def serving_samples():
    """Our release gate classifies our own photo: the coffee cup, as a smaller, lower-quality JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).resize((300, 200)).save(buffer, format="JPEG", quality=80)
    return [Sample("our-coffee", buffer.getvalue(), 967, frozenset({967, 968, 504}), "conftest")]
'''

USER_TESTS = """
import io
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

pytestmark = pytest.mark.serving

TABBY_CAT = {{281, 282, 285}}  # tabby, tiger cat, Egyptian cat


def test_our_model_classifies_a_photo(serving_client, serving_endpoint):
    buffer = io.BytesIO()
    Image.open(Path(skimage.data.data_dir) / "chelsea.png").convert("RGB").save(buffer, format="JPEG")
    assert serving_client.classify(buffer.getvalue()).top1 in TABBY_CAT
    assert serving_endpoint.base_url.startswith("http://127.0.0.1:")
    assert serving_endpoint.protocol.name == "v2"
    assert serving_endpoint.model_name == "efficientnet_lite0"
    assert serving_endpoint.server_version == "triton {version}"
    assert serving_endpoint.image == "{image}"
    assert serving_endpoint.started_by_plugin


def test_our_model_sees_our_samples(serving_samples, serving_client):
    assert [sample.id for sample in serving_samples] == ["our-coffee"]
    assert serving_client.classify(serving_samples[0].data).top1 in serving_samples[0].accepted


@pytest.mark.serving_load(users=2, duration=3, warmup=1, p95_ms=0.001)
def test_our_model_over_budget(serving_load):
    serving_load()


@pytest.mark.serving_load(users=2, duration=3, warmup=1, p95_ms=60_000, max_failure_rate=0.0)
def test_our_model_within_budget(serving_load):
    assert serving_load().n > 0
"""


def test_another_project_uses_the_fixtures_marker_and_its_own_overrides(
    pytester, offline_image, docker_client, session_id
):
    image = offline_image("triton")
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_our_model=USER_TESTS.format(version=TRITON_SERVER_VERSION, image=image))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider",
        "--strict-markers",
        "--serving=triton",
        f"--serving-image=triton={image}",
        "--serving-report=out",
        "-k", "test_our_model",  # the plugin's built-in suites are deselected
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("failed")) == (3, 1), result.stdout.str()
    assert not {"error", "errors", "skipped"} & set(outcomes), result.stdout.str()
    over_budget = re.compile(
        rf"triton \[{re.escape(image)}\] at users=2, n=[1-9]\d*: p95 \d+\.\d ms exceeds budget 0\.001 ms"
        r"( \[unstable: .+\])?"  # a phase whose windows never settled says so in its verdict
    )
    budget_lines = [line for line in result.stdout.lines if "exceeds budget" in line and not line.startswith("FAILED")]
    assert len(budget_lines) == 1 and over_budget.fullmatch(budget_lines[0]), result.stdout.str()
    load = json.loads((pytester.path / "out" / "results.json").read_text())["targets"]["triton"]["load"]
    assert [entry["test"].split("::")[-1] for entry in load] == [
        "test_our_model_over_budget[triton]",
        "test_our_model_within_budget[triton]",
    ]
    assert {entry["configuration"]["request_count"] for entry in load} == {1}  # the conftest's one sample
    assert docker_client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session_id}"}) == []


def test_pytest_fixtures_lists_the_public_fixtures_with_their_docstrings(pytester):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fixtures")
    assert result.ret == pytest.ExitCode.OK
    lines = result.stdout.lines
    for name in PUBLIC_FIXTURES:
        heading = [index for index, line in enumerate(lines) if line.split(" ")[0] == name]
        assert len(heading) == 1, f"{name} not listed once by pytest --fixtures"
        first_doc_line = inspect.getdoc(getattr(fixtures, name)).splitlines()[0]
        assert lines[heading[0] + 1].strip() == first_doc_line
