"""``push.activity()``: one call for a thing whose state changes (an order out for
delivery), shown in place on every screen of its users.

Each call is a message to the users' browsers and devices (the category's rules
apply), whose notification carries the activity id as its tag and collapse key, so
that browsers and Android replace the previous one; iOS installations with a Live
Activity token (or a push-to-start token, for ``start``) get a Live Activity push.
The call also updates one inbox item per user in place, publishes an ``activity``
event on ``user:<id>`` and ``activity:<id>``, and supersedes the pushes of older
states still queued for the same targets, so that an older state never lands
after a newer one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from . import database, outcomes, policy
from .categories import Category
from .errors import ValidationError
from .message import Activity
from .models import ACTIVE, Models, unclaimed_update, utcnow
from .realtime.events import ACTIVITY_CHANNEL_PREFIX, user_channel
from .realtime.inbox_events import publish_committed
from .schemas.activity import ActivityCall, progress_of
from .schemas.base import Context
from .schemas.errors import by_alias, parse

if TYPE_CHECKING:
    from .extension import PushState
    from .sending import Target

logger = logging.getLogger("flask_push")

#: the channel an activity's live events go to, besides each user's own
CHANNEL_PREFIX = ACTIVITY_CHANNEL_PREFIX


def _epoch(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp())


def activity(state: PushState, keywords: dict[str, Any]) -> Any:
    """``push.activity()``: check, record the activity's new state and queue its
    message; returns the ``Message``."""
    call = parse(ActivityCall, by_alias(ActivityCall, keywords), Context.of(state.settings))
    try:
        return _record_and_queue(state, call)
    except sa.exc.IntegrityError:
        # Another call made this activity's row since we looked (two first calls
        # at once): go again, now behind it, as an update of what it recorded.
        return _record_and_queue(state, call)


def _record_and_queue(state: PushState, call: ActivityCall) -> Any:
    from .sending import Extras, queue_message

    models, session = state.push.models, state.push.db.session
    now = utcnow()
    # held before it is read: two calls for one activity take their timestamps in
    # turn (the call sets updated_at anyway)
    model = models.Activity
    row = database.held_row(session, model, call.id, updated_at=now)
    if (
        row is not None
        and row.ended_at is not None
        # an end an operator cancelled may be called again: else nothing could end
        # the Live Activities it did not reach
        and not (call.event == "end" and _end_cancelled(session, models, call.id))
    ):
        session.rollback()
        raise ValidationError(
            f"has ended (event='end' at {outcomes.clock(row.ended_at)}): it takes no more "
            "calls; start a new activity with another id",
            field="id",
            code="activity_ended",
        )
    # APNs shows a Live Activity push only if its timestamp is newer than the last
    stamp = max(int(now.timestamp()), (row.timestamp + 1) if row is not None else 0)
    # A call without a state (an end, new words alone) shows the last one: an empty
    # content-state does not decode into the app's ContentState, so an iPhone would
    # drop the push and its Live Activity would go on showing the old state.
    current = call.state
    if current is None:
        current = dict(row.state or {}) if row is not None else {}
    users = list(dict.fromkeys(call.users))
    # the users of the latest call are the activity's: one left out (a courier
    # replaced) may no longer join its channel, nor be caught up, and their sockets
    # on it leave it before its next state goes out, and their Live Activities end
    # on the activity's last state while they were in it
    before = set(row.users or ()) if row is not None else set()
    left = sorted(before - set(users))
    seen = dict(row.state or {}) if row is not None else {}
    if row is not None and set(users) - before:
        # one back in after a farewell ended their Live Activity: its token is dead
        forget_ended(session, models, call.id, sorted(set(users) - before))
    if row is None:
        row = model(id=call.id, created_at=now, users=[], state={})
        session.add(row)
    row.users = sorted(users)
    row.event, row.state, row.timestamp, row.updated_at = call.event, current, stamp, now
    if call.event == "end":
        row.ended_at = now
    shown = Activity(
        id=call.id,
        # a start run twice (a host's job retried) stays one: the dispatcher sends no
        # second push-to-start to a device that had one for this activity
        event=call.event,
        state=current,
        timestamp=stamp,
        stale_at=_epoch(call.stale_at),
        dismiss_at=_epoch(call.dismiss_at),
        attributes_type=call.attributes_type,
        attributes=call.attributes,
    )
    live = {
        "id": call.id,
        "event": call.event,
        "state": current,
        "title": call.title,
        "body": call.body,
        "url": call.url,
        "timestamp": stamp,
    }
    progress = progress_of(current)

    def supersede(
        session: Any, message: Any, targets: Sequence[Target]
    ) -> Counter[tuple[str, str]]:
        return superseded(
            session,
            models,
            call.id,
            message.id,
            stamp,
            targets,
            now,
            state.settings.categories,
            users=users,
        )

    def publish(message: Any, inbox_users: Sequence[str]) -> None:
        if left:
            shut_out(state, CHANNEL_PREFIX + call.id, left)
        # on the channels of the users whose inbox it reaches (the category's inbox
        # channel is theirs to turn off), and on the activity's own, which a page
        # showing it joins
        for channel in [*map(user_channel, inbox_users), CHANNEL_PREFIX + call.id]:
            # committed: a live event that fails is logged, not raised
            data = {**live, "messageId": message.id}
            publish_committed(state.push.publish, channel, "activity", data)

    extras = Extras(
        columns={"activity_id": call.id, "activity": activity_json(shown)},
        activity=shown,
        inbox_id=call.id,
        inbox_fields={
            "is_new": True,
            "data": {"activity": {"id": call.id, "event": call.event, "state": current}},
            # from this state alone, as its push shows it: a state without a body,
            # a url or step and steps clears the previous state's (SQL NULL, as on an
            # item never given one, not JSON null), so that the bell never shows
            # "shipped" beside the link to pay of the state before
            "body": call.body if call.body is not None else sa.null(),
            "url": call.url if call.url is not None else sa.null(),
            "progress": progress if progress is not None else sa.null(),
        },
        before_insert=supersede,
        after_commit=publish,
    )
    notification = {
        "title": call.title,
        "body": call.body,
        "url": call.url,
        "tag": call.id,
        "collapse_key": call.id,
        "inbox": True,
        "notify_type": "activity",
        "category": call.category,
    }
    if call.urgency is not None:
        notification["urgency"] = call.urgency
    try:
        message = queue_message(state, {"users": users}, notification, extras)
    except BaseException:
        # refused (a payload too large, say): the activity's new state goes too
        session.rollback()
        raise
    if left:
        # its own messages, after the call's commit: which leaves the call's loaded
        with database.keeping(message):
            end_left_out(state, replace(shown, state=seen), left, call.title)
    return message


def shut_out(state: PushState, channel: str, users: list[str]) -> None:
    """Make the sockets of ``users`` leave ``channel``, which they no longer follow;
    after a commit the caller made, so a failure is logged, not raised."""
    why = f"You no longer follow {channel!r}: the activity's latest call leaves you out."
    try:
        state.get_realtime().shut_out(channel, users, why)
    except Exception as err:  # noqa: BLE001 - said; the call itself succeeded
        logger.warning(
            "flask-push: %d user(s) left out of %r were not made to leave its channel "
            "(%s): their sockets already on it see its events until they reconnect",
            len(users),
            channel,
            err,
        )


def activity_json(shown: Activity) -> dict[str, Any]:
    """An :class:`Activity` as a message keeps it."""
    return {
        "id": shown.id,
        "event": shown.event,
        "state": dict(shown.state),
        "timestamp": shown.timestamp,
        "staleAt": shown.stale_at,
        "dismissAt": shown.dismiss_at,
        "attributesType": shown.attributes_type,
        "attributes": dict(shown.attributes) if shown.attributes is not None else None,
        **({"catchUp": True} if shown.catch_up else {}),
        **({"farewell": True} if shown.farewell else {}),
    }


def activity_from_json(stored: dict[str, Any] | None) -> Activity | None:
    """The :class:`Activity` a message keeps, or None for other messages."""
    if not stored:
        return None
    return Activity(
        id=stored["id"],
        event=stored["event"],
        state=stored.get("state") or {},
        timestamp=int(stored["timestamp"]),
        stale_at=stored.get("staleAt"),
        dismiss_at=stored.get("dismissAt"),
        attributes_type=stored.get("attributesType"),
        attributes=stored.get("attributes"),
        catch_up=bool(stored.get("catchUp")),
        farewell=bool(stored.get("farewell")),
    )


#: the statuses of an installation's latest push of an activity that keep a Live
#: Activity token it registers later from being caught up: the policy held the push
#: back, an operator cancelled it, or a newer state replaced it (one that waits
#: unclaimed is left too: it goes to the new token)
NOT_CAUGHT_UP = ("suppressed", "cancelled", "superseded")


def stamp_of(message: Any) -> Any:
    """SQL: the activity timestamp of ``message`` (a Message entity or alias), as a
    64-bit integer on every database."""
    return sa.cast(message.activity["timestamp"].as_string(), sa.BigInteger)


def catch_up(state: PushState, installation: Any, activity_id: str, *, first: bool) -> Any:
    """Queue the latest state of ``activity_id`` this installation was sent to the
    Live Activity token it has just registered (or changed) for it: a state sent
    before the token came went to the device as an alert, or to a Live Activity the
    user has since replaced, and the Live Activity would show the state the app
    started it with until the next call. It goes to that token alone, without an
    alert (the user had one) and at low priority; a newer state supersedes it as any
    other, and an ended activity is ended on the phone.

    Nothing is queued for a state the installation was never sent, one that still
    waits unclaimed (it goes to the new token; a catch-up too), one held back by the
    policy or cancelled, or, for the ``first`` token of the activity on this
    installation, one a push-to-start token showed (that started this Live
    Activity). Returns the message queued, or None."""
    models, session = state.push.models, state.push.db.session
    m, d = models.Message, models.Delivery
    row = session.get(models.Activity, activity_id)
    if row is None or installation.user_id not in (row.users or ()):
        return None
    found = session.execute(
        sa.select(m, d.status, d.reason, d.lease_until, d.events)
        .join(d, d.message_id == m.id)
        .where(m.activity_id == activity_id, d.installation_id == installation.id)
        # of the same state, its latest push here: a catch-up after the call's own
        .order_by(stamp_of(m).desc(), d.id.desc())
        .limit(1)
    ).first()
    if found is None:
        return None
    latest, status, reason, lease_until, events = found
    if latest.activity.get("farewell"):
        return None  # ended when they were left out; nothing newer came to them since
    if status == "gone":
        # The installation died on that state (its service refused the token) and
        # was sent nothing after it; revived, its Live Activity gets the activity's
        # latest state, which its user follows, not the one that never arrived.
        latest = _newest_state(session, models, activity_id) or latest
    waiting = status == "queued" and (lease_until is None or lease_until < utcnow())
    if waiting or status in NOT_CAUGHT_UP or reason in outcomes.POLICY_REASONS:
        return None
    tried = [e for e in events or () if e.get("what") == "attempt"]
    if first and status == "sent" and tried and tried[-1].get("token") == "start":
        return None  # a push-to-start showed this state: it started this Live Activity
    return queue_catch_up(state, installation.id, latest)


def _end_cancelled(session: Any, models: Any, activity_id: str) -> bool:
    """Was the newest ``end`` of ``activity_id`` a call sent cancelled by an operator?"""
    m = models.Message
    ended = _newest_call(session, models, activity_id, m.activity["event"].as_string() == "end")
    return ended is not None and ended.cancelled_at is not None


def _newest_state(session: Any, models: Any, activity_id: str) -> Any:
    """The message of the newest state of ``activity_id`` a call sent that no
    operator cancelled, or None."""
    return _newest_call(session, models, activity_id, models.Message.cancelled_at.is_(None))


def _newest_call(session: Any, models: Any, activity_id: str, *where: Any) -> Any:
    """The message of the newest state of ``activity_id`` a call sent (not a
    catch-up's or a farewell's copy) that matches ``where``, or None."""
    m = models.Message
    return session.scalars(
        sa.select(m)
        .where(
            m.activity_id == activity_id,
            m.activity["catchUp"].as_boolean().is_not(True),
            m.activity["farewell"].as_boolean().is_not(True),
            *where,
        )
        .order_by(stamp_of(m).desc(), m.id.desc())
        .limit(1)
    ).first()


#: what the timeline of a catch-up says first, after "Queued for sending."
CAUGHT_UP = (
    "A catch-up: the activity's latest state again, without an alert, for the Live "
    "Activity token the device's app registered after that state was sent to it."
)


def queue_catch_up(state: PushState, installation_id: str, latest: Any) -> Any:
    """Queue message ``latest``'s activity state again, as a catch-up, to
    installation ``installation_id`` (see :func:`catch_up`)."""
    from .sending import Extras, queue_message

    models = state.push.models
    activity_id = latest.activity_id
    shown = activity_from_json(latest.activity)
    assert shown is not None, "a message of an activity keeps its state"
    caught = replace(shown, catch_up=True)
    now = utcnow()

    def supersede(
        session: Any, message: Any, targets: Sequence[Target]
    ) -> Counter[tuple[str, str]]:
        return superseded(
            session,
            models,
            activity_id,
            message.id,
            caught.timestamp,
            targets,
            now,
            state.settings.categories,
        )

    keywords = {**latest.notification, "inbox": False, "notify_type": latest.notify_type}
    extras = Extras(
        columns={"activity_id": activity_id, "activity": activity_json(caught)},
        activity=caught,
        before_insert=supersede,
        why=CAUGHT_UP,
    )
    return queue_message(state, {"id": installation_id}, keywords, extras)


#: what the timeline of a farewell says first, after "Queued for sending."
FAREWELL = (
    "A farewell: the activity's latest call left this user out, so their Live Activity "
    "ends on its state before that call, without an alert, and leaves the lock screen."
)


def end_left_out(state: PushState, last: Activity, users: Sequence[str], title: str) -> list[Any]:
    """Queue the end of the Live Activities of ``users``, whom the call stamped
    ``last.timestamp`` left out (a courier replaced): a farewell to each of their
    installations with a token for it, which ends it on ``last``, the activity's state
    before that call (the last they were in; not the new one, no longer theirs to
    see), without an alert, and dismisses it at once. Else their lock screen would
    show a state no newer one replaces, of an activity they no longer follow, until
    iOS ends it hours later. One back in the activity before it went is not sent it
    (:func:`superseded`, :func:`overtaken`); one back in after has its dead token
    forgotten (:func:`forget_ended`).

    After the call's commit: one that cannot be queued is logged, and the call
    stands. Returns the messages queued."""
    from .sending import Extras, queue_message

    models, session = state.push.models, state.push.db.session
    tok, ins = models.ActivityToken, models.Installation
    farewell = replace(
        last,
        event="end",
        dismiss_at=last.timestamp,
        stale_at=None,
        attributes_type=None,
        attributes=None,
        farewell=True,
    )
    keywords = {
        "title": title,
        "tag": last.id,
        "collapse_key": last.id,
        "inbox": False,
        "notify_type": "activity",
    }
    extras = Extras(
        columns={"activity_id": last.id, "activity": activity_json(farewell)},
        activity=farewell,
        why=FAREWELL,
    )
    try:
        found = session.execute(
            sa.select(ins.id, ins.user_id)
            .join(tok, tok.installation_id == ins.id)
            .where(tok.activity_id == last.id, ins.user_id.in_(users), ins.status == ACTIVE)
            .order_by(ins.id)
        ).all()
    except Exception as err:  # noqa: BLE001 - said; the call itself succeeded
        session.rollback()
        _not_ended(f"the Live Activities of {', '.join(map(repr, users))}", last.id, err)
        return []
    queued = []
    for installation_id, user_id in found:
        try:
            queued.append(queue_message(state, {"id": installation_id}, keywords, extras))
        except Exception as err:  # noqa: BLE001 - said; the call itself succeeded
            whose = f"the Live Activity of {user_id!r} on installation {installation_id}"
            _not_ended(whose, last.id, err)
    return queued


def _not_ended(whose: str, activity_id: str, err: Exception) -> None:
    logger.error(
        "flask-push: %s, whom a call of activity %r left out, could not be ended (%s): "
        "the lock screen shows its state before that call until iOS ends it",
        whose,
        activity_id,
        err,
    )


def forget_ended(session: Any, models: Models, activity_id: str, users: Sequence[str]) -> None:
    """Delete the Live Activity tokens for ``activity_id`` of ``users``, who are back
    in it, that a farewell went to (or is on its way to): it ended their Live
    Activity, whose token no push shows again, so the next state goes to the device
    as an alert (and is caught up when the app registers a new Live Activity's
    token). A farewell still waiting unclaimed is superseded by the call instead, and
    a token registered after the farewell went is a new Live Activity's."""
    d, m, tok = models.Delivery, models.Message, models.ActivityToken
    now = utcnow()
    on_its_way = sa.and_(d.status == "queued", d.lease_until > now)
    went = session.execute(
        # installation: when its latest farewell went
        sa.select(d.installation_id, sa.func.max(d.updated_at))
        .join(m, m.id == d.message_id)
        .where(
            m.activity_id == activity_id,
            m.activity["farewell"].as_boolean().is_(True),
            d.user_id.in_(users),
            d.installation_id.is_not(None),
            sa.or_(d.status == "sent", on_its_way),
        )
        .group_by(d.installation_id)
    ).all()
    for installation_id, at in went:
        session.execute(
            sa.delete(tok).where(
                tok.installation_id == installation_id,
                tok.activity_id == activity_id,
                tok.created_at <= at,
            ),
            execution_options={"synchronize_session": False},
        )


