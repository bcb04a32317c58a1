"""What is wrong with the database, when a statement fails: the server cannot be
reached (which passes), or flask-push's tables were never made, or not upgraded
since an older flask-push made them (which does not).
The CLI, the HTTP API, ``/health`` and the workers say it the same way."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm.attributes import set_committed_value

from . import schema_history

_F = TypeVar("_F", bound=Callable[..., Any])

#: the ``insert()`` of each dialect that has ``ON CONFLICT``
_ON_CONFLICT_INSERTS: dict[str, Callable[[Any], Any]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}


def unreachable(err: BaseException) -> bool:
    """Whether a database error means the server cannot be reached right now (a
    lost or refused connection, a server restarting, a pool or lock timeout),
    which passes, rather than a mistake in a statement, which would not."""
    if isinstance(err, sa.exc.DBAPIError) and err.connection_invalidated:
        return True
    if refused_writes(err) is not None:
        return False  # it answered: SQLite says so with an OperationalError too
    return isinstance(err, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError))


def first_line(err: BaseException) -> str:
    """The first line of what the driver said, such as "Connection refused"."""
    cause = getattr(err, "orig", None) or err
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


#: what drivers say when the database user may not write, or the database is read-only
_NO_WRITE = ("permission denied", "read-only transaction", "readonly database", "read only")


def refused_writes(err: BaseException) -> str | None:
    """What to do about a database that answered but would not let flask-push write
    (a user without the grants, a read-only replica or file), or None for other errors."""
    if not isinstance(err, sa.exc.DBAPIError):
        return None  # a PermissionError of a file, say: not the database's answer
    said = first_line(err)
    if not any(words in said.lower() for words in _NO_WRITE):
        return None
    return (
        f"the database refused flask-push's statement ({said}): its user needs SELECT, "
        "INSERT, UPDATE and DELETE on flask-push's tables (push_*), on a database that "
        "takes writes (not a read-only replica or file)"
    )


def _engine(push: Any) -> Any:
    """The engine flask-push's models use (a bind of their own, if the app has one)."""
    return push.db.session.get_bind(mapper=push.models.Message)


def answers(push: Any) -> bool:
    """Whether the database answers a ``SELECT 1`` now, on a connection of its own.
    After an error, it tells an outage from a statement that failed."""
    try:
        with _engine(push).connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means it does not answer
        return False


def missing_tables(push: Any) -> list[str]:
    """flask-push's tables that the app's database lacks, then the columns it lacks
    of the tables it has, as ``table.column`` (tables made by an older flask-push and
    not upgraded since); none when it cannot tell (the server is down, say). Needs an
    app context."""
    try:
        push.db.session.rollback()
        inspector = sa.inspect(_engine(push))
        models = push.models
        tables = [getattr(models, f.name).__table__ for f in dataclasses.fields(models)]
        # in the schema of the app's MetaData, if it names one
        missing = [
            table.name
            for table in tables
            if not inspector.has_table(table.name, schema=table.schema)
        ]
        for table in tables:
            if table.name not in missing:
                # SQLite's names ignore case
                columns = inspector.get_columns(table.name, schema=table.schema)
                has = {column["name"].lower() for column in columns}
                missing += [
                    f"{table.name}.{c.name}" for c in table.columns if c.name.lower() not in has
                ]
        return missing
    except Exception:  # noqa: BLE001 - the original error says more than this one
        return []


@dataclass(frozen=True)
class Diagnosis:
    """What a database error meant: the database does not answer (an outage, which
    passes), or it answers and lacks flask-push's ``missing_tables``, or neither
    (a statement failed)."""

    answers: bool
    missing_tables: list[str]


def diagnose(push: Any) -> Diagnosis:
    """Ask the database again after an error. Drivers raise one class for a refused
    connection and for a statement that failed (SQLite's "no such column",
    PostgreSQL's deadlock); only the first passes. Needs an app context."""
    if not answers(push):
        return Diagnosis(answers=False, missing_tables=[])
    return Diagnosis(answers=True, missing_tables=missing_tables(push))


def out_of_date(missing: list[str]) -> bool:
    """Whether :func:`missing_tables` found columns missing: tables that an older
    flask-push made, which only the migrations bring up to date."""
    return any("." in name for name in missing)


def recorded_as_newer(push: Any) -> str | None:
    """The ``flask db stamp`` that records what flask-push's tables are, when Alembic
    records them at this flask-push's newest revision while they are older (``flask db
    stamp flask_push@head`` run over an older flask-push's tables): ``flask db upgrade
    heads`` then finds nothing to do. None otherwise, or when it cannot tell. Needs an
    app context."""
    try:
        engine = _engine(push)
        inspector = sa.inspect(engine)
        schema = push.models.Message.__table__.schema  # the app's MetaData's, if any
        has_messages = inspector.has_table("push_messages", schema=schema)
        if not (inspector.has_table("alembic_version") and has_messages):
            return None
        with engine.connect() as connection:
            recorded = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            if schema_history.HEAD not in set(recorded.scalars()):
                return None
        made_by = schema_history.tables_revision(inspector, schema)
    except Exception:  # noqa: BLE001 - the sentence without it still says what is missing
        return None
    if made_by is None or made_by == schema_history.HEAD:
        return None
    return schema_history.stamp_command(made_by)


