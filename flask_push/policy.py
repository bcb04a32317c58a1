"""A category's rules applied to a message's audience at send time: each user's
channels, quiet hours and the category's daily cap.

``plan()`` reads what it needs for the whole audience in a fixed number of queries
(the audience's preferences, and the cap's pushes a day either side of it), however
many users it has, then decides per target in memory: send now, wait for the end
of the user's quiet hours, or record it ``suppressed`` (or ``expired``, when the
quiet hours outlast its time to live). The inbox channel decides who gets an
inbox item; quiet hours and the cap never hold an inbox item back.

The worker that claims a push looks again (:func:`at_claim`), as do a retry
(:func:`quiet_retries`) and a change of the user's choices (:func:`replan_waiting`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from . import outcomes
from .categories import Category
from .models import ACTIVE, Models, recipient, unclaimed_update, utcnow
from .preferences import QuietHours, Stored, stored_for

if TYPE_CHECKING:
    from .sending import Target

#: how far back a category's daily cap counts
CAP_WINDOW = timedelta(hours=24)
#: rows per INSERT of the cap's ledger
INSERT_CHUNK = 5000
#: the ``error`` of a push whose user's quiet hours outlast its time to live
QUIET_HOURS_EXPIRED = "the user's quiet hours last past its time to live"


@dataclass(frozen=True)
class Decision:
    """What happens to one target: ``status`` ``queued`` (at ``due_at``), ``suppressed``
    or ``expired``, with the machine ``reason`` and the timeline it starts with."""

    status: str
    reason: str | None
    due_at: datetime
    events: list[dict[str, Any]]
    #: the delivery's ``error``: what went wrong, for a decision that ends it unsent
    error: str | None = None

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


def first_due(send_at: datetime | None, created_at: datetime) -> datetime:
    """When a message's pushes are first due: its ``send_at`` if that is later than
    when it was sent, else then. The cap's ledger counts it at this time, until an
    operator's retry pushes it again (:func:`counted_at`)."""
    return send_at if send_at is not None and send_at > created_at else created_at


def counted_at(message: Any) -> datetime:
    """When the daily cap's ledger counts ``message`` (a row with ``counted_at``,
    ``send_at`` and ``created_at``) for the users an operator's retry pushed it to:
    the time of the last retry, else its first due time."""
    return message.counted_at or first_due(message.send_at, message.created_at)


def counted_between(message: Any) -> tuple[datetime, datetime]:
    """The times the ledger's rows of ``message`` (as for :func:`counted_at`) are at:
    its first due time for the users no retry pushed it to, and each retry's time
    for those it did, which is later (a retry pushes at the first due time or
    now). A range of the ledger's index, where one time would miss the users whom
    the last retry did not push it to."""
    return first_due(message.send_at, message.created_at), counted_at(message)


#: a push channel as a sentence names it
CHANNEL_WORDS: Final[dict[str, str]] = {"web": "the web (browsers)", "mobile": "mobile (apps)"}


def channel_of(target: Target) -> str:
    """The channel a target is: browsers are ``web``, app installations ``mobile``."""
    return "web" if target.subscription_id is not None else "mobile"


def category_named(category: Category) -> str:
    """A category as the policy's sentences name it."""
    return f'the category "{category.label}"'


def opted_out_values(category: Category, channel: str) -> dict[str, str]:
    """The ``{category}`` and ``{channel}`` of the ``opted_out`` sentence."""
    return {"category": category_named(category), "channel": CHANNEL_WORDS[channel]}


@dataclass
class AtClaim:
    """What the users' choices, as they are when a worker claims their pushes, say
    of those pushes (:func:`at_claim`)."""

    #: delivery id -> the values of the ``opted_out`` sentence: its channel is off
    opted_out: dict[int, dict[str, str]] = field(default_factory=dict)
    #: delivery id -> the end (UTC) of the user's quiet hours it came in: it waits
    quiet: dict[int, datetime] = field(default_factory=dict)


