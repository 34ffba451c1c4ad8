"""Many connections on one epoll loop: the sending side of a Locust process's users.

One greenlet per virtual user, each blocking on its own socket, costs a
greenlet switch and an event-loop registration for every request; on one
core that caps a process at a third of what a C load generator sends. Here
each closed-loop user is a ``Flow`` (its connection, its request cycle, its
pace), an open loop is a ``Schedule`` (send times, and a pool of flows that
take the sends), and one loop drives them all: a batch of ready sockets is
handled per wake-up, in plain non-blocking calls.

Sends due at a set time (paced users, the open loop's schedule) would start
up to a millisecond late if the loop slept until then (timer granularity),
and an open loop counts latency from the due time. So the loop stops sleeping
shortly before a send is due and polls until it is: at most ``MAX_SPIN_S``,
shrunk at high rates to ``SPIN_SHARE`` of the interval between sends.

It uses the raw ``_socket`` type and the original ``select.epoll``, which
gevent leaves alone, and waits through ``select.select`` and ``time.sleep``,
which gevent makes cooperative inside Locust; in a plain process they block,
which is what the unit tests use. Plain HTTP only: TLS endpoints use
``connection.KeepAliveConnection``.
"""

from __future__ import annotations

import _socket
import errno
import heapq
import itertools
import os
import re
import select
import socket
import time
from collections.abc import Callable, Iterator

from gevent.monkey import get_original

from pytest_serving.rawhttp import RECEIVE_SIZE, AnswerReader, RemoteDisconnected, SocketAddress, WireError

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLL_FAILED = select.EPOLLERR | select.EPOLLHUP
# Errors after which a request that got no byte back on a kept-alive connection is sent again, once.
STALE_CONNECTION_ERRORS = (RemoteDisconnected, ConnectionResetError, BrokenPipeError)

#: Called with (send time, HTTP status or error name, answer time, tag), perf_counter seconds; the tag is
#: what the answer_tag pattern found in the answer's body ("" when none, or no pattern).
OnAnswer = Callable[[float, "int | str", float, str], None]
#: Called with (the request's bytes, its HTTP status, the answer's body) when bodies are kept.
OnBody = Callable[[bytes, int, bytes], None]
#: How far into an answer's body an answer_tag pattern is searched.
TAG_SEARCH_BYTES = 256
MAX_SPIN_S = 0.002
SPIN_SHARE = 0.1


class Flow:
    """One virtual user: sends ``requests`` one after another (at most one per ``period_s``) until ``closes``.

    The flow ends when its window closes or its requests run out, whichever comes first.
    """

    def __init__(self, requests: Iterator[bytes], closes: float, period_s: float) -> None:
        self.requests = requests
        self.closes = closes
        self.period_s = period_s
        self.socket: _socket.socket | None = None
        self.connecting = False
        self.events = 0
        self.reader = AnswerReader()
        self.request = b""
        self.wire = memoryview(b"")
        self.started = 0.0
        self.busy = False
        self.retried = False
        self.answered_on_socket = 0
        self.finished = False
        self.schedule: Schedule | None = None


class Schedule:
    """Open loop: one send due at each of ``due_times`` (perf_counter, ascending), whatever the server's pace.

    A send takes an idle connection of the schedule's pool, or opens one while
    fewer than ``max_in_flight`` exist; when all are busy it is dropped
    (``on_dropped(due)``). A send starting over ``late_s`` after its due time is
    late (``on_late(due)``). Latency counts from the due time.
    """

    def __init__(
        self,
        due_times: list[float],
        requests: Iterator[bytes],
        max_in_flight: int,
        late_s: float,
        on_late: Callable[[float], None],
        on_dropped: Callable[[float], None],
    ) -> None:
        self.due_times = due_times
        self.requests = requests
        self.max_in_flight = max_in_flight
        self.late_s = late_s
        self.on_late = on_late
        self.on_dropped = on_dropped
        self.sent = 0
        self.pool: list[Flow] = []
        self.idle: list[Flow] = []

    @property
    def spin_s(self) -> float:
        return spin_window_s(self.due_times)

    @property
    def exhausted(self) -> bool:
        return self.sent >= len(self.due_times)

    @property
    def finished(self) -> bool:
        """Every send made and answered (or failed)."""
        return self.exhausted and not any(flow.busy for flow in self.pool)


