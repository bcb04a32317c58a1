"""The shipped Alembic migrations, run by a host app through Flask-Migrate.

A tiny host app is written to a temporary folder and driven with the real
``flask db`` commands (in-process, through Flask's CLI runner, which is what
``flask --app host db ...`` runs), on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import importlib.util
import logging.config
import os
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import flask_push.migrations
from flask_push import Push
from flask_push.migrations import BRANCH_LABEL, VERSIONS_DIR, include
from flask_push.schema_history import FIRST, MARKS

from conftest import POSTGRES_URL, need_service

# The convention of the Alembic and Flask-SQLAlchemy docs, which many hosts copy.
DOCS_NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Another common one: PostgreSQL's own suffixes. Under it, a name flask-push left to
# the convention would differ from the one its migrations made.
SUFFIX_NAMING_CONVENTION = {
    "ix": "%(table_name)s_%(column_0_name)s_idx",
    "uq": "%(table_name)s_%(column_0_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}

# One that puts a name given to an index or unique constraint into the one it makes:
# a name a revision marked final (``op.f``) must be final in the models too, and one it
# gave plainly must go through the convention there as it did in the revision.
CONSTRAINT_NAME_CONVENTION = {
    "ix": "%(constraint_name)s_idx",
    "uq": "%(constraint_name)s_key",
}

HOST_APP = '''
"""A host app, as its author writes it: its own db, its own model, flask-push, Flask-Migrate."""

import sqlalchemy as sa
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

import flask_push.migrations
from flask_push import Push

NAMING_CONVENTION = {naming_convention}
db = SQLAlchemy(metadata=sa.MetaData(naming_convention=NAMING_CONVENTION))
push = Push(db=db)
migrate = Migrate()


@migrate.configure
def add_push_migrations(config):
    return flask_push.migrations.include(config)


class Order(db.Model):
    __tablename__ = "orders"

    id = db.Column(sa.Integer, primary_key=True)
    reference = db.Column(sa.String(32), nullable=False, unique=True)


def create_app(config):
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)
    push.init_app(app)
    migrate.init_app(app, db)
    return app
'''


def new_schema(prefix: str) -> tuple[sa.Engine, str]:
    """A fresh PostgreSQL schema named from ``prefix``, and an engine to drop it with."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as err:
        engine.dispose()
        need_service("PostgreSQL", err)
    return engine, schema


@pytest.fixture(params=["sqlite", "postgresql"])
def host_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An empty database of the test's own: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'host.db'}"}
        return
    engine, schema = new_schema("flask_push_migrations")
    yield {
        "SQLALCHEMY_DATABASE_URI": POSTGRES_URL,
        "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"options": f"-csearch_path={schema}"}},
    }
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(
    params=[None, DOCS_NAMING_CONVENTION, SUFFIX_NAMING_CONVENTION],
    ids=["no-convention", "docs-convention", "suffix-convention"],
)
def naming_convention(request: pytest.FixtureRequest) -> dict[str, str] | None:
    """The host's metadata naming convention: none (Flask-SQLAlchemy's default), the
    docs', or PostgreSQL's suffixes."""
    return request.param


@pytest.fixture
def host_binds() -> dict[str, str]:
    """The host's SQLALCHEMY_BINDS: none, unless a test names some."""
    return {}


