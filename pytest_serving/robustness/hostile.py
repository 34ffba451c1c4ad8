"""Hostile protocol cases: attacks on the HTTP transport itself, sent over raw sockets to 127.0.0.1.

The catalogue's cases are well-framed HTTP requests with bad content; these break the framing,
the encoding or the pace of a request, as Triton's own QA suite and every HTTP server's fuzzers do:
a 150 000-deep nested JSON body, gzip and deflate ``Content-Encoding`` bombs, headers trickled
slowly (slowloris) and a body that stalls, a client that disconnects mid-body or while its answer
is written, a 1 MiB header and bad chunk sizes. Every socket has a bounded timeout.

Judging is the catalogue's: a ``reject`` case must get a clear 4xx or a closed connection (a
5xx, a 2xx or a hang is a failure); an ``endure`` case (the slow and the vanishing clients) has
nothing to reject, so what is judged is that the server went on answering valid requests right,
during the attack when it lasts and after it in any case (``outcome.Aftermath``).
"""

from __future__ import annotations

import functools
import socket
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from ..protocols.base import Protocol
from ..rawhttp import RECEIVE_SIZE, AnswerReader, RemoteDisconnected, WireError, encode_head, is_loopback_host
from ..types import HttpRequest
from .outcome import Aftermath, Answer, Outcome, case_record, message_tail, verdict

#: No answer to a hostile request within this long is a hang.
ANSWER_TIMEOUT_S = 15.0
#: Depth of the nested-JSON case (the catalogue's json-deep-nesting is 100 000 deep).
NESTING_DEPTH = 150_000
#: What a compression bomb expands to: 256 MiB of zeros from about 256 KiB on the wire, a ratio
#: of 1000:1; a server must refuse it (or bound what it inflates) before it holds the whole.
BOMB_EXPANDED_BYTES = 256 * 1024 * 1024
HEADER_BYTES = 1024 * 1024
#: Slowloris: this many connections, each sending one more header byte every SLOW_TICK_S, for SLOW_S.
SLOW_CONNECTIONS = 16
SLOW_TICK_S = 0.5
SLOW_S = 8.0
#: Clients that vanish: repeated, so that a leak per abandoned request would show; few enough that the
#: work they leave behind (a server cannot cancel an inference it started) drains well within the next
#: valid request's timeout on a loaded 2-core machine.
VANISHING_REPEATS = 8
#: Hex chunk size beyond 2**64: a parser that wraps around reads it as 1.
OVERFLOWING_CHUNK_SIZE = "10000000000000001"

#: The transport error of an Answer when the server closed (or reset) the connection without answering.
CLOSED = "the server closed the connection without an answer"

Expect = Literal["reject", "endure"]


@dataclass(frozen=True)
class Wire:
    """Where and what to send: the server's address, a valid request of its protocol and the headers every
    request needs (authorization). ``valid`` sends that request through an HTTP client and returns its Answer."""

    host: str
    port: int
    request: HttpRequest
    headers: dict[str, str]
    protocol: Protocol
    valid: Callable[[], Answer]

    @classmethod
    def of(
        cls,
        base_url: str,
        request: HttpRequest,
        headers: dict[str, str],
        protocol: Protocol,
        valid: Callable[[], Answer],
    ) -> Wire:
        parts = urlsplit(base_url)
        if not parts.hostname or not is_loopback_host(parts.hostname):
            raise ValueError(f"hostile cases go to loopback servers only, not {base_url}")
        return cls(parts.hostname, parts.port or 80, request, dict(headers), protocol, valid)

    def head(
        self, extra: dict[str, str] | None = None, *, framing: dict[str, str] | None = None, without: str = ""
    ) -> bytes:
        """The request line and headers of the valid request, with ``framing`` (Content-Length or
        Transfer-Encoding) instead of the body's own length, ``extra`` headers and not the header ``without``."""
        headers = {"Host": f"{self.host}:{self.port}", **self.headers, **self.request.headers, **(extra or {})}
        headers.update(framing if framing is not None else {"Content-Length": str(len(self.request.body))})
        headers = {name: value for name, value in headers.items() if name.lower() != without.lower()}
        return encode_head(self.request.method, self.request.path, headers)

    def connect(self, timeout: float = ANSWER_TIMEOUT_S) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)