def superseded(
    session: Any,
    models: Models,
    activity_id: str,
    message_id: str,
    stamp: int,
    targets: Sequence[Target],
    now: datetime,
    categories: Mapping[str, Category],
    *,
    users: Sequence[str] | None = None,
) -> Counter[tuple[str, str]]:
    """Mark the queued, unclaimed pushes of older states of ``activity_id`` (whose
    timestamp is before ``stamp``, that of message ``message_id``) to any of
    ``targets`` ``superseded``, and uncount them from their category's daily cap;
    returns how many, by provider kind (and ``superseded``), for the metrics. A push
    a worker holds is on its way; APNs orders Live Activity pushes by timestamp,
    browsers and Android by arrival. A newer state queued already (a call made while
    a catch-up was being queued) stays, and overtakes this one (:func:`overtaken`).

    ``users``, the activity's users from this call on: the older pushes to anyone
    else (left out by this call or an earlier one) are superseded too, with reason
    ``left_out``. Sent later (at the end of their quiet hours, say), such a push
    would show a state no newer one ever replaces, of an activity they no longer
    follow, and a push-to-start would begin a Live Activity that is never ended."""
    d, m = models.Delivery, models.Message
    subscriptions = [t.subscription_id for t in targets if t.subscription_id is not None]
    installations = [t.installation_id for t in targets if t.installation_id is not None]
    left_out = (
        sa.and_(d.user_id.is_not(None), d.user_id.not_in(users))
        if users is not None
        else sa.false()
    )
    if not subscriptions and not installations and users is None:
        return Counter()
    older = sa.select(m.id).where(
        m.activity_id == activity_id,
        m.id != message_id,
        stamp_of(m) < stamp,
    )
    rows = session.execute(
        # locked until the caller's commit (PostgreSQL), in the order of their ids, the
        # order every other writer of these rows takes: a worker's claim, which skips
        # locked rows, cannot take one between this read and the write, which would
        # count it as superseded while the worker sends it
        sa.select(d.id, d.events, d.message_id, d.kind, d.user_id, d.installation_id, m.activity)
        .join(m, m.id == d.message_id)
        .order_by(d.id)
        .with_for_update(of=d)
        .where(
            d.message_id.in_(older),
            d.status == "queued",
            sa.or_(d.lease_until.is_(None), d.lease_until < now),
            sa.or_(
                d.subscription_id.in_(subscriptions) if subscriptions else sa.false(),
                d.installation_id.in_(installations) if installations else sa.false(),
                left_out,
            ),
        )
    ).all()
    # a farewell waiting for a user left out stays: it ends the Live Activity they
    # no longer follow (a newer state to their installation, once they are back in
    # it, replaces it as any other)
    rows = [
        row
        for row in rows
        if not (row.activity or {}).get("farewell") or row.installation_id in installations
    ]
    if not rows:
        return Counter()
    replaced = outcomes.event("superseded", now, outcomes.detail("superseded", at=now))

    def why(user_id: str | None) -> tuple[str, dict[str, Any]]:
        if users is None or user_id is None or user_id in users:
            return "superseded", replaced
        text = outcomes.detail("left_out", at=now, user=user_id)
        return "left_out", outcomes.event("superseded", now, text)

    table = d.__table__
    session.execute(
        unclaimed_update(table, now).values(
            status="superseded",
            reason=sa.bindparam("b_reason", type_=table.c.reason.type),
            lease_until=None,
            updated_at=now,
            events=sa.bindparam("b_events", type_=table.c.events.type),
        ),
        [
            {"b_id": row.id, "b_reason": reason, "b_events": [*(row.events or ()), said]}
            for row in rows
            for reason, said in [why(row.user_id)]
        ],
    )
    policy.release_capped(session, models, categories, {row.message_id for row in rows})
    return Counter((row.kind, "superseded") for row in rows)


