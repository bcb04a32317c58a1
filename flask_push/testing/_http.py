"""The server model of the fakes that speak HTTP/1.1 (Web Push, FCM): ``http.server``.

A thread per connection, keep-alive as real services and pooled clients expect, TLS
when the fake has a certificate. A fake says how it reads a body and how it answers
a request (:meth:`HTTPFakeService._read_body`, :meth:`HTTPFakeService._answer`);
this module does the rest.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from abc import abstractmethod
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from socketserver import TCPServer
from typing import Any, ClassVar, cast

from .service import FakeService, HungUp, Received

_log = logging.getLogger(__name__)

Headers = tuple[tuple[str, str], ...]


def header(headers: Headers, name: str) -> str | None:
    """The first header of that name (case-insensitive), or ``None``."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


@dataclass(frozen=True)
class HTTPRequest:
    method: str
    #: the path and query as sent
    path: str
    #: in the order sent
    headers: Headers
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return header(self.headers, name)


@dataclass(frozen=True)
class HTTPAnswer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class BodyRefused(Exception):
    """A body a fake will not read (no length, too large): answered, then hung up."""

    def __init__(self, answer: HTTPAnswer) -> None:
        super().__init__(answer.status)
        self.answer = answer


class HTTPFakeService(FakeService[Received]):
    """A fake served by ``http.server`` in a background thread."""

    #: the ``Server`` header of its answers
    server_version: ClassVar[str]

    def __init__(self, *, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _tls_context(self) -> ssl.SSLContext | None:
        """The context to serve https with; plain http without one."""
        return None

    @abstractmethod
    def _read_body(self, request: HTTPRequest, stream: BufferedIOBase) -> bytes:
        """Read the body of ``request`` (its head) from ``stream``, framed as the
        service wants it, or raise :class:`BodyRefused`."""

    @abstractmethod
    def _answer(self, request: HTTPRequest) -> HTTPAnswer:
        """Check, record and answer one request (in its connection's thread)."""

    def _open(self) -> int:
        server = _Server(self, self._tls_context())
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            # else every stop waits for the default half-second poll
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return server.server_port

    def _close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            stopping = threading.Thread(target=server.shutdown)
            stopping.start()
            server.wake()
            stopping.join()
            server.hang_up()
            server.server_close()
        if thread is not None:
            thread.join()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A burst of concurrent requests must not overflow the listen backlog (default 5),
    # or the kernel drops connections and clients retry a second later.
    request_queue_size = 128

    def __init__(self, fake: HTTPFakeService[Any], context: ssl.SSLContext | None) -> None:
        self.fake = fake
        self.context = context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((fake.host, 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (socket.getfqdn): skip it.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is None:
            super().finish_request(request, client_address)
            return
        plain = cast(socket.socket, request)
        plain.settimeout(_Handler.timeout)  # a client that never finishes the handshake
        with self.context.wrap_socket(plain, server_side=True) as tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away, timed out, or did not trust the certificate
        _log.exception("%s: error while serving %s", type(self.fake).__name__, client_address)

    def wake(self) -> None:
        """Knock, so that serve_forever sees it is to stop now, not at its next poll."""
        try:
            socket.create_connection((self.server_name, self.server_port), timeout=1).close()
        except OSError:
            pass

    def hang_up(self) -> None:
        """Close the connections still open (idle keep-alive ones, mostly)."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's
    # algorithm meets the client's delayed ACK and every answer stalls ~40 ms.
    disable_nagle_algorithm = True
    timeout = 30  # an idle keep-alive connection is closed after this long

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        with self._server.connections_lock:
            self._server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self._server.connections_lock:
                self._server.connections.discard(self.connection)

    def version_string(self) -> str:
        return self._server.fake.server_version

    def _serve(self) -> None:
        fake = self._server.fake
        head = HTTPRequest(self.command, self.path, tuple(self.headers.items()))
        try:
            body = fake._read_body(head, self.rfile)
            answer = fake._answer(HTTPRequest(head.method, head.path, head.headers, body))
        except BodyRefused as refused:
            self.close_connection = True
            answer = refused.answer
        except HungUp:
            self.close_connection = True
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test run should not print a line per request."""
