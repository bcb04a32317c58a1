"""A local Web Push service (RFC 8030, 8291 and 8292) for end-to-end tests.

:class:`FakePushService` is a small push service on ``127.0.0.1`` that checks what
it receives the way a browser vendor's service does: the VAPID token (RFC 8292),
the ``TTL``, ``Urgency`` and ``Topic`` headers (RFC 8030), the 4096-byte limit,
and the aes128gcm encryption (RFC 8291), which it undoes with the keys of a
subscriber it made. Send to it with the real client (pywebpush, or flask-push
itself) and assert on what arrived::

    from flask_push.testing.webpush import FakePushService

    with FakePushService() as service:
        subscriber = service.subscribe("alice's laptop")
        pywebpush.webpush(
            subscriber.info,
            data=json.dumps({"title": "Hi"}),
            vapid_private_key=private_key,
            vapid_claims={"sub": "mailto:ops@example.com"},
            ttl=60,
        )
        assert subscriber.received[0].json() == {"title": "Hi"}

A push is recorded before its answer is sent, so once a synchronous send returns
it is already in :attr:`FakeSubscriber.received`; for sends made by other threads or
processes use :meth:`FakeSubscriber.wait`. Every request, accepted or not, is kept
in :attr:`FakePushService.requests` with the status and the reason given.

Failures are scripted with :meth:`FakePushService.fail_next` (429 with
``Retry-After``, 500, 503, ...) and :meth:`FakeSubscriber.expire` (410 Gone);
endpoints the service never made answer 404.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import secrets
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from io import BufferedIOBase
from typing import Any
from urllib.parse import urlsplit

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from ..credentials import vapid_public_key, vapid_raw_private_key
from ._http import BodyRefused, Headers, HTTPAnswer, HTTPFakeService, HTTPRequest, header
from .service import ScriptedFailure
from .tls import LocalCertificate, temporary_certificate

__all__ = [
    "MAX_BODY_SIZE",
    "MAX_VAPID_LIFETIME",
    "URGENCIES",
    "FakePushService",
    "FakeSubscriber",
    "PushRequest",
    "ReceivedPush",
    "VapidClaims",
]

#: The largest encrypted body a push service must accept (RFC 8030, section 7.2).
MAX_BODY_SIZE = 4096
#: How far in the future a VAPID token's ``exp`` may be (RFC 8292, section 2).
MAX_VAPID_LIFETIME = 24 * 60 * 60
#: The values of the ``Urgency`` header (RFC 8030, section 5.3).
URGENCIES = ("very-low", "low", "normal", "high")

_log = logging.getLogger(__name__)

_PUSH_PATH = re.compile(r"/push/([A-Za-z0-9_-]+)")
_DIGITS = re.compile(r"[0-9]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# Bodies larger than this are not even read: the connection is closed after a 413.
_READ_LIMIT = 1 << 20


@dataclass(frozen=True)
class VapidClaims:
    """The verified VAPID identity of a push (RFC 8292)."""

    #: The sender's contact, ``mailto:`` or ``https:``.
    sub: str
    #: The push service origin the token was made for.
    aud: str
    #: When the token expires, in seconds since the epoch.
    exp: int
    #: The application server's public key, base64url, as the ``k`` parameter sent it.
    public_key: str
    #: ``"vapid"`` (RFC 8292) or ``"webpush"`` (the legacy draft form with ``Crypto-Key``).
    scheme: str


@dataclass(frozen=True)
class ReceivedPush:
    """A push message the service accepted and decrypted."""

    #: The id in the ``Location`` URL the service answered with.
    message_id: str
    subscriber_id: str
    subscriber_name: str
    #: The decrypted payload; empty for a push without a body.
    payload: bytes
    #: The ``TTL`` header, in seconds.
    ttl: int
    #: The ``Urgency`` header as sent, ``None`` when absent (which means ``"normal"``).
    urgency: str | None
    #: The ``Topic`` header, ``None`` when absent.
    topic: str | None
    #: The ``Content-Type`` header, ``None`` when absent.
    content_type: str | None
    vapid: VapidClaims
    #: When it arrived, as :func:`time.time`.
    received_at: float

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


@dataclass(frozen=True)
class PushRequest:
    """One request the service answered, accepted or rejected."""

    method: str
    path: str
    #: The request headers, in the order sent; see :meth:`header`.
    headers: Headers
    #: The body as received (still encrypted).
    body: bytes
    #: The status answered.
    status: int
    #: Why: the text body of an error answer, ``"Created"`` for an accepted push.
    reason: str
    #: The id in the path, whether or not such a subscriber exists.
    subscriber_id: str | None
    #: What was delivered, for an accepted push.
    push: ReceivedPush | None
    #: When it arrived, as :func:`time.time`.
    received_at: float

    @property
    def accepted(self) -> bool:
        return self.push is not None

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), or ``None``."""
        return header(self.headers, name)


