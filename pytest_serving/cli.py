"""``pytest-serving``: set-up commands for machines without a registry, cleanup, the report check, and load workers."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .containers.cleanup import remove_labelled
from .deployment import EMBEDDED_MODEL_REPO, built_deployment
from .model.card import CardError, load_card
from .report.html import REPORT_NAME
from .report.render_check import BrowserMissing, check_report
from .targets import TARGETS
from .targets.base import TargetOptions


def build_images(names: list[str], rebuild: bool) -> int:
    from .images.builder import ImageBuildError, build_offline_image

    for name in _targets(names):
        recipe = TARGETS[name].offline_image
        if recipe is None:
            print(f"{name}: no offline recipe (official image only)")
            continue
        try:
            print(f"{name}: {build_offline_image(recipe, rebuild=rebuild)}")
        except ImageBuildError as error:
            print(f"{name}: build failed: {error}", file=sys.stderr)
            return 1
    return 0


def export_model(names: list[str], model: str, out: Path | None) -> int:
    """Build each target's deployment of the card (cached); with ``out``, copy them into one model
    repository a person can edit and deploy with ``--serving-model-repo``."""
    try:
        card = load_card(model)
    except CardError as error:
        print(error, file=sys.stderr)
        return 2
    options = TargetOptions(model_name=card.name, card=card, model_repo=EMBEDDED_MODEL_REPO)
    for name in _targets(names):
        target = TARGETS[name](options)
        problem = target.unavailable_reason()
        if problem:
            print(f"{name}: skipped: {problem}")
            continue
        built = built_deployment(target, EMBEDDED_MODEL_REPO / target.model_repo_folder)
        if out is not None:
            shutil.copytree(built, out / target.model_repo_folder, dirs_exist_ok=True)
        print(f"{name}: {out / target.model_repo_folder if out is not None else built}")
    return 0


def check_rendered_report(path: Path, screenshot: Path | None) -> int:
    """Open a report in headless Chromium and say whether every chart shows; exit 1 when one does not."""
    report = path / REPORT_NAME if path.is_dir() else path
    if not report.is_file():
        print(f"no report at {report}", file=sys.stderr)
        return 2
    screenshot = screenshot or report.with_name(f"{report.stem}-screenshot.png")
    try:
        check = check_report(report, screenshot)
    except BrowserMissing as missing:
        print(missing, file=sys.stderr)
        return 2
    for problem in check.problems:
        print(f"PROBLEM {problem}")
    print(f"{report}: {check.visible} of {check.charts} chart(s) shown; screenshot: {check.screenshot}")
    return 0 if check.ok else 1


#: Pause before attaching again after a Locust worker failed (not refused), so a broken master is not hammered.
WORKER_RESTART_PAUSE_S = 2.0


def load_worker(master: str, allow_remote_load: bool, once: bool) -> int:
    """Serve load phases of the master at ``master`` (HOST:PORT) until stopped: each phase's master ends
    its workers, so a new Locust worker attaches for the next one. Runs in an empty directory of its own;
    everything it needs (plan, requests, where to send) comes over Locust's channel."""
    from .load.channel import EXIT_CODE_REFUSED
    from .load.phase import split_address
    from .load.runner import child_environment, worker_command

    try:
        host, port = split_address(master)
    except ValueError as error:
        print(f"--master: {error}", file=sys.stderr)
        return 2
    name = f"{socket.gethostname()} load-worker pid {os.getpid()}"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="pytest-serving-load-worker-") as cwd:
        while True:
            print(f"{name}: attaching to the master at {host}:{port}", flush=True)
            process = subprocess.Popen(
                worker_command(host, port, allow_remote_load, name), cwd=cwd, env=child_environment()
            )
            try:
                code = process.wait()
            finally:
                if process.poll() is None:
                    process.terminate()
                    process.wait()
            if code == EXIT_CODE_REFUSED:
                print(f"{name}: refused (see the error above); stopping", file=sys.stderr)
                return 1
            if once:
                return code
            if code != 0:
                time.sleep(WORKER_RESTART_PAUSE_S)


def _targets(names: list[str]) -> list[str]:
    if not names or names == ["all"]:
        return list(TARGETS)
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown target(s): {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest-serving", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build-images", help="build the offline CPU images from wheels (no registry needed)")
    build.add_argument("targets", nargs="*", help="target names (default: all)")
    build.add_argument("--rebuild", action="store_true", help="rebuild even if the image exists")
    export = commands.add_parser(
        "export-model", help="build every target's deployment of a model card (cached), or copy them into --out"
    )
    export.add_argument("targets", nargs="*", help="target names (default: all)")
    export.add_argument("--model", default="efficientnet_lite0", help="a card.toml or a built-in card's name")
    export.add_argument("--out", type=Path, help="write a complete model repository here (for --serving-model-repo)")
    commands.add_parser("cleanup", help="remove every container pytest-serving started, from any session")
    check = commands.add_parser("check-report", help="check in headless Chromium that report.html shows every chart")
    check.add_argument("report", type=Path, help="the report directory (--serving-report) or its HTML file")
    check.add_argument("--screenshot", type=Path, help="where to save the full-page screenshot")
    worker = commands.add_parser(
        "load-worker", help="send load for a pytest-serving session's phases as a Locust worker of its master"
    )
    worker.add_argument(
        "--master", required=True, help="HOST:PORT the session's master binds (--serving-load-master-bind)"
    )
    worker.add_argument(
        "--allow-remote-load",
        action="store_true",
        help="send load to a target that is not a loopback address (one you own)",
    )
    worker.add_argument("--once", action="store_true", help="serve one phase, then exit with its Locust exit code")
    args = parser.parse_args(argv)
    if args.command == "load-worker":
        return load_worker(args.master, args.allow_remote_load, args.once)
    if args.command == "check-report":
        return check_rendered_report(args.report, args.screenshot)
    if args.command == "build-images":
        return build_images(args.targets, args.rebuild)
    if args.command == "export-model":
        return export_model(args.targets, args.model, args.out)
    removed = remove_labelled(session_id=None)
    print(f"removed {len(removed)} container(s){': ' + ', '.join(removed) if removed else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
