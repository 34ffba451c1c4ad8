"""The locustfile that the runner starts in its own Locust processes.

It is never imported by the pytest process (Locust monkey-patches the standard
library with gevent on import). A single process reads the run plan named by
``--serving-plan``, records every measured request itself and writes its
samples to ``<out_dir>/raw-0.npz`` when the test stops. In a distributed run
the master (``MasterSide``) reads the plan and sends it, with each worker's
share, over Locust's message channel (``channel``); each worker
(``WorkerSide``) checks the target, sends its share, and sends its result
files back the same way once its window closed; the master writes them as
``raw-<share>.npz`` into its own out_dir and ends the run. Workers need no path
in common with the master, so they may run anywhere
(``pytest-serving load-worker``). A worker lost before its samples arrived,
one of another version, or one that never came fails the phase with a
``fault`` file naming it, which the runner raises.

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
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import gevent
from gevent.pool import Pool
from locust import User, events, log, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

import pytest_serving
from pytest_serving import progress
from pytest_serving.files import write_atomically
from pytest_serving.load import channel
from pytest_serving.load.answers import AnswerKeeper, answers_file
from pytest_serving.load.connection import Endpoint, KeepAliveConnection
from pytest_serving.load.interleave import ScheduledRequests
from pytest_serving.load.multiplexer import Flow, Multiplexer, Schedule, spin_window_s
from pytest_serving.load.phase import FAULT_FILE, WINDOW_OPEN_FILE, RunPlan, arrival_offsets
from pytest_serving.load.safety import UnsafeTargetError, check_load_target
from pytest_serving.load.stats import SampleRecorder
from pytest_serving.load.warmup import WarmupWatch

# How long after the measured window closes a single process stops its run; a worker waits this
# much beyond the request timeout for its last answers before it sends its samples.
STOP_MARGIN_S = 0.5
#: How often an adaptive warm-up looks at its windows.
SETTLE_CHECK_S = 0.25
#: How often a sending process reports its running rate and p95 (over that span) to the session's progress.
PROGRESS_EVERY_S = 5.0
EXIT_CODE_USER_ERROR = 3
#: How often a worker tells the master how many measured requests it holds, and the master looks for lost workers.
PROGRESS_INTERVAL_S = 0.5
#: How long the master waits, at the start, for the hello of a worker that already connected.
HELLO_WAIT_S = 3.0
#: Beyond the phase and its last request's timeout: time for the workers' result files to arrive.
RESULTS_MARGIN_S = 30.0
#: A worker whose master sent no heartbeat (one a second) for this long quits, so that ``pytest-serving
#: load-worker`` attaches a fresh worker to the next phase's master (Locust's own limit is 60 s).
MASTER_SILENCE_S = 10.0


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
        #: The measured window's length: the phase's duration, longer while too few requests were sent.
        self.duration = phase.duration
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
        return 0.0 <= offset_s < self.duration

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
        return self.window_opens + self.duration

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
        self.move_close(closes)
        for due_times in self._due_lists:
            del due_times[bisect.bisect_left(due_times, closes) :]

    def move_close(self, closes: float) -> None:
        """Flows and the sending loop stop at ``closes``, wherever the window closes."""
        for flow in self._flows:
            flow.closes = closes
        if self._multiplexer is not None:
            self._multiplexer.until = closes

    def measure_enough(self, runner) -> None:
        """Grow the measured window while it holds fewer than ``min_requests`` sends, up to ``max_duration``:
        a second before each close, the rate so far says how much longer the rest needs (with 10 % to spare)."""
        phase = self.phase
        while True:
            left = self.window_closes - 1.0 - time.perf_counter()
            if left > 0:
                gevent.sleep(min(left, SETTLE_CHECK_S))  # an adaptive warm-up may move the window meanwhile
                continue
            sent = self.recorder.count
            elapsed = time.perf_counter() - self.window_opens
            if sent >= phase.min_requests or self.duration >= phase.max_duration or elapsed <= 0:
                return
            rate = sent / elapsed
            more = (phase.min_requests - sent) / rate * 1.1 if rate > 0 else 1.0
            self.duration = min(phase.max_duration, self.duration + max(more, 1.0))
            self.move_close(self.window_closes)
            self.schedule_quit(runner, self.window_closes - time.perf_counter() + STOP_MARGIN_S)

    def settle(self, runner) -> None:
        """Watch the warm-up's windows; open the measured window once they settle (or at the maximum)."""
        while True:
            gevent.sleep(SETTLE_CHECK_S)
            done, why = self.warmup_watch.verdict(time.perf_counter() - self.started)
            if done:
                break
        self.open_window(why)
        (Path(self.plan.out_dir) / WINDOW_OPEN_FILE).touch()
        self.schedule_quit(runner, self.duration + STOP_MARGIN_S)

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

    def report_progress(self) -> None:
        """Every ``PROGRESS_EVERY_S``: the answers per second and p95 of the last span, or the warm-up's time."""
        while True:
            gevent.sleep(PROGRESS_EVERY_S)
            offset = self.window_offset(time.perf_counter())
            if offset < 0:
                progress.live(text=f"warming up ({time.perf_counter() - self.started:.0f} s)")
            else:
                progress.live(**self.recorder.recent(offset, PROGRESS_EVERY_S))

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
        measured_s = self.duration if self.duration != self.phase.duration else None
        self.recorder.samples(self.started_at, cpu_warning, warmup_s, self.warmup_note, measured_s).save(path)


