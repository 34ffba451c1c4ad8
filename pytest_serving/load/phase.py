"""What one load phase asks for, and the arrival schedule of an open-loop phase.

Both the pytest process and the Locust processes read these types: the runner
writes a :class:`RunPlan` to a JSON file, every Locust process reads it back.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pytest_serving.load.interleave import WindowSchedule
from pytest_serving.types import HttpRequest

Arrival = Literal["poisson", "constant"]
ARRIVALS: tuple[Arrival, ...] = ("poisson", "constant")

#: Where the master listens for workers unless told otherwise (Locust's own port; loopback until asked).
DEFAULT_MASTER_BIND = "127.0.0.1:5557"
# Time a Locust process may take to import, connect and shut down, on top of the phase itself.
STARTUP_MARGIN_S = 60.0
#: Written into the run's out_dir by the controlling Locust process when the measured window opens.
WINDOW_OPEN_FILE = "window-open"
#: Written into the run's out_dir by the master when the phase fails for a reason it can name (a lost worker).
FAULT_FILE = "fault"


@dataclass(frozen=True)
class LoadPhase:
    """One load phase: closed loop (``users``) or open loop (``rate`` + ``arrival``).

    Closed loop: ``users`` each send their next request when the previous one
    answered (optionally paced to ``user_rate`` requests/s each, like Locust's
    ``constant_throughput``); ``spawn_rate`` users start per second (default:
    all within the first second), so ``warmup`` should cover the ramp.
    Open loop: sends follow a schedule fixed in advance at ``rate`` requests/s
    (seeded); latency counts from the scheduled time, sends starting more than
    ``late_threshold_ms`` behind it are late, and sends that find
    ``max_in_flight`` requests outstanding (total over all processes) are dropped.

    ``warmup`` seconds are sent but not measured, then ``duration`` seconds are
    measured. With ``max_warmup`` the warm-up goes on past ``warmup`` until its
    own windows are stable (the test below, ``load.warmup``), at most ``max_warmup``
    seconds; one Locust process decides, so it needs ``workers=0``. ``workers=0`` runs one Locust process; ``workers=N`` runs Locust's
    distributed mode with one master and N workers on 127.0.0.1. ``remote_workers=M`` makes the master
    also wait, up to ``worker_timeout`` seconds, for M workers started elsewhere
    (``pytest-serving load-worker --master HOST:PORT``) at ``master_bind`` (``HOST:PORT``). ``timeout`` bounds every
    Locust process (default: warmup + duration + request_timeout + a startup margin).
    Measured sends are cut into windows of at least ``window`` seconds, longer
    where needed to hold about 50 requests each (while ``stability_windows`` of
    them still fit); the phase is stable when the last ``stability_windows``
    windows' p95 and rps all lie within ``stability_tolerance`` of their mean.
    """

    users: int | None = None
    rate: float | None = None
    arrival: Arrival = "poisson"
    spawn_rate: float | None = None
    user_rate: float | None = None
    duration: float = 10.0
    warmup: float = 2.0
    workers: int = 0
    remote_workers: int = 0
    master_bind: str = DEFAULT_MASTER_BIND
    worker_timeout: float = 60.0
    timeout: float | None = None
    request_timeout: float = 30.0
    seed: int = 0
    max_in_flight: int = 256
    late_threshold_ms: float = 10.0
    window: float = 1.0
    stability_windows: int = 3
    stability_tolerance: float = 0.10
    max_warmup: float | None = None
    #: Closed loop, one process: the measured window lasts ``duration`` seconds, longer while fewer than
    #: ``min_requests`` were sent in it (so that its windows hold enough requests to judge stability),
    #: at most ``max_duration`` seconds.
    min_requests: int | None = None
    max_duration: float | None = None
    #: A regular expression whose first group, found in the first bytes of an answer's body, is
    #: recorded with the request (``RawSamples.tag``): which model version answered, for instance.
    answer_tag: str | None = None

    def __post_init__(self) -> None:
        if (self.users is None) == (self.rate is None):
            raise ValueError("a load phase needs exactly one of users (closed loop) or rate (open loop)")
        if self.users is not None and self.users < self.process_count:
            raise ValueError(
                f"users={self.users} must be at least 1 and at least one per worker ({self.process_count})"
            )
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate must be > 0 requests/s, got {self.rate}")
        if self.arrival not in ARRIVALS:
            raise ValueError(f"arrival must be one of {ARRIVALS}, got {self.arrival!r}")
        if self.rate is not None and self.max_in_flight < self.process_count:
            raise ValueError(f"max_in_flight={self.max_in_flight} is below one per process ({self.process_count})")
        positive = {
            "duration": self.duration,
            "request_timeout": self.request_timeout,
            "window": self.window,
            "spawn_rate": self.spawn_rate,
            "user_rate": self.user_rate,
            "timeout": self.timeout,
            "worker_timeout": self.worker_timeout,
        }
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.remote_workers < 0:
            raise ValueError(f"remote_workers must be >= 0, got {self.remote_workers}")
        split_address(self.master_bind)
        if self.warmup < 0 or self.workers < 0 or self.late_threshold_ms < 0 or self.stability_tolerance < 0:
            raise ValueError("warmup, workers, late_threshold_ms and stability_tolerance must be >= 0")
        if self.stability_windows < 1:
            raise ValueError(f"stability_windows must be >= 1, got {self.stability_windows}")
        if self.min_requests is not None:
            if self.min_requests < 1 or self.open_loop or self.workers or self.remote_workers:
                raise ValueError("min_requests must be >= 1, and needs a closed loop in one process (workers=0)")
            if self.max_duration is None or self.max_duration < self.duration:
                raise ValueError(f"min_requests needs max_duration >= duration={self.duration}")
        if self.max_warmup is not None:
            if self.max_warmup < self.warmup:
                raise ValueError(f"max_warmup={self.max_warmup} must be >= warmup={self.warmup}")
            if self.distributed:
                raise ValueError("max_warmup needs workers=0: one Locust process decides when the server is warm")

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def distributed(self) -> bool:
        """Whether the phase runs as a Locust master and workers (local, remote or both)."""
        return self.workers + self.remote_workers > 0

    @property
    def process_count(self) -> int:
        """Locust processes that send requests (the master sends none)."""
        return max(1, self.workers + self.remote_workers)

    @property
    def level_key(self) -> str:
        """The load level as a stable key for results and baselines, e.g. ``users=10``."""
        return f"rate={self.rate:g}" if self.open_loop else f"users={self.users}"

    @property
    def longest_warmup(self) -> float:
        """The warm-up's upper bound: ``max_warmup`` when the warm-up adapts, else ``warmup``."""
        return self.warmup if self.max_warmup is None else self.max_warmup

    @property
    def longest_duration(self) -> float:
        """The measured window's upper bound: ``max_duration`` when it may grow, else ``duration``."""
        return self.duration if self.min_requests is None else self.max_duration

    @property
    def deadline_s(self) -> float:
        """Wall-clock limit for each Locust process."""
        if self.timeout is not None:
            return self.timeout
        waiting = self.worker_timeout if self.remote_workers else 0.0
        return waiting + self.longest_warmup + self.longest_duration + self.request_timeout + STARTUP_MARGIN_S

    def to_dict(self) -> dict:
        return asdict(self)


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as (host, port); ValueError naming the address when it is not one."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port in 1..65535, got {address!r}")
    return host.strip("[]"), int(port)


