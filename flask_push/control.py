"""What an operator does to a message: cancel what is unsent, send again what failed.

Both rewrite rows a chunk at a time with one executemany UPDATE per chunk, each
row's timeline gaining its event; only rows still in the status they were read
in are changed, so a worker's outcome written meanwhile is never overwritten.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from . import outcomes, policy, reports, scheduled_inbox
from .categories import Category
from .errors import ValidationError
from .models import Models, utcnow
from .preferences import Stored, stored_for
from .sending import Target

#: rows read and rewritten per statement
CHUNK = 1000


def cancel(session: Any, models: Models, message_id: str) -> Counter[tuple[str, str]]:
    """Make the queued deliveries of ``message_id`` ``cancelled``, take back the
    inbox items a scheduled one still holds, and, when either was there to stop,
    note the time on the message, ``cancelled_at`` (no commit). Returns how many of
    the deliveries were in no worker's hand, by provider kind and ``"cancelled"``,
    for the metrics.
    A worker counts those it held: as cancelled the ones it takes back unsent and
    those whose retry the cancel wins over; a push already on the network that its
    answer ended counts that outcome, which replaces the cancel (counted here too,
    one delivery would count twice).

    A worker skips them from then on: a claim takes queued rows only, and the
    outcome of a row it already had in hand is written only if still queued (or,
    for a push already on the network that its answer ended, as what really
    happened).
    """
    _hold(session, models, message_id)
    stopped = scheduled_inbox.drop(session, models, message_id)
    now = utcnow()
    event = outcomes.event("cancelled", now, outcomes.detail("cancelled", at=now))
    update = _update(
        models, "queued", status="cancelled", reason="cancelled", lease_until=None, updated_at=now
    )
    done: Counter[tuple[str, str]] = Counter()
    d = models.Delivery
    for rows in _chunks(session, models, message_id, "queued", d.kind, d.lease_until):
        session.execute(
            update, [{"b_id": row.id, "b_events": [*(row.events or ()), event]} for row in rows]
        )
        stopped += len(rows)
        # a lease past its time: its worker is gone, and counts nothing
        done.update(
            (row.kind, "cancelled")
            for row in rows
            if row.lease_until is None or row.lease_until <= now
        )
    if stopped:
        # the message's own record: a message whose inbox items were all it held
        # has no delivery to say it
        m = models.Message
        session.execute(
            sa.update(m)
            .where(m.id == message_id, m.cancelled_at.is_(None))
            .values(cancelled_at=now)
            .execution_options(synchronize_session=False)
        )
    return done


def retry_failed(
    session: Any, models: Models, categories: Mapping[str, Category], message_id: str
) -> tuple[int, Counter[tuple[str, str]]]:
    """Queue the ``failed`` deliveries of ``message_id`` again, with a fresh count of
    attempts (no commit). Returns how many are queued, and how many of the others
    ended, by provider kind and status, for the metrics.

    Each is due as the message's other pushes were: now, or at the message's
    ``send_at`` if that is later (a push that failed as it was queued must not go out
    before the others). For a category its users choose, each user's choices as they
    are now apply, as at send time: a channel turned off since ends it ``suppressed``,
    and quiet hours hold it to their end (``expired`` when that is past its time to
    live), so that a retry at night does not wake anyone. The daily cap weighs it
    when the retry pushes, against the pushes of the 24 hours around then: it is
    ``suppressed`` (``frequency_cap``) for a user whose day is full then, and counted
    then for the others, not on the message's own (maybe old) day. ``gone`` ones stay: their
    targets are dead; and so do ``failed`` ones past their time to live, which no
    retry can send (their failure says what went wrong).

    :raises ValidationError: ``message_cancelled`` for a message an operator
        cancelled (it has ``cancelled`` deliveries): none of it goes out again.
    """
    d, m = models.Delivery, models.Message
    ended: Counter[tuple[str, str]] = Counter()
    _hold(session, models, message_id)
    if message_id in reports.cancelled(session, models, [message_id]):
        raise ValidationError(outcomes.RETRY_CANCELLED, field="id", code="message_cancelled")
    now = utcnow()
    message = session.execute(
        sa.select(m.id, m.send_at, m.created_at, m.counted_at, m.category).where(m.id == message_id)
    ).one()
    due = max(policy.first_due(message.send_at, message.created_at), now)
    said = (
        outcomes.RETRY_SCHEDULED.format(at=outcomes.clock(now), next=outcomes.clock(due))
        if due > now
        else outcomes.detail("operator_retry", at=now)
    )
    retried = outcomes.event("retry", now, said, operator=True)
    category = categories.get(message.category) if message.category else None
    # the category whose choices are the users' (a required one ignores them)
    ruled = category if category is not None and not category.required else None
    # the users whose day under the category's cap is full when the retry pushes
    capped = category if category is not None and category.max_per_day else None
    full = policy.retaken(session, models, capped, message_id, due, now) if capped else set()
    pushed: set[str] = set()
    update = _update(
        models,
        "failed",
        status=sa.bindparam("b_status"),
        reason=sa.bindparam("b_reason"),
        due_at=sa.bindparam("b_due_at"),
        error=sa.bindparam("b_error"),
        lease_until=None,
        attempts=0,
        updated_at=now,
    )
    columns = (d.kind, d.subscription_id, d.installation_id, d.user_id, d.expires_at)
    queued = 0
    for rows in _chunks(session, models, message_id, "failed", *columns):
        stored = (
            stored_for(session, models, {row.user_id for row in rows if row.user_id})
            if ruled is not None
            else {}
        )
        changes = []
        for row in rows:
            if row.expires_at <= due:
                # past its time to live: no retry can send it, and its failure (what
                # the service said) is what the operator needs to read, not an expiry
                continue
            decision = None
            if category is not None and (ruled is not None or row.user_id in full):
                target = Target(row.kind, row.subscription_id, row.installation_id, row.user_id)
                mine = stored.get(row.user_id, Stored()) if row.user_id else Stored()
                decision = policy.decide(
                    category, target, mine, due, row.expires_at, now, [retried], full
                )
            if decision is None:
                decision = policy.Decision("queued", "operator_retry", due, [retried])
            if decision.tried:
                queued += 1
                if row.user_id:
                    pushed.add(row.user_id)
            else:
                ended[row.kind, decision.status] += 1
            changes.append(
                {
                    "b_id": row.id,
                    "b_status": decision.status,
                    "b_reason": decision.reason,
                    "b_due_at": decision.due_at,
                    "b_error": decision.error,
                    "b_events": [*(row.events or ()), *decision.events],
                }
            )
        session.execute(update, changes)
    if capped is not None:
        # counted when the retry pushes, not on the message's own (maybe old) day
        policy.recount_capped(session, models, capped, message, due, pushed)
    return queued, ended


def _hold(session: Any, models: Models, message_id: str) -> None:
    """On PostgreSQL, lock the message's row until the caller's commit: a cancel and
    a retry of one message take turns. A retry read no cancel, then a cancel made
    meanwhile locked only the rows still queued, and the retry queued the failed
    ones again: the cancelled message sent them. (SQLite has one writer at a time.)"""
    m = models.Message
    session.execute(sa.select(m.id).where(m.id == message_id).with_for_update())


def _update(models: Models, was: str, **values: Any) -> sa.Update:
    """The executemany UPDATE of one delivery (``b_id``) still in status ``was``:
    ``values``, and its timeline (``b_events``)."""
    d = models.Delivery.__table__
    return (
        sa.update(d)
        .where(d.c.id == sa.bindparam("b_id"), d.c.status == was)
        .values(**values, events=sa.bindparam("b_events", type_=d.c.events.type))
    )


def _chunks(
    session: Any, models: Models, message_id: str, status: str, *columns: Any
) -> Iterator[Sequence[Any]]:
    """The deliveries of ``message_id`` in ``status`` (their ``id``, ``events`` and
    ``columns``), :data:`CHUNK` at a time in the order of their ids, the order every
    other writer of these rows takes. Each chunk is read after the caller rewrote
    the one before.

    On PostgreSQL each chunk is locked as it is read, until the caller's commit: what
    the caller reads of a row (whether a worker holds it, its timeline) is what it
    writes over. A worker's claim, which skips locked rows, once took rows between
    a cancel's read and its write: the cancel counted them as in no worker's hand,
    and the worker counted what it sent of them too."""
    d = models.Delivery
    after = 0
    while True:
        rows = session.execute(
            sa.select(d.id, d.events, *columns)
            .where(d.message_id == message_id, d.status == status, d.id > after)
            .order_by(d.id)
            .limit(CHUNK)
            .with_for_update()
        ).all()
        if not rows:
            return
        yield rows
        after = rows[-1].id
