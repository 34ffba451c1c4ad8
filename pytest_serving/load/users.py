"""The locustfile that the runner starts in its own Locust processes.

It is never imported by the pytest process (Locust monkey-patches the standard
library with gevent on import). Each process reads the run plan named by
``--serving-plan``, records every measured request itself and writes its
samples to ``<out_dir>/raw-<worker index>.npz`` when the test stops. The master
of a distributed run sends nothing; it only ends the run after warmup + duration.

``ClosedLoopUser``: one user = one connection sending back to back (or paced).
Locust spawns the users (at the spawn rate, spread over the workers); each
hands its connection to the process's ``multiplexer.Multiplexer``, whose one
epoll loop sends for every user of the process, and waits until it is done.
``OpenLoopUser``: one per process; it hands the process's share of the arrival
schedule to the multiplexer as a ``multiplexer.Schedule``, whose pool of
connections (up to the process's share of the in-flight cap) takes each send
at its due time, so the schedule never waits for the server (no coordinated
omission). Over https both users send from greenlets through
``connection.KeepAliveConnection`` instead.

Each request is encoded to bytes once per process and an answer is read only
as far as its status and its end, so the engine's own cost per request stays
small (see docs/benchmarks.md); when the plan asks for answer checks, each 2xx
answer's body is also kept by the request it answers (``answers.AnswerKeeper``,
``answers-<i>.json``). With ``max_warmup`` the controlling process watches the
warm-up's windows (``warmup.WarmupWatch``) and opens the measured window once
they settle; sends, flows and the stop follow the moved window. Requests go out exactly as given (no cookies,
no redirects followed, no added ``Accept-Encoding``).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
from gevent.pool import Pool
from locust import User, events, log, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from pytest_serving.load.answers import AnswerKeeper, answers_file
from pytest_serving.load.connection import Endpoint, KeepAliveConnection
from pytest_serving.load.interleave import ScheduledRequests
from pytest_serving.load.multiplexer import Flow, Multiplexer, Schedule, spin_window_s
from pytest_serving.load.phase import WINDOW_OPEN_FILE, RunPlan, arrival_offsets
from pytest_serving.load.stats import SampleRecorder
from pytest_serving.load.warmup import WarmupWatch

# How long after the measured window closes the run is stopped, so that workers,
# which start a few milliseconds after the master, finish their own window.
STOP_MARGIN_S = 0.5
#: How often an adaptive warm-up looks at its windows.
SETTLE_CHECK_S = 0.25
EXIT_CODE_USER_ERROR = 3


class ProcessRun:
    """This process's share of the phase: its clock, its requests and its recorder."""

    def __init__(self, plan: RunPlan, process_index: int) -> None:
        self.plan = plan
        self.phase = plan.phase
        self.process_index = process_index
        self.started = time.perf_counter()
        # An adaptive warm-up opens the window earlier (open_window); until then, at its latest.
        self.window_opens = self.started + self.phase.longest_warmup
        self.started_at = time.time() + self.phase.longest_warmup
        self.recorder = SampleRecorder()
        phase = self.phase
        self.warmup_watch = (
            WarmupWatch(
                phase.warmup, phase.max_warmup, phase.window, phase.stability_windows, phase.stability_tolerance
            )
            if phase.max_warmup is not None
            else None
        )
        self.warmup_note = ""
        self.quit_timer: gevent.Greenlet | None = None
        self._flows: list[Flow] = []
        self._due_lists: list[list[float]] = []
        self._user_ordinals = itertools.count()
        self._wire_requests: list[bytes] | None = None
        self._connections: list[KeepAliveConnection] = []
        self._multiplexer: Multiplexer | None = None
        #: The answers' bodies by request, when the plan asks to check them.
        self.answers: AnswerKeeper | None = None

    def window_offset(self, perf_time: float) -> float:
        """Seconds since the measured window opened (negative during warmup)."""
        return perf_time - self.window_opens

    def measured(self, offset_s: float) -> bool:
        return 0.0 <= offset_s < self.phase.duration

    def finished(self, due: float, outcome: int | str, ended: float | None = None, tag: str = "") -> None:
        """A request due at ``due`` ended at ``ended`` (perf_counter times; default now): keep it if in the
        window, with the ``tag`` its answer carried (the phase's ``answer_tag``)."""
        if ended is None:
            ended = time.perf_counter()
        if self.warmup_watch is not None and ended < self.window_opens:
            success = isinstance(outcome, int) and 200 <= outcome < 300
            self.warmup_watch.answered(ended - self.started, (ended - due) * 1000.0, success)
        due_offset = self.window_offset(due)
        if self.measured(due_offset):
            self.recorder.record(due_offset, (ended - due) * 1000.0, outcome, tag)
        ended_offset = self.window_offset(ended)
        if self.measured(ended_offset):
            self.recorder.completed(ended_offset)

    def requests_for_new_user(self, endpoint: Endpoint) -> Iterator[bytes]:
        """The encoded request list cycled from a different start for every user of every process."""
        if self._wire_requests is None:
            self._wire_requests = [endpoint.encode(request) for request in self.plan.requests]
            if self.plan.keep_answers:
                self.answers = AnswerKeeper(self._wire_requests)
        ordinal = next(self._user_ordinals) * self.phase.process_count + self.process_index
        requests = self._wire_requests
        if self.plan.schedule is not None:
            return ScheduledRequests(
                requests, self.plan.schedule, lambda: self.window_offset(time.perf_counter()), ordinal
            )
        start = ordinal % len(requests)
        return itertools.cycle(requests[start:] + requests[:start])

    @property
    def window_closes(self) -> float:
        return self.window_opens + self.phase.duration

    def new_flow(self, requests: Iterator[bytes], period_s: float) -> Flow:
        """A closed-loop user's flow, which sends until the window closes (wherever it ends up)."""
        flow = Flow(requests, self.window_closes, period_s)
        self._flows.append(flow)
        return flow

    def due_times(self, offsets: list[float]) -> list[float]:
        """An open loop's send times (perf_counter) from offsets since the start; cut when the window opens."""
        due_times = [self.started + offset for offset in offsets]
        self._due_lists.append(due_times)
        return due_times

    def open_window(self, why: str) -> None:
        """End an adaptive warm-up now: the measured window opens, and everything sending stops at its end."""
        self.window_opens = time.perf_counter()
        self.started_at = time.time()
        self.warmup_note = why
        self.warmup_watch = None
        closes = self.window_closes
        for flow in self._flows:
            flow.closes = closes
        if self._multiplexer is not None:
            self._multiplexer.until = closes
        for due_times in self._due_lists:
            del due_times[bisect.bisect_left(due_times, closes) :]

    def settle(self, runner) -> None:
        """Watch the warm-up's windows; open the measured window once they settle (or at the maximum)."""
        while True:
            gevent.sleep(SETTLE_CHECK_S)
            done, why = self.warmup_watch.verdict(time.perf_counter() - self.started)
            if done:
                break
        self.open_window(why)
        (Path(self.plan.out_dir) / WINDOW_OPEN_FILE).touch()
        self.schedule_quit(runner, self.phase.duration + STOP_MARGIN_S)

    def schedule_quit(self, runner, after_s: float) -> None:
        """Stop the run ``after_s`` seconds from now (replacing an earlier plan)."""
        if self.quit_timer is not None:
            self.quit_timer.kill()
        self.quit_timer = gevent.spawn_later(after_s, runner.quit)

    def multiplexer(self, endpoint: Endpoint) -> Multiplexer:
        """The process's one sending loop (plain http), started by the first user that needs it."""
        if self._multiplexer is None:
            on_body = self.answers.keep if self.answers is not None else None
            tag = re.compile(self.phase.answer_tag.encode()) if self.phase.answer_tag else None
            self._multiplexer = Multiplexer(endpoint, self.phase.request_timeout, self.finished, on_body, tag)
            gevent.spawn(self._multiplexer.run, self.window_closes).link_exception(_report_greenlet_crash)
        return self._multiplexer

    def count_late(self, due: float) -> None:
        """A send due at ``due`` started late: counted if due in the window."""
        if self.measured(self.window_offset(due)):
            self.recorder.late_sends += 1

    def count_dropped(self, due: float) -> None:
        """A send due at ``due`` found every connection busy: counted if due in the window."""
        if self.measured(self.window_offset(due)):
            self.recorder.dropped_sends += 1

    def new_connection(self, endpoint: Endpoint) -> KeepAliveConnection:
        connection = KeepAliveConnection(endpoint, self.phase.request_timeout)
        self._connections.append(connection)
        return connection

    def send(self, connection: KeepAliveConnection, wire: bytes) -> int | str:
        """Send over https (one greenlet per connection); the answer is kept when answers are checked."""
        if self.answers is None:
            return connection.send(wire)
        outcome = connection.send(wire, keep_body=True)
        if isinstance(outcome, int):
            self.answers.keep(wire, outcome, connection.body)
        return outcome

    def watch_timeouts(self) -> None:
        """Abort overdue requests ten times per request timeout (at most every second): the
        connections have no socket timeout."""
        interval = min(1.0, self.phase.request_timeout / 10)
        while True:
            gevent.sleep(interval)
            now = time.perf_counter()
            for connection in self._connections:
                connection.expire_if_overdue(now)

    def save(self, cpu_warning: bool) -> None:
        if self.plan.keep_answers:
            (self.answers or AnswerKeeper([])).save(answers_file(self.plan.out_dir, self.process_index))
        path = Path(self.plan.out_dir) / f"raw-{self.process_index}.npz"
        warmup_s = self.window_opens - self.started
        self.recorder.samples(self.started_at, cpu_warning, warmup_s, self.warmup_note).save(path)


