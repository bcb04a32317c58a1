"""Web Push (RFC 8030) with aes128gcm payloads (RFC 8291) and VAPID (RFC 8292).

One :class:`WebPushProvider` keeps a pooled aiohttp session with keep-alive
connections, so a batch of thousands of pushes reuses a few connections per push
service instead of paying a TCP and TLS handshake per push. Payloads are
encrypted by :mod:`.aes128gcm` (cryptography's ECDH, HKDF and AES-GCM; checked
against ``http_ece``, the library pywebpush uses), and VAPID tokens are signed with
``py_vapid``, once per push-service origin and reused for hours, as RFC 8292
allows.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from py_vapid.utils import b64urlencode
from yarl import URL

from .. import validation
from ..credentials import ProviderKind, Setting, load_vapid, vapid_public_key, vapid_raw_private_key
from ..credentials import split_url as _split
from ..credentials import text as _text
from ..errors import PayloadError, PushError, ValidationError
from ..message import (
    Activity,
    DeliveryResult,
    Notification,
    OutgoingPush,
    WebPushTarget,
    on_site,
    printable,
)
from ..schemas.base import Documented, ResponseModel, WireModel, starts_with
from ..schemas.fields import MAX_TEXT
from . import aes128gcm
from .base import (
    BODY_SHARE,
    CONNECT_SHARE,
    Provider,
    read_start,
    retry_after_seconds,
    without_answer,
)

if TYPE_CHECKING:
    from ..config import PushSettings

__all__ = [
    "BlockedAddressError",
    "WebPushProvider",
    "WebPushRequest",
    "WebPushResponse",
    "encrypted_size",
    "topic_for",
]

_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: the start of an error body worth putting in a DeliveryResult
_MAX_ERROR_TEXT = 2048


class BlockedAddressError(PushError):
    """A push endpoint resolved to an address flask-push refuses to connect to.

    Endpoints are checked when a browser subscribes, but a hostname can later
    resolve elsewhere (DNS rebinding), so the address is checked again at
    connection time.
    """


@dataclass(frozen=True)
class WebPushRequest:
    """What ``build_payload`` makes of a push: still plaintext, not yet signed.

    The body is encrypted in ``post``: this keeps ``build_payload`` deterministic
    (equal pushes give equal requests, easy to assert on), keeps the payload
    readable in tests, and gives every POST fresh key material. The
    ``Authorization`` header depends on the clock and on the token cache, so it
    is added in ``post`` too.
    """

    endpoint: str
    #: the endpoint as :func:`~flask_push.validation.endpoint_url` parsed and
    #: checked it; ``post`` hands aiohttp this very object, so nothing re-parses it
    url: URL
    #: ``scheme://host[:port]``: the VAPID audience and the token cache key
    origin: str
    #: the host aiohttp connects to, so ``post`` can check an IP literal, which
    #: skips the resolver
    host: str
    #: the UTF-8 JSON payload (CONTRACT.md section 4)
    body: bytes
    #: TTL, Urgency, Topic, Content-Type and Content-Encoding
    headers: Mapping[str, str]
    #: the subscriber's P-256 public key (uncompressed point) and auth secret
    p256dh: bytes
    auth: bytes


@dataclass(frozen=True)
class WebPushResponse:
    """The part of a push service's answer that ``parse`` needs."""

    status: int
    reason: str
    #: the start of the body, for error messages
    text: str
    #: seconds to wait, from ``Retry-After`` (seconds or an HTTP date)
    retry_after: float | None = None
    #: the ``Location`` of a 201: the push service's URL for the message (RFC 8030)
    location: str | None = None


def topic_for(collapse_key: str) -> str:
    """The ``Topic`` header for a collapse key.

    RFC 8030 allows at most 32 base64url characters. A key that fits is sent
    as it is; any other is replaced by the first 32 characters of the base64url
    SHA-256 of its UTF-8 bytes: stable across processes and releases, so a
    newer message still replaces an older one, with 192 bits against collisions.
    """
    if _TOPIC.fullmatch(collapse_key):
        return collapse_key
    digest = hashlib.sha256(collapse_key.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:32]


