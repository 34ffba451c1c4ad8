"""A container's memory and CPU over its whole life, read through the Docker API by a thread.

One thread per container asks Docker for a one-shot stats reading every ``INTERVAL_S`` from the
moment the container starts until it is removed, so every load phase (and the session) can take
the readings that fall within it. Memory is what ``docker stats`` shows (usage less the
inactive page cache); CPU is the container's CPU time since the previous reading divided by
the wall time between them, in cores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import docker
import requests

from ..types import ResourceSample

INTERVAL_S = 0.5
#: Readings kept per container: a day at INTERVAL_S, so a long session's memory stays bounded.
MAX_SAMPLES = 172_800
MB = 1024 * 1024


def memory_in_use_mb(stats: Mapping) -> float | None:
    """Memory a ``docker stats`` reading says is in use, page cache excluded (cgroup v1 and v2)."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if usage is None:
        return None
    details = memory.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", 0))
    return (usage - min(cache, usage)) / MB


def cpu_time_s(stats: Mapping) -> float | None:
    """The container's CPU time so far, in seconds."""
    usage = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    total = usage.get("total_usage")
    return total / 1e9 if total is not None else None


class ResourceMonitor:
    """Reads a container's memory and CPU until stopped; knows how long it took to become ready.

    ``startup_s`` (set by whoever waits for readiness) is the cold start: from the container's
    start to the first passed readiness probe.
    """

    def __init__(self, container: docker.models.containers.Container, interval_s: float = INTERVAL_S) -> None:
        self.container = container
        self.interval_s = interval_s
        self.startup_s: float | None = None
        self._samples: list[ResourceSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"resources-{container.short_id}", daemon=True)

    def start(self) -> ResourceMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5 * self.interval_s + 10)

    def samples(self, since: float = 0.0, until: float = float("inf")) -> list[ResourceSample]:
        """Readings taken between ``since`` and ``until`` (epoch seconds)."""
        with self._lock:
            return [sample for sample in self._samples if since <= sample.at <= until]

    def _run(self) -> None:
        previous: tuple[float, float] | None = None
        while not self._stop.is_set():
            asked = time.time()
            try:
                stats = self.container.stats(stream=False, one_shot=True)
            except (docker.errors.DockerException, requests.RequestException):
                return  # the container is gone
            memory, cpu = memory_in_use_mb(stats), cpu_time_s(stats)
            if memory is not None and cpu is not None:
                if previous is not None and asked > previous[0]:
                    cores = max(0.0, (cpu - previous[1]) / (asked - previous[0]))
                    with self._lock:
                        if len(self._samples) >= MAX_SAMPLES:
                            del self._samples[: MAX_SAMPLES // 2 : 2]  # keep the older half at half the rate
                        self._samples.append(ResourceSample(asked, memory, cores))
                previous = (asked, cpu)
            self._stop.wait(max(0.0, self.interval_s - (time.time() - asked)))
