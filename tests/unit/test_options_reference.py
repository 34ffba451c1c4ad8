"""docs/options.md is generated from the option table and must match it, and miss nothing the plugin reads."""

import importlib.util
import re
from pathlib import Path

import pytest

import pytest_serving

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(pytest_serving.__file__).parent


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("options_reference", ROOT / "scripts" / "options_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def documented(reference) -> str:
    return reference.OUTPUT.read_text()


def test_docs_options_md_is_up_to_date(reference, documented):
    assert documented == reference.render(), f"docs/options.md is out of date: run `{reference.COMMAND}`"


def test_every_option_and_ini_key_pytest_knows_is_documented(pytester, documented):
    help_text = pytester.runpytest("--help").stdout.str()
    options = set(re.findall(r"(?m)^\s+(--serving[a-z0-9-]*)", help_text))
    ini_keys = set(re.findall(r"(?m)^\s+(serving(?:_[a-z0-9_]+)?) \(", help_text))
    assert len(options) > 20 and "serving_budgets" in ini_keys
    assert {name for name in options | ini_keys if f"`{name}`" not in documented} == set()


def test_every_environment_variable_the_package_reads_is_documented(documented):
    names = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in re.findall(r"\b(?:PYTEST_SERVING|TESTCONTAINERS)_[A-Z0-9_]+\b", path.read_text())
    }
    assert {"PYTEST_SERVING_SESSION_ID", "PYTEST_SERVING_CACHE", "TESTCONTAINERS_RYUK_DISABLED"} <= names
    assert {name for name in names if f"`{name}`" not in documented} == set()