def tables_missing_message(missing: list[str], restamp: str | None = None) -> str:
    """What to do about :func:`missing_tables`, as a sentence; ``restamp``: the
    :func:`recorded_as_newer` stamp, when Alembic records them as newer than they are."""
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    if restamp is not None:
        return (
            f"flask-push's tables in this database are older than this flask-push "
            f"({missing[0]}{more} missing), though Alembic records them as up to date "
            "(`flask db stamp flask_push@head` over an older flask-push's tables?). "
            f"Record what they are with `{restamp}`, then run `flask db upgrade heads` "
            "(README: Database migrations)."
        )
    if out_of_date(missing):
        return (
            f"flask-push's tables in this database are older than this flask-push "
            f"({missing[0]}{more} missing). Upgrade them with the shipped Alembic "
            "migrations: `flask db upgrade heads` (README: Database migrations)."
        )
    return (
        f"flask-push's tables are missing from this database ({missing[0]}{more}). "
        "Create them with db.create_all() in an app context, or with the shipped "
        "Alembic migrations: `flask db upgrade heads` (README: Database migrations)."
    )


#: a missing table, in the words of SQLite, PostgreSQL and MySQL
_NO_TABLE = re.compile(
    r"no such table: (?:\w+\.)?(\w+)|relation \"(?:\w+\.)?(\w+)\" does not exist"
    r"|Table '(?:\w+\.)?(\w+)' doesn't exist"
)
#: a missing column, in the same words, as ``[table.]column``
_NO_COLUMN = re.compile(
    r"no such column: ([\w.]+)|column ([\w.\"]+) (?:of relation \"\w+\" )?does not exist"
    r"|Unknown column '([\w.]+)'"
)


def note_missing_tables(push: Any, err: BaseException) -> None:
    """Add :func:`tables_missing_message` to ``err`` as a note (Python 3.11+) when
    what the driver said is that one of flask-push's tables is missing, or a column
    of a statement on them: a Python API call then ends its traceback with what to
    do, as the CLI and the HTTP API say it. Read from the error alone: no statement
    of its own, no rollback of the caller's session."""
    if not isinstance(err, sa.exc.DBAPIError) or not hasattr(err, "add_note"):
        return
    said = str(err.orig)
    tables = [getattr(push.models, f.name).__table__ for f in dataclasses.fields(push.models)]
    missing: str | None = None
    if found := _NO_TABLE.search(said):
        name = next(name for name in found.groups() if name)
        missing = name if any(table.name == name for table in tables) else None
    elif found := _NO_COLUMN.search(said):
        # "reason", or "push_deliveries.reason": of the tables of ours the statement
        # names, the one whose model has that column
        *named, column = next(name for name in found.groups() if name).replace('"', "").split(".")
        statement = str(err.statement or "")
        missing = next(
            (
                f"{table.name}.{column}"
                for table in tables
                if (table.name in named if named else table.name in statement) and column in table.c
            ),
            None,
        )
    note = tables_missing_message([missing]) if missing else None
    if note is not None and note not in getattr(err, "__notes__", ()):
        err.add_note(note)


def explains_missing_tables(method: _F) -> _F:
    """A method of :class:`~flask_push.Push` whose database errors carry
    :func:`note_missing_tables`."""

    @functools.wraps(method)
    def wrapper(push: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(push, *args, **kwargs)
        except sa.exc.DBAPIError as err:
            note_missing_tables(push, err)
            raise

    return wrapper  # type: ignore[return-value]


def missing_tables_sentence(push: Any) -> str | None:
    """:func:`tables_missing_message` when flask-push's tables are missing, else None:
    what a loop that keeps trying says once, when one of its rounds fails."""
    missing = missing_tables(push)
    return tables_missing_message(missing) if missing else None


def on_conflict_insert(dialect: Dialect) -> Callable[[Any], Any] | None:
    """``dialect``'s ``insert()`` with ``ON CONFLICT`` and ``RETURNING``
    (PostgreSQL, an SQLite of 3.35 or later), or None: write another way."""
    insert = _ON_CONFLICT_INSERTS.get(dialect.name)
    return insert if insert is not None and dialect.insert_returning else None


def held_row(session: Any, model: Any, key: Any, **touch: Any) -> Any:
    """The row of ``model`` whose primary key is ``key``, taken for the transaction
    before it is read, so that two writers of it at once go one after the other
    instead of the later write undoing the earlier: an UPDATE (setting ``touch``)
    locks the row on PostgreSQL and takes SQLite's write lock, where a SELECT takes
    neither (SQLite has no SELECT ... FOR UPDATE). None when there is no row yet:
    two writers that make it at once meet at the primary key, and the one that
    loses goes again (then it finds the row)."""
    [column] = sa.inspect(model).primary_key
    locked = session.execute(
        sa.update(model).where(column == key).values(**touch),
        execution_options={"synchronize_session": False},
    ).rowcount
    return session.get(model, key, populate_existing=True) if locked else None


def commit_keeping(session: Any, *rows: Any) -> None:
    """Commit, keeping each of ``rows`` loaded with what was just committed.

    A commit expires every row, so reading one afterwards (to answer the request,
    or in a signal's receiver) is another trip to the database. When the
    connection is lost right after the commit (a failover, a server killing idle
    connections), that read fails and a write that is durable would answer 500,
    and its client would write it again. What the rows hold is what was committed,
    so they need no reading again."""
    session.flush()  # a new row's defaults (its id) are set by its INSERT
    with keeping(*rows):
        session.commit()


@contextlib.contextmanager
def keeping(*rows: Any) -> Iterator[None]:
    """Keep each of ``rows``, whose values are committed already, loaded with them
    through the commits (and rollbacks) of the block: see :func:`commit_keeping`."""
    kept = [
        (row, {attr.key: getattr(row, attr.key) for attr in sa.inspect(row).mapper.column_attrs})
        for row in rows
    ]
    try:
        yield
    finally:
        for row, values in kept:
            for key, value in values.items():
                set_committed_value(row, key, value)
