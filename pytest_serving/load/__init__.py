"""Load engine: Locust in child processes, raw per-request latencies, exact statistics.

``run_phase(base_url, requests, LoadPhase(...))`` runs one phase and returns
``PhaseStats``; ``run_sweep`` runs phases over load levels; ``check_budget`` and
``compare_to_baseline`` turn statistics into gate failures; ``check_load_target``
refuses non-loopback targets unless allowed.

Modules follow Locust's own split: ``users`` is the locustfile (runs only in the
Locust processes), ``runner`` starts and supervises those processes, ``stats``
computes figures from the raw samples, ``phase`` describes a phase and its schedule.
Under the users, ``multiplexer`` sends every request of a Locust process from
one epoll loop and ``connection`` encodes requests and reads answers. Beside
the figures, ``answers`` checks a phase's answers against the reference,
``resources`` turns the server container's memory and CPU readings into figures
(peak, mean CPU, growth per 1000 requests) and ``warmup`` decides when an
adaptive warm-up ends.

Distributed load: ``LoadPhase(workers=N)`` starts Locust's distributed mode on
127.0.0.1 (``--master --expect-workers N`` plus N ``--worker`` processes);
``LoadPhase(remote_workers=M, master_bind="HOST:PORT")`` makes the master also
wait (``worker_timeout``) for M workers started on any machine by::

    pytest-serving load-worker --master HOST:PORT [--allow-remote-load]

Master and workers share no path: ``channel`` holds what they say over
Locust's message channel. The master sends each worker the run plan and its
share of the phase (an open loop's schedule is split so that the shares merge
into the arrival process asked for); each worker checks the target itself and
sends its raw samples back, compressed and chunked, under the phase's id; the
master writes them as ``raw-<share>.npz`` for the runner to merge. A worker
lost mid-phase, one of another package version, or one that never came fails
the phase with a ``LoadError`` naming it. docs/scale-out.md runs workers on
Kubernetes.
"""

from pytest_serving.load.budgets import (
    Budget,
    BudgetContext,
    BudgetError,
    UnstablePhaseWarning,
    check_budget,
    compare_to_baseline,
    find_baseline,
    load_budget_file,
    parse_budget_lines,
    resolve_budget,
)
from pytest_serving.load.phase import LoadPhase, arrival_offsets
from pytest_serving.load.runner import LoadError, run_phase
from pytest_serving.load.safety import UnsafeTargetError, check_load_target, is_loopback_host
from pytest_serving.load.stats import LatencySummary, PhaseStats, RawSamples, Window
from pytest_serving.load.sweep import DEFAULT_LEVELS, SweepLevel, SweepResult, run_sweep

__all__ = [
    "DEFAULT_LEVELS",
    "Budget",
    "BudgetContext",
    "BudgetError",
    "LatencySummary",
    "LoadError",
    "LoadPhase",
    "PhaseStats",
    "RawSamples",
    "SweepLevel",
    "SweepResult",
    "UnsafeTargetError",
    "UnstablePhaseWarning",
    "Window",
    "arrival_offsets",
    "check_budget",
    "check_load_target",
    "compare_to_baseline",
    "find_baseline",
    "is_loopback_host",
    "load_budget_file",
    "parse_budget_lines",
    "resolve_budget",
    "run_phase",
    "run_sweep",
]