class FakeSubscriber:
    """A browser's push subscription at a :class:`FakePushService`.

    Made by :meth:`FakePushService.subscribe`, with a fresh P-256 key pair and
    16-byte auth secret, like ``PushManager.subscribe()`` makes them.
    """

    def __init__(self, service: FakePushService, subscriber_id: str, name: str) -> None:
        self.service = service
        self.id = subscriber_id
        self.name = name
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth_secret = os.urandom(16)
        self._received: list[ReceivedPush] = []
        self._expired = False

    def __repr__(self) -> str:
        return f"<FakeSubscriber {self.name!r} {self.endpoint}>"

    @property
    def endpoint(self) -> str:
        return f"{self.service.origin}/push/{self.id}"

    @property
    def p256dh(self) -> str:
        """The public key, base64url of the uncompressed point, as browsers give it."""
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return _b64encode(point)

    @property
    def auth(self) -> str:
        """The auth secret, base64url."""
        return _b64encode(self.auth_secret)

    @property
    def info(self) -> dict[str, Any]:
        """What ``PushSubscription.toJSON()`` gives in the browser (a fresh dict)."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }

    @property
    def received(self) -> list[ReceivedPush]:
        """The pushes delivered to this subscriber so far, oldest first (a copy)."""
        with self.service._cond:
            return list(self._received)

    @property
    def expired(self) -> bool:
        with self.service._cond:
            return self._expired

    def expire(self) -> None:
        """Make every later push to this subscriber answer 410 Gone."""
        with self.service._cond:
            self._expired = True

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedPush]:
        """Wait until ``count`` pushes have been delivered here and return them all.

        Raises :class:`TimeoutError` when fewer arrived within ``timeout`` seconds.
        """
        return self.service._wait_for(lambda: self._received, count, timeout, repr(self))


class _Reject(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)

    def http(self) -> HTTPAnswer:
        """On the wire: an error's reason as a line of text, a 201 with no body."""
        if self.status == 201:
            return HTTPAnswer(201, b"", self.headers)
        text = {**self.headers, "Content-Type": "text/plain; charset=utf-8"}
        return HTTPAnswer(self.status, self.reason.encode("utf-8") + b"\n", text)