_run: ProcessRun | None = None
_plan_unreadable = False
# A crash in a send or watchdog greenlet would go unnoticed; this logs it and fails the process.
logger = logging.getLogger(__name__)
_report_greenlet_crash = log.greenlet_exception_logger(logger)


def current_run() -> ProcessRun:
    if _run is None:
        raise RuntimeError("no load phase has started in this Locust process")
    return _run


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
        logger.exception("pytest-serving cannot read its run plan; quitting")
        _plan_unreadable = True
        gevent.spawn(runner.quit)
        return
    _run = ProcessRun(plan, process_index=runner.worker_index if isinstance(runner, WorkerRunner) else 0)
    if not isinstance(runner, MasterRunner):
        gevent.spawn(_run.watch_timeouts).link_exception(_report_greenlet_crash)
    if not isinstance(runner, WorkerRunner):
        phase = plan.phase
        _run.schedule_quit(runner, phase.longest_warmup + phase.duration + STOP_MARGIN_S)
        if _run.warmup_watch is not None:
            gevent.spawn(_run.settle, runner).link_exception(_report_greenlet_crash)
        else:
            # Tells the runner when to scrape the server's metrics, so warm-up stays out of them.
            gevent.spawn_later(phase.warmup, (Path(plan.out_dir) / WINDOW_OPEN_FILE).touch)


