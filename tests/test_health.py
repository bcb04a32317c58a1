"""GET <prefix>/health: 200 when the database and the backplane answer, 503 naming what is down."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push.models import utcnow

from conftest import (
    REDIS_URL,
    as_user,
    bare_app,
    db,
    end_connections,
    named_connections,
    need_service,
    push,
    read_only,
)


def closed_port() -> int:
    """A port nothing listens on (taken and given back at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as err:
        need_service("Redis", err)
    finally:
        client.close()
    return REDIS_URL


def health(app: Flask) -> tuple[int, dict[str, Any]]:
    response = app.test_client().get("/push/health")
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "Error" not in text  # no exception leaks out
    return response.status_code, response.get_json()


def test_the_readmes_answer_is_what_a_new_app_serves(make_app: Callable[..., Flask]) -> None:
    """What the README shows is what ``curl`` prints for an app on the defaults,
    keys in the order they come (Flask sorts them)."""
    from test_readme import one

    shown = one("answer", "health").code
    response = make_app().test_client().get("/push/health")
    served = response.get_data(as_text=True)
    assert json.loads(served) == json.loads(shown)
    assert list(json.loads(served)) == list(json.loads(shown))


def test_ok_with_the_outbox_state(app: Flask) -> None:
    """On SQLite and on PostgreSQL (the ``database`` fixture runs both)."""
    assert health(app) == (
        200,
        {
            "status": "ok",
            "database": "ok",
            "backplane": "memory",
            "outbox": {"due": 0, "oldestDueSeconds": None},
            "problems": [],
        },
    )
    with app.app_context():
        message = push.models.Message(audience={"users": ["alice"]}, notification={"title": "t"})
        db.session.add(message)
        db.session.flush()
        db.session.add(
            push.models.Delivery(
                message_id=message.id,
                kind="webpush",
                due_at=utcnow() - timedelta(minutes=2),
                expires_at=utcnow() + timedelta(days=1),
            )
        )
        db.session.commit()
    status, body = health(app)
    assert status == 200
    assert body["outbox"]["due"] == 1
    assert body["outbox"]["oldestDueSeconds"] >= 120


def test_ok_with_the_redis_backplane(make_app: Callable[..., Flask], redis_url: str) -> None:
    app = make_app(PUSH_BACKPLANE_URL=redis_url)
    status, body = health(app)
    assert status == 200
    assert body["backplane"] == "ok" and body["status"] == "ok"


def test_redis_unreachable_is_503(make_app: Callable[..., Flask]) -> None:
    app = make_app(PUSH_BACKPLANE_URL=f"redis://127.0.0.1:{closed_port()}/0")
    status, body = health(app)
    assert status == 503
    assert body["status"] == "down"
    assert body["backplane"] == "down"
    assert body["database"] == "ok" and body["outbox"] == {"due": 0, "oldestDueSeconds": None}
    assert body["problems"] == ["The live events' backplane (Redis) did not answer."]


def test_redis_that_refuses_is_told_from_one_that_does_not_answer(
    make_app: Callable[..., Flask], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database index Redis does not have: it answered, with an error."""
    base = redis_url.rsplit("/", 1)[0]
    app = make_app(PUSH_BACKPLANE_URL=f"{base}/99")
    status, body = health(app)
    assert status == 503 and body["backplane"] == "down"
    assert body["problems"] == ["The live events' backplane (Redis) refused it: the log says why."]
    assert "DB index is out of range" in caplog.text


@pytest.fixture(
    params=[
        lambda tmp: {
            "SQLALCHEMY_DATABASE_URI": f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
        },
        lambda tmp: {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'missing' / 'app.db'}"},
    ],
    ids=["postgresql", "sqlite"],
)
def unreachable_database(
    request: pytest.FixtureRequest, tmp_path: Path, vapid_private_key: str
) -> Iterator[Flask]:
    """An app whose database cannot be reached: PostgreSQL on a port nothing listens
    on, or an SQLite file in a folder that does not exist."""
    with bare_app({"TESTING": True, **request.param(tmp_path)}) as app:
        yield app


def test_database_down_is_503(unreachable_database: Flask) -> None:
    status, body = health(unreachable_database)
    assert status == 503
    assert body == {
        "status": "down",
        "database": "down",
        "backplane": "memory",
        "outbox": None,
        "problems": ["The database did not answer."],
    }


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_database_back_from_a_restart_is_ok_at_the_first_probe(
    make_app: Callable[..., Flask], database: dict[str, Any]
) -> None:
    """PostgreSQL restarted between two probes: the pool's connections were ended,
    but the database answers again. The probe (and the scrape's outbox gauges) say
    so at once, instead of one "down" per process that sends a load balancer away."""
    name, options = named_connections(database)  # this app's connections only
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS=options, PUSH_METRICS=True)
    client = app.test_client()
    assert health(app)[0] == 200
    end_connections(name)
    status, body = health(app)
    assert (status, body["database"], body["problems"]) == (200, "ok", [])
    assert "flask_push_outbox_due 0.0" in client.get("/push/metrics").get_data(as_text=True)
    end_connections(name)
    assert "flask_push_outbox_due 0.0" in client.get("/push/metrics").get_data(as_text=True)


def test_the_api_answers_503_while_the_database_is_down(
    unreachable_database: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a 500 "something went wrong": the client may try again, and the log says
    what the driver said, in one line."""
    client = unreachable_database.test_client()
    answer = client.post("/push/notifications", json={"title": "Hi"}, headers={"X-User": "alice"})
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.get_json()["error"]["code"] == "database_unavailable"
    assert "Traceback" not in answer.get_data(as_text=True)
    [said] = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert said.exc_info is None and "POST '/push/notifications'" in said.getMessage()


def test_a_database_that_takes_no_writes_is_503_and_said_in_one_line(
    make_app: Callable[..., Flask], database: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A read-only replica or file (or missing grants): the client may try again (a
    failover passes), and the log says what to do, without a traceback."""
    make_app()  # its tables
    replica, why = read_only(database, "INSERT")
    with bare_app({"TESTING": True, **replica}) as app:
        client = app.test_client()
        answer = client.post("/push/notifications", json={"title": "Hi"}, headers={"X-User": "al"})
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.get_json()["error"]["code"] == "database_unavailable"
    [said] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert said.exc_info is None
    assert said.getMessage().startswith(
        f"flask-push: the database refused flask-push's statement ({why}): its user needs "
        "SELECT, INSERT, UPDATE and DELETE"
    )
    assert said.getMessage().endswith("in POST '/push/notifications'")


def test_the_console_says_the_database_is_down_on_a_page(
    unreachable_database: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """An admin on the console while the database is down gets a console page that
    says so (503, Retry-After), not the server's bare "Internal Server Error"."""
    unreachable_database.config["SECRET_KEY"] = "console-secret"
    client = unreachable_database.test_client()
    answer = client.get("/push/console/messages", headers=as_user("root", admin=True))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.mimetype == "text/html"
    page = answer.get_data(as_text=True)
    assert "The database cannot be reached right now" in page and "Traceback" not in page
    assert any("unreachable" in r.getMessage() for r in caplog.records)


def test_the_console_tells_no_one_but_admins_it_is_there_when_the_database_is_down(
    unreachable_database: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host whose admin check reads the database: that check fails first, so the
    caller gets the API's JSON answer, which says nothing of a console."""

    def admin_from_the_database(self: Any) -> bool:
        return bool(db.session.execute(sa.text("SELECT 1")).scalar())

    monkeypatch.setattr(type(push), "current_user_is_admin", admin_from_the_database)
    unreachable_database.config["SECRET_KEY"] = "console-secret"
    answer = unreachable_database.test_client().get("/push/console/messages")
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "database_unavailable"
    assert "console" not in answer.get_data(as_text=True).lower()


def test_a_failed_statement_is_no_outage(app: Flask) -> None:
    """SQLite raises the same OperationalError for "no such column" as for a
    database it cannot open: the database still answers, so it is a 500, with the
    column and what to run in the log, not a 503 that tells clients to come back."""
    with app.app_context():
        db.session.execute(sa.text("ALTER TABLE push_inbox_items RENAME COLUMN progress TO gone"))
        db.session.commit()
    answer = app.test_client().get("/push/notifications", headers={"X-User": "alice"})
    assert answer.status_code == 500
    assert answer.get_json()["error"]["code"] == "database_not_set_up"
    assert "push_inbox_items.progress" not in answer.get_data(as_text=True)


def test_a_pool_with_no_connection_free_is_503(make_app: Callable[..., Flask]) -> None:
    options = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.5}
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS=options)
    with app.app_context():
        held = db.engine.connect()
        try:
            answer = app.test_client().get("/push/notifications", headers={"X-User": "alice"})
        finally:
            held.close()
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "database_unavailable"


def test_missing_tables_are_named_in_the_log_not_to_the_client(
    tmp_path: Path, vapid_private_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'new.db'}"}
    with bare_app(config) as app:  # and no db.create_all()
        answer = app.test_client().get("/push/notifications", headers={"X-User": "alice"})
        assert answer.status_code == 500
        assert answer.get_json()["error"]["code"] == "database_not_set_up"
        assert "push_" not in answer.get_data(as_text=True)
        assert any("db.create_all()" in r.getMessage() for r in caplog.records)
        status, body = health(app)
        assert status == 503
        assert body["problems"] == [
            "The database answered, but flask-push's tables are missing: the log says which, "
            "and the command that makes them."
        ]
        assert any("flask db upgrade heads" in r.getMessage() for r in caplog.records)


def test_answers_conform_to_the_document(make_app: Callable[..., Flask]) -> None:
    """200 and 503 both carry the documented body."""
    import schemathesis
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from flask_push.api.openapi import document

    schema = schemathesis.openapi.from_dict(document("/push", server="http://localhost"))
    operation = schema["/push/health"]["GET"]
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    up = make_app()
    down = make_app(PUSH_BACKPLANE_URL=f"redis://127.0.0.1:{closed_port()}/0")
    for app, status in ((up, 200), (down, 503)):
        response = operation.Case().call_and_validate(app=app, checks=checks)
        assert response.status_code == status


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes came in Python 3.11")
def test_the_python_api_says_what_to_do_about_missing_tables(
    make_app: Callable[..., Flask],
) -> None:
    """A Python API call on a database without flask-push's tables (no
    ``db.create_all()``), or with a table an older flask-push made, raises the
    driver's error with what to do as a note, as the CLI and the HTTP API say it."""
    from flask_push.database import note_missing_tables

    app = make_app()
    with app.app_context():
        db.session.execute(sa.text("ALTER TABLE push_preferences DROP COLUMN time_zone"))
        db.session.commit()
        with pytest.raises(sa.exc.DBAPIError) as raised:
            push.get_preferences("alice")
        db.session.rollback()
        assert raised.value.__notes__ == [
            "flask-push's tables in this database are older than this flask-push "
            "(push_preferences.time_zone missing). Upgrade them with the shipped Alembic "
            "migrations: `flask db upgrade heads` (README: Database migrations)."
        ]
        db.drop_all()
        with pytest.raises(sa.exc.DBAPIError) as raised:
            push.send(users=["alice"], title="Hello")
        db.session.rollback()
        (note,) = raised.value.__notes__
        assert note.startswith("flask-push's tables are missing from this database (push_")
        assert "db.create_all()" in note
        # a table not of flask-push's gets no note
        with pytest.raises(sa.exc.DBAPIError) as raised:
            db.session.execute(sa.text("SELECT * FROM orders"))
        db.session.rollback()
        note_missing_tables(push, raised.value)
        assert not getattr(raised.value, "__notes__", None)
