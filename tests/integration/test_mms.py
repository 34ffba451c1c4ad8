"""Multi Model Server end to end: the real container, booted by the plugin's deployment machinery."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from pytest_serving.containers.server import ServerStartError
from pytest_serving.deployment import EMBEDDED_MODEL_REPO, deploy, target_options
from pytest_serving.protocols.client import ClassifierClient
from pytest_serving.samples import Sample, discover
from pytest_serving.settings import Settings
from pytest_serving.targets import TARGETS
from pytest_serving.targets.mms import HANDLER, MMS_VERSION

MODEL = "efficientnet_lite0"
RESTART_TIMEOUT_S = 120.0
#: Prints the archive's manifest and file names, from inside the container.
READ_ARCHIVE = (
    "import json, zipfile; archive = zipfile.ZipFile('store/{model}.mar'); "
    "print(json.dumps({{'manifest': json.loads(archive.read('MAR-INF/MANIFEST.json')), 'files': archive.namelist()}}))"
)
#: Kills the forked Python worker that serves the model (the child of model_service_worker's listener).
KILL_WORKER = (
    "import os, signal; pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]; "
    "cmd = lambda p: open(f'/proc/{p}/cmdline', 'rb').read(); "
    "parent = lambda p: int(open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1]); "
    "workers = [p for p in pids if b'model_service_worker' in cmd(p)]; "
    "children = [p for p in workers if parent(p) in workers]; "
    "[os.kill(p, signal.SIGKILL) for p in children]; print(len(children))"
)


@pytest.fixture
def settings(pytestconfig, offline_image) -> Settings:
    defaults = Settings.from_config(pytestconfig, list(TARGETS))
    return replace(defaults, images={"mms": offline_image("mms")}, startup_timeout=300)


@pytest.fixture(scope="module")
def sample(shared_samples: Path) -> Sample:
    return discover(shared_samples, limit=1)[0]


def run_python(deployment, code: str) -> str:
    result = deployment.container.exec(["python3", "-c", code])
    assert result.exit_code == 0, result.output.decode("utf-8", "replace")
    return result.output.decode()


def test_serves_an_archive_of_mms_own_archiver_and_a_restarted_worker_shows_in_health(settings, sample):
    with deploy("mms", settings) as deployment:
        endpoint, target = deployment.endpoint, deployment.target
        assert endpoint.server_version == f"mms {MMS_VERSION}"
        prediction = ClassifierClient(endpoint.base_url, endpoint.protocol).classify(sample.data)
        assert sample.accepted & set(prediction.classes), f"{sample.id}: {prediction}"

        archive = json.loads(run_python(deployment, READ_ARCHIVE.format(model=MODEL)))
        assert archive["manifest"]["model"] == {"modelName": MODEL, "handler": "handler:handle"}
        assert sorted(archive["files"]) == sorted(
            ["MAR-INF/MANIFEST.json", "handler.py", "model.onnx", "serving_card.json", "serving_preprocess.py"]
        )

        with requests.Session() as session:
            before = target.health(endpoint, session)
            assert before["ready"] is True and len(before["workers"]) == 1
            assert run_python(deployment, KILL_WORKER).strip() == "1"
            deadline = time.monotonic() + RESTART_TIMEOUT_S
            after = target.health(endpoint, session)
            while after["workers"] in ([], before["workers"]) and time.monotonic() < deadline:
                time.sleep(0.5)
                after = target.health(endpoint, session)
        assert after["ready"] is True and after["workers"] != before["workers"], deployment.log_tail()
        # The restarted worker answers again.
        assert (
            ClassifierClient(endpoint.base_url, endpoint.protocol).classify(sample.data).classes == prediction.classes
        )


@pytest.fixture
def unloadable_repo(tmp_path: Path, settings) -> Path:
    """A model repository whose handler cannot be imported, so no worker ever loads the model."""
    folder = tmp_path / "mms"
    folder.mkdir()
    TARGETS["mms"](target_options(settings)).build_deployment(EMBEDDED_MODEL_REPO / "mms", folder)
    handler = folder / HANDLER
    handler.write_text(handler.read_text() + "\nimport no_such_module\n")
    return tmp_path


def test_a_model_that_never_loads_is_never_ready(settings, unloadable_repo):
    """MMS 1.1 reports such a model's restarting workers READY; readiness must not believe it."""
    broken = replace(settings, model_repo=unloadable_repo, startup_timeout=40)
    with (
        pytest.raises(ServerStartError, match="(?s)not ready after.*No module named 'no_such_module'"),
        deploy("mms", broken),
    ):
        pass
