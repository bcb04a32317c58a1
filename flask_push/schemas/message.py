"""``/messages``: a notification sent to an audience, and how its deliveries went."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from ..outcomes import STATUSES
from .base import Documented, ResponseModel, WireModel, refuse, shape_as
from .fields import DEFAULT_TAKE, KIND, FromQuery, RowId, Skip, Take
from .notification import _ONE_AUDIENCE, MessageAudience, MessageNotification, ShownNotification

#: what a message without a notification, or with something else, is told
_NEEDS_TITLE = "must be an object with at least a title"

#: a message's status, derived from its deliveries (see :func:`flask_push.reports.message_status`)
MessageStatus = Literal["scheduled", "queued", "sending", "done"]

_STATUS = (
    "`scheduled` until `sendAt`; then `queued` while every delivery is queued, `sending` "
    "while some are done and some queued, and `done` once none is queued."
)


class MessageCreate(WireModel):
    """A notification, and who it goes to."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "audience": {"users": ["alice"]},
                    "notification": {
                        "title": "Order #42",
                        "body": "Out for delivery",
                        "url": "/o/42",
                    },
                }
            ]
        }
    )

    audience: MessageAudience
    notification: Annotated[MessageNotification, shape_as("invalid_type", _NEEDS_TITLE)]

    @model_validator(mode="before")
    @classmethod
    def _both_parts(cls, value: Any) -> Any:
        # A message without an audience or a notification is told what one looks like,
        # as it always was, rather than "is required".
        if isinstance(value, dict) and not set(value) - set(cls.model_fields):
            if "audience" not in value:
                raise refuse("invalid_audience", _ONE_AUDIENCE, "audience")
            if "notification" not in value:
                raise refuse("invalid_type", _NEEDS_TITLE, "notification")
        return value


class MessageQueued(ResponseModel):
    """The message as queued."""

    id: Annotated[str, RowId("msg")]
    status: MessageStatus = Field(description=_STATUS)
    recipient_count: Annotated[int, Documented(minimum=0)]
    """Subscriptions and installations it will be tried on: not those the users'
    preferences or a daily cap suppressed."""


class MessageCounts(ResponseModel):
    """Deliveries per status, and clicks. Its fields name every status a delivery has."""

    queued: Annotated[int, Documented(minimum=0)]
    sent: Annotated[int, Documented(minimum=0)]
    failed: Annotated[int, Documented(minimum=0)]
    gone: Annotated[int, Documented(minimum=0)]
    expired: Annotated[int, Documented(minimum=0)]
    suppressed: Annotated[int, Documented(minimum=0)]
    """Not sent: the user's preferences ruled it out."""
    superseded: Annotated[int, Documented(minimum=0)]
    """Not sent: a newer state of the same activity replaced it."""
    cancelled: Annotated[int, Documented(minimum=0)]
    """Not sent: an operator cancelled the message."""
    deferred: Annotated[int, Documented(minimum=0)]
    """Of `queued`: waiting for the end of their users' quiet hours."""
    clicked: Annotated[int, Documented(minimum=0)]
    """Clicks reported by service workers."""


#: the statuses of a delivery, in the order they are shown (written in :mod:`flask_push.outcomes`)
DELIVERY_STATUSES: tuple[str, ...] = STATUSES
#: the counts that are not a status of their own
_NOT_STATUSES = ("deferred", "clicked")
if tuple(name for name in MessageCounts.model_fields if name not in _NOT_STATUSES) != STATUSES:
    # the wire model names each status for the document; it must name them all
    raise RuntimeError("MessageCounts must have a field per status of flask_push.outcomes")


class Message(ResponseModel):
    """A message: what it shows, who it reached, and how its deliveries went."""

    id: Annotated[str, RowId("msg")]
    status: MessageStatus = Field(description=_STATUS)
    recipient_count: Annotated[int, Documented(minimum=0)]
    created_at: datetime
    send_at: datetime | None
    notification: ShownNotification
    """The notification as sent."""
    category: str | None
    """Its category of PUSH_CATEGORIES; null when it has none."""
    cancelled_at: datetime | None
    """When an operator cancelled it (`POST /messages/<id>/cancel`); null when
    nobody did. Nothing of it goes out from then on, a retry included."""
    counts: MessageCounts


class MessageProblem(ResponseModel):
    """Deliveries that ended the same way for the same cause: one status, machine
    reason and provider kind."""

    status: Literal["queued", "failed", "gone", "expired"] = Field(
        description="`queued`: waiting for a retry, after the attempt that said `reason`."
    )
    reason: Annotated[str, Documented(minLength=1)]
    """What the push service or flask-push said, the newest of them (the texts of one
    cause can differ: APNs puts each token's own time in its `Unregistered`)."""
    count: Annotated[int, Documented(minimum=1)]
    """Deliveries with this status, machine reason and kind."""
    last_at: datetime
    code: str | None
    """The machine reason, as `reason` in `GET /messages/<id>/deliveries`; null for
    deliveries written before it was kept, which are told apart by their text."""
    kind: str = Field(description=KIND)
    detail: str | None
    """What happened to the newest of them, as a sentence a person understands: its
    `detail` in `GET /messages/<id>/deliveries`."""


class MoreProblems(ResponseModel):
    """What the limit left out of `problems`."""

    entries: Annotated[int, Documented(minimum=1)]
    """Causes not listed."""
    count: Annotated[int, Documented(minimum=1)]
    """Their deliveries."""


class MessageDetail(Message):
    """A message, with why its deliveries failed."""

    problems: list[MessageProblem] = Field(
        description="Why deliveries failed, are gone or expired, or wait for a retry: one "
        "entry per status, machine reason and provider kind, most recent first, at most 10."
    )
    more_problems: MoreProblems | None
    """The causes past the 10 in `problems`, and their deliveries; null when none was
    left out."""


class MessageList(ResponseModel):
    """One page of messages, newest first."""

    total_count: Annotated[int, Documented(minimum=0)]
    items: list[Message]


class MessageClick(WireModel):
    """Without a `clickToken` the answer is 403."""

    click_token: str | None = None
    """The `clickToken` of the Web Push payload."""


class MessagesQuery(WireModel):
    """The query string of ``GET /messages``."""

    skip: Annotated[Skip, FromQuery] = 0
    """Messages to skip."""
    take: Annotated[Take, FromQuery] = DEFAULT_TAKE
    """Page size."""