def at_claim(
    session: Any,
    models: Models,
    categories: Mapping[str, Category],
    claimed: Iterable[tuple[int, str | None, str | None, bool, datetime]],
    now: datetime,
) -> AtClaim:
    """Of claimed pushes, ``(delivery id, category, whose target it is, to a
    browser?, when it came due)``, those whose user has their category turned off
    on that channel now, and of the others those whose user is in their quiet
    hours ``now`` and that came due before those end.

    A change of the user's choices ends or moves the pushes that wait
    (:func:`replan_waiting`), but not one a worker held then, nor one of a send
    still being written: this catches those before they go. And a push due before
    the user's quiet hours began that a worker reaches after (a fan-out's last
    pushes, a backlog, the workers down for a while) would wake them: it waits for
    the window's end, as it would have at send time. One query for them all (up to
    :data:`~flask_push.preferences.USERS_PER_QUERY` users), and none unless some
    are of a category a user may turn off (a required one ignores quiet hours)."""
    ruled = [
        (id, known, user, "web" if browser else "mobile", due)
        for id, category, user, browser, due in claimed
        if category is not None
        and (known := categories.get(category)) is not None
        and not known.required
        and user is not None
    ]
    found = AtClaim()
    if not ruled:
        return found
    stored = stored_for(session, models, sorted({user for _, _, user, _, _ in ruled}))
    nobody = Stored()
    # a user's browsers and phones come in one claim: their window is found once
    ends: dict[str, datetime | None] = {}
    for id, category, user, channel, due in ruled:
        mine = stored.get(user, nobody)
        if not category.is_on(channel, mine.choices.get(category.id)):
            found.opted_out[id] = opted_out_values(category, channel)
            continue
        if mine.quiet_hours is None:
            continue
        if user not in ends:
            # an unknown zone (see QuietHours.known_zone) holds nothing, as at send time
            ends[user] = mine.quiet_hours.ends_after(now)
        end = ends[user]
        # One due at the window's end or after (held to it at send time) goes, even
        # when this worker's clock, a little behind the database's that claimed it,
        # still reads the window: held again, it would be claimed again at once.
        if end is not None and due < end:
            found.quiet[id] = end
    return found


def own_reason(row: Any) -> str | None:
    """Why a push that waits for its own time (not a retry after an attempt) waits:
    ``operator_retry`` when an operator's retry was its last try, held since (for
    quiet hours, say), else None."""
    tries = (e for e in reversed(row.events or ()) if e.get("what") in ("retry", "attempt"))
    last = next(tries, None)
    return "operator_retry" if last is not None and last.get("operator") else None


def retry_then(
    reason: str | None, due_at: datetime, attempts: int, events: Sequence[Mapping[str, Any]] | None
) -> tuple[datetime, str] | None:
    """Of a push that waits (its ``reason``, ``due_at``, ``attempts`` and timeline; a
    claimed one's as they were before the claim): when it was due as a retry and
    why, kept by the ``deferred`` event of a hold for quiet hours
    (:func:`held_retry`); None when it was not a retry."""
    if reason == "quiet_hours":
        return held_retry(events)
    if attempts and reason in outcomes.RETRIES:
        return due_at, reason
    return None


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
    activity_id: str | None = None,
) -> Plan:
    """Decide, for ``category``, what reaches each of ``targets`` and who of
    ``inbox_users`` gets an inbox item. ``queued`` is the timeline's first entry;
    ``activity_id``, for a state of an activity (see :func:`_over_cap`)."""
    users = audience_users(models, audience)
    # a required category cannot be turned off and ignores quiet hours: no one's
    # choices matter, only the cap
    stored = {} if category.required else stored_for(session, models, users)
    capped: set[str] = set()
    if category.max_per_day:
        _hold_cap(session, models, category, now)
        capped = _over_cap(
            session,
            models,
            category,
            users,
            due,
            category.max_per_day,
            activity_id=activity_id,
            now=now,
        )
    result = Plan()
    nobody = Stored()
    pushed: set[str] = set()
    for target in targets:
        user = target.user_id
        mine = stored.get(user, nobody) if user is not None else nobody
        decision = _decide(category, target, mine, capped, due, expires_at, now, queued)
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
    capped: set[str],
    due: datetime,
    expires_at: datetime,
    now: datetime,
    queued: list[dict[str, Any]],
    going: str | None = None,
) -> Decision | None:
    """One target's decision, or None when it goes as any message would (a decision
    that lets it go says ``going`` as its reason)."""
    channel = channel_of(target)
    if not category.is_on(channel, mine.choices.get(category.id)):
        words = CHANNEL_WORDS[channel]
        return _suppressed("opted_out", due, now, category=category, channel=words)
    if target.user_id in capped:
        return _suppressed("frequency_cap", due, now, category=category, cap=category.max_per_day)
    if category.required or mine.quiet_hours is None:
        return None
    if not mine.quiet_hours.known_zone:
        # a zone the tz database lost since the user chose it: no window to hold the
        # push to, so it goes as without quiet hours, saying why in its timeline
        said = outcomes.QUIET_HOURS_UNKNOWN_ZONE.format(zone=mine.quiet_hours.time_zone)
        last = queued[-1]
        first = [
            *queued[:-1],
            {**last, "detail": " ".join(filter(None, [last.get("detail"), said]))},
        ]
        return Decision("queued", going, due, first)
    end = mine.quiet_hours.ends_after(due)
    if end is None:
        return None
    deferred = outcomes.event("deferred", now, outcomes.detail("quiet_hours", next=end))
    if end >= expires_at:
        expired = outcomes.event(
            "expired", now, outcomes.detail("quiet_hours_expired", at=expires_at, next=end)
        )
        return Decision(
            "expired",
            "quiet_hours_expired",
            due,
            [*queued, deferred, expired],
            error=QUIET_HOURS_EXPIRED,
        )
    return Decision("queued", "quiet_hours", end, [*queued, deferred])


