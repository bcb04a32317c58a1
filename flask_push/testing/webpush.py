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
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from ..credentials import vapid_public_key, vapid_raw_private_key
from ._service import BackgroundService
from .tls import LocalCertificate, make_local_certificate

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
_Headers = tuple[tuple[str, str], ...]


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
    headers: _Headers
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
        return _header(self.headers, name)


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
        with self.service._cond:
            if not self.service._cond.wait_for(lambda: len(self._received) >= count, timeout):
                raise TimeoutError(
                    f"{self!r} received {len(self._received)} push(es) in {timeout} s, "
                    f"expected {count}"
                )
            return list(self._received)


@dataclass
class _Failure:
    status: int
    subscriber_id: str | None
    retry_after: int | str | None
    remaining: int


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


class FakePushService(BackgroundService):
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
    so concurrent pushes overlap. Use it as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        delay: float = 0.0,
        certificate: LocalCertificate | None = None,
    ) -> None:
        self.tls = tls or certificate is not None
        #: Seconds to wait before answering each push; may be changed while running.
        self.delay = delay
        self.certificate = certificate
        self._own_certificate_dir: str | None = None
        self._cond = threading.Condition()
        self._subscribers: dict[str, FakeSubscriber] = {}
        self._pushes: list[ReceivedPush] = []
        self._requests: list[PushRequest] = []
        self._failures: list[_Failure] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        where = self.origin if self._port is not None else "not started"
        return f"<FakePushService {where}>"

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FakePushService:
        """Bind a free port and serve in a background thread; returns ``self``."""
        if self._port is not None:
            raise RuntimeError("a FakePushService can be started only once")
        context = None
        if self.tls:
            if self.certificate is None:
                self._own_certificate_dir = tempfile.mkdtemp(prefix="flask-push-webpush-")
                self.certificate = make_local_certificate(self._own_certificate_dir)
            context = self.certificate.server_context()
        server = _Server(self, context)
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakePushService:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket. What was recorded stays readable."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()
        if self._own_certificate_dir is not None:
            shutil.rmtree(self._own_certificate_dir, ignore_errors=True)
            self._own_certificate_dir = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the FakePushService is not started: call start() first")
        return self._port

    @property
    def origin(self) -> str:
        """``scheme://127.0.0.1:port``: what a VAPID token's ``aud`` must be."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def app_config(self) -> dict[str, Any]:
        """The ``PUSH_*`` keys that let an app deliver to this service's endpoints.

        A fresh VAPID key pair and subject (a fake accepts any key, so tests need
        no secrets); ``PUSH_ENDPOINT_HOSTS`` naming 127.0.0.1 (private addresses
        pass only when named exactly); ``PUSH_ALLOW_HTTP_ENDPOINTS`` unless it
        serves TLS (then trust ``certificate.trust_bundle()`` through
        ``SSL_CERT_FILE``); and ``PUSH_SUPPRESS_SEND = False``: an app aimed at a
        fake means to send to it. Pass them to your app before ``init_app``:
        config is read once there.
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
        if not 400 <= status <= 599:
            raise ValueError(f"a failure status is 4xx or 5xx, not {status}")
        if times < 1:
            raise ValueError("times must be at least 1")
        subscriber_id = subscriber.id if isinstance(subscriber, FakeSubscriber) else subscriber
        with self._cond:
            self._failures.append(_Failure(status, subscriber_id, retry_after, times))

    # -- what happened ----------------------------------------------------------------

    @property
    def pushes(self) -> list[ReceivedPush]:
        """Every push delivered, to any subscriber, in order of arrival (a copy)."""
        with self._cond:
            return list(self._pushes)

    @property
    def requests(self) -> list[PushRequest]:
        """Every request answered, accepted or not, in order (a copy)."""
        with self._cond:
            return list(self._requests)

    @property
    def rejected(self) -> list[PushRequest]:
        """The requests that were not accepted."""
        return [request for request in self.requests if not request.accepted]

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedPush]:
        """Wait until ``count`` pushes have been delivered in all and return them.

        Raises :class:`TimeoutError` when fewer arrived within ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._pushes) >= count, timeout):
                raise TimeoutError(
                    f"{self!r} received {len(self._pushes)} push(es) in {timeout} s, "
                    f"expected {count}"
                )
            return list(self._pushes)

    def reset(self) -> None:
        """Forget what was received and the scripted failures still pending.

        Subscribers stay valid (an expired one stays expired); their received
        lists are emptied too.
        """
        with self._cond:
            self._pushes.clear()
            self._requests.clear()
            self._failures.clear()
            for subscriber in self._subscribers.values():
                subscriber._received.clear()

    # -- the push service -------------------------------------------------------------

    def _answer(self, method: str, path: str, headers: _Headers, body: bytes) -> _Answer:
        """Check one request, record it, and say what to answer."""
        received_at = time.time()
        match = _PUSH_PATH.fullmatch(urlsplit(path).path)
        subscriber_id = match.group(1) if match else None
        push: ReceivedPush | None = None
        try:
            if subscriber_id is None:
                raise _Reject(404, "no push resource here: push to /push/<subscriber id>")
            if method != "POST":
                raise _Reject(405, "a push resource accepts POST only", {"Allow": "POST"})
            push = self._accept(subscriber_id, headers, body, received_at)
        except _Reject as reject:
            answer = _Answer(reject.status, reject.reason, reject.headers)
        else:
            answer = _Answer(
                201,
                "Created",
                {"Location": f"{self.origin}/message/{push.message_id}", "TTL": str(push.ttl)},
            )
        return self._record(
            PushRequest(
                method=method,
                path=path,
                headers=headers,
                body=body,
                status=answer.status,
                reason=answer.reason,
                subscriber_id=subscriber_id,
                push=push,
                received_at=received_at,
            ),
            answer,
        )

    def _record(self, request: PushRequest, answer: _Answer) -> _Answer:
        with self._cond:
            self._requests.append(request)
            if request.push is not None:
                self._pushes.append(request.push)
                subscriber = self._subscribers.get(request.push.subscriber_id)
                if subscriber is not None:
                    subscriber._received.append(request.push)
            self._cond.notify_all()
        _log.debug("%s %s -> %d %s", request.method, request.path, answer.status, answer.reason)
        return answer

    def _accept(
        self, subscriber_id: str, headers: _Headers, body: bytes, received_at: float
    ) -> ReceivedPush:
        delay = self.delay
        if delay > 0:
            time.sleep(delay)
        with self._cond:
            failure = self._take_failure(subscriber_id)
            subscriber = self._subscribers.get(subscriber_id)
            expired = subscriber is not None and subscriber._expired
        if failure is not None:
            extra = {} if failure.retry_after is None else {"Retry-After": str(failure.retry_after)}
            phrase = _phrase(failure.status)
            raise _Reject(failure.status, f"{phrase} (scripted with fail_next)", extra)
        if subscriber is None:
            raise _Reject(404, "no such subscription: this push service never made it")
        if expired:
            raise _Reject(410, "the subscription has expired or was unsubscribed")

        vapid = self._check_vapid(headers)

        ttl_text = _header(headers, "TTL")
        if ttl_text is None:
            raise _Reject(400, "missing TTL header: how many seconds to keep the message")
        if not _DIGITS.fullmatch(ttl_text.strip()):
            raise _Reject(400, f"TTL must be a non-negative integer of seconds, not {ttl_text!r}")
        urgency = _header(headers, "Urgency")
        if urgency is not None and urgency not in URGENCIES:
            raise _Reject(400, f"Urgency must be one of {', '.join(URGENCIES)}, not {urgency!r}")
        topic = _header(headers, "Topic")
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
            encoding = (_header(headers, "Content-Encoding") or "").strip().lower()
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
            content_type=_header(headers, "Content-Type"),
            vapid=vapid,
            received_at=received_at,
        )

    def _take_failure(self, subscriber_id: str) -> _Failure | None:
        for failure in self._failures:
            if failure.subscriber_id in (None, subscriber_id):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _check_vapid(self, headers: _Headers) -> VapidClaims:
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


def _read_authorization(headers: _Headers) -> tuple[str, str, str]:
    """The token, the public key and the scheme of a VAPID ``Authorization``, or 401."""
    expected = "expected 'Authorization: vapid t=<JWT>, k=<public key>' (RFC 8292)"
    value = _header(headers, "Authorization")
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
        key = _parameters(_header(headers, "Crypto-Key") or "", ";,").get("p256ecdsa", "")
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


def _header(headers: _Headers, name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


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


class _Server(ThreadingHTTPServer):
    """One thread per connection; the TLS handshake happens in that thread too."""

    daemon_threads = True
    # A burst of concurrent pushes must not overflow the listen backlog (default 5),
    # or the kernel drops connections and clients retry a second later.
    request_queue_size = 128

    def __init__(self, service: FakePushService, context: ssl.SSLContext | None) -> None:
        self.service = service
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is None:
            super().finish_request(request, client_address)
            return
        plain = cast(socket.socket, request)
        plain.settimeout(_Handler.timeout)  # a client that never finishes the handshake
        with self.context.wrap_socket(plain, server_side=True) as tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError)):
            return  # the client went away, timed out, or did not trust the certificate
        _log.exception("FakePushService: error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakePushService/1.0"
    # Keep-alive, as real push services and pooled senders expect; and since
    # headers and body are separate writes, TCP_NODELAY avoids Nagle's ~40 ms stall.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Idle connections are dropped after this many seconds.
    timeout = 30

    def _serve(self) -> None:
        service = cast(_Server, self.server).service
        headers: _Headers = tuple(self.headers.items())
        try:
            body = self._read_body()
        except _Reject as reject:
            answer = service._record(
                PushRequest(
                    method=self.command,
                    path=self.path,
                    headers=headers,
                    body=b"",
                    status=reject.status,
                    reason=reject.reason,
                    subscriber_id=None,
                    push=None,
                    received_at=time.time(),
                ),
                _Answer(reject.status, reject.reason, reject.headers),
            )
        else:
            answer = service._answer(self.command, self.path, headers, body)
        content = b"" if answer.status == 201 else answer.reason.encode("utf-8") + b"\n"
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if content:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _serve

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                raise _Reject(411, "send a Content-Length: chunked bodies are not accepted")
            return b""
        if not _DIGITS.fullmatch(length.strip()):
            self.close_connection = True
            raise _Reject(400, f"Content-Length is not a number: {length!r}")
        size = int(length)
        if size > _READ_LIMIT:
            self.close_connection = True
            raise _Reject(413, f"the body is {size} bytes, more than the {MAX_BODY_SIZE} accepted")
        return self.rfile.read(size)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test run should not print a line per push."""
