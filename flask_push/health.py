"""``GET <prefix>/health``: can this process serve? For load balancers and probes.

Fast by design: one index range query on the outbox (which also proves the
database answers) and a backplane ping with a short timeout
(:data:`~flask_push.realtime.backplane.PING_TIMEOUT`). Never a scan of a large table.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa

from . import database
from .errors import BackplaneError
from .outbox_state import OutboxState
from .realtime.backplane import BackplaneUnreachable
from .schemas.operations import Health, OutboxHealth

if TYPE_CHECKING:
    from .extension import Push, PushState

logger = logging.getLogger("flask_push")


def read_outbox(push: Push) -> OutboxState:
    """The outbox's state, for a probe or a scrape whose session is its own.

    A connection the server ended since the pool last used it (PostgreSQL restarted,
    a failover, a pooler's idle timeout) fails its first statement, though the
    database answers by now: the read is tried once more, on a fresh connection, as
    the engine's ``pool_pre_ping`` would, so a probe does not report an outage that
    is over.
    """
    try:
        return push.outbox_state()
    except sa.exc.DBAPIError as err:
        if not err.connection_invalidated:
            raise
        push.db.session.rollback()
        return push.outbox_state()


def check(state: PushState) -> Health:
    """The health of the current app, read now (needs its app context)."""
    push = state.push
    problems: list[str] = []
    outbox = None
    try:
        found = read_outbox(push)
        outbox = OutboxHealth(due=found.due, oldest_due_seconds=found.oldest_due_seconds)
    except Exception as err:  # noqa: BLE001 - any failure means "down"
        push.db.session.rollback()
        # The log has the driver's words and what to do; the answer, read by
        # anyone, does not.
        missing = database.missing_tables(push)
        if missing:
            logger.error("flask-push: health check: %s", database.tables_missing_message(missing))
            which = "out of date" if database.out_of_date(missing) else "missing"
            problems.append(
                f"The database answered, but flask-push's tables are {which}: the log "
                "says which, and the command that makes them."
            )
        else:
            logger.warning("flask-push: health check: the database did not answer: %s", err)
            problems.append("The database did not answer.")
    backplane = state.get_realtime().backplane
    backplane_status: Literal["ok", "memory", "down"] = backplane.health
    try:
        backplane.ping()
    except BackplaneError as err:
        logger.warning("flask-push: health check: %s", err)
        backplane_status = "down"
        problems.append(
            "The live events' backplane (Redis) did not answer."
            if isinstance(err, BackplaneUnreachable)
            else "The live events' backplane (Redis) refused it: the log says why."
        )
    return Health(
        status="down" if problems else "ok",
        database="down" if outbox is None else "ok",
        backplane=backplane_status,
        outbox=outbox,
        problems=problems,
    )