class Multiplexer:
    """Drives every ``Flow`` of one endpoint; ``on_answer`` gets each request's outcome and times,
    ``on_body`` (when given) each answered request's bytes, status and body, for the answer checks.

    An answer's time is when the wait that returned it ended, not when the loop
    got round to it: in a batch of sixty ready sockets the last is read over a
    millisecond later, which would be the generator's delay, not the server's.
    """

    def __init__(
        self,
        endpoint: SocketAddress,
        timeout: float,
        on_answer: OnAnswer,
        on_body: OnBody | None = None,
        answer_tag: re.Pattern[bytes] | None = None,
    ) -> None:
        if endpoint.tls:
            raise ValueError("the multiplexer speaks plain HTTP; use KeepAliveConnection for https")
        self.endpoint = endpoint
        self.timeout = timeout
        self._on_answer = on_answer
        self._on_body = on_body
        self._answer_tag = answer_tag
        self._epoll = get_original("select", "epoll")()
        # Written by ``add`` so that a loop asleep in its wait starts a new flow at once.
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, EPOLLIN)
        self._flows: dict[int, Flow] = {}
        self._active: list[Flow] = []
        self._due: list[tuple[float, int, Flow | Schedule]] = []
        self._order = itertools.count()
        self._schedules: list[Schedule] = []
        self._spin_s = 0.0
        #: When ``run`` may return (perf_counter); an adaptive warm-up moves it once the window opens.
        self.until = 0.0

    def add(self, flow: Flow) -> None:
        """Start a flow now (it sends its first request on the loop's next turn)."""
        self._active.append(flow)
        heapq.heappush(self._due, (time.perf_counter(), next(self._order), flow))
        os.eventfd_write(self._wake_fd, 1)

    def add_schedule(self, schedule: Schedule) -> None:
        """Start an open loop: its sends go out at their due times."""
        self._schedules.append(schedule)
        self._spin_s = max(self._spin_s, schedule.spin_s)
        if schedule.due_times:
            heapq.heappush(self._due, (schedule.due_times[0], next(self._order), schedule))
        os.eventfd_write(self._wake_fd, 1)

    def run(self, until: float) -> None:
        """Drive flows and schedules until ``until`` (perf_counter; later changes to ``self.until`` count) has
        passed and every one added has finished."""
        self.until = until
        # Resolved here, not in __init__: under gevent the lookup yields, and every user would start its own loop.
        endpoint = self.endpoint
        self._family, self._kind, self._protocol, _, self._address = socket.getaddrinfo(
            endpoint.host, endpoint.port, 0, socket.SOCK_STREAM
        )[0]
        poll, due, clock = self._epoll.poll, self._due, time.perf_counter
        check_every = min(1.0, self.timeout / 10)
        next_check = clock() + check_every
        try:
            while True:
                now = clock()
                while due and due[0][0] <= now:
                    due_time, _, item = heapq.heappop(due)
                    if isinstance(item, Schedule):
                        self._send_scheduled(item, due_time)
                    else:
                        self._begin(item)
                if now >= self.until and self._all_finished():
                    return
                events = poll(0)
                if events:
                    time.sleep(0)  # under gevent: let the process's other greenlets run
                else:
                    wake = min(next_check, due[0][0]) if due else next_check
                    if now < self.until:
                        wake = min(wake, self.until)
                    if due and due[0][0] - now <= self._spin_s:
                        time.sleep(0)  # due very soon: poll again rather than oversleep
                    else:
                        select.select([self._epoll.fileno()], [], [], max(0.0, wake - self._spin_s - now))
                    events = poll(0)
                ready_at = clock()
                for fd, mask in events:
                    flow = self._flows.get(fd)
                    if flow is not None:
                        self._on_event(flow, mask, ready_at)
                    elif fd == self._wake_fd:
                        os.eventfd_read(self._wake_fd)
                if (now := clock()) >= next_check:
                    next_check = now + check_every
                    self._expire_overdue(now)
        finally:
            for flow in self._active:
                flow.finished = True
                self._close(flow)
            self._epoll.close()
            os.close(self._wake_fd)

    def _all_finished(self) -> bool:
        closed_loops = all(flow.finished for flow in self._active if flow.schedule is None)
        return closed_loops and all(schedule.finished for schedule in self._schedules)

    def _send_scheduled(self, schedule: Schedule, due_time: float) -> None:
        schedule.sent += 1
        if not schedule.exhausted:
            heapq.heappush(self._due, (schedule.due_times[schedule.sent], next(self._order), schedule))
        if schedule.idle:
            flow = schedule.idle.pop()
        elif len(schedule.pool) < schedule.max_in_flight:
            flow = Flow(schedule.requests, schedule.due_times[-1], 0.0)
            flow.schedule = schedule
            schedule.pool.append(flow)
            self._active.append(flow)
        else:
            schedule.on_dropped(due_time)
            return
        if time.perf_counter() - due_time > schedule.late_s:
            schedule.on_late(due_time)
        flow.request = next(schedule.requests)
        flow.wire = memoryview(flow.request)
        flow.retried = False
        flow.reader.start(self._on_body is not None or self._answer_tag is not None)
        flow.busy = True
        flow.started = due_time  # latency counts from the schedule, not from when the send began
        self._send_or_connect(flow)

    def _begin(self, flow: Flow) -> None:
        """Send the flow's next request, or finish it when its time or its requests are up."""
        request = next(flow.requests, None) if time.perf_counter() < flow.closes else None
        if request is None:
            flow.finished = True
            self._close(flow)
            return
        flow.request = request
        flow.wire = memoryview(flow.request)
        flow.retried = False
        flow.reader.start(self._on_body is not None or self._answer_tag is not None)
        flow.busy = True
        flow.started = time.perf_counter()
        self._send_or_connect(flow)

    def _send_or_connect(self, flow: Flow) -> None:
        if flow.socket is None:
            self._connect(flow)
        elif not flow.connecting:
            self._write(flow)

    def _connect(self, flow: Flow) -> None:
        sock = _socket.socket(self._family, self._kind, self._protocol)
        sock.setblocking(False)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        flow.socket, flow.connecting, flow.answered_on_socket = sock, True, 0
        self._flows[sock.fileno()] = flow
        code = sock.connect_ex(self._address)
        if code not in (0, errno.EINPROGRESS):
            self._fail(flow, _error_name(code))
            return
        self._watch(flow, EPOLLOUT)

    def _on_event(self, flow: Flow, mask: int, ready_at: float) -> None:
        if flow.connecting:
            code = flow.socket.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if code:
                self._fail(flow, _error_name(code))
                return
            flow.connecting = False
            self._write(flow)
        elif mask & EPOLLOUT and flow.wire:
            self._write(flow)
        elif mask & (EPOLLIN | EPOLL_FAILED):
            self._read(flow, ready_at)

    def _write(self, flow: Flow) -> None:
        try:
            while flow.wire:
                sent = flow.socket.send(flow.wire)
                flow.wire = flow.wire[sent:]
        except BlockingIOError:
            self._watch(flow, EPOLLIN | EPOLLOUT)
            return
        except OSError as error:
            self._fail(flow, error)
            return
        self._watch(flow, EPOLLIN)

    def _read(self, flow: Flow, ready_at: float) -> None:
        try:
            data = flow.socket.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            self._fail(flow, error)
            return
        if not flow.busy:
            self._close(flow)  # the server closed (or wrote to) an idle kept-alive connection
            return
        try:
            complete = flow.reader.feed(data) if data else flow.reader.feed_eof()
        except (WireError, RemoteDisconnected) as error:
            self._fail(flow, error)
            return
        if complete:
            self._answered(flow, flow.reader.status, ready_at)

    def _answered(self, flow: Flow, outcome: int | str, ended: float) -> None:
        flow.busy = False
        self._on_answer(flow.started, outcome, ended, self._tag(flow, outcome))
        if isinstance(outcome, int):
            if self._on_body is not None:
                self._on_body(flow.request, outcome, bytes(flow.reader.body))
            flow.answered_on_socket += 1
            if not flow.reader.keep_alive:
                self._close(flow)
        if flow.schedule is not None:
            flow.schedule.idle.append(flow)
            return
        next_send = flow.started + flow.period_s
        if next_send > time.perf_counter() or isinstance(outcome, str):
            # After a failure, on the loop's next turn: a server refusing at once must not recurse here.
            heapq.heappush(self._due, (next_send, next(self._order), flow))
        else:
            self._begin(flow)

    def _tag(self, flow: Flow, outcome: int | str) -> str:
        """What the answer_tag pattern's first group found at the start of the answer's body, or ""."""
        if self._answer_tag is None or not isinstance(outcome, int):
            return ""
        found = self._answer_tag.search(flow.reader.body, 0, TAG_SEARCH_BYTES)
        return found.group(1).decode("utf-8", "replace") if found else ""

    def _fail(self, flow: Flow, error: OSError | WireError | str) -> None:
        stale = (
            isinstance(error, STALE_CONNECTION_ERRORS)
            and flow.answered_on_socket > 0
            and flow.reader.received == 0
            and not flow.retried
        )
        self._close(flow)
        if stale:
            # A kept-alive connection the server closed while idle: send the request again, once.
            flow.retried = True
            flow.wire = memoryview(flow.request)
            self._connect(flow)
            return
        self._answered(flow, error if isinstance(error, str) else type(error).__name__, time.perf_counter())

    def _expire_overdue(self, now: float) -> None:
        for flow in self._active:
            if flow.busy and now - flow.started > self.timeout:
                self._fail(flow, "TimeoutError")

    def _watch(self, flow: Flow, events: int) -> None:
        if flow.events == events:
            return
        if flow.events:
            self._epoll.modify(flow.socket.fileno(), events)
        else:
            self._epoll.register(flow.socket.fileno(), events)
        flow.events = events

    def _close(self, flow: Flow) -> None:
        if flow.socket is None:
            return
        self._flows.pop(flow.socket.fileno(), None)
        if flow.events:
            self._epoll.unregister(flow.socket.fileno())
        flow.socket.close()
        flow.socket, flow.connecting, flow.events = None, False, 0


def spin_window_s(due_times: list[float]) -> float:
    """How long before a due send to stop sleeping and poll: ``SPIN_SHARE`` of the mean interval,
    at most ``MAX_SPIN_S``."""
    span = due_times[-1] - due_times[0] if len(due_times) > 1 else 1.0
    return min(MAX_SPIN_S, SPIN_SHARE * span / max(1, len(due_times) - 1))


def _error_name(code: int) -> str:
    """The exception name Python gives an errno, e.g. ConnectionRefusedError."""
    return type(OSError(code, os.strerror(code))).__name__
