"""Build serving images locally from Debian packages and PyPI wheels, with no image registry.

Inside ``docker build`` apt works but pip cannot reach PyPI, and the Docker here has no
BuildKit (so no ``RUN --mount``). Wheels are therefore downloaded on the host once, into a
cache, and served to the build over loopback (``--network host``): pip installs them from
that URL and they never land in an image layer or in the build context.
"""

from __future__ import annotations

import fcntl
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

from ..cache import cache_root
from .recipe import BASE_IMAGE, PROJECT, PROJECT_LABEL, ROOTFS, WHEELS_URL_ARG, OfflineImage, render_dockerfile, slug

Log = Callable[[str], None]

DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_SUITE = "bookworm"
BUILD_LOG_TAIL_LINES = 40


class ImageBuildError(RuntimeError):
    """An image could not be built; the message holds the cause (and the build log's tail)."""


def image_exists(tag: str) -> bool:
    """Whether the local Docker engine has an image called ``tag``."""
    if shutil.which("docker") is None:
        raise ImageBuildError("the docker command is not installed; pytest-serving needs a Docker engine and its CLI")
    result = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    return result.returncode == 0


def debian_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = BASE_SUITE) -> str:
    """The Debian mirror this host's apt uses for ``suite``, so debootstrap fetches from the same place."""
    sources = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in (".list", ".sources"):
            continue
        entries = _deb822_entries if path.suffix == ".sources" else _one_line_entries
        for uri, suites in entries(path.read_text(errors="replace")):
            if suite in suites:
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _one_line_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """``deb [options] URI suite components...`` lines as (URI, [suite])."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            yield words[0], [words[1]]


def _deb822_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """Enabled ``Types: deb`` stanzas of a deb822 ``.sources`` file as (first URI, suites)."""
    for stanza in _deb822_stanzas(text):
        enabled = stanza.get("enabled", "yes").lower() != "no"
        if enabled and "deb" in stanza.get("types", "").split() and stanza.get("uris"):
            yield stanza["uris"].split()[0], stanza.get("suites", "").split()


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
        elif line[0].isspace() and key:
            stanza[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            stanza[key] = value.strip()


def ensure_base_image(tag: str = BASE_IMAGE, *, log: Log = print) -> str:
    """The Debian bookworm base every offline image starts from; bootstrapped once with debootstrap."""
    if image_exists(tag):
        return tag
    with _exclusive(tag):
        if not image_exists(tag):
            _bootstrap(tag, log)
    return tag


def _bootstrap(tag: str, log: Log) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            f"cannot create the base image {tag}: debootstrap is not installed; "
            "run `apt-get install -y debootstrap` (as root) and try again"
        )
    mirror = debian_mirror()
    log(f"pytest-serving: bootstrapping Debian {BASE_SUITE} from {mirror} into {tag} (a few minutes, once)")
    with tempfile.TemporaryDirectory(prefix="pytest-serving-rootfs-") as rootfs:
        _run(["debootstrap", "--variant=minbase", BASE_SUITE, rootfs, mirror], f"debootstrap {BASE_SUITE}")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(
                [
                    "docker",
                    "import",
                    "--change",
                    f'LABEL {PROJECT_LABEL}="{PROJECT}"',
                    "--change",
                    'CMD ["bash"]',
                    "-",
                    tag,
                ],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            tar.stdout.close()
            tar.wait()
    if tar.returncode != 0 or imported.returncode != 0:
        raise ImageBuildError(f"docker import of {tag} failed: {imported.stderr.strip()}")


def build_offline_image(recipe: OfflineImage, *, rebuild: bool = False, log: Log = print) -> str:
    """Build ``recipe`` into a local image unless its tag already exists; return the tag.

    The build folder (``<cache>/build/<slug>``) keeps the downloaded wheels between builds
    and the log of the last ``docker build``. Concurrent callers (pytest-xdist workers) wait
    for one build instead of running their own.
    """
    if image_exists(recipe.tag) and not rebuild:
        return recipe.tag
    with _exclusive(recipe.tag):
        if rebuild or not image_exists(recipe.tag):
            _build(recipe, cache_root() / "build" / recipe.slug, log)
    return recipe.tag


@contextmanager
def _exclusive(tag: str) -> Iterator[None]:
    """Hold a lock file for ``tag`` so that only one process on this host builds it at a time."""
    path = cache_root() / "build" / f"{slug(tag)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(recipe: OfflineImage, folder: Path, log: Log) -> None:
    if recipe.base == BASE_IMAGE:
        ensure_base_image(log=log)
    wheels = folder / "wheels"
    if recipe.installs_wheels:
        log(f"pytest-serving: downloading wheels for {recipe.tag}")
        _download_once(wheels, _wheel_downloads(recipe))
    context = folder / "context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for index, source in enumerate(recipe.wheel_files):
        artifacts = folder / "artifacts" / str(index)
        _download_once(artifacts, [_pip_download_args(recipe, [source.requirement], deps=False)])
        (wheel,) = artifacts.glob("*.whl")
        extract_wheel_files(wheel, source.members, context / ROOTFS)
    (context / "Dockerfile").write_text(render_dockerfile(recipe))
    log(f"pytest-serving: building {recipe.tag} (log: {folder / 'build.log'})")
    wheels.mkdir(parents=True, exist_ok=True)
    with _serve_folder(wheels) as wheels_url:
        _docker_build(recipe.tag, context, {WHEELS_URL_ARG: wheels_url}, folder / "build.log", log)


def extract_wheel_files(wheel: Path, members: Iterable[tuple[str, str]], rootfs: Path) -> None:
    """Copy ``members`` of ``wheel`` under ``rootfs`` at their image paths, keeping execute bits."""
    with zipfile.ZipFile(wheel) as archive:
        files = [info for info in archive.infolist() if not info.is_dir()]
        for source, destination in members:
            if source.endswith("/"):
                chosen = [(info, info.filename[len(source) :]) for info in files if info.filename.startswith(source)]
            else:
                chosen = [(info, PurePosixPath(source).name) for info in files if info.filename == source]
            if not chosen:
                raise ImageBuildError(f"{wheel.name} has no {source}")
            for info, relative in chosen:
                target = rootfs / destination.lstrip("/") / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as packed, open(target, "wb") as unpacked:
                    shutil.copyfileobj(packed, unpacked)
                # Wheels store Unix permissions in the high 16 bits; zipfile does not apply them.
                target.chmod((info.external_attr >> 16) & 0o755 or 0o644)


def _wheel_downloads(recipe: OfflineImage) -> list[list[str]]:
    downloads = []
    if recipe.wheels:
        downloads.append(_pip_download_args(recipe, recipe.wheels, deps=True))
    if recipe.wheels_no_deps:
        downloads.append(_pip_download_args(recipe, recipe.wheels_no_deps, deps=False))
    return downloads


def _pip_download_args(recipe: OfflineImage, requirements: Iterable[str], *, deps: bool) -> list[str]:
    """``pip download`` of binary wheels for the image's Python, whatever Python runs us."""
    args = ["--only-binary=:all:", "--python-version", recipe.python_version]
    return args + ([] if deps else ["--no-deps"]) + list(requirements)


