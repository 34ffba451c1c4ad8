"""State shared by the fixtures and hooks of one pytest session (kept in ``config.stash``)."""

from __future__ import annotations

import fcntl
import hashlib
from functools import cached_property

import pytest

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


def state(config: pytest.Config) -> SessionState:
    return config.stash[_KEY]
