"""Which of flask-push's Alembic revisions a database's ``push_*`` tables are at,
read from what each revision added: a table, a column, or an index on given columns.

Tables that ``db.create_all()`` made have no record in ``alembic_version``; to
adopt them, a host records the revision they match (``flask db stamp``). Recording
``flask_push@head`` for tables an older flask-push made leaves Alembic with nothing
to upgrade while they stay old, so the sentences that say to stamp name the
revision these marks find. Alembic is not needed here (the ``migrations`` extra may
not be installed where the CLI or the API says what is wrong).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class Mark:
    """What one revision added, present in the database once it has run: a ``table``,
    or its ``column``, or an index of it on ``index`` (by columns, not by name: a
    host's naming convention may have renamed it)."""

    revision: str
    table: str
    column: str | None = None
    index: tuple[str, ...] | None = None

    def found(self, inspector: Any, schema: str | None = None) -> bool:
        if not inspector.has_table(self.table, schema=schema):
            return False
        if self.column is not None:
            columns = inspector.get_columns(self.table, schema=schema)
            return any(c["name"] == self.column for c in columns)
        if self.index is not None:
            indexes = inspector.get_indexes(self.table, schema=schema)
            return any(tuple(ix["column_names"]) == self.index for ix in indexes)
        return True


#: the first revision, which made the tables: the branch's base
FIRST: Final = "d88c9039a0d5"

#: each later revision's mark, newest first. A new revision adds its mark at the
#: top (tests/test_migrations.py checks that every revision has one).
MARKS: Final = (
    Mark("d2f6b8a4c1e9", "push_messages", index=("send_at",)),
    Mark("c9e5a7d3f1b2", "push_messages", column="cancelled_at"),
    Mark("a4c8e2f6b1d9", "push_scheduled_inbox"),
    Mark("f3b9a2d6c1e8", "push_deliveries", column="user_id"),
    Mark("b6f1d4e8c2a7", "push_deliveries", index=("message_id", "status", "due_at")),
    Mark("a91c3d5e7b28", "push_activities"),
    Mark("e7a3f9c15d20", "push_preferences"),
    Mark("c4d2e8a1b7f3", "push_subscriptions", index=("dead_at",)),
    Mark("5b1e7c2a9f04", "push_deliveries", column="events"),
)

#: the newest revision
HEAD: Final = MARKS[0].revision


def tables_revision(inspector: Any, schema: str | None = None) -> str | None:
    """The revision whose schema the tables (in ``schema``, the app's MetaData's)
    have: the newest whose mark is found, when every older mark is found too; None
    when they match none (some marks missing below one found: not tables a
    flask-push made whole)."""
    found = [mark.found(inspector, schema) for mark in MARKS]
    if True not in found:
        return FIRST
    newest = found.index(True)
    return MARKS[newest].revision if all(found[newest:]) else None


def stamp_command(revision: str) -> str:
    """The ``flask db stamp`` that records ``revision``: the branch's head by its label."""
    return f"flask db stamp {'flask_push@head' if revision == HEAD else revision}"
