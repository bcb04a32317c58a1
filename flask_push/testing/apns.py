"""A local Apple Push Notification service: HTTP/2 over TLS with token authentication.

:class:`FakeAPNs` answers the requests of a real APNs client (such as aioapns) the way
``api.push.apple.com`` does, and records what it delivers, so a test can send through
the real client and then look at what the device would have received::

    with FakeAPNs(topic="com.example.shop") as apns:
        key_pem, key_id, team_id = apns.auth_key()
        ...  # send with aioapns, pointed at apns.host / apns.port
        [notification] = apns.wait(1)
        assert notification.payload["aps"]["alert"] == "Hello"

Each request is checked as Apple checks it, and rejected with the status and JSON
``{"reason": ...}`` body that Apple documents: the provider token (an ES256 JWT signed
by a key from :meth:`FakeAPNs.auth_key`, at most an hour old), the topic, the
``apns-*`` headers, the device token and the payload. Tests script the rest:
:meth:`FakeAPNs.unregister` a device (410 Unregistered), :meth:`FakeAPNs.fail_next`
with any status (429 TooManyRequests, 503 ServiceUnavailable, ...), or
:meth:`FakeAPNs.go_away` to close the connections in the middle of a batch.

The server runs in a background thread with its own event loop, on ``127.0.0.1`` and a
free port, with a throwaway certificate (:mod:`flask_push.testing.tls`) valid for
``localhost`` and ``127.0.0.1``. It speaks HTTP/2 whether or not the client negotiates
ALPN (aioapns does not), serves many concurrent streams on each connection and many
connections, and honours HTTP/2 flow control in both directions.

Live Activity pushes (``apns-push-type: liveactivity``) are checked against the rules of
Apple's "Starting and updating Live Activities with ActivityKit push notifications":
the topic ends with ``.push-type.liveactivity`` (else 400 TopicDisallowed), the priority
is 5 or 10 (else 400 BadPriority), and ``aps`` has an integer ``timestamp``, an
``event`` of ``start``, ``update`` or ``end``, a ``content-state`` object, and
``attributes-type`` with ``attributes`` exactly when the event is ``start``. APNs
itself passes such payloads on and the device drops a bad one without a word; the fake
refuses them instead, with 400 ``BadPayload`` (its own reason, as for malformed JSON)
and the broken rule in :attr:`RejectedRequest.detail`, so that a test sees the mistake.
:attr:`FakeAPNs.live_activities` shows each Live Activity token's newest state, as the
device would show it.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings

from .service import FakeService, ScriptedFailure
from .tls import LocalCertificate, temporary_certificate

if TYPE_CHECKING:
    from aioapns.connection import APNsDevelopmentClientProtocol

__all__ = [
    "PUSH_TYPES",
    "FakeAPNs",
    "LiveActivity",
    "ReceivedNotification",
    "RejectedRequest",
]

#: The values APNs accepts in ``apns-push-type``.
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "location",
        "pushtotalk",
    }
)

#: What Apple requires appended to the bundle id in ``apns-topic`` for some push types.
TOPIC_SUFFIXES = {
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "pushtotalk": ".voip-ptt",
}

#: Largest accepted payload in bytes (VoIP pushes may carry 5120).
MAX_PAYLOAD_SIZE = 4096
MAX_VOIP_PAYLOAD_SIZE = 5120
#: APNs refuses provider tokens issued more than an hour ago.
PROVIDER_TOKEN_LIFETIME = 3600
#: Seconds a provider token's ``iat`` may lie in the future (clock skew).
CLOCK_SKEW = 60
MAX_COLLAPSE_ID_SIZE = 64
PRIORITIES = frozenset({"1", "5", "10"})
#: Live Activity pushes are delivered now (10) or when convenient (5); 1 is refused
LIVE_ACTIVITY_PRIORITIES = frozenset({"5", "10"})
LIVE_ACTIVITY_EVENTS = frozenset({"start", "update", "end"})

_DEVICE_PATH = "/3/device/"
# Apple says not to rely on a token's length: device tokens are 32 bytes today, Live
# Activity and push-to-start tokens longer. Hex of 32 to 100 bytes, as the provider takes.
_DEVICE_TOKEN = re.compile(r"(?:[0-9a-fA-F]{2}){32,100}")
_APNS_ID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", re.IGNORECASE)
_INTEGER = re.compile(r"[0-9]+")
# Headers that must not be sent twice (400 DuplicateHeaders).
_SINGLE_HEADERS = (
    "authorization",
    "apns-id",
    "apns-topic",
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
)


@dataclass(frozen=True)
class ReceivedNotification:
    """A notification the fake accepted (answered 200), as the device would get it."""

    #: The device token from the request path.
    device_token: str
    #: The request's ``apns-*`` headers (``apns-id`` always present: sent or generated).
    headers: dict[str, str]
    #: The decoded JSON payload (it has an ``aps`` dictionary).
    payload: dict[str, Any]
    #: When the fake accepted it (:func:`time.time`).
    received_at: float

    @property
    def apns_id(self) -> str:
        return self.headers["apns-id"]

    @property
    def topic(self) -> str:
        return self.headers["apns-topic"]

    @property
    def push_type(self) -> str | None:
        return self.headers.get("apns-push-type")

    @property
    def aps(self) -> dict[str, Any]:
        aps: dict[str, Any] = self.payload["aps"]
        return aps


@dataclass(frozen=True)
class RejectedRequest:
    """A request the fake answered with an error, for tests that check the failures."""

    #: The device token from the path ("" when the path had none).
    device_token: str
    status: int
    reason: str
    #: The request's ``apns-*`` headers as sent.
    headers: dict[str, str]
    received_at: float
    #: Which rule the request broke, in words (not sent: APNs answers the reason only).
    detail: str = ""


@dataclass(frozen=True)
class LiveActivity:
    """A Live Activity as the device shows it: the newest state pushed to one token."""

    #: The Live Activity's push token, or the push-to-start token it was started with.
    token: str
    #: ``start``, ``update`` or ``end`` (an ended one stays until it is dismissed).
    event: str
    #: ``aps.timestamp``: a push older than the one shown is ignored, as on the device.
    timestamp: int
    content_state: dict[str, Any]
    #: The last push's ``aps`` whole (``alert``, ``stale-date``, ``dismissal-date``...).
    aps: dict[str, Any]
    #: The ``attributes-type`` and ``attributes`` it was started with, by push-to-start.
    attributes_type: str | None
    attributes: dict[str, Any] | None
    #: When the fake accepted the push shown (:func:`time.time`).
    received_at: float


@dataclass(frozen=True)
class _IssuedKey:
    team_id: str
    public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class _Response:
    status: int
    apns_id: str
    body: bytes | None = None


class _Rejected(Exception):
    def __init__(
        self, status: int, reason: str, timestamp: int | None = None, detail: str = ""
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.timestamp = timestamp
        self.detail = detail


@dataclass
class _Stream:
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)


class FakeAPNs(FakeService[ReceivedNotification]):
    """A local APNs provider API (``POST /3/device/<token>`` over HTTP/2 and TLS).

    :param topic: a topic (app bundle id) that may be pushed to; see :meth:`allow_topic`.
    :param topics: more such topics.
    :param delay: seconds to wait before answering each request, to mimic the network
        in benchmarks. Concurrent requests wait concurrently.
    :param max_concurrent_streams: the ``SETTINGS_MAX_CONCURRENT_STREAMS`` the server
        advertises (APNs advertises 1000); more open streams on one connection are a
        protocol error that closes the connection.
    :param certificate: the TLS certificate to serve; a fresh one by default, in a
        temporary folder that lives as long as this fake (removed when it is
        collected, or at exit): a restart serves the same certificate.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`; a stopped
    fake may start again, on another port.
    """

    restartable = True
    noun = "notifications"

    def __init__(
        self,
        topic: str | None = None,
        *,
        topics: Iterable[str] = (),
        delay: float = 0.0,
        max_concurrent_streams: int = 1000,
        certificate: LocalCertificate | None = None,
    ) -> None:
        super().__init__(delay=delay)
        self.max_concurrent_streams = max_concurrent_streams
        self._certificate = certificate
        self._topics: set[str] = set()
        self._keys: dict[str, _IssuedKey] = {}
        self._verified_tokens: dict[str, tuple[str, _IssuedKey, int]] = {}
        self._unregistered: dict[str, int] = {}
        self._rejections: list[RejectedRequest] = []
        self._live: dict[str, LiveActivity] = {}
        self._connection_count = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._bound_port = 0
        self._startup_error: BaseException | None = None
        self._protocols: set[_H2ServerProtocol] = set()
        self.allow_topic(*([topic] if topic else []), *topics)

    # Life cycle

    @property
    def certificate(self) -> LocalCertificate:
        """The server's self-signed certificate; its ``cert_file`` is the CA to trust."""
        if self._certificate is None:
            # each fake used to leave its folder behind: hundreds a test run
            self._certificate = temporary_certificate(self, "flask-push-apns-")
        return self._certificate

    def _open(self) -> int:
        """Serve in a thread of its own, with its own event loop, once the port is open."""
        context = self.certificate.server_context(alpn=["h2"])
        ready = threading.Event()
        self._startup_error = None
        thread = threading.Thread(
            target=self._run, args=(context, ready), name="FakeAPNs", daemon=True
        )
        self._thread = thread
        thread.start()
        ready.wait()
        if self._startup_error is not None:
            thread.join()
            self._thread = None
            raise RuntimeError("FakeAPNs could not start") from self._startup_error
        return self._bound_port

    def _close(self) -> None:
        """Close every connection (with a GOAWAY) and stop the server thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._answer_released)
            except RuntimeError:
                pass  # the loop closed meanwhile: nothing is held any more

    def _answer_released(self) -> None:
        for protocol in list(self._protocols):
            protocol.answer_released()

    # Credentials and topics

    def auth_key(
        self, team_id: str = "TEAM123456", key_id: str = "KEY1234567"
    ) -> tuple[str, str, str]:
        """Issue a fresh token-signing key, as the Apple developer portal does.

        Returns ``(key_pem, key_id, team_id)``: the private key as the PKCS#8 PEM text of
        an ``AuthKey_<key_id>.p8`` file. Provider tokens must carry ``kid`` = ``key_id``
        in their header and ``iss`` = ``team_id``. Issuing again under the same key id
        replaces (revokes) the previous key.
        """
        private_key = ec.generate_private_key(ec.SECP256R1())
        key_pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        with self._cond:
            self._keys[key_id] = _IssuedKey(team_id, private_key.public_key())
        return key_pem, key_id, team_id

    def revoke_key(self, key_id: str) -> None:
        """Forget a key: tokens it signed get 403 InvalidProviderToken."""
        with self._cond:
            self._keys.pop(key_id, None)

    def allow_topic(self, *topics: str) -> None:
        """Allow pushes to these topics (bundle ids).

        A bundle id also allows its push-type topics, such as ``<bundle id>.voip`` for
        ``voip`` pushes or ``<bundle id>.push-type.liveactivity`` for Live Activities.
        Those push types must use such a topic, as Apple requires (else 400
        TopicDisallowed).
        """
        with self._cond:
            self._topics.update(topics)

    @property
    def topics(self) -> frozenset[str]:
        with self._cond:
            return frozenset(self._topics)

    def app_config(self, topic: str | None = None) -> dict[str, Any]:
        """The ``PUSH_*`` keys that point an app's APNs provider at this service.

        Pass them to your app before ``init_app`` (config is read once there). The
        key is issued afresh, the topic is ``topic`` (allowed here too) or the one
        this fake was made with, and ``PUSH_SUPPRESS_SEND`` is False, since an app
        aimed at a fake means to send to it. The provider checks TLS against the
        default trust store: point ``SSL_CERT_FILE`` at
        ``certificate.trust_bundle()`` (the ``push_fake_apns`` fixture does).
        """
        if topic is None:
            if len(self.topics) != 1:
                raise ValueError(
                    "give the topic (bundle id) the app pushes to: FakeAPNs('com.example.app'), "
                    "or app_config(topic='com.example.app')"
                )
            [topic] = self.topics
        self.allow_topic(topic)
        key_pem, key_id, team_id = self.auth_key()
        return {
            "PUSH_APNS_KEY": key_pem,
            "PUSH_APNS_KEY_ID": key_id,
            "PUSH_APNS_TEAM_ID": team_id,
            "PUSH_APNS_TOPIC": topic,
            "PUSH_APNS_BASE_URL": f"https://{self.host}:{self.port}",
            "PUSH_SUPPRESS_SEND": False,
        }

    # Scripting

    def unregister(self, token: str, *, timestamp: int | None = None) -> None:
        """Make later pushes to ``token`` fail with 410 Unregistered.

        ``timestamp`` (milliseconds since the epoch, now by default) is when the token
        stopped being valid; APNs sends it back in the error body.
        """
        when = int(time.time() * 1000) if timestamp is None else timestamp
        with self._cond:
            self._unregistered[token.lower()] = when

    def fail_next(
        self, status: int, reason: str, *, token: str | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` valid requests (to ``token``, or to any device)
        with ``status`` and ``{"reason": reason}``, such as 429 TooManyRequests,
        500 InternalServerError or 503 ServiceUnavailable.

        Only requests that pass every check are failed this way; an invalid request
        still gets its own error and does not use up the script.
        """
        target = token.lower() if token else None
        self._script_failure(ScriptedFailure(status, reason), target=target, times=times)

    def go_away(self, taken: int | None = None) -> None:
        """Close every open connection as APNs closes one it has had long enough
        (RFC 9113's graceful shutdown): a GOAWAY (NO_ERROR) naming the last request
        it took, the answers to the requests it took, held ones too, and the close.

        :param taken: how many of the requests each connection has received, oldest
            first, it takes; the others are dropped unanswered and not delivered (a
            client sends them again on a new connection). All of them by default.

        Returns once the GOAWAYs and answers are written.

        .. versionadded:: 0.2
        """
        loop = self._loop
        if loop is None:
            return
        done = threading.Event()

        def close_all() -> None:
            try:
                for protocol in list(self._protocols):
                    protocol.go_away(taken)
            finally:
                done.set()

        loop.call_soon_threadsafe(close_all)
        done.wait()

    def drop_connections(self) -> None:
        """Break every open connection at once, with no GOAWAY and no answer, as a
        network failure between a client and APNs does. The requests on them are
        not recorded, and the server takes new connections.

        Returns once they are broken.

        .. versionadded:: 0.2
        """
        loop = self._loop
        if loop is None:
            return
        done = threading.Event()

        def abort_all() -> None:
            try:
                for protocol in list(self._protocols):
                    # unanswered for good: not answered (and recorded) by a release
                    # before the abort has taken the connection down
                    for stream_id in list(protocol.streams):
                        protocol.forget(stream_id)
                    protocol.abort()
            finally:
                done.set()

        loop.call_soon_threadsafe(abort_all)
        done.wait()

    def reset(self) -> None:
        """Forget the notifications, rejections, scripted failures and unregistered
        devices; keys and topics stay."""
        with self._cond:
            super().reset()
            self._rejections.clear()
            self._live.clear()
            self._unregistered.clear()

    # Inspection

    @property
    def notifications(self) -> list[ReceivedNotification]:
        """The notifications accepted so far, in the order they were accepted."""
        return self._recorded()

    @property
    def rejections(self) -> list[RejectedRequest]:
        """The requests answered with an error so far."""
        with self._cond:
            return list(self._rejections)

    @property
    def live_activities(self) -> dict[str, LiveActivity]:
        """Each token's Live Activity as its device shows it: the newest state (by
        ``aps.timestamp``) of the ``liveactivity`` pushes accepted for that token."""
        with self._cond:
            return dict(self._live)

    @property
    def connection_count(self) -> int:
        """How many connections clients have opened since the fake was created."""
        with self._cond:
            return self._connection_count

    # Client helpers

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this server (pass it as aioapns' ``ssl_context``)."""
        return self.certificate.client_context()

    def aioapns_protocol_class(self) -> type[APNsDevelopmentClientProtocol]:
        """An aioapns protocol class aimed at this server.

        aioapns reads the host and port from class attributes of its protocol class::

            apns = APNs(key=key_pem, key_id=key_id, team_id=team_id, topic=topic,
                        use_sandbox=True, ssl_context=fake.client_ssl_context())
            apns.pool.protocol_class = fake.aioapns_protocol_class()
        """
        from aioapns.connection import APNsDevelopmentClientProtocol

        port = self.port

        class FakeAPNsClientProtocol(APNsDevelopmentClientProtocol):
            APNS_SERVER = "127.0.0.1"
            APNS_PORT = port

        return FakeAPNsClientProtocol

    # The server thread

    def _run(self, context: ssl.SSLContext, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(context, ready))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            self._loop = None
            self._stopping = None
            loop.close()
            ready.set()

    async def _serve(self, context: ssl.SSLContext, ready: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            server = await loop.create_server(
                lambda: _H2ServerProtocol(self), self.host, 0, ssl=context
            )
        except BaseException as error:
            self._startup_error = error
            ready.set()
            return
        self._bound_port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stopping.wait()

        server.close()
        for protocol in list(self._protocols):
            protocol.close()
        await server.wait_closed()
        # Give the clients a moment to answer the TLS close, then cut the rest off.
        deadline = loop.time() + 0.5
        while self._protocols and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for protocol in list(self._protocols):
            protocol.abort()
        while self._protocols:
            await asyncio.sleep(0.01)

    def _connected(self, protocol: _H2ServerProtocol) -> None:
        self._protocols.add(protocol)
        with self._cond:
            self._connection_count += 1

    def _disconnected(self, protocol: _H2ServerProtocol) -> None:
        self._protocols.discard(protocol)

    # Request handling (in the server thread)

    def _handle(self, headers: list[tuple[str, str]], body: bytes) -> _Response:
        """Check one request as APNs does, record it, and say how to answer it."""
        fields = dict(headers)
        apns_id = fields.get("apns-id") or str(uuid.uuid4()).upper()
        path = fields.get(":path", "")
        token = path[len(_DEVICE_PATH) :] if path.startswith(_DEVICE_PATH) else ""
        sent = {name: value for name, value in headers if name.startswith("apns-")}
        now = time.time()
        with self._cond:
            try:
                payload = self._check(headers, fields, token, body, now)
            except _Rejected as rejected:
                self._rejections.append(
                    RejectedRequest(
                        token, rejected.status, rejected.reason, sent, now, rejected.detail
                    )
                )
                reply: dict[str, object] = {"reason": rejected.reason}
                if rejected.timestamp is not None:
                    reply["timestamp"] = rejected.timestamp
                return _Response(
                    rejected.status, apns_id, json.dumps(reply, separators=(",", ":")).encode()
                )
            sent["apns-id"] = apns_id
            if sent.get("apns-push-type") == "liveactivity":
                self._show_live_activity(token.lower(), payload["aps"], now)
            self._record(ReceivedNotification(token, sent, payload, now))
        return _Response(200, apns_id)

    def _show_live_activity(self, token: str, aps: dict[str, Any], now: float) -> None:
        """Show an accepted Live Activity push on its token's activity, unless older."""
        shown = self._live.get(token)
        if shown is not None and aps["timestamp"] < shown.timestamp:
            return  # ActivityKit ignores a push older than the state it shows
        if aps["event"] == "start":
            kind, attributes = aps["attributes-type"], aps["attributes"]
        elif shown is not None:
            kind, attributes = shown.attributes_type, shown.attributes
        else:
            kind, attributes = None, None  # started in the app, not by a push
        self._live[token] = LiveActivity(
            token=token,
            event=aps["event"],
            timestamp=aps["timestamp"],
            content_state=aps["content-state"],
            aps=aps,
            attributes_type=kind,
            attributes=attributes,
            received_at=now,
        )

    def _check(
        self,
        headers: list[tuple[str, str]],
        fields: dict[str, str],
        token: str,
        body: bytes,
        now: float,
    ) -> dict[str, Any]:
        if fields.get(":method") != "POST":
            raise _Rejected(405, "MethodNotAllowed")
        path = fields.get(":path", "")
        if not path.startswith(_DEVICE_PATH) or "/" in token:
            raise _Rejected(404, "BadPath")
        if not token:
            raise _Rejected(400, "MissingDeviceToken")
        names = [name for name, _ in headers]
        if any(names.count(name) > 1 for name in _SINGLE_HEADERS):
            raise _Rejected(400, "DuplicateHeaders")
        apns_id = fields.get("apns-id")
        if apns_id is not None and not _APNS_ID.fullmatch(apns_id):
            raise _Rejected(400, "BadMessageId")
        self._check_provider_token(fields.get("authorization"), now)

        push_type = fields.get("apns-push-type")
        if push_type is not None and push_type not in PUSH_TYPES:
            raise _Rejected(400, "InvalidPushType")
        topic = fields.get("apns-topic")
        if not topic:
            raise _Rejected(400, "MissingTopic")
        if not self._topic_allowed(topic, push_type or "alert"):
            raise _Rejected(400, "TopicDisallowed")
        if fields.get("apns-priority", "10") not in PRIORITIES:
            raise _Rejected(400, "BadPriority")
        live = push_type == "liveactivity"
        if live and fields.get("apns-priority", "10") not in LIVE_ACTIVITY_PRIORITIES:
            raise _Rejected(
                400, "BadPriority", detail="a Live Activity push takes priority 5 or 10"
            )
        if not _INTEGER.fullmatch(fields.get("apns-expiration", "0")):
            raise _Rejected(400, "BadExpirationDate")
        if len(fields.get("apns-collapse-id", "").encode()) > MAX_COLLAPSE_ID_SIZE:
            raise _Rejected(400, "BadCollapseId")
        if not _DEVICE_TOKEN.fullmatch(token):
            raise _Rejected(400, "BadDeviceToken")
        payload = self._check_payload(body, push_type)
        if live:
            _check_live_activity(payload["aps"])

        failure = self._take_failure(token.lower())
        if failure is not None:
            raise _Rejected(failure.status, failure.reason or "")
        gone = self._unregistered.get(token.lower())
        if gone is not None:
            raise _Rejected(410, "Unregistered", timestamp=gone)
        return payload

    def _check_provider_token(self, authorization: str | None, now: float) -> None:
        if not authorization:
            raise _Rejected(403, "MissingProviderToken")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Rejected(403, "MissingProviderToken")
        token = token.strip()
        verified = self._verified_tokens.get(token)
        if verified is None or self._keys.get(verified[0]) is not verified[1]:
            verified = self._verify_provider_token(token)
        if verified[2] < now - PROVIDER_TOKEN_LIFETIME:
            raise _Rejected(403, "ExpiredProviderToken")

    def _verify_provider_token(self, token: str) -> tuple[str, _IssuedKey, int]:
        """Check a token's signature and claims once; clients reuse a token many times."""
        invalid = _Rejected(403, "InvalidProviderToken")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid from None
        key_id = str(header.get("kid"))
        issued = self._keys.get(key_id)
        if issued is None or header.get("alg") != "ES256":
            raise invalid
        try:
            claims = jwt.decode(
                token,
                issued.public_key,
                algorithms=["ES256"],
                issuer=issued.team_id,
                leeway=CLOCK_SKEW,
                options={"require": ["iss", "iat"], "verify_exp": False},
            )
        except jwt.PyJWTError:
            raise invalid from None
        verified = (key_id, issued, int(claims["iat"]))
        if len(self._verified_tokens) >= 1000:
            self._verified_tokens.clear()
        self._verified_tokens[token] = verified
        return verified

    def _topic_allowed(self, topic: str, push_type: str) -> bool:
        suffix = TOPIC_SUFFIXES.get(push_type, "")
        if not topic.endswith(suffix):
            return False  # e.g. a voip push to the bare bundle id
        return topic in self._topics or (bool(suffix) and topic[: -len(suffix)] in self._topics)

    @staticmethod
    def _check_payload(body: bytes, push_type: str | None) -> dict[str, Any]:
        limit = MAX_VOIP_PAYLOAD_SIZE if push_type == "voip" else MAX_PAYLOAD_SIZE
        if len(body) > limit:
            raise _Rejected(413, "PayloadTooLarge")
        if not body.strip():
            raise _Rejected(400, "PayloadEmpty")
        try:
            payload = json.loads(body)
        except ValueError:
            # Apple documents no reason for malformed JSON; this one is the fake's.
            raise _Rejected(400, "BadPayload") from None
        if not isinstance(payload, dict):
            raise _Rejected(400, "BadPayload")
        if not isinstance(payload.get("aps"), dict):
            raise _Rejected(400, "PayloadEmpty")
        return payload


def _check_live_activity(aps: dict[str, Any]) -> None:
    """Apple's rules for a Live Activity push's ``aps`` (see the module docstring)."""

    def broken(detail: str) -> _Rejected:
        return _Rejected(400, "BadPayload", detail=detail)

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    event = aps.get("event")
    if event not in LIVE_ACTIVITY_EVENTS:
        raise broken(f"aps.event must be start, update or end, not {event!r}")
    if not integer(aps.get("timestamp")):
        raise broken("aps.timestamp must be an integer: seconds since the epoch")
    if not isinstance(aps.get("content-state"), dict):
        raise broken("aps.content-state must be an object: the Live Activity's state")
    for name in ("stale-date", "dismissal-date"):
        if name in aps and not integer(aps[name]):
            raise broken(f"aps.{name} must be an integer: seconds since the epoch")
    has_type, has_attributes = "attributes-type" in aps, "attributes" in aps
    if event != "start" and (has_type or has_attributes):
        raise broken("aps.attributes-type and aps.attributes go with event start only")
    if event == "start":
        if not (has_type and has_attributes):
            raise broken("a start needs aps.attributes-type and aps.attributes together")
        if not isinstance(aps["attributes-type"], str) or not aps["attributes-type"]:
            raise broken("aps.attributes-type must name the app's ActivityAttributes type")
        if not isinstance(aps["attributes"], dict):
            raise broken("aps.attributes must be an object: the activity's static attributes")


class _H2ServerProtocol(asyncio.Protocol):
    """One client connection: HTTP/2 framing, flow control and scheduling."""

    def __init__(self, fake: FakeAPNs) -> None:
        self.fake = fake
        self.transport: asyncio.Transport | None = None
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        # Replaced before the preface so that the limit holds from the first frame on
        # (a later update would only apply once the client acknowledges it).
        self.conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: fake.max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.conn.DEFAULT_MAX_HEADER_LIST_SIZE,
            },
        )
        self.streams: dict[int, _Stream] = {}
        # Requests received whole and not answered yet: waiting out the delay
        # (pending), held until the fake releases them (held), or neither, briefly.
        self.in_flight: set[int] = set()
        self.pending: dict[int, asyncio.TimerHandle] = {}
        self.held: list[int] = []
        # Response bodies waiting for the client to open its flow-control window.
        self.blocked: dict[int, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.fake._connected(self)
        self.conn.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in self.pending.values():
            handle.cancel()
        self.pending.clear()
        self.held.clear()
        for stream_id in list(self.in_flight):
            self.settle(stream_id)
        self.streams.clear()
        self.blocked.clear()
        # Marked closed: Python 3.10's SSL transport is not, when its peer hangs up,
        # and warns "unclosed transport" when it is collected (3.11 marks it).
        if self.transport is not None:
            self.transport.close()
        self.transport = None
        self.fake._disconnected(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError:
            # h2 has queued a GOAWAY with the error code; send it and hang up.
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived) and event.stream_id is not None:
                self.streams[event.stream_id] = _Stream(_text_headers(event.headers or []))
            elif isinstance(event, DataReceived) and event.stream_id is not None:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.body += event.data or b""
                # Give the window back at once, so a client may keep sending.
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
            elif isinstance(event, StreamEnded) and event.stream_id is not None:
                self.request_complete(event.stream_id)
            elif isinstance(event, StreamReset) and event.stream_id is not None:
                self.forget(event.stream_id)
            elif isinstance(event, WindowUpdated):
                self.send_blocked()
            elif isinstance(event, ConnectionTerminated):
                self.flush()
                if self.transport is not None:
                    self.transport.close()
                return
        self.flush()

    def request_complete(self, stream_id: int) -> None:
        if stream_id not in self.streams:
            return
        self.in_flight.add(stream_id)
        self.fake._arrive()
        if self.fake.delay > 0:
            loop = asyncio.get_running_loop()
            self.pending[stream_id] = loop.call_later(
                self.fake.delay, self.answer_unless_held, stream_id
            )
        else:
            self.answer_unless_held(stream_id)

    def answer_unless_held(self, stream_id: int) -> None:
        self.pending.pop(stream_id, None)
        if self.fake._may_answer():
            self.answer(stream_id)
        else:
            self.held.append(stream_id)

    def answer_released(self) -> None:
        """Answer the held requests the fake now lets go, oldest first."""
        while self.held and self.fake._may_answer():
            self.answer(self.held.pop(0))

    def settle(self, stream_id: int) -> None:
        """The request is answered, or will never be: no longer in flight."""
        if stream_id in self.in_flight:
            self.in_flight.discard(stream_id)
            self.fake._depart()

    def answer(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None or self.transport is None:
            self.settle(stream_id)
            return
        with self.fake._cond:  # answered and recorded in one moment
            response = self.fake._handle(stream.headers, bytes(stream.body))
            self.settle(stream_id)
        headers = [(":status", str(response.status)), ("apns-id", response.apns_id)]
        if response.body is not None:
            headers.append(("content-type", "application/json"))
            headers.append(("content-length", str(len(response.body))))
        try:
            self.conn.send_headers(stream_id, headers, end_stream=response.body is None)
        except ProtocolError:
            return  # the client reset the stream meanwhile
        if response.body is not None:
            self.blocked[stream_id] = response.body
            self.send_blocked()
        self.flush()

    def send_blocked(self) -> None:
        """Send the response bodies that fit the client's flow-control windows.

        A body goes out whole in one DATA frame or waits: aioapns parses each DATA
        frame as a complete JSON document.
        """
        for stream_id, body in list(self.blocked.items()):
            try:
                window = self.conn.local_flow_control_window(stream_id)
            except ProtocolError:
                del self.blocked[stream_id]
                continue
            if window >= len(body) and self.conn.max_outbound_frame_size >= len(body):
                del self.blocked[stream_id]
                self.conn.send_data(stream_id, body, end_stream=True)

    def forget(self, stream_id: int) -> None:
        handle = self.pending.pop(stream_id, None)
        if handle is not None:
            handle.cancel()
        if stream_id in self.held:
            self.held.remove(stream_id)
        self.settle(stream_id)
        self.streams.pop(stream_id, None)
        self.blocked.pop(stream_id, None)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Say goodbye (GOAWAY) and close the TLS connection."""
        if self.transport is None:
            return
        try:
            self.conn.close_connection(ErrorCodes.NO_ERROR)
        except ProtocolError:
            pass
        self.flush()
        self.transport.close()

    def go_away(self, taken: int | None) -> None:
        """Take the first ``taken`` requests received whole (all when None), say
        GOAWAY with the last of them, answer them and close; drop the rest."""
        if self.transport is None:
            return
        received = sorted(self.in_flight)
        kept = received if taken is None else received[:taken]
        for stream_id in list(self.streams):
            if stream_id not in kept:
                self.forget(stream_id)
        self.conn.close_connection(ErrorCodes.NO_ERROR, last_stream_id=max(kept, default=0))
        # h2 refuses to send anything after its own GOAWAY; a server (APNs) still
        # answers the requests it took
        self.conn.state_machine.state = ConnectionState.SERVER_OPEN
        self.flush()
        for stream_id in kept:
            handle = self.pending.pop(stream_id, None)
            if handle is not None:
                handle.cancel()
            if stream_id in self.held:
                self.held.remove(stream_id)
            self.answer(stream_id)
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _text_headers(headers: Iterable[tuple[bytes | str, bytes | str]]) -> list[tuple[str, str]]:
    return [
        (
            name.decode("utf-8", "replace") if isinstance(name, bytes) else name,
            value.decode("utf-8", "replace") if isinstance(value, bytes) else value,
        )
        for name, value in headers
    ]
