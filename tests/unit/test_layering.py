"""The package's layering: no import cycles between its parts, and no target named outside targets/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest_serving
from pytest_serving.targets import TARGETS

PACKAGE = Path(pytest_serving.__file__).resolve().parent
#: Every registered target's name as a string literal, so a new target is covered without editing this test.
TARGET_NAME = re.compile("[\"'](" + "|".join(re.escape(name) for name in TARGETS) + ")[\"']")


def part(module: str) -> str:
    """The package part a module belongs to: ``targets`` for ``pytest_serving.targets.triton``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports at run time (imports under TYPE_CHECKING excluded)."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    package = ".".join(relative.parts[:-1])  # a module's package; an __init__'s own package
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
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
