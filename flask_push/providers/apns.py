"""Apple Push Notification service (APNs) over HTTP/2 with token (.p8) authentication.

A :class:`~flask_push.message.Notification` becomes this JSON payload (compact UTF-8,
the bytes :meth:`APNsProvider.payload_size` counts)::

    {"aps": {"alert": {"title": "...", "body": "..."},  # each left out when empty
             "badge": 3,              # an int badge only (a str one is a Web Push icon)
             "sound": "default",      # when given
             "thread-id": "...",      # tag, else collapse_key: groups them on the device
             "mutable-content": 1},   # with an image, for the app's notification
                                      # service extension to download it
     "messageId": "msg_...",
     "url": "...", "image": "...", "data": {...}}   # when given

A notification without title, body, badge or sound is a background push:
``{"aps": {"content-available": 1}, ...}`` with ``apns-push-type: background`` and
priority 5, as Apple requires. ``icon`` has no APNs equivalent (the app icon is shown)
and ``url-args`` is left out: it only serves Safari's legacy website push, which
flask-push does through Web Push.

Request headers:

- ``apns-push-type``: ``alert``, or ``background`` as above;
- ``apns-priority``: 10 (deliver now) for ``high`` and ``normal`` urgency, 5 (the device
  may wait for a good moment to save power) for ``low`` and ``very-low``. ``normal`` is
  10 because an alert a user should see is not delayed on Web Push or FCM either; Apple
  keeps 5 for what may arrive late;
- ``apns-expiration``: now + ``ttl``; a ``ttl`` of 0 sends ``0`` (deliver once if the
  device is online, never store), which is what Apple means by 0;
- ``apns-collapse-id``: ``collapse_key``; a key longer than Apple's 64 bytes becomes its
  first 31 bytes, ``~`` and 32 hex digits of its SHA-256 (stable, still readable);
- ``apns-topic``: the ``topic`` setting (the app's bundle id);
- ``apns-id``: a UUID derived from the delivery id, so Apple's delivery log can be
  matched to the delivery.

The transport is aioapns' connection pool and HTTP/2 protocol, with the request and
response handling of its protocol redone in :class:`_Connection` (see there why), one
provider token shared by all connections, and connection failures reported at once
instead of after aioapns' 1 s sleeps. aioapns' proxy options are broken (a send hangs)
and not offered. All of aioapns' event-loop details stay in this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast
from urllib.parse import urlsplit

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
from h2.connection import ConnectionState
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

from ..message import DeliveryResult, DeviceTarget, Notification, OutgoingPush, Status
from .base import Provider

__all__ = ["PRODUCTION_HOST", "SANDBOX_HOST", "APNsProvider", "InvalidDeviceToken"]

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"

#: aioapns' default; each connection carries up to 1000 concurrent streams
MAX_CONNECTIONS = 10
#: tries per push when a connection drops under it (connect failures are not retried)
MAX_SEND_ATTEMPTS = 3
MAX_COLLAPSE_ID_BYTES = 64
#: ids are String(40) columns; payload_size assumes the longest
LONGEST_MESSAGE_ID = 40
#: provider tokens are renewed after this many seconds (Apple: between 20 and 60 minutes)
TOKEN_LIFETIME = 30 * 60

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"[0-9A-Fa-f]+")
_APNS_ID_NAMESPACE = uuid.UUID("6f1e0cf4-6a8d-4c5e-9b0b-2d3f6a1c7e55")
_GONE_REASONS = frozenset({"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"})
_RETRY_STATUSES = frozenset({"429", "500", "503"})


class InvalidDeviceToken(ValueError):
    """A device token that is not hex: APNs would refuse it, so it is never sent."""


class APNsProvider(Provider):
    """Sends to iOS, iPadOS and macOS apps through APNs with one pooled HTTP/2 client.

    Construction does no I/O: the client (TLS context and connections) is made in the
    running event loop on the first :meth:`post`. Use one loop at a time and call
    :meth:`aclose` in it when done.
    """

    name = "apns"
    max_payload = 4096

    def __init__(
        self,
        *,
        key: str,
        key_id: str,
        team_id: str,
        topic: str,
        host: str = PRODUCTION_HOST,
        port: int = 443,
        ssl_context: ssl.SSLContext | None = None,
        concurrency: int = 100,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(concurrency=concurrency, timeout=timeout)
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.host = host
        self.port = port
        self._ssl_context = ssl_context
        # One token for every connection and pool: signed lazily, renewed every 30 min.
        self._token = _ProviderToken(key, key_id, team_id)
        self._pool: _Pool | None = None

    # The base class takes any options; this provider names the ones it understands.
    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **options: Any) -> APNsProvider:
        """Build from normalized ``apns`` settings: ``baseUrl`` overrides ``sandbox``.

        ``options`` are the constructor's keywords (``concurrency``, ``timeout``,
        and ``ssl_context``, which replaces the default context: the system trust
        store, honouring ``SSL_CERT_FILE``); an unknown one raises TypeError.
        """
        base_url = settings.get("baseUrl")
        if base_url:
            parts = urlsplit(base_url)
            host, port = parts.hostname or "", parts.port or 443
        else:
            host, port = (SANDBOX_HOST if settings.get("sandbox") else PRODUCTION_HOST), 443
        return cls(
            key=settings["key"],
            key_id=settings["keyId"],
            team_id=settings["teamId"],
            topic=settings["topic"],
            host=host,
            port=port,
            **options,
        )

    # The pure steps

    def build_payload(self, push: OutgoingPush) -> NotificationRequest:
        """The request for ``push``: device token, payload and ``apns-*`` headers."""
        if not isinstance(push.target, DeviceTarget):
            raise TypeError(f"APNs sends to device tokens, not to {type(push.target).__name__}")
        token = push.target.token.strip()
        if not _TOKEN.fullmatch(token):
            raise InvalidDeviceToken("the device token is not hex, so it cannot be an APNs token")
        notification = push.notification
        payload = apns_payload(notification, push.message_id)
        background = "content-available" in payload["aps"]
        low = background or notification.urgency in ("low", "very-low")
        return NotificationRequest(
            token,
            payload,
            notification_id=str(uuid.uuid5(_APNS_ID_NAMESPACE, push.delivery_id)),
            time_to_live=max(notification.ttl, 0),
            priority=5 if low else 10,
            collapse_key=collapse_id(notification.collapse_key),
            push_type=PushType.BACKGROUND if background else PushType.ALERT,
        )

    def payload_size(self, notification: Notification) -> int:
        """Bytes of the JSON payload, with the longest message id."""
        return len(encode(apns_payload(notification, "m" * LONGEST_MESSAGE_ID)))

    def parse(self, push: OutgoingPush, response: Any) -> DeliveryResult:
        """Map APNs' answer (or the error ``post`` raised) onto a :class:`DeliveryResult`."""
        if isinstance(response, NotificationResult):
            return self._parse_result(push, response)
        if isinstance(response, InvalidDeviceToken):
            return DeliveryResult(push.delivery_id, "gone", self.name, error=str(response))
        if isinstance(
            response, (MaxAttemptsExceeded, ConnectionClosed, APNsConnectionError, OSError)
        ):
            detail = str(response) or type(response).__name__
            if isinstance(response, MaxAttemptsExceeded):
                detail = "the connection dropped on every attempt"
            return DeliveryResult(
                push.delivery_id,
                "retry",
                self.name,
                error=f"could not reach APNs at {self.host}:{self.port}: {detail}",
            )
        return DeliveryResult(
            push.delivery_id,
            "failed",
            self.name,
            error=f"{type(response).__name__}: {response}",
        )

    def _parse_result(self, push: OutgoingPush, result: NotificationResult) -> DeliveryResult:
        status, reason = result.status, result.description or ""
        code = int(status) if status.isdigit() else None

        def outcome(kind: Status, error: str | None = None) -> DeliveryResult:
            return DeliveryResult(push.delivery_id, kind, self.name, error, code)

        if status == "200":
            return outcome("sent")
        if status == "410" or reason in _GONE_REASONS:
            error = reason or "Unregistered"
            if result.timestamp:
                since = datetime.fromtimestamp(result.timestamp / 1000, timezone.utc)
                error += f" (the token is invalid since {since.isoformat(timespec='seconds')})"
            elif reason == "BadDeviceToken":
                error += " (or a token of the other environment: check PUSH_APNS_SANDBOX)"
            elif reason == "DeviceTokenNotForTopic":
                error += f" (the token belongs to another app than {self.topic})"
            return outcome("gone", error)
        if status in _RETRY_STATUSES:
            return outcome("retry", f"{status} {reason}".strip())
        if status == "403":
            hint = (
                "check the server clock"
                if reason == "ExpiredProviderToken"
                else f"check PUSH_APNS_KEY, its key id {self.key_id} and the team id "
                f"{self.team_id}, and that the key was not revoked"
            )
            return outcome("failed", f"403 {reason}: APNs refused the provider token; {hint}")
        if status == "413":
            return outcome("failed", f"413 {reason}: the payload is over {self.max_payload} bytes")
        if reason in ("BadTopic", "TopicDisallowed", "MissingTopic"):
            return outcome("failed", f"{status} {reason}: check PUSH_APNS_TOPIC ({self.topic})")
        return outcome("failed", f"{status} {reason}".strip() or "no status from APNs")

    # The client

    async def post(self, push: OutgoingPush, payload: NotificationRequest) -> NotificationResult:
        """Send one request on the pooled connections; APNs' errors come back as results."""
        return await self._client().send_notification(payload)

    async def aclose(self) -> None:
        """Close the connections and wait until they are gone (else ResourceWarnings)."""
        pool, self._pool = self._pool, None
        if pool is None or pool.loop is not asyncio.get_running_loop():
            return  # a pool of a finished loop: its transports went with the loop
        pool.close()
        if not await _drained(pool, 2.0):
            # A peer that never answers the TLS close: cut it off.
            for connection in pool.connections:
                if connection.transport is not None:
                    connection.transport.abort()
            await _drained(pool, 1.0)

    def _client(self) -> _Pool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool.loop is not loop:
            context = self._ssl_context
            if context is None:
                # Reads the trust store (SSL_CERT_FILE honoured): I/O, so not at construction.
                context = ssl.create_default_context()
                context.set_alpn_protocols(["h2"])
            self._pool = _Pool(
                host=self.host,
                port=self.port,
                topic=self.topic,
                token=self._token,
                ssl_context=context,
            )
        return self._pool


