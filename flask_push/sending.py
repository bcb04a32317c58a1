"""``push.send()``: check a notification, resolve its audience, write the outbox.

Everything here runs in the caller's request: values are checked, every
configured provider checks the payload, and the message, one delivery row per
target (and, with ``inbox=True``, the inbox items) are written in one
transaction. Nothing touches the network; :mod:`flask_push.dispatch` sends.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from . import inbox, validation
from .config import MAX_TTL
from .errors import ValidationError
from .message import URGENCIES, Notification
from .models import ACTIVE, Models, utcnow

#: delivery rows per INSERT statement
INSERT_CHUNK = 5000
#: the most users one ``send(users=...)`` may name
MAX_USERS = 10_000
#: the fields ``send(query=...)`` may filter on (LoopBack's Installation names)
QUERY_FIELDS = {
    "userId": "user_id",
    "deviceType": "device_type",
    "appId": "app_id",
    "appVersion": "app_version",
}
QUERY_OPERATORS = ("eq", "neq", "inq", "nin")
#: a ttl of 0 ("now or never") still survives this long in the outbox, so that
#: a busy worker does not turn every such message into ``expired``
ZERO_TTL_GRACE = timedelta(seconds=60)
#: the furthest ahead a message may be scheduled: a later ``send_at`` is most likely
#: a mistake (a year mistyped), and this keeps ``send_at`` plus the TTL far inside
#: what ``datetime`` and the databases hold
MAX_SCHEDULE_DAYS = 365

#: device type of an installation -> the provider kind that delivers to it
INSTALLATION_KINDS = {"ios": "apns", "android": "fcm"}
#: what to set, per kind, to turn a provider on
_HOW_TO_CONFIGURE = {
    "webpush": "PUSH_VAPID_PRIVATE_KEY and PUSH_VAPID_SUBJECT",
    "fcm": "PUSH_FCM_CREDENTIALS",
    "apns": "PUSH_APNS_KEY, PUSH_APNS_KEY_ID, PUSH_APNS_TEAM_ID and PUSH_APNS_TOPIC",
}


@dataclass(frozen=True)
class Target:
    """One subscription or installation a message goes to."""

    kind: str
    subscription_id: str | None
    installation_id: str | None
    user_id: str | None


def not_configured_error(kind: str) -> str:
    return (
        f"no {kind} provider is configured, so this target cannot be reached; "
        f"set {_HOW_TO_CONFIGURE.get(kind, kind)}"
    )


# -- checking ------------------------------------------------------------------------


def notification_json(
    values: Mapping[str, Any], default_ttl: int
) -> tuple[dict[str, Any], Notification]:
    """Check the notification's values (snake_case keyword names); return the
    camelCase JSON the message keeps and the :class:`Notification` it means."""
    title = validation.text(values.get("title"), "title", max_length=255, required=True)
    badge = values.get("badge")
    if badge is not None and not isinstance(badge, str):
        badge = validation.integer(badge, "badge", low=0, high=2**31 - 1)
    elif badge is not None:
        badge = validation.link(badge, "badge")
    ttl = values.get("ttl")
    ttl = default_ttl if ttl is None else validation.integer(ttl, "ttl", low=0, high=MAX_TTL)
    urgency = values.get("urgency", "normal")
    if urgency not in URGENCIES:
        raise ValidationError(
            f"must be one of {', '.join(URGENCIES)}", field="urgency", code="invalid_value"
        )
    data = validation.json_object(values.get("data"), "data") or {}
    shown = {
        "title": title,
        "body": validation.text(values.get("body"), "body", max_length=4000, allow_empty=True),
        "url": validation.link(values.get("url"), "url"),
        "icon": validation.link(values.get("icon"), "icon"),
        "image": validation.link(values.get("image"), "image"),
        "badge": badge,
        "sound": validation.text(values.get("sound"), "sound", max_length=255),
        "tag": validation.text(values.get("tag"), "tag", max_length=255),
        "data": data,
        "ttl": ttl,
        "urgency": urgency,
        "collapseKey": validation.text(values.get("collapse_key"), "collapseKey", max_length=255),
    }
    return shown, notification_from_json(shown)


def notification_from_json(shown: Mapping[str, Any], ttl: int | None = None) -> Notification:
    """The :class:`Notification` of a message's stored JSON; ``ttl`` overrides its ttl."""
    return Notification(
        title=shown["title"],
        body=shown.get("body"),
        url=shown.get("url"),
        icon=shown.get("icon"),
        image=shown.get("image"),
        badge=shown.get("badge"),
        sound=shown.get("sound"),
        tag=shown.get("tag"),
        data=shown.get("data") or {},
        ttl=shown["ttl"] if ttl is None else ttl,
        urgency=shown.get("urgency", "normal"),
        collapse_key=shown.get("collapseKey"),
    )


