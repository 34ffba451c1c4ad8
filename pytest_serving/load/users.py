"""The locustfile that the runner starts in its own Locust processes.

It is never imported by the pytest process (Locust monkey-patches the standard
library with gevent on import). Each process reads the run plan named by
``--serving-plan``, records every measured request itself and writes its
samples to ``<out_dir>/raw-<worker index>.npz`` when the test stops. The master
of a distributed run sends nothing; it only ends the run after warmup + duration.

``ClosedLoopUser``: one user = one connection sending back to back (or paced).
``OpenLoopUser``: one per process; it spawns a greenlet per scheduled arrival,
up to the process's share of the in-flight cap, so the schedule never waits for
the server (no coordinated omission).

Users send through geventhttpclient's ``HTTPClient`` (the connection pool under
Locust's ``FastHttpUser``) rather than through ``FastHttpSession``: the engine
records every request itself, and Locust's per-request statistics, cookie jar,
URL parsing and redirect handling would halve the rate one process can send.
Requests go out exactly as given (no cookies, no redirects followed, no added
``Accept-Encoding``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from http.client import HTTPException
from pathlib import Path

import gevent
from gevent.pool import Pool
from geventhttpclient import URL, HTTPClient
from locust import User, events, log, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from pytest_serving.load.phase import RunPlan, arrival_offsets
from pytest_serving.load.stats import SampleRecorder
from pytest_serving.protocols.base import HttpRequest

# How long after the measured window closes the run is stopped, so that workers,
# which start a few milliseconds after the master, finish their own window.
STOP_MARGIN_S = 0.5
EXIT_CODE_USER_ERROR = 3


class ProcessRun:
    """This process's share of the phase: its clock, its requests and its recorder."""

    def __init__(self, plan: RunPlan, process_index: int) -> None:
        self.plan = plan
        self.phase = plan.phase
        self.process_index = process_index
        self.started = time.perf_counter()
        self.window_opens = self.started + self.phase.warmup
        self.started_at = time.time() + self.phase.warmup
        self.recorder = SampleRecorder()
        self._user_ordinals = itertools.count()

    def window_offset(self, perf_time: float) -> float:
        """Seconds since the measured window opened (negative during warmup)."""
        return perf_time - self.window_opens

    def measured(self, offset_s: float) -> bool:
        return 0.0 <= offset_s < self.phase.duration

    def finished(self, due: float, outcome: int | str) -> None:
        """A request due at ``due`` (perf_counter time) just ended: keep it and its answer time if in the window."""
        ended = time.perf_counter()
        due_offset = self.window_offset(due)
        if self.measured(due_offset):
            self.recorder.record(due_offset, (ended - due) * 1000.0, outcome)
        ended_offset = self.window_offset(ended)
        if self.measured(ended_offset):
            self.recorder.completed(ended_offset)

    def requests_for_new_user(self) -> Iterator[HttpRequest]:
        """The request list cycled from a different start for every user of every process."""
        ordinal = next(self._user_ordinals) * self.phase.process_count + self.process_index
        requests = self.plan.requests
        start = ordinal % len(requests)
        return itertools.cycle(requests[start:] + requests[:start])

    def save(self, cpu_warning: bool) -> None:
        path = Path(self.plan.out_dir) / f"raw-{self.process_index}.npz"
        self.recorder.samples(self.started_at, cpu_warning).save(path)


_run: ProcessRun | None = None
_plan_unreadable = False
# A crash in a send greenlet would lose its sample silently; this logs it and fails the process.
_report_send_crash = log.greenlet_exception_logger(logging.getLogger(__name__))


def current_run() -> ProcessRun:
    if _run is None:
        raise RuntimeError("no load phase has started in this Locust process")
    return _run