async def _drained(pool: _Pool, seconds: float) -> bool:
    """Wait until every connection of ``pool`` is gone (connection_lost has run)."""
    deadline = pool.loop.time() + seconds
    while pool.connections and pool.loop.time() < deadline:
        await asyncio.sleep(0.005)
    return not pool.connections


# Payload and headers


def apns_payload(notification: Notification, message_id: str) -> dict[str, Any]:
    """The APNs JSON payload for ``notification`` (see the module docstring)."""
    aps: dict[str, Any] = {}
    if notification.title or notification.body:
        alert: dict[str, str] = {}
        if notification.title:
            alert["title"] = notification.title
        if notification.body:
            alert["body"] = notification.body
        aps["alert"] = alert
    # bool is an int too, and a str badge is a Web Push icon URL
    if isinstance(notification.badge, int) and not isinstance(notification.badge, bool):
        aps["badge"] = notification.badge
    if notification.sound:
        aps["sound"] = notification.sound
    if aps:
        thread = notification.tag or notification.collapse_key
        if thread:
            aps["thread-id"] = thread
        if notification.image and "alert" in aps:
            aps["mutable-content"] = 1
    else:
        aps["content-available"] = 1
    payload: dict[str, Any] = {"aps": aps, "messageId": message_id}
    if notification.url:
        payload["url"] = notification.url
    if notification.image:
        payload["image"] = notification.image
    if notification.data:
        payload["data"] = dict(notification.data)
    return payload