def audience_json(*, users: Any, topic: Any, query: Any, everyone: Any) -> dict[str, Any]:
    """Check that exactly one audience is given, and its value."""
    given = [
        name
        for name, value in (("users", users), ("topic", topic), ("query", query))
        if value is not None
    ]
    if everyone is not False:
        if everyone is not True:
            raise ValidationError("must be true or false", field="everyone", code="invalid_type")
        given.append("everyone")
    if len(given) != 1:
        raise ValidationError(
            "give exactly one audience: users, topic, query or everyone"
            + (f" (got {', '.join(given)})" if given else ""),
            field="audience",
            code="invalid_audience",
        )
    if users is not None:
        if isinstance(users, str) or not isinstance(users, (list, tuple)):
            raise ValidationError("must be a list of user ids", field="users", code="invalid_type")
        if not users or len(users) > MAX_USERS:
            raise ValidationError(
                f"must list 1 to {MAX_USERS} user ids", field="users", code="invalid_value"
            )
        ids = [validation.text(u, "users", max_length=255, required=True) or "" for u in users]
        return {"users": list(dict.fromkeys(ids))}
    if topic is not None:
        return {"topic": validation.topics([topic], "topic")[0]}
    if query is not None:
        return {"query": _query(query)}
    return {"everyone": True}


def _query(query: Any) -> dict[str, Any]:
    if not isinstance(query, dict) or not query:
        raise ValidationError(
            "must be an object of conditions such as {'deviceType': 'ios'}",
            field="query",
            code="invalid_type",
        )
    checked: dict[str, Any] = {}
    for name, condition in query.items():
        field = f"query.{name}"
        if name not in QUERY_FIELDS:
            raise ValidationError(
                f"can filter on {', '.join(QUERY_FIELDS)} only", field=field, code="invalid_value"
            )
        if not isinstance(condition, dict):
            condition = {"eq": condition}
        if len(condition) != 1 or next(iter(condition)) not in QUERY_OPERATORS:
            raise ValidationError(
                f"must be a value or one of {{{', '.join(QUERY_OPERATORS)}: ...}}",
                field=field,
                code="invalid_value",
            )
        [(operator, value)] = condition.items()
        if operator in ("inq", "nin"):
            if not isinstance(value, list) or len(value) > MAX_USERS:
                raise ValidationError(
                    f"{operator} takes a list of at most {MAX_USERS} values",
                    field=field,
                    code="invalid_value",
                )
            value = [validation.text(v, field, max_length=255, required=True) for v in value]
        else:
            value = validation.text(value, field, max_length=255, required=True)
        checked[name] = {operator: value}
    return checked


def send_time(value: Any) -> datetime | None:
    """``value`` in UTC: a timezone-aware time at most :data:`MAX_SCHEDULE_DAYS` ahead."""
    if value is None:
        return None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValidationError(
            "must be a timezone-aware datetime", field="sendAt", code="invalid_value"
        )
    try:
        utc: datetime = value.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past the year 9999 in UTC
        raise ValidationError(
            "is not a time datetime can hold", field="sendAt", code="invalid_value"
        ) from None
    if utc > utcnow() + timedelta(days=MAX_SCHEDULE_DAYS):
        raise ValidationError(
            f"must be at most {MAX_SCHEDULE_DAYS} days ahead", field="sendAt", code="invalid_value"
        )
    return utc


# -- resolving -----------------------------------------------------------------------


def _contains(column: Any, name: str) -> Any:
    """``column`` (a JSON list of topic names) holds ``name``.

    Topic names are letters, digits and ``_ . : -`` (checked everywhere they are
    written), so the JSON text holds ``"name"`` exactly when the list does; ``_``
    is a LIKE wildcard and is escaped. This works alike on SQLite and PostgreSQL.
    """
    escaped = name.replace("/", "//").replace("_", "/_").replace("%", "/%")
    return sa.cast(column, sa.Text).like(f'%"{escaped}"%', escape="/")


