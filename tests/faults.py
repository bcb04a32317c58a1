"""Faults on the wire, for tests: a push service that never answers, and a TCP
proxy whose connections can be cut (a database that restarts).

Both are real sockets on 127.0.0.1 served by threads, so the code under test
sees what it would see in production: connections that hang, or that are closed
under it and refused for a while.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TypeVar

_L = TypeVar("_L", bound="_Listener")


class _Listener:
    """Accepts connections on 127.0.0.1 in a thread and hands each to ``serve``."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._sockets.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def drop_connections(self) -> None:
        """Close every connection made so far, as a crashed server would."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def __enter__(self: _L) -> _L:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        _close(self._listener)
        self.drop_connections()
        self._thread.join(5)


class SilentService(_Listener):
    """A push service that reads each request and never answers it."""

    def __init__(self) -> None:
        super().__init__()
        self._requests = 0
        self.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        """How many request heads arrived (each one is left without an answer)."""
        with self._lock:
            return self._requests

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            data += chunk
            # aiohttp sends one request per connection at a time: count heads
            while b"\r\n\r\n" in data:
                _, data = data.split(b"\r\n\r\n", 1)
                with self._lock:
                    self._requests += 1


class TcpProxy(_Listener):
    """Forwards connections to ``upstream``; :meth:`cut` closes them all and
    refuses new ones (accepts and closes at once) until :meth:`restore`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__()
        self.upstream = upstream
        self._cut = threading.Event()
        self.start()

    def cut(self) -> None:
        self._cut.set()
        self.drop_connections()

    def restore(self) -> None:
        self._cut.clear()

    def serve(self, conn: socket.socket) -> None:
        if self._cut.is_set():
            _close(conn)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _close(conn)
            return
        upstream.settimeout(None)
        self._track(upstream)
        pump: Callable[[socket.socket, socket.socket], None] = _pump
        threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()
        pump(conn, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
