"""pytest-serving's options, markers and hooks; the machinery lives in the other modules."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from . import fixtures, session
from .containers.cleanup import claim_session, remove_at_session_end
from .correctness import gate_cross_target_agreement
from .report.html import render_report
from .report.summary import junit_properties, session_conditions, terminal_tables
from .session import state as serving_state
from .settings import Settings, register, selected_targets
from .targets import TARGETS

SUITES = Path(__file__).parent / "suites"

MARKERS = (
    "serving: a test that needs a running serving target",
    "serving_contract: contract tests (answers checked against labels and the in-process model)",
    "serving_robustness: robustness tests (corrupt and malformed requests get a clear 4xx; the server survives)",
    "serving_load(**options): options and budgets for the serving_load fixture (see pytest --fixtures)",
    "serving_load_suite(mode): built-in load test that runs under --serving-load=MODE (soak: under --serving-soak)",
    "serving_release: the release comparison of --serving-candidate against the current model (runs only with it)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    register(parser)


#: Sessions configured in this process; above one, pytester is running a session inside a test.
_configured_sessions = 0


def pytest_configure(config: pytest.Config) -> None:
    global _configured_sessions
    _configured_sessions += 1
    if not hasattr(config, "workerinput"):
        claim_session()
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    settings = Settings.from_config(config, list(TARGETS))
    state = session.install(config, settings)
    if not hasattr(config, "workerinput"):
        state.open_progress()
    if selected_targets(settings):
        state.check_inputs()
    config.pluginmanager.register(fixtures, "pytest-serving-fixtures")
    if selected_targets(settings):
        collect_suites(config, settings.suites_only)
    if getattr(config.option, "dist", "no") == "load" and selected_targets(settings):
        # Under pytest-xdist each target's tests go to one worker, so each server boots once.
        config.option.dist = "loadgroup"
    if getattr(config, "workerinput", {}).get("serving_loadgroup"):
        # Workers re-parse the command line, which does not say loadgroup; the controller told them.
        config.option.loadgroup = True


def collect_suites(config: pytest.Config, suites_only: bool) -> None:
    """The built-in suites ship inside the package and run whenever targets are selected; with
    --serving-only they replace whatever pytest would collect by default (testpaths, the current folder)."""
    if suites_only and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args[:] = []
    if str(SUITES) not in config.args:
        config.args.append(str(SUITES))


def pytest_sessionstart(session: pytest.Session) -> None:
    serving_state(session.config).print_progress()


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = session.state(config).settings
    targets = selected_targets(settings)
    if not targets:
        return ["serving: no targets selected (--serving=NAME|all to run the serving suites)"]
    samples = str(settings.samples) if settings.samples else "bundled default photos"
    return [f"serving: targets={','.join(targets)} samples={samples} model={settings.model}"]


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


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """pytest-xdist: tell each worker that tests are grouped by target."""
    node.workerinput["serving_loadgroup"] = node.config.option.dist == "loadgroup"


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Generator[None]:
    """Keep only the built-in load tests of the selected --serving-load mode, and the release tests only
    with --serving-candidate; mark each test's target
    for xdist before it reads the groups; then, after pytest's own reordering, run each target's
    tests together so its server boots once."""
    load = session.state(config).settings.load
    modes = {load.mode, "soak"} if load.soak else {load.mode}
    candidate = session.state(config).release.candidate
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("serving_load_suite")
        other_mode = marker is not None and marker.args[0] not in modes
        no_candidate = candidate is None and item.get_closest_marker("serving_release") is not None
        (drop if other_mode or no_candidate else keep).append(item)
        target = target_of(item)
        if target:
            item.add_marker(pytest.mark.xdist_group(f"serving-{target}"))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    yield
    order = {name: index for index, name in enumerate(selected_targets(session.state(config).settings))}
    # Within a target: module by module, each test function's parameters together, in definition order.
    items.sort(key=lambda item: (order.get(target_of(item), -1), str(item.path), item.location[1]))
    session.state(config).count_tests(items, target_of)


def target_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("serving_target_name") if callspec else None


def pytest_unconfigure(config: pytest.Config) -> None:
    """The outermost controlling session removes whatever any process of it left (xdist workers included)."""
    global _configured_sessions
    _configured_sessions -= 1
    session.close(config)
    if _configured_sessions == 0 and not hasattr(config, "workerinput"):
        remove_at_session_end()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Progress: a target's suite is announced as it starts and beats while it runs; a long test is named."""
    with serving_state(item.config).test_progress(item):
        return (yield)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    """Put the figures a test measured into its user properties, which --junitxml writes as properties:
    load levels for tests that ran ``serving_load``, correctness for contract tests that record it."""
    if call.when != "call":
        return
    fixture_names = getattr(item, "fixturenames", ())
    contract = item.get_closest_marker("serving_contract") is not None and "serving_results" in fixture_names
    if "serving_load" not in fixture_names and not contract:
        return
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("serving_target_name") if callspec and contract else None
    results = serving_state(item.config).results.read()
    item.user_properties.extend(junit_properties(results, item.nodeid, target))


#: The line the terminal summary prints about report.html: where it is, or why it is missing.
_REPORT_LINE = pytest.StashKey[str]()


#: Lines the terminal summary prints about pairs of targets that disagree.
_DISAGREEMENT = pytest.StashKey[list[str]]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In the controller: gate on cross-target agreement, then, with --serving-report, record the
    session's conditions and write report.html."""
    config = session.config
    state = serving_state(config)
    state.stop_progress()
    if hasattr(config, "workerinput") or not selected_targets(state.settings):
        return
    violations = gate_cross_target_agreement(state.results)
    if violations:
        config.stash[_DISAGREEMENT] = violations
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    directory = state.settings.report_dir
    if directory is None:
        return
    try:
        state.results.set(("session",), session_conditions(state.settings))
        config.stash[_REPORT_LINE] = f"report: {render_report(state.results.read(), directory)}"
    except Exception as error:  # noqa: BLE001 - a broken report must not hide the results measured before it
        config.stash[_REPORT_LINE] = f"report.html NOT written: {type(error).__name__}: {error}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Per target: ran or skipped, then correctness, robustness and load tables; then the report's path."""
    config = terminalreporter.config
    state = serving_state(config)
    lines = terminal_tables(state.results.read(), state.outcomes)
    if not lines:
        return
    terminalreporter.section("pytest-serving targets")
    for line in lines:
        terminalreporter.line(line)
    if state.results.path:
        terminalreporter.line(f"results: {state.results.path}")
    if _REPORT_LINE in config.stash:
        terminalreporter.line(config.stash[_REPORT_LINE])
    for line in config.stash.get(_DISAGREEMENT, []):
        terminalreporter.line(f"FAILED cross-target agreement: {line}", red=True)
