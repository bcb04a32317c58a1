"""``/messages``: send notifications over HTTP, see how their deliveries went, count clicks.

A message's ``status`` in the JSON is derived from its deliveries:

- ``scheduled``: its ``sendAt`` is still in the future;
- ``queued``: due, and every delivery is still queued (none has been tried to the end);
- ``sending``: some deliveries are done (sent, failed, gone or expired), some still queued;
- ``done``: nothing is queued any more (also a message without recipients).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue

from .. import reports
from ..dispatch import read_click_token
from ..errors import PayloadError, ValidationError
from ..models import utcnow
from ..reports import DELIVERY_STATUSES
from .http import ApiError, body, fail, not_found, only_fields, push, query_int, require_admin

_FIELDS = frozenset({"audience", "notification"})
_AUDIENCES = frozenset({"users", "topic", "query", "everyone"})
#: camelCase field of the request -> keyword of ``push.send``
_NOTIFICATION = {
    "title": "title",
    "body": "body",
    "url": "url",
    "icon": "icon",
    "image": "image",
    "badge": "badge",
    "sound": "sound",
    "tag": "tag",
    "data": "data",
    "ttl": "ttl",
    "urgency": "urgency",
    "collapseKey": "collapse_key",
    "sendAt": "send_at",
    "idempotencyKey": "idempotency_key",
    "inbox": "inbox",
    "notifyType": "notify_type",
}
NOTIFICATION_FIELDS = frozenset(_NOTIFICATION)
CLICK_FIELDS = frozenset({"clickToken"})
DEFAULT_TAKE = 20
MAX_TAKE = 100
#: RFC 3339 date-time (what OpenAPI's ``date-time`` format means), with its offset
_DATE_TIME = re.compile(
    r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})\Z"
)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/messages", view_func=create_message, methods=["POST"])
    bp.add_url_rule("/messages", view_func=list_messages, methods=["GET"])
    bp.add_url_rule("/messages/<id>", view_func=get_message, methods=["GET"])
    bp.add_url_rule("/messages/<id>/clicks", view_func=click, methods=["POST"])


# -- sending ----------------------------------------------------------------------


def create_message() -> ResponseReturnValue:
    require_admin()
    data = body()
    only_fields(data, _FIELDS)
    audience = _audience(data.get("audience"))
    notification = data.get("notification")
    if not isinstance(notification, dict):
        fail(400, "invalid_type", "must be an object with at least a title", "notification")
    only_fields(notification, NOTIFICATION_FIELDS, "notification")
    keywords = {_NOTIFICATION[name]: value for name, value in notification.items()}
    keywords.setdefault("title", None)  # refused as required, with its field
    if keywords.get("urgency", "normal") is None:
        keywords.pop("urgency")  # null means the default, as for the other fields
    if "send_at" in keywords:
        keywords["send_at"] = _date_time(keywords["send_at"], "notification.sendAt")
    ext = push()
    try:
        message = ext.send(**audience, **keywords)
    except ValidationError as err:
        raise ApiError(400, err.code, err.message, _field(err.field)) from None
    except PayloadError as err:
        # The request was fine; the notification it asks for is more than a push
        # service takes: a 400 about the notification, not a 413 about the request.
        fail(400, "payload_too_large", str(err), "notification")
    return {
        "id": message.id,
        "status": status(message, _counts([message.id])[message.id]),
        "recipientCount": message.recipient_count,
    }, 202


def _audience(value: Any) -> dict[str, Any]:
    """``push.send``'s audience keywords of ``{"users": [..]}`` and the like."""
    if not isinstance(value, dict):
        fail(
            400,
            "invalid_audience",
            "must be one of {users: [..]}, {topic: ..}, {query: {..}} or {everyone: true}",
            "audience",
        )
    only_fields(value, _AUDIENCES, "audience")
    if len(value) != 1:
        fail(
            400,
            "invalid_audience",
            "give exactly one audience: users, topic, query or everyone",
            "audience",
        )
    [(name, given)] = value.items()
    if name == "everyone" and given is not True:
        fail(400, "invalid_value", "must be true", "audience.everyone")
    if name == "users" and not isinstance(given, list):
        # push.send would take any iterable (a dict's keys, say); JSON needs a list
        fail(400, "invalid_type", "must be a list of user ids", "audience.users")
    return {name: given}