def overtaken(session: Any, models: Models, delivery_ids: Sequence[int]) -> dict[int, str | None]:
    """Which of ``delivery_ids`` (pushes of activity states about to be sent, or that
    the push service asked to retry) a newer state of the same activity to the same
    target has overtaken, sent or queued, or a newer call has left the user of out
    (the activity's users are its latest call's). Such a push was on its way or
    failed when the newer call came, so :func:`superseded` left it; sent now (a
    retry, an operator's retry), it would land after the newer state and show the
    older one in its place, or show a user who no longer follows the activity a state
    no newer one replaces. A farewell is overtaken when its user is back in the
    activity. Maps each to None (overtaken), or to the user left out (reason
    ``left_out``)."""
    if not delivery_ids:
        return {}
    d, m = models.Delivery, models.Message
    newer_d, newer_m = aliased(d), aliased(m)
    same_target = sa.or_(
        sa.and_(d.subscription_id.is_not(None), newer_d.subscription_id == d.subscription_id),
        sa.and_(d.installation_id.is_not(None), newer_d.installation_id == d.installation_id),
    )
    newer = (
        sa.select(newer_d.id)
        .join(newer_m, newer_m.id == newer_d.message_id)
        .where(
            newer_m.activity_id == m.activity_id,
            # the activity's own clock, which only grows from one call to the next
            # (not created_at, which app servers' clocks may disagree on)
            stamp_of(newer_m) > stamp_of(m),
            newer_d.status.in_(["queued", "sent"]),
            same_target,
            # not a farewell: one is only for a user left out, whose pushes of older
            # states are overtaken as such (below)
            newer_m.activity["farewell"].as_boolean().is_not(True),
        )
    )
    query = (
        sa.select(d.id)
        .join(m, m.id == d.message_id)
        .where(d.id.in_(delivery_ids), m.activity_id.is_not(None), newer.exists())
    )
    found: dict[int, str | None] = dict.fromkeys(session.scalars(query))
    a = models.Activity
    moved_on = (
        sa.select(d.id, d.user_id, a.users, m.activity)
        .join(m, m.id == d.message_id)
        .join(a, a.id == m.activity_id)
        .where(d.id.in_(delivery_ids), d.user_id.is_not(None), a.timestamp > stamp_of(m))
    )
    for id, user_id, users, shown in session.execute(moved_on):
        left = user_id not in (users or ())
        if id in found:
            continue
        if shown.get("farewell"):
            # for a user left out, ending what they no longer follow: one back in
            # since follows it again, and gets its newer states
            if not left:
                found[id] = None
        elif left:
            found[id] = user_id
    return found


def forget_tokens(session: Any, models: Models, installations: Any) -> None:
    """Delete the Live Activity tokens of ``installations`` (their ids, or a SELECT of
    them), which are being deleted, or registered again by another user: those
    tokens were the last owner's Live Activities."""
    token = models.ActivityToken
    session.execute(
        sa.delete(token).where(token.installation_id.in_(installations)),
        execution_options={"synchronize_session": False},
    )


def follows(push: Any, user_id: str, channel: str) -> bool:
    """Is ``channel`` the live channel of an activity shown to ``user_id``?"""
    if not channel.startswith(CHANNEL_PREFIX):
        return False
    row = push.db.session.get(push.models.Activity, channel.removeprefix(CHANNEL_PREFIX))
    return row is not None and user_id in (row.users or ())