@events.test_stop.add_listener
def _stop(environment: Environment, **_kwargs) -> None:
    if _run is not None and not isinstance(environment.runner, MasterRunner):
        _run.save(cpu_warning=environment.runner.cpu_warning_emitted)


@events.quitting.add_listener
def _exit_code(environment: Environment, **_kwargs) -> None:
    # Failed requests are results, not errors; only exceptions in the users' own code fail the process.
    broken = environment.runner.exceptions or log.unhandled_greenlet_exception or _plan_unreadable
    environment.process_exit_code = EXIT_CODE_USER_ERROR if broken else 0


# While a user waits for its sends to finish (at most the request timeout after the window).
DONE_POLL_S = 0.01


def wait_until_done(run: ProcessRun, done: Callable[[], bool]) -> None:
    """Sleep through the measured window (which an adaptive warm-up may move), then until ``done()``:
    Locust stops a user only between tasks."""
    while (left := run.window_closes - time.perf_counter()) > 0:
        gevent.sleep(min(left, 1.0))
    while not done():
        gevent.sleep(DONE_POLL_S)


class ClosedLoopUser(User):
    """Sends the next request as soon as the previous one answered (or at its pace), on one connection."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        run = current_run()
        self.endpoint = Endpoint(self.host)
        self.phase_run = run
        self.requests = run.requests_for_new_user(self.endpoint)
        self.period_s = 1.0 / run.phase.user_rate if run.phase.user_rate else 0.0

    @task
    def send_until_the_window_closes(self) -> None:
        run = self.phase_run
        if self.endpoint.tls:
            self.send_over_tls()
        else:
            flow = run.new_flow(self.requests, self.period_s)
            run.multiplexer(self.endpoint).add(flow)
            wait_until_done(run, lambda: flow.finished)
        raise StopUser()

    def send_over_tls(self) -> None:
        run, connection, requests = self.phase_run, self.phase_run.new_connection(self.endpoint), self.requests
        while (started := time.perf_counter()) < run.window_closes:
            run.finished(started, run.send(connection, next(requests)))
            if self.period_s:
                gevent.sleep(max(0.0, self.period_s - (time.perf_counter() - started)))
        connection.close()


class OpenLoopUser(User):
    """Sends this process's share of the arrival schedule, whatever the server's pace.

    The schedule goes to the process's multiplexer, whose pool of connections
    takes each send at its due time. Over https, a greenlet per send takes an
    idle ``KeepAliveConnection``; it sleeps until shortly before each due time
    and then yields until it is (gevent's timers wake up to a millisecond late).
    """

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        run = current_run()
        phase = run.phase
        self.in_flight_cap = max(1, phase.max_in_flight // phase.process_count)
        self.endpoint = Endpoint(self.host)
        self.phase_run = run
        self.requests = run.requests_for_new_user(self.endpoint)

    @task
    def send_schedule(self) -> None:
        run, phase = self.phase_run, self.phase_run.phase
        span = phase.longest_warmup + phase.duration
        offsets = arrival_offsets(phase.rate, phase.arrival, span, phase.seed, run.process_index, phase.process_count)
        due_times = run.due_times(offsets.tolist())
        if self.endpoint.tls:
            self.send_over_tls(due_times)
        else:
            schedule = Schedule(
                due_times,
                self.requests,
                self.in_flight_cap,
                phase.late_threshold_ms / 1000.0,
                on_late=run.count_late,
                on_dropped=run.count_dropped,
            )
            run.multiplexer(self.endpoint).add_schedule(schedule)
            wait_until_done(run, lambda: schedule.finished)
        raise StopUser()

    def send_over_tls(self, due_times: list[float]) -> None:
        run = self.phase_run
        spin_s = spin_window_s(due_times)
        idle: list[KeepAliveConnection] = []
        in_flight = Pool(self.in_flight_cap)
        for due in due_times:
            if (early := due - time.perf_counter() - spin_s) > 0:
                gevent.sleep(early)
            while time.perf_counter() < due:
                gevent.sleep(0)
            if in_flight.full():
                run.count_dropped(due)
                continue
            in_flight.spawn(self.send_due, due, next(self.requests), idle).link_exception(_report_greenlet_crash)
        in_flight.join()
        for connection in idle:
            connection.close()

    def send_due(self, due: float, wire: bytes, idle: list[KeepAliveConnection]) -> None:
        run = self.phase_run
        if (time.perf_counter() - due) * 1000.0 > run.phase.late_threshold_ms:
            run.count_late(due)
        connection = idle.pop() if idle else run.new_connection(self.endpoint)
        try:
            run.finished(due, run.send(connection, wire))
        finally:
            idle.append(connection)