class WorkerSide:
    """A worker's end of the channel: introduces itself, takes the plan and its share, sends its results back."""

    def __init__(self, runner: WorkerRunner, name: str, allow_remote: bool) -> None:
        self.runner = runner
        self.allow_remote = allow_remote
        self.plan: RunPlan | None = None
        self.share = 0
        self.refused = False
        self._incoming: channel.Reassembly | None = None
        runner.register_message(channel.PLAN, self.on_plan)
        runner.register_message(channel.REFUSED, self.on_refused)
        runner.send_message(channel.HELLO, {"name": name, "version": pytest_serving.__version__})
        gevent.spawn(self.watch_master).link_exception(_report_greenlet_crash)

    def watch_master(self) -> None:
        """Quit once the master fell silent: it ended (a worker that attached to a master on its way out
        would otherwise wait a minute) or died."""
        while True:
            gevent.sleep(1.0)
            last = self.runner.last_heartbeat_timestamp
            if last is not None and time.time() - last > MASTER_SILENCE_S:
                logger.warning("no heartbeat from the master for %g s; attaching again", MASTER_SILENCE_S)
                self.runner.quit()
                return

    def on_plan(self, msg, **_kwargs) -> None:
        if msg.data.get("seq") == 0:
            self._incoming = channel.Reassembly(msg.data.get("phase", ""))
        if self._incoming is None:
            return
        files = self._incoming.add("the master", msg.data)
        if files is None:
            return
        plan = RunPlan.from_json(files["plan.json"].decode())
        try:
            check_load_target(files["host"].decode(), started_by_plugin=False, allow_remote=self.allow_remote)
        except UnsafeTargetError as error:
            reason = f"{error} (start the worker with --allow-remote-load if you own it)"
            self.runner.send_message(channel.REFUSED, {"phase": plan.phase_id, "reason": reason})
            self.refuse(reason)
            return
        self.plan = replace(plan, out_dir=tempfile.mkdtemp(prefix="pytest-serving-worker-"))
        self.share = int(files["share"])

    def on_refused(self, msg, **_kwargs) -> None:
        self.refuse(str(msg.data.get("reason", "refused by the master")))

    def refuse(self, reason: str) -> None:
        logger.error("pytest-serving load worker stops: %s", reason)
        self.refused = True
        gevent.spawn(self.runner.quit)

    def start(self) -> ProcessRun | None:
        """This worker's share of the phase, started; None (and the worker quits) without a plan."""
        if self.plan is None:
            logger.error("the master started the phase before its plan arrived; quitting")
            gevent.spawn(self.runner.quit)
            return None
        run = ProcessRun(self.plan, process_index=self.share)
        gevent.spawn(run.watch_timeouts).link_exception(_report_greenlet_crash)
        if progress.current():
            gevent.spawn(run.report_progress).link_exception(_report_greenlet_crash)
        reporter = gevent.spawn(self.report_progress, run)
        gevent.spawn(self.deliver, run, reporter).link_exception(_report_greenlet_crash)
        return run

    def report_progress(self, run: ProcessRun) -> None:
        while True:
            self.runner.send_message(channel.PROGRESS, {"phase": run.plan.phase_id, "recorded": run.recorder.count})
            gevent.sleep(PROGRESS_INTERVAL_S)

    def deliver(self, run: ProcessRun, reporter: gevent.Greenlet) -> None:
        """Once the window closed and the users finished (or their last request timed out), send the result files."""
        gevent.sleep(max(0.0, run.window_closes - time.perf_counter()))
        give_up = time.perf_counter() + run.phase.request_timeout + STOP_MARGIN_S
        while self.runner.user_count and time.perf_counter() < give_up:
            gevent.sleep(DONE_POLL_S)
        reporter.kill()
        run.save(cpu_warning=self.runner.cpu_warning_emitted)
        out_dir = Path(run.plan.out_dir)
        files = {path.name: path.read_bytes() for path in out_dir.iterdir()}
        shutil.rmtree(out_dir, ignore_errors=True)
        for data in channel.chunk_messages(run.plan.phase_id, files):
            self.runner.send_message(channel.RESULTS, data)