@pytest.fixture
def host(
    tmp_path: Path,
    naming_convention: dict[str, str] | None,
    monkeypatch: pytest.MonkeyPatch,
    host_database: dict[str, Any],
    host_binds: dict[str, str],
    vapid_private_key: str,
) -> Iterator[Any]:
    """The host app's module, imported from its project folder, which is the cwd."""
    source = HOST_APP.replace("{naming_convention}", repr(naming_convention))
    (tmp_path / "host.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    # Flask-Migrate's env.py hands alembic.ini to logging.config.fileConfig, which
    # would disable every logger of this test process; the migrations don't need it.
    monkeypatch.setattr(logging.config, "fileConfig", lambda *args, **kwargs: None)

    name = f"host_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, tmp_path / "host.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    module.app = module.create_app(
        {
            "PUSH_VAPID_PRIVATE_KEY": vapid_private_key,
            "PUSH_VAPID_SUBJECT": "mailto:ops@shop.example",
            **host_database,
            **({"SQLALCHEMY_BINDS": host_binds} if host_binds else {}),
        }
    )
    yield module
    with module.app.app_context():
        module.db.engine.dispose()


def flask_db(app: Flask, *args: str) -> str:
    """Run ``flask db ARGS`` on ``app``; fail the test if it fails."""
    result = app.test_cli_runner().invoke(args=["db", *args])
    assert result.exit_code == 0, f"flask db {' '.join(args)} failed:\n{result.output}"
    return result.output


def host_config() -> Config:
    """The Alembic config Flask-Migrate makes for the host in the cwd, with our folder."""
    config = Config("migrations/alembic.ini")
    config.set_main_option("script_location", "migrations")
    return include(config)


def push_tables(engine: sa.Engine | sa.Connection) -> set[str]:
    return {name for name in sa.inspect(engine).get_table_names() if name.startswith("push_")}


# Flask-Migrate's env.py template tries db.get_engine(), deprecated in Flask-SQLAlchemy 3.1.
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_host_upgrades_heads_and_gets_exactly_the_models(
    host: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = host.app, host.db
    shipped = sorted(VERSIONS_DIR.glob("*.py"))
    host_versions = tmp_path / "migrations" / "versions"

    flask_db(app, "init")
    assert host_versions.is_dir()

    # Until the push_* tables exist, autogenerate would copy them into the
    # host's history; Alembic refuses because our branch is not applied yet.
    result = app.test_cli_runner().invoke(args=["db", "migrate"])
    assert result.exit_code == 1
    assert "Target database is not up to date" in caplog.text

    flask_db(app, "upgrade", "heads")
    with app.app_context():
        models = {table for table in db.metadata.tables if table.startswith("push_")}
        assert push_tables(db.engine) == models

    # The host's first revision starts its own branch, in its own folder.
    flask_db(
        app, "migrate", "-m", "create orders",
        "--head", "base", "--branch-label", "app", "--version-path", "migrations/versions",
    )  # fmt: skip
    [first] = host_versions.glob("*.py")
    assert "orders" in first.read_text() and "push_" not in first.read_text()
    assert sorted(VERSIONS_DIR.glob("*.py")) == shipped, "a host revision landed in flask-push"
    flask_db(app, "upgrade", "heads")

    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                # the push_* tables, in the metadata and in the database
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    type_ != "table" or name.startswith("push_")
                ),
            },
        )
        assert compare_metadata(context, db.metadata) == []
        assert set(context.get_current_heads()) == {
            script.revision
            for script in ScriptDirectory.from_config(host_config()).get_revisions("heads")
        }
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("push_inbox_items")}
        assert indexes >= {"ix_push_inbox_items_user_newest", "ix_push_inbox_items_user_unread"}
        # Alembic does not compare an index's WHERE clause: look at the DDL itself.
        if conn.dialect.name == "postgresql":
            ddl = conn.execute(
                sa.text(
                    "SELECT indexdef FROM pg_indexes"
                    " WHERE schemaname = current_schema() AND indexname = :n"
                ),
                {"n": "ix_push_inbox_items_user_unread"},
            ).scalar_one()
        else:
            ddl = conn.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE name = :n"),
                {"n": "ix_push_inbox_items_user_unread"},
            ).scalar_one()
        assert "WHERE is_new" in ddl

    # A second autogenerate on the host's branch finds nothing to do.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="alembic"):
        flask_db(app, "migrate", "-m", "nothing", "--head", "app@head")
    assert "No changes in schema detected" in caplog.text
    assert list(host_versions.glob("*.py")) == [first]

    flask_db(app, "downgrade", f"{BRANCH_LABEL}@base")
    with app.app_context():
        assert push_tables(db.engine) == set()
        assert "orders" in sa.inspect(db.engine).get_table_names()


