"""``push.send()``: resolve a notification's audience and write the outbox.

Everything here runs in the caller's request, once the values are checked
(:mod:`flask_push.schemas.notification`) and every configured provider has checked
the payload: the message, one delivery row per target (and, with ``inbox=True``,
the inbox items, or for a scheduled message what holds them until it is due:
:mod:`flask_push.scheduled_inbox`) are written in one transaction. Nothing
touches the network; :mod:`flask_push.dispatch` sends.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, get_args

import sqlalchemy as sa
from flask import current_app
from pydantic.alias_generators import to_snake

from . import app_providers, database, inbox, outcomes, policy, scheduled_inbox, signals, tracing
from .errors import ValidationError
from .ids import new_id
from .message import Activity, Notification
from .models import ACTIVE, Models, utcnow
from .providers import (
    kind_for_platform,
    not_configured_error,
    settings_to_set,
    subscriptions_kind,
)
from .schemas.base import Context
from .schemas.errors import by_alias, check, parse
from .schemas.notification import MessageAudience, MessageNotification, QueryField, TargetId

if TYPE_CHECKING:
    from .extension import PushState

logger = logging.getLogger("flask_push")

#: delivery rows per INSERT statement
INSERT_CHUNK = 5000
#: the field a ``send(query=...)`` filters on -> the installation's column
QUERY_FIELDS = {name: to_snake(name) for name in get_args(QueryField)}
#: a ttl of 0 ("now or never") still survives this long in the outbox, so that
#: a busy worker does not turn every such message into ``expired``
ZERO_TTL_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class Target:
    """One subscription or installation a message goes to."""

    kind: str
    subscription_id: str | None
    installation_id: str | None
    user_id: str | None
    #: an installation's app id: a provider stored for it sends (see app_providers)
    app_id: str | None = None


# -- reading back -------------------------------------------------------------------
# (what is checked, and how, is declared in flask_push.schemas.notification)


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


def filters(models: Models, audience: Mapping[str, Any]) -> tuple[list[Any] | None, ...]:
    """The conditions on subscriptions and on installations that pick ``audience``'s
    (None: none of that kind), besides being active."""
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
    return sub_where, ins_where


def resolve(session: Any, models: Models, audience: Mapping[str, Any]) -> list[Target]:
    """The active subscriptions and installations of ``audience``, in a stable order."""
    sub, ins = models.Subscription, models.Installation
    sub_where, ins_where = filters(models, audience)
    targets: list[Target] = []
    if sub_where is not None:
        rows = session.execute(
            sa.select(sub.id, sub.user_id).where(sub.status == ACTIVE, *sub_where).order_by(sub.id)
        )
        targets.extend(Target(subscriptions_kind(), id, None, user_id) for id, user_id in rows)
    if ins_where is not None:
        rows = session.execute(
            sa.select(ins.id, ins.user_id, ins.device_type, ins.app_id)
            .where(ins.status == ACTIVE, *ins_where)
            .order_by(ins.id)
        )
        targets.extend(
            Target(kind_for_platform(device_type), None, id, user_id, app_id)
            for id, user_id, device_type, app_id in rows
        )
    return targets


def inbox_users(audience: Mapping[str, Any], targets: Iterable[Target]) -> list[str]:
    """Who gets an inbox item: every listed user, else the owners of the targets."""
    if "users" in audience:
        return list(audience["users"])
    return sorted({t.user_id for t in targets if t.user_id is not None})


def expiry(due_at: datetime, ttl: int) -> datetime:
    """When a delivery due at ``due_at`` with ``ttl`` expires unsent."""
    return due_at + (timedelta(seconds=ttl) if ttl > 0 else ZERO_TTL_GRACE)


def first_events(due_at: datetime, now: datetime, why: str | None = None) -> list[dict[str, Any]]:
    """The first entry of every timeline, written with the row (no statement of its
    own); ``why``, a sentence saying why it was queued, when a caller has one."""
    waits = f" It is due at {outcomes.clock(due_at)}." if due_at > now else ""
    said = f" {why}" if why is not None else ""
    return [outcomes.event("queued", now, f"Queued for sending.{said}{waits}")]


def insert_deliveries(
    session: Any,
    model: Any,
    message_id: str,
    targets: Iterable[Target],
    configured: Iterable[str],
    *,
    due_at: datetime,
    ttl: int,
    rules: policy.Plan | None = None,
    stored: frozenset[tuple[str, str]] = frozenset(),
    why: str | None = None,
) -> Counter[tuple[str, str]]:
    """Write the delivery rows of a message, a chunk at a time; returns how many
    ended at once (not ``queued``), by provider kind and status, for the metrics.

    Targets no provider can reach (of ``configured`` kinds, or ``stored`` for their
    app id) are ``failed`` at once; ``rules`` (a category's plan) hold some back or
    suppress them; ``why`` is what each timeline's first entry says of the send.
    Chunks keep memory flat however large the audience: a whole audience's
    parameters at once cost about 2 KB a row in the driver and SQLAlchemy.
    """
    rows = iter(
        _delivery_rows(
            message_id,
            targets,
            configured,
            due_at=due_at,
            ttl=ttl,
            rules=rules,
            stored=stored,
            why=why,
        )
    )
    # Core's INSERT, not the ORM's bulk one: the ORM leaves out a row's None values
    # and starts a new statement whenever that set changes, which a mix of sent and
    # suppressed rows would do at every other row
    ended: Counter[tuple[str, str]] = Counter()
    while chunk := list(itertools.islice(rows, INSERT_CHUNK)):
        session.execute(sa.insert(model.__table__), chunk)
        ended.update((row["kind"], row["status"]) for row in chunk if row["status"] != "queued")
    return ended


def _delivery_rows(
    message_id: str,
    targets: Iterable[Target],
    configured: Iterable[str],
    *,
    due_at: datetime,
    ttl: int,
    rules: policy.Plan | None,
    stored: frozenset[tuple[str, str]],
    why: str | None = None,
) -> Iterator[dict[str, Any]]:
    configured = set(configured)
    expires_at = expiry(due_at, ttl)
    now = utcnow()
    queued = first_events(due_at, now, why)
    for target in targets:
        decision = rules.decide(target) if rules is not None else None
        reachable = target.kind in configured or (target.kind, target.app_id) in stored
        if decision is not None and (reachable or not decision.tried):
            # held back by the user's choices: that is the reason, with or without a provider
            status, due, events = decision.status, decision.due_at, decision.events
            error, reason = decision.error, decision.reason
        elif reachable:
            status, due, events = "queued", due_at, queued
            error = reason = None
        else:
            status, due, reason = "failed", due_at, "no_provider"
            error = not_configured_error(target.kind)
            how = settings_to_set(target.kind)
            detail = outcomes.detail(reason, kind=target.kind, at=now, how=how)
            events = [*queued, outcomes.event("failed", now, detail)]
        yield {
            "message_id": message_id,
            "kind": target.kind,
            "subscription_id": target.subscription_id,
            "installation_id": target.installation_id,
            "user_id": target.user_id,
            "status": status,
            "attempts": 0,
            "due_at": due,
            "lease_until": None,
            "expires_at": expires_at,
            "error": error,
            "reason": reason,
            "events": events,
            "updated_at": now,
        }


# -- sending -------------------------------------------------------------------------
# ``push.send()`` and ``push.notify_by_id()`` are these, with the facade's keywords.


def send(state: PushState, audience: Mapping[str, Any], keywords: dict[str, Any]) -> Any:
    """``push.send()``: check the ``audience`` keywords (``users``, ``topic``,
    ``query``, ``everyone``; exactly one set) and queue the notification of
    ``keywords``; returns the ``Message``."""
    given = dict(audience)
    # ``everyone`` is a Python keyword, not a wire field: False means "not this audience"
    if not isinstance(given.get("everyone"), bool):
        raise ValidationError("must be true or false", field="everyone", code="invalid_type")
    given["everyone"] = given["everyone"] or None
    if isinstance(given.get("users"), (list, tuple, set, frozenset)):
        given["users"] = list(given["users"])
    checked = parse(
        MessageAudience,
        {name: value for name, value in given.items() if value is not None},
        Context.of(state.settings),
        name="audience",
    )
    return queue_message(state, checked.keywords(), keywords)


def notify_by_id(state: PushState, id: str, keywords: dict[str, Any]) -> Any:
    """``push.notify_by_id()``: queue the notification of ``keywords`` to the one
    subscription or installation ``id``; returns the ``Message``."""
    target_id = str(check(TargetId, id, "id"))
    models, session = state.push.models, state.push.db.session
    found = session.scalar(
        sa.select(sa.func.count())
        .select_from(models.Subscription)
        .where(models.Subscription.id == target_id)
    ) or session.scalar(
        sa.select(sa.func.count())
        .select_from(models.Installation)
        .where(models.Installation.id == target_id)
    )
    if not found:
        raise ValidationError(
            "is not the id of a subscription or installation", field="id", code="not_found"
        )
    unknown = set(keywords) - set(MessageNotification.model_fields)
    if unknown:
        raise TypeError(f"notify_by_id() got unexpected keywords: {', '.join(sorted(unknown))}")
    return queue_message(state, {"id": target_id}, keywords)


def queue_message(
    state: PushState,
    audience: dict[str, Any],
    keywords: dict[str, Any],
    extras: Extras | None = None,
) -> Any:
    """:func:`_queue_message` in a ``flask_push.send`` span (with OpenTelemetry), whose
    traceparent the message keeps for the workers' spans to link to."""
    kind = next(iter(audience), "everyone")
    with tracing.send_span({"flask_push.audience": kind}) as span:
        message = _queue_message(state, audience, keywords, tracing.traceparent(span), extras)
        if tracing.recording(span):
            assert span is not None
            span.set_attribute("flask_push.message_id", message.id)
            span.set_attribute("flask_push.recipient_count", message.recipient_count)
        return message


def tried(targets: Sequence[Target], rules: policy.Plan | None) -> list[Target]:
    """The targets a message will be tried on (now or later) under ``rules``."""
    if rules is None:
        return list(targets)
    return [t for t in targets if (d := rules.decide(t)) is None or d.tried]


@dataclass
class Extras:
    """What a kind of message adds to a send (``push.activity``'s): columns of the
    message, the inbox item's own id and fields, work in the send's transaction once
    the targets are known, and work once it is committed."""

    columns: dict[str, Any]
    #: the activity state it shows: the providers' size checks count it
    activity: Activity | None = None
    inbox_id: str | None = None
    inbox_fields: dict[str, Any] | None = None
    #: ``(session, message, targets)``, before the deliveries are written; returns
    #: how many deliveries it ended, by provider kind and status, or None
    before_insert: Any = None
    #: ``(message, inbox_users)``, after the commit: the users given an inbox item
    after_commit: Any = None
    #: why it was sent, said by the first entry of each delivery's timeline
    why: str | None = None


def _queue_message(
    state: PushState,
    audience: dict[str, Any],
    keywords: dict[str, Any],
    traceparent: str | None,
    extras: Extras | None = None,
) -> Any:
    """Check the notification of ``keywords`` (snake_case, as ``push.send`` takes
    them) against the values' rules and every configured provider, commit the
    message to the checked ``audience`` with its deliveries (and inbox items), then
    hand it to the app's queue; returns the ``Message``.

    A second send with the same idempotency key returns the first message.
    """
    settings = state.settings
    given = parse(
        MessageNotification, by_alias(MessageNotification, keywords), Context.of(settings)
    )
    shown = given.shown(settings.default_ttl)
    notification = notification_from_json(shown)
    for checker in state.get_checkers().values():
        checker.check(notification, extras.activity if extras is not None else None)

    # an id of PUSH_CATEGORIES: checked with the values
    category = settings.categories[given.category] if given.category is not None else None
    models, session = state.push.models, state.push.db.session
    key, send_at, notify_type = given.idempotency_key, given.send_at, given.notify_type
    if key is not None:
        existing = by_idempotency_key(session, models, key)
        if existing is not None:
            return existing
    now = utcnow()
    due = policy.first_due(send_at, now)
    items: list[Any] = []
    try:
        targets = resolve(session, models, audience)
        stored = (
            app_providers.stored_versions(session, models)
            if any(t.installation_id is not None for t in targets)
            else {}
        )
        # what a platform set up only for an app would refuse, refused now too
        only_stored = {
            (t.kind, t.app_id)
            for t in targets
            if t.app_id is not None and t.kind not in settings.providers
        }
        for checker in state.get_stored_checkers(session, stored, only_stored):
            checker.check(notification, extras.activity if extras is not None else None)
        owners = inbox_users(audience, targets) if given.inbox else []
        rules = None
        recipients = len(targets)
        if category is not None:
            rules = policy.plan(
                session,
                models,
                category,
                audience,
                targets,
                owners,
                due=due,
                expires_at=expiry(due, shown["ttl"]),
                now=now,
                queued=first_events(due, now, extras.why if extras is not None else None),
                activity_id=extras.columns.get("activity_id") if extras is not None else None,
            )
            owners = rules.inbox_users
            recipients -= sum(not d.tried for d in rules.decisions.values())
        message = models.Message(
            id=new_id("msg"),
            audience=audience,
            traceparent=traceparent,
            notification=shown,
            notify_type=notify_type,
            category=given.category,
            inbox=given.inbox,
            recipient_count=recipients,
            idempotency_key=key,
            send_at=send_at,
            created_at=now,
            clicked=0,
            **(extras.columns if extras else {}),
        )
        session.add(message)
        session.flush()
        ended: Counter[tuple[str, str]] = Counter()  # deliveries that end at once
        if extras is not None and extras.before_insert is not None:
            # only the targets it will be tried on: a newer state the user will not
            # get (turned off, capped) must not take the older one away as well
            ended.update(extras.before_insert(session, message, tried(targets, rules)) or ())
        ended.update(
            insert_deliveries(
                session,
                models.Delivery,
                message.id,
                targets,
                settings.providers,
                due_at=due,
                ttl=shown["ttl"],
                rules=rules,
                stored=frozenset(stored),
                why=extras.why if extras is not None else None,
            )
        )
        if category is not None and rules is not None:
            policy.record_capped(session, models, category, message.id, rules, due=due)
            if category.max_per_day and any(status == "failed" for _, status in ended):
                # some targets have no provider: a user with no other is not pushed to
                policy.release_capped(session, models, state.settings.categories, [message.id])
        if owners and due > now and (extras is None or extras.inbox_id is None):
            # a scheduled message: its items are written when it comes due
            scheduled_inbox.hold(session, models, message.id, owners, due)
        elif owners:
            fields = inbox.message_fields(shown, notify_type)
            item_id, fresh = message.id, True
            if extras is not None and extras.inbox_id is not None:
                item_id, fields = extras.inbox_id, {**fields, **(extras.inbox_fields or {})}
                fresh = False
            # in the order of their ids: each item locks its user's counter row until
            # the commit, and two sends at once that list the same users in other
            # orders would each wait for the other (a deadlock on PostgreSQL)
            for user_id in sorted(owners):
                items.append(
                    inbox.upsert(
                        session, models, user_id=user_id, id=item_id, values=fields, fresh_id=fresh
                    )
                )
        # Kept loaded, so the returned message reads fine after the app context ends,
        # and without another trip to the database (which may be gone by then). It
        # stays in the session, for a caller who changes and commits it; so a later
        # commit in the same context (a second send) expires it like any other row.
        database.commit_keeping(session, message)
    except sa.exc.IntegrityError:
        session.rollback()
        # Another send with the same key committed first: it is the message.
        existing = by_idempotency_key(session, models, key) if key is not None else None
        if existing is None:
            raise
        return existing
    except BaseException:
        session.rollback()
        raise
    if state.metrics is not None and ended:
        # the outcomes written here, not by a worker: held back by the policy,
        # superseded, or without a provider
        state.metrics.count(ended)
    for (kind, status), count in sorted(ended.items()):
        if status == "failed":  # at send, only for want of a provider
            logger.warning(
                "flask-push: %s: %d %s deliver%s failed as queued: %s",
                message.id,
                count,
                kind,
                "y" if count == 1 else "ies",
                not_configured_error(kind),
            )
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    # Committed: a receiver that fails is logged, and the message is still sent.
    for item, created in items:
        signals.send_committed(signals.inbox_item_saved, app, item=item, created=created)
    signals.send_committed(signals.message_queued, app, message=message)
    if extras is not None and extras.after_commit is not None:
        extras.after_commit(message, owners)
    # what waits for quiet hours to end is found by the workers' polling, as a
    # scheduled message is
    waiting = sum(d.due_at > due for d in rules.decisions.values() if d.tried) if rules else 0
    now_due = message.recipient_count - waiting
    state.get_queue().enqueue(message.id, now_due, scheduled=due > now or now_due <= 0)
    return message


def by_idempotency_key(session: Any, models: Models, key: str) -> Any:
    """The message sent with idempotency key ``key``, or None."""
    model = models.Message
    return session.scalar(sa.select(model).where(model.idempotency_key == key))