def encrypted_size(plaintext_size: int) -> int:
    """Bytes on the wire of an aes128gcm body holding ``plaintext_size`` (> 0) bytes."""
    chunk = aes128gcm.RECORD_SIZE - aes128gcm.RECORD_OVERHEAD
    records = max(1, -(-plaintext_size // chunk))
    return aes128gcm.HEADER_SIZE + plaintext_size + records * aes128gcm.RECORD_OVERHEAD


def _normalize_webpush(values: Mapping[str, Any]) -> dict[str, Any]:
    vapid = load_vapid(_text(values, "privateKey") or "")
    public = vapid_public_key(vapid)
    given = _text(values, "publicKey", required=False)
    if given is not None:
        point = _public_point(given)
        if point is None:
            raise ValidationError(
                "is not a P-256 public key (PEM, or the base64url of its 65 bytes, as "
                "`flask push vapid-keys` writes it); leave it out and it is derived",
                field="publicKey",
                code="invalid_setting",
            )
        if str(b64urlencode(point)) != public:
            raise ValidationError(
                "does not belong to the private key; leave it out and it is derived",
                field="publicKey",
                code="invalid_setting",
            )
    subject = _text(values, "subject") or ""
    if not (subject.startswith("mailto:") and "@" in subject) and not (
        subject.startswith("https://") and _split(subject).hostname
    ):
        raise ValidationError(
            "must be a contact URI, 'mailto:you@example.com' or 'https://example.com'",
            field="subject",
            code="invalid_setting",
        )
    return {"privateKey": vapid_raw_private_key(vapid), "publicKey": public, "subject": subject}


def _public_point(text: str) -> bytes | None:
    """The uncompressed P-256 point of a public key given as PEM or as base64 (either
    alphabet, padded or not), or None when ``text`` is no such key."""
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_public_key(text.strip().encode())
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                return None
            return key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        padded = text.strip().rstrip("=")
        point = base64.urlsafe_b64decode(padded + "=" * (-len(padded) % 4))
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except (binascii.Error, ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return point if len(point) == 65 else None


def _private_hosts(patterns: Iterable[str]) -> list[str]:
    """The endpoint host patterns that name an IP literal or a loopback name exactly:
    the only private hosts a Web Push endpoint may point at (CONTRACT.md)."""
    return [
        p.strip("[]")
        for p in patterns
        if validation.is_special_address(p.strip("[]")) and not any(c in p for c in "*?[")
    ]


def _options(settings: PushSettings) -> dict[str, Any]:
    return {
        "allow_http": settings.allow_http_endpoints,
        "allow_private_hosts": _private_hosts(settings.endpoint_hosts),
        "allowed_hosts": settings.endpoint_hosts,
        "site_url": settings.site_url,
    }


# -- the settings on the wire (/providers) ------------------------------------------


class WebPushSettings(WireModel):
    """VAPID: the key browsers' push services check our pushes with."""

    private_key: str
    """Secret. The VAPID P-256 private key: PEM, or raw or DER base64url
    (`flask push vapid-keys`)."""
    public_key: str | None = None
    """Derived from the private key when absent."""
    subject: Annotated[str, Documented(pattern=starts_with("(?:mailto:|https://)"))]
    """A contact URI: `mailto:you@example.com` or `https://example.com`."""


class WebPushPublicSettings(ResponseModel):
    public_key: str
    subject: str


WEBPUSH = ProviderKind(
    name="webpush",
    service="the browser's push service",
    settings=(
        Setting("privateKey", "PUSH_VAPID_PRIVATE_KEY", secret=True),
        Setting("publicKey", "PUSH_VAPID_PUBLIC_KEY", derived=True),
        Setting("subject", "PUSH_VAPID_SUBJECT"),
    ),
    trigger="privateKey",
    requires=None,
    normalize=_normalize_webpush,
    targets="subscription",
    options=_options,
    wire=WebPushSettings,
    shown=WebPushPublicSettings,
)


class WebPushProvider(Provider):
    """Delivers to browsers' push services.

    :param vapid: the application server's key (see :func:`~flask_push.credentials.load_vapid`).
    :param subject: the VAPID ``sub``, ``mailto:`` or ``https:``.
    :param concurrency: requests in flight, and connections in the pool.
    :param lane_concurrency: requests in flight to one push service (origin):
        half of ``concurrency`` by default, so that a service that does not
        answer leaves the other half to the others.
    :param timeout: seconds for one push, connection included.
    :param allow_http: accept ``http://`` endpoints (local test services only).
    :param ssl_context: trust for TLS; by default the system's store, as
        ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` say when the pool is made.
    :param allow_private_hosts: host names (exact, case-insensitive) whose
        addresses may be private, loopback, link-local or reserved, and addresses
        or networks (``"127.0.0.1"``, ``"10.1.0.0/16"``) that an endpoint may name
        as its IP literal host. A name resolving into such a network is still
        refused, unless the name itself is listed: otherwise a wildcard pattern
        would reach the private address through DNS (rebinding). Any other
        connection to such an address is refused with :class:`BlockedAddressError`.
    :param allowed_hosts: the endpoint host patterns of ``PUSH_ENDPOINT_HOSTS``: a
        push to an endpoint they no longer allow (stored before the list was
        narrowed) fails without a connection. None: any host (the address check
        still applies).
    :param resolver: replaces aiohttp's resolver (tests map names with it); the
        address check wraps it either way.
    :param site_url: the site's absolute URL (``PUSH_SITE_URL``): payloads are then
        declarative (WebKit's Declarative Web Push), their links resolved against it.

    .. versionchanged:: 0.2
        ``site_url``; a live activity's state rides in the payload as ``activity``.
    """

    name: ClassVar[str] = "webpush"
    spec: ClassVar[ProviderKind] = WEBPUSH
    #: bytes of encrypted body a push service must accept (RFC 8030, section 7.2)
    max_payload: ClassVar[int] = 4096
    payload_counted: ClassVar[str] = "encrypted payload"
    #: ``payload_size`` assumes message ids and click tokens up to these lengths
    #: (ids are ``msg_`` plus a 26-character ULID; a click token is a signed id)
    max_message_id_length: ClassVar[int] = 64
    max_click_token_length: ClassVar[int] = 200
    #: VAPID tokens are signed for 12 hours (RFC 8292 allows 24) and renewed
    #: after 6, so a token in use always has hours left despite clock skew
    vapid_lifetime: ClassVar[int] = 12 * 3600
    vapid_renew_after: ClassVar[float] = 6 * 3600
    #: VAPID tokens kept, one per push-service origin. A fan-out reaches a few push
    #: services, but an endpoint may name any port of an allowed host (and any host
    #: a wildcard allows): each is an origin, and a token of its own.
    max_tokens: ClassVar[int] = 1024

    def __init__(
        self,
        vapid: Vapid,
        subject: str,
        *,
        concurrency: int = 200,
        lane_concurrency: int | None = None,
        timeout: float = 10.0,
        allow_http: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        allow_private_hosts: Iterable[str] = (),
        allowed_hosts: Iterable[str] | None = None,
        resolver: AbstractResolver | None = None,
        site_url: str | None = None,
    ) -> None:
        super().__init__(
            concurrency=concurrency,
            timeout=timeout,
            lane_concurrency=lane_concurrency or max(1, concurrency // 2),
        )
        # credentials.py already checked the subject; py_vapid's own stricter
        # regex would otherwise fail every push of a subject it dislikes.
        self._vapid = Vapid(vapid.private_key, conf={"no-strict": True})
        self.public_key = vapid_public_key(self._vapid)
        self.subject = subject
        self.allow_http = allow_http
        self.ssl_context = ssl_context
        self._guard = _AddressGuard(allow_private_hosts)
        self._allowed_hosts = None if allowed_hosts is None else tuple(allowed_hosts)
        self._resolver = resolver
        self.site_url = site_url
        self._session: aiohttp.ClientSession | None = None
        self._guarded_resolver: _GuardedResolver | None = None
        #: origin -> (Authorization header, time.monotonic() when to renew it)
        self._tokens: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **options: Any) -> WebPushProvider:
        """Build from :data:`flask_push.credentials.WEBPUSH` settings; no I/O.

        ``options`` are the constructor's keywords (``concurrency``,
        ``lane_concurrency``, ``timeout``, ``allow_http``, ``ssl_context``,
        ``allow_private_hosts``, ``allowed_hosts``, ``resolver``, ``site_url``); an
        unknown one raises
        :class:`TypeError`.
        """
        return cls(load_vapid(settings["privateKey"]), settings["subject"], **options)

    def lane(self, push: OutgoingPush) -> str:
        """The push service: each gets its own share of the slots.

        ``scheme://name`` for a host name, whatever the port and a trailing dot,
        since one service answers on all of them: else an endpoint could make a
        lane of its own of each port of an allowed host (a subscriber's choice),
        and endpoints that never answer, each in a lane of its own, would hold
        every slot. ``scheme://address[:port]`` for an IP address, which only an
        operator names (local test services share one address). Split by hand, as
        this runs for every push.
        """
        target = push.target
        if not isinstance(target, WebPushTarget):
            return ""
        scheme, _, rest = target.endpoint.partition("://")
        host = rest.partition("/")[0].partition("?")[0].partition("#")[0].lower()
        if not host.startswith("[") and not host.rpartition(":")[0].replace(".", "").isdigit():
            host = host.partition(":")[0].rstrip(".")
        else:
            default = {"https": ":443", "http": ":80"}.get(scheme.lower())
            if default and host.endswith(default):
                host = host[: -len(default)]
        return f"{scheme.lower()}://{host}"

    # -- pure steps ---------------------------------------------------------------------

    def build_payload(self, push: OutgoingPush) -> WebPushRequest:
        """The request for ``push``, plaintext and unsigned.

        :raises PayloadError: when the encrypted body would exceed 4096 bytes.
        :raises ValidationError: for an endpoint that subscribing would refuse now,
            whatever the host list (a row stored before that check, say).
        :raises ValueError: for bad subscription keys.
        """
        target = push.target
        if not isinstance(target, WebPushTarget):
            raise TypeError(f"webpush cannot deliver to a {type(target).__name__}")
        # The same check as at subscribe time: a host written otherwise than the
        # client connects to it (①②⑦.0.0.1, 0x7f.0.0.1) never reaches the network.
        url = validation.endpoint_url(target.endpoint, allow_http=self.allow_http)
        if self._allowed_hosts is not None:
            self._check_host_allowed(url.raw_host or "")
        p256dh = _b64decode(target.p256dh, "p256dh")
        if len(p256dh) != 65 or p256dh[0] != 4:
            raise ValueError("the subscription's p256dh is not an uncompressed P-256 point")
        auth = _b64decode(target.auth, "auth")
        if len(auth) != 16:
            raise ValueError(f"the subscription's auth secret is {len(auth)} bytes, not 16")
        notification = push.notification
        body = _payload_json(
            notification,
            push.message_id,
            push.click_token,
            activity=push.activity,
            site_url=self.site_url,
        )
        size = encrypted_size(len(body))
        if size > self.max_payload:
            raise PayloadError(
                f"the webpush payload is {size} bytes; the limit is {self.max_payload}",
                provider=self.name,
            )
        if notification.ttl < 0:
            raise ValueError(f"ttl must be zero or more seconds, not {notification.ttl}")
        headers = {
            "TTL": str(notification.ttl),
            "Urgency": notification.urgency,
            "Content-Type": "application/octet-stream",
            "Content-Encoding": "aes128gcm",
        }
        if notification.collapse_key:
            headers["Topic"] = topic_for(notification.collapse_key)
        return WebPushRequest(
            endpoint=target.endpoint,
            url=url,
            origin=_origin(url),
            host=url.raw_host or "",
            body=body,
            headers=headers,
            p256dh=p256dh,
            auth=auth,
        )

    def _check_host_allowed(self, host: str) -> None:
        """Refuse ``host`` unless ``allowed_hosts`` allows it, as subscribing checks it."""
        assert self._allowed_hosts is not None
        if not _host_allowed(host, self._allowed_hosts):
            raise ValidationError(
                f"points at {host.rstrip('.')!r}, which PUSH_ENDPOINT_HOSTS no longer "
                "allows (it did when the browser subscribed); not sent",
                field="endpoint",
                code="endpoint_not_allowed",
            )

    def preview(self, push: OutgoingPush) -> dict[str, Any]:
        """The endpoint, headers (TTL, Urgency, Topic) and JSON payload before
        encryption; ``post`` adds the VAPID ``Authorization``, signed per origin."""
        request = self.build_payload(push)
        headers = dict(request.headers)
        headers["Authorization"] = f"vapid t=<signed when sent>, k={self.public_key}"
        return {
            "endpoint": request.endpoint,
            "headers": headers,
            "payload": json.loads(request.body),
            "encryptedBytes": encrypted_size(len(request.body)),
        }

    def payload_size(self, notification: Notification) -> int:
        """The encrypted body size with a message id and click token of the maximal
        length, in the form it goes out in (declarative with a site URL)."""
        return self._largest(notification, None)

    def activity_payload_size(self, notification: Notification, activity: Activity) -> int:
        """:meth:`payload_size` of ``notification`` showing ``activity``, whose id,
        event and state ride in the payload (``push.activity``)."""
        return self._largest(notification, activity)

    def _largest(self, notification: Notification, activity: Activity | None) -> int:
        body = _payload_json(
            notification,
            "m" * self.max_message_id_length,
            "c" * self.max_click_token_length,
            activity=activity,
            site_url=self.site_url,
        )
        return encrypted_size(len(body))

    def parse(self, push: OutgoingPush, response: Any) -> DeliveryResult:
        """Map a push service's answer, or the exception ``post`` raised, onto a result."""
        if isinstance(response, WebPushResponse):
            return self._parse_response(push, response)
        if isinstance(response, BaseException):
            return self._parse_error(push, response)
        return DeliveryResult(
            push.delivery_id, "failed", self.name, error=f"unexpected response {response!r}"
        )

    def _parse_response(self, push: OutgoingPush, response: WebPushResponse) -> DeliveryResult:
        status = response.status
        if 200 <= status < 300:
            return DeliveryResult(
                push.delivery_id,
                "sent",
                self.name,
                status_code=status,
                service_id=response.location[:MAX_TEXT] if response.location else None,
            )
        said = f"{status} {response.reason}".strip()
        if response.text:
            said = f"{said}: {response.text}"
        if status in (404, 410):
            meaning = (
                "the push service does not know this subscription"
                if status == 404
                else "the subscription has expired or was unsubscribed"
            )
            error = f"{meaning} ({said})"
            return DeliveryResult(
                push.delivery_id, "gone", self.name, error=error, status_code=status
            )
        if status == 429 or status >= 500:
            return DeliveryResult(
                push.delivery_id,
                "retry",
                self.name,
                error=said,
                status_code=status,
                retry_after=response.retry_after,
            )
        if status in (401, 403):
            # RFC 8292: the VAPID token is refused, or does not match the key the
            # subscription was made for (the app's key changed since)
            return DeliveryResult(
                push.delivery_id,
                "failed",
                self.name,
                error=(
                    f"{said}; check {self.setting('PUSH_VAPID_PRIVATE_KEY')} and "
                    f"{self.setting('PUSH_VAPID_SUBJECT')}: a subscription made for another "
                    "key is refused (the browser must subscribe again)"
                ),
                status_code=status,
                reason="credentials_refused",
            )
        if status == 413:
            # flask-push sends no more than max_payload: this service takes less
            return DeliveryResult(
                push.delivery_id,
                "failed",
                self.name,
                error=f"the push service refused the encrypted payload as too large: {said}",
                status_code=status,
                reason="too_large",
            )
        return DeliveryResult(push.delivery_id, "failed", self.name, error=said, status_code=status)

    def _parse_error(self, push: OutgoingPush, error: BaseException) -> DeliveryResult:
        message = str(error) or type(error).__name__
        if isinstance(error, BlockedAddressError):
            return DeliveryResult(
                push.delivery_id, "failed", self.name, error=message, reason="address_blocked"
            )
        if isinstance(error, (PayloadError, ValidationError)):
            return DeliveryResult(push.delivery_id, "failed", self.name, error=message)
        unanswered = without_answer(push, self.name, error, self.timeout)
        if unanswered is not None:
            return unanswered
        return DeliveryResult(
            push.delivery_id, "failed", self.name, error=f"{type(error).__name__}: {message}"
        )

    # -- the network --------------------------------------------------------------------

    async def post(self, push: OutgoingPush, payload: WebPushRequest) -> WebPushResponse:
        """Encrypt, sign and POST one push on the pooled session."""
        session = self._client()
        # aiohttp connects to an IP literal without asking the resolver.
        self._guard.check_literal(payload.host)
        body = aes128gcm.encrypt(payload.body, payload.p256dh, payload.auth)
        headers = dict(payload.headers)
        headers["Authorization"] = self._authorization(payload.origin)
        # Redirects are refused: a push service never sends one, and following
        # it would reach a URL that nobody validated.
        async with session.post(
            payload.url, data=body, headers=headers, allow_redirects=False
        ) as response:
            # A push service's 2xx says the push is taken, with nothing to read in
            # its body: a body that never ends, or stalls, must not hold the push
            # until its timeout makes it a retry, sent twice. An error's status says
            # what became of it (410: gone, 413: too large); its body only words it,
            # read for a share of the timeout, so that one that stalls loses no status.
            accepted = 200 <= response.status < 300
            text = (
                ""
                if accepted
                else printable(
                    await read_start(
                        response, _MAX_ERROR_TEXT, for_at_most=self.timeout * BODY_SHARE
                    )
                )
            )
            answer = WebPushResponse(
                status=response.status,
                reason=response.reason or "",
                text=text.strip(),
                retry_after=retry_after_seconds(response.headers.get("Retry-After"), time.time()),
                location=response.headers.get("Location"),
            )
        if answer.status in (401, 403):
            # Sign afresh next time, in case the token was the problem.
            self._tokens.pop(payload.origin, None)
        return answer

    def _authorization(self, origin: str) -> str:
        """The VAPID header for ``origin``, signed once and reused until renewal."""
        now = time.monotonic()
        cached = self._tokens.get(origin)
        if cached is not None and now < cached[1]:
            return cached[0]
        self._tokens.pop(origin, None)  # signed again below: then the newest
        if len(self._tokens) >= self.max_tokens:
            # Keep the newest half of those still valid: a fan-out over many origins
            # then prunes once per max_tokens / 2 signatures. Pruning only the
            # expired ones left them all (they live for hours) and scanned them on
            # every signature: quadratic, on the loop every push waits on.
            valid = [(o, t) for o, t in self._tokens.items() if now < t[1]]
            self._tokens = dict(valid[len(valid) - self.max_tokens // 2 :])
        # Built fresh for each signature: pywebpush's webpush() writes into the
        # claims it is given, and nothing here should share them.
        claims = {"aud": origin, "sub": self.subject, "exp": int(time.time()) + self.vapid_lifetime}
        header = str(self._vapid.sign(claims)["Authorization"])
        self._tokens[origin] = (header, now + self.vapid_renew_after)
        return header

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use inside the running loop."""
        if self._session is None:
            self._guarded_resolver = _GuardedResolver(
                self._resolver or aiohttp.DefaultResolver(), self._guard
            )
            connector = aiohttp.TCPConnector(
                limit=self.concurrency,
                ssl=self.ssl_context
                or _system_trust(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
                resolver=self._guarded_resolver,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # send_one's own timer bounds each push; a second per request
                # here would cost a timer for nothing
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout * CONNECT_SHARE
                ),
                headers={"User-Agent": "flask-push"},
                # A push service sets no cookie worth keeping, and a jar would be
                # searched on every request of a fan-out for nothing.
                cookie_jar=aiohttp.DummyCookieJar(),
                # Proxies would resolve names where the guard cannot see them.
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        """Close the pooled connections; a later ``post`` opens a new pool."""
        session, resolver = self._session, self._guarded_resolver
        self._session = self._guarded_resolver = None
        if session is not None:
            await session.close()
        if resolver is not None and self._resolver is None:
            await resolver.close()


# Every push re-checks its endpoint's host, and a fan-out's endpoints share a few
# hosts: the verdict on each is kept, as validation keeps its spelling check's.
@functools.lru_cache(maxsize=4096)
def _host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    return validation.host_allowed(host.rstrip("."), patterns)


@functools.cache
def _system_trust(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """The system's trust store, as ``SSL_CERT_FILE`` (``cafile``) and
    ``SSL_CERT_DIR`` (``capath``) say now: aiohttp's own default context is made
    when aiohttp is imported, so a setting made later (a test's fake service, a
    container's entry point) would not count. Made once per setting: loading the
    store takes milliseconds. aiohttp's settings otherwise."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(("http/1.1",))
    return context


#: IPv6 networks that Python's ``is_global`` (3.10 to 3.12) counts as global and are
#: not: site-local (deprecated, still routed inside some sites), NAT64 for local use
#: (RFC 8215: it reaches the site's own IPv4 network), the documentation range of
#: RFC 9637 and SRv6 segment identifiers (RFC 9602)
_NOT_GLOBAL_V6 = tuple(
    ipaddress.IPv6Network(net) for net in ("fec0::/10", "64:ff9b:1::/48", "3fff::/20", "5f00::/16")
)
#: IPv6 networks whose last 32 bits are an IPv4 address that a packet to them
#: reaches: NAT64's well-known prefix (RFC 6052) and SIIT's IPv4-translated
#: addresses (RFC 2765)
_LAST_32_BITS_V4 = tuple(ipaddress.IPv6Network(net) for net in ("64:ff9b::/96", "::ffff:0:0:0/96"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside ``ip`` that a connection to it reaches (mapped, 6to4,
    NAT64, SIIT, or the old ``::a.b.c.d`` form), or None."""
    inner = ip.ipv4_mapped or ip.sixtofour
    if inner is None and (int(ip) >> 32 == 0 or any(ip in net for net in _LAST_32_BITS_V4)):
        inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return inner


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """May a push connect to ``ip`` by a name? Only a global unicast address."""
    if ip.is_multicast or not ip.is_global:
        return False
    return not (isinstance(ip, ipaddress.IPv6Address) and any(ip in n for n in _NOT_GLOBAL_V6))


class _AddressGuard:
    """Decides which addresses a push may connect to."""

    def __init__(self, allowed: Iterable[str]) -> None:
        hosts: set[str] = set()
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allowed:
            name = entry.strip().lower().strip("[]").rstrip(".")
            try:
                networks.append(ipaddress.ip_network(name, strict=False))
            except ValueError:
                hosts.add(name)
        self.hosts = frozenset(hosts)
        self.networks = tuple(networks)
        #: URL hosts that ``check_literal`` let through
        self._passed: set[str] = set()

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def check(self, host: str, address: str, *, literal: bool = False) -> None:
        """Raise :class:`BlockedAddressError` unless ``host`` may connect to ``address``.

        Allowed networks count only for a ``literal`` host (the endpoint names the
        address itself): a name resolving there passes only when it is listed.
        """
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError as err:
            raise BlockedAddressError(f"{host} resolved to {address!r}, not an IP") from err
        networks = self.networks if literal else ()
        if any(ip in net for net in networks):
            return
        seen: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            # An IPv4 address inside IPv6 reaches that IPv4 address, so it is
            # judged as one too
            inner = _embedded_ipv4(ip)
            if inner is not None:
                if any(inner in net for net in networks):
                    return
                seen.append(inner)
        if all(_public(each) for each in seen):
            return
        raise BlockedAddressError(
            f"refused to connect to {host} at {ip}: a private, loopback, link-local or "
            "reserved address, reached only by an endpoint that names the address "
            "itself, listed exactly in PUSH_ENDPOINT_HOSTS"
        )

    def check_literal(self, host: str) -> None:
        """Check a URL host that aiohttp connects to without the resolver.

        aiohttp takes a host with a colon, or of digits and dots, for an IP
        address and skips the resolver (``aiohttp.helpers.is_ip_address``); such
        a host must be an address the guard allows. Names go through the resolver.
        """
        if host in self._passed:
            return
        if (":" in host or host.replace(".", "").isdigit()) and not self.allows_host(host):
            address = host.strip("[]")
            try:
                ipaddress.ip_address(address.partition("%")[0])
            except ValueError as err:
                raise BlockedAddressError(
                    f"refused to connect to {host!r}: it is no IP address in canonical form, "
                    "and the client would not resolve it"
                ) from err
            self.check(host, address, literal=True)
        # The verdict on a literal never changes, unlike a name's, so it is kept.
        self._passed.add(host)


class _GuardedResolver(AbstractResolver):
    """Resolves with another resolver, then refuses addresses the guard forbids."""

    def __init__(self, inner: AbstractResolver, guard: _AddressGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._guard.allows_host(host):
            # Every address, not just the first: aiohttp falls back to the others.
            for result in results:
                self._guard.check(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


#: the ``web_push`` member that marks a declarative push message (the RFC's number)
DECLARATIVE = 8030


#: compact UTF-8 JSON without NaN; one encoder, not one per json.dumps() call
_PAYLOAD_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _payload_json(
    notification: Notification,
    message_id: str,
    click_token: str | None,
    *,
    activity: Activity | None = None,
    site_url: str | None = None,
) -> bytes:
    """The payload as compact UTF-8 JSON without nulls: declarative (WebKit's
    Declarative Web Push, CONTRACT.md section 8) when the site's URL is known, else
    that of CONTRACT.md section 4; with ``"activity"`` for a live activity's state."""
    payload = (
        _declarative(notification, message_id, click_token, activity, site_url)
        if site_url is not None
        else _classic(notification, message_id, click_token, activity)
    )
    try:
        text = _PAYLOAD_JSON.encode(payload)
    except (TypeError, ValueError) as err:
        raise PayloadError(
            f"the notification's data is not JSON: {err}", provider="webpush"
        ) from err
    return text.encode("utf-8")


def _activity_json(activity: Activity) -> dict[str, Any]:
    # the timestamp only grows from one state to the next: push services keep no
    # order, and the service worker keeps a newer state shown over an older one
    # that arrives after it
    return {
        "id": activity.id,
        "event": activity.event,
        "state": dict(activity.state),
        "timestamp": activity.timestamp,
    }


def _classic(
    notification: Notification,
    message_id: str,
    click_token: str | None,
    activity: Activity | None,
) -> dict[str, Any]:
    """For a service worker (ours, or the host's) to show: CONTRACT.md section 4."""
    payload: dict[str, Any] = {"title": notification.title, "body": notification.body or ""}
    for key, value in (
        ("url", notification.url),
        ("icon", notification.icon),
        ("image", notification.image),
        ("badge", notification.badge),
        ("tag", notification.tag or notification.collapse_key),
    ):
        if value is not None:
            payload[key] = value
    if notification.data:
        payload["data"] = dict(notification.data)
    if activity is not None:
        payload["activity"] = _activity_json(activity)
    payload["messageId"] = message_id
    if click_token is not None:
        payload["clickToken"] = click_token
    return payload


def _declarative(
    notification: Notification,
    message_id: str,
    click_token: str | None,
    activity: Activity | None,
    site_url: str,
) -> dict[str, Any]:
    """A declarative push message (the Push API's ``web_push: 8030`` form), which Safari
    18.4+ shows by itself, no service worker run, and which ours reads too.

    WebKit requires ``navigate``, an absolute URL, and a link of ours may be a path: it
    and the images resolve against the site's URL. What a service worker needs for
    the click (the message id and click token, the host's data) rides in
    ``notification.data``, which the browser hands back with the shown notification.
    """
    tag = notification.tag or notification.collapse_key
    shown: dict[str, Any] = {"title": notification.title}
    if notification.body:
        shown["body"] = notification.body
    shown["navigate"] = on_site(notification.url, site_url) if notification.url else site_url
    if tag is not None:
        shown["tag"] = tag
    for key, link in (
        ("icon", notification.icon),
        ("image", notification.image),
        # a str badge is the small monochrome image; an int is the app badge below
        ("badge", notification.badge if isinstance(notification.badge, str) else None),
    ):
        if link is not None:
            shown[key] = on_site(link, site_url)
    if activity is not None and tag is not None:
        # As a Live Activity does: the start and the end alert, the updates in
        # between replace the shown state quietly (renotify needs a tag).
        if activity.event == "update":
            shown["silent"] = True
        else:
            shown["renotify"] = True
    data: dict[str, Any] = {"messageId": message_id}
    if click_token is not None:
        data["clickToken"] = click_token
    if notification.url is not None:
        data["url"] = notification.url
    if activity is not None:
        data["activity"] = _activity_json(activity)
    if notification.data:
        data["data"] = dict(notification.data)
    shown["data"] = data
    payload: dict[str, Any] = {"web_push": DECLARATIVE, "notification": shown}
    if isinstance(notification.badge, int) and not isinstance(notification.badge, bool):
        payload["app_badge"] = notification.badge
    return payload


def _origin(url: URL) -> str:
    """``scheme://host[:port]`` as browsers serialize an origin: no default port."""
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is None or (url.scheme, port) in (("https", 443), ("http", 80)):
        return f"{url.scheme}://{host}"
    return f"{url.scheme}://{host}:{port}"


def _b64decode(text: str, name: str) -> bytes:
    padded = text.strip().rstrip("=")
    try:
        return base64.urlsafe_b64decode(padded + "=" * (-len(padded) % 4))
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"the subscription's {name} is not base64url") from err
