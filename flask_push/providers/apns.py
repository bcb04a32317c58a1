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
priority 5, as Apple requires. An ``image`` path resolves against ``PUSH_SITE_URL``
when set; ``url`` stays as given, for the app to route. ``icon`` has no APNs
equivalent (the app icon is shown) and ``url-args`` is left out: it only serves
Safari's legacy website push, which flask-push does through Web Push.

Request headers:

- ``apns-push-type``: ``alert``, or ``background`` as above;
- ``apns-priority``: 10 (deliver now) for ``high`` and ``normal`` urgency, 5 (the device
  may wait for a good moment to save power) for ``low`` and ``very-low``. ``normal`` is
  10 because an alert a user should see is not delayed on Web Push or FCM either; Apple
  keeps 5 for what may arrive late;
- ``apns-expiration``: now + ``ttl``; a ``ttl`` of 0 sends ``0`` (deliver once if the
  device is online, never store), which is what Apple means by 0;
- ``apns-collapse-id``: ``collapse_key``; a key longer than Apple's 64 bytes, or one
  an HTTP field value cannot hold (a control character such as a line break, or
  surrounding white space), becomes its first 31 bytes without those, ``~`` and 32 hex
  digits of its SHA-256 (stable, still readable);
- ``apns-topic``: the ``topic`` setting (the app's bundle id);
- ``apns-id``: a UUID derived from the delivery id, so Apple's delivery log can be
  matched to the delivery.

Live activities (``push.activity``, :class:`~flask_push.message.Activity`) go two ways,
by the kind of token the push targets (``DeviceTarget.kind``):

- to a Live Activity's own push token (``activity``) or the app's push-to-start token
  (``start``): a Live Activity push, as Apple's "Starting and updating Live Activities
  with ActivityKit push notifications" describes::

      apns-push-type: liveactivity
      apns-topic: <topic>.push-type.liveactivity
      {"aps": {"timestamp": 1767000000,          # Activity.timestamp: only grows
               "event": "start" | "update" | "end",
               "content-state": {...},           # Activity.state
               "stale-date": 1767003600,         # stale_at, when given
               "dismissal-date": 1767007200,     # dismiss_at, on end only
               "alert": {"title": "...", "body": "...", "sound": "..."},  # start, end
               "attributes-type": "...",         # push-to-start (``start``) only
               "attributes": {...}}}

  ``apns-priority`` is 10 for ``start`` and ``end`` and for an update of ``high``
  urgency, else 5: Apple gives each app a budget of priority-10 Live Activity pushes
  and throttles past it, while 5 is delivered soon and costs nothing. No
  ``apns-collapse-id``: the token is the activity. A ``start`` sent to an activity's own
  token (the app started it and registered its token first) goes as an ``update``; a
  push-to-start token takes only ``start``, with ``attributes_type`` and ``attributes``,
  and anything else is ``failed``.
- to the device token (``device``: an installation without a token for the activity):
  the ordinary alert above, whose ``apns-collapse-id`` and ``thread-id`` are the
  notification's collapse key and tag (the activity id), with the state at the top
  level: ``"activity": {"id", "event", "state", "timestamp"}``.

A token APNs reports dead (410, ``Unregistered``, ``BadDeviceToken``, ``ExpiredToken``)
is ``gone``: that token only. ``DeviceTokenNotForTopic`` is ``failed`` and keeps the
token: a ``PUSH_APNS_TOPIC`` naming another app of the team says it of every device.
The result does not say which token; the dispatcher knows it from the push's
``target.kind`` and drops a dead ``activity`` or ``start`` token without touching the
installation's device token.

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
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ConfigDict, Field, WithJsonSchema

from ..credentials import ProviderKind, Setting, site_url_option
from ..credentials import base_url as _base_url
from ..credentials import text as _text
from ..errors import PayloadError, ValidationError
from ..message import (
    Activity,
    DeliveryResult,
    DeviceTarget,
    Notification,
    OutgoingPush,
    Status,
    TokenKind,
    on_site,
)
from ..schemas.base import Documented, ResponseModel, WireModel, stripped
from ..validation import digits
from .base import Provider, exiting, os_words, unreachable

# aioapns (the ``apns`` extra) is imported by ._apns_client, on first use, so that
# the kind below can be read (and the extra asked for) without it.
if TYPE_CHECKING:
    from aioapns.common import NotificationRequest, NotificationResult

    from ._apns_client import _Pool

__all__ = ["PRODUCTION_HOST", "SANDBOX_HOST", "APNsProvider", "InvalidDeviceToken"]

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"

#: aioapns' default; each connection carries up to 1000 concurrent streams
MAX_CONNECTIONS = 10
#: tries per push when a connection drops under it (connect failures are not retried)
MAX_SEND_ATTEMPTS = 3
MAX_COLLAPSE_ID_BYTES = 64
#: what an HTTP field value must not hold (RFC 9110 section 5.5): control characters
#: but tab. HTTP/2 makes a request whose field value holds NUL, CR or LF, or starts or
#: ends with white space, malformed (RFC 9113 section 8.2.1); h2 sends it as it is,
#: and the server then drops the whole connection, with the other pushes on it.
_NOT_IN_FIELD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: ids are String(40) columns; payload_size assumes the longest
LONGEST_MESSAGE_ID = 40
#: provider tokens are renewed after this many seconds (Apple: between 20 and 60 minutes)
TOKEN_LIFETIME = 30 * 60
#: APNs refuses a new provider token within this many seconds of the last
#: (TooManyProviderTokenUpdates)
MIN_TOKEN_AGE = 20 * 60

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"[0-9A-Fa-f]+")
_APNS_ID_NAMESPACE = uuid.UUID("6f1e0cf4-6a8d-4c5e-9b0b-2d3f6a1c7e55")
_GONE_REASONS = frozenset({"Unregistered", "BadDeviceToken", "ExpiredToken"})
#: what Apple appends to the bundle id in ``apns-topic`` for Live Activity pushes
LIVE_ACTIVITY_TOPIC_SUFFIX = ".push-type.liveactivity"
_TOKEN_NAMES: dict[TokenKind, str] = {
    "device": "device token",
    "activity": "Live Activity's push token",
    "start": "push-to-start token",
}


