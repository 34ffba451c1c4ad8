"""State shared by the fixtures and hooks of one pytest session (kept in ``config.stash``)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import pytest

from . import progress
from .deployment import Deployment
from .load.budgets import BudgetError, BudgetTable, load_budget_file, parse_budget_lines
from .load.fixture import read_baseline
from .load.options import DistributedLoad
from .load.resources import lifetime_resources
from .model.card import ModelCard
from .release.options import ReleaseSettings
from .report.results import ResultsStore
from .samples import Sample, SampleError, default_samples, discover, discover_labelled, read_csv
from .settings import Settings
from .types import Prediction

_KEY = pytest.StashKey["SessionState"]()


class SessionState:
    """Settings, samples, reference answers and what happened to each target in this session."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        report = settings.report_dir
        self.results = ResultsStore(report / "results.json" if report else None)
        #: Parsed here, in pytest_configure: a mistake in them is a usage error before any container starts.
        self.release = ReleaseSettings.from_config(config, settings)
        #: Remote Locust workers for every load phase (``--serving-load-remote-workers`` and its address).
        self.distributed_load = DistributedLoad.from_config(config)
        #: target name -> ("ran", details) or ("skipped", reason), for the terminal summary.
        self.outcomes: dict[str, tuple[str, str]] = {}
        self._samples: list[Sample] | None = None
        self._progress_file: Path | None = None
        self._progress: progress.ProgressPrinter | None = None
        self._planned: Counter[tuple[str | None, str]] = Counter()
        self._target_of: Callable[[pytest.Item], str | None] | None = None
        #: The suite now running: ((target, suite), its progress activity, tests done).
        self._suite: tuple[tuple[str, str], str, int] | None = None

    def open_progress(self) -> None:
        """The outermost controlling process owns the session's progress channel and prints it; xdist
        workers, nested sessions and Locust processes inherit the variable and write into it."""
        if os.environ.get(progress.CHANNEL_VARIABLE):
            return
        descriptor, name = tempfile.mkstemp(prefix="pytest-serving-progress-", suffix=".jsonl")
        os.close(descriptor)
        self._progress_file = Path(name)
        os.environ[progress.CHANNEL_VARIABLE] = name

    def print_progress(self) -> None:
        """Start printing the channel this process owns (at session start: the terminal reporter exists)."""
        if self._progress_file is None or self._progress is not None:
            return
        write_line = terminal_line_writer(self.config)
        if write_line is not None:
            quiet = self.config.get_verbosity() < 0
            self._progress = progress.ProgressPrinter(self._progress_file, write_line, quiet=quiet).start()

    def stop_progress(self) -> None:
        """End the running suite and print what is left to print; called before the terminal summary."""
        self.end_suite()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def count_tests(self, items: list[pytest.Item], target_of: Callable[[pytest.Item], str | None]) -> None:
        """How many tests each target's suite will run, for the progress lines' "k of n tests"."""
        self._planned = Counter((target_of(item), suite_of(item)) for item in items)
        self._target_of = target_of

    @contextmanager
    def test_progress(self, item: pytest.Item) -> Iterator[None]:
        """A serving test counts towards its target's suite, which is announced once and beats while it
        runs; any other test (this repository's own integration tests) is named when it runs long."""
        target = self._target_of(item) if self._target_of else None
        if not target:
            with progress.activity("", progress.TEST_PHASE, item.nodeid):
                yield
            return
        key = (target, suite_of(item))
        if self._suite is None or self._suite[0] != key:
            self.end_suite()
            self._suite = (key, progress.begin(target, f"{key[1]} tests"), 0)
        _, identity, done = self._suite
        try:
            yield
        finally:
            self._suite = (key, identity, done + 1)
            progress.live(identity, tests_done=done + 1, tests_planned=self._planned.get(key))

    def end_suite(self) -> None:
        if self._suite is not None:
            progress.finish(self._suite[1])
            self._suite = None

    def close_progress(self) -> None:
        self.end_suite()
        self.stop_progress()
        if self._progress_file is not None:
            os.environ.pop(progress.CHANNEL_VARIABLE, None)
            self._progress_file.unlink(missing_ok=True)
            self._progress_file = None

    def check_inputs(self) -> None:
        """Load the model card and the samples now, so that a mistake in either is one usage error
        naming it before anything is collected or any container starts."""
        self.samples()

    def samples(self) -> list[Sample]:
        """The labelled samples the options name, read once; a usage error says what is wrong with them."""
        if self._samples is None:
            settings = self.settings
            labels = settings.card.labels
            try:
                if settings.samples_csv:
                    self._samples = read_csv(settings.samples_csv, labels, settings.classes, settings.samples_limit)
                elif settings.samples and labels is not None:
                    self._samples = discover_labelled(settings.samples, labels, settings.samples_limit)
                elif settings.samples:
                    self._samples = discover(settings.samples, settings.classes, settings.samples_limit)
                elif labels is None:
                    self._samples = default_samples(settings.samples_limit)
                else:
                    raise SampleError(
                        f"model card {settings.card.source} has its own labels: give its labelled images with "
                        "--serving-samples=DIR ('<label>/*.jpg' or '<label>_*.jpg') or --serving-samples-csv=FILE"
                    )
            except SampleError as error:
                raise pytest.UsageError(f"pytest-serving: {error}") from None
        return self._samples

    def reference(self, samples: list[Sample], card: ModelCard | None = None) -> dict[str, Prediction]:
        """In-process predictions of ``card`` (default: the deployed one), cached in .pytest_cache by
        card (artifact and fields) and sample bytes."""
        card = card or self.settings.card
        digest = hashlib.sha256(card.card_id.encode())
        for sample in samples:
            digest.update(hashlib.sha256(sample.data).digest())
        key = f"pytest-serving/reference/{card.name}/{digest.hexdigest()[:24]}"
        cache = getattr(self.config, "cache", None)  # absent under -p no:cacheprovider
        if cache is None:
            cached = self._predict(samples, card)
        else:
            # xdist workers share the cache: the first computes while the others wait for its answer.
            with open(cache.mkdir("pytest-serving") / "reference.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                cached = cache.get(key, None)
                if cached is None:
                    cached = self._predict(samples, card)
                    cache.set(key, cached)
        return {sample_id: Prediction(tuple(c), tuple(p)) for sample_id, (c, p) in cached.items()}

    def _predict(self, samples: list[Sample], card: ModelCard) -> dict[str, list[list]]:
        from .model.reference import ReferenceClassifier

        predictions = ReferenceClassifier(card).predict_many([s.data for s in samples])
        return {s.id: [list(p.classes), list(p.probabilities)] for s, p in zip(samples, predictions)}

    @cached_property
    def budget_tables(self) -> tuple[BudgetTable, ...]:
        """Per-target load budgets: the ini key ``serving_budgets``, then ``--serving-budgets-file``."""
        try:
            tables = [parse_budget_lines(self.config.getini("serving_budgets"))]
            if self.settings.load.budgets_file:
                tables.append(load_budget_file(self.settings.load.budgets_file))
        except BudgetError as error:
            raise pytest.UsageError(f"pytest-serving budgets: {error}") from None
        return tuple(tables)

    @cached_property
    def baseline(self) -> dict | None:
        return read_baseline(self.settings.load.baseline)

    def record_deployment(self, deployment: Deployment) -> None:
        endpoint = deployment.endpoint
        self.outcomes[endpoint.target] = ("ran", f"{endpoint.image} ({endpoint.server_version})")
        self.results.set(
            ("targets", endpoint.target, "server"),
            {
                "image": endpoint.image,
                "image_origin": deployment.target.image_origin,
                "version": endpoint.server_version,
                "started_by_plugin": endpoint.started_by_plugin,
                "model": endpoint.model_name,
                "gpus": self.settings.gpus or "none (CPU)",
                "startup_s": deployment.monitor.startup_s if deployment.monitor else None,
            },
        )

    def record_resources(self, deployment: Deployment) -> None:
        """The server's cold start, peak memory, mean CPU and timeline over the session."""
        monitor = deployment.monitor
        if monitor is None:
            return
        self.results.set(
            ("targets", deployment.endpoint.target, "resources"),
            lifetime_resources(monitor.samples(), monitor.startup_s),
        )

    def record_unavailable(self, target: str, reason: str) -> None:
        self.outcomes[target] = ("skipped", reason)
        self.results.set(("targets", target, "skipped"), reason)


def install(config: pytest.Config, settings: Settings) -> SessionState:
    config.stash[_KEY] = SessionState(config, settings)
    return config.stash[_KEY]


def terminal_line_writer(config: pytest.Config) -> Callable[[str], None] | None:
    """A line writer to the terminal that works while a test runs: pytest captures file descriptor 1
    during each test, so the printer writes to a copy of it taken while capturing is off, after a
    newline when pytest's own line of dots is open."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return None
    if capture is None:
        return reporter.write_line
    with capture.global_and_fixture_disabled():
        sys.stdout.flush()
        stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    writer = getattr(reporter, "_tw", None)
    width_after_last_line = 0

    def write_line(line: str) -> None:
        nonlocal width_after_last_line
        width = writer.width_of_current_line if writer is not None else 0
        open_line = width > 0 and width != width_after_last_line  # pytest wrote on since our last line
        stream.write(("\n" if open_line else "") + line + "\n")
        stream.flush()
        width_after_last_line = width

    return write_line


#: Markers that name a built-in suite, for progress lines.
SUITE_MARKERS = {
    "serving_contract": "contract",
    "serving_robustness": "robustness",
    "serving_load_suite": "load",
    "serving_release": "release",
}


def suite_of(item: pytest.Item) -> str:
    """The suite a test belongs to: contract, robustness, load, release, or its module's name."""
    for marker, suite in SUITE_MARKERS.items():
        if item.get_closest_marker(marker) is not None:
            return suite
    return item.path.stem.removeprefix("test_")


def state(config: pytest.Config) -> SessionState:
    return config.stash[_KEY]


def close(config: pytest.Config) -> None:
    """Release what the session holds (its progress channel); nothing when configuring it failed."""
    if _KEY in config.stash:
        config.stash[_KEY].close_progress()
