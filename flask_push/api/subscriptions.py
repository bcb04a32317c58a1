"""``/subscriptions``: browsers' Web Push subscriptions."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, request
from flask.typing import ResponseReturnValue

from .. import signals, validation
from ..errors import ValidationError
from ..models import utcnow
from .http import body, not_found, only_fields, push, require_webpush

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
    """Register ``PushSubscription.toJSON()``; a known endpoint is updated and re-bound."""
    ext = push()
    settings = ext.settings
    require_webpush()
    data = body()
    only_fields(data, _FIELDS)
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise ValidationError("must be an object {p256dh, auth}", field="keys", code="required")
    only_fields(keys, {"p256dh", "auth"})
    values: dict[str, Any] = {
        "endpoint": validation.endpoint(
            data.get("endpoint"),
            allowed_hosts=settings.endpoint_hosts,
            allow_http=settings.allow_http_endpoints,
        ),
        "p256dh": validation.p256dh(keys.get("p256dh")),
        "auth": validation.auth_secret(keys.get("auth")),
        "expires_at": _expiration(data.get("expirationTime")),
        "user_id": ext.current_user_id(),
        "user_agent": (request.user_agent.string or None) and request.user_agent.string[:512],
        "last_seen_at": utcnow(),
    }
    if "topics" in data:
        values["topics"] = validation.topics(data["topics"])

    model = ext.models.Subscription
    session = ext.db.session
    subscription = session.scalar(sa.select(model).where(model.endpoint == values["endpoint"]))
    created = subscription is None
    if subscription is None:
        subscription = model(topics=[], created_at=values["last_seen_at"])
        session.add(subscription)
    for name, value in values.items():
        setattr(subscription, name, value)
    subscription.revive()
    session.commit()
    signals.subscription_added.send(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        subscription=subscription,
        created=created,
    )
    return subscription.to_json(), 201 if created else 200


def unsubscribe(id: str) -> ResponseReturnValue:
    """Delete a subscription: its owner, an admin, or (for an anonymous one) its holder."""
    ext = push()
    subscription = ext.db.session.get(ext.models.Subscription, id)
    if subscription is None:
        not_found("subscription")
    # An anonymous subscription's id is its credential: only the browser that
    # registered it was told the id.
    if subscription.user_id is not None and subscription.user_id != ext.current_user_id():
        if not ext.current_user_is_admin():
            not_found("subscription")
    ext.db.session.delete(subscription)
    ext.db.session.commit()
    signals.subscription_removed.send(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        subscription=subscription,
    )
    return "", 204