@pytest.mark.parametrize("naming_convention", [None])
@pytest.mark.parametrize("host_database", ["sqlite"], indirect=True)
@pytest.mark.parametrize("host_binds", [{"stats": "sqlite:///stats.db"}])
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_a_multidb_environment_makes_the_tables_on_the_apps_database(
    host: Any, tmp_path: Path
) -> None:
    """`flask db init --multidb` (a host with SQLALCHEMY_BINDS) calls each revision's
    upgrade with the name of each database: flask-push's took no argument, and the
    upgrade failed with a TypeError. Its tables go on the app's database, none on the
    bind's, and both come back down."""
    app, db = host.app, host.db
    flask_db(app, "init", "--multidb")
    flask_db(app, "upgrade", "heads")
    with app.app_context():
        models = {table for table in db.metadata.tables if table.startswith("push_")}
        assert push_tables(db.engine) == models
        assert push_tables(db.engines["stats"]) == set()
    flask_db(
        app, "migrate", "-m", "create orders",
        "--head", "base", "--branch-label", "app", "--version-path", "migrations/versions",
    )  # fmt: skip
    [first] = (tmp_path / "migrations" / "versions").glob("*.py")
    assert "orders" in first.read_text() and "push_" not in first.read_text()
    flask_db(app, "upgrade", "heads")
    flask_db(app, "downgrade", f"{BRANCH_LABEL}@base")
    with app.app_context():
        assert push_tables(db.engine) == set()
        assert "orders" in sa.inspect(db.engine).get_table_names()


# The least an Alembic environment needs to run the revisions on a connection it is
# handed, with a host's metadata (Alembic's "sharing a connection" recipe).
ENV_PY = """
from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=context.config.attributes["target_metadata"],
)
with context.begin_transaction():
    context.run_migrations()
"""


@pytest.mark.parametrize(
    "convention",
    [None, DOCS_NAMING_CONVENTION, SUFFIX_NAMING_CONVENTION, CONSTRAINT_NAME_CONVENTION],
    ids=["no-convention", "docs-convention", "suffix-convention", "constraint-name-convention"],
)
def test_the_models_name_what_the_migrations_made_whatever_the_convention(
    convention: dict[str, str] | None, host_database: dict[str, Any], tmp_path: Path
) -> None:
    """The shipped revisions, run with a host's metadata (whose naming convention
    names what a revision leaves unnamed), make every index and constraint the models
    declare on that metadata, by the same name: autogenerate finds nothing to change,
    and the primary keys are named alike."""
    metadata = sa.MetaData(naming_convention=convention)
    Push(db=SQLAlchemy(metadata=metadata))
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(ENV_PY)
    config = Config()
    config.set_main_option("script_location", str(tmp_path / "migrations"))
    include(config)
    engine = sa.create_engine(
        host_database["SQLALCHEMY_DATABASE_URI"],
        **host_database.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
    )
    try:
        with engine.begin() as conn:
            config.attributes.update(connection=conn, target_metadata=metadata)
            command.upgrade(config, "heads")
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            # Autogenerate leaves primary keys alone; db.create_all() names them too.
            inspector = sa.inspect(conn)
            # unnamed: the database names it (PostgreSQL <table>_pkey, SQLite none)
            unnamed = "{}_pkey" if conn.dialect.name == "postgresql" else None
            made = {name: inspector.get_pk_constraint(name)["name"] for name in metadata.tables}
            declared = {
                name: table.primary_key.name or (unnamed and unnamed.format(name))
                for name, table in metadata.tables.items()
            }
            assert declared == made
    finally:
        engine.dispose()


@pytest.fixture
def shipped_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """flask-push's revisions in a folder of the test's own, standing in for the
    installed one: a file written there by mistake touches no other test's run."""
    copy = tmp_path / "flask_push_versions"
    copy.mkdir()
    for path in VERSIONS_DIR.glob("*.py"):
        (copy / path.name).write_text(path.read_text())
    monkeypatch.setattr(flask_push.migrations, "VERSIONS_DIR", copy.resolve())
    return copy


