"""Public fixtures of pytest-serving; their docstrings are what ``pytest --fixtures`` shows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from .containers.resources import ResourceMonitor
from .deployment import Deployment, KnownAnswer, Unavailable, deploy
from .load.budgets import resolve_budget
from .load.fixture import ServingLoad
from .protocols.client import ClassifierClient
from .protocols.endpoint import Endpoint
from .release.options import with_rollout_budget
from .release.side_by_side import CANDIDATE, CURRENT, ReleaseGate, Version
from .report.results import ResultsStore
from .samples import Sample
from .session import SessionState, state
from .settings import Settings
from .targets.base import ServingTarget
from .types import Prediction


@pytest.fixture(scope="session")
def serving_settings(pytestconfig: pytest.Config) -> Settings:
    """The parsed pytest-serving options (targets, samples, images, report directory, GPUs, strictness)."""
    return state(pytestconfig).settings


@pytest.fixture(scope="session")
def serving_samples(pytestconfig: pytest.Config) -> list[Sample]:
    """Labelled sample images (``Sample``: id, JPEG bytes, label, accepted classes), from --serving-samples
    or the bundled default photos."""
    return state(pytestconfig).samples()


@pytest.fixture(scope="session")
def serving_reference(pytestconfig: pytest.Config, serving_samples: list[Sample]) -> dict[str, Prediction]:
    """The model's own top-5 for every sample, computed in-process (cached by sample and weights hash):
    the yardstick every server's answers are compared with."""
    return state(pytestconfig).reference(serving_samples)


@pytest.fixture(scope="session")
def serving_results(pytestconfig: pytest.Config) -> ResultsStore:
    """The results.json store (``--serving-report``); every update is written atomically."""
    return state(pytestconfig).results


@pytest.fixture(scope="session")
def serving_known_answer(serving_samples: list[Sample], serving_reference: dict[str, Prediction]) -> KnownAnswer:
    """The first sample and the in-process model's answer to it: every deployment must answer it right
    before it counts as ready (health endpoints can be green over a dead model)."""
    first = serving_samples[0]
    return KnownAnswer(first.id, first.data, serving_reference[first.id])


@pytest.fixture(scope="session")
def serving_deployment(
    pytestconfig: pytest.Config, serving_target_name: str, serving_known_answer: KnownAnswer
) -> Iterator[Deployment]:
    """The current target, running and ready: booted in a labelled container (removed at the end) or,
    with --serving-url, an existing server; ready once its health API says so and it answered the first
    sample as the in-process model does. Skips, with the command that fixes it, when Docker or the
    image is missing; --serving-strict makes that a failure wherever this machine could build the image."""
    session: SessionState = state(pytestconfig)
    try:
        with deploy(serving_target_name, session.settings, serving_known_answer) as deployment:
            session.record_deployment(deployment)
            yield deployment
            session.record_resources(deployment)
    except Unavailable as unavailable:
        session.record_unavailable(serving_target_name, str(unavailable))
        if session.settings.strict and unavailable.provable:
            pytest.fail(f"{unavailable} [--serving-strict turns this skip into a failure]", pytrace=False)
        pytest.skip(str(unavailable))


@pytest.fixture(scope="session")
def serving_target(serving_deployment: Deployment) -> ServingTarget:
    """The serving system under test (``ServingTarget``: name, image origin, protocol, ports)."""
    return serving_deployment.target


@pytest.fixture(scope="session")
def serving_endpoint(serving_deployment: Deployment) -> Endpoint:
    """The ready endpoint: base URLs per port role, protocol, model name, server version, image."""
    return serving_deployment.endpoint


@pytest.fixture(scope="session")
def serving_client(serving_endpoint: Endpoint) -> Iterator[ClassifierClient]:
    """A client for the current target: ``classify(image_bytes) -> Prediction`` (top-5), ``send(HttpRequest)``."""
    client = ClassifierClient(serving_endpoint.base_url, serving_endpoint.protocol, headers=serving_endpoint.headers)
    yield client
    client.close()


