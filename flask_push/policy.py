"""A category's rules applied to a message's audience at send time: each user's
channels, quiet hours and the category's daily cap.

``plan()`` reads what it needs for the whole audience in a fixed number of queries
(the audience's preferences, and the cap's counts of the last 24 hours), however
many users it has, then decides per target in memory: send now, wait for the end
of the user's quiet hours, or record it ``suppressed`` (or ``expired``, when the
quiet hours outlast its time to live). The inbox channel decides who gets an
inbox item; quiet hours and the cap never hold an inbox item back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import outcomes
from .categories import Category
from .models import ACTIVE, Models
from .preferences import Stored, stored_for

if TYPE_CHECKING:
    from .sending import Target

#: how far back a category's daily cap counts
CAP_WINDOW = timedelta(hours=24)
#: rows per INSERT of the cap's ledger
INSERT_CHUNK = 5000


@dataclass(frozen=True)
class Decision:
    """What happens to one target: ``status`` ``queued`` (at ``due_at``), ``suppressed``
    or ``expired``, with the machine ``reason`` and the timeline it starts with."""

    status: str
    reason: str | None
    due_at: datetime
    events: list[dict[str, Any]]

    @property
    def tried(self) -> bool:
        """It will be sent (now or later)."""
        return self.status == "queued"


@dataclass
class Plan:
    """The outcome of the rules for one message."""

    #: target -> its decision; targets absent go now, as without a category
    decisions: dict[Target, Decision] = field(default_factory=dict)
    #: who gets an inbox item
    inbox_users: list[str] = field(default_factory=list)
    #: users the message pushes to, counted against the category's cap
    capped_users: list[str] = field(default_factory=list)

    def decide(self, target: Target) -> Decision | None:
        return self.decisions.get(target)


def channel_of(target: Target) -> str:
    """The channel a target is: browsers are ``web``, app installations ``mobile``."""
    return "web" if target.subscription_id is not None else "mobile"


def audience_users(models: Models, audience: Mapping[str, Any]) -> Sequence[str] | sa.Select[Any]:
    """The users ``audience`` may reach: its list, or a select of their ids (so that
    reading their rows is one query however many there are)."""
    if "users" in audience:
        return list(audience["users"])
    from .sending import filters

    sub_where, ins_where = filters(models, audience)
    selects = []
    sub, ins = models.Subscription, models.Installation
    if sub_where is not None:
        selects.append(sa.select(sub.user_id).where(sub.status == ACTIVE, *sub_where))
    if ins_where is not None:
        selects.append(sa.select(ins.user_id).where(ins.status == ACTIVE, *ins_where))
    return sa.select(sa.union(*selects).subquery().c[0])


def plan(
    session: Any,
    models: Models,
    category: Category,
    audience: Mapping[str, Any],
    targets: Sequence[Target],
    inbox_users: Iterable[str],
    *,
    due: datetime,
    expires_at: datetime,
    now: datetime,
    queued: list[dict[str, Any]],
) -> Plan:
    """Decide, for ``category``, what reaches each of ``targets`` and who of
    ``inbox_users`` gets an inbox item. ``queued`` is the timeline's first entry."""
    users = audience_users(models, audience)
    # a required category cannot be turned off and ignores quiet hours: no one's
    # choices matter, only the cap
    stored = {} if category.required else stored_for(session, models, users)
    sent_today = _sent_today(session, models, category, users, due) if category.max_per_day else {}
    result = Plan()
    nobody = Stored()
    pushed: set[str] = set()
    for target in targets:
        user = target.user_id
        mine = stored.get(user, nobody) if user is not None else nobody
        decision = _decide(category, target, mine, sent_today, due, expires_at, now, queued)
        if decision is not None:
            result.decisions[target] = decision
        if user is not None and (decision is None or decision.tried):
            pushed.add(user)
    result.inbox_users = [
        user
        for user in inbox_users
        if category.is_on("inbox", stored.get(user, nobody).choices.get(category.id))
    ]
    if category.max_per_day:
        result.capped_users = sorted(pushed)
    return result


def _decide(
    category: Category,
    target: Target,
    mine: Stored,
    sent_today: Mapping[str, int],
    due: datetime,
    expires_at: datetime,
    now: datetime,
    queued: list[dict[str, Any]],
) -> Decision | None:
    """One target's decision, or None when it goes as any message would."""
    if not category.is_on(channel_of(target), mine.choices.get(category.id)):
        return _suppressed("opted_out", due, now)
    cap = category.max_per_day
    if cap is not None and target.user_id is not None and sent_today.get(target.user_id, 0) >= cap:
        return _suppressed("frequency_cap", due, now)
    if category.required or mine.quiet_hours is None:
        return None
    end = mine.quiet_hours.ends_after(due)
    if end is None:
        return None
    deferred = outcomes.event("deferred", now, outcomes.detail("quiet_hours", next=end))
    if end >= expires_at:
        expired = outcomes.event(
            "expired", now, outcomes.detail("quiet_hours_expired", at=expires_at, next=end)
        )
        return Decision("expired", "quiet_hours_expired", due, [*queued, deferred, expired])
    return Decision("queued", "quiet_hours", end, [*queued, deferred])


def _suppressed(reason: str, due: datetime, now: datetime) -> Decision:
    return Decision(
        "suppressed", reason, due, [outcomes.event("suppressed", now, outcomes.detail(reason))]
    )


def _sent_today(
    session: Any,
    models: Models,
    category: Category,
    users: Sequence[str] | sa.Select[Any],
    due: datetime,
) -> dict[str, int]:
    """Pushes of ``category`` each of ``users`` had in the 24 hours before ``due``."""
    c = models.CappedSend
    query = (
        sa.select(c.user_id, sa.func.count())
        .where(c.category == category.id, c.sent_at > due - CAP_WINDOW, c.sent_at <= due)
        .group_by(c.user_id)
    )
    if isinstance(users, sa.Select):
        return {user: int(n) for user, n in session.execute(query.where(c.user_id.in_(users)))}
    counts: dict[str, int] = {}
    ids = list(users)
    for start in range(0, len(ids), INSERT_CHUNK):
        batch = ids[start : start + INSERT_CHUNK]
        counts.update(
            (user, int(n)) for user, n in session.execute(query.where(c.user_id.in_(batch)))
        )
    return counts


def record_capped(
    session: Any,
    models: Models,
    category: Category,
    message_id: str,
    plan: Plan,
    *,
    due: datetime,
    now: datetime,
) -> None:
    """Count this message against the cap of each user it pushes to, and drop the
    rows no cap looks at any more."""
    if not plan.capped_users:
        return
    c = models.CappedSend
    session.execute(sa.delete(c).where(c.category == category.id, c.sent_at <= now - CAP_WINDOW))
    rows = (
        {"category": category.id, "user_id": user, "message_id": message_id, "sent_at": due}
        for user in plan.capped_users
    )
    while chunk := list(itertools.islice(rows, INSERT_CHUNK)):
        session.execute(sa.insert(c.__table__), chunk)