def _condition(column: Any, condition: Mapping[str, Any]) -> Any:
    [(operator, value)] = condition.items()
    # neq and nin also match rows where the field is unset, as "is not X" reads.
    if operator == "eq":
        return column == value
    if operator == "inq":
        return column.in_(value) if value else sa.false()
    if operator == "neq":
        return sa.or_(column != value, column.is_(None))
    return sa.or_(column.not_in(value), column.is_(None)) if value else sa.true()


def resolve(session: Any, models: Models, audience: Mapping[str, Any]) -> list[Target]:
    """The active subscriptions and installations of ``audience``, in a stable order."""
    sub, ins = models.Subscription, models.Installation
    sub_where: list[Any] | None
    ins_where: list[Any] | None
    if "users" in audience:
        sub_where = [sub.user_id.in_(audience["users"])]
        ins_where = [ins.user_id.in_(audience["users"])]
    elif "topic" in audience:
        sub_where = [_contains(sub.topics, audience["topic"])]
        ins_where = [_contains(ins.subscriptions, audience["topic"])]
    elif "query" in audience:
        query = audience["query"]
        ins_where = [
            _condition(getattr(ins, QUERY_FIELDS[name]), condition)
            for name, condition in query.items()
        ]
        # Browsers have no device type, app id or version: only a query on the
        # user alone reaches them.
        sub_where = [_condition(sub.user_id, query["userId"])] if set(query) == {"userId"} else None
    elif "id" in audience:
        sub_where = [sub.id == audience["id"]]
        ins_where = [ins.id == audience["id"]]
    else:
        sub_where, ins_where = [], []
    targets: list[Target] = []
    if sub_where is not None:
        rows = session.execute(
            sa.select(sub.id, sub.user_id).where(sub.status == ACTIVE, *sub_where).order_by(sub.id)
        )
        targets.extend(Target("webpush", id, None, user_id) for id, user_id in rows)
    if ins_where is not None:
        rows = session.execute(
            sa.select(ins.id, ins.user_id, ins.device_type)
            .where(ins.status == ACTIVE, *ins_where)
            .order_by(ins.id)
        )
        targets.extend(
            Target(INSTALLATION_KINDS.get(device_type, device_type), None, id, user_id)
            for id, user_id, device_type in rows
        )
    return targets


def inbox_users(audience: Mapping[str, Any], targets: Iterable[Target]) -> list[str]:
    """Who gets an inbox item: every listed user, else the owners of the targets."""
    if "users" in audience:
        return list(audience["users"])
    return sorted({t.user_id for t in targets if t.user_id is not None})


def insert_deliveries(
    session: Any,
    model: Any,
    message_id: str,
    targets: Iterable[Target],
    configured: Iterable[str],
    *,
    due_at: datetime,
    ttl: int,
) -> None:
    """Write the delivery rows of a message, a chunk at a time.

    Targets no provider can reach are ``failed`` at once. Chunks keep memory flat
    however large the audience: a whole audience's parameters at once cost about
    2 KB a row in the driver and SQLAlchemy.
    """
    rows = iter(_delivery_rows(message_id, targets, configured, due_at=due_at, ttl=ttl))
    while chunk := list(itertools.islice(rows, INSERT_CHUNK)):
        session.execute(sa.insert(model), chunk)


def _delivery_rows(
    message_id: str,
    targets: Iterable[Target],
    configured: Iterable[str],
    *,
    due_at: datetime,
    ttl: int,
) -> Iterator[dict[str, Any]]:
    configured = set(configured)
    expires_at = due_at + (timedelta(seconds=ttl) if ttl > 0 else ZERO_TTL_GRACE)
    now = utcnow()
    for target in targets:
        reachable = target.kind in configured
        yield {
            "message_id": message_id,
            "kind": target.kind,
            "subscription_id": target.subscription_id,
            "installation_id": target.installation_id,
            "status": "queued" if reachable else "failed",
            "attempts": 0,
            "due_at": due_at,
            "lease_until": None,
            "expires_at": expires_at,
            "error": None if reachable else not_configured_error(target.kind),
            "updated_at": now,
        }


def inbox_values(shown: Mapping[str, Any], notify_type: str | None) -> dict[str, Any]:
    """An inbox item's fields for a message (keys are the item's columns)."""
    values = {
        "title": shown["title"],
        "body": shown.get("body"),
        "url": shown.get("url"),
        "data": shown.get("data") or None,
        "type": inbox.notify_type(notify_type, "notifyType") if notify_type else None,
    }
    return {k: v for k, v in values.items() if v is not None}
