"""How far behind the outbox is: the deliveries due now, and how long the oldest waited.

Health checks, the metrics' gauges and the console all read it from the database,
so it is right whichever process (a thread worker, a Celery worker, another host)
delivers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session

from .models import Models, utcnow


@dataclass(frozen=True)
class OutboxState:
    """The outbox at one moment.

    .. versionadded:: 0.1
    """

    #: ``queued`` deliveries whose ``due_at`` has come (claimed ones included:
    #: they stay ``queued`` until their outcome is written)
    due: int
    #: seconds since the oldest due delivery became due; None when nothing is due
    oldest_due_seconds: float | None


def outbox_state(
    session: Session | scoped_session[Any], models: Models, *, now: datetime | None = None
) -> OutboxState:
    """Read the outbox's state in one query.

    The query is a range of the ``ix_push_deliveries_claim`` index
    (``status, due_at``): it reads the due rows' index entries only, never the
    sent or scheduled history, so it stays cheap on a large table whose backlog is small.

    :param now: the moment to measure at (tests); the current time by default.
    """
    now = now or utcnow()
    d = models.Delivery
    count, oldest = session.execute(
        sa.select(sa.func.count(), sa.func.min(d.due_at)).where(
            d.status == "queued", d.due_at <= now
        )
    ).one()
    if not count or oldest is None:
        return OutboxState(due=0, oldest_due_seconds=None)
    return OutboxState(due=int(count), oldest_due_seconds=max(0.0, (now - oldest).total_seconds()))
