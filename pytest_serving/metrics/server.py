"""Where a load phase's time went inside the server, from its Prometheus counters.

The client measures latency end to end; the server's own cumulative counters say how much
of it was spent queued and computing. Scraping them before and after a phase and dividing
the increases by the increase in answered requests gives per-request figures for exactly
the traffic of that phase (counters include the phase's warm-up, the client's figures
do not).

A target says which counters mean what with a :class:`ServerMetricsSpec`, as its class
attribute ``ServingTarget.server_metrics``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests

from ..protocols.endpoint import Endpoint
from .prometheus import Exposition, MetricsFormatError, parse_exposition

SCRAPE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServerMetricsSpec:
    """Which cumulative counters of a server count requests and the time they spent where.

    Every time counter is summed over its series (all models, all versions) and multiplied
    by ``unit_ms`` (0.001 for microseconds); each of ``queue``, ``compute`` and ``server`` may
    name several counters that add up (Triton splits compute into input, infer and output).
    ``server`` is the whole time a request spent in the server; when the server's counters do
    not split compute out, ``compute`` stays empty and the report shows the rest of ``server``.
    """

    requests: str
    queue: tuple[str, ...] = ()
    compute: tuple[str, ...] = ()
    server: tuple[str, ...] = ()
    #: Counter of model executions: requests per execution is the mean batch size.
    executions: str | None = None
    unit_ms: float = 0.001
    #: Port role in ``Endpoint.urls`` and path of the metrics page.
    url_role: str = "metrics"
    path: str = "/metrics"
    #: What to tell the user when the page lacks the counters (how to switch them on).
    missing_hint: str = ""

    @property
    def counters(self) -> tuple[str, ...]:
        names = (self.requests, *self.queue, *self.compute, *self.server)
        return names + ((self.executions,) if self.executions else ())


class CounterReset(Exception):
    """A counter went down during the phase: the server restarted and the increase is unknown."""


@dataclass(frozen=True)
class ServerTimes:
    """How much each counter of ``spec`` increased over one or more phases."""

    spec: ServerMetricsSpec
    increases: Mapping[str, float]

    @classmethod
    def between(cls, spec: ServerMetricsSpec, before: Mapping[str, float], after: Mapping[str, float]) -> ServerTimes:
        """The increases from snapshot ``before`` to ``after``; counters missing from ``after`` are left out.

        A counter that appears during the phase counts from zero: servers such as TorchServe
        publish a model's counters only once it has served its first request.
        """
        increases = {}
        for name in spec.counters:
            if name in after:
                start = before.get(name, 0.0)
                if after[name] < start:
                    raise CounterReset(f"{name} went from {start:g} down to {after[name]:g}")
                increases[name] = after[name] - start
        return cls(spec, increases)

    def __add__(self, other: ServerTimes) -> ServerTimes:
        """The increases over both phases (the repeats of one sweep level)."""
        names = self.increases.keys() & other.increases.keys()
        return ServerTimes(self.spec, {name: self.increases[name] + other.increases[name] for name in names})

    @property
    def requests(self) -> float:
        return self.increases.get(self.spec.requests, 0.0)

    def per_request_ms(self, counters: Sequence[str]) -> float | None:
        """Mean time per request over ``counters``; None when one is missing or no request was counted."""
        if not counters or self.requests <= 0 or any(name not in self.increases for name in counters):
            return None
        return sum(self.increases[name] for name in counters) * self.spec.unit_ms / self.requests

    @property
    def queue_ms(self) -> float | None:
        return self.per_request_ms(self.spec.queue)

    @property
    def compute_ms(self) -> float | None:
        return self.per_request_ms(self.spec.compute)

    @property
    def server_ms(self) -> float | None:
        return self.per_request_ms(self.spec.server)

    @property
    def requests_per_execution(self) -> float | None:
        executions = self.increases.get(self.spec.executions or "", 0.0)
        return self.requests / executions if executions > 0 else None

    def to_dict(self) -> dict[str, object]:
        """The ``server_metrics`` entry of results.json: per-request means and the raw increases."""
        return {
            "requests": self.requests,
            "queue_ms": self.queue_ms,
            "compute_ms": self.compute_ms,
            "server_ms": self.server_ms,
            "requests_per_execution": self.requests_per_execution,
            "increases": dict(self.increases),
        }


@dataclass(frozen=True)
class Unmeasured:
    """Why a phase has no server metrics."""

    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"unavailable": self.reason}


PhaseServerMetrics = ServerTimes | Unmeasured


def combined(phases: Sequence[PhaseServerMetrics]) -> PhaseServerMetrics:
    """The server metrics of several phases taken together; unmeasured if any of them is."""
    if not phases:
        return Unmeasured("no phase")
    for phase in phases:
        if isinstance(phase, Unmeasured):
            return phase
    return functools.reduce(operator.add, phases)


@dataclass(frozen=True)
class MetricsPage:
    """A server's metrics page and the spec that reads it."""

    url: str
    spec: ServerMetricsSpec

    def snapshot(self) -> dict[str, float]:
        """The current total of every counter the spec names that the page has."""
        response = requests.get(self.url, timeout=SCRAPE_TIMEOUT_S)
        response.raise_for_status()
        exposition: Exposition = parse_exposition(response.text)
        totals = {name: exposition.total(name) for name in self.spec.counters}
        return {name: total for name, total in totals.items() if total is not None}


