"""Serving systems: one module per system, each with small ServingTarget subclasses.

A target states its images, ports, command, readiness and protocol; starting containers
is the business of ``pytest_serving.containers``. Adding a system means one module in this
package (found automatically) and one folder under ``model_repo/``; other packages can add
targets through the ``pytest_serving.targets`` entry-point group.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from importlib.metadata import entry_points

from .base import ServingTarget


def _discover() -> dict[str, type[ServingTarget]]:
    classes: list[type[ServingTarget]] = []
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        classes += [
            member
            for _, member in inspect.getmembers(module, inspect.isclass)
            if issubclass(member, ServingTarget) and member.__module__ == module.__name__ and "name" in vars(member)
        ]
    classes += [entry.load() for entry in entry_points(group="pytest_serving.targets")]
    return {target.name: target for target in sorted(classes, key=lambda target: target.name)}


TARGETS: dict[str, type[ServingTarget]] = _discover()

__all__ = ["TARGETS", "ServingTarget"]