class MasterSide:
    """The master's end of the channel: hands out the plan and shares, collects the result files, names faults."""

    def __init__(self, runner: MasterRunner, plan: RunPlan) -> None:
        self.runner = runner
        self.plan = plan
        self.names: dict[str, str] = {}
        self.shares: dict[str, int] = {}
        self.progress: dict[str, channel.Progress] = {}
        self.results: dict[str, dict[str, bytes]] = {}
        self.fault: str | None = None
        self.started = False
        self._reassembly = channel.Reassembly(plan.phase_id)
        runner.register_message(channel.HELLO, self.on_hello)
        runner.register_message(channel.PROGRESS, self.on_progress)
        runner.register_message(channel.RESULTS, self.on_results)
        runner.register_message(channel.REFUSED, self.on_refused)
        gevent.spawn_later(plan.phase.worker_timeout, self.check_arrived).link_exception(_report_greenlet_crash)

    def name(self, client_id: str) -> str:
        return self.names.get(client_id, client_id)

    def on_hello(self, msg, **_kwargs) -> None:
        name = str(msg.data.get("name", msg.node_id))
        self.names[msg.node_id] = name
        problem = channel.version_mismatch(name, str(msg.data.get("version", "")), pytest_serving.__version__)
        if problem is not None:
            self.runner.send_message(channel.REFUSED, {"reason": problem}, client_id=msg.node_id)
            self.fail(problem)

    def on_progress(self, msg, **_kwargs) -> None:
        if msg.data.get("phase") == self.plan.phase_id and msg.node_id in self.shares:
            self.progress[msg.node_id] = channel.Progress(int(msg.data["recorded"]), time.monotonic())

    def on_refused(self, msg, **_kwargs) -> None:
        if msg.data.get("phase") == self.plan.phase_id:
            self.fail(f"Locust worker {self.name(msg.node_id)} refused the phase: {msg.data.get('reason')}")

    def on_results(self, msg, **_kwargs) -> None:
        try:
            files = self._reassembly.add(self.name(msg.node_id), msg.data)
            if files is None:
                return
            if msg.node_id not in self.shares:
                raise channel.ChannelError(f"results from {self.name(msg.node_id)}, which has no share of this phase")
            channel.check_result_files(files, self.shares[msg.node_id], self.name(msg.node_id))
        except channel.ChannelError as error:
            self.fail(str(error))
            return
        self.results[msg.node_id] = files

    def fail(self, message: str) -> None:
        """End the phase with ``message`` as its failure (the first one wins)."""
        if self.fault is not None:
            return
        self.fault = message
        logger.error(message)
        write_atomically(Path(self.plan.out_dir) / FAULT_FILE, lambda path: path.write_text(message))
        gevent.spawn(self.runner.quit)

    def check_arrived(self) -> None:
        if self.started or self.fault is not None:
            return
        options = self.runner.environment.parsed_options
        address = f"{options.master_bind_host}:{options.master_bind_port}"
        arrived = [self.name(client.id) for client in self.runner.clients.all]
        self.fail(
            f"waited {self.plan.phase.worker_timeout:g} s for {self.plan.phase.process_count} Locust worker(s) "
            f"at {address}; {len(arrived)} arrived{': ' + ', '.join(arrived) if arrived else ''}. Start each with "
            f"`pytest-serving load-worker --master <this machine's address>:{options.master_bind_port}`"
        )

    def start(self) -> None:
        """Give every connected worker the plan and its share of the phase, then watch them until the end."""
        self.started = True
        clients = [client.id for client in self.runner.clients.all if client.state != STATE_MISSING]
        hello_by = time.monotonic() + HELLO_WAIT_S
        while any(client_id not in self.names for client_id in clients) and time.monotonic() < hello_by:
            gevent.sleep(0.05)
        silent = [client_id for client_id in clients if client_id not in self.names]
        if silent:
            self.fail(f"Locust worker(s) {', '.join(silent)} never said hello: not pytest-serving load workers")
            return
        expected = self.plan.phase.process_count
        if len(clients) != expected:
            self.fail(f"expected {expected} Locust worker(s), {len(clients)} connected: {self.roll(clients)}")
            return
        host = self.runner.environment.host or ""
        plan_json = self.plan.to_json().encode()
        for share, client_id in enumerate(sorted(clients, key=self.runner.get_worker_index)):
            self.shares[client_id] = share
            files = {"plan.json": plan_json, "share": str(share).encode(), "host": host.encode()}
            for data in channel.chunk_messages(self.plan.phase_id, files):
                self.runner.send_message(channel.PLAN, data, client_id=client_id)
        gevent.spawn(self.watch).link_exception(_report_greenlet_crash)

    def roll(self, client_ids: list[str]) -> str:
        return ", ".join(self.name(client_id) for client_id in client_ids)

    def watch(self) -> None:
        """Until every share's results are in: fail on a lost worker or at the deadline; then write them and quit."""
        phase = self.plan.phase
        deadline = time.monotonic() + phase.warmup + phase.duration + phase.request_timeout + RESULTS_MARGIN_S
        while self.fault is None:
            waiting = [client_id for client_id in self.shares if client_id not in self.results]
            if not waiting:
                self.write_results()
                self.runner.quit()
                return
            for client_id in waiting:
                client = self.runner.clients.get(client_id)
                if client is None or client.state == STATE_MISSING:
                    how = "quit" if client is None else "stopped answering (disconnected or died)"
                    progress = self.progress.get(client_id, channel.Progress())
                    self.fail(channel.lost_worker_error(self.name(client_id), progress, time.monotonic(), how))
                    return
            if time.monotonic() > deadline:
                self.fail(f"no samples from Locust worker(s) {self.roll(waiting)} by the phase's deadline")
                return
            gevent.sleep(PROGRESS_INTERVAL_S / 5)

    def write_results(self) -> None:
        for files in self.results.values():
            for name, content in files.items():
                write_atomically(
                    Path(self.plan.out_dir) / name, lambda path, content=content: path.write_bytes(content)
                )
        if self._reassembly.discarded:
            logger.warning("dropped %d chunk(s) of an earlier phase", self._reassembly.discarded)