@pytest.mark.parametrize("naming_convention", [None])
@pytest.mark.parametrize("host_database", ["sqlite"], indirect=True)
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_a_hosts_revision_is_not_written_into_flask_push(
    shipped_copy: Path, host: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What Flask-Migrate's tutorials say to type, before the host has a branch of its
    own: Alembic would build on flask-push's head and write the file into flask-push's
    folder (reinstalling flask-push loses it). It is removed, and the error says how to
    start the host's branch, which then works."""
    app = host.app
    # its revision files (Alembic's reading them writes their bytecode beside them,
    # into __pycache__, unless PYTHONDONTWRITEBYTECODE is set)
    shipped = sorted(shipped_copy.glob("*.py"))
    flask_db(app, "init")
    flask_db(app, "upgrade")
    for args in (["migrate", "-m", "create orders"], ["revision", "-m", "by hand"]):
        caplog.clear()
        refused = app.test_cli_runner().invoke(args=["db", *args])
        assert refused.exit_code == 1, refused.output
        assert sorted(shipped_copy.glob("*.py")) == shipped
        assert "flask-push's own migrations folder" in caplog.text
        assert (
            '`flask db migrate -m "..." --head base --branch-label app --version-path '
            "migrations/versions`" in caplog.text
        )
    flask_db(
        app, "migrate", "-m", "create orders",
        "--head", "base", "--branch-label", "app", "--version-path", "migrations/versions",
    )  # fmt: skip
    assert len(list((tmp_path / "migrations" / "versions").glob("*.py"))) == 1
    assert sorted(shipped_copy.glob("*.py")) == shipped


@pytest.mark.parametrize("naming_convention", [None])
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:downgrade -1 from multiple heads is ambiguous:UserWarning")
def test_downgrade_with_two_heads_does_not_step_back_flask_push(
    host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """`flask db downgrade` (-1) with the host's branch and flask-push's applied:
    Alembic steps back the head it reads first from alembic_version, here flask-push's,
    dropping its table and rows, when the host meant its own last revision. It is
    refused, naming both branches; the branch named then steps back."""
    app, db = host.app, host.db
    flask_db(app, "init")
    flask_db(app, "upgrade")
    flask_db(
        app, "migrate", "-m", "create orders",
        "--head", "base", "--branch-label", "app", "--version-path", "migrations/versions",
    )  # fmt: skip
    flask_db(app, "upgrade", "heads")
    script = ScriptDirectory.from_config(host_config())
    with app.app_context(), db.engine.begin() as conn:
        [push_head] = script.get_revisions(f"{BRANCH_LABEL}@head")
        # what Alembic reads first, and steps back on `downgrade -1`
        first = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().first()
        assert first == push_head.revision
        conn.execute(
            sa.text("INSERT INTO push_scheduled_inbox VALUES ('msg_1', 'alice', :due)"),
            {"due": "2026-12-06 10:00:00+00:00"},
        )
    refused = app.test_cli_runner().invoke(args=["db", "downgrade"])
    assert refused.exit_code == 1, refused.output
    assert (
        "`flask db downgrade app@-1` for yours, `flask db downgrade flask_push@-1` for "
        "flask-push's" in caplog.text
    )
    with app.app_context(), db.engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT user_id FROM push_scheduled_inbox")
        ).scalars().all() == ["alice"]
        assert set(MigrationContext.configure(conn).get_current_heads()) == {
            s.revision for s in script.get_revisions("heads")
        }

    flask_db(app, "downgrade", "app@-1")
    with app.app_context():
        assert "orders" not in sa.inspect(db.engine).get_table_names()
        assert "push_scheduled_inbox" in sa.inspect(db.engine).get_table_names()
    flask_db(app, "upgrade", "heads")
    flask_db(app, "downgrade", f"{BRANCH_LABEL}@-1")  # named: goes ahead
    with app.app_context():
        inspector = sa.inspect(db.engine)
        assert not MARKS[0].found(inspector)  # flask-push's head undone
        assert MARKS[1].found(inspector)  # and no more
        assert "orders" in inspector.get_table_names()


def test_every_shipped_downgrade_begins_with_the_guard() -> None:
    """A revision added later refuses an ambiguous `downgrade -1` too."""
    for path in sorted(VERSIONS_DIR.glob("*.py")):
        begins = re.compile(
            r'^def downgrade\(engine_name: str = ""\) -> None:\n'
            r"    if engine_name:.*\n        return\n    refuse_ambiguous_downgrade\(\)\n",
            re.M,
        )
        assert begins.search(path.read_text()), (
            f"{path.name}: its downgrade() does not begin with refuse_ambiguous_downgrade()"
        )


# include() on its own: no database needed.


@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_tables_in_the_way_are_named_before_anything_is_made(
    host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A host table with one of flask-push's names: `upgrade` says which, and makes
    none of the others. All of them (db.create_all() made them): it says to stamp."""
    app, db = host.app, host.db
    flask_db(app, "init")
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE push_messages (id INTEGER PRIMARY KEY)"))
    refused = app.test_cli_runner().invoke(args=["db", "upgrade", "heads"])
    assert refused.exit_code == 1
    assert "table names are taken already (push_messages)" in caplog.text
    with app.app_context():
        assert push_tables(db.engine) == {"push_messages"}
        db.session.execute(sa.text("DROP TABLE push_messages"))
        db.session.commit()
        db.create_all()
    caplog.clear()
    refused = app.test_cli_runner().invoke(args=["db", "upgrade", "heads"])
    assert refused.exit_code == 1 and "`flask db stamp flask_push@head`" in caplog.text
    flask_db(app, "stamp", "flask_push@head")
    flask_db(app, "upgrade", "heads")


def shipped_script() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(VERSIONS_DIR.parent))
    config.set_main_option("version_locations", str(VERSIONS_DIR))
    config.set_main_option("path_separator", "os")
    return ScriptDirectory.from_config(config)


#: flask-push's revisions, oldest first
CHAIN = [script.revision for script in reversed(list(shipped_script().walk_revisions()))]


def test_every_revision_has_a_mark_newest_first() -> None:
    """What tells a database's tables' revision knows every revision, in order."""
    assert [FIRST, *(mark.revision for mark in reversed(MARKS))] == CHAIN


@pytest.mark.parametrize("naming_convention", [None])
@pytest.mark.parametrize("made_by", CHAIN)
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_tables_made_without_alembic_are_stamped_as_the_revision_they_match(
    host: Any, made_by: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Tables an older flask-push's db.create_all() made: `upgrade` names the revision
    they match to stamp (stamping the head left Alembic nothing to upgrade, and the
    tables old), and upgrading from there gives exactly the models."""
    app, db = host.app, host.db
    flask_db(app, "init")
    flask_db(app, "upgrade", made_by)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))  # as db.create_all() left it
    refused = app.test_cli_runner().invoke(args=["db", "upgrade", "heads"])
    assert refused.exit_code == 1
    stamp = "flask_push@head" if made_by == CHAIN[-1] else made_by
    assert f"`flask db stamp {stamp}`, then run `flask db upgrade heads` again" in caplog.text
    flask_db(app, "stamp", stamp)
    flask_db(app, "upgrade", "heads")
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    type_ != "table" or name.startswith("push_")
                ),
            },
        )
        assert compare_metadata(context, db.metadata) == []


