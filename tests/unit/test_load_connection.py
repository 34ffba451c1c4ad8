"""The load engine's HTTP/1.1: the answer reader alone, then the connection and the multiplexer
against scripted peers."""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pytest_serving.load.connection import KeepAliveConnection
from pytest_serving.load.multiplexer import Flow, Multiplexer, Schedule
from pytest_serving.protocols.base import HttpRequest
from pytest_serving.rawhttp import AnswerReader, RemoteDisconnected, SocketAddress, WireError, encode_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CLOSE = object()  # in a script: close the connection now, without waiting for another request
PAUSE = 0.05


class ScriptedServer:
    """Answers the n-th accepted connection's requests with the n-th script: raw answers, lists sent in pieces.

    A script's answers go to its connection's requests in order; CLOSE closes
    the connection at once; a script that ends otherwise keeps the connection
    until the client leaves. Connections are served side by side.
    """

    def __init__(self, scripts: list[list]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.scripts = scripts
        self.requests: list[list[bytes]] = [[] for _ in scripts]
        self.handlers: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        for index, script in enumerate(self.scripts):
            connection, _ = self.listener.accept()
            handler = threading.Thread(target=self._serve, args=(connection, script, index), daemon=True)
            handler.start()
            self.handlers.append(handler)
        self.listener.close()
        for handler in self.handlers:
            handler.join()

    def _serve(self, connection: socket.socket, script: list, index: int) -> None:
        with connection:
            for answer in script:
                if answer is CLOSE:
                    return
                request = read_request(connection)
                if request is None:
                    return
                self.requests[index].append(request)
                for piece in answer if isinstance(answer, list) else [answer]:
                    connection.sendall(piece)
                    time.sleep(PAUSE if isinstance(answer, list) else 0)
            with contextlib.suppress(OSError):
                while connection.recv(65536):
                    pass


def read_request(connection: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


@contextmanager
def serving(*scripts: list) -> Iterator[tuple[ScriptedServer, KeepAliveConnection]]:
    server = ScriptedServer(list(scripts))
    connection = KeepAliveConnection(SocketAddress(server.url), timeout=2.0)
    try:
        yield server, connection
    finally:
        connection.close()
        server.thread.join(5)


GET = encode_request(HttpRequest("GET", "/ready"), "127.0.0.1")


def test_content_length_answers_share_one_connection():
    with serving([OK, b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!"]) as (server, connection):
        assert connection.send(GET) == 200
        assert connection.send(GET) == 404
    assert [len(requests) for requests in server.requests] == [2]


def test_chunked_answer_in_pieces_with_trailers():
    chunked = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"lo\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n",
        b"\r\n",
    ]
    with serving([chunked, OK]) as (server, connection):
        assert connection.send(GET) == 200
        assert connection.send(GET) == 200  # the stream stayed in step
    assert [len(requests) for requests in server.requests] == [2]


def test_connection_close_opens_a_new_connection():
    closing = b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    with serving([closing], [OK]) as (server, connection):
        assert connection.send(GET) == 503
        assert connection.send(GET) == 200
    assert [len(requests) for requests in server.requests] == [1, 1]


def test_http_1_0_answer_without_length_ends_with_the_connection():
    with serving([[b"HTTP/1.0 200 OK\r\n\r\npartial ", b"body"], CLOSE], [OK]) as (server, connection):
        assert connection.send(GET) == 200
        assert connection.send(GET) == 200
    assert [len(requests) for requests in server.requests] == [1, 1]


def test_informational_answer_is_skipped():
    with serving([b"HTTP/1.1 100 Continue\r\n\r\n" + OK]) as (_, connection):
        assert connection.send(GET) == 200


def test_kept_alive_connection_closed_while_idle_is_retried_once():
    with serving([OK, CLOSE], [OK]) as (server, connection):
        assert connection.send(GET) == 200
        assert connection.send(GET) == 200
    assert [len(requests) for requests in server.requests] == [1, 1]


def test_connection_closed_mid_answer_is_a_failure_not_a_retry():
    with serving([OK, [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"], CLOSE]) as (server, connection):
        assert connection.send(GET) == 200
        assert connection.send(GET) == "RemoteDisconnected"
    assert [len(requests) for requests in server.requests] == [2]


def test_first_request_on_a_connection_is_never_retried():
    with serving([CLOSE]) as (_, connection):
        assert connection.send(GET) in ("RemoteDisconnected", "ConnectionResetError", "BrokenPipeError")


def test_garbage_answer_is_a_protocol_error():
    with serving([b"SSH-2.0-OpenSSH\r\n\r\n"]) as (_, connection):
        assert connection.send(GET) == "WireError"


def test_bad_content_length_is_a_protocol_error():
    with serving([b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n"]) as (_, connection):
        assert connection.send(GET) == "WireError"


def test_watchdog_aborts_an_overdue_exchange_as_a_timeout():
    server = ScriptedServer([[OK]])
    idle = KeepAliveConnection(SocketAddress(server.url), timeout=0.2)
    assert idle.send(GET) == 200
    assert not idle.expire_if_overdue(time.perf_counter() + 10)  # between requests: nothing to abort
    idle.close()
    server_then_silent = ScriptedServer([[]])
    connection = KeepAliveConnection(SocketAddress(server_then_silent.url), timeout=0.2)
    expired: list[bool] = []

    def watchdog() -> None:
        time.sleep(0.1)
        expired.append(connection.expire_if_overdue(time.perf_counter()))  # not yet overdue
        time.sleep(0.3)
        expired.append(connection.expire_if_overdue(time.perf_counter()))

    watching = threading.Thread(target=watchdog)
    watching.start()
    assert connection.send(GET) == "TimeoutError"
    watching.join()
    assert expired == [False, True]
    connection.close()
    for finished in (server, server_then_silent):
        finished.thread.join(5)


def test_refused_connection_names_the_error():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    connection = KeepAliveConnection(SocketAddress(f"http://127.0.0.1:{port}"), timeout=1.0)
    assert connection.send(GET) == "ConnectionRefusedError"


def test_encoded_request_has_host_length_prefix_and_headers():
    request = HttpRequest("POST", "/v2/models/m/infer", b"\x00\x01", {"Content-Type": "application/octet-stream"})
    endpoint = SocketAddress("http://127.0.0.1:8080/base/")
    assert endpoint.encode(request) == (
        b"POST /base/v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 2\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n\x00\x01"
    )


def test_encoded_request_keeps_the_callers_host_and_length():
    request = HttpRequest("POST", "/p", b"ab", {"host": "example", "content-length": "2"})
    assert encode_request(request, "127.0.0.1:1") == b"POST /p HTTP/1.1\r\nhost: example\r\ncontent-length: 2\r\n\r\nab"


@pytest.mark.parametrize("url", ["ftp://host/", "127.0.0.1:80", "http:///path"])
def test_endpoint_refuses_what_is_not_an_http_url(url):
    with pytest.raises(ValueError, match="not an http"):
        SocketAddress(url)


# The answer reader alone: every answer must be read the same whole and one byte at a time.

READABLE_ANSWERS = {
    "content-length": (OK, 200, True),
    "empty body": (b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n", 204, True),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, True),
    "interim then final": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        201,
        True,
    ),
    "connection close": (b"HTTP/1.1 400 Bad\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno", 400, False),
    "http/1.0 keep-alive": (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", 200, True),
}


@pytest.mark.parametrize("name", READABLE_ANSWERS)
@pytest.mark.parametrize("piece_size", [1, 7, 1 << 20])
def test_reader_finds_the_end_in_any_split(name, piece_size):
    answer, status, keep_alive = READABLE_ANSWERS[name]
    reader = AnswerReader()
    pieces = [answer[at : at + piece_size] for at in range(0, len(answer), piece_size)]
    completions = [reader.feed(piece) for piece in pieces]
    assert completions == [False] * (len(pieces) - 1) + [True]
    assert (reader.status, reader.keep_alive, reader.received) == (status, keep_alive, len(answer))


def test_reader_answer_without_length_ends_at_close():
    reader = AnswerReader()
    assert not reader.feed(b"HTTP/1.1 200 OK\r\n\r\nbody")
    assert not reader.feed(b" more")
    assert reader.feed_eof()
    assert (reader.status, reader.keep_alive) == (200, False)


@pytest.mark.parametrize(
    ("received", "message"),
    [(b"", "before answering"), (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", "before its answer was complete")],
)
def test_reader_eof_before_the_end_is_a_disconnect(received, message):
    reader = AnswerReader()
    reader.feed(received)
    with pytest.raises(RemoteDisconnected, match=message):
        reader.feed_eof()


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000,
    ],
    ids=["not http", "bad status", "negative length", "bad chunk size", "chunk too long", "endless head"],
)
def test_reader_refuses_malformed_answers(answer):
    with pytest.raises(WireError):
        AnswerReader().feed(answer)


# The multiplexer: many flows on one loop.


def run_flows(server_url: str, flows: list[Flow], timeout: float = 2.0) -> list[tuple[float, int | str]]:
    """Drive the flows to their end; (send time, outcome) of every request."""
    answers: list[tuple[float, int | str]] = []

    def on_answer(started: float, outcome: int | str, ended: float, tag: str) -> None:
        assert started < ended <= time.perf_counter()
        answers.append((started, outcome))

    multiplexer = Multiplexer(SocketAddress(server_url), timeout, on_answer)
    for flow in flows:
        multiplexer.add(flow)
    multiplexer.run(time.perf_counter())
    assert all(flow.finished for flow in flows)
    return answers


def flow(count: int, wire: bytes = GET, period_s: float = 0.0, closes_in: float = 30.0) -> Flow:
    return Flow(iter([wire] * count), time.perf_counter() + closes_in, period_s)


def test_flows_share_the_loop_each_on_its_own_kept_alive_connection():
    server = ScriptedServer([[OK] * 3, [OK] * 3, [OK] * 3])
    answers = run_flows(server.url, [flow(3), flow(3), flow(3)])
    server.thread.join(5)
    assert [outcome for _, outcome in answers] == [200] * 9
    assert [len(requests) for requests in server.requests] == [3, 3, 3]


def test_a_large_request_is_written_as_the_socket_accepts_it():
    body = bytes(range(256)) * (32 << 10)  # 8 MiB: many times a socket buffer
    wire = encode_request(HttpRequest("POST", "/infer", body), "127.0.0.1")
    server = ScriptedServer([[OK, OK]])
    answers = run_flows(server.url, [flow(2, wire)])
    server.thread.join(5)
    assert [outcome for _, outcome in answers] == [200, 200]
    assert [len(request) for request in server.requests[0]] == [len(wire)] * 2


def test_paced_flow_waits_between_sends():
    server = ScriptedServer([[OK] * 4])
    answers = run_flows(server.url, [flow(4, period_s=0.1)])
    server.thread.join(5)
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(answers)]
    assert [outcome for _, outcome in answers] == [200] * 4
    assert all(0.1 <= gap < 0.2 for gap in gaps), gaps


def test_flow_stops_sending_when_its_window_closes():
    server = ScriptedServer([[OK] * 1000])
    answers = run_flows(server.url, [flow(1000, period_s=0.05, closes_in=0.22)])
    assert [outcome for _, outcome in answers] == [200] * 5  # sent at 0, 50, 100, 150, 200 ms


def test_multiplexer_framing_close_and_stale_connections():
    closing = b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    chunked = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", b"lo\r\n0\r\n\r\n"]
    # Connection 1: chunked, then closes; 2: idle close after one answer (the next request is retried); 3: the rest.
    server = ScriptedServer([[chunked, closing], [OK, CLOSE], [OK, OK]])
    answers = run_flows(server.url, [flow(5)])
    server.thread.join(5)
    assert [outcome for _, outcome in answers] == [200, 503, 200, 200, 200]
    assert [len(requests) for requests in server.requests] == [2, 1, 2]


def test_multiplexer_failures_are_named_and_the_flow_goes_on():
    server = ScriptedServer(
        [[b"SSH-2.0-OpenSSH\r\n\r\n"], [[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"], CLOSE], [OK]]
    )
    answers = run_flows(server.url, [flow(3)])
    server.thread.join(5)
    assert [outcome for _, outcome in answers] == ["WireError", "RemoteDisconnected", 200]


def test_multiplexer_times_out_a_silent_server():
    server = ScriptedServer([[]])
    started = time.perf_counter()
    answers = run_flows(server.url, [flow(1)], timeout=0.2)
    assert [outcome for _, outcome in answers] == ["TimeoutError"]
    assert 0.2 < time.perf_counter() - started < 1.0


def test_multiplexer_refused_connections_fail_without_piling_up():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        url = f"http://127.0.0.1:{placeholder.getsockname()[1]}"
    answers = run_flows(url, [flow(2000)])
    assert [outcome for _, outcome in answers] == ["ConnectionRefusedError"] * 2000


def test_flow_added_while_the_loop_waits_starts_at_once():
    server = ScriptedServer([[OK], [OK]])
    answers: list[tuple[float, int | str]] = []
    multiplexer = Multiplexer(
        SocketAddress(server.url), 30.0, lambda started, outcome, ended, tag: answers.append((started, outcome))
    )
    multiplexer.add(flow(1))
    late = flow(1)
    added = threading.Timer(0.2, multiplexer.add, [late])
    added.start()
    multiplexer.run(time.perf_counter() + 0.3)
    added.join()
    assert [outcome for _, outcome in answers] == [200, 200]
    assert answers[1][0] - answers[0][0] < 0.25  # not held until the loop's next timeout check (3 s here)


def test_multiplexer_tags_each_answer_with_what_its_body_names():
    def versioned(version: bytes) -> bytes:
        body = b'{"model_name":"m","model_version":"' + version + b'"}'
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    server = ScriptedServer([[versioned(b"1"), versioned(b"2"), OK]])
    tags: list[tuple[int | str, str]] = []
    multiplexer = Multiplexer(
        SocketAddress(server.url),
        5.0,
        lambda started, outcome, ended, tag: tags.append((outcome, tag)),
        answer_tag=re.compile(rb'"model_version":"([^"]*)"'),
    )
    multiplexer.add(flow(3))
    multiplexer.run(time.perf_counter() + 2.0)
    assert tags == [(200, "1"), (200, "2"), (200, "")]


def test_multiplexer_refuses_tls():
    with pytest.raises(ValueError, match="plain HTTP"):
        Multiplexer(SocketAddress("https://127.0.0.1:1"), 1.0, lambda started, outcome, ended, tag: None)


# The open loop's schedule on the multiplexer.


def run_schedule(server_url: str, offsets_s: list[float], max_in_flight: int = 8, late_s: float = 0.01):
    """Run a schedule starting now; (latencies from the due times in ms, outcomes, late dues, dropped dues)."""
    answers: list[tuple[float, int | str]] = []
    late: list[float] = []
    dropped: list[float] = []
    start = time.perf_counter()
    due_times = [start + offset for offset in offsets_s]
    schedule = Schedule(due_times, itertools.repeat(GET), max_in_flight, late_s, late.append, dropped.append)
    multiplexer = Multiplexer(
        SocketAddress(server_url),
        5.0,
        lambda started, outcome, ended, tag: answers.append(((ended - started) * 1000, outcome)),
    )
    multiplexer.add_schedule(schedule)
    multiplexer.run(time.perf_counter())
    assert schedule.finished
    return answers, [due - start for due in late], [due - start for due in dropped]


def test_schedule_sends_on_time_and_reuses_its_connections():
    server = ScriptedServer([[OK] * 10])
    # 100 ms: this checks the mechanism, not the timing (benchmarks/accuracy.py measures that).
    answers, late, dropped = run_schedule(server.url, [0.05 * k for k in range(10)], late_s=0.1)
    server.thread.join(5)
    assert [outcome for _, outcome in answers] == [200] * 10
    assert late == dropped == []
    assert [len(requests) for requests in server.requests] == [10]  # one connection was always enough
    assert max(latency for latency, _ in answers) < 100


def test_schedule_counts_latency_from_the_due_time_and_late_sends():
    server = ScriptedServer([[OK] * 3] * 3)
    answers, late, _ = run_schedule(server.url, [-0.5, -0.2, 0.1])  # two sends already overdue
    assert [round(offset, 1) for offset in late] == [-0.5, -0.2]
    fastest, middle, slowest = sorted(latency for latency, _ in answers)
    assert fastest < 100 and 200 <= middle < 300 and 500 <= slowest < 600


def test_schedule_drops_sends_when_every_connection_is_busy():
    slow = [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", b"x"]  # answers take PAUSE (50 ms) to finish
    server = ScriptedServer([[slow], [slow]])
    answers, _, dropped = run_schedule(server.url, [0.0, 0.001, 0.002, 0.003], max_in_flight=2)
    server.thread.join(5)
    assert [outcome for _, outcome in answers] == [200, 200]
    assert [round(offset, 3) for offset in dropped] == [0.002, 0.003]


#: The body each readable answer carries, framing removed.
BODIES = {
    "content-length": b"hello",
    "empty body": b"",
    "chunked": b"abc",
    "interim then final": b"",
    "connection close": b"no",
    "http/1.0 keep-alive": b"x",
}


@pytest.mark.parametrize("name", READABLE_ANSWERS)
@pytest.mark.parametrize("piece_size", [1, 7, 1 << 20])
def test_reader_keeps_the_body_without_its_framing_when_asked(name, piece_size):
    answer, _, _ = READABLE_ANSWERS[name]
    reader = AnswerReader()
    reader.start(keep_body=True)
    assert [reader.feed(answer[at : at + piece_size]) for at in range(0, len(answer), piece_size)][-1]
    assert bytes(reader.body) == BODIES[name]


def test_reader_keeps_a_body_that_ends_at_close():
    reader = AnswerReader()
    reader.start(keep_body=True)
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\nbody")
    reader.feed(b" more")
    assert reader.feed_eof()
    assert bytes(reader.body) == b"body more"


def test_multiplexer_hands_each_answer_body_with_the_request_it_answers():
    first, second = b"GET /a HTTP/1.1\r\n\r\n", b"GET /b HTTP/1.1\r\n\r\n"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    server = ScriptedServer([[OK, chunked]])
    bodies: list[tuple[bytes, int, bytes]] = []
    multiplexer = Multiplexer(
        SocketAddress(server.url), 2.0, lambda started, outcome, ended, tag: None, lambda *answer: bodies.append(answer)
    )
    multiplexer.add(Flow(iter([first, second]), time.perf_counter() + 30, 0.0))
    multiplexer.run(time.perf_counter())
    server.thread.join(5)
    assert bodies == [(first, 200, b"hello"), (second, 200, b"abcde")]
