"""``POST /subscriptions`` costs one round trip to the database on the happy path.

The happy path is a new registration and the same browser registering again. Both
are one ``INSERT ... ON CONFLICT (endpoint) DO UPDATE ... RETURNING``. Counted, never
timed, through the real route:

- statements: SQLAlchemy's ``before_cursor_execute``, on both databases;
- on PostgreSQL, round trips on the wire too: libpq's protocol trace of the
  connection (psycopg's ``PGconn.trace``). Outside pipeline mode each exchange ends
  with one ``ReadyForQuery``, so the trace shows BEGIN, COMMIT and the pool's
  ROLLBACK at teardown, which statements do not. On SQLite, BEGIN and COMMIT are
  calls into the library in this process, not round trips.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from flask import Flask

from flask_push import signals

from conftest import as_user, browser_keys, db, push
from pgtrace import Trips, counted

INSERT = "INSERT INTO push_subscriptions"
SELECT = "SELECT push_subscriptions.id, push_subscriptions.endpoint,"


def engine_of(app: Flask) -> sa.Engine:
    with app.app_context():
        return db.engine


def register(app: Flask, body: dict[str, Any], user: str | None) -> tuple[Any, Trips]:
    """``POST /subscriptions`` as ``user``, counted. The request runs in an app context
    of its own, as in production: its teardown (the session's end, the connection's
    return to the pool) is part of what is counted."""
    with counted(engine_of(app)) as trips:
        response = app.test_client().post("/push/subscriptions", json=body, headers=as_user(user))
    return response, trips


def assert_one_round_trip(app: Flask, trips: Trips) -> None:
    assert trips.statements == [INSERT]
    if engine_of(app).dialect.name == "postgresql":
        # no BEGIN, no COMMIT, no ROLLBACK at teardown: one exchange, after which
        # the connection is idle, so the INSERT is committed
        assert trips.round_trips == 1, trips.exchanges
        assert trips.after[-1] == "I"


def stored(app: Flask, id: str) -> dict[str, Any]:
    """The row as another connection sees it: committed, not the session's copy."""
    s = push.models.Subscription.__table__
    with engine_of(app).connect() as conn:
        return dict(conn.execute(sa.select(s).where(s.c.id == id)).mappings().one())