def arrival_offsets(
    rate: float, arrival: Arrival, span_s: float, seed: int, process_index: int = 0, process_count: int = 1
) -> np.ndarray:
    """Send times (seconds from the phase start, ascending, < ``span_s``) of one process's share of ``rate``.

    The processes' shares merge into the whole schedule: Poisson streams of
    ``rate / process_count`` each superpose to a Poisson stream of ``rate``, and
    constant streams are phase-shifted so that together they tick every ``1 / rate``.
    """
    share = rate / process_count
    if arrival == "constant":
        first = process_index / rate
        count = max(0, math.ceil((span_s - first) * share))
        return first + np.arange(count) / share
    if arrival != "poisson":
        raise ValueError(f"arrival must be one of {ARRIVALS}, got {arrival!r}")
    rng = np.random.default_rng([seed, process_index])
    chunk_size = int(span_s * share) + 16
    chunks = [np.zeros(0)]
    last = 0.0
    while last < span_s:
        chunks.append(last + np.cumsum(rng.exponential(1.0 / share, size=chunk_size)))
        last = chunks[-1][-1]
    times = np.concatenate(chunks)
    return times[times < span_s]


@dataclass(frozen=True)
class RunPlan:
    """Everything a Locust process needs: the phase, the requests to cycle through, where to write samples,
    whether to keep the answers' bodies for the answer checks (``load.answers``), and, for interleaved
    windows, which of the requests each window sends (``load.interleave``)."""

    phase: LoadPhase
    requests: tuple[HttpRequest, ...]
    out_dir: str
    keep_answers: bool = False
    #: Names this run of the phase in every message between master and workers, so a late message
    #: of an earlier phase is told apart and dropped.
    phase_id: str = ""
    schedule: WindowSchedule | None = None

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> RunPlan:
        return cls.from_json(Path(path).read_text())

    def to_json(self) -> str:
        document = {
            "phase": self.phase.to_dict(),
            "out_dir": self.out_dir,
            "keep_answers": self.keep_answers,
            "phase_id": self.phase_id,
            "schedule": self.schedule.to_dict() if self.schedule is not None else None,
            "requests": [
                {
                    "method": request.method,
                    "path": request.path,
                    "headers": request.headers,
                    "body": base64.b64encode(request.body).decode("ascii"),
                }
                for request in self.requests
            ],
        }
        return json.dumps(document)

    @classmethod
    def from_json(cls, text: str) -> RunPlan:
        document = json.loads(text)
        requests = tuple(
            HttpRequest(item["method"], item["path"], base64.b64decode(item["body"]), item["headers"])
            for item in document["requests"]
        )
        schedule = document.get("schedule")
        return cls(
            LoadPhase(**document["phase"]),
            requests,
            document["out_dir"],
            document.get("keep_answers", False),
            document.get("phase_id", ""),
            WindowSchedule.from_dict(schedule) if schedule is not None else None,
        )
