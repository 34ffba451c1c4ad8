"""The rollout under load: open-loop traffic before, during and after the server switches versions.

The load engine sends the model's unversioned requests at a fixed rate and records, per request,
which version answered (the target's ``answer_version_pattern``); meanwhile this process asks the
server to switch (the target's ``switch``) after a steady stretch, and times the switch on the
same wall clock the engine's window starts on. Before it, a short probe at the same rate on the old
version alone checks that the server sustains the rate (``rollout.sustained_rate``).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..load.fixture import load_requests
from ..load.phase import WINDOW_OPEN_FILE, LoadPhase
from ..load.runner import LoadError, run_phase
from ..load.stats import RawSamples, is_success
from ..report.results import RolloutRecord
from ..samples import Sample
from ..targets.base import Endpoint, ServingTarget
from .rollout import Answers, summarize_rollout, sustained_rate

#: Seconds of steady load on the old version before the switch, and on the new one after it.
STEADY_S = 5.0
#: The load runs this long past the steady stretch for the switch itself; a switch that takes
#: longer ends after the load (and the rollout says so).
SWITCH_BUDGET_S = 20.0
#: How long a load or unload request to the server may take.
SWITCH_TIMEOUT_S = 120.0
#: How long the engine may take to open its measured window.
WINDOW_OPEN_TIMEOUT_S = 60.0
#: Before the switch, the old version alone is loaded at the rollout's rate this long (after a
#: second's warm-up), so that the rollout knows whether the server sustains the rate.
PROBE_S = 5.0
PROBE_WARMUP_S = 1.0


def run_rollout(
    endpoint: Endpoint,
    target: ServingTarget,
    samples: Sequence[Sample],
    rate: float,
    grace_s: float,
    reference_p99_ms: float | None,
    *,
    may_lower: bool = True,
    allow_remote: bool = False,
) -> RolloutRecord:
    """Serve the old version alone and probe that the server sustains ``rate`` requests/s (else, when
    ``may_lower``, half of it); load it at that rate, switch to the new one after ``STEADY_S``, keep
    loading through the grace and another steady stretch; the rollout record. A rate the server does
    not sustain still rolls out (failed and stale answers count whatever the rate), but the record
    is not measurable, and says why."""
    old, new = target.release_versions
    target.serve_only(endpoint, old, SWITCH_TIMEOUT_S)
    requests = load_requests(replace(endpoint, protocol=target.protocol()), list(samples))

    def probe(probed_rate: float) -> np.ndarray:
        stats = run_phase(
            endpoint.base_url,
            requests,
            LoadPhase(rate=probed_rate, arrival="constant", duration=PROBE_S, warmup=PROBE_WARMUP_S),
            started_by_plugin=endpoint.started_by_plugin,
            allow_remote=allow_remote,
        )
        return np.asarray(stats.latency_sample_ms)

    lowered_from, why = None, ""
    if reference_p99_ms is not None:  # None: no successful request side by side, nothing to hold it against
        rate, lowered_from, why = sustained_rate(rate, reference_p99_ms, probe, may_lower=may_lower)
    phase = LoadPhase(
        rate=rate,
        arrival="constant",
        duration=2 * STEADY_S + SWITCH_BUDGET_S + grace_s,
        warmup=0.0,
        answer_tag=target.answer_version_pattern,
    )
    with tempfile.TemporaryDirectory(prefix="pytest-serving-rollout-") as scratch:
        raw_dir = Path(scratch)
        failure: list[BaseException] = []

        def load() -> None:
            try:
                run_phase(
                    endpoint.base_url,
                    requests,
                    phase,
                    started_by_plugin=endpoint.started_by_plugin,
                    allow_remote=allow_remote,
                    raw_dir=raw_dir,
                )
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread below
                failure.append(error)

        loader = threading.Thread(target=load, name="pytest-serving-rollout-load", daemon=True)
        loader.start()
        _wait_for(raw_dir / WINDOW_OPEN_FILE, loader)
        time.sleep(STEADY_S)
        started = time.time()
        target.switch(endpoint, old, new, SWITCH_TIMEOUT_S)
        done = time.time()
        loader.join(phase.deadline_s)
        if failure:
            raise failure[0]
        if loader.is_alive():
            raise LoadError(f"the rollout's load did not end within {phase.deadline_s:.0f} s")
        samples_ = RawSamples.merge([RawSamples.load(path) for path in sorted(raw_dir.glob("raw-*.npz"))])
    answers = Answers(samples_.offset_s, samples_.latency_ms, is_success(samples_.code), samples_.tag_names())
    record = summarize_rollout(
        answers,
        switch_started_s=started - samples_.started_at,
        switch_done_s=done - samples_.started_at,
        old_version=old,
        grace_s=grace_s,
        rate=rate,
        reference_p99_ms=reference_p99_ms,
    )
    if why:  # the probe's verdict stands even when the rollout's own steady stretch looked sustained
        record = replace(record, measurable=False, not_measurable=why)
    return replace(record, rate_lowered_from=lowered_from)


def _wait_for(window_open: Path, loader: threading.Thread) -> None:
    deadline = time.monotonic() + WINDOW_OPEN_TIMEOUT_S
    while not window_open.exists():
        if not loader.is_alive() or time.monotonic() > deadline:
            return  # the load failed to start (its error is raised after the join) or is slow: switch anyway
        time.sleep(0.05)