def metrics_page(endpoint: Endpoint, spec: ServerMetricsSpec | None) -> MetricsPage | Unmeasured:
    """Where ``endpoint``'s server publishes the counters of ``spec`` (its target's ``server_metrics``),
    or why it cannot be known."""
    if spec is None:
        return Unmeasured(f"target {endpoint.target!r} declares no server metrics (ServingTarget.server_metrics)")
    if spec.url_role not in endpoint.urls:
        return Unmeasured(f"no {spec.url_role!r} URL for {endpoint.target} (servers given by --serving-url have none)")
    return MetricsPage(endpoint.urls[spec.url_role] + spec.path, spec)


@dataclass
class PhaseScrape:
    """The result of :func:`scraped_around`: filled in when the phase ends."""

    result: PhaseServerMetrics = field(default_factory=lambda: Unmeasured("the phase did not finish"))
    page: MetricsPage | None = None
    before: dict[str, float] | Unmeasured | None = None

    def window_opened(self) -> None:
        """Scrape again as the measured window opens, so warm-up requests stay out of the server's figures."""
        if self.page is not None:
            self.before = _snapshot(self.page)


@contextmanager
def scraped_around(page: MetricsPage | Unmeasured) -> Iterator[PhaseScrape]:
    """Scrape ``page`` before and after the block; a scrape failure is recorded, never raised.

    Inside the block, ``window_opened()`` replaces the first scrape by one taken when
    the measured window opens. Server metrics explain client figures; a server
    without them must still be load-tested.
    """
    scrape = PhaseScrape()
    if isinstance(page, Unmeasured):
        scrape.result = page
        yield scrape
        return
    scrape.page, scrape.before = page, _snapshot(page)
    yield scrape
    after = _snapshot(page)
    scrape.result = _times(page.spec, scrape.before, after)


def _snapshot(page: MetricsPage) -> dict[str, float] | Unmeasured:
    try:
        return page.snapshot()
    except requests.RequestException as error:
        return Unmeasured(f"scraping {page.url} failed: {type(error).__name__}: {error}")
    except MetricsFormatError as error:
        return Unmeasured(f"{page.url} is not a Prometheus text page: {error}")


def _times(
    spec: ServerMetricsSpec, before: dict[str, float] | Unmeasured, after: dict[str, float] | Unmeasured
) -> PhaseServerMetrics:
    for snapshot in (before, after):
        if isinstance(snapshot, Unmeasured):
            return snapshot
    if spec.requests not in after:
        hint = f": {spec.missing_hint}" if spec.missing_hint else ""
        return Unmeasured(f"the metrics page has no {spec.requests} counter{hint}")
    try:
        return ServerTimes.between(spec, before, after)
    except CounterReset as reset:
        return Unmeasured(f"the server restarted during the phase ({reset})")