@dataclass(frozen=True)
class Attack:
    """What one hostile case saw: the server's answer on the hostile connection, and the answer to a
    valid request sent while the attack was still going on (None for attacks that do not last)."""

    answer: Answer
    during: Answer | None = None
    detail: str = ""


@dataclass(frozen=True)
class HostileCase:
    name: str
    description: str
    expect: Expect
    run: Callable[[Wire], Attack]
    #: What the case needs of a protocol (as the catalogue's ``Case.applies``); None: every HTTP protocol.
    applies: Callable[[Protocol], bool] | None = None

    def applies_to(self, protocol: Protocol) -> bool:
        return self.applies is None or self.applies(protocol)


# --- raw HTTP ------------------------------------------------------------------------------------


def exchange(wire: Wire, data: bytes, timeout: float = ANSWER_TIMEOUT_S) -> Answer:
    """Send ``data`` on a fresh connection and read one HTTP answer (or see the connection closed)."""
    start = time.perf_counter()
    with wire.connect(timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading, perhaps to answer: read what it said
        return read_answer(sock, start, timeout)


def read_answer(sock: socket.socket, start: float, timeout: float) -> Answer:
    """One HTTP/1.x answer from ``sock``, bounded by ``timeout`` from ``start``; its status once its head is in."""
    reader = AnswerReader()
    reader.start(keep_body=True)
    deadline = start + timeout
    try:
        while not reader.feed(chunk := _recv(sock, deadline)):
            if not chunk:
                reader.feed_eof()
                break
    except TimeoutError:
        if not reader.status:
            return Answer(None, b"", _ms_since(start), f"no answer within {timeout:.0f} s")
    except (RemoteDisconnected, ConnectionResetError):
        if not reader.status:
            return _closed(start, reader.received)
    except WireError as error:
        return Answer(None, b"", _ms_since(start), f"not an HTTP/1.x answer: {error}")
    return Answer(reader.status, bytes(reader.body), _ms_since(start))


def _recv(sock: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        raise TimeoutError
    sock.settimeout(remaining)
    return sock.recv(RECEIVE_SIZE)


def _closed(start: float, received: int) -> Answer:
    detail = CLOSED if not received else f"{CLOSED} (after {received} bytes of a head)"
    return Answer(None, b"", _ms_since(start), detail)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


# --- the cases -----------------------------------------------------------------------------------


def nested_json_body(inputs_key: str, depth: int = NESTING_DEPTH) -> bytes:
    """A JSON request ``depth`` arrays deep under the protocol's inputs key."""
    return b'{"' + inputs_key.encode() + b'": ' + b"[" * depth + b"]" * depth + b"}"


def takes_json(protocol: Protocol) -> bool:
    """Whether the protocol's requests may be JSON bodies (it names a JSON inputs key)."""
    return protocol.json_inputs_key is not None


@functools.cache
def bomb(encoding: str, expanded: int = BOMB_EXPANDED_BYTES) -> bytes:
    """``expanded`` zero bytes compressed as ``encoding`` (gzip, or deflate: the zlib format HTTP names so).

    One MiB of zeros is compressed once into a self-contained deflate segment (it refers to nothing
    before it) and repeated, so a 256 MiB bomb costs milliseconds instead of seconds of compression.
    """
    block = bytes(1024 * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    count = expanded // len(block)
    stream = segment * count + zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()
    if encoding == "gzip":
        crc = 0
        for _ in range(count):
            crc = zlib.crc32(block, crc)
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        return header + stream + struct.pack("<II", crc, (count * len(block)) & 0xFFFFFFFF)
    adler = 1
    for _ in range(count):
        adler = zlib.adler32(block, adler)
    return b"\x78\xda" + stream + struct.pack(">I", adler)


def _nested_json(wire: Wire) -> Attack:
    body = nested_json_body(str(wire.protocol.json_inputs_key))
    # Without the V2 binary extension's header: the whole body is JSON.
    head = wire.head(
        {"Content-Type": "application/json"},
        framing={"Content-Length": str(len(body))},
        without="Inference-Header-Content-Length",
    )
    return Attack(exchange(wire, head + body))


def _compression_bomb(encoding: str) -> Callable[[Wire], Attack]:
    def run(wire: Wire) -> Attack:
        body = bomb(encoding)
        head = wire.head({"Content-Encoding": encoding}, framing={"Content-Length": str(len(body))})
        return Attack(exchange(wire, head + body), detail=f"{len(body)} bytes expanding to {BOMB_EXPANDED_BYTES}")

    return run


def _oversized_header(wire: Wire) -> Attack:
    return Attack(exchange(wire, wire.head({"X-Padding": "a" * HEADER_BYTES}) + wire.request.body))


def _chunked(size_line: str) -> Callable[[Wire], Attack]:
    def run(wire: Wire) -> Attack:
        body = wire.request.body
        head = wire.head(framing={"Transfer-Encoding": "chunked"})
        return Attack(exchange(wire, head + f"{size_line}\r\n".encode() + body + b"\r\n0\r\n\r\n"))

    return run


def _slowloris(wire: Wire) -> Attack:
    """SLOW_CONNECTIONS connections trickle their headers; a valid request is sent while they do."""
    start = time.perf_counter()
    trickled = wire.head()
    sockets, during = [], None
    try:
        for _ in range(SLOW_CONNECTIONS):
            sockets.append(wire.connect())
        for tick in range(int(SLOW_S / SLOW_TICK_S)):
            byte = trickled[tick : tick + 1] if tick < len(trickled) else b"X"
            for sock in sockets:
                try:
                    sock.sendall(byte)
                except OSError:
                    pass  # closed by the server: a fine defence
            if tick == int(SLOW_S / SLOW_TICK_S) // 2:
                during = wire.valid()
            time.sleep(SLOW_TICK_S)
        answer = read_answer(sockets[0], time.perf_counter(), 1.0)
    finally:
        for sock in sockets:
            sock.close()
    return Attack(
        _still_waiting(answer, start), during, f"{SLOW_CONNECTIONS} connections, one byte each per {SLOW_TICK_S} s"
    )


def _stalled_body(wire: Wire) -> Attack:
    """Headers and half the body, then nothing for SLOW_S; a valid request is sent meanwhile."""
    start = time.perf_counter()
    body = wire.request.body
    with wire.connect() as sock:
        sock.sendall(wire.head() + body[: len(body) // 2])
        time.sleep(SLOW_S / 2)
        during = wire.valid()
        time.sleep(SLOW_S / 2)
        answer = read_answer(sock, time.perf_counter(), 1.0)
    return Attack(_still_waiting(answer, start), during, f"{len(body) // 2} of {len(body)} body bytes, then a stall")


def _still_waiting(answer: Answer, start: float) -> Answer:
    if answer.transport_error.startswith("no answer"):
        return Answer(None, b"", _ms_since(start), f"connection still open after {SLOW_S:.0f} s (closed by the client)")
    return answer


def _vanishing(mid: Literal["body", "response"]) -> Callable[[Wire], Attack]:
    """VANISHING_REPEATS clients that send half the body and leave, or the whole request and reset the
    connection before the answer is read."""

    def run(wire: Wire) -> Attack:
        start = time.perf_counter()
        body = wire.request.body
        for _ in range(VANISHING_REPEATS):
            with wire.connect() as sock:
                if mid == "body":
                    sock.sendall(wire.head() + body[: len(body) // 2])
                else:
                    sock.sendall(wire.head() + body)
                    # Linger 0: close() sends a reset, so the server writes its answer to a dead peer.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone = (
            f"client gone {'mid-body' if mid == 'body' else 'before its answer was read'} ({VANISHING_REPEATS} times)"
        )
        return Attack(Answer(None, b"", _ms_since(start), gone), detail=gone)

    return run


CASES: tuple[HostileCase, ...] = (
    HostileCase(
        "json-nesting-150000",
        f"A JSON body nested {NESTING_DEPTH} arrays deep: a recursive parser overflows its stack.",
        "reject",
        _nested_json,
        takes_json,
    ),
    HostileCase(
        "gzip-bomb",
        "Content-Encoding: gzip, 256 KiB expanding to 256 MiB of zeros.",
        "reject",
        _compression_bomb("gzip"),
    ),
    HostileCase(
        "deflate-bomb",
        "Content-Encoding: deflate, 256 KiB expanding to 256 MiB of zeros.",
        "reject",
        _compression_bomb("deflate"),
    ),
    HostileCase(
        "slowloris-headers",
        f"{SLOW_CONNECTIONS} connections trickle their headers a byte every {SLOW_TICK_S} s for {SLOW_S:.0f} s.",
        "endure",
        _slowloris,
    ),
    HostileCase(
        "stalled-body",
        f"Headers and half the body, then a {SLOW_S:.0f} s stall.",
        "endure",
        _stalled_body,
    ),
    HostileCase(
        "disconnect-mid-body",
        f"{VANISHING_REPEATS} clients send half the body and close the connection.",
        "endure",
        _vanishing("body"),
    ),
    HostileCase(
        "disconnect-mid-response",
        f"{VANISHING_REPEATS} clients send a valid request and reset the connection before reading the answer.",
        "endure",
        _vanishing("response"),
    ),
    HostileCase("header-1mib", "One 1 MiB header.", "reject", _oversized_header),
    HostileCase("chunk-size-not-hex", "Transfer-Encoding: chunked with the chunk size 'zz'.", "reject", _chunked("zz")),
    HostileCase(
        "chunk-size-overflow",
        f"Transfer-Encoding: chunked with the chunk size 0x{OVERFLOWING_CHUNK_SIZE} (beyond 2**64).",
        "reject",
        _chunked(OVERFLOWING_CHUNK_SIZE),
    ),
)

BY_NAME = {case.name: case for case in CASES}


# --- judging -------------------------------------------------------------------------------------


def attack_problems(case: HostileCase, attack: Attack, valid_problem: Callable[[Answer], str]) -> list[str]:
    """Everything wrong with how the server met ``case``; ``valid_problem`` judges a valid request's answer."""
    answer = attack.answer
    problems = []
    if answer.server_error:
        problems.append(f"HTTP {answer.status}: a server error is never a correct answer to a client's attack")
    elif case.expect == "reject":
        if answer.success:
            problems.append(f"HTTP {answer.status}: the server accepted it instead of refusing it")
        elif answer.status is None and not answer.transport_error.startswith(CLOSED):
            problems.append(f"neither a 4xx nor a closed connection: {answer.transport_error}")
        elif answer.status is not None and not 400 <= answer.status < 500:
            problems.append(f"HTTP {answer.status} is neither a 4xx nor a closed connection")
    if attack.during is not None:
        problem = valid_problem(attack.during)
        if problem:
            problems.append(f"a valid request sent during the attack was not answered right: {problem}")
    return problems


@dataclass(frozen=True)
class HostileOutcome:
    """The verdict on one hostile case against one target, its message and its results.json record."""

    target: str
    server_version: str
    case: HostileCase
    attack: Attack
    aftermath: Aftermath
    problems: tuple[str, ...]
    deviation: str | None = None
    #: Run against a throwaway deployment: a known deviation then excuses what it did to the server too.
    isolated: bool = False

    @property
    def outcome(self) -> Outcome:
        if self.isolated and self.deviation and (self.problems or not self.aftermath.ok):
            return "deviation"
        return verdict(self.problems, self.aftermath, self.deviation)

    def message(self) -> str:
        expected = (
            "a 4xx or a closed connection"
            if self.case.expect == "reject"
            else "valid requests answered right during and after it"
        )
        lines = [
            f"hostile case {self.case.name!r} on {self.target} ({self.server_version}): {self.case.description}",
            f"expected: {expected}",
            f"got: {self.attack.answer.describe()}" + (f" [{self.attack.detail}]" if self.attack.detail else ""),
        ]
        if self.attack.during is not None:
            lines.append(f"valid request during the attack: {self.attack.during.describe()}")
        return "\n".join(lines + message_tail(self.problems, self.aftermath, self.deviation))

    def record(self) -> dict[str, object]:
        """The results.json entry, shaped like a catalogue case's, beside them under ``robustness``."""
        return case_record(
            self.case.expect,
            self.attack.answer,
            self.aftermath,
            self.outcome,
            self.problems,
            self.deviation,
            kind="hostile",
            during=self.attack.during.describe() if self.attack.during is not None else None,
        )
