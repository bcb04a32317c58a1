"""Each user's preferences: the channels they chose per category, and their quiet
hours. ``push.get_preferences``/``push.set_preferences`` and ``/preferences`` are
these; :mod:`flask_push.policy` reads them for a whole audience at send time.

Only what a user chose is stored; a channel never chosen follows its category's
``default`` as configured now, so changing a default reaches every user who never
chose.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from . import database
from .categories import Category
from .models import Models, utcnow
from .schemas.fields import UserId
from .schemas.preferences import CategoryPreference, PreferencesUpdate, QuietHoursShown
from .schemas.preferences import Preferences as PreferencesShown

#: user ids per ``IN (...)`` when reading a listed audience's preferences
USERS_PER_QUERY = 5000

logger = logging.getLogger("flask_push")


@functools.lru_cache(maxsize=1024)
def zone_of(name: str) -> ZoneInfo | None:
    """The time zone ``name``, or None when this server's tz database lacks it.

    A stored zone was checked when the user chose it, but the database can change
    under it: a tzdata update removes a name (``US/Pacific-New`` went in 2020b), or
    the process that sends runs on a host or image with another (or no) tz database
    than the one that took the choice. One such user must not break a send to a
    whole audience; their quiet hours are left unapplied and said so, once per
    name and process here, and in the timeline of each push they let through.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning(
            "flask-push: the time zone %r of a user's quiet hours is not in this server's "
            "time zone database, so their quiet hours are not applied until they choose "
            "their zone again (or the database knows it: the tzdata package)",
            name,
        )
        return None


@dataclass(frozen=True)
class QuietHours:
    """A daily window of local times in ``time_zone``; ``start > end`` crosses midnight."""

    start: str
    end: str
    time_zone: str

    @property
    def known_zone(self) -> bool:
        """This server's tz database knows ``time_zone`` (see :func:`zone_of`)."""
        return zone_of(self.time_zone) is not None

    def ends_after(self, when: datetime) -> datetime | None:
        """The end of the window ``when`` falls in (in UTC), or None when it is
        outside, or when the zone is unknown here (:func:`zone_of`)."""
        zone = zone_of(self.time_zone)
        if zone is None:
            return None
        local = when.astimezone(zone)
        start, end, now = _time(self.start), _time(self.end), local.time()
        day: date | None = None
        if start < end:
            if start <= now < end:
                day = local.date()
        elif now >= start:
            day = local.date() + timedelta(days=1)
        elif now < end:
            day = local.date()
        if day is None:
            return self._on_since_before_fall_back(local, when)
        local_end = datetime.combine(day, end, tzinfo=zone)
        if _skipped(local_end):
            # An end that a spring night skips (02:30, when 02:00 becomes 03:00) is
            # the change itself: from then on the clock shows later than the end,
            # so "is it quiet?" already answers no.
            return _clock_change(local_end).astimezone(when.tzinfo)
        # An end in the hour an autumn night repeats is the one after ``when``: at
        # 02:15 in the second pass, 02:30 of the first pass is over.
        for fold in (0, 1):
            at = local_end.replace(fold=fold).astimezone(when.tzinfo)
            if at > when:
                return at
        return None  # unreachable: ``when`` is before the end of the window it is in

    def _on_since_before_fall_back(self, local: datetime, when: datetime) -> datetime | None:
        """The end of a window that began in the first pass of the hour an autumn
        night repeats, when ``local`` is in its second pass and the clock has gone
        back to before the window's start: quiet from 01:30 to 03:00 in New York,
        the window begins at 01:30 EDT, and at 01:59 EDT the clock goes back to
        01:00 EST. It is still on (until 03:00 EST), though the clock shows less
        than its start again; a push at 01:10 EST went out in the middle of it.
        None when ``local`` is not such a time."""
        before = _before_fall_back(local)
        if before is None or not local.time() < _time(self.start) <= before.time():
            return None
        end = self.ends_after(before)  # the first pass: no second look from there
        return end.astimezone(when.tzinfo) if end is not None and end > when else None

    def to_json(self) -> dict[str, str]:
        return {"start": self.start, "end": self.end, "timeZone": self.time_zone}


def _skipped(local: datetime) -> bool:
    """Does the clock of ``local``'s zone never show it (a spring night's gap)?"""
    shown = local.astimezone(timezone.utc).astimezone(local.tzinfo)
    return shown.replace(tzinfo=None) != local.replace(tzinfo=None)


def _clock_change(skipped: datetime) -> datetime:
    """The instant (UTC) the clock jumped over ``skipped``: between ``skipped`` read
    with the offset after the change (the clock still shows less) and with the one
    before (it shows more), found to the second."""
    zone, wall = skipped.tzinfo, skipped.replace(tzinfo=None)
    late = _first_second(
        int(skipped.replace(fold=1).timestamp()),
        int(skipped.replace(fold=0).timestamp()),
        lambda at: datetime.fromtimestamp(at, zone).replace(tzinfo=None) >= wall,
    )
    return datetime.fromtimestamp(late, timezone.utc)


def _before_fall_back(local: datetime) -> datetime | None:
    """The last second of the first pass (in ``local``'s zone), when ``local`` is in
    the second pass of the hour an autumn night repeats; else None."""
    first = local.replace(fold=0)
    if local.fold == 0 or first.utcoffset() == local.utcoffset():
        return None
    offset = local.utcoffset()
    change = _first_second(
        int(first.timestamp()),
        int(local.timestamp()) + 1,
        lambda at: datetime.fromtimestamp(at, local.tzinfo).utcoffset() == offset,
    )
    return datetime.fromtimestamp(change - 1, local.tzinfo)