def decide(
    category: Category,
    target: Target,
    mine: Stored,
    due: datetime,
    expires_at: datetime,
    now: datetime,
    timeline: list[dict[str, Any]],
    capped: Collection[str] = (),
) -> Decision | None:
    """One target's decision outside a send (an operator's retry): ``mine``, the
    user's choices as they are now, and their quiet hours; ``capped``: the users
    whose day under the daily cap is full when the retry pushes (:func:`retaken`).
    ``timeline``: the events it starts with."""
    return _decide(
        category, target, mine, set(capped), due, expires_at, now, timeline, going="operator_retry"
    )


def retaken(
    session: Any, models: Models, category: Category, message_id: str, due: datetime, now: datetime
) -> set[str]:
    """Before an operator's retry of what ``message_id`` (of ``category``, which has
    a cap) failed to push: the users of its failed deliveries whose day is full at
    ``due``, when the retry pushes. A message of days ago retried now is weighed
    against today's pushes, not those of its own day, and its own place in the
    ledger is left out: the retry moves it to its own time (:func:`recount_capped`).
    The cap is held until the retry commits."""
    if not category.max_per_day:
        return set()
    d = models.Delivery
    retried = (
        sa.select(d.user_id)
        .distinct()
        .where(d.message_id == message_id, d.status == "failed", d.user_id.is_not(None))
    )
    _hold_cap(session, models, category, now)
    cap = category.max_per_day
    return _over_cap(session, models, category, retried, due, cap, now=now, other_than=message_id)


def recount_capped(
    session: Any,
    models: Models,
    category: Category,
    message: Any,
    due: datetime,
    users: Collection[str],
) -> None:
    """An operator's retry of ``message`` (a row with ``id``, ``send_at``,
    ``created_at`` and ``counted_at``) pushes to ``users`` at ``due``: the ledger
    counts it for them then, not at the time it had for them until now, and the
    message keeps the new time (``counted_at``): :func:`counted_between` reads it."""
    if not users:
        return
    c, m = models.CappedSend, models.Message
    message_id = message.id
    ids = sorted(users)
    for start in range(0, len(ids), INSERT_CHUNK):
        session.execute(
            sa.delete(c).where(
                c.category == category.id,
                c.sent_at.between(*counted_between(message)),
                c.message_id == message_id,
                c.user_id.in_(ids[start : start + INSERT_CHUNK]),
            ),
            execution_options={"synchronize_session": False},
        )
    record_capped(session, models, category, message_id, Plan(capped_users=ids), due=due)
    session.execute(
        sa.update(m)
        .where(m.id == message_id)
        .values(counted_at=due)
        .execution_options(synchronize_session=False)
    )


def _suppressed(
    reason: str, due: datetime, now: datetime, *, category: Category, **values: Any
) -> Decision:
    # named only for a target held back: _decide runs for every target of a send
    named = category_named(category)
    said = outcomes.event("suppressed", now, outcomes.detail(reason, category=named, **values))
    return Decision("suppressed", reason, due, [said])