@pytest.mark.parametrize("naming_convention", [None])
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_tables_stamped_newer_than_they_are_say_what_to_stamp(host: Any) -> None:
    """`flask db stamp flask_push@head` over an older flask-push's tables (what the
    README once said for any db.create_all() tables): `flask db upgrade heads` has
    nothing to do, so `flask push` saying to run it was a dead end. It names the stamp
    that records what the tables are, after which the upgrade brings them up to date."""
    app = host.app
    flask_db(app, "init")
    # the revision before the one that adds push_scheduled_inbox
    before = CHAIN[CHAIN.index("a4c8e2f6b1d9") - 1]
    flask_db(app, "upgrade", before)
    flask_db(app, "stamp", f"{BRANCH_LABEL}@head")
    flask_db(app, "upgrade", "heads")  # nothing to do
    refused = app.test_cli_runner().invoke(args=["push", "stats"])
    assert refused.exit_code == 1
    assert refused.output.splitlines() == [
        "Error: flask-push's tables in this database are older than this flask-push "
        "(push_scheduled_inbox and 2 more missing), though Alembic records them as up to "
        "date (`flask db stamp flask_push@head` over an older flask-push's tables?). Record "
        f"what they are with `flask db stamp {before}`, then run `flask db upgrade heads` "
        "(README: Database migrations)."
    ]
    flask_db(app, "stamp", before)
    flask_db(app, "upgrade", "heads")
    stats = app.test_cli_runner().invoke(args=["push", "stats"])
    assert stats.exit_code == 0, stats.output


