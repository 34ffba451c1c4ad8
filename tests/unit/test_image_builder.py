"""Offline image recipes: Dockerfile rendering, apt mirror discovery, wheel extraction, download cache."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from pytest_serving.cache import cache_root
from pytest_serving.images import builder
from pytest_serving.images.builder import ImageBuildError, debian_mirror, extract_wheel_files
from pytest_serving.images.recipe import (
    BASE_IMAGE,
    ONNXRUNTIME,
    OfflineImage,
    WheelFiles,
    install_spec,
    render_dockerfile,
)
from pytest_serving.targets import TARGETS
from pytest_serving.targets.triton import TRITON_OFFLINE_IMAGE


def _lines(dockerfile: str) -> list[str]:
    return dockerfile.splitlines()


def test_preamble_starts_from_base_and_labels_the_project() -> None:
    lines = _lines(render_dockerfile(OfflineImage(tag="t:1")))
    assert lines[0] == f"FROM {BASE_IMAGE}"
    assert 'LABEL io.pytest-serving.project="pytest-serving"' in lines


def test_recipe_without_wheels_installs_no_python() -> None:
    dockerfile = render_dockerfile(OfflineImage(tag="t:1", apt_packages=("openjdk-17-jre-headless",)))
    assert "apt-get install -y --no-install-recommends openjdk-17-jre-headless \\" in dockerfile
    assert "python3" not in dockerfile
    assert "ARG WHEELS_URL" not in dockerfile


def test_wheels_bring_python_and_pip_and_install_from_the_served_folder() -> None:
    recipe = OfflineImage(tag="t:1", apt_packages=("curl", "python3"), wheels=("numpy==1.26.4", "pillow>=10"))
    dockerfile = render_dockerfile(recipe)
    assert "--no-install-recommends curl python3 python3-pip \\" in dockerfile
    pip_lines = [line for line in _lines(dockerfile) if "pip install" in line]
    assert pip_lines == [
        (
            'RUN python3 -m pip install --break-system-packages --no-index --find-links "$WHEELS_URL" '
            "numpy==1.26.4 'pillow>=10'"
        )
    ]
    # The port of the wheel server changes every build: apt must come before the ARG to stay cached.
    assert dockerfile.index("apt-get install") < dockerfile.index("ARG WHEELS_URL") < dockerfile.index("pip install")


def test_no_deps_wheels_get_their_own_install_and_local_wheels_install_by_name() -> None:
    recipe = OfflineImage(
        tag="t:1",
        wheels=("pyyaml",),
        wheels_no_deps=("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",),
    )
    pip_lines = [line for line in _lines(render_dockerfile(recipe)) if "pip install" in line]
    assert pip_lines[0].endswith('"$WHEELS_URL" pyyaml')
    assert pip_lines[1].endswith('"$WHEELS_URL" --no-deps torch==2.13.0+cpu')


def test_install_spec_leaves_requirements_alone() -> None:
    assert install_spec("torchserve==0.12.0") == "torchserve==0.12.0"
    assert install_spec("/w/torch_model_archiver-0.12.0-py3-none-any.whl") == "torch_model_archiver==0.12.0"


def test_extracted_files_are_copied_before_the_recipe_steps() -> None:
    recipe = OfflineImage(
        tag="t:1",
        wheel_files=(WheelFiles("server==1", (("server/bin/", "/opt/server/bin"),)),),
        dockerfile_steps="\nENV PATH=/opt/server/bin:$PATH\n",
    )
    lines = _lines(render_dockerfile(recipe))
    assert lines.index("COPY rootfs/ /") < lines.index("ENV PATH=/opt/server/bin:$PATH") == len(lines) - 1


def test_slug_is_a_file_name() -> None:
    assert OfflineImage(tag="pytest-serving/triton:2.51.0-cpu").slug == "pytest-serving-triton-2.51.0-cpu"


def test_triton_recipe_takes_the_stub_of_the_images_python_and_checks_linking() -> None:
    (source,) = TRITON_OFFLINE_IMAGE.wheel_files
    stubs = [path for path, _ in source.members if "python_backend_stubs" in path]
    stub_folder = f"pytriton/tritonserver/python_backend_stubs/{TRITON_OFFLINE_IMAGE.python_version}/"
    assert stubs == [stub_folder + "triton_python_backend_stub"]
    dockerfile = render_dockerfile(TRITON_OFFLINE_IMAGE)
    assert "ldd /opt/tritonserver/bin/tritonserver" in dockerfile
    assert "grep 'not found'" in dockerfile


DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def _apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path, {"sources.list.d/debian.sources": DEBIAN_SOURCES})
    assert debian_mirror(apt) == "http://mirror.example/debian"


def test_mirror_skips_disabled_stanzas_and_other_suites(tmp_path: Path) -> None:
    sources = (
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs:\n http://on.example/debian\nSuites: bookworm\n"
    )
    apt = _apt_dir(tmp_path, {"sources.list.d/a.sources": sources})
    assert debian_mirror(apt) == "http://on.example/debian"


def test_mirror_from_one_line_format_with_options(tmp_path: Path) -> None:
    apt = _apt_dir(
        tmp_path,
        {
            "sources.list.d/cloud.list": "deb https://packages.example/apt cloud-sdk-bookworm main\n",
            "sources.list.d/debian.list": (
                "# deb http://commented.example/debian bookworm main\n"
                "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://one.example/debian bookworm main\n"
            ),
        },
    )
    assert debian_mirror(apt) == "http://one.example/debian"


def test_mirror_ignores_files_apt_ignores_and_falls_back(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path, {"sources.list.d/debian.sources.disabled": DEBIAN_SOURCES})
    assert debian_mirror(apt) == "http://deb.debian.org/debian"


def _wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "server-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, mode in [
            ("pkg/bin/server", 0o100777),
            ("pkg/bin/tool", 0o100755),
            ("pkg/lib/a.so", 0o100644),
            ("pkg/stubs/3.11/stub", 0o100755),
            ("pkg/stubs/3.12/stub", 0o100755),
        ]:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, name)
    return wheel


def test_extract_copies_folders_and_single_files_with_their_execute_bits(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    members = (("pkg/bin/", "/opt/server/bin"), ("pkg/stubs/3.11/stub", "/opt/server/backends/python"))
    extract_wheel_files(_wheel(tmp_path), members, rootfs)
    files = sorted(str(path.relative_to(rootfs)) for path in rootfs.rglob("*") if path.is_file())
    assert files == ["opt/server/backends/python/stub", "opt/server/bin/server", "opt/server/bin/tool"]
    assert (rootfs / "opt/server/backends/python/stub").read_text() == "pkg/stubs/3.11/stub"
    # World-writable in the wheel, not in the image.
    assert stat.S_IMODE((rootfs / "opt/server/bin/server").stat().st_mode) == 0o755


def test_extract_names_a_missing_member(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="has no pkg/missing/"):
        extract_wheel_files(_wheel(tmp_path), (("pkg/missing/", "/opt"),), tmp_path / "rootfs")


def test_wheels_are_downloaded_once_per_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(builder, "_run", lambda command, what: commands.append(command))
    dest = tmp_path / "wheels"
    builder._download_once(dest, [["numpy==1.26.4"]])
    builder._download_once(dest, [["numpy==1.26.4"]])
    assert len(commands) == 1
    (dest / "numpy-1.26.4.whl").touch()
    builder._download_once(dest, [["numpy==2.0.0"]])
    assert len(commands) == 2
    assert not (dest / "numpy-1.26.4.whl").exists(), "a changed set must not offer stale wheels to pip"


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_SERVING_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("PYTEST_SERVING_CACHE")
    assert cache_root() == Path.home() / ".cache" / "pytest-serving"


def test_every_image_runs_the_one_onnxruntime():
    pins = {
        name: [wheel for wheel in target.offline_image.wheels if wheel.startswith("onnxruntime")]
        for name, target in TARGETS.items()
        if target.offline_image is not None and any("onnxruntime" in wheel for wheel in target.offline_image.wheels)
    }
    assert len(pins) >= 6 and all(wheels == [ONNXRUNTIME] for wheels in pins.values()), pins