class Connections:
    """Up to ``size`` keep-alive connections to the base URL; request paths are taken relative to its path."""

    def __init__(self, base_url: str, size: int, timeout: float) -> None:
        url = URL(base_url)
        self.client = HTTPClient.from_url(
            url, concurrency=size, connection_timeout=timeout, network_timeout=timeout, insecure=True
        )
        self.path_prefix = url.path.rstrip("/")

    def send(self, request: HttpRequest) -> int | str:
        """Send one request and read its answer; its HTTP status, or the name of the error that left it without one."""
        try:
            with self.client.request(
                request.method, self.path_prefix + request.path, request.body, request.headers
            ) as response:
                response.read()
                return response.status_code
        except (OSError, HTTPException) as error:
            return type(error).__name__


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--serving-plan", default="", include_in_web_ui=False, help="pytest-serving run plan (JSON)")


@events.test_start.add_listener
def _start(environment: Environment, **_kwargs) -> None:
    global _run, _plan_unreadable
    runner = environment.runner
    try:
        plan = RunPlan.read(environment.parsed_options.serving_plan)
    except (OSError, ValueError, KeyError, TypeError):
        logging.exception("pytest-serving cannot read its run plan; quitting")
        _plan_unreadable = True
        gevent.spawn(runner.quit)
        return
    _run = ProcessRun(plan, process_index=runner.worker_index if isinstance(runner, WorkerRunner) else 0)
    if not isinstance(runner, WorkerRunner):
        gevent.spawn_later(plan.phase.warmup + plan.phase.duration + STOP_MARGIN_S, runner.quit)


@events.test_stop.add_listener
def _stop(environment: Environment, **_kwargs) -> None:
    if _run is not None and not isinstance(environment.runner, MasterRunner):
        _run.save(cpu_warning=environment.runner.cpu_warning_emitted)


@events.quitting.add_listener
def _exit_code(environment: Environment, **_kwargs) -> None:
    # Failed requests are results, not errors; only exceptions in the users' own code fail the process.
    broken = environment.runner.exceptions or log.unhandled_greenlet_exception or _plan_unreadable
    environment.process_exit_code = EXIT_CODE_USER_ERROR if broken else 0


class ClosedLoopUser(User):
    """Sends the next request as soon as the previous one answered, on one connection."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        run = current_run()
        self.connections = Connections(self.host, 1, run.phase.request_timeout)
        self.phase_run = run
        self.requests = run.requests_for_new_user()
        self.period_s = 1.0 / run.phase.user_rate if run.phase.user_rate else 0.0
        self.task_started = 0.0

    def wait_time(self) -> float:
        return max(0.0, self.period_s - (time.perf_counter() - self.task_started))

    @task
    def send_next(self) -> None:
        self.task_started = started = time.perf_counter()
        if self.phase_run.window_offset(started) >= self.phase_run.phase.duration:
            raise StopUser()
        self.phase_run.finished(started, self.connections.send(next(self.requests)))


class OpenLoopUser(User):
    """Sends this process's share of the arrival schedule, whatever the server's pace."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        run = current_run()
        phase = run.phase
        self.in_flight_cap = max(1, phase.max_in_flight // phase.process_count)
        self.connections = Connections(self.host, self.in_flight_cap, phase.request_timeout)
        self.phase_run = run
        self.requests = run.requests_for_new_user()

    @task
    def send_schedule(self) -> None:
        run, phase = self.phase_run, self.phase_run.phase
        offsets = arrival_offsets(
            phase.rate, phase.arrival, phase.warmup + phase.duration, phase.seed, run.process_index, phase.process_count
        )
        in_flight = Pool(self.in_flight_cap)
        for due in (run.started + offsets).tolist():
            gevent.sleep(max(0.0, due - time.perf_counter()))
            if in_flight.full():
                if run.measured(run.window_offset(due)):
                    run.recorder.dropped_sends += 1
                continue
            in_flight.spawn(self.send_due, due, next(self.requests)).link_exception(_report_send_crash)
        in_flight.join()
        raise StopUser()

    def send_due(self, due: float, request: HttpRequest) -> None:
        run = self.phase_run
        late = (time.perf_counter() - due) * 1000.0 > run.phase.late_threshold_ms
        if late and run.measured(run.window_offset(due)):
            run.recorder.late_sends += 1
        run.finished(due, self.connections.send(request))