class FakePushService(HTTPFakeService[ReceivedPush]):
    """A Web Push service on ``127.0.0.1`` that checks and decrypts what it receives.

    ``POST /push/<id>`` answers like a real push service:

    * 404 for an id it never made, 410 once the subscriber :meth:`~FakeSubscriber.expire`\\ d;
    * 401 without an ``Authorization: vapid t=<JWT>, k=<key>`` header (the legacy
      ``WebPush <JWT>`` with ``Crypto-Key: p256ecdsa=<key>`` is accepted too);
    * 403 when the ES256 signature does not verify against ``k``, ``aud`` is not
      this service's origin, ``exp`` is missing, past or more than 24 hours away,
      or ``sub`` is not a ``mailto:`` or ``https:`` URI;
    * 400 without a non-negative integer ``TTL``, with an ``Urgency`` other than
      :data:`URGENCIES`, a ``Topic`` longer than 32 characters or not base64url, a
      body not ``Content-Encoding: aes128gcm``, or one that does not decrypt;
    * 413 for a body over :data:`MAX_BODY_SIZE` bytes;
    * 201 with a ``Location`` otherwise, and the push is recorded.

    A push without a body (a "tickle") needs no ``Content-Encoding`` and is
    recorded with an empty payload. Scripted failures (:meth:`fail_next`) are
    answered before any of these checks, as a rate limiter in front would.

    ``tls=True`` serves https with :attr:`certificate` (made for the purpose unless
    one is given); clients trust it through ``certificate.cert_file``. ``delay``
    seconds are waited before answering each push, in the request's own thread,
    so concurrent pushes overlap; :meth:`hold` keeps pushes unanswered until
    :meth:`release`. Use it as a context manager, or call :meth:`start` and
    :meth:`stop`.
    """

    noun = "pushes"
    server_version = "FakePushService/1.0"

    def __init__(
        self,
        *,
        tls: bool = False,
        delay: float = 0.0,
        certificate: LocalCertificate | None = None,
    ) -> None:
        super().__init__(delay=delay)
        self.tls = tls or certificate is not None
        self.certificate = certificate
        self._subscribers: dict[str, FakeSubscriber] = {}
        self._requests: list[PushRequest] = []

    def __repr__(self) -> str:
        where = self.origin if self._port is not None else "not started"
        return f"<FakePushService {where}>"

    # -- lifecycle --------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        if self.certificate is None:
            self.certificate = temporary_certificate(self, "flask-push-webpush-")
        return self.certificate.server_context()

    @property
    def origin(self) -> str:
        """``scheme://127.0.0.1:port``: what a VAPID token's ``aud`` must be."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def app_config(self) -> dict[str, Any]:
        """The ``PUSH_*`` keys that let an app deliver to this service's endpoints.

        A fresh VAPID key pair and subject (a fake accepts any key, so tests need
        no secrets); ``PUSH_ENDPOINT_HOSTS`` naming 127.0.0.1 (private addresses
        pass only when named exactly); ``PUSH_ALLOW_HTTP_ENDPOINTS`` unless it
        serves TLS (then trust ``certificate.trust_bundle()`` through
        ``SSL_CERT_FILE``, as ``push_fakes.webpush(tls=True)`` does); and
        ``PUSH_SUPPRESS_SEND = False``: an app aimed at a fake means to send to it.
        Pass them to your app before ``init_app``: config is read once there.
        """
        vapid = Vapid()
        vapid.generate_keys()
        config: dict[str, Any] = {
            "PUSH_VAPID_PRIVATE_KEY": vapid_raw_private_key(vapid),
            "PUSH_VAPID_PUBLIC_KEY": vapid_public_key(vapid),  # replaces one the app set
            "PUSH_VAPID_SUBJECT": "mailto:tests@example.com",
            "PUSH_ENDPOINT_HOSTS": ["127.0.0.1"],
            "PUSH_SUPPRESS_SEND": False,
        }
        if not self.tls:
            config["PUSH_ALLOW_HTTP_ENDPOINTS"] = True
        return config

    # -- subscribers and scripting ----------------------------------------------------

    def subscribe(self, name: str | None = None) -> FakeSubscriber:
        """Make a subscriber with fresh keys; ``name`` only helps reading test output."""
        if self._port is None:
            raise RuntimeError(
                "start the FakePushService before subscribing: endpoints need its port"
            )
        with self._cond:
            subscriber_id = secrets.token_urlsafe(16)
            subscriber = FakeSubscriber(
                self, subscriber_id, name or f"subscriber-{len(self._subscribers) + 1}"
            )
            self._subscribers[subscriber_id] = subscriber
            return subscriber

    @property
    def subscribers(self) -> list[FakeSubscriber]:
        with self._cond:
            return list(self._subscribers.values())

    def fail_next(
        self,
        status: int,
        *,
        subscriber: FakeSubscriber | str | None = None,
        retry_after: int | str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` pushes with ``status`` and deliver nothing.

        Only pushes to ``subscriber`` (a subscriber or its id) count when it is given.
        ``retry_after`` (seconds, or an HTTP date) is sent as ``Retry-After``.
        Scripted failures are used up in the order they were made.
        """
        subscriber_id = subscriber.id if isinstance(subscriber, FakeSubscriber) else subscriber
        failure = ScriptedFailure(status, retry_after=retry_after)
        self._script_failure(failure, target=subscriber_id, times=times)

    # -- what happened ----------------------------------------------------------------

    @property
    def pushes(self) -> list[ReceivedPush]:
        """Every push delivered, to any subscriber, in order of arrival (a copy)."""
        return self._recorded()

    @property
    def requests(self) -> list[PushRequest]:
        """Every request answered, accepted or not, in order (a copy)."""
        with self._cond:
            return list(self._requests)

    @property
    def rejected(self) -> list[PushRequest]:
        """The requests that were not accepted."""
        return [request for request in self.requests if not request.accepted]

    def reset(self) -> None:
        """Forget what was received and the scripted failures still pending.

        Subscribers stay valid (an expired one stays expired); their received
        lists are emptied too.
        """
        with self._cond:
            super().reset()
            self._requests.clear()
            for subscriber in self._subscribers.values():
                subscriber._received.clear()

    # -- the push service -------------------------------------------------------------

    def _read_body(self, request: HTTPRequest, stream: BufferedIOBase) -> bytes:
        length = request.header("Content-Length")
        if length is None:
            if request.header("Transfer-Encoding"):
                self._refuse(request, 411, "send a Content-Length: chunked bodies are not accepted")
            return b""
        if not _DIGITS.fullmatch(length.strip()):
            self._refuse(request, 400, f"Content-Length is not a number: {length!r}")
        size = int(length)
        if size > _READ_LIMIT:
            self._refuse(
                request, 413, f"the body is {size} bytes, more than the {MAX_BODY_SIZE} accepted"
            )
        return stream.read(size)

    def _refuse(self, request: HTTPRequest, status: int, reason: str) -> None:
        """Record a request whose body is not read, and answer it."""
        answer = _Answer(status, reason)
        self._keep(request, answer, time.time())
        raise BodyRefused(answer.http())

    def _answer(self, request: HTTPRequest) -> HTTPAnswer:
        """Check one request, record it, and say what to answer."""
        received_at = time.time()
        match = _PUSH_PATH.fullmatch(urlsplit(request.path).path)
        subscriber_id = match.group(1) if match else None
        if subscriber_id is None:
            answer = _Answer(404, "no push resource here: push to /push/<subscriber id>")
        elif request.method != "POST":
            answer = _Answer(405, "a push resource accepts POST only", {"Allow": "POST"})
        else:
            with self._answering() as land:
                try:
                    push = self._accept(subscriber_id, request.headers, request.body, received_at)
                except _Reject as reject:
                    answer = _Answer(reject.status, reject.reason, reject.headers)
                else:
                    location = f"{self.origin}/message/{push.message_id}"
                    answer = _Answer(201, "Created", {"Location": location, "TTL": str(push.ttl)})
                    self._keep(request, answer, received_at, subscriber_id, push, land)
                    return answer.http()
        self._keep(request, answer, received_at, subscriber_id)
        return answer.http()

    def _keep(
        self,
        request: HTTPRequest,
        answer: _Answer,
        received_at: float,
        subscriber_id: str | None = None,
        push: ReceivedPush | None = None,
        land: Callable[[], None] | None = None,
    ) -> None:
        """Record a request answered, and what it delivered; ``land`` it at once."""
        with self._cond:
            self._requests.append(
                PushRequest(
                    method=request.method,
                    path=request.path,
                    headers=request.headers,
                    body=request.body,
                    status=answer.status,
                    reason=answer.reason,
                    subscriber_id=subscriber_id,
                    push=push,
                    received_at=received_at,
                )
            )
            if push is not None:
                self._record(push)
                subscriber = self._subscribers.get(push.subscriber_id)
                if subscriber is not None:
                    subscriber._received.append(push)
            if land is not None:
                land()
        _log.debug("%s %s -> %d %s", request.method, request.path, answer.status, answer.reason)

    def _accept(
        self, subscriber_id: str, headers: Headers, body: bytes, received_at: float
    ) -> ReceivedPush:
        failure = self._take_failure(subscriber_id)
        with self._cond:
            subscriber = self._subscribers.get(subscriber_id)
            expired = subscriber is not None and subscriber._expired
        if failure is not None:
            retry_after = failure.retry_after
            extra = {} if retry_after is None else {"Retry-After": str(retry_after)}
            phrase = _phrase(failure.status)
            raise _Reject(failure.status, f"{phrase} (scripted with fail_next)", extra)
        if subscriber is None:
            raise _Reject(404, "no such subscription: this push service never made it")
        if expired:
            raise _Reject(410, "the subscription has expired or was unsubscribed")

        vapid = self._check_vapid(headers)

        ttl_text = header(headers, "TTL")
        if ttl_text is None:
            raise _Reject(400, "missing TTL header: how many seconds to keep the message")
        if not _DIGITS.fullmatch(ttl_text.strip()):
            raise _Reject(400, f"TTL must be a non-negative integer of seconds, not {ttl_text!r}")
        urgency = header(headers, "Urgency")
        if urgency is not None and urgency not in URGENCIES:
            raise _Reject(400, f"Urgency must be one of {', '.join(URGENCIES)}, not {urgency!r}")
        topic = header(headers, "Topic")
        if topic is not None and len(topic) > 32:
            raise _Reject(400, f"Topic is {len(topic)} characters long, at most 32 are allowed")
        if topic is not None and not (topic and _BASE64URL.fullmatch(topic)):
            raise _Reject(400, f"Topic must use the base64url alphabet only, not {topic!r}")
        if len(body) > MAX_BODY_SIZE:
            raise _Reject(
                413, f"the body is {len(body)} bytes, more than the {MAX_BODY_SIZE} accepted"
            )

        payload = b""
        if body:
            encoding = (header(headers, "Content-Encoding") or "").strip().lower()
            if encoding != "aes128gcm":
                raise _Reject(
                    400, f"Content-Encoding must be aes128gcm (RFC 8291), not {encoding!r}"
                )
            try:
                payload = http_ece.decrypt(
                    body,
                    private_key=subscriber.private_key,
                    auth_secret=subscriber.auth_secret,
                    version="aes128gcm",
                )
            except Exception as error:  # any failure is the sender's: bad keys or framing
                raise _Reject(
                    400, f"the body does not decrypt with the subscription's keys: {error!r}"
                ) from error

        return ReceivedPush(
            message_id=uuid.uuid4().hex,
            subscriber_id=subscriber.id,
            subscriber_name=subscriber.name,
            payload=bytes(payload),
            ttl=int(ttl_text),
            urgency=urgency,
            topic=topic,
            content_type=header(headers, "Content-Type"),
            vapid=vapid,
            received_at=received_at,
        )

    def _check_vapid(self, headers: Headers) -> VapidClaims:
        token, key, scheme = _read_authorization(headers)
        try:
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), _b64decode(key)
            )
        except (ValueError, binascii.Error) as error:
            raise _Reject(403, "k is not a base64url P-256 public key") from error
        origin = self.origin
        try:
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["ES256"],
                audience=origin,
                options={"require": ["exp", "aud", "sub"]},
            )
        except jwt.InvalidSignatureError as error:
            raise _Reject(403, "the token's ES256 signature does not verify against k") from error
        except jwt.ExpiredSignatureError as error:
            raise _Reject(403, "the token has expired: exp is in the past") from error
        except jwt.InvalidAudienceError as error:
            raise _Reject(403, f"the token's aud must be this push service, {origin}") from error
        except jwt.MissingRequiredClaimError as error:
            raise _Reject(403, f"the token has no {error.claim!r} claim") from error
        except jwt.InvalidTokenError as error:
            raise _Reject(403, f"the token is not valid: {error}") from error
        exp, sub, aud = claims["exp"], claims["sub"], claims["aud"]
        if aud != origin:
            raise _Reject(403, f"the token's aud must be exactly {origin!r}, not {aud!r}")
        if not isinstance(exp, int):
            raise _Reject(403, f"the token's exp must be an integer of seconds, not {exp!r}")
        if exp > time.time() + MAX_VAPID_LIFETIME:
            raise _Reject(403, "the token's exp is more than 24 hours away")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise _Reject(403, f"the token's sub must be a mailto: or https: URI, not {sub!r}")
        return VapidClaims(sub=sub, aud=aud, exp=exp, public_key=key, scheme=scheme)