def count_subscriptions(app: Flask) -> int:
    with engine_of(app).connect() as conn:
        table = push.models.Subscription.__table__
        return int(conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def test_registration_is_one_round_trip(app, make_subscription):
    # a warm pool: the connection is opened outside the counted requests
    app.test_client().post("/push/subscriptions", json=make_subscription())

    body = make_subscription(topics=["orders", "offers"], expirationTime=1893456000000)
    created, trips = register(app, body, "alice")
    assert created.status_code == 201
    assert_one_round_trip(app, trips)
    first = created.json
    row = stored(app, first["id"])
    assert (row["endpoint"], row["user_id"], row["topics"]) == (
        body["endpoint"],
        "alice",
        ["offers", "orders"],
    )
    assert (row["p256dh"], row["auth"]) == (body["keys"]["p256dh"], body["keys"]["auth"])
    assert (row["status"], row["dead_reason"], row["dead_at"]) == ("active", None, None)
    assert first["createdAt"] == first["lastSeenAt"]
    assert first["expirationTime"] == 1893456000000

    # the same browser again, with new keys and without topics: updated in place
    body = {**body, "keys": browser_keys()}
    del body["topics"]
    again, trips = register(app, body, "alice")
    assert again.status_code == 200
    assert_one_round_trip(app, trips)
    shown = again.json
    assert (shown["id"], shown["topics"], shown["createdAt"]) == (
        first["id"],
        ["offers", "orders"],
        first["createdAt"],
    )
    assert shown["lastSeenAt"] > first["lastSeenAt"]
    assert stored(app, first["id"])["p256dh"] == body["keys"]["p256dh"]

    # the endpoint moves to another user: re-bound, and it starts over
    del body["expirationTime"]
    moved, trips = register(app, body, "bob")
    assert moved.status_code == 200
    assert_one_round_trip(app, trips)
    shown = moved.json
    assert (shown["id"], shown["userId"], shown["topics"], shown["expirationTime"]) == (
        first["id"],
        "bob",
        [],
        None,
    )
    assert shown["createdAt"] > first["createdAt"]
    row = stored(app, first["id"])
    assert (row["user_id"], row["topics"], row["expires_at"]) == ("bob", [], None)

    # and to an anonymous browser, which asks for a topic
    anonymous, trips = register(app, {**body, "topics": ["news"]}, None)
    assert anonymous.status_code == 200
    assert_one_round_trip(app, trips)
    assert (anonymous.json["userId"], anonymous.json["topics"]) == (None, ["news"])

    # more of the same: psycopg's one-off prepare aside, still one each
    for user in ("carol", "carol", None, "dave"):
        response, trips = register(app, make_subscription(), user)
        assert response.status_code == 201
        assert_one_round_trip(app, trips)
    assert count_subscriptions(app) == 6  # the warm-up, the moving endpoint, four more


def test_a_dead_endpoint_is_refused_in_the_same_one_statement(app, make_subscription):
    body = make_subscription(topics=["offers"])
    first, _ = register(app, body, "alice")
    s = push.models.Subscription.__table__
    with engine_of(app).begin() as conn:
        conn.execute(
            sa.update(s)
            .where(s.c.id == first.json["id"])
            .values(status="dead", dead_reason="410 Gone")
        )
    before = stored(app, first.json["id"])
    refused, trips = register(app, {**body, "keys": browser_keys()}, "bob")
    assert refused.status_code == 410
    assert refused.json["error"]["code"] == "subscription_gone"
    assert trips.statements == [INSERT]
    assert stored(app, first.json["id"]) == before


def test_signal_receivers_read_the_subscription_without_a_round_trip(app, make_subscription):
    seen: list[tuple[str, list[str], bool]] = []

    def receiver(sender: Any, subscription: Any, created: bool) -> None:
        seen.append((subscription.id, subscription.topics, created))

    app.test_client().post("/push/subscriptions", json=make_subscription())
    with signals.subscription_added.connected_to(receiver):
        response, trips = register(app, make_subscription(topics=["offers"]), "alice")
    assert_one_round_trip(app, trips)
    assert seen == [(response.json["id"], ["offers"], True)]


def test_a_session_the_host_already_used_is_committed_as_before(
    app, make_subscription, monkeypatch
):
    """The host's identity_loader reads through db.session, so the request holds a
    transaction when the route runs: the INSERT joins it and one COMMIT ends both."""

    def identity() -> str:
        db.session.execute(sa.text("SELECT 1"))
        return "alice"

    app.test_client().post("/push/subscriptions", json=make_subscription())
    monkeypatch.setattr(push, "_identity_loader", identity)
    response, trips = register(app, make_subscription(), None)
    assert response.status_code == 201
    assert response.json["userId"] == "alice"
    assert trips.statements == ["SELECT 1", INSERT]
    if engine_of(app).dialect.name == "postgresql":
        assert trips.round_trips == 4, trips.exchanges  # BEGIN, SELECT 1, INSERT, COMMIT
        assert trips.after[-1] == "I"
    assert stored(app, response.json["id"])["user_id"] == "alice"


def test_without_upsert_support_a_select_then_a_write(app, make_subscription):
    """Databases without ON CONFLICT ... RETURNING (SQLite before 3.35) take a SELECT
    and then an INSERT or UPDATE, with the same answers."""
    dialect = engine_of(app).dialect
    dialect_returning = dialect.insert_returning
    dialect.insert_returning = False
    try:
        body = make_subscription(topics=["offers"])
        created, trips = register(app, body, "alice")
        assert created.status_code == 201
        assert trips.statements == [SELECT, INSERT]
        del body["topics"]
        again, trips = register(app, body, "alice")
        assert (again.status_code, again.json["id"], again.json["topics"]) == (
            200,
            created.json["id"],
            ["offers"],
        )
        assert trips.statements == [SELECT, "UPDATE push_subscriptions SET"]
        moved, _ = register(app, body, "bob")
        assert (moved.status_code, moved.json["userId"], moved.json["topics"]) == (
            200,
            "bob",
            [],
        )
        assert moved.json["createdAt"] > created.json["createdAt"]
        s = push.models.Subscription.__table__
        with engine_of(app).begin() as conn:
            conn.execute(sa.update(s).values(status="dead"))
        gone, _ = register(app, body, "bob")
        assert gone.status_code == 410
        assert count_subscriptions(app) == 1
    finally:
        dialect.insert_returning = dialect_returning


def test_a_race_to_register_one_endpoint_creates_it_once(app, make_subscription):
    """Two requests for one new endpoint at once: one creates it, the other finds it.
    (With a SELECT first, both could miss it, and the loser was answered 409.)"""
    body = make_subscription()
    start = threading.Barrier(2)
    statuses: list[int] = []

    def post() -> None:
        client = app.test_client()
        start.wait()
        statuses.append(client.post("/push/subscriptions", json=body).status_code)

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 201]
    assert count_subscriptions(app) == 1
