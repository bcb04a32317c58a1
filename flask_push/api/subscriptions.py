"""``/subscriptions``: browsers' Web Push subscriptions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from .. import database, signals
from ..ids import new_id
from ..models import ACTIVE, DEAD, hurry_waiting, utcnow
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
    "its push service reported gone is refused (410). With oldEndpoint (a "
    "subscription the browser renewed), the caller's subscription there is "
    "removed and its topics carry over.",
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
    given = parse_body(SubscriptionCreate)  # the endpoint's SSRF checks: before any write
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
    topics_given = "topics" in given.model_fields_set
    if topics_given:
        values["topics"] = given.topics or []

    model = ext.models.Subscription
    session = ext.db.session()  # this request's Session
    replaced = None
    if given.old_endpoint is not None and given.old_endpoint != given.endpoint:
        # renewed by the browser: the old one is the caller's own, or it stays as it is
        replaced = session.scalar(
            sa.select(model).where(
                model.endpoint == given.old_endpoint,
                model.user_id.is_not_distinct_from(values["user_id"]),
            )
        )
        if replaced is not None and not topics_given:
            values["topics"], topics_given = list(replaced.topics or []), True
    dialect = session.get_bind(mapper=model).dialect
    insert = database.on_conflict_insert(dialect)
    if insert is not None:
        subscription, created = _upsert(
            session, model, dialect.name, insert, values, topics_given, now
        )
    else:
        subscription, created = _select_then_write(session, model, values, now)
    if subscription is None:
        fail(
            410,
            "subscription_gone",
            "The push service said this endpoint is gone, so it can never receive a push "
            "again: unsubscribe it in the browser and subscribe again to get a new endpoint.",
            "endpoint",
        )
    # the old one goes (a dead one stays, with why it died, until `flask push prune`)
    removed = replaced if replaced is not None and replaced.status != DEAD else None
    if removed is not None:
        hurry_waiting(session, ext.models, ext.models.Delivery.subscription_id, removed.id, now)
        session.delete(removed)
    answer = Subscription.model_validate(subscription).to_json()
    # a receiver of the signal reads the row without another trip to the database
    database.commit_keeping(session, subscription)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if removed is not None:
        signals.send_committed(signals.subscription_removed, app, subscription=removed)
    signals.send_committed(
        signals.subscription_added, app, subscription=subscription, created=created
    )
    return answer, 201 if created else 200


def _upsert(
    session: Session,
    model: Any,
    dialect: str,
    insert: Callable[[Any], Any],
    values: dict[str, Any],
    topics_given: bool,
    now: datetime,
) -> tuple[Any, bool]:
    """Register in one statement (see :func:`_upsert_statement`). The subscription
    (None when the endpoint is dead) and whether it is new."""
    row = {"id": new_id("sub"), "topics": [], "status": ACTIVE, "created_at": now, **values}
    statement = _upsert_statement(model, insert, topics_given)
    if dialect == "postgresql" and _idle(session):
        # One statement is its own transaction: in autocommit the server commits it
        # before it answers, instead of a BEGIN and a COMMIT of their own on the
        # network. A session that already holds a transaction (the host read with it
        # in this request) keeps it, and the commit below ends it as before.
        session.connection(
            bind_arguments={"mapper": model}, execution_options={"isolation_level": "AUTOCOMMIT"}
        )
    subscription = session.scalars(
        statement, row, execution_options={"populate_existing": True}
    ).one_or_none()
    return subscription, subscription is not None and subscription.id == row["id"]


@functools.lru_cache(maxsize=16)
def _upsert_statement(model: Any, insert: Callable[[Any], Any], topics_given: bool) -> Any:
    """``INSERT ... ON CONFLICT (endpoint) DO UPDATE ... RETURNING`` of a whole row,
    whose values are the parameters of each execution (made once: building it costs
    more than running it).

    The rules of a known endpoint are in the statement: its owner keeps its topics
    (unless the caller sent some) and its creation time; another owner starts over
    from nothing; a dead row matches no ``WHERE`` and is left alone, so nothing
    comes back.
    """
    table = model.__table__
    statement = insert(model)
    proposed = statement.excluded
    # SET's expressions all read the row as it was, so this is the previous owner
    same_owner = table.c.user_id.is_not_distinct_from(proposed.user_id)
    changes: dict[str, Any] = {name: proposed[name] for name in _REPLACED}
    changes["topics"] = (
        proposed.topics
        if topics_given
        else sa.case((same_owner, table.c.topics), else_=proposed.topics)
    )
    changes["created_at"] = sa.case((same_owner, table.c.created_at), else_=proposed.created_at)
    return statement.on_conflict_do_update(
        index_elements=[table.c.endpoint], set_=changes, where=table.c.status != DEAD
    ).returning(model)


#: what a re-registration always takes from the request
_REPLACED = ("p256dh", "auth", "expires_at", "user_id", "user_agent", "last_seen_at")


def _idle(session: Session) -> bool:
    """Is nothing under way in the session: no transaction and no pending change?"""
    return not session.in_transaction() and not (session.new or session.dirty or session.deleted)


def _select_then_write(
    session: Session, model: Any, values: dict[str, Any], now: datetime
) -> tuple[Any, bool]:
    """Register with a SELECT and then an INSERT or UPDATE, on databases without
    ``ON CONFLICT ... RETURNING`` (SQLite before 3.35, others)."""
    subscription = session.scalar(sa.select(model).where(model.endpoint == values["endpoint"]))
    created = subscription is None
    if subscription is not None and subscription.status == DEAD:
        return None, False
    if subscription is None or subscription.user_id != values["user_id"]:
        if subscription is None:
            subscription = model()
            session.add(subscription)
        # A new owner starts from nothing: what the last one chose is theirs.
        values = {"topics": [], "created_at": now, **values}
    for name, value in values.items():
        setattr(subscription, name, value)
    session.flush()
    return subscription, created


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
    session = ext.db.session
    hurry_waiting(session, ext.models, ext.models.Delivery.subscription_id, id, utcnow())
    session.delete(subscription)
    session.commit()
    signals.send_committed(
        signals.subscription_removed,
        current_app._get_current_object(),  # type: ignore[attr-defined]
        subscription=subscription,
    )
    return "", 204