def encode(payload: Mapping[str, Any]) -> bytes:
    """The payload as sent: compact JSON in UTF-8."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def collapse_id(key: str | None) -> str | None:
    """``key`` when it fits ``apns-collapse-id`` (64 bytes), else a stable shorter form."""
    if key is None:
        return None
    raw = key.encode()
    if len(raw) <= MAX_COLLAPSE_ID_BYTES:
        return key
    # 31 + 1 + 32 bytes; "ignore" drops a character cut in half at the end.
    prefix = raw[:31].decode("utf-8", "ignore")
    return f"{prefix}~{hashlib.sha256(raw).hexdigest()[:32]}"


# Transport: aioapns with its gaps filled


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
        self._issued_at = 0.0

    def get_header(self) -> str:
        now = time.time()
        if now - self._issued_at >= TOKEN_LIFETIME:
            token = jwt.encode(
                {"iss": self.team_id, "iat": int(now)},
                self.key,
                algorithm="ES256",
                headers={"kid": self.key_id},
            )
            self._header, self._issued_at = f"bearer {token}", now
        return self._header


@dataclass
class _Exchange:
    """One request in flight on one stream."""

    notification_id: str
    result: asyncio.Future[NotificationResult]
    status: str = ""
    body: bytearray = field(default_factory=bytearray)


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
        self._on_lost = on_lost
        self.authority = authority
        self.exchanges: dict[int, _Exchange] = {}
        self.lost = False
        self._flush_scheduled = False
        # Set whenever frames arrive: a WINDOW_UPDATE may let a waiting body go out.
        self.window_opened = asyncio.Event()

    @property
    def is_busy(self) -> bool:
        # A closing connection takes no new streams: the pool opens another.
        closing = self.transport is None or self.transport.is_closing()
        return self.lost or closing or super().is_busy

    async def send_notification(self, request: NotificationRequest) -> NotificationResult:
        stream_id = await self.free_channels.acquire()
        if self.lost or self.conn.state_machine.state is ConnectionState.CLOSED:
            raise ConnectionClosed("the connection closed before the request went out")
        exchange = _Exchange(request.notification_id, self.loop.create_future())
        self.exchanges[stream_id] = exchange
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
            ("apns-id", request.notification_id),
            ("apns-topic", request.apns_topic or self.apns_topic),
        ]
        if request.time_to_live is not None:
            # aioapns sends now + 0 for 0, a date already past; Apple's 0 means "once".
            ttl = request.time_to_live
            headers.append(("apns-expiration", str(int(time.time()) + ttl if ttl > 0 else 0)))
        if request.priority is not None:
            headers.append(("apns-priority", str(request.priority)))
        if request.collapse_key is not None:
            headers.append(("apns-collapse-id", request.collapse_key))
        if request.push_type is not None:
            headers.append(("apns-push-type", request.push_type.value))
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
                    exchange.body += event.data or b""
                # Give the credit back, or the server stops sending after 64 KiB.
                self.conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
            elif isinstance(event, StreamEnded):
                self._finish(stream_id)
            elif isinstance(event, StreamReset):
                self._finish(stream_id, ConnectionClosed(f"APNs reset the stream: {event}"))
            elif isinstance(event, RemoteSettingsChanged):
                # h2 keys them by int; aioapns' annotation says SettingCodes (an IntEnum).
                self.on_remote_settings_changed(cast(Any, event.changed_settings))
            elif isinstance(event, ConnectionTerminated):
                self.on_connection_terminated(event)
        self.window_opened.set()
        self.flush()

    def on_connection_terminated(self, event: ConnectionTerminated) -> None:
        # GOAWAY: APNs closes idle or old connections with NO_ERROR as routine; aioapns
        # logs each at WARNING. The requests still open are retried on a new connection.
        level = logging.INFO if event.error_code == ErrorCodes.NO_ERROR else logging.WARNING
        logger.log(
            level, "APNs closed the connection: %s %r", event.error_code, event.additional_data
        )
        self.close()

    def _finish(self, stream_id: int, error: Exception | None = None) -> None:
        exchange = self.exchanges.pop(stream_id, None)
        if exchange is None:
            return
        self.free_channels.release()
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

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        error = ConnectionClosed(str(exc) if exc else "the connection closed")
        for exchange in self.exchanges.values():
            if not exchange.result.done():
                exchange.result.set_exception(error)
        self.exchanges.clear()
        self.window_opened.set()
        self._on_lost(self)
        # Cancels the idle timer and fails the requests waiting for a stream.
        super().connection_lost(exc)


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
