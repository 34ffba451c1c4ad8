"""HTTP/1.1 below ``requests``: request bytes, where an answer ends, and the loopback guard.

Two clients send raw HTTP: the load engine (``load.connection``, ``load.multiplexer``), because a
general client's cost per request caps the rate one process can offer, and the hostile robustness
cases (``robustness.hostile``), because they break the framing a general client would keep. Both
encode requests with ``encode_request``/``encode_head``, read answers with ``AnswerReader``
(Content-Length, chunked, or the connection closing; no I/O, so a blocking socket and an epoll loop
can both feed it) and keep to loopback with ``is_loopback_host``. Nothing here imports the package
beyond ``types``.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from pytest_serving.types import HttpRequest

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
RECEIVE_SIZE = 65536
MAX_HEAD_BYTES = 65536
NO_BODY_STATUSES = (204, 304)


class WireError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it (not ``types.ProtocolError``: that one is about
    a well-framed answer that holds no prediction)."""


class RemoteDisconnected(ConnectionError):
    """The server closed the connection before its answer was complete."""


def encode_head(method: str, target: str, headers: Mapping[str, str]) -> bytes:
    """A request line and exactly the ``headers`` given, as bytes on the wire, up to and with the blank line."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode_request(request: HttpRequest, authority: str, path_prefix: str = "") -> bytes:
    """The request as bytes on the wire: request line, Host, Content-Length, the request's headers, body."""
    given = {name.lower() for name in request.headers}
    headers = {}
    if "host" not in given:
        headers["Host"] = authority
    if "content-length" not in given and (request.body or request.method in ("POST", "PUT", "PATCH")):
        headers["Content-Length"] = str(len(request.body))
    headers.update(request.headers)
    return encode_head(request.method, f"{path_prefix}{request.path}", headers) + request.body


class SocketAddress:
    """Where a base URL's requests go on the wire: host, port, TLS or not, and the bytes of each request.

    Not ``protocols.endpoint.Endpoint`` (a deployed model's URLs and protocols): this is one socket's destination."""

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
                        raise WireError(f"no end of headers in the first {MAX_HEAD_BYTES} bytes")
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
                        raise WireError(f"no line end in {MAX_HEAD_BYTES} bytes of a chunked body")
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
            raise WireError(f"not an HTTP/1.x status line: {head[:40]!r}")
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
                raise WireError(f"bad Content-Length: {value!r}") from None
            if self._remaining < 0:
                raise WireError(f"negative Content-Length: {self._remaining}")
            self._state, self._after_body = (_BODY if self._remaining else _DONE), _DONE
        else:
            self._state = _UNTIL_CLOSE
            self.keep_alive = False

    def _read_chunk_line(self, state: int, line: bytes) -> None:
        if state == _CHUNK_SIZE:
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise WireError(f"bad chunk size line: {line[:40]!r}") from None
            if size == 0:
                self._state = _TRAILERS
            else:
                self._remaining, self._state, self._after_body = size, _BODY, _CHUNK_END
        elif state == _CHUNK_END:
            if line:
                raise WireError("a chunk does not end with CRLF")
            self._state = _CHUNK_SIZE
        elif not line:  # the empty line after the trailers
            self._state = _DONE


def connect(address: SocketAddress, timeout: float) -> socket.socket:
    """A connected socket (TLS for https, certificates not checked), blocking, without a timeout once connected."""
    connection = socket.create_connection((address.host, address.port), timeout=timeout)
    connection.settimeout(None)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if address.tls:
        # Load targets are the user's own servers, often with self-signed certificates.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = context.wrap_socket(connection, server_hostname=address.host)
    return connection


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (127.0.0.0/8, ::1, IPv4-mapped loopback); no DNS lookup."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)