@pytest.fixture
def serving_load(
    request: pytest.FixtureRequest,
    pytestconfig: pytest.Config,
    serving_deployment: Deployment,
    serving_samples: list[Sample],
    serving_reference: dict[str, Prediction],
    serving_known_answer: KnownAnswer,
) -> ServingLoad:
    """Load generator for the current target (Locust in child processes, exact latency percentiles).

    ``serving_load(**options) -> PhaseStats`` runs one phase; ``serving_load.sweep(levels=...,
    scenario="warm"|"fresh", repeats=...)`` runs the study's sweep. Options come from
    ``@pytest.mark.serving_load(...)`` and the call: ``users`` (closed loop) or ``rate`` +
    ``arrival="poisson"|"constant"`` (open loop, latency from the scheduled send time),
    ``spawn_rate``, ``duration``, ``warmup``, ``max_warmup``, ``workers`` and budgets ``p50_ms``,
    ``p95_ms``, ``p99_ms``, ``max_ms``, ``mean_ms``, ``min_rps``, ``max_failure_rate`` and, for the
    server's container, ``max_memory_mb``, ``max_memory_growth_mb_per_1k`` and ``max_startup_s``.
    With one Locust process the warm-up goes on past ``warmup`` until its windows are stable, at
    most ``max_warmup`` (default 3 x ``warmup``). A violated budget, or a regression against
    --serving-baseline (a bootstrap interval of the p95 or throughput ratio wholly beyond
    --serving-max-regression), fails the test with one line per violation; an interval that
    straddles the limit warns (``InconclusiveComparison``) and fails only with
    --serving-release-strict. A timing line of an unstable phase says ``[unstable: why]``, and a
    phase that passed on unstable windows warns.
    Every phase also checks its answers (all of them while their distinct bodies fit in memory,
    never fewer than 1 % and 200) against ``serving_reference`` for the image sent: a wrong
    answer fails the phase with the count and an example. Every phase is appended to
    results.json under ``targets.<name>.load`` as it ends.
    """
    session = state(pytestconfig)
    marker = request.node.get_closest_marker("serving_load")
    name = serving_deployment.endpoint.target

    @contextmanager
    def fresh_server() -> Iterator[tuple[Endpoint, ResourceMonitor | None]]:
        with deploy(name, session.settings, serving_known_answer) as fresh:
            yield fresh.endpoint, fresh.monitor

    return ServingLoad(
        endpoint=serving_deployment.endpoint,
        samples=serving_samples,
        settings=session.settings.load,
        distributed=session.distributed_load,
        results=session.results,
        marker_options=dict(marker.kwargs) if marker else {},
        budget_tables=session.budget_tables,
        baseline=session.baseline,
        test_id=request.node.nodeid,
        fresh_server=fresh_server if serving_deployment.container is not None else None,
        reference=serving_reference,
        monitor=serving_deployment.monitor,
        server_metrics=serving_deployment.target.server_metrics,
        memory_swing_mb=serving_deployment.target.memory_swing_mb,
        strict=session.release.limits.strict,
        postmortem=serving_deployment.postmortem,
    )


@pytest.fixture
def serving_release(
    pytestconfig: pytest.Config,
    serving_target_name: str,
    serving_samples: list[Sample],
) -> Iterator[ReleaseGate]:
    """The current model and --serving-candidate side by side: one server of the current target (its
    own container) hosting both as two versions of one model (two models where the server has no
    versions: KServe). ``serving_release()`` runs every sample
    on both, then interleaved closed-loop windows (--serving-release-windows, -window, -users), writes
    ``targets.<name>.release`` and fails on a fail verdict (an inconclusive one warns, and fails with
    --serving-release-strict); then (--serving-rollout=on) switches from current to candidate under
    open-loop load at half the current's measured rate and fails on any failed request or any answer
    from the old version to a request sent later than --serving-rollout-grace after the switch
    completed (``targets.<name>.rollout``).
    Skips with the reason where the target cannot host two versions."""
    session = state(pytestconfig)
    settings, release = session.settings, session.release
    try:
        with deploy(serving_target_name, settings, candidate=release.candidate) as deployment:
            target = deployment.target
            current, candidate = target.release_versions
            versions = (
                Version(
                    CURRENT,
                    settings.card.name,
                    current,
                    target.version_protocol(current),
                    session.reference(serving_samples),
                ),
                Version(
                    CANDIDATE,
                    release.candidate.name,
                    candidate,
                    target.version_protocol(candidate),
                    session.reference(serving_samples, release.candidate),
                ),
            )
            yield ReleaseGate(
                deployment.endpoint,
                target,
                versions,
                serving_samples,
                with_rollout_budget(release, resolve_budget(serving_target_name, *session.budget_tables)),
                session.results,
                allow_remote=settings.load.allow_remote,
            )
    except Unavailable as unavailable:
        pytest.skip(f"release comparison on {serving_target_name}: {unavailable}")
