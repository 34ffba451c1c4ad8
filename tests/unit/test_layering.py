"""The package's layering: parts import only their own layer or lower ones, no cycles, no target named outside targets/.

The layers, top first (a part may import the parts on its own line and the lines below it; imports under
``TYPE_CHECKING`` count, since a type-only circle is still a circle a reader must untangle)::

    cli, plugin                          entry points: commands, options, hooks
    fixtures                             what a user's test asks for
    suites                               the shipped test modules
    session                              the session's state
    report                               summary, HTML, charts (today also the results storage)
    release                              candidate against current, rollouts
    robustness                           catalogue and hostile cases
    load                                 Locust engine, phases, budgets
    deployment                           a target started with a model
    containers, image_selection          Docker
    correctness, verdicts                judging answers and figures
    settings                             options resolved
    targets                              one module per serving system
    images, metrics                      image recipes, server metrics
    protocols, rawhttp                   requests and answers, raw HTTP
    model, samples                       the classifier and its inputs
    __init__, cache, files, progress, types
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest_serving
from pytest_serving.targets import TARGETS

PACKAGE = Path(pytest_serving.__file__).resolve().parent
LAYERS = (
    ("cli", "plugin"),
    ("fixtures",),
    ("suites",),
    ("session",),
    ("report",),
    ("release",),
    ("robustness",),
    ("load",),
    ("deployment",),
    ("containers", "image_selection"),
    ("correctness", "verdicts"),
    ("settings",),
    ("targets",),
    ("images", "metrics"),
    ("protocols", "rawhttp"),
    ("model", "samples"),
    ("__init__", "cache", "files", "progress", "types"),
)
#: Imports from a lower layer up, each named with why it may stay for now.
UPWARD_IMPORTS_ALLOWED = {
    # Results storage lives in report/results.py today; these edges go when it moves to a results/ package
    # below everything that writes results (issue 20).
    ("correctness", "report"): "moves with the results/ package",
    ("verdicts", "report"): "moves with the results/ package",
    ("load", "report"): "moves with the results/ package",
    ("release", "report"): "moves with the results/ package",
}
#: Every registered target's name as a string literal, so a new target is covered without editing this test.
TARGET_NAME = re.compile("[\"'](" + "|".join(re.escape(name) for name in TARGETS) + ")[\"']")


def part(module: str) -> str:
    """The package part a module belongs to: ``targets`` for ``pytest_serving.targets.triton``; ``__init__`` for
    a name the package's own ``__init__`` defines (``pytest_serving.PROJECT_LABEL``)."""
    parts = module.split(".")
    if len(parts) < 2 or not any((PACKAGE / parts[1]).with_suffix(suffix).exists() for suffix in ("", ".py")):
        return "__init__"
    return parts[1]


def imported_modules(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, at run time or under TYPE_CHECKING."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    package = ".".join(relative.parts[:-1])  # a module's package; an __init__'s own package
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names] if node.module is None else [module]
            found.update(name for name in names if name.startswith("pytest_serving"))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pytest_serving"))
    return found


def part_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for imported in imported_modules(path):
            if part(imported) != part(module):
                graph.setdefault(part(module), set()).add(part(imported))
    return graph


def test_no_import_cycles_between_the_package_parts():
    graph = part_graph()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for following in graph.get(start, ()):
            if following == goal or (following not in seen and reaches(following, goal, seen | {following})):
                return True
        return False

    cycles = sorted(name for name in graph if reaches(name, name, {name}))
    assert cycles == [], f"parts on an import cycle: {cycles}; edges: { {n: sorted(graph[n]) for n in cycles} }"


def test_every_part_has_a_layer():
    layered = [name for layer in LAYERS for name in layer]
    parts = {part(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)) for path in PACKAGE.rglob("*.py")}
    assert sorted(layered) == sorted(set(layered)) and parts == set(layered)


def test_no_part_imports_a_higher_layer():
    height = {name: len(LAYERS) - index for index, layer in enumerate(LAYERS) for name in layer}
    upward = sorted(
        (importer, imported)
        for importer, imports in part_graph().items()
        for imported in imports
        if height[imported] > height[importer]
    )
    unexplained = [edge for edge in upward if edge not in UPWARD_IMPORTS_ALLOWED]
    assert unexplained == [], f"imports from a lower layer to a higher one: {unexplained}"
    assert sorted(UPWARD_IMPORTS_ALLOWED) == upward, "an allowed upward import is gone: drop it from the list"


def test_the_shared_types_module_imports_nothing_of_the_package():
    assert imported_modules(PACKAGE / "types.py") == set()


def test_no_module_outside_targets_names_a_target():
    named = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if "targets" not in path.relative_to(PACKAGE).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if TARGET_NAME.search(line)
    ]
    assert named == []
