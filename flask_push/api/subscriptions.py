"""``/subscriptions``: browsers' Web Push subscriptions."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, request
from flask.typing import ResponseReturnValue

from .. import signals, validation
from ..errors import ValidationError
from ..models import DEAD, utcnow
from .http import body, caller_id, fail, not_found, only_fields, push, require_webpush
from .ratelimit import check_subscribe

_FIELDS = frozenset({"endpoint", "expirationTime", "keys", "topics"})
_MAX_MS = 253_402_300_800_000


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/subscriptions", view_func=subscribe, methods=["POST"])
    bp.add_url_rule("/subscriptions/<id>", view_func=unsubscribe, methods=["DELETE"])


def _expiration(value: Any) -> datetime | None:
    if value is None:
        return None
    # datetime ends with the year 9999: 253402300800000 ms is 10000-01-01
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < _MAX_MS:
        raise ValidationError(
            "must be null or milliseconds since the epoch",
            field="expirationTime",
            code="invalid_value",
        )
    return datetime.fromtimestamp(value / 1000, timezone.utc)


def subscribe() -> ResponseReturnValue:
    """Register ``PushSubscription.toJSON()``; a known endpoint is updated and re-bound.

    Re-bound to another owner (signed-in user, or anonymous), the row starts over:
    the caller sees and keeps only what it sent, never the previous owner's topics
    or browser. An endpoint its push service reported gone (404/410) is dead for
    good, so re-posting it is refused with 410 rather than brought back.
    """
    ext = push()
    settings = ext.settings
    check_subscribe()
    require_webpush()
    data = body()
    only_fields(data, _FIELDS)
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise ValidationError("must be an object {p256dh, auth}", field="keys", code="required")
    only_fields(keys, {"p256dh", "auth"})
    now = utcnow()
    values: dict[str, Any] = {
        "endpoint": validation.endpoint(
            data.get("endpoint"),
            allowed_hosts=settings.endpoint_hosts,
            allow_http=settings.allow_http_endpoints,
        ),
        "p256dh": validation.p256dh(keys.get("p256dh")),
        "auth": validation.auth_secret(keys.get("auth")),
        "expires_at": _expiration(data.get("expirationTime")),
        "user_id": caller_id(),
        "user_agent": _user_agent(),
        "last_seen_at": now,
    }
    if "topics" in data:
        values["topics"] = validation.topics(data["topics"], max_count=settings.max_topics)

    model = ext.models.Subscription
    session = ext.db.session
    subscription = session.scalar(sa.select(model).where(model.endpoint == values["endpoint"]))
    created = subscription is None
    if subscription is not None and subscription.status == DEAD:
        fail(
            410,
            "subscription_gone",
            "The push service said this endpoint is gone, so it can never receive a push "
            "again: unsubscribe it in the browser and subscribe again to get a new endpoint.",
            "endpoint",
        )
    if subscription is None or subscription.user_id != values["user_id"]:
        if subscription is None:
            subscription = model()
            session.add(subscription)
        # A new owner starts from nothing: what the last one chose is theirs.
        values = {"topics": [], "created_at": now, **values}
    for name, value in values.items():
        setattr(subscription, name, value)
    session.commit()
    signals.send_committed(
        signals.subscription_added,
        current_app._get_current_object(),  # type: ignore[attr-defined]
        subscription=subscription,
        created=created,
    )
    return subscription.to_json(), 201 if created else 200


def _user_agent() -> str | None:
    agent = request.user_agent.string.replace("\x00", "")  # PostgreSQL refuses NUL in text
    return agent[:512] or None


def unsubscribe(id: str) -> ResponseReturnValue:
    """Delete a subscription: its owner, an admin, or (for an anonymous one) its holder."""
    ext = push()
    subscription = ext.db.session.get(ext.models.Subscription, id)
    if subscription is None:
        not_found("subscription")
    # An anonymous subscription's id is its credential: only the browser that
    # registered it was told the id.
    if subscription.user_id is not None and subscription.user_id != caller_id():
        if not ext.current_user_is_admin():
            not_found("subscription")
    ext.db.session.delete(subscription)
    ext.db.session.commit()
    signals.send_committed(
        signals.subscription_removed,
        current_app._get_current_object(),  # type: ignore[attr-defined]
        subscription=subscription,
    )
    return "", 204
