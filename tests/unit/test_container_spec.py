"""The container specification the plugin hands to Docker, checked without Docker."""

import docker
import pytest

from pytest_serving import PROJECT_LABEL
from pytest_serving.containers.labels import INSTANCE_LABEL, SESSION_ID, SESSION_LABEL, TARGET_LABEL
from pytest_serving.containers.server import ServingContainer, container_options
from pytest_serving.targets import TARGETS
from pytest_serving.targets.base import TargetOptions


@pytest.fixture(params=sorted(TARGETS))
def target_class(request):
    return TARGETS[request.param]


def test_every_port_is_published_on_loopback_only(target_class, tmp_path):
    target = target_class(TargetOptions())
    container = ServingContainer(target, "some/image:1", tmp_path)
    assert set(container.ports) == {f"{port}/tcp" for port in target.ports.values()}
    assert all(binding == ("127.0.0.1", None) for binding in container.ports.values())


def test_model_repository_is_mounted_read_only(target_class, tmp_path):
    target = target_class(TargetOptions())
    container = ServingContainer(target, "some/image:1", tmp_path)
    assert container.volumes == {str(tmp_path.resolve()): {"bind": target.model_mount, "mode": "ro"}}


def test_labels_name_project_session_and_target(target_class):
    labels = container_options(target_class(TargetOptions()), "instance-1")["labels"]
    assert labels[PROJECT_LABEL] == "pytest-serving"
    assert labels[SESSION_LABEL] == SESSION_ID
    assert labels[TARGET_LABEL] == target_class.name
    assert labels[INSTANCE_LABEL] == "instance-1"


def test_every_container_has_its_own_instance_label(target_class):
    first, second = (ServingContainer(target_class(TargetOptions()), "some/image:1", None) for _ in range(2))
    assert first.instance != second.instance
    assert first._kwargs["labels"][INSTANCE_LABEL] == first.instance


def test_cpu_by_default_no_device_request(target_class):
    assert "device_requests" not in container_options(target_class(TargetOptions()), "instance-1")


@pytest.mark.parametrize(("gpus", "count"), [("all", -1), ("2", 2)])
def test_gpus_become_a_docker_device_request(target_class, gpus, count):
    (request,) = container_options(target_class(TargetOptions(gpus=gpus)), "instance-1")["device_requests"]
    assert isinstance(request, docker.types.DeviceRequest)
    assert request.count == count
    assert request.capabilities == [["gpu"]]


def test_gpu_runs_default_to_the_official_gpu_image(target_class):
    assert target_class.default_image("all") == target_class.official_gpu_image
    assert target_class.default_image(None) == target_class.official_image