@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_messages_cancelled_before_cancelled_at_get_the_time_of_their_cancel(host: Any) -> None:
    """A cancel was known by its ``cancelled`` deliveries only: the revision that
    adds ``push_messages.cancelled_at`` fills it in from them."""
    app, db = host.app, host.db
    flask_db(app, "init")
    # the revision before the one that adds cancelled_at
    flask_db(app, "upgrade", CHAIN[CHAIN.index("c9e5a7d3f1b2") - 1])
    when = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)
    with app.app_context(), db.engine.begin() as conn:
        metadata = sa.MetaData()
        messages = sa.Table("push_messages", metadata, autoload_with=conn)
        deliveries = sa.Table("push_deliveries", metadata, autoload_with=conn)
        for n, status in enumerate(["cancelled", "sent"]):
            message = {**a_row(messages, n), "id": f"msg_{status}"}
            conn.execute(messages.insert().values(message))
            delivery = a_row(deliveries, n)
            delivery.update(message_id=message["id"], status=status, updated_at=when)
            conn.execute(deliveries.insert().values(delivery))
    flask_db(app, "upgrade", "heads")
    with app.app_context(), db.engine.connect() as conn:
        found = dict(conn.execute(sa.text("SELECT id, cancelled_at FROM push_messages")).all())
    if isinstance(found["msg_cancelled"], str):  # SQLite hands back the text it keeps
        found["msg_cancelled"] = datetime.fromisoformat(found["msg_cancelled"])
    assert found["msg_cancelled"].replace(tzinfo=timezone.utc) == when
    assert found["msg_sent"] is None


def a_row(table: sa.Table, n: int) -> dict[str, Any]:
    """A row with a value in every column of ``table``, as reflected (a revision's
    tables, not the models'): what each later revision must carry over."""
    row: dict[str, Any] = {}
    for i, column in enumerate(table.columns):
        kind = column.type
        if isinstance(kind, sa.Integer):
            row[column.name] = n * 100 + i
        elif isinstance(kind, sa.Boolean):
            row[column.name] = True
        elif isinstance(kind, sa.JSON):
            row[column.name] = {"n": n, "column": column.name}
        elif isinstance(kind, sa.DateTime):
            row[column.name] = datetime(2026, 1, 2, 3, 4, i, tzinfo=timezone.utc)
        else:
            row[column.name] = f"{n}-{column.name}"[: getattr(kind, "length", None) or 64]
    return row


def fill(conn: sa.Connection) -> dict[str, dict[str, Any]]:
    """One row in each push_* table there is, by table name."""
    rows = {}
    metadata = sa.MetaData()
    for name in push_tables(conn):
        table = sa.Table(name, metadata, autoload_with=conn)
        rows[name] = a_row(table, len(rows) + 1)
        conn.execute(table.insert().values(rows[name]))
    return rows


