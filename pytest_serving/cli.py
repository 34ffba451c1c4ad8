"""``pytest-serving``: set-up commands for machines without a registry, and cleanup."""

from __future__ import annotations

import argparse
import sys

from .containers.cleanup import remove_labelled
from .deployment import EMBEDDED_MODEL_REPO
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


def export_model(names: list[str], model_name: str) -> int:
    options = TargetOptions(model_name=model_name, model_repo=EMBEDDED_MODEL_REPO)
    for name in _targets(names):
        target = TARGETS[name](options)
        folder = EMBEDDED_MODEL_REPO / target.model_repo_folder
        target.prepare_model_repo(folder)
        print(f"{name}: {folder}")
    return 0


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
    export = commands.add_parser("export-model", help="export the embedded model into model_repo/ (ONNX, TorchScript…)")
    export.add_argument("targets", nargs="*", help="target names (default: all)")
    export.add_argument("--model", default="efficientnet_lite0")
    commands.add_parser("cleanup", help="remove every container pytest-serving started, from any session")
    args = parser.parse_args(argv)
    if args.command == "build-images":
        return build_images(args.targets, args.rebuild)
    if args.command == "export-model":
        return export_model(args.targets, args.model)
    removed = remove_labelled(session_id=None)
    print(f"removed {len(removed)} container(s){': ' + ', '.join(removed) if removed else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