_run: ProcessRun | None = None
_plan_unreadable = False
_worker: WorkerSide | None = None
_master: MasterSide | None = None
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
    parser.add_argument(
        "--serving-allow-remote-load",
        action="store_true",
        include_in_web_ui=False,
        help="worker: send load to a target that is not a loopback address",
    )
    parser.add_argument(
        "--serving-worker-name", default="", include_in_web_ui=False, help="worker: its name in the master's errors"
    )


def _read_plan(environment: Environment) -> RunPlan | None:
    global _plan_unreadable
    try:
        return RunPlan.read(environment.parsed_options.serving_plan)
    except (OSError, ValueError, KeyError, TypeError):
        logger.exception("pytest-serving cannot read its run plan; quitting")
        _plan_unreadable = True
        gevent.spawn(environment.runner.quit)
        return None


@events.init.add_listener
def _connect(environment: Environment, **_kwargs) -> None:
    global _worker, _master
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        options = environment.parsed_options
        name = options.serving_worker_name or f"{socket.gethostname()} pid {os.getpid()}"
        _worker = WorkerSide(runner, name, allow_remote=options.serving_allow_remote_load)
    elif isinstance(runner, MasterRunner) and (plan := _read_plan(environment)) is not None:
        _master = MasterSide(runner, plan)


@events.test_start.add_listener
def _start(environment: Environment, **_kwargs) -> None:
    global _run
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        _run = _worker.start()
        return
    if isinstance(runner, MasterRunner) and _master is None:
        return  # its plan was unreadable: it is quitting
    plan = _master.plan if _master is not None else _read_plan(environment)
    if plan is None:
        return
    # Tells the runner when to scrape the server's metrics, so warm-up stays out of them.
    window_open = (Path(plan.out_dir) / WINDOW_OPEN_FILE).touch
    if isinstance(runner, MasterRunner):
        # The master quits once every worker's results are in (MasterSide.watch).
        _master.start()
        gevent.spawn_later(plan.phase.warmup, window_open)
        return
    _run = ProcessRun(plan, process_index=0)
    gevent.spawn(_run.watch_timeouts).link_exception(_report_greenlet_crash)
    if progress.current():
        gevent.spawn(_run.report_progress).link_exception(_report_greenlet_crash)
    phase = plan.phase
    _run.schedule_quit(runner, phase.longest_warmup + phase.duration + STOP_MARGIN_S)
    if _run.warmup_watch is not None:
        gevent.spawn(_run.settle, runner).link_exception(_report_greenlet_crash)
    else:
        gevent.spawn_later(phase.warmup, window_open)
    if phase.min_requests is not None:
        gevent.spawn(_run.measure_enough, runner).link_exception(_report_greenlet_crash)


@events.test_stop.add_listener
def _stop(environment: Environment, **_kwargs) -> None:
    # A worker sends its results over the channel (WorkerSide.deliver); the master writes them.
    if _run is not None and not isinstance(environment.runner, WorkerRunner):
        _run.save(cpu_warning=environment.runner.cpu_warning_emitted)


@events.quitting.add_listener
def _exit_code(environment: Environment, **_kwargs) -> None:
    # Failed requests are results, not errors; only exceptions in the users' own code fail the process.
    if _worker is not None and _worker.refused:
        environment.process_exit_code = channel.EXIT_CODE_REFUSED
        return
    broken = environment.runner.exceptions or log.unhandled_greenlet_exception or _plan_unreadable
    if _master is not None and _master.fault is not None:
        broken = True
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