def _field(field: str | None) -> str:
    """The request's dotted path of a field ``push.send`` named."""
    if field is None:
        return "notification"
    if field == "audience":
        return field
    if field.split(".", 1)[0] in _AUDIENCES:
        return f"audience.{field}"
    return f"notification.{field}"


def _date_time(value: Any, field: str) -> datetime | None:
    """An RFC 3339 date-time with its offset, as an aware datetime in UTC."""
    if value is None:
        return None
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        fail(
            400,
            "invalid_value",
            "must be an ISO-8601 date-time with an offset, such as 2030-01-31T09:00:00Z",
            field,
        )
    try:
        return datetime.fromisoformat(value).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        fail(400, "invalid_value", "is not a real date-time", field)


# -- reading ----------------------------------------------------------------------


def list_messages() -> ResponseReturnValue:
    require_admin()
    skip = query_int("skip", 0, 0, 10**9)
    take = query_int("take", DEFAULT_TAKE, 1, MAX_TAKE)
    ext = push()
    model = ext.models.Message
    session = ext.db.session
    total = session.scalar(sa.select(sa.func.count()).select_from(model)) or 0
    page = list(
        session.scalars(
            sa.select(model)
            .order_by(model.created_at.desc(), model.id.desc())
            .offset(skip)
            .limit(take)
        )
    )
    counts = _counts(message.id for message in page)
    return {
        "totalCount": total,
        "items": [message_json(message, counts[message.id]) for message in page],
    }


def get_message(id: str) -> ResponseReturnValue:
    require_admin()
    ext = push()
    message = ext.db.session.get(ext.models.Message, id)
    if message is None:
        not_found("message")
    found = message_json(message, _counts([message.id])[message.id])
    found["problems"] = [
        problem.to_json() for problem in reports.problems(ext.db.session, ext.models, message.id)
    ]
    return found


def _counts(message_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Deliveries per status of each message, in one grouped query."""
    ext = push()
    return reports.delivery_counts(ext.db.session, ext.models, message_ids)


def status(message: Any, counts: dict[str, int]) -> str:
    """The message's own status (``scheduled`` until ``sendAt``), refined by its counts."""
    if message.status == "scheduled":
        return "scheduled"
    queued = counts.get("queued", 0)
    if not queued:
        return "done"
    if queued == sum(counts.get(state, 0) for state in DELIVERY_STATUSES):
        return "queued"
    return "sending"


def message_json(message: Any, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": message.id,
        "status": status(message, counts),
        "recipientCount": message.recipient_count,
        "createdAt": _iso(message.created_at),
        "sendAt": _iso(message.send_at),
        "notification": message.notification,
        "counts": {
            **{state: counts.get(state, 0) for state in DELIVERY_STATUSES},
            "clicked": message.clicked,
        },
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


# -- clicks -----------------------------------------------------------------------


def _forbidden() -> ApiError:
    return ApiError(403, "forbidden", "The click token is missing, forged or not for this message.")


def click(id: str) -> ResponseReturnValue:
    """Count a click on a notification of message ``id``, proven by its click token.

    Each delivery's clicks count once: a notification clicked again (or a
    report sent twice) changes nothing.
    """
    data = body()
    only_fields(data, CLICK_FIELDS)
    token = data.get("clickToken")
    if token is not None and not isinstance(token, str):
        fail(400, "invalid_type", "must be a string", "clickToken")
    secret = current_app.config.get("SECRET_KEY")
    # a token is URL-safe base64 and dots: anything else is no token of ours
    if not token or not secret or not token.isascii():
        raise _forbidden()
    found = read_click_token(secret, token)
    if found is None or found[1] != id:
        raise _forbidden()
    ext = push()
    session = ext.db.session
    message, delivery = ext.models.Message, ext.models.Delivery
    if session.get(message, id) is None:
        not_found("message")
    first = session.execute(
        sa.update(delivery)
        .where(delivery.id == found[0], delivery.message_id == id, delivery.clicked_at.is_(None))
        .values(clicked_at=utcnow())
    )
    if first.rowcount:  # type: ignore[attr-defined]
        session.execute(
            sa.update(message).where(message.id == id).values(clicked=message.clicked + 1)
        )
    session.commit()
    return "", 204
