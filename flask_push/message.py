"""Value objects of delivery: what to show, where to send it, and how it went.

A :class:`Notification` is provider-neutral; each provider maps it onto its
platform (Web Push payload, FCM v1 message, APNs payload and headers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

Urgency = Literal["very-low", "low", "normal", "high"]
#: the outcomes every provider reports, whatever its platform says
Status = Literal["sent", "gone", "retry", "failed"]

URGENCIES: tuple[Urgency, ...] = ("very-low", "low", "normal", "high")

#: control characters but tab and newline, written out as ``\xNN``, and the
#: invisible ones that reorder or break what follows them: the bidirectional
#: marks, embeddings, overrides and isolates, and the line and paragraph
#: separators, written out as ``\uNNNN``
CONTROLS = {
    **{code: f"\\x{code:02x}" for code in (*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))},
    **{
        code: f"\\u{code:04x}"
        for code in (0x061C, 0x200E, 0x200F, *range(0x2028, 0x202F), *range(0x2066, 0x206A))
    },
}
#: :data:`CONTROLS`, and tab and newline too: for a line of a terminal or a log
LINE_CONTROLS = {**CONTROLS, 0x09: "\\t", 0x0A: "\\n"}


def printable(text: str) -> str:
    """``text`` with its control characters (but tab and newline), its invisible
    reordering and line-breaking characters (bidi controls, U+2028 and U+2029)
    and lone surrogates written out as escapes.

    What a push service or a connection failure says goes to logs, terminals,
    pages and a text column: a terminal would run an escape sequence, PostgreSQL
    refuses NUL, and UTF-8 cannot encode a lone surrogate (JSON's ``"\\ud800"``).
    """
    return text.translate(CONTROLS).encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(text: str) -> str:
    """:func:`printable`, with tab and newline written out too: what a line of a
    terminal or a log shows of a text that came from outside (a user id, an app
    version, what a push service said), which must not start a line of its own."""
    return text.translate(LINE_CONTROLS).encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Notification:
    """What a user is shown, on any platform.

    ``badge`` is a count (APNs' badge, Android's notification count, the Badging
    API in browsers) when an int, or a Web Push badge icon URL when a str.
    ``collapse_key`` makes a newer message replace an undelivered older one
    (Web Push ``Topic``, FCM ``collapse_key``, ``apns-collapse-id``) and is the
    browser notification's ``tag`` unless ``tag`` is given.
    """

    title: str
    body: str | None = None
    url: str | None = None
    icon: str | None = None
    image: str | None = None
    badge: int | str | None = None
    sound: str | None = None
    tag: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    #: seconds a push service keeps the message for an offline device
    ttl: int = 86400
    urgency: Urgency = "normal"
    collapse_key: str | None = None


def app_link(link: str, root: str) -> str:
    """``link`` (a notification's ``url``, ``icon``, ...) as a path below the app's root
    path ``root``: for an app mounted at ``/shop``, ``/orders/42`` is
    ``/shop/orders/42``. A path there already (``url_for`` in a request adds the mount)
    stays, as does anything but a path; at the root nothing changes. The service worker
    and the browser client read links the same way (their ``appLink``)."""
    if not link.startswith("/") or link.startswith("//"):
        return link
    mount = root.rstrip("/")
    if not mount or link == mount or link.startswith(mount + "/"):
        return link
    return mount + link


def on_site(link: str | None, site_url: str | None) -> str | None:
    """``link`` resolved against the site's URL (``PUSH_SITE_URL``) when one is set:
    a path means nothing to a phone, or to Safari showing a declarative push. The
    site URL is the app's root, so its path is the mount point a path is below
    (``https://shop.example/shop`` makes ``/orders/42`` ``.../shop/orders/42``)."""
    if link is None or site_url is None:
        return link
    path = urlsplit(site_url).path
    base = site_url if path.endswith("/") else site_url + "/"
    return urljoin(base, app_link(link, path))


@dataclass(frozen=True)
class WebPushTarget:
    """A browser's subscription: where to POST and the keys to encrypt for."""

    endpoint: str
    p256dh: str
    auth: str


#: which of an installation's tokens a push goes to: the device's own, a Live
#: Activity's own push token, or the app's push-to-start token (APNs)
TokenKind = Literal["device", "activity", "start"]


@dataclass(frozen=True)
class DeviceTarget:
    """A mobile installation's device token (FCM registration token or APNs token)."""

    token: str
    kind: TokenKind = "device"


ActivityEvent = Literal["start", "update", "end"]


@dataclass(frozen=True)
class Activity:
    """One state of a live activity (``push.activity``), which every platform shows in
    place of the last: a Live Activity on iOS, a notification with the activity's tag
    on Android and in browsers."""

    id: str
    event: ActivityEvent
    #: the app's own state of it (an iOS Live Activity's ``content-state``)
    state: Mapping[str, Any]
    #: seconds since the epoch; it only grows from one call for the activity to the
    #: next, since APNs shows a Live Activity push only if it is newer than the last
    timestamp: int
    #: seconds since the epoch: when the state is out of date (``stale-date``)
    stale_at: int | None = None
    #: seconds since the epoch: when an ended activity leaves the lock screen
    dismiss_at: int | None = None
    #: a push-to-start's Live Activity type and its static attributes (``start``)
    attributes_type: str | None = None
    attributes: Mapping[str, Any] | None = None
    #: the activity's latest state again, for a Live Activity token registered after
    #: it went to the device as an alert: to that token only, and without an alert
    catch_up: bool = False
    #: the end of the Live Activity of a user a newer call left out (a courier
    #: replaced): its state before that call, to that token only, without an
    #: alert, and dismissed from the lock screen at once
    farewell: bool = False

    @property
    def token_only(self) -> bool:
        """Does it go to the installation's Live Activity token alone, without an
        alert (a catch-up or a farewell), and never as an ordinary alert?"""
        return self.catch_up or self.farewell


@dataclass(frozen=True)
class OutgoingPush:
    """One notification on its way to one target."""

    delivery_id: str
    message_id: str
    notification: Notification
    target: WebPushTarget | DeviceTarget
    #: signed token the service worker reports a click with (Web Push only)
    click_token: str | None = None
    #: the activity state this push shows in place, for ``push.activity``
    activity: Activity | None = None
    #: when its delivery's time to live ends (the outbox's ``expires_at``): a retry
    #: due after it is not made
    expires_at: datetime | None = None


@dataclass(frozen=True)
class DeliveryResult:
    """How one push went, in the same words for every provider.

    ``sent``: the push service accepted it. ``gone``: the subscription or token
    is dead and must never be used again. ``retry``: try again later (after
    ``retry_after`` seconds when the service said so). ``failed``: will not
    succeed as it is.
    """

    delivery_id: str
    status: Status
    provider: str
    error: str | None = None
    status_code: int | None = None
    retry_after: float | None = None
    #: the push service's id for the message it accepted (Web Push ``Location``,
    #: FCM's ``name``, the ``apns-id``), when it gives one
    service_id: str | None = None
    #: the reason of :data:`flask_push.outcomes.REASONS` the timeline gives, when the
    #: provider knows it better than its status does: ``address_blocked`` (flask-push
    #: itself refused to connect to the endpoint's address), ``unsendable`` (the push
    #: could not be built), ``unreachable`` (no connection), ``no_answer`` (none came
    #: back to read), ``credentials_refused`` (the service refused flask-push's key),
    #: ``too_large`` (a push service took less than flask-push's payload limit)
    reason: str | None = None

    def __post_init__(self) -> None:
        # One place for every provider's words: a service's reason phrase, JSON or
        # header may hold NUL, an escape sequence or bytes that are not UTF-8, and
        # one outcome the database refuses would fail the write of its whole batch.
        if self.error is not None:
            object.__setattr__(self, "error", printable(self.error))
        if self.service_id is not None:  # a Location header, a name in JSON
            object.__setattr__(self, "service_id", printable(self.service_id))
