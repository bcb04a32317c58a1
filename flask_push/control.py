"""What an operator does to a message: cancel what is unsent, send again what failed.

Both rewrite rows a chunk at a time with one executemany UPDATE per chunk, each
row's timeline gaining its event; only rows still in the status they were read
in are changed, so a worker's outcome written meanwhile is never overwritten.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import outcomes, scheduled_inbox
from .models import Models, utcnow

#: rows read and rewritten per statement
CHUNK = 1000


def cancel(session: Any, models: Models, message_id: str) -> int:
    """Make the queued deliveries of ``message_id`` ``cancelled``, and take back the
    inbox items a scheduled one still holds (no commit); returns how many deliveries
    were queued when read.

    A worker skips them from then on: a claim takes queued rows only, and the
    outcome of a row it already had in hand is written only if still queued (or,
    for a push already on the network, as what really happened).
    """
    scheduled_inbox.drop(session, models, message_id)
    now = utcnow()
    event = outcomes.event("cancelled", now, outcomes.detail("cancelled", at=now))
    return _rewrite(
        session,
        models,
        message_id,
        "queued",
        {"status": "cancelled", "reason": "cancelled", "lease_until": None, "updated_at": now},
        event,
    )


def retry_failed(session: Any, models: Models, message_id: str) -> int:
    """Queue the ``failed`` deliveries of ``message_id`` again, due now (or at its
    ``send_at``, if that is later: a push that failed as it was queued must not go
    out before the others), with a fresh count of attempts (no commit); returns how
    many. ``gone`` ones stay: their targets are dead. A message an operator cancelled
    (it has ``cancelled`` deliveries) is left as it is: none of it goes out again."""
    d = models.Delivery
    if session.scalar(
        sa.select(sa.exists().where(d.message_id == message_id, d.status == "cancelled"))
    ):
        return 0
    now = utcnow()
    send_at = session.scalar(
        sa.select(models.Message.send_at).where(models.Message.id == message_id)
    )
    due = send_at if send_at is not None and send_at > now else now
    said = (
        outcomes.RETRY_SCHEDULED.format(at=outcomes.clock(now), next=outcomes.clock(due))
        if due > now
        else outcomes.detail("operator_retry", at=now)
    )
    event = outcomes.event("retry", now, said, operator=True)
    return _rewrite(
        session,
        models,
        message_id,
        "failed",
        {
            "status": "queued",
            "reason": "operator_retry",
            "due_at": due,
            "lease_until": None,
            "attempts": 0,
            "error": None,
            "updated_at": now,
        },
        event,
    )


def _rewrite(
    session: Any,
    models: Models,
    message_id: str,
    status: str,
    values: dict[str, Any],
    event: dict[str, Any],
) -> int:
    d = models.Delivery.__table__
    update = (
        sa.update(d)
        .where(d.c.id == sa.bindparam("b_id"), d.c.status == status)
        .values(**values, events=sa.bindparam("b_events", type_=d.c.events.type))
    )
    done, after = 0, 0
    while True:
        rows = session.execute(
            sa.select(d.c.id, d.c.events)
            .where(d.c.message_id == message_id, d.c.status == status, d.c.id > after)
            .order_by(d.c.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return done
        session.execute(
            update, [{"b_id": id, "b_events": [*(events or ()), event]} for id, events in rows]
        )
        done += len(rows)
        after = rows[-1][0]