def _read_authorization(headers: Headers) -> tuple[str, str, str]:
    """The token, the public key and the scheme of a VAPID ``Authorization``, or 401."""
    expected = "expected 'Authorization: vapid t=<JWT>, k=<public key>' (RFC 8292)"
    value = header(headers, "Authorization")
    if not value or not value.strip():
        raise _Reject(401, f"no Authorization header; {expected}", {"WWW-Authenticate": "vapid"})
    scheme, _, rest = value.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "vapid":
        params = _parameters(rest, ",")
        token, key = params.get("t", ""), params.get("k", "")
    elif scheme == "webpush":
        # The draft form older clients send: the key travels in Crypto-Key.
        token = rest.strip()
        key = _parameters(header(headers, "Crypto-Key") or "", ";,").get("p256ecdsa", "")
    else:
        raise _Reject(
            401,
            f"unsupported Authorization scheme {scheme!r}; {expected}",
            {"WWW-Authenticate": "vapid"},
        )
    if not token or not key:
        raise _Reject(
            401, f"the token or the key is missing; {expected}", {"WWW-Authenticate": "vapid"}
        )
    try:
        jwt.get_unverified_header(token)
    except jwt.DecodeError as error:
        raise _Reject(401, f"t is not a JWT; {expected}", {"WWW-Authenticate": "vapid"}) from error
    return token, key, scheme


def _parameters(text: str, separators: str) -> dict[str, str]:
    """``name=value`` pairs split on any of ``separators``; the first of a name wins."""
    params: dict[str, str] = {}
    for part in re.split(f"[{re.escape(separators)}]", text):
        name, sep, value = part.strip().partition("=")
        if sep:
            params.setdefault(name.strip().lower(), value.strip().strip('"'))
    return params


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    padded = text.strip().rstrip("=")
    padded += "=" * (-len(padded) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


def _phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