def _hold_cap(session: Any, models: Models, category: Category, now: datetime) -> None:
    """Hold ``category``'s cap until the send commits, so that two sends at once
    count each other: on PostgreSQL a transaction's advisory lock, elsewhere the
    DELETE of the rows no cap looks at any more, which takes SQLite's write lock
    (later reads in the transaction then see every send committed before it)."""
    c = models.CappedSend
    if session.get_bind(mapper=c).dialect.name == "postgresql":
        # the table's full name too: apps in other schemas of the database keep apart
        key = f"flask-push cap {c.__table__.fullname} {category.id}".encode()
        lock = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big", signed=True)
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(lock)))
    session.execute(sa.delete(c).where(c.category == category.id, c.sent_at <= now - CAP_WINDOW))


def _over_cap(
    session: Any,
    models: Models,
    category: Category,
    users: Sequence[str] | sa.Select[Any],
    due: datetime,
    cap: int,
    *,
    activity_id: str | None = None,
    other_than: str | None = None,
    now: datetime,
) -> set[str]:
    """The users of ``users`` whom one more push of ``category`` at ``due`` would
    give more than ``cap`` in the 24 hours before a push: this one, or one already
    queued for later (a scheduled send). The ledger's rows of message
    ``other_than`` are not counted (a retry of it moves them).

    A new state of activity ``activity_id`` replaces its older states that are
    still waiting: those do not count, as this one supersedes them (or, held back
    itself, leaves them to go).
    """
    c = models.CappedSend
    where = [c.category == category.id, c.sent_at > due - CAP_WINDOW, c.sent_at < due + CAP_WINDOW]
    if other_than is not None:
        where.append(c.message_id != other_than)
    if activity_id is not None:
        m = models.Message
        older = sa.select(m.id).where(m.activity_id == activity_id)
        where.append(
            sa.or_(c.message_id.not_in(older), _reached(models, c.message_id, c.user_id, now))
        )
    # Only a user with ``cap`` pushes within a day either side can go over: read
    # the times of those alone, not of everyone a broadcast reaches.
    crowded = sa.select(c.user_id).where(*where).group_by(c.user_id)
    crowded = crowded.having(sa.func.count() >= cap)
    if isinstance(users, sa.Select):
        batches = [crowded.where(c.user_id.in_(users))]
    else:
        ids = list(users)
        batches = [
            crowded.where(c.user_id.in_(ids[start : start + INSERT_CHUNK]))
            for start in range(0, len(ids), INSERT_CHUNK)
        ]
    candidates = [user for batch in batches for user in session.scalars(batch)]
    times: dict[str, list[datetime]] = {}
    for start in range(0, len(candidates), INSERT_CHUNK):
        batch = candidates[start : start + INSERT_CHUNK]
        for user, at in session.execute(
            sa.select(c.user_id, c.sent_at).where(*where, c.user_id.in_(batch))
        ):
            times.setdefault(user, []).append(at)
    return {user for user, pushed in times.items() if _breaks(pushed, due, cap)}


def _reached(models: Models, message_id: Any, user_id: Any, now: datetime) -> Any:
    """SQL: some delivery of ``message_id`` to a target of ``user_id`` was pushed or
    is on the network now (a worker holds it)."""
    d = models.Delivery
    counted = sa.or_(
        sa.and_(d.status.in_(PUSHED), _pushed(d)),
        sa.and_(d.status == "queued", d.lease_until > now),
    )
    return _delivered(models, message_id, user_id, counted)


def _pushed(d: Any) -> Any:
    """SQL: the delivery's outcome, if any, was not decided before it was pushed."""
    return sa.or_(d.reason.is_(None), d.reason.not_in(outcomes.NEVER_PUSHED))


def _delivered(models: Models, message_id: Any, user_id: Any, counted: Any) -> Any:
    """SQL: some delivery of ``message_id`` to a browser or device of ``user_id`` is
    as ``counted`` says. Found through the user's targets (their indexes keep it
    cheap for a broadcast's every user), and not one sent to someone else before
    the target became theirs."""
    d, s, i = models.Delivery, models.Subscription, models.Installation
    theirs = sa.or_(d.user_id.is_(None), d.user_id == user_id)
    return sa.or_(
        *(
            sa.select(d.id)
            .join(target, column == target.id)
            .where(d.message_id == message_id, target.user_id == user_id, theirs, counted)
            .exists()
            for target, column in ((s, d.subscription_id), (i, d.installation_id))
        )
    )


