"""Helpers for websocket tests: a live server in a thread, an app served in a process
of its own, and a JSON client."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import simple_websocket
from flask import Flask
from werkzeug.serving import make_server

HERE = Path(__file__).parent


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free port in a thread; yields its ws:// origin."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


class _Socket(simple_websocket.Client):  # type: ignore[misc]
    """simple-websocket's client, sending the ``Host`` a browser sends: with the
    port (RFC 6455 section 4.1; simple-websocket leaves it out), or the one given.
    Like a browser, it reads a close that came with the 101, or during a write, as
    that close."""

    def __init__(self, url: str, headers: dict[str, str], host: str | None) -> None:
        self._host_header = host
        super().__init__(url, headers=headers)

    def handshake(self) -> None:
        # called by the base class's constructor, once the socket is connected
        self.host = self._host_header or f"{self.host}:{self.port}"
        try:
            super().handshake()
        except BaseException:
            self.sock.close()  # a refused handshake (a 403, say) leaves it open
            raise

    def _thread(self) -> None:
        # The base class's handshake takes the 101 alone from what it read: frames that
        # came in the same read would wait in wsproto's buffer for more data, and a
        # close sent at once would read as the socket's end, with no status (1005).
        # Its reader takes them first.
        self.connected = self._handle_events()
        if self.connected:
            super()._thread()
        else:
            self.sock.close()

    def send(self, data: Any) -> None:
        try:
            super().send(data)
        except OSError:
            # The base class checks that it is connected, then writes: a close the reader
            # thread takes in between closes the socket under the write (a close sent at
            # once after the handshake, say). That is the close, as a send after it says.
            self.thread.join(timeout=3)
            if self.connected:
                raise
            raise simple_websocket.ConnectionClosed(self.close_reason, self.close_message) from None


class Client:
    """A websocket client that speaks JSON frames, with a timeout on every read.

    ``origin`` is sent as a browser sends it (none by default, as an app's client),
    ``host`` replaces the ``Host`` header (as a proxy in front would pass it on).
    """

    def __init__(
        self,
        url: str,
        user: str | None = None,
        *,
        origin: str | None = None,
        host: str | None = None,
    ) -> None:
        headers = {"X-User": user} if user else {}
        if origin is not None:
            headers["Origin"] = origin
        self.ws = _Socket(url, headers, host)

    def send(self, message: Any) -> None:
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def recv(self, timeout: float = 3) -> dict[str, Any]:
        raw = self.ws.receive(timeout=timeout)
        assert raw is not None, f"nothing received within {timeout} s"
        return json.loads(raw)  # type: ignore[no-any-return]

    def nothing(self, timeout: float = 0.3) -> None:
        raw = self.ws.receive(timeout=timeout)
        assert raw is None, f"unexpected frame {raw!r}"

    def sync(self) -> None:
        """A ping round trip: frames sent before it have been answered."""
        self.send({"op": "ping"})
        assert self.recv() == {"op": "pong"}

    def close(self) -> None:
        try:
            self.ws.close()
        except simple_websocket.ConnectionClosed:
            pass


class ServerProcess:
    """``ws_server.py`` (or ``script``, which serves its app) in a process of its own."""

    def __init__(
        self, backplane: str, prefix: str, database: Path, script: str = "ws_server.py"
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / script), backplane, prefix, str(database)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=HERE,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 20)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("port "):
            self.stop()
            raise AssertionError(f"the server did not start: {line!r}")
        self.origin = f"127.0.0.1:{int(line.split()[1])}"
        # keep draining its log, so a full pipe never blocks it
        self._reader = threading.Thread(target=self.process.stdout.read, daemon=True)
        self._reader.start()

    @property
    def ws(self) -> str:
        return f"ws://{self.origin}/push/ws"

    def publish(self, channel: str, event: str, data: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://{self.origin}/publish",
            data=json.dumps({"channel": channel, "event": event, "data": data}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.join(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()
