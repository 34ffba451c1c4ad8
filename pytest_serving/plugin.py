"""pytest-serving's options, markers and hooks; the machinery lives in the other modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import fixtures, session
from .settings import Settings, register
from .targets import TARGETS

SUITES = Path(__file__).parent / "suites"

MARKERS = (
    "serving: a test that needs a running serving target",
    "serving_contract: contract tests (answers checked against labels and the in-process model)",
    "serving_robustness: robustness tests (corrupt and malformed requests get a clear 4xx; the server survives)",
    "serving_load(**options): options and budgets for the serving_load fixture (see pytest --fixtures)",
    "serving_load_suite(mode): built-in load test that runs under --serving-load=MODE",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    register(parser)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    settings = Settings.from_config(config, list(TARGETS))
    session.install(config, settings)
    config.pluginmanager.register(fixtures, "pytest-serving-fixtures")
    if selected_targets(settings) and str(SUITES) not in config.args:
        # The built-in suites ship inside the package and run whenever targets are selected.
        config.args.append(str(SUITES))


def selected_targets(settings: Settings) -> list[str]:
    return list(dict.fromkeys([*settings.targets, *settings.urls]))


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = session.state(config).settings
    targets = selected_targets(settings)
    if not targets:
        return ["serving: no targets selected (--serving=NAME|all to run the serving suites)"]
    samples = str(settings.samples) if settings.samples else "bundled default photos"
    return [f"serving: targets={','.join(targets)} samples={samples} model={settings.model_name}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = session.state(metafunc.config)
    if "serving_target_name" in metafunc.fixturenames:
        targets = selected_targets(state.settings)
        metafunc.parametrize("serving_target_name", targets, scope="session")
    if "serving_sweep_scenario" in metafunc.fixturenames:
        metafunc.parametrize("serving_sweep_scenario", state.settings.load.sweep_scenarios)
    if "serving_sample" in metafunc.fixturenames:
        samples = state.samples()
        metafunc.parametrize("serving_sample", samples, ids=[sample.id for sample in samples])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the built-in load tests of the selected --serving-load mode."""
    mode = session.state(config).settings.load.mode
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("serving_load_suite")
        (drop if marker and marker.args[0] != mode else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    state = session.state(terminalreporter.config)
    if not state.outcomes:
        return
    terminalreporter.section("pytest-serving targets")
    for name, (outcome, detail) in sorted(state.outcomes.items()):
        terminalreporter.line(f"{name}: {outcome}: {detail}")
    if state.results.path:
        terminalreporter.line(f"results: {state.results.path}")
