"""HTTP/1.1 for load generation, with as little Python per request as the measurement allows.

A load generator's own cost per request caps the rate one process can offer
and adds to every latency it reports. A general HTTP client pays for URL
parsing, header dictionaries, cookie and redirect handling on each request;
here a request is encoded to bytes once per phase (``rawhttp.SocketAddress.encode``)
and an answer is read only as far as its status and its end (``rawhttp.AnswerReader``;
its body kept only when the answer checks ask for it). Two drivers feed it:
``KeepAliveConnection`` (one socket, blocking or gevent-cooperative) here, and
``multiplexer.Multiplexer`` (many sockets on one epoll loop). Nothing is pipelined:
one request is in flight per connection.
"""

from __future__ import annotations

import contextlib
import socket
import time

from pytest_serving.rawhttp import RECEIVE_SIZE, AnswerReader, RemoteDisconnected, SocketAddress, WireError, connect

#: ``users.py`` still names the socket address so; the alias goes when users.py says SocketAddress.
Endpoint = SocketAddress


class KeepAliveConnection:
    """One connection to an endpoint, opened on first use and reopened after the server closes it.

    It uses the standard ``socket`` and ``ssl`` modules: inside Locust they are
    gevent's, so a request waits cooperatively; in a plain process it blocks.
    The request timeout is not a socket timeout (under gevent, a socket timeout
    arms a timer for every wait): a watchdog calls ``expire_if_overdue`` a few
    times per timeout and the overdue request fails as ``TimeoutError``.
    Connecting has its own socket timeout.
    """

    def __init__(self, endpoint: SocketAddress, timeout: float) -> None:
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
        except (OSError, WireError) as error:
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

