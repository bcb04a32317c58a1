"""The clock a dispatcher sets leases and due times by: the database's.

Workers on several hosts take turns on the same rows by ``lease_until``: a worker
holds a delivery until then, and any other takes it up after. Set by each host's
own clock, a worker whose clock was a lease behind the others' wrote leases that
had already run out for them, and they sent its deliveries a second time while
its own were on the wire; one whose clock was ahead stranded what it held for as
long. On PostgreSQL a claim goes by the database's clock (``now()``) and returns
it; the renewals and outcomes that follow carry it on with the monotonic clock,
while this host's clock is more than :data:`TOLERANCE` off it. Every worker then
goes by the same time, and a jump of this host's clock between two claims changes
nothing. SQLite's database is a file on this host: its clock is this one's, which
every process here shares.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

from .models import utcnow

logger = logging.getLogger("flask_push")

#: seconds this host's clock may be off the database's before a dispatcher goes by
#: the database's instead (and says so)
TOLERANCE = 2.0
_TOLERANCE = timedelta(seconds=TOLERANCE)


class DatabaseClock:
    """``now()``: the database's time as last :meth:`observe`\\ d, carried on by the
    monotonic clock, or this host's clock while it agrees with that (and before
    any observation, as on SQLite)."""

    def __init__(self) -> None:
        #: the database's time and time.monotonic() at the same moment, once seen
        self._anchor: tuple[datetime, float] | None = None
        #: how far off this host's clock was when last said (seconds, + ahead)
        self._said = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        ours = utcnow()
        anchor = self._anchor
        if anchor is None:
            return ours
        at, then = anchor
        theirs = at + timedelta(seconds=time.monotonic() - then)
        # Within the tolerance this host's clock is the database's, and its own
        # reading is kept: it agrees to the microsecond with the other processes
        # here, where one carried on from a statement's time would not.
        return ours if abs(ours - theirs) < _TOLERANCE else theirs

    def observe(self, theirs: datetime, at: float) -> None:
        """The database's clock said ``theirs`` at ``at`` (time.monotonic())."""
        ours = utcnow() - timedelta(seconds=time.monotonic() - at)
        theirs = theirs.astimezone(timezone.utc)
        self._anchor = (theirs, at)
        self._say((ours - theirs).total_seconds())

    def _say(self, off: float) -> None:
        """Warn once per change that this host's clock is off: this worker goes by
        the database's, but the web processes on this host write due times and read
        leases by theirs."""
        with self._lock:
            if abs(off) < TOLERANCE:
                if self._said:
                    logger.warning("flask-push: this host's clock agrees with the database's again")
                self._said = 0.0
                return
            if abs(off - self._said) < TOLERANCE:
                return
            self._said = off
        how = f"{abs(off):.0f} s {'ahead of' if off > 0 else 'behind'}"
        logger.warning(
            "flask-push: this host's clock is %s the database's; this worker sets its "
            "leases and due times by the database's clock, but other processes on this "
            "host go by theirs: set the host's clock right (NTP)",
            how,
        )