def assert_kept(conn: sa.Connection, rows: dict[str, dict[str, Any]]) -> None:
    """Each table still there has its one row, with the values of the columns it kept."""
    metadata = sa.MetaData()
    for name in push_tables(conn):
        if name not in rows:
            continue
        table = sa.Table(name, metadata, autoload_with=conn)
        [found] = conn.execute(sa.select(table)).mappings().all()
        for column, value in rows[name].items():
            if column in found:
                got = found[column]
                if isinstance(got, datetime) and got.tzinfo is None:  # SQLite keeps no zone
                    got = got.replace(tzinfo=timezone.utc)
                assert got == value, f"{name}.{column}: {got!r}, was {value!r}"


@pytest.mark.parametrize("start", CHAIN[:-1])
def test_upgrades_from_each_revision_keep_the_rows_and_downgrades_too(
    start: str, host_database: dict[str, Any], tmp_path: Path
) -> None:
    """Rows written at each earlier revision come through the upgrade to the head, and
    back down again one step at a time, with every value of every column kept."""
    metadata = sa.MetaData()
    Push(db=SQLAlchemy(metadata=metadata))
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(ENV_PY)
    config = Config()
    config.set_main_option("script_location", str(tmp_path / "migrations"))
    include(config)
    engine = sa.create_engine(
        host_database["SQLALCHEMY_DATABASE_URI"],
        **host_database.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
    )

    def alembic(step: Any, revision: str) -> None:
        with engine.begin() as conn:
            config.attributes.update(connection=conn, target_metadata=metadata)
            step(config, revision)

    try:
        alembic(command.upgrade, start)
        with engine.begin() as conn:
            rows = fill(conn)
        alembic(command.upgrade, "heads")
        with engine.connect() as conn:
            assert_kept(conn, rows)
            assert push_tables(conn) == set(metadata.tables)
        for _ in CHAIN[CHAIN.index(start) + 1 :]:
            alembic(command.downgrade, f"{BRANCH_LABEL}@-1")
            with engine.connect() as conn:
                assert_kept(conn, rows)
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_heads() == (start,)
    finally:
        engine.dispose()


def locations(config: Config) -> list[Path]:
    return [Path(p).resolve() for p in config.get_version_locations_list() or []]


def test_include_keeps_the_hosts_default_versions_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config()
    config.set_main_option("script_location", "migrations")
    assert include(config) is config
    assert config.get_main_option("path_separator") == "os"
    assert locations(config) == [tmp_path / "migrations" / "versions", VERSIONS_DIR]
    include(config)  # twice is once
    assert locations(config) == [tmp_path / "migrations" / "versions", VERSIONS_DIR]
    (tmp_path / "migrations").mkdir()  # Alembic finds our revision, and no other
    script = ScriptDirectory.from_config(config)
    assert sorted(s.path for s in script.walk_revisions()) == sorted(
        str(p) for p in VERSIONS_DIR.glob("*.py")
    )


@pytest.mark.parametrize(
    ("options", "separator", "hosts"),
    [
        ({"path_separator": "newline", "version_locations": "a dir\nb"}, "\n", ["a dir", "b"]),
        ({"path_separator": ";", "version_locations": "a dir;b"}, ";", ["a dir", "b"]),
        # no separator: read with Alembic's legacy split on spaces and commas, then use ``os``
        ({"version_locations": "a, b c"}, os.pathsep, ["a", "b", "c"]),
    ],
)
def test_include_keeps_the_hosts_version_locations(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, str],
    separator: str,
    hosts: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config()
    config.set_main_option("script_location", "migrations")
    for name, value in options.items():
        config.set_main_option(name, value)
    include(config)
    assert config.get_main_option("version_locations") == separator.join(
        [*hosts, str(VERSIONS_DIR)]
    )
    assert locations(config) == [*(tmp_path / name for name in hosts), VERSIONS_DIR]


def test_include_escapes_percent_signs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config()
    config.set_main_option("script_location", "migrations")
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", "100%%/versions")  # ini files escape % too
    include(config)
    assert locations(config) == [tmp_path / "100%" / "versions", VERSIONS_DIR]