def _breaks(pushed: Sequence[datetime], due: datetime, cap: int) -> bool:
    """Would a push at ``due`` make more than ``cap`` of ``pushed`` and it fall in
    the 24 hours up to itself or up to any later one of ``pushed``?"""
    ends = [due, *(at for at in pushed if at > due)]
    return any(1 + sum(end - CAP_WINDOW < at <= end for at in pushed) > cap for end in ends)


def recipients(
    session: Any, models: Models, delivery_ids: Collection[int]
) -> tuple[set[str], set[str]]:
    """The messages of ``delivery_ids`` and the users they were sent to
    (:func:`~flask_push.models.recipient`)."""
    d, s, i = models.Delivery, models.Subscription, models.Installation
    rows = session.execute(
        sa.select(d.message_id, recipient(models))
        .outerjoin(s, s.id == d.subscription_id)
        .outerjoin(i, i.id == d.installation_id)
        .where(d.id.in_(sorted(delivery_ids)))
    ).all()
    return {message for message, _ in rows}, {user for _, user in rows if user is not None}


def record_capped(
    session: Any,
    models: Models,
    category: Category,
    message_id: str,
    plan: Plan,
    *,
    due: datetime,
) -> None:
    """Count this message against the cap of each user it pushes to."""
    if not plan.capped_users:
        return
    c = models.CappedSend
    rows = (
        {"category": category.id, "user_id": user, "message_id": message_id, "sent_at": due}
        for user in plan.capped_users
    )
    while chunk := list(itertools.islice(rows, INSERT_CHUNK)):
        session.execute(sa.insert(c.__table__), chunk)


#: what a delivery is in once it was pushed (unless its reason is one of
#: :data:`~flask_push.outcomes.NEVER_PUSHED`)
PUSHED = ("sent", "failed", "gone")
#: what it is in once it was pushed or will be: it counts against the cap
COUNTED = ("queued", *PUSHED)


def release_capped(
    session: Any,
    models: Models,
    categories: Mapping[str, Category],
    message_ids: Iterable[str],
    *,
    cancelling: bool = False,
    users: Collection[str] | None = None,
) -> None:
    """Stop counting ``message_ids`` against the daily cap of the users they will
    now never push to: none of their deliveries of it was pushed or will be (all
    cancelled, superseded, expired, or ended before a push; no commit). With
    ``cancelling``, called before a cancel: the users kept are those with a
    delivery pushed or on the network now (a worker holds it: its outcome replaces
    the cancel, or, when the cancel wins over it, the worker gives their place
    back). ``users``: look at these users only, not at every user the messages were
    counted for (a batch of outcomes knows whose they were).
    Messages of a category without a cap are left alone."""
    if users is not None and not users:
        return
    ids = sorted(set(message_ids))
    if not ids:
        return
    m, c, d = models.Message, models.CappedSend, models.Delivery
    now = utcnow()
    rows = session.execute(
        sa.select(m.id, m.category, m.send_at, m.created_at, m.counted_at).where(
            m.id.in_(ids), m.category.is_not(None)
        )
    )
    for row in rows:
        message_id, category = row.id, row.category
        known = categories.get(category)
        if known is None or not known.max_per_day:
            continue
        # the times its rows are counted at: with the category, a range of the
        # ledger's index instead of all of the category's rows
        counted = counted_between(row)
        still = (
            _reached(models, message_id, c.user_id, now)
            if cancelling
            else _delivered(
                models, message_id, c.user_id, sa.and_(d.status.in_(COUNTED), _pushed(d))
            )
        )
        whose = [c.user_id.in_(sorted(users))] if users is not None else []
        session.execute(
            sa.delete(c).where(
                c.category == category,
                c.sent_at.between(*counted),
                c.message_id == message_id,
                *whose,
                ~still,
            ),
            execution_options={"synchronize_session": False},
        )


# -- a retry of a push the service did not take ------------------------------------------


