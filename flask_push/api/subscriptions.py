"""``/subscriptions``: browsers' Web Push subscriptions."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app, request
from flask.typing import ResponseReturnValue

from .. import signals
from ..models import DEAD, utcnow
from ..schemas.subscription import Subscription, SubscriptionCreate
from .http import caller_id, fail, not_found, parse_body, push, require_webpush
from .ratelimit import check_subscribe
from .routes import Answer, Routes

ROUTES = Routes("subscriptions")


@ROUTES(
    "POST",
    "/subscriptions",
    "createSubscription",
    "Register a browser's push subscription",
    who="A signed-in user (the subscription is theirs) or anyone (an anonymous "
    "subscription, whose id is its only credential). At most "
    "PUSH_SUBSCRIBE_RATE_LIMIT requests per client address (429 above). "
    "An endpoint already known is re-bound to the caller (200); to another "
    "owner it starts over, without the previous owner's topics. An endpoint "
    "its push service reported gone is refused (410).",
    body=SubscriptionCreate,
    answers={
        201: Answer("Created.", Subscription, ("deleteSubscription",)),
        200: Answer(
            "The endpoint was known: updated and bound to the caller.",
            Subscription,
            ("deleteSubscription",),
        ),
    },
    errors=(409, 410, 429, 503),
)
def subscribe() -> ResponseReturnValue:
    """Register ``PushSubscription.toJSON()``; a known endpoint is updated and re-bound.

    Re-bound to another owner (signed-in user, or anonymous), the row starts over:
    the caller sees and keeps only what it sent, never the previous owner's topics
    or browser. An endpoint its push service reported gone (404/410) is dead for
    good, so re-posting it is refused with 410 rather than brought back.
    """
    ext = push()
    check_subscribe()
    require_webpush()
    given = parse_body(SubscriptionCreate)
    now = utcnow()
    values: dict[str, Any] = {
        "endpoint": given.endpoint,
        "p256dh": given.keys.p256dh,
        "auth": given.keys.auth,
        "expires_at": given.expires_at,
        "user_id": caller_id(),
        "user_agent": _user_agent(),
        "last_seen_at": now,
    }
    if "topics" in given.model_fields_set:
        values["topics"] = given.topics or []

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
    return Subscription.model_validate(subscription).to_json(), 201 if created else 200


def _user_agent() -> str | None:
    agent = request.user_agent.string.replace("\x00", "")  # PostgreSQL refuses NUL in text
    return agent[:512] or None


@ROUTES(
    "DELETE",
    "/subscriptions/<id>",
    "deleteSubscription",
    "Remove a subscription",
    who="Its owner, an administrator, or (for an anonymous subscription) anyone holding its id.",
    id_description="The subscription's id.",
    answers={204: Answer("Deleted.")},
    errors=(404,),
)
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