def hook_names(config: Config) -> list[str]:
    return [hook["_hook_name"] for hook in config.get_hooks_list()]


def test_include_puts_its_write_hook_first_and_keeps_the_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config()
    config.set_main_option("script_location", "migrations")
    config.set_section_option("post_write_hooks", "hooks", "black")
    config.set_section_option("post_write_hooks", "black.type", "console_scripts")
    include(config)
    include(config)  # twice is once
    assert hook_names(config) == ["flask_push", "black"]
    [ours, black] = config.get_hooks_list()
    assert ours["host_versions"] == os.path.join("migrations", "versions")
    assert black["type"] == "console_scripts"


@pytest.mark.skipif(
    not hasattr(Config, "get_alembic_option"), reason="pyproject.toml configs: Alembic 1.16"
)
def test_include_reads_a_pyproject_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host configured in pyproject.toml only (``alembic init -t pyproject``):
    include() finds its script_location there (it said there was none), and keeps its
    write hooks, which Alembic reads only while the ini file has no
    [post_write_hooks], by carrying them into the section it makes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        "[tool.alembic]\n"
        'script_location = "migrations"\n'
        "[[tool.alembic.post_write_hooks]]\n"
        'name = "ruff"\n'
        'type = "exec"\n'
        'executable = "ruff"\n'
        'options = "format REVISION_SCRIPT_FILENAME --line-length 100%%"\n'
    )
    config = Config(toml_file="pyproject.toml")
    include(config)
    assert locations(config) == [tmp_path / "migrations" / "versions", VERSIONS_DIR]
    assert hook_names(config) == ["flask_push", "ruff"]
    ruff = config.get_hooks_list()[1]
    assert ruff["options"] == "format REVISION_SCRIPT_FILENAME --line-length 100%"
    assert ruff["executable"] == "ruff"


def test_include_rejects_a_separator_alembic_does_not_know() -> None:
    config = Config()
    config.set_main_option("script_location", "migrations")
    config.set_main_option("path_separator", "comma")
    with pytest.raises(CommandError, match="comma"):
        include(config)


def test_the_branch_is_independent() -> None:
    config = Config()
    config.set_main_option("script_location", str(VERSIONS_DIR.parent))
    config.set_main_option("version_locations", str(VERSIONS_DIR))
    config.set_main_option("path_separator", "os")
    script = ScriptDirectory.from_config(config)
    [base] = script.get_bases()
    assert script.get_revision(base).down_revision is None
    assert script.get_revision(base).branch_labels == {BRANCH_LABEL}


def test_tables_in_the_schema_of_the_hosts_metadata_are_found(vapid_private_key: str) -> None:
    """A host whose MetaData names a schema: db.create_all() made flask-push's tables
    there and sends worked, but `flask push stats` looked for them where the
    connection's search path points, and said they were missing. The checks look in
    the models' schema, and find there what an older flask-push lacked."""
    engine, schema = new_schema("flask_push_host")
    db = SQLAlchemy(metadata=sa.MetaData(schema=schema))
    push = Push(db=db)
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        PUSH_VAPID_PRIVATE_KEY=vapid_private_key,
        PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
        # the connection's search path is the database's default, not the schema
        SQLALCHEMY_DATABASE_URI=POSTGRES_URL,
    )
    db.init_app(app)
    push.init_app(app)
    try:
        with app.app_context():
            db.create_all()
            push.send(users=["alice"], title="Hi")
        result = app.test_cli_runner().invoke(args=["push", "stats"])
        assert result.exit_code == 0, result.output
        with engine.begin() as conn:
            conn.execute(sa.text(f'ALTER TABLE "{schema}".push_messages DROP COLUMN cancelled_at'))
        result = app.test_cli_runner().invoke(args=["push", "stats"])
        assert result.exit_code == 1
        assert "older than this flask-push (push_messages.cancelled_at missing)" in result.output
    finally:
        with app.app_context():
            push.state.shutdown()
            db.session.remove()
            db.engine.dispose()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
