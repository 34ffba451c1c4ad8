"""pytest plugin of benchmarks/suite_time.py: when every test phase ran, for which target, on which worker.

Load it with ``-p suite_clock`` (benchmarks/ on PYTHONPATH) and ``--suite-clock=FILE``.
The controlling process writes one JSON line per setup, call and teardown report
(pytest-xdist sends its workers' reports there too): node id, phase, outcome,
start and stop (``time.time()``), the worker and the serving target the test ran
against. The setup of a target's first test is where its server boots.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TARGET_PROPERTY = "suite_clock_target"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--suite-clock", default=None, help="file for one JSON line per test phase (suite_time.py)")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--suite-clock")
    if path and not hasattr(config, "workerinput"):
        config.pluginmanager.register(SuiteClock(Path(path)), "suite-clock-writer")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Name the test's serving target in its report, which reaches the controller even from a worker."""
    report = (yield).get_result()
    callspec = getattr(item, "callspec", None)
    report.user_properties.append((TARGET_PROPERTY, callspec.params.get("serving_target_name") if callspec else None))


class SuiteClock:
    """The controller's writer of the JSON lines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        node = getattr(report, "node", None)  # pytest-xdist: the worker the report came from
        line = {
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "start": report.start,
            "stop": report.stop,
            "target": dict(report.user_properties).get(TARGET_PROPERTY),
            "worker": node.gateway.id if node is not None else "main",
        }
        with self.path.open("a") as log:
            log.write(json.dumps(line) + "\n")
