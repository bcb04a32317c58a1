"""A PostgreSQL connection lost under a request (a failover, a restart, a server or
pooler that ends idle connections): the client is told the truth, and a write is
never answered as failed once it is committed, so a client that retries on a 5xx
does not write it twice."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from conftest import POSTGRES_URL, as_user, db, end_connections, named_connections, service_account

on_postgres = pytest.mark.parametrize("database", ["postgresql"], indirect=True)
IOS_TOKEN = "ab" * 32


def _terminate(connection: Any) -> None:
    """End ``connection``'s server process, as an administrator or a failover does."""
    pid = connection.connection.dbapi_connection.info.backend_pid
    killer = sa.create_engine(POSTGRES_URL)
    try:
        with killer.begin() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        killer.dispose()


@contextmanager
def lost_after_commit(*, for_good: bool = False) -> Iterator[list[str]]:
    """This thread's connection is lost at its first statement after a COMMIT (and,
    ``for_good``, at every one after it: the database stays down); yields the
    statements it was lost at."""
    me = threading.get_ident()
    committed = [False]
    lost: list[str] = []

    def on_commit(connection: Any) -> None:
        if threading.get_ident() == me:
            committed[0] = True

    def before(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == me and committed[0]:
            committed[0] = for_good
            _terminate(connection)
            lost.append(statement)

    sa.event.listen(db.engine, "commit", on_commit)
    sa.event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield lost
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", before)
        sa.event.remove(db.engine, "commit", on_commit)


def _count(model: Any) -> int:
    db.session.remove()
    return int(db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


ADMIN = as_user("root", admin=True)
ALICE = as_user("alice")


@dataclass(frozen=True)
class Write:
    """A request that writes: ``{ins}`` in its path is alice's installation id;
    the model it writes, and how many rows of it there are then."""

    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    status: int
    model: str
    rows: int = 1


WRITES = {
    "send": Write(
        "POST",
        "/messages",
        {"audience": {"users": ["alice"]}, "notification": {"title": "Sale"}},
        ADMIN,
        202,
        "Message",
    ),
    "inbox item": Write("POST", "/notifications", {"title": "Hello"}, ALICE, 201, "InboxItem"),
    "installation": Write(
        "POST",
        "/installations",
        {"appId": "shop-ios", "deviceType": "ios", "deviceToken": IOS_TOKEN},
        ALICE,
        201,
        "Installation",
        rows=2,
    ),
    "preferences": Write(
        "PATCH",
        "/preferences",
        {"categories": {"offers": {"web": False}}},
        ALICE,
        200,
        "Preference",
    ),
    "installation change": Write(
        "PATCH", "/installations/{ins}", {"badge": 3}, ALICE, 200, "Installation"
    ),
    "live activity token": Write(
        "POST",
        "/installations/{ins}/activities",
        {"activityId": "order-42", "pushToken": "cd" * 32},
        ALICE,
        201,
        "ActivityToken",
    ),
    "provider": Write(
        "POST",
        "/providers",
        {"appId": "shop-web", "kind": "fcm", "settings": {"credentials": service_account()}},
        ADMIN,
        201,
        "Provider",
    ),
}


def _installation(client: Any) -> str:
    """Alice's iPhone, registered before the connection is lost."""
    answer = client.post(
        "/push/installations",
        json={"appId": "shop-ios", "deviceType": "ios", "deviceToken": "ef" * 32},
        headers=as_user("alice"),
    )
    assert answer.status_code in (200, 201)
    return str(answer.get_json()["id"])


@on_postgres
@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_committed_before_the_connection_is_lost_is_answered_as_done(
    make_app: Callable[..., Flask], write: str
) -> None:
    """The answer is made from what was committed, without reading it again: a 500
    would have the client write it a second time."""
    given = WRITES[write]
    app = make_app(PUSH_CATEGORIES={"offers": {"label": "Offers"}})
    client = app.test_client()
    ins = _installation(client)  # made before: its write is not the one lost
    path = "/push" + given.path.format(ins=ins)
    with app.app_context():
        model = getattr(app.extensions["push"].push.models, given.model)
        with lost_after_commit():
            answer = client.open(path, method=given.method, json=given.body, headers=given.headers)
        assert answer.status_code == given.status, answer.get_json()
        assert "error" not in answer.get_json()
        assert _count(model) == given.rows
        # the pool has put the lost connection away: the next request works
        assert client.get("/push/notifications", headers=as_user("alice")).status_code == 200


@on_postgres
def test_a_send_answers_its_id_though_its_counts_cannot_be_read(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """The one read after a send's commit (its counts, for its status) is lost: the
    answer is the message as queued, and the log says why."""
    app = make_app()
    with app.app_context():
        with lost_after_commit() as lost:
            answer = app.test_client().post(
                "/push/messages",
                json={"audience": {"everyone": True}, "notification": {"title": "Sale"}},
                headers=as_user("root", admin=True),
            )
        assert answer.status_code == 202
        assert answer.get_json()["id"].startswith("msg_")
        assert answer.get_json()["status"] == "done"  # nobody to send it to
        assert len(lost) == 1 and "push_deliveries" in lost[0]
    [said] = [r for r in caplog.records if "its counts could not be read" in r.getMessage()]
    assert said.getMessage().startswith(f"flask-push: {answer.get_json()['id']} is queued")


@on_postgres
def test_a_send_answers_its_id_though_the_database_stays_down(
    make_app: Callable[..., Flask],
) -> None:
    """Every read after the commit fails, the message's own too: the answer is made
    from what the send committed, not a 503 saying nothing was changed (which a
    client would answer by sending it again)."""
    app = make_app()
    with app.app_context():
        with lost_after_commit(for_good=True) as lost:
            answer = app.test_client().post(
                "/push/messages",
                json={"audience": {"everyone": True}, "notification": {"title": "Sale"}},
                headers=as_user("root", admin=True),
            )
        assert answer.status_code == 202, answer.get_json()
        assert answer.get_json()["id"].startswith("msg_")
        assert lost
        db.session.remove()
        assert _count(app.extensions["push"].push.models.Message) == 1


@on_postgres
def test_a_connection_lost_between_requests_is_503_not_500(
    make_app: Callable[..., Flask], database: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The server restarts between two requests: the pool hands out a connection it
    has ended. The database answers again by the time flask-push asks, but this
    request could not be served: an outage to the client (503, Retry-After), not
    "something went wrong"."""
    name, options = named_connections(database)  # this app's connections only
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS=options, PUSH_QUEUE="inline")
    client = app.test_client()
    assert client.get("/push/notifications", headers=as_user("alice")).status_code == 200
    end_connections(name)
    answer = client.get("/push/notifications", headers=as_user("alice"))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.get_json()["error"]["code"] == "database_unavailable"
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    assert client.get("/push/notifications", headers=as_user("alice")).status_code == 200
