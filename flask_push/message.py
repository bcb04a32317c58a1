"""Value objects of delivery: what to show, where to send it, and how it went.

A :class:`Notification` is provider-neutral; each provider maps it onto its
platform (Web Push payload, FCM v1 message, APNs payload and headers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Urgency = Literal["very-low", "low", "normal", "high"]
#: the outcomes every provider reports, whatever its platform says
Status = Literal["sent", "gone", "retry", "failed"]

URGENCIES: tuple[Urgency, ...] = ("very-low", "low", "normal", "high")


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


@dataclass(frozen=True)
class WebPushTarget:
    """A browser's subscription: where to POST and the keys to encrypt for."""

    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True)
class DeviceTarget:
    """A mobile installation's device token (FCM registration token or APNs token)."""

    token: str


@dataclass(frozen=True)
class OutgoingPush:
    """One notification on its way to one target."""

    delivery_id: str
    message_id: str
    notification: Notification
    target: WebPushTarget | DeviceTarget
    #: signed token the service worker reports a click with (Web Push only)
    click_token: str | None = None


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