def _download_once(dest: Path, downloads: list[list[str]]) -> None:
    """Run each ``pip download`` into ``dest`` unless the same set already completed there.

    A changed set starts from an empty folder, so pip in the image never picks a stale wheel.
    """
    stamp = dest / ".downloaded"
    wanted = json.dumps(downloads)
    if stamp.is_file() and stamp.read_text() == wanted:
        return
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for args in downloads:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "--dest",
            str(dest),
            *args,
        ]
        _run(command, "pip download " + " ".join(args))
    stamp.write_text(wanted)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-BUILD_LOG_TAIL_LINES:])
        raise ImageBuildError(f"{what} failed (exit {result.returncode}):\n{tail}")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` read-only on a free loopback port for the duration of a build."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, name="pytest-serving-wheels", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join()


def _docker_build(tag: str, context: Path, build_args: dict[str, str], log_path: Path, log: Log) -> None:
    """``docker build`` with its output in ``log_path``; step headers go to ``log`` as progress."""
    command = ["docker", "build", "--network", "host", "--force-rm", "-t", tag]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    command.append(str(context))
    with open(log_path, "w") as build_log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            build_log.write(line)
            if line.startswith("Step "):
                log(f"pytest-serving: {tag}: {line.rstrip()}")
    if process.wait() != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-BUILD_LOG_TAIL_LINES:])
        raise ImageBuildError(f"docker build of {tag} failed (exit {process.returncode}); full log {log_path}:\n{tail}")
