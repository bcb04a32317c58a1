"""What the console's pages read: a bounded number of grouped queries per page,
never one per row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .. import outcomes, targets
from ..labels import label_of
from ..models import Models, utcnow
from ..providers import kinds
from ..schemas.message import DELIVERY_STATUSES

#: the overview's window
WINDOW = timedelta(hours=24)
#: statuses shown even at zero: what an operator looks for first
ALWAYS_SHOWN = frozenset({"queued", "sent", "failed", "gone"})
#: dead targets listed on the overview (all are counted)
DEAD_SHOWN = 10


@dataclass(frozen=True)
class Bar:
    """One provider's deliveries in the window, per status, drawn as a stacked bar."""

    provider: str
    counts: Mapping[str, int]
    total: int
    #: (status, x, width) of each segment, in a 0..1000 wide box, largest provider = 1000
    segments: tuple[tuple[str, int, int], ...]


def statuses(found: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The statuses worth a column: :data:`ALWAYS_SHOWN` and any other that has
    deliveries, in the vocabulary's order, then any others found."""
    present = {s for counts in found.values() for s, n in counts.items() if n}
    known = [s for s in DELIVERY_STATUSES if s in ALWAYS_SHOWN or s in present]
    return [*known, *sorted(present - set(DELIVERY_STATUSES))]


def deliveries_by_provider(session: Any, models: Models, now: datetime | None = None) -> list[Bar]:
    """Deliveries of the messages due in the last 24 hours (sent then, or scheduled
    for then), per provider and status: a message scheduled yesterday that went out a
    minute ago is in, one scheduled for tomorrow is not yet.

    A message is due at its ``send_at`` when that is later than its ``created_at``,
    else at its ``created_at`` (:func:`flask_push.policy.first_due`). One grouped
    query that walks the messages' ``created_at`` and ``send_at`` indexes (one range
    each) and each one's deliveries by the ``(message_id, status)`` index.
    """
    until = now or utcnow()
    since = until - WINDOW
    m, d = models.Message, models.Delivery
    scheduled = m.send_at > m.created_at
    due_in_window = sa.or_(
        # sent as it was created (or with a send_at already past)
        sa.and_(
            m.created_at >= since,
            m.created_at <= until,
            sa.or_(m.send_at.is_(None), sa.not_(scheduled)),
        ),
        # scheduled for a time in the window
        sa.and_(m.send_at >= since, m.send_at <= until, scheduled),
    )
    rows = session.execute(
        sa.select(d.kind, d.status, sa.func.count())
        .join(m, m.id == d.message_id)
        .where(due_in_window)
        .group_by(d.kind, d.status)
    ).all()
    found: dict[str, dict[str, int]] = {kind: {} for kind in kinds()}
    for kind, status, count in rows:
        found.setdefault(kind, {})[status] = int(count)
    order = statuses(found)
    largest = max((sum(c.values()) for c in found.values()), default=0) or 1
    bars = []
    for kind, counts in found.items():
        total = sum(counts.values())
        segments, x = [], 0
        for status in order:
            if counts.get(status):
                width = max(2, round(1000 * counts[status] / largest))
                segments.append((status, x, width))
                x += width
        bars.append(Bar(kind, counts, total, tuple(segments)))
    return bars


@dataclass(frozen=True)
class DeadTarget:
    #: the provider kind (webpush, fcm, apns), as the chart above it and the users
    #: page name it
    kind: str
    id: str
    #: "Chrome on Android", "iOS app 2.4.1" (:func:`~flask_push.labels.label_of`)
    label: str
    user_id: str | None
    dead_at: datetime
    #: why it is dead, as a sentence: the users page's ``deadDetail``
    detail: str


def dead_today(
    session: Any, models: Models, now: datetime | None = None
) -> tuple[int, list[DeadTarget]]:
    """Subscriptions and installations found dead in the last 24 hours: how many, and
    the latest :data:`DEAD_SHOWN` of them (two queries per table)."""
    since = (now or utcnow()) - WINDOW
    total = 0
    shown: list[DeadTarget] = []
    for model in (models.Subscription, models.Installation):
        recent = model.dead_at >= since
        total += session.scalar(sa.select(sa.func.count()).select_from(model).where(recent)) or 0
        rows = session.scalars(
            sa.select(model).where(recent).order_by(model.dead_at.desc()).limit(DEAD_SHOWN)
        )
        shown += [
            DeadTarget(
                targets.kind_of(row)[0],
                row.id,
                label_of(row),
                row.user_id,
                row.dead_at,
                targets.dead_detail(row),
            )
            for row in rows
        ]
    shown.sort(key=lambda target: target.dead_at, reverse=True)
    return total, shown[:DEAD_SHOWN]


def held_back(session: Any, models: Models, message_id: str, recipient_count: int) -> int:
    """How many of a message's targets the users' choices or a daily cap held back
    when it was sent (``suppressed``, or ``expired`` as quiet hours outlast its time
    to live): its deliveries beyond its ``recipient_count``, which counts the others
    (the send writes one delivery for each target). A push the message counted that
    the policy ended later (its user turned the category off before it went out, or
    an operator's retry found it so) is one of those it counted, not held back."""
    d = models.Delivery
    written = session.scalar(
        sa.select(sa.func.count()).select_from(d).where(d.message_id == message_id)
    )
    return max(int(written or 0) - recipient_count, 0)


@dataclass(frozen=True)
class RetryOutlook:
    """What "Retry failed" can do for a message's ``failed`` deliveries: how many a
    retry may help, and the others, which fail the same way as they are
    (:data:`~flask_push.outcomes.RETRY_FUTILE`), as (count, what they are) pairs."""

    failed: int
    helps: int
    futile: tuple[tuple[int, str], ...]
    #: of the futile, those past their time to live: the retry leaves them failed
    past_ttl: int = 0

    @property
    def futile_count(self) -> int:
        return self.failed - self.helps


def retry_outlook(session: Any, models: Models, message_id: str) -> RetryOutlook:
    """Its message's ``failed`` deliveries, by whether a retry can help them (one
    grouped query on the ``(message_id, status)`` index). ``push.retry_failed`` sends
    all of them again but those past their time to live: this only tells the
    operator what to expect."""
    d = models.Delivery
    past = d.expires_at <= utcnow()
    rows = session.execute(
        sa.select(d.reason, past, sa.func.count())
        .where(d.message_id == message_id, d.status == "failed")
        .group_by(d.reason, past)
    ).all()
    by_reason: dict[str | None, int] = {}
    past_ttl = 0
    for reason, expired, count in rows:
        if expired:
            past_ttl += int(count)
        else:
            by_reason[reason] = by_reason.get(reason, 0) + int(count)
    futile = tuple(
        (by_reason[reason], words)
        for reason, words in outcomes.RETRY_FUTILE.items()
        if by_reason.get(reason)
    ) + (((past_ttl, "past their time to live"),) if past_ttl else ())
    failed = sum(by_reason.values()) + past_ttl
    return RetryOutlook(failed, failed - sum(n for n, _ in futile), futile, past_ttl)


def messages_page(session: Any, models: Models, skip: int, take: int) -> tuple[int, list[Any]]:
    """The total and one page of messages, newest first."""
    m = models.Message
    total = session.scalar(sa.select(sa.func.count()).select_from(m)) or 0
    page = list(
        session.scalars(
            sa.select(m).order_by(m.created_at.desc(), m.id.desc()).offset(skip).limit(take)
        )
    )
    return int(total), page


#: users listed on the users page to pick from
RECENT_USERS = 10


def recent_users(session: Any, models: Models) -> list[str]:
    """The users whose browsers or devices registered last, newest first, at most
    :data:`RECENT_USERS`: each user once, by their newest registration in either
    table. Grouped in the database, since one user can own hundreds of devices (a
    fleet, a test account): a window of the newest rows could hold only them. The
    grouping reads every owned row of both tables (about 2 s for a million on
    PostgreSQL), which only the users page without an id asks for."""
    registered = sa.union_all(
        *(
            sa.select(model.user_id.label("user_id"), model.created_at.label("at")).where(
                model.user_id.is_not(None)
            )
            for model in (models.Subscription, models.Installation)
        )
    ).subquery()
    latest = sa.func.max(registered.c.at)
    return list(
        session.scalars(
            sa.select(registered.c.user_id)
            .group_by(registered.c.user_id)
            # the user id breaks a tie, so the list holds still between reloads
            .order_by(latest.desc(), registered.c.user_id)
            .limit(RECENT_USERS)
        )
    )