def quiet_retries(
    session: Any,
    models: Models,
    categories: Mapping[str, Category],
    due: Mapping[int, datetime],
) -> dict[int, datetime]:
    """Of the retries about to be scheduled, ``{delivery id: when it is due}``, those
    whose time falls in their user's quiet hours, with the end of that window (UTC):
    a retry waits for it, as the push would have waited at send time. Only pushes of
    a category that is not required. One query per :data:`INSERT_CHUNK` retries, and
    none for an app whose categories are all required (or that has none)."""
    ruled = [id for id, category in categories.items() if not category.required]
    if not due or not ruled:
        return {}
    d, m, s, i, p = (
        models.Delivery,
        models.Message,
        models.Subscription,
        models.Installation,
        models.Preference,
    )
    ids = sorted(due)
    ends: dict[int, datetime] = {}
    for start in range(0, len(ids), INSERT_CHUNK):
        rows = session.execute(
            sa.select(d.id, p.quiet_start, p.quiet_end, p.time_zone)
            .select_from(d)
            .join(m, m.id == d.message_id)
            .outerjoin(s, s.id == d.subscription_id)
            .outerjoin(i, i.id == d.installation_id)
            # whom it was for (a target's owner now, for a row that kept no user)
            .join(p, p.user_id == recipient(models))
            .where(
                d.id.in_(ids[start : start + INSERT_CHUNK]),
                m.category.in_(ruled),
                p.quiet_start.is_not(None),
                p.quiet_end.is_not(None),
                p.time_zone.is_not(None),
            )
        )
        for id, quiet_start, quiet_end, zone in rows:
            # an unknown zone (see QuietHours.known_zone) holds nothing, as at send time
            end = QuietHours(quiet_start, quiet_end, zone).ends_after(due[id])
            if end is not None:
                ends[id] = end
    return ends


def held_retry(events: Sequence[Mapping[str, Any]] | None) -> tuple[datetime, str] | None:
    """Of a push held for quiet hours: when it was due as a retry before they held
    it, and the reason it had then, as the ``deferred`` event that holds it keeps
    them; None when it was not a retry then (held at send time, or an operator's
    retry)."""
    for event in reversed(events or ()):
        if event.get("what") == "deferred":
            if not event.get("retryAt"):
                return None
            return datetime.fromisoformat(event["retryAt"]), str(event.get("retryReason"))
    return None


# -- a user's choices changed: their pushes that wait ------------------------------------


def replan_waiting(
    session: Any,
    models: Models,
    categories: Mapping[str, Category],
    user_id: str,
    mine: Stored,
    now: datetime,
    *,
    quiet_changed: bool,
) -> Counter[tuple[str, str]]:
    """Apply ``user_id``'s choices as they are now (``mine``) to their pushes of a
    category that still wait unsent (scheduled, held for quiet hours, or not claimed
    yet), in the caller's transaction: a channel turned off ends them ``suppressed``
    (``opted_out``); quiet hours set, changed or removed (``quiet_changed``) move a
    push that waits for its time or for the old window's end to the new window's end,
    or to its own time (``expired`` when that is past its time to live); one due
    already stays due. A retry waiting for the time its push service asked for moves
    alike, to the end of a window that time falls in, never to before it. A push a
    worker holds is on its way and left alone. Returns how many ended, by provider
    kind and status, for the metrics.

    The choices are the user's consent: a push queued before they turned a category
    off is not theirs to get after. (One held back when it was queued stays so: a
    category turned on later does not bring back what it missed.)"""
    ruled = [id for id, category in categories.items() if not category.required]
    if not ruled:
        return Counter()
    d, m, s, i = models.Delivery, models.Message, models.Subscription, models.Installation
    columns = (
        d.id,
        d.kind,
        d.subscription_id,
        d.due_at,
        d.expires_at,
        d.reason,
        d.attempts,
        d.events,
        d.error,
        d.message_id,
        m.category,
        m.send_at,
        m.created_at,
    )
    waiting = (
        d.status == "queued",
        sa.or_(d.lease_until.is_(None), d.lease_until < now),
        # the push was for this user (not a target's last owner's)
        sa.or_(d.user_id == user_id, d.user_id.is_(None)),
        m.category.in_(ruled),
    )
    # along each target's index: the user's browsers, and their devices
    browsers = list(session.scalars(sa.select(s.id).where(s.user_id == user_id)))
    devices = list(session.scalars(sa.select(i.id).where(i.user_id == user_id)))
    if not browsers and not devices:
        return Counter()
    theirs = sa.or_(
        d.subscription_id.in_(browsers) if browsers else sa.false(),
        d.installation_id.in_(devices) if devices else sa.false(),
    )
    rows = session.execute(
        sa.select(*columns)
        .join(m, m.id == d.message_id)
        .where(theirs, *waiting)
        # locked until the caller's commit (PostgreSQL), in the order of their ids,
        # the order every other writer of these rows takes: a worker's claim, which
        # skips locked rows, cannot take one between this read and the write, which
        # would count it as ended here while the worker sends it
        .order_by(d.id)
        .with_for_update(of=d)
    ).all()
    changes: list[dict[str, Any]] = []
    ended: Counter[tuple[str, str]] = Counter()
    over: set[str] = set()  # messages it now never pushes to the user
    for row in rows:
        change = _replanned(categories[row.category], row, mine, now, quiet_changed)
        if change is None:
            continue
        changes.append(change)
        if change["b_status"] != "queued":
            ended[row.kind, change["b_status"]] += 1
            over.add(row.message_id)
    if not changes:
        return ended
    table = d.__table__
    session.execute(
        unclaimed_update(table, now).values(
            status=sa.bindparam("b_status"),
            reason=sa.bindparam("b_reason"),
            due_at=sa.bindparam("b_due_at"),
            error=sa.bindparam("b_error"),
            updated_at=now,
            events=sa.bindparam("b_events", type_=table.c.events.type),
        ),
        changes,
    )
    release_capped(session, models, categories, over, users=[user_id])
    return ended


