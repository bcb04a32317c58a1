"""APNs' transport: aioapns' HTTP/2 connection pool with its gaps filled.

The ``apns`` extra (aioapns, with h2) is imported here only, and this module is
imported by :class:`~flask_push.providers.apns.APNsProvider` when it builds or
sends a request, so that the provider's kind can be read without the extra.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import jwt
from aioapns.common import NotificationRequest, NotificationResult, PushType
from aioapns.connection import (
    APNsBaseClientProtocol,
    APNsBaseConnectionPool,
    APNsTLSClientProtocol,
    AuthorizationHeaderProvider,
)
from aioapns.exceptions import ConnectionClosed, MaxAttemptsExceeded
from aioapns.exceptions import ConnectionError as APNsConnectionError
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import ProtocolError
from hyperframe.frame import Frame, GoAwayFrame

from .apns import (
    MAX_CONNECTIONS,
    MAX_SEND_ATTEMPTS,
    MIN_TOKEN_AGE,
    TOKEN_LIFETIME,
    apns_headers,
    encode,
)

__all__ = [
    "APNsConnectionError",
    "AnswerLost",
    "ConnectionClosed",
    "MaxAttemptsExceeded",
    "NotificationRequest",
    "NotificationResult",
    "PushType",
]

logger = logging.getLogger("flask_push.providers.apns")

#: seconds after an ExpiredProviderToken renewed the token in which the same answer
#: to other pushes is taken as theirs of the old token (they were on their way)
RENEWED_LATELY = 60.0
#: the most of an answer's body kept: APNs' are a line of JSON, and a server that
#: sends more (an endless body) must not fill the memory
MAX_ERROR_BODY = 4096


class _ProviderToken(AuthorizationHeaderProvider):
    """The ES256 provider token, shared by every connection.

    aioapns signs a new token per connection; APNs answers 429
    TooManyProviderTokenUpdates when tokens change more often than every 20 minutes,
    which reconnecting after each idle spell would cause.
    """

    def __init__(self, key: str, key_id: str, team_id: str) -> None:
        self.key = key
        self.key_id = key_id
        self.team_id = team_id
        self._header = ""
        #: when (``time.monotonic()``) the token was signed, None before the first:
        #: its age is read on a clock that a correction of the wall clock (NTP
        #: stepping it back) does not move, which would keep an expired token
        self._signed_at: float | None = None
        #: when (monotonic) an ExpiredProviderToken last renewed it
        self._renewed_at: float | None = None

    def get_header(self) -> str:
        now = time.monotonic()
        if self._signed_at is None or now - self._signed_at >= TOKEN_LIFETIME:
            token = jwt.encode(
                {"iss": self.team_id, "iat": int(time.time())},
                self.key,
                algorithm="ES256",
                headers={"kid": self.key_id},
            )
            self._header, self._signed_at = f"bearer {token}", now
        return self._header

    def renew_if_old(self) -> bool:
        """APNs said the token expired: sign another for the next request, unless
        this one is younger than APNs' 20 minutes between changes (then the clock,
        not the token, is wrong, and a new token would be refused the same way, or
        with TooManyProviderTokenUpdates). Whether the push's next try carries a new
        token: true too for the pushes that were on their way with the old one when
        the first answer renewed it (they get the same answer moments later)."""
        now = time.monotonic()
        renewed_at = self._renewed_at
        if renewed_at is not None and now - renewed_at < RENEWED_LATELY:
            return True
        signed_at = self._signed_at
        if signed_at is None or now - signed_at < MIN_TOKEN_AGE:
            return False
        self._signed_at, self._renewed_at = None, now
        return True


class AnswerLost(Exception):
    """The connection broke after the request went out, before its answer came: APNs
    may have taken it and shown it. Not a ConnectionClosed, which aioapns' pool
    sends again at once, unseen: the device would show it twice, while the push's
    outcome said the connection had failed."""


@dataclass
class _Exchange:
    """One request in flight on one stream."""

    notification_id: str
    result: asyncio.Future[NotificationResult]
    status: str = ""
    body: bytearray = field(default_factory=bytearray)
    #: its headers were written to the connection: APNs may have it
    out: bool = False


class _H2Client(H2Connection):
    """h2's client connection, reading on after a GOAWAY.

    RFC 9113 (6.8): a server closing a connection gracefully names the last stream it
    took and still answers the streams up to it. h2 4 takes its connection as closed
    on a GOAWAY and refuses every frame after it as a protocol error, so those
    answers could not be read and aioapns sent the pushes again on a new connection,
    while APNs had taken them: the device showed them twice.
    """

    def __init__(self) -> None:
        super().__init__()
        #: the last stream the server said it took, once it sent a GOAWAY
        self.last_taken: int | None = None

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Any]]:
        frames, events = super()._receive_goaway_frame(frame)
        taken = frame.last_stream_id
        self.last_taken = taken if self.last_taken is None else min(self.last_taken, taken)
        # open again for the answers still to come; _Connection opens no new stream
        self.state_machine.state = ConnectionState.CLIENT_OPEN
        return frames, events


class _Connection(APNsTLSClientProtocol):
    """One HTTP/2 connection: aioapns' protocol with its request handling redone.

    aioapns 4.0, as measured against FakeAPNs: it never gives back flow-control credit
    for response bodies, so after about 64 KiB of error bodies the connection hangs; it
    raises FlowControlError when request bodies outrun the send window, leaving
    half-open streams behind and sleeping 1 s; it crashes the connection with
    InvalidStateError when a request that timed out is answered; and it ignores
    RST_STREAM. So requests are tracked per stream here, and aioapns still provides the
    stream limit (MAX_CONCURRENT_STREAMS), the idle timeout and the pool.
    """

    def __init__(
        self,
        topic: str,
        loop: asyncio.AbstractEventLoop,
        on_lost: Callable[[APNsBaseClientProtocol], None],
        token: AuthorizationHeaderProvider,
        authority: str,
    ) -> None:
        super().__init__(topic, loop, None, token)
        self.conn: _H2Client = _H2Client()
        self._on_lost = on_lost
        self.authority = authority
        self.exchanges: dict[int, _Exchange] = {}
        #: exchanges whose headers are not written to the transport yet
        self.unwritten: list[_Exchange] = []
        self.lost = False
        self._flush_scheduled = False
        # Set whenever frames arrive: a WINDOW_UPDATE may let a waiting body go out.
        self.window_opened = asyncio.Event()

    @property
    def is_busy(self) -> bool:
        # A closing connection takes no new streams: the pool opens another.
        closing = self.transport is None or self.transport.is_closing()
        going_away = self.conn.last_taken is not None
        return self.lost or closing or going_away or super().is_busy

    async def send_notification(self, request: NotificationRequest) -> NotificationResult:
        stream_id = await self.free_channels.acquire()
        closed = self.conn.state_machine.state is ConnectionState.CLOSED
        if self.lost or closed or self.conn.last_taken is not None:
            self.free_channels.release()
            raise ConnectionClosed("the connection closed before the request went out")
        exchange = _Exchange(request.notification_id, self.loop.create_future())
        self.exchanges[stream_id] = exchange
        self.unwritten.append(exchange)
        try:
            self.conn.send_headers(stream_id, self._headers(request))
            await self._send_body(stream_id, exchange, encode(request.message))
            return await exchange.result
        except BaseException:
            self._abandon(stream_id)
            if exchange.result.done() and not exchange.result.cancelled():
                exchange.result.exception()  # seen, so asyncio does not log it as lost
            raise

    def _headers(self, request: NotificationRequest) -> list[tuple[str, str]]:
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", f"/3/device/{request.device_token}"),
            ("host", self.authority),
            *apns_headers(request, self.apns_topic, time.time()),
        ]
        if self.auth_provider is not None:
            headers.append(("authorization", self.auth_provider.get_header()))
        return headers

    async def _send_body(self, stream_id: int, exchange: _Exchange, body: bytes) -> None:
        """Send ``body`` as the flow-control windows allow, waiting for WINDOW_UPDATEs."""
        sent = 0
        while not exchange.result.done():  # else answered early (or reset): stop sending
            window = self.conn.local_flow_control_window(stream_id)
            room = max(0, min(window, self.conn.max_outbound_frame_size))
            chunk = body[sent : sent + room]
            sent += len(chunk)
            last = sent == len(body)
            if chunk or last:
                self.conn.send_data(stream_id, chunk, end_stream=last)
                self._flush_soon()
            if last:
                return
            self.window_opened.clear()
            await self.window_opened.wait()
            if self.lost:
                raise ConnectionClosed("the connection closed while sending")

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError:
            # h2 has queued a GOAWAY: send it and hang up; the pool retries what was open.
            self.flush()
            self.close()
            return
        for event in events:
            stream_id = getattr(event, "stream_id", None) or 0
            exchange = self.exchanges.get(stream_id)
            if isinstance(event, ResponseReceived):
                if exchange is not None:
                    exchange.status = dict(event.headers or []).get(b":status", b"").decode()
            elif isinstance(event, DataReceived):
                if exchange is not None:
                    # an error body is a line of JSON: what is past it is not kept
                    room = MAX_ERROR_BODY - len(exchange.body)
                    exchange.body += (event.data or b"")[: max(room, 0)]
                # Give the credit back, or the server stops sending after 64 KiB.
                self.conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
            elif isinstance(event, StreamEnded):
                self._finish(stream_id)
            elif isinstance(event, StreamReset):
                self._finish(stream_id, _reset(event))
            elif isinstance(event, RemoteSettingsChanged):
                # h2 keys them by int; aioapns' annotation says SettingCodes (an IntEnum).
                self.on_remote_settings_changed(cast(Any, event.changed_settings))
            elif isinstance(event, ConnectionTerminated):
                self.on_connection_terminated(event)
        self.window_opened.set()
        self.flush()

    def on_connection_terminated(self, event: ConnectionTerminated) -> None:
        # GOAWAY: APNs closes idle or old connections with NO_ERROR as routine; aioapns
        # logs each at WARNING. The requests it took are answered on this connection;
        # those it did not take were not delivered, and the pool sends them again on
        # another (aioapns does on ConnectionClosed).
        last = self.conn.last_taken or 0
        again = [stream_id for stream_id in self.exchanges if stream_id > last]
        for stream_id in again:
            self._finish(stream_id, ConnectionClosed("APNs closed the connection before taking it"))
        code = event.error_code
        level = logging.INFO if code == ErrorCodes.NO_ERROR else logging.WARNING
        said = getattr(code, "name", code)
        if event.additional_data:
            said = f"{said} {event.additional_data!r}"
        logger.log(
            level,
            "APNs is closing a connection (GOAWAY %s): the %d requests it took are "
            "answered on it, the %d it did not take go on another",
            said,
            len(self.exchanges),
            len(again),
        )
        self._close_once_answered()

    def _close_once_answered(self) -> None:
        """After a GOAWAY, close the connection once no request on it waits for its
        answer (each is bounded by the push's timeout)."""
        if self.conn.last_taken is not None and not self.exchanges:
            self.close()

    def _finish(self, stream_id: int, error: Exception | None = None) -> None:
        exchange = self.exchanges.pop(stream_id, None)
        if exchange is None:
            return
        self.free_channels.release()
        self._close_once_answered()
        if exchange.result.done():
            return
        if error is not None:
            exchange.result.set_exception(error)
            return
        reason, timestamp = _error_body(bytes(exchange.body))
        exchange.result.set_result(
            NotificationResult(exchange.notification_id, exchange.status, reason, timestamp)
        )

    def _abandon(self, stream_id: int) -> None:
        """Forget a request nobody waits for any more (timed out), and cancel its stream."""
        if self.exchanges.pop(stream_id, None) is None:
            return
        self.free_channels.release()
        if self.lost:
            return
        if self.conn.last_taken is not None and not self.exchanges:
            self.close()  # the last one the GOAWAY left: no stream to cancel on a closing one
            return
        try:
            self.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        except ProtocolError:
            pass  # never opened, or already closed
        self.flush()

    def _flush_soon(self) -> None:
        # One write for all the requests made in this turn of the loop, not one TLS
        # record and syscall per request (about 10 % less CPU for a batch).
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        # Writing to a closing transport only makes asyncio log "SSL connection is closed".
        if self.transport is not None and not self.transport.is_closing():
            super().flush()
            # only those queued since the last flush: a flush comes with every frame
            # received, and looping over every request in flight made each one's
            # cost grow with their number
            for exchange in self.unwritten:
                exchange.out = True
            self.unwritten.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        said = str(exc) if exc else "the connection closed"
        for exchange in self.exchanges.values():
            if not exchange.result.done():
                # one never written goes on another connection; one written may be
                # APNs' already: its outcome says so, and it is not sent again unseen
                lost = AnswerLost(said) if exchange.out else ConnectionClosed(said)
                exchange.result.set_exception(lost)
        self.exchanges.clear()
        self.unwritten.clear()
        self.window_opened.set()
        self._on_lost(self)
        # Marked closed: Python 3.10's SSL transport is not, when APNs hangs up, and
        # warns "unclosed transport" when it is collected (3.11 marks it).
        if self.transport is not None:
            self.transport.close()
        # Cancels the idle timer and fails the requests waiting for a stream.
        super().connection_lost(exc)


def _reset(event: StreamReset) -> Exception:
    """What APNs' RST_STREAM means for its request: REFUSED_STREAM says it was not
    processed (RFC 9113, 8.7), so it goes on another connection; any other code
    leaves it unknown whether APNs took it."""
    code = event.error_code
    said = f"APNs reset the stream ({getattr(code, 'name', code)})"
    if code == ErrorCodes.REFUSED_STREAM:
        return ConnectionClosed(said)
    return AnswerLost(said)


def _error_body(body: bytes) -> tuple[str | None, int | None]:
    """``reason`` and ``timestamp`` of APNs' JSON error body, if any."""
    if not body:
        return None, None
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:200], None
    if not isinstance(data, dict):
        return None, None
    reason, timestamp = data.get("reason"), data.get("timestamp")
    return (
        str(reason) if reason else None,
        timestamp if isinstance(timestamp, int) else None,
    )


