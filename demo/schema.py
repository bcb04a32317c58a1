"""The demo's tables, on a new database or on one an earlier ``make demo`` left in
``instance/``.

The demo has no migrations: ``db.create_all()`` makes the tables that are missing,
but leaves alone a table that exists, so a database from an earlier run would lack
the columns and indexes flask-push (or the shop) added since, such as
``push_messages.category``. ``create_tables`` adds those too. Every such column is
nullable (as in flask-push's own Alembic revisions); a host app uses those revisions
instead (README, "Database migrations").
"""

from __future__ import annotations

import sqlalchemy as sa

from .extensions import db


def create_tables() -> list[str]:
    """Create the missing tables, then add the missing columns and indexes of the
    existing ones; returns what was added to existing tables (``table.column``, index
    names)."""
    from . import models  # noqa: F401  (register the shop's tables on db)

    db.create_all()
    engine = db.engine
    inspector = sa.inspect(engine)
    quote = engine.dialect.identifier_preparer.quote
    added: list[str] = []
    with engine.begin() as connection:
        for table in db.metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                if not column.nullable:
                    raise RuntimeError(
                        f"{table.name} lacks the column {column.name}, which cannot be "
                        "added to existing rows: delete instance/ to start over"
                    )
                kind = column.type.compile(dialect=engine.dialect)
                connection.execute(
                    sa.text(
                        f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}"
                    )
                )
                added.append(f"{table.name}.{column.name}")
            indexes = {index["name"] for index in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexes:
                    index.create(connection)
                    added.append(str(index.name))
    return added
