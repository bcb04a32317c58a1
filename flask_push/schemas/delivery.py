"""``/messages/<id>/deliveries`` and ``/users/<id>/targets``: why a user did or did
not get a message, per target, with each delivery's timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from ..outcomes import REASONS, DeliveryStatus, EventKind
from .base import Documented, ResponseModel, WireModel
from .fields import DEFAULT_TAKE, KIND, FromQuery, Skip, Take, UserId

_WHAT = "What happened: an attempt carries the service's `statusCode`, `sent` its `serviceId`."
_REASON = "The machine reason of the status: " + ", ".join(f"`{name}`" for name in REASONS) + "."


class DeliveryEvent(ResponseModel):
    """One entry of a delivery's timeline."""

    at: datetime
    what: EventKind = Field(description=_WHAT)
    detail: str | None = None
    """What happened, as a sentence."""
    status_code: int | None = None
    """The push service's HTTP status, on an `attempt`."""
    service_id: str | None = None
    """The push service's id for the message, on `sent` when it gives one."""
    next_attempt_at: datetime | None = None
    """When it is tried again, on a `retry`."""


class DeliveryTarget(ResponseModel):
    """Where a delivery went: a browser's subscription or an app's installation."""

    kind: str = Field(description=KIND)
    id: str | None = Field(description="The subscription's or installation's id.")
    user_id: str | None
    label: str
    """A name a person recognises: "Chrome on Android", "iOS app 2.0"."""


class DeliveryEntry(ResponseModel):
    """One target's delivery of a message: its status, why, and its timeline."""

    id: Annotated[int, Documented(minimum=1)]
    target: DeliveryTarget
    status: DeliveryStatus
    reason: str | None = Field(description=_REASON)
    detail: str | None
    """The status and its reason as a sentence a person understands."""
    attempts: Annotated[int, Documented(minimum=0)]
    next_attempt_at: datetime | None
    """When a queued delivery is tried next."""
    sent_at: datetime | None
    clicked_at: datetime | None
    events: list[DeliveryEvent]
    """Its timeline, oldest first."""


class DeliveryList(ResponseModel):
    """One page of a message's deliveries, oldest first."""

    total_count: Annotated[int, Documented(minimum=0)]
    """Deliveries matching the filters."""
    items: list[DeliveryEntry]
    detail: str | None = None
    """Why the page is empty, as a sentence (as `flask push explain` says it): the
    message had no browser or device of its audience active when it was sent, the
    filters match none, or `skip` passed them all. `null` when the page has items."""


class DeliveriesQuery(WireModel):
    """The query string of ``GET /messages/<id>/deliveries``."""

    user_id: UserId | None = None
    """Only the deliveries to this user's targets."""
    status: DeliveryStatus | None = None
    """Only the deliveries with this status."""
    skip: Annotated[Skip, FromQuery] = 0
    """Deliveries to skip."""
    take: Annotated[Take, FromQuery] = DEFAULT_TAKE
    """Page size."""


class RecentDelivery(ResponseModel):
    """A recent delivery to a target."""

    message_id: str
    title: str | None
    status: DeliveryStatus
    reason: str | None
    detail: str | None
    """What happened to it, as a sentence: its `detail` in `GET /messages/<id>/deliveries`."""
    at: datetime
    """When its status was last written."""


class UserTarget(ResponseModel):
    """A user's browser or device, its state and its recent deliveries."""

    kind: str = Field(description=KIND)
    id: str
    label: str
    """A name a person recognises: "Chrome on Android", "iOS app 2.0"."""
    status: Literal["active", "dead"]
    dead_since: datetime | None
    dead_reason: str | None
    """What the push service said when it found the target dead."""
    dead_detail: str | None
    """The same as a sentence."""
    last_seen_at: datetime | None
    """When the browser last registered it (subscriptions) or the app last updated it."""
    created_at: datetime
    recent_deliveries: list[RecentDelivery]
    """Its latest deliveries, newest first."""


class UserTargets(ResponseModel):
    """A user's browsers and devices."""

    items: list[UserTarget]