def _replanned(
    category: Category, row: Any, mine: Stored, now: datetime, quiet_changed: bool
) -> dict[str, Any] | None:
    """What becomes of one waiting push under the user's choices ``mine``: the
    UPDATE's parameters, or None when nothing changes."""
    keep = {
        "b_id": row.id,
        "b_status": "queued",
        "b_reason": row.reason,
        "b_due_at": row.due_at,
        "b_error": None,
    }
    channel = "web" if row.subscription_id is not None else "mobile"
    if not category.is_on(channel, mine.choices.get(category.id)):
        said = outcomes.event(
            "suppressed", now, outcomes.detail("opted_out", **opted_out_values(category, channel))
        )
        return {
            **keep,
            "b_status": "suppressed",
            "b_reason": "opted_out",
            "b_events": [*(row.events or ()), said],
        }
    if not quiet_changed:
        return None
    # only what waits for its own time (an operator's retry of it too), for quiet
    # hours to end, or for the time its push service asked for (a retry after an
    # attempt): quiet hours may hold a retry later, never bring it sooner
    waits_for_its_time = row.attempts == 0 and row.reason in (None, "operator_retry")
    retry = retry_then(row.reason, row.due_at, row.attempts, row.events)
    if retry is None and row.reason != "quiet_hours" and not waits_for_its_time:
        return None
    own_time = max(retry[0] if retry else first_due(row.send_at, row.created_at), now)
    end = mine.quiet_hours.ends_after(own_time) if mine.quiet_hours is not None else None
    due = end or own_time
    if end is not None and end >= row.expires_at:
        said = outcomes.event(
            "expired", now, outcomes.detail("quiet_hours_expired", at=row.expires_at, next=end)
        )
        return {
            **keep,
            "b_status": "expired",
            "b_reason": "quiet_hours_expired",
            "b_error": QUIET_HOURS_EXPIRED,
            "b_events": [*(row.events or ()), said],
        }
    if due == row.due_at or (end is None and (row.reason != "quiet_hours" or row.due_at <= now)):
        return None  # its time stands, or it is due already: not in a window
    moved = outcomes.QUIET_HOURS_CHANGED.format(at=outcomes.clock(now), next=outcomes.clock(due))
    held = {}
    if retry is not None and end is not None:
        held = {"retryAt": retry[0].isoformat(), "retryReason": retry[1]}
    said = outcomes.event("deferred", now, moved, **held)
    return {
        **keep,
        "b_reason": "quiet_hours" if end is not None else (retry[1] if retry else own_reason(row)),
        # a retry's: what its service answered
        "b_error": row.error,
        "b_due_at": due,
        "b_events": [*(row.events or ()), said],
    }