def _first_second(early: int, late: int, holds: Callable[[int], bool]) -> int:
    """The first second after ``early`` (when ``holds`` is false) up to ``late``
    (when it is true) at which ``holds`` is true: the clock's change between them."""
    while late - early > 1:
        middle = (early + late) // 2
        if holds(middle):
            late = middle
        else:
            early = middle
    return late


def _time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class Preferences:
    """What reaches one user: per category, each channel the user may choose, on or
    off (``{"offers": {"web": True, "mobile": True, "inbox": True}}``), and the
    quiet hours, or None."""

    user_id: str
    categories: dict[str, dict[str, bool]]
    quiet_hours: QuietHours | None

    def to_json(self, categories: Mapping[str, Category]) -> dict[str, Any]:
        """As ``GET /preferences`` answers it."""
        return PreferencesShown(
            categories=[
                CategoryPreference.model_validate(
                    {
                        "id": c.id,
                        "label": c.label,
                        "required": c.required,
                        "channels": self.categories[c.id],
                    }
                )
                for c in categories.values()
            ],
            quiet_hours=(
                QuietHoursShown.model_validate(self.quiet_hours, from_attributes=True)
                if self.quiet_hours
                else None
            ),
        ).to_json()


@dataclass(frozen=True)
class Stored:
    """One user's stored choices, as the policy reads them."""

    choices: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)
    quiet_hours: QuietHours | None = None


def _stored(row: Any) -> Stored:
    quiet = None
    if row.quiet_start and row.quiet_end and row.time_zone:
        quiet = QuietHours(row.quiet_start, row.quiet_end, row.time_zone)
    return Stored(row.categories or {}, quiet)


def _shown(user_id: str, stored: Stored, categories: Mapping[str, Category]) -> Preferences:
    return Preferences(
        user_id=user_id,
        categories={
            c.id: {ch: c.is_on(ch, stored.choices.get(c.id)) for ch in c.channels}
            for c in categories.values()
        },
        quiet_hours=stored.quiet_hours,
    )


def get(
    session: Any, models: Models, categories: Mapping[str, Category], user_id: Any
) -> Preferences:
    """``user_id``'s preferences (the defaults when they never chose)."""
    owner = str(check_user(user_id))
    row = session.get(models.Preference, owner)
    return _shown(owner, _stored(row) if row is not None else Stored(), categories)


def check_user(user_id: Any) -> str:
    from .schemas.errors import check

    return str(check(UserId, user_id, "userId"))


def update(
    session: Any,
    models: Models,
    categories: Mapping[str, Category],
    user_id: Any,
    change: PreferencesUpdate,
    metrics: Any = None,
) -> Preferences:
    """Apply ``change`` to ``user_id``'s preferences and, in the same transaction, to
    their pushes that wait unsent (:func:`flask_push.policy.replan_waiting`), and
    commit; a refused change raises :class:`ValidationError` naming the field, and
    nothing is written. ``metrics``: where the pushes it ends are counted."""
    from . import policy

    owner = check_user(user_id)
    # checked against ``categories`` already (flask_push.schemas.preferences)
    given = change.categories or {}
    for attempt in range(2):
        try:
            # held before it is read: two changes at once apply one after the other
            row = database.held_row(
                session, models.Preference, owner, updated_at=models.Preference.updated_at
            )
            if row is None:
                row = models.Preference(user_id=owner, categories={})
                session.add(row)
            quiet_before = _stored(row).quiet_hours
            merged = {id: dict(choices) for id, choices in (row.categories or {}).items()}
            for id, choices in given.items():
                merged.setdefault(id, {}).update(choices)
            # a new dict, so that the JSON column sees the change
            row.categories = merged
            if change.quiet_hours is not None:
                row.quiet_start = change.quiet_hours.start
                row.quiet_end = change.quiet_hours.end
                row.time_zone = change.quiet_hours.time_zone
            elif change.removes_quiet_hours():
                row.quiet_start = row.quiet_end = row.time_zone = None
            row.updated_at = now = utcnow()
            mine = _stored(row)
            ended = policy.replan_waiting(
                session,
                models,
                categories,
                owner,
                mine,
                now,
                quiet_changed=mine.quiet_hours != quiet_before,
            )
            database.commit_keeping(session, row)
        except sa.exc.IntegrityError:
            # another request created the row first: apply the change to it
            session.rollback()
            if attempt:
                raise
            continue
        except BaseException:
            session.rollback()
            raise
        break
    if metrics is not None:
        metrics.count(ended)
    return _shown(owner, _stored(row), categories)


# -- for the policy: many users at once ----------------------------------------------------


def stored_for(session: Any, models: Models, users: Iterable[str] | Any) -> dict[str, Stored]:
    """The stored preferences of ``users``: a list of ids, or a select of ids (one
    query however many); users without a row are left out."""
    p = models.Preference
    columns = (p.user_id, p.categories, p.quiet_start, p.quiet_end, p.time_zone)
    found: dict[str, Stored] = {}
    if isinstance(users, sa.Select):
        batches: Iterable[Any] = [users]
    else:
        ids = list(users)
        batches = [ids[i : i + USERS_PER_QUERY] for i in range(0, len(ids), USERS_PER_QUERY)]
    for batch in batches:
        for row in session.execute(sa.select(*columns).where(p.user_id.in_(batch))):
            found[row.user_id] = _stored(row)
    return found


def known(session: Any, models: Models, user_id: str) -> bool:
    """Does flask-push know ``user_id``: a browser, a device, an inbox item or a
    choice of theirs? (Each by its user id's index.)"""
    found = [
        sa.exists().where(model.user_id == user_id)
        for model in (
            models.Preference,
            models.Subscription,
            models.Installation,
            models.InboxItem,
        )
    ]
    return bool(session.scalar(sa.select(sa.or_(*found))))