class _Pool(APNsBaseConnectionPool):
    """aioapns' pool of :class:`_Connection`; build it inside the running loop."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        topic: str,
        token: AuthorizationHeaderProvider,
        ssl_context: ssl.SSLContext,
    ) -> None:
        super().__init__(
            topic=topic, max_connections=MAX_CONNECTIONS, max_connection_attempts=MAX_SEND_ATTEMPTS
        )
        self.protocol_class = _Connection
        self.host = host
        self.port = port
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal
        self.authority = name if port == 443 else f"{name}:{port}"
        self.token = token
        self.ssl_context = ssl_context
        self._failures = 0
        self._last_failure: BaseException | None = None

    async def create_connection(self) -> APNsBaseClientProtocol:
        topic = self.apns_topic or ""
        _, connection = await self.loop.create_connection(
            lambda: _Connection(
                topic, self.loop, self.discard_connection, self.token, self.authority
            ),
            self.host,
            self.port,
            ssl=self.ssl_context,
        )
        return connection

    def discard_connection(self, connection: APNsBaseClientProtocol) -> None:
        # aioapns' remove() raises for a connection whose connect was cancelled late.
        if connection in self.connections:
            self.connections.remove(connection)

    async def acquire(self) -> APNsBaseClientProtocol:
        """A connection with a free stream, connecting when there is none.

        aioapns sleeps 1 s after a failed connect and tries again, for every push; here
        the error is raised at once, and pushes that waited for that attempt share it,
        so a batch sent while APNs is unreachable comes back promptly as ``retry``.
        """
        while True:
            for connection in self.connections:
                if not connection.is_busy:
                    return connection
            if len(self.connections) >= self.max_connections:
                await asyncio.sleep(0.01)  # every stream busy: wait as aioapns does
                continue
            failures = self._failures
            async with self._lock:
                if self._failures != failures:
                    raise ConnectionError(f"connecting failed: {self._last_failure}")
                if len(self.connections) >= self.max_connections or any(
                    not connection.is_busy for connection in self.connections
                ):
                    continue
                try:
                    connection = await self.create_connection()
                except Exception as err:
                    self._failures += 1
                    self._last_failure = err
                    raise
                self.connections.append(connection)
                return connection
