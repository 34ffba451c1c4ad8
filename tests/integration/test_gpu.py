"""GPUs: --serving-gpus=all hands the machine's NVIDIA GPUs to the target's container, and the suite passes there."""

from __future__ import annotations

import json
import uuid

import pytest

from pytest_serving.containers.docker_env import image_present
from pytest_serving.targets.triton import Triton

#: Runs inside the project the inner pytest collects: the container got the device request and sees a GPU.
GPU_TEST = """
import pytest

pytestmark = pytest.mark.serving


def test_the_container_has_the_gpus(serving_deployment):
    container = serving_deployment.container
    (request,) = container.get_wrapped_container().attrs["HostConfig"]["DeviceRequests"]
    assert (request["Count"], request["Capabilities"]) == (-1, [["gpu"]])
    devices = container.exec(["sh", "-c", "ls /dev/nvidia[0-9]*"])
    assert devices.exit_code == 0, f"no GPU device node in the container: {devices.output!r}"
"""


@pytest.fixture
def nvidia_runtime(docker_client) -> None:
    """Skips, with what is missing, where Docker has no NVIDIA runtime.

    A plain skip even under PYTEST_SERVING_STRICT: a GPU is optional hardware, not a broken setup.
    """
    runtimes = sorted(docker_client.info().get("Runtimes", {}))
    if "nvidia" not in runtimes:
        pytest.skip(
            f"no NVIDIA container runtime: `docker info` lists runtimes {', '.join(runtimes) or 'none'}, "
            "no 'nvidia' (needs an NVIDIA GPU, its driver and nvidia-container-toolkit: "
            "`nvidia-ctk runtime configure --runtime=docker`, then restart dockerd)"
        )


def test_a_target_runs_with_all_gpus(pytester, nvidia_runtime, offline_image, monkeypatch):
    monkeypatch.setenv("PYTEST_SERVING_SESSION_ID", f"test-{uuid.uuid4().hex[:8]}")
    args = [
        "-p", "no:cacheprovider",
        "--serving=triton",
        "--serving-gpus=all",
        "--serving-samples-limit=5",
        "--serving-load=off",
        "--serving-report=out",
        "-m", "not serving_robustness",
    ]  # fmt: skip
    if not image_present(Triton.official_gpu_image):
        # No registry here: the offline CPU image still proves the GPUs reach the container.
        args.append(f"--serving-image=triton={offline_image('triton')}")
    pytester.makepyfile(test_gpu_user=GPU_TEST)
    result = pytester.runpytest_subprocess(*args)
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert outcomes["passed"] + outcomes.get("xfailed", 0) == 5 + 1 + 1  # per sample, aggregate, GPU check
    server = json.loads((pytester.path / "out" / "results.json").read_text())["targets"]["triton"]["server"]
    assert server["gpus"] == "all"