APPLE_ID = re.compile(r"^[A-Z0-9]{10}\Z")
BUNDLE_ID = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\Z")
#: APNs tokens are hex; Apple says not to rely on their length, so 32 to 100 bytes
APNS_TOKEN = re.compile(r"^(?:[0-9a-fA-F]{2}){32,100}\Z")


def _normalize_apns(values: Mapping[str, Any]) -> dict[str, Any]:
    pem = _text(values, "key") or ""
    try:
        key = serialization.load_pem_private_key(pem.encode(), None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:  # TypeError: encrypted
        raise ValidationError(
            "must be the .p8 key from Apple (PEM text starting with -----BEGIN PRIVATE KEY-----)",
            field="key",
            code="invalid_setting",
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValidationError(
            "must be an APNs auth key (P-256)", field="key", code="invalid_setting"
        )
    normalized: dict[str, Any] = {"key": pem}
    for name, what in (
        ("keyId", "the key's 10-character Key ID"),
        ("teamId", "your 10-character Team ID"),
    ):
        value = _text(values, name) or ""
        if not APPLE_ID.match(value):
            raise ValidationError(
                f"must be {what}, got {value!r}", field=name, code="invalid_setting"
            )
        normalized[name] = value
    topic = _text(values, "topic") or ""
    if not BUNDLE_ID.match(topic):
        raise ValidationError(
            f"must be the app's bundle id such as 'com.example.shop', got {topic!r}",
            field="topic",
            code="invalid_setting",
        )
    normalized["topic"] = topic
    return {**normalized, **_where_apns_is(values)}


def _where_apns_is(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that have defaults of their own (``sandbox``, ``baseUrl``),
    checked: ``init_app`` checks them alone too, for providers stored through the API."""
    sandbox = values.get("sandbox", False)
    if not isinstance(sandbox, bool):
        raise ValidationError("must be true or false", field="sandbox", code="invalid_setting")
    base_url = _base_url(values, "baseUrl", default=None)
    if base_url and not base_url.startswith("https://"):
        raise ValidationError(
            "must be an https origin: APNs is always TLS", field="baseUrl", code="invalid_setting"
        )
    return {"sandbox": sandbox, "baseUrl": base_url}


# -- the settings on the wire (/providers) ------------------------------------------


class ApnsSettings(WireModel):
    """Apple Push Notification service, token auth."""

    key: str
    """Secret. The .p8 auth key from Apple, as PEM text."""
    key_id: Annotated[str, Documented(pattern=stripped(APPLE_ID))]
    """The auth key's 10-character Key ID, from Apple's developer account."""
    team_id: Annotated[str, Documented(pattern=stripped(APPLE_ID))]
    """Your 10-character Team ID, from Apple's developer account."""
    topic: Annotated[str, Documented(pattern=stripped(BUNDLE_ID))]
    """The app's bundle id (`com.example.shop`)."""
    sandbox: bool = False
    base_url: str | None = None
    """An https origin; default Apple's."""


class ApnsPublicSettings(ResponseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    key_id: str
    team_id: str
    topic: str
    sandbox: bool
    base_url: Annotated[str | None, WithJsonSchema({"type": "string"})] = Field(
        default=None, exclude_if=lambda value: value is None
    )
    """Absent for Apple's own origin."""


APNS = ProviderKind(
    name="apns",
    service="Apple's push service (APNs)",
    settings=(
        Setting("key", "PUSH_APNS_KEY", secret=True, file_unless="-----BEGIN"),
        Setting("keyId", "PUSH_APNS_KEY_ID"),
        Setting("teamId", "PUSH_APNS_TEAM_ID"),
        Setting("topic", "PUSH_APNS_TOPIC"),
        Setting(
            "sandbox", "PUSH_APNS_SANDBOX", required=False, standalone=True, debug_default=True
        ),
        Setting("baseUrl", "PUSH_APNS_BASE_URL", required=False, standalone=True),
    ),
    trigger="key",
    requires=("aioapns", "apns"),
    normalize=_normalize_apns,
    normalize_standalone=_where_apns_is,
    platform="ios",
    token_pattern=APNS_TOKEN,
    token_message="must be the APNs device token as hex (64 or more hex digits)",
    token_lower=True,
    wire=ApnsSettings,
    shown=ApnsPublicSettings,
    live_activities=True,
    options=site_url_option,
)


class InvalidDeviceToken(ValueError):
    """A device token that is not hex: APNs would refuse it, so it is never sent."""


def _instant(milliseconds: int) -> datetime | None:
    """The time of an APNs ``timestamp`` (milliseconds since the epoch), or None for
    one no calendar holds: it is only told, and the token is gone all the same."""
    try:
        return datetime.fromtimestamp(milliseconds / 1000, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


class APNsProvider(Provider):
    """Sends to iOS, iPadOS and macOS apps through APNs with one pooled HTTP/2 client.

    Construction does no I/O: the client (TLS context and connections) is made in the
    running event loop on the first :meth:`post`. Use one loop at a time and call
    :meth:`aclose` in it when done.
    """

    name = "apns"
    spec = APNS
    max_payload = 4096
    fetches_images = True

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
        site_url: str | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, timeout=timeout)
        self.key_id = key_id
        #: ``PUSH_SITE_URL``: an image given as a path resolves against it
        self.site_url = site_url
        self.team_id = team_id
        self.topic = topic
        self.host = host
        self.port = port
        self._ssl_context = ssl_context
        from ._apns_client import _ProviderToken

        # One token for every connection and pool: signed lazily, renewed every 30 min.
        self._token = _ProviderToken(key, key_id, team_id)
        self._pool: _Pool | None = None

    # The base class takes any options; this provider names the ones it understands.
    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **options: Any) -> APNsProvider:
        """Build from normalized ``apns`` settings: ``baseUrl`` overrides ``sandbox``.

        ``options`` are the constructor's keywords (``concurrency``, ``timeout``,
        ``site_url``, and ``ssl_context``, which replaces the default context: the system trust
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
        from ._apns_client import NotificationRequest, PushType

        if not isinstance(push.target, DeviceTarget):
            raise TypeError(f"APNs sends to device tokens, not to {type(push.target).__name__}")
        token = push.target.token.strip()
        if not _TOKEN.fullmatch(token):
            raise InvalidDeviceToken("the device token is not hex, so it cannot be an APNs token")
        notification, activity = push.notification, push.activity
        request_id = str(uuid.uuid5(_APNS_ID_NAMESPACE, push.delivery_id))
        if push.target.kind != "device":
            if activity is None:
                raise PayloadError(
                    f"a {_TOKEN_NAMES[push.target.kind]} takes Live Activity pushes only "
                    "(push.activity)",
                    provider=self.name,
                )
            kind = push.target.kind
            # a catch-up or a farewell brings no news: Apple's budget of priority 10
            # is small
            urgent = not activity.token_only and (
                activity.event != "update" or notification.urgency == "high"
            )
            return NotificationRequest(
                token,
                live_activity_payload(notification, activity, kind),
                notification_id=request_id,
                time_to_live=max(notification.ttl, 0),
                priority=10 if urgent else 5,
                push_type=PushType.LIVEACTIVITY,
                apns_topic=self.topic + LIVE_ACTIVITY_TOPIC_SUFFIX,
            )
        payload = apns_payload(notification, push.message_id, activity, self.site_url)
        background = "content-available" in payload["aps"]
        low = background or notification.urgency in ("low", "very-low")
        return NotificationRequest(
            token,
            payload,
            notification_id=request_id,
            time_to_live=max(notification.ttl, 0),
            priority=5 if low else 10,
            collapse_key=collapse_id(notification.collapse_key),
            push_type=PushType.BACKGROUND if background else PushType.ALERT,
        )

    def preview(self, push: OutgoingPush) -> dict[str, Any]:
        """The request's path, ``apns-*`` headers and JSON payload, as :meth:`post` sends
        them (the ``authorization`` provider token is left out: it is a credential)."""
        request = self.build_payload(push)
        return {
            "path": f"/3/device/{request.device_token}",
            "headers": dict(apns_headers(request, self.topic, time.time())),
            "payload": request.message,
        }

    def payload_size(self, notification: Notification) -> int:
        """Bytes of the JSON payload, with the longest message id."""
        longest = "m" * LONGEST_MESSAGE_ID
        return len(encode(apns_payload(notification, longest, site_url=self.site_url)))

    def activity_payload_size(self, notification: Notification, activity: Activity) -> int:
        """Bytes of the largest payload ``activity`` may go out as: the alert to a device
        token, the Live Activity push to its token, or the push-to-start."""
        sizes = [
            len(
                encode(
                    apns_payload(notification, "m" * LONGEST_MESSAGE_ID, activity, self.site_url)
                )
            ),
            len(encode(live_activity_payload(notification, activity, "activity"))),
        ]
        if activity.event == "start" and None not in (
            activity.attributes_type,
            activity.attributes,
        ):
            sizes.append(len(encode(live_activity_payload(notification, activity, "start"))))
        return max(sizes)

    def parse(self, push: OutgoingPush, response: Any) -> DeliveryResult:
        """Map APNs' answer (or the error ``post`` raised) onto a :class:`DeliveryResult`."""
        from ._apns_client import (
            AnswerLost,
            APNsConnectionError,
            ConnectionClosed,
            MaxAttemptsExceeded,
            NotificationResult,
        )

        if isinstance(response, NotificationResult):
            return self._parse_result(push, response)
        if isinstance(response, InvalidDeviceToken):
            return DeliveryResult(push.delivery_id, "gone", self.name, error=str(response))
        if isinstance(response, AnswerLost):
            return DeliveryResult(
                push.delivery_id,
                "retry",
                self.name,
                error=f"the connection to {self.host}:{self.port} broke before APNs "
                f"answered ({response})",
                reason="no_answer",
            )
        if isinstance(
            response, (MaxAttemptsExceeded, ConnectionClosed, APNsConnectionError, OSError)
        ) or exiting(response):
            where = f"{self.host}:{self.port}"
            if isinstance(response, MaxAttemptsExceeded):
                said = f"the connection to {where} dropped on every attempt"
            elif exiting(response):
                said = unreachable(response)
            elif isinstance(response, OSError):
                said = f"the connection to {where} failed ({os_words(response)})"
            else:  # aioapns's own: its name says it when its text is empty
                said = (
                    f"the connection to {where} failed ({str(response) or type(response).__name__})"
                )
            return DeliveryResult(
                push.delivery_id, "retry", self.name, error=said, reason="unreachable"
            )
        return DeliveryResult(
            push.delivery_id,
            "failed",
            self.name,
            error=f"{type(response).__name__}: {response}",
        )

    def _parse_result(self, push: OutgoingPush, result: NotificationResult) -> DeliveryResult:
        status, reason = result.status, result.description or ""
        code = int(status) if digits(status) else None

        def outcome(
            kind: Status, error: str | None = None, reason: str | None = None
        ) -> DeliveryResult:
            return DeliveryResult(push.delivery_id, kind, self.name, error, code, reason=reason)

        if status == "200":
            # the apns-id APNs echoes: what Apple's delivery log knows it by
            return DeliveryResult(
                push.delivery_id,
                "sent",
                self.name,
                status_code=200,
                service_id=result.notification_id or None,
            )
        if status == "410" or reason in _GONE_REASONS:
            # That token is dead; for a Live Activity's or push-to-start token, only that
            # one (the dispatcher reads which from push.target.kind), not the device's.
            error = reason or "Unregistered"
            since = _instant(result.timestamp) if result.timestamp else None
            if since is not None:
                error += f" (the token is invalid since {since.isoformat(timespec='seconds')})"
            elif reason == "BadDeviceToken":
                error += (
                    " (or a token of the other environment: "
                    f"check {self.setting('PUSH_APNS_SANDBOX')})"
                )
            if isinstance(push.target, DeviceTarget) and push.target.kind != "device":
                error += f"; it was the {_TOKEN_NAMES[push.target.kind]}"
            return outcome("gone", error)
        if status == "429" or (len(status) == 3 and status.startswith("5")):
            # too many requests, or any server error (Apple documents 500 and 503; a
            # proxy or load balancer on the way answers 502 or 504): for now
            return outcome("retry", f"{status} {reason}".strip())
        if reason == "ExpiredProviderToken" and self._token.renew_if_old():
            # the token's age was misread (the wall clock stepped back since it was
            # signed): the next try carries a new one
            return outcome(
                "retry",
                "403 ExpiredProviderToken: APNs said the provider token expired; the next "
                "try carries a new one",
            )
        if status == "403":
            hint = (
                "check the server clock"
                if reason == "ExpiredProviderToken"
                else f"check {self.setting('PUSH_APNS_KEY')}, its key id {self.key_id} and "
                f"the team id {self.team_id}, and that the key was not revoked"
            )
            return outcome(
                "failed",
                f"403 {reason}: APNs refused the provider token; {hint}",
                reason="credentials_refused",
            )
        if status == "413":
            # flask-push sends no more than max_payload: APNs counted more
            return outcome(
                "failed",
                f"413 {reason}: APNs refused the payload as too large",
                reason="too_large",
            )
        if reason == "DeviceTokenNotForTopic":
            # Not "gone": the team's key signs for all its apps, so a topic naming
            # another of them gets this answer for every device, which would all be
            # dropped for good. A token of another app fails each time instead.
            return outcome(
                "failed",
                f"400 DeviceTokenNotForTopic: APNs says this token is not of the app "
                f"{self.topic}; check {self.setting('PUSH_APNS_TOPIC')}, or the app "
                "registered a token of another app",
            )
        if reason in ("BadTopic", "TopicDisallowed", "MissingTopic"):
            hint = f"check {self.setting('PUSH_APNS_TOPIC')} ({self.topic})"
            if isinstance(push.target, DeviceTarget) and push.target.kind != "device":
                hint += (
                    f" and that the app supports Live Activities: they go to "
                    f"{self.topic}{LIVE_ACTIVITY_TOPIC_SUFFIX}"
                )
            return outcome("failed", f"{status} {reason}: {hint}")
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
        from ._apns_client import _Pool

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


def apns_payload(
    notification: Notification,
    message_id: str,
    activity: Activity | None = None,
    site_url: str | None = None,
) -> dict[str, Any]:
    """The APNs JSON payload for ``notification``, with ``activity``'s state when it
    shows one (see the module docstring); an ``image`` path resolves against
    ``site_url`` (``PUSH_SITE_URL``), since the app's extension downloads it."""
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
        payload["image"] = on_site(notification.image, site_url)
    if notification.data:
        payload["data"] = dict(notification.data)
    if activity is not None:
        payload["activity"] = {
            "id": activity.id,
            "event": activity.event,
            "state": dict(activity.state),
            "timestamp": activity.timestamp,
        }
    return payload


def live_activity_payload(
    notification: Notification, activity: Activity, kind: TokenKind
) -> dict[str, Any]:
    """The ``liveactivity`` payload for ``activity`` to a token of ``kind``
    (``activity`` or ``start``; see the module docstring).

    :raises PayloadError: for a push-to-start token, unless the event is ``start`` with
        ``attributes_type`` and ``attributes``.
    """
    event = activity.event
    if kind == "start":
        if event != "start":
            raise PayloadError(
                f"a push-to-start token only starts a Live Activity; {event!r} needs the "
                "activity's own push token",
                provider="apns",
            )
        if activity.attributes_type is None or activity.attributes is None:
            raise PayloadError(
                "a push-to-start needs attributes_type and attributes (the Live Activity's "
                "ActivityAttributes type and its static attributes)",
                provider="apns",
            )
    elif event == "start":
        event = "update"  # it runs already: the app registered its own token
    aps: dict[str, Any] = {
        "timestamp": activity.timestamp,
        "event": event,
        "content-state": dict(activity.state),
    }
    if activity.stale_at is not None:
        aps["stale-date"] = activity.stale_at
    if event == "end" and activity.dismiss_at is not None:
        aps["dismissal-date"] = activity.dismiss_at
    if (
        activity.event in ("start", "end")
        and not activity.token_only  # the user saw this state already
        and (notification.title or notification.body)
    ):
        # Live Activity alerts carry their sound inside the alert, unlike other pushes.
        alert: dict[str, str] = {}
        if notification.title:
            alert["title"] = notification.title
        if notification.body:
            alert["body"] = notification.body
        if notification.sound:
            alert["sound"] = notification.sound
        aps["alert"] = alert
    if kind == "start":
        aps["attributes-type"] = activity.attributes_type
        aps["attributes"] = dict(activity.attributes or {})
    return {"aps": aps}


def apns_headers(request: Any, topic: str | None, now: float) -> list[tuple[str, str]]:
    """The ``apns-*`` headers of a built request (``build_payload``'s), at time ``now``:
    what the transport sends and what :meth:`APNsProvider.preview` shows."""
    headers = [("apns-id", request.notification_id), ("apns-topic", request.apns_topic or topic)]
    if request.time_to_live is not None:
        # aioapns sends now + 0 for 0, a date already past; Apple's 0 means "once".
        ttl = request.time_to_live
        headers.append(("apns-expiration", str(int(now) + ttl if ttl > 0 else 0)))
    if request.priority is not None:
        headers.append(("apns-priority", str(request.priority)))
    if request.collapse_key is not None:
        headers.append(("apns-collapse-id", request.collapse_key))
    if request.push_type is not None:
        headers.append(("apns-push-type", request.push_type.value))
    return headers


def encode(payload: Mapping[str, Any]) -> bytes:
    """The payload as sent: compact JSON in UTF-8."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def collapse_id(key: str | None) -> str | None:
    """``key`` when it fits ``apns-collapse-id`` (64 bytes of a valid HTTP field value),
    else a stable form that does."""
    if key is None:
        return None
    raw = key.encode()
    fits = key == key.strip(" \t") and not _NOT_IN_FIELD.search(key)
    if fits and len(raw) <= MAX_COLLAPSE_ID_BYTES:
        return key
    # The hash is of the key as given, so keys differing only in what is dropped
    # stay distinct. 31 + 1 + 32 bytes; "ignore" drops a character cut in half.
    shown = _NOT_IN_FIELD.sub("", key).lstrip(" \t").encode()[:31]
    prefix = shown.decode("utf-8", "ignore")
    return f"{prefix}~{hashlib.sha256(raw).hexdigest()[:32]}"
