"""HTTP/1.1 for load generation, with as little Python per request as the measurement allows.

A load generator's own cost per request caps the rate one process can offer
and adds to every latency it reports. A general HTTP client pays for URL
parsing, header dictionaries, cookie and redirect handling on each request;
here a request is encoded to bytes once per phase (``Endpoint.encode``) and an
answer is read only as far as its status and its end (``AnswerReader``:
Content-Length, chunked, or the connection closing; its body kept only when the
answer checks ask for it), without doing any I/O itself. Two drivers feed it: ``KeepAliveConnection`` (one socket, blocking or
gevent-cooperative) here, and ``multiplexer.Multiplexer`` (many sockets on
one epoll loop). Nothing is pipelined: one request is in flight per connection.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from urllib.parse import urlsplit

from pytest_serving.types import HttpRequest

RECEIVE_SIZE = 65536
MAX_HEAD_BYTES = 65536
NO_BODY_STATUSES = (204, 304)


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


class RemoteDisconnected(ConnectionError):
    """The server closed the connection before its answer was complete."""


def encode_request(request: HttpRequest, authority: str, path_prefix: str = "") -> bytes:
    """The request as bytes on the wire: request line, Host, Content-Length, the request's headers, body."""
    given = {name.lower() for name in request.headers}
    lines = [f"{request.method} {path_prefix}{request.path} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {authority}")
    if "content-length" not in given and (request.body or request.method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(request.body)}")
    lines.extend(f"{name}: {value}" for name, value in request.headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


class Endpoint:
    """Where a base URL's requests go: address, TLS or not, and the bytes of each request."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.authority = parts.netloc.rpartition("@")[2]
        self.path_prefix = parts.path.rstrip("/")

    def encode(self, request: HttpRequest) -> bytes:
        return encode_request(request, self.authority, self.path_prefix)


_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(7)


class AnswerReader:
    """Finds where one HTTP/1.x answer ends in the bytes received, and its status; no I/O.

    ``feed`` the bytes as they arrive until it returns True, then read
    ``status`` and ``keep_alive``; ``feed_eof`` when the server closes. Body
    bytes are counted, not kept, unless the answer is started with
    ``start(keep_body=True)``: then ``body`` collects them (chunked framing
    removed) for the answer checks. ``start`` readies it for the next answer.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.body = bytearray()
        self.start()

    def start(self, keep_body: bool = False) -> None:
        self._buffer.clear()
        self.keep_body = keep_body
        if keep_body:
            self.body = bytearray()
        self._state = _HEAD
        self._remaining = 0
        self._after_body = _DONE
        self.status = 0
        self.keep_alive = True
        self.received = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> bool:
        """Take bytes received from the server; True once the answer is complete."""
        self.received += len(data)
        if self._state == _BODY and not self._buffer:
            # The common case of a long body: count it off without copying it.
            if len(data) < self._remaining:
                self._remaining -= len(data)
                if self.keep_body:
                    self.body += data
                return False
            if self.keep_body:
                self.body += data[: self._remaining]
            data = data[self._remaining :]
            self._remaining = 0
            self._state = self._after_body
        elif self._state == _UNTIL_CLOSE:
            if self.keep_body:
                self.body += data
            return False
        if data:
            self._buffer += data
        self._advance()
        return self._state == _DONE

    def feed_eof(self) -> bool:
        """The server closed the connection: True if that ends the answer, else RemoteDisconnected."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            return True
        if self._state == _DONE:
            return True
        raise RemoteDisconnected(
            "the server closed the connection before answering"
            if self.received == 0
            else "the server closed the connection before its answer was complete"
        )

    def _advance(self) -> None:
        buffer = self._buffer
        while True:
            state = self._state
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise ProtocolError(f"no end of headers in the first {MAX_HEAD_BYTES} bytes")
                    return
                head = bytes(buffer[:end]).lower()
                del buffer[: end + 4]
                self._read_head(head)
            elif state == _BODY:
                taken = min(self._remaining, len(buffer))
                if self.keep_body:
                    self.body += buffer[:taken]
                del buffer[:taken]
                self._remaining -= taken
                if self._remaining:
                    return
                self._state = self._after_body
            elif state in (_CHUNK_SIZE, _CHUNK_END, _TRAILERS):
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise ProtocolError(f"no line end in {MAX_HEAD_BYTES} bytes of a chunked body")
                    return
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                self._read_chunk_line(state, line)
            elif state == _UNTIL_CLOSE:
                if self.keep_body:
                    self.body += buffer
                buffer.clear()
                return
            else:
                return

    def _read_head(self, head: bytes) -> None:
        if not head.startswith(b"http/1.") or head[8:9] != b" " or not head[9:12].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {head[:40]!r}")
        status = int(head[9:12])
        if 100 <= status < 200 and status != 101:
            return  # an interim answer; the real one follows
        self.status = status
        http_1_0 = head.startswith(b"http/1.0")
        self.keep_alive = b"\r\nconnection: close" not in head and not (http_1_0 and b"keep-alive" not in head)
        if status in NO_BODY_STATUSES or status == 101:
            self._state = _DONE
        elif b"\r\ntransfer-encoding:" in head and b"chunked" in head:
            self._state = _CHUNK_SIZE
        elif (at := head.find(b"\r\ncontent-length:")) >= 0:
            line_end = head.find(b"\r\n", at + 2)
            value = head[at + 17 : line_end if line_end >= 0 else len(head)]
            try:
                self._remaining = int(value)
            except ValueError:
                raise ProtocolError(f"bad Content-Length: {value!r}") from None
            if self._remaining < 0:
                raise ProtocolError(f"negative Content-Length: {self._remaining}")
            self._state, self._after_body = (_BODY if self._remaining else _DONE), _DONE
        else:
            self._state = _UNTIL_CLOSE
            self.keep_alive = False

    def _read_chunk_line(self, state: int, line: bytes) -> None:
        if state == _CHUNK_SIZE:
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line: {line[:40]!r}") from None
            if size == 0:
                self._state = _TRAILERS
            else:
                self._remaining, self._state, self._after_body = size, _BODY, _CHUNK_END
        elif state == _CHUNK_END:
            if line:
                raise ProtocolError("a chunk does not end with CRLF")
            self._state = _CHUNK_SIZE
        elif not line:  # the empty line after the trailers
            self._state = _DONE


class KeepAliveConnection:
    """One connection to an endpoint, opened on first use and reopened after the server closes it.

    It uses the standard ``socket`` and ``ssl`` modules: inside Locust they are
    gevent's, so a request waits cooperatively; in a plain process it blocks.
    The request timeout is not a socket timeout (under gevent, a socket timeout
    arms a timer for every wait): a watchdog calls ``expire_if_overdue`` a few
    times per timeout and the overdue request fails as ``TimeoutError``.
    Connecting has its own socket timeout.
    """

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._socket: socket.socket | None = None
        self._reader = AnswerReader()
        self._answered_on_socket = 0
        self._busy_since: float | None = None
        self._expired = False
        self._keep_body = False

    def send(self, wire: bytes, keep_body: bool = False) -> int | str:
        """Send one encoded request and read its answer: its HTTP status, or the name of the error that
        left it without one. With ``keep_body`` the answer's body is kept in ``body``."""
        self._keep_body = keep_body
        self._expired = False
        self._busy_since = time.perf_counter()
        try:
            status = self.exchange(wire)
        except (OSError, ProtocolError) as error:
            self.close()
            return "TimeoutError" if self._expired else type(error).__name__
        finally:
            self._busy_since = None
        if self._expired:
            self.close()  # aborted just as the answer completed: the socket is shut down
        return status

    def expire_if_overdue(self, now: float) -> bool:
        """Abort the request in progress if it started over ``timeout`` seconds before ``now`` (perf_counter)."""
        started = self._busy_since
        if started is None or now - started <= self.timeout or self._socket is None:
            return False
        self._expired = True
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)  # the blocked receive returns at once
        return True

    def exchange(self, wire: bytes) -> int:
        """Send one encoded request and read its answer; its HTTP status. Raises on network and protocol errors.

        A kept-alive connection that the server closed while idle fails before
        any byte of the answer arrives; that request is sent once more on a new
        connection, as browsers and urllib3 do. Any other failure is the request's.
        """
        reused = self._socket is not None and self._answered_on_socket > 0
        try:
            return self._exchange_once(wire)
        except (RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused or self._reader.received or self._expired:
                raise
            self.close()
            return self._exchange_once(wire)

    @property
    def body(self) -> bytes:
        """The last answer's body, when it was sent with ``keep_body``."""
        return bytes(self._reader.body)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._answered_on_socket = 0

    def _exchange_once(self, wire: bytes) -> int:
        reader = self._reader
        reader.start(self._keep_body)
        if self._socket is None:
            self._socket = connect(self.endpoint, self.timeout)
        self._socket.sendall(wire)
        receive = self._socket.recv
        while not reader.feed(chunk := receive(RECEIVE_SIZE)) and chunk:
            pass
        if not chunk:
            reader.feed_eof()
        self._answered_on_socket += 1
        if not reader.keep_alive:
            self.close()
        return reader.status


def connect(endpoint: Endpoint, timeout: float) -> socket.socket:
    """A connected socket (TLS for https, certificates not checked), blocking, without a timeout once connected."""
    connection = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    connection.settimeout(None)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if endpoint.tls:
        # Load targets are the user's own servers, often with self-signed certificates.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = context.wrap_socket(connection, server_hostname=endpoint.host)
    return connection
