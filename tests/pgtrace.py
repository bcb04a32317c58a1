"""Counting what a block sends to the database: the statements SQLAlchemy executes,
and on PostgreSQL the round trips on the wire, from libpq's protocol trace of each
connection (psycopg's ``PGconn.trace``). Outside pipeline mode each exchange ends with
one ``ReadyForQuery``, so the trace shows BEGIN, COMMIT and the pool's ROLLBACK at
teardown, which statements do not. On SQLite, BEGIN and COMMIT are calls into the
library in this process, not round trips.

Used by ``test_subscription_cost.py`` and by ``bench/registration.py``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa


@dataclass
class Trips:
    """What a block sent to the database."""

    #: the first words of each statement SQLAlchemy executed
    statements: list[str] = field(default_factory=list)
    #: PostgreSQL only: the frontend messages of each round trip, such as
    #: ``["Parse", "Bind", "Describe", "Execute", "Sync"]``
    exchanges: list[list[str]] = field(default_factory=list)
    #: PostgreSQL only: the transaction status after each round trip (I, T or E)
    after: list[str] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        """Round trips but psycopg's one-off prepare, which it makes once per
        connection, on the 6th execution of a statement (``prepare_threshold``)."""
        return sum(1 for messages in self.exchanges if messages != ["Parse", "Sync"])


@contextmanager
def counted(engine: sa.Engine) -> Iterator[Trips]:
    """Count the statements, and on PostgreSQL the round trips, of the block."""
    trips = Trips()
    postgres = engine.dialect.name == "postgresql"
    log = tempfile.NamedTemporaryFile("w+", suffix=".trace", delete=False)  # noqa: SIM115
    traced: list[Any] = []

    def statement(conn: Any, cursor: Any, text: str, *args: Any) -> None:
        trips.statements.append(" ".join(text.split()[:3]))

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if postgres and dbapi_connection.pgconn not in traced:
            from psycopg import pq

            traced.append(dbapi_connection.pgconn)
            traced[-1].trace(log.fileno())
            traced[-1].set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    sa.event.listen(engine, "before_cursor_execute", statement)
    sa.event.listen(engine, "checkout", checkout)
    try:
        yield trips
    finally:
        sa.event.remove(engine, "before_cursor_execute", statement)
        sa.event.remove(engine, "checkout", checkout)
        for pgconn in traced:
            pgconn.untrace()  # flushes libpq's buffer into the file
        with log:
            log.seek(0)
            text = log.read()
        os.unlink(log.name)
        messages: list[str] = []
        # a line per message: direction, length, type, contents (which may go on over
        # more lines, as a statement's text does)
        for direction, kind, contents in MESSAGE.findall(text):
            if direction == "F":
                messages.append(kind)
            elif kind == "ReadyForQuery":
                trips.exchanges.append(messages)
                trips.after.append(contents.strip())
                messages = []


MESSAGE = re.compile(r"^([FB])\t\d+\t(\w+)(.*)$", re.MULTILINE)
