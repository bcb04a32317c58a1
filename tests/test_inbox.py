"""The inbox, through the Python API and through /notifications: one logic."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from flask_push import ValidationError, signals

from conftest import as_user, db, push


def add_items(app, user, count, **values):
    with app.app_context():
        return [
            push.upsert(
                user,
                title=f"{values.get('title', 'Item')} {i}",
                **{k: v for k, v in values.items() if k != "title"},
            ).id
            for i in range(count)
        ]


def test_upsert_creates_then_updates_in_place(app_ctx):
    item = push.upsert(
        "alice",
        notify_type="export",
        title="Export",
        body="0% done",
        progress={"total": 100, "processed": 0},
        data={"job": 7},
    )
    assert item.id.startswith("ntf_") and item.is_new and item.type == "export"
    created_at = item.created_at
    same = push.upsert("alice", item.id, body="40% done", progress={"total": 100, "processed": 40})
    assert same.id == item.id and same.title == "Export" and same.data == {"job": 7}
    assert same.progress == {"total": 100, "processed": 40}
    assert same.created_at == created_at and same.updated_at >= created_at
    result = push.search("alice")
    assert (result.total_count, result.new_count, len(result.items)) == (1, 1, 1)


def test_client_chosen_ids_are_per_user(app_ctx):
    push.upsert("alice", "export-7", title="Alice's export")
    push.upsert("bob", "export-7", title="Bob's export")
    assert push.search("alice").items[0].title == "Alice's export"
    assert push.search("bob").items[0].title == "Bob's export"


def test_search_newest_first_with_filters_and_pages(app, app_ctx):
    now = datetime.now(timezone.utc)
    for i in range(25):
        kind = "order" if i % 2 else "offer"
        item = push.upsert("alice", f"n{i:02}", notify_type=kind, title=f"#{i}", commit=False)
        item.created_at = now + timedelta(seconds=i)
    db.session.commit()
    push.mark_read("alice", "n24")

    first = push.search("alice", take=10)
    assert [i.id for i in first.items] == [f"n{i:02}" for i in range(24, 14, -1)]
    assert (first.total_count, first.new_count) == (25, 24)
    last = push.search("alice", skip=20, take=10)
    assert [i.id for i in last.items] == ["n04", "n03", "n02", "n01", "n00"]
    assert last.total_count == 25

    orders = push.search("alice", types=["order"], take=5)
    assert all(i.type == "order" for i in orders.items) and orders.total_count == 12
    # one type as a string is that type (not its letters, each a type)
    assert push.search("alice", types="order", take=5).to_json() == orders.to_json()
    fresh = push.search("alice", only_new=True, take=3)
    assert [i.id for i in fresh.items] == ["n23", "n22", "n21"]
    assert (fresh.total_count, fresh.new_count) == (24, 24)
    both = push.search("alice", only_new=True, types=["offer", "order"], take=100)
    assert both.total_count == 24
    assert push.search("nobody").to_json() == {"totalCount": 0, "newCount": 0, "items": []}


def test_mark_all_read_counts_and_signals(app, app_ctx):
    add_items(app, "alice", 3)
    add_items(app, "bob", 2)
    seen = []
    with signals.inbox_read.connected_to(lambda sender, **kw: seen.append(kw)):
        assert push.mark_all_read("alice") == 3
        assert push.mark_all_read("alice") == 0
    assert seen == [{"user_id": "alice", "count": 3}]
    assert push.search("alice").new_count == 0 and push.search("bob").new_count == 2


def test_saved_signal_fires_after_commit(app_ctx):
    seen = []
    with signals.inbox_item_saved.connected_to(
        lambda sender, **kw: seen.append((kw["item"].id, kw["created"]))
    ):
        item = push.upsert("alice", title="Hello")
        push.upsert("alice", item.id, title="Hello again")
        push.upsert("alice", title="Not yet", commit=False)
    assert seen == [(item.id, True), (item.id, False)]
    db.session.rollback()


def test_search_sees_the_callers_uncommitted_writes_and_opens_no_transaction(app_ctx):
    push.upsert("alice", title="Committed")
    db.session.close()
    # Outside a transaction the read runs on a connection of its own, in autocommit:
    # the session is left as it was, with nothing to roll back.
    assert push.search("alice").total_count == 1
    assert not db.session().in_transaction()
    # Inside one, it reads on the session's connection and sees what is not committed yet.
    push.upsert("alice", title="Pending", commit=False)
    page = push.search("alice")
    assert [item.title for item in page.items] == ["Pending", "Committed"]
    assert (page.total_count, page.new_count) == (2, 2)
    db.session.rollback()
    assert push.search("alice").total_count == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"title": None}, "title"),
        ({"title": "x" * 256}, "title"),
        ({"title": "  "}, "title"),
        ({"title": "ok", "url": "javascript:alert(1)"}, "url"),
        ({"title": "ok", "url": "//evil.example/x"}, "url"),
        ({"title": "ok", "url": "/\t/evil.example/x"}, "url"),
        ({"title": "ok", "notify_type": "has space"}, "type"),
        ({"title": "ok", "progress": {"total": -1, "processed": 0}}, "progress.total"),
        ({"title": "ok", "progress": {"done": 1}}, "progress"),
        ({"title": "ok", "data": ["not", "an", "object"]}, "data"),
        ({"title": "ok", "id": "no spaces allowed"}, "id"),
        ({"title": "ok", "is_new": "yes"}, "isNew"),
        # JSON that cannot be stored or sent as it is, at any depth, keys too
        ({"title": "ok", "data": {"k": "\ud800"}}, "data"),
        ({"title": "ok", "data": {"\udfff": 1}}, "data"),
        ({"title": "ok", "data": {"k": ["a", {"b": "x\x00y"}]}}, "data"),
        ({"title": "ok", "data": {"k": float("nan")}}, "data"),
        ({"title": "ok", "data": {"when": datetime(2030, 1, 1)}}, "data"),
        ({"title": "ok", "data": {1: "one"}}, "data"),
        ({"title": "ok", "progress": {"total": float("inf"), "processed": 0}}, "progress.total"),
    ],
)
def test_python_api_refuses_bad_values_and_writes_nothing(app_ctx, kwargs, field):
    with pytest.raises(ValidationError) as info:
        push.upsert("alice", **kwargs)
    assert info.value.field == field
    assert push.search("alice").total_count == 0


def test_python_api_refuses_a_user_id_that_cannot_be_stored(app_ctx):
    for user in ("u" * 256, "a\x00b", "\ud800"):
        with pytest.raises(ValidationError) as info:
            push.upsert(user, title="x")
        assert info.value.field == "userId"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.InboxItem)) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": {"k": "\ud800"}}, "data"),  # a lone surrogate, as JSON's "\ud800" gives
        ({"data": {"\ud800": "in a key"}}, "data"),
        ({"data": {"list": [1, ["deep", "\udc00"]]}}, "data"),
        ({"data": {"k": "NUL \x00 in it"}}, "data"),
        ({"title": "\ud800"}, "title"),
        ({"title": "a\x00b"}, "title"),
    ],
)
def test_http_unstorable_json_is_400_before_anything_is_written(app, client, body, field):
    """Such input once answered 201 (and broke the live event) or 500 after the commit."""
    response = client.post(
        "/push/notifications", headers=as_user("alice"), json={"title": "Hi", **body}
    )
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert (error["field"], error["code"]) == (field, "invalid_value")
    assert error["message"].endswith("NUL or unpaired surrogate characters"), error
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.InboxItem)) == 0


def test_http_list_item_upsert_read(client):
    alice = as_user("alice")
    created = client.post(
        "/push/notifications",
        headers=alice,
        json={
            "type": "order_status",
            "title": "Order #42",
            "body": "Out for delivery",
            "url": "/orders/42",
            "data": {"orderId": 42},
        },
    )
    assert created.status_code == 201
    item = created.json
    assert set(item) == {
        "id",
        "userId",
        "type",
        "title",
        "body",
        "url",
        "data",
        "isNew",
        "createdAt",
        "updatedAt",
        "progress",
    }
    assert (item["userId"], item["isNew"], item["url"]) == ("alice", True, "/orders/42")
    updated = client.post(
        "/push/notifications", headers=alice, json={"id": item["id"], "body": "Delivered"}
    )
    assert updated.status_code == 200 and updated.json["body"] == "Delivered"
    assert (
        client.get(f"/push/notifications/{item['id']}", headers=alice).json["body"] == "Delivered"
    )
    assert (
        client.get(f"/push/notifications/{item['id']}", headers=as_user("bob")).status_code == 404
    )

    page = client.get("/push/notifications", headers=alice).json
    assert (page["totalCount"], page["newCount"]) == (1, 1)
    read = client.post(f"/push/notifications/{item['id']}/read", headers=alice, json={})
    assert read.json == {"updated": 1}
    assert client.post(f"/push/notifications/{item['id']}/read", headers=alice, json={}).json == {
        "updated": 0
    }
    assert (
        client.post(
            f"/push/notifications/{item['id']}/read", headers=as_user("bob"), json={}
        ).status_code
        == 404
    )
    assert client.get("/push/notifications?onlyNew=true", headers=alice).json["totalCount"] == 0


def test_http_query_parameters(app, client):
    add_items(app, "alice", 5, notify_type="offer")
    add_items(app, "alice", 3, notify_type="order")
    alice = as_user("alice")
    page = client.get("/push/notifications?type=order&take=2", headers=alice).json
    assert (page["totalCount"], len(page["items"])) == (3, 2)
    assert client.get("/push/notifications?type=order,offer", headers=alice).json["totalCount"] == 8
    assert (
        client.get("/push/notifications?type=order&type=offer&skip=7", headers=alice)
        .json["items"]
        .__len__()
        == 1
    )
    for query, field in (
        ("take=0", "take"),
        ("take=101", "take"),
        ("skip=-1", "skip"),
        ("take=ten", "take"),
        ("skip=%EF%BC%91", "skip"),  # a fullwidth 1, which int() reads as 1
        ("skip=%201", "skip"),
        ("skip=1_0", "skip"),
        ("onlyNew=maybe", "onlyNew"),
        ("type=a%20b", "type"),
    ):
        response = client.get(f"/push/notifications?{query}", headers=alice)
        assert response.status_code == 400, query
        assert response.json["error"]["field"] == field


def test_http_mark_all_read(app, client):
    add_items(app, "alice", 4)
    response = client.post(
        "/push/notifications/mark-all-read",
        headers=as_user("alice"),
        content_type="application/json",
    )
    assert response.json == {"updated": 4}


def test_http_writing_another_users_inbox_needs_admin(client):
    response = client.post(
        "/push/notifications", headers=as_user("alice"), json={"userId": "bob", "title": "Hi"}
    )
    assert response.status_code == 403
    response = client.post(
        "/push/notifications",
        headers=as_user("staff", admin=True),
        json={"userId": "bob", "title": "Export", "progress": {"total": 10, "processed": 1}},
    )
    assert response.status_code == 201 and response.json["userId"] == "bob"
    page = client.get("/push/notifications", headers=as_user("bob")).json
    assert page["items"][0]["progress"] == {"total": 10, "processed": 1}


def test_http_inbox_needs_a_user(client):
    for method, url in (
        ("get", "/push/notifications"),
        ("post", "/push/notifications"),
        ("post", "/push/notifications/mark-all-read"),
        ("get", "/push/notifications/x"),
    ):
        response = getattr(client, method)(url, json={} if method == "post" else None)
        assert response.status_code == 401, url


def test_http_bad_upsert_writes_nothing(app, client):
    response = client.post(
        "/push/notifications",
        headers=as_user("alice"),
        json={"title": "Hi", "url": "javascript:alert(1)"},
    )
    assert response.status_code == 400 and response.json["error"]["field"] == "url"
    response = client.post(
        "/push/notifications", headers=as_user("alice"), json={"body": "no title"}
    )
    assert response.json["error"] == {
        "code": "required",
        "field": "title",
        "message": "is required for a new item",
    }
    response = client.post(
        "/push/notifications", headers=as_user("alice"), json={"title": "x", "color": 1}
    )
    assert response.json["error"]["code"] == "unknown_field"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.InboxItem)) == 0


def counters(user):
    row = db.session.get(push.models.InboxCounter, user)
    return (row.total, row.unread) if row else (0, 0)


def test_counters_follow_every_write(app_ctx):
    from flask_push import inbox

    first = push.upsert("alice", title="One")
    push.upsert("alice", title="Two", is_new=False)
    push.upsert("alice", "three", title="Three")
    assert counters("alice") == (3, 2)
    push.upsert("alice", first.id, is_new=False)
    push.upsert("alice", first.id, is_new=False)  # no change, no double count
    assert counters("alice") == (3, 1)
    push.upsert("alice", first.id, is_new=True, body="again")
    assert counters("alice") == (3, 2)
    assert push.mark_read("alice", "three") == 1
    assert push.mark_read("alice", "three") == 0
    assert push.mark_all_read("alice") == 1
    assert counters("alice") == (3, 0)
    assert inbox.recount(db.session, push.models, "alice") == (3, 0)
    page = push.search("alice")
    assert (page.total_count, page.new_count) == (3, 0)


def test_concurrent_writers_keep_the_counters_exact(app):
    """Threads upsert and mark read at once; the counters still match the rows."""

    from flask_push import inbox

    def writer(n):
        with app.app_context():
            for i in range(15):
                item = push.upsert("alice", f"w{n}-{i}", title="x")
                if i % 3 == 0:
                    push.mark_read("alice", item.id)
                if i % 5 == 0:
                    push.mark_all_read("alice")
            db.session.remove()

    with app.app_context():
        push.upsert("alice", title="seed")  # the counter row exists before the race
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        stored = counters("alice")
        assert stored == inbox.recount(db.session, push.models, "alice")
        assert stored[0] == 61


def test_writers_of_one_new_id_at_once_all_succeed(app):
    """Requests that create the same client-chosen id at once (a client retrying,
    two updates of one activity) make one item: the first creates it, the others
    update it. (The losers once answered 409 "retry".)"""

    client = app.test_client()
    start = threading.Barrier(6)
    statuses = []

    def writer(n):
        start.wait()
        response = client.post(
            "/push/notifications",
            headers=as_user("alice"),
            json={"id": "order-42", "title": f"Order #42 ({n})"},
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 5 + [201]
    with app.app_context():
        assert counters("alice") == (1, 1)
        assert push.search("alice").total_count == 1


def test_sends_to_the_same_users_in_other_orders_do_not_deadlock(app):
    """Two admins send at once to the same 200 users, listed A to Z and Z to A, each
    with an inbox item: each item locks its user's counter until the commit, so
    they are written in the order of the users' ids, not as listed. Written as
    listed, the two sends waited for each other, and PostgreSQL ended one (a 500,
    and its message and items were lost)."""

    users = [f"user-{n:03}" for n in range(200)]
    with app.app_context():
        for user in users:  # their counters exist: each send updates, and locks, them
            push.upsert(user, title="Welcome")
    start = threading.Barrier(2)
    answers = []

    def sender(audience):
        client = app.test_client()
        start.wait()
        for _ in range(3):
            response = client.post(
                "/push/messages",
                headers=as_user("sam", admin=True),
                json={
                    "audience": {"users": audience},
                    "notification": {"title": "Sale", "inbox": True},
                },
            )
            answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=sender, args=(a,)) for a in (users, users[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in answers] == [202] * 6, answers
    with app.app_context():
        assert counters("user-000") == (7, 7) and counters("user-199") == (7, 7)


def test_an_item_kept_loaded_is_read_again_before_it_is_updated(app):
    """A worker upserts one item for a while (a job's progress), keeping it loaded
    through its commits. Meanwhile alice reads it and a request changes its body.
    The worker's next upserts see both: its own title is written though the title
    it held was the same, and the item stays read with the new body, in the
    database, in what upsert returns and in the live event."""

    client = app.test_client()

    def elsewhere(path, body):
        thread = threading.Thread(
            target=lambda: client.post(path, headers=as_user("alice"), json=body)
        )
        thread.start()
        thread.join()

    with app.app_context():
        push.upsert("alice", "job-1", title="Running")
        elsewhere("/push/notifications", {"id": "job-1", "title": "Paused"})
        again = push.upsert("alice", "job-1", title="Running")
        assert again.title == "Running"
        elsewhere("/push/notifications/job-1/read", {})
        elsewhere("/push/notifications", {"id": "job-1", "body": "Half done"})
        latest = push.upsert("alice", "job-1", progress={"total": 2, "processed": 1})
        assert (latest.is_new, latest.body) == (False, "Half done")
    with app.app_context():
        [item] = push.search("alice").items
        assert (item.title, item.body, item.is_new) == ("Running", "Half done", False)
        assert counters("alice") == (1, 0)
        kept = push.state.get_realtime().backplane.replay("user:alice", 0).events
        shown = [e.data for e in kept if e.event == "notification"][-1]
        assert (shown["isNew"], shown["body"]) == (False, "Half done")


def test_an_id_created_since_the_lookup_is_updated(app_ctx, monkeypatch):
    """The losing side of that race, made certain: the lookup misses an item that
    another request committed meanwhile, the insert fails in its savepoint, and
    the item is updated instead, in the same transaction."""
    push.upsert("alice", "order-42", title="Placed", body="We have it")
    db.session.remove()
    session = db.session()
    real_get = session.get
    missed = []

    def get_missing_once(*args, **kwargs):
        if not missed:
            missed.append(args)
            return None
        return real_get(*args, **kwargs)

    monkeypatch.setattr(session, "get", get_missing_once)
    item = push.upsert("alice", "order-42", title="Out for delivery", notify_type="order_status")
    assert missed, "the lookup was not made"
    assert (item.title, item.body, item.type) == ("Out for delivery", "We have it", "order_status")
    db.session.remove()
    assert counters("alice") == (1, 1)
    assert [i.title for i in push.search("alice").items] == ["Out for delivery"]


def test_an_uncommitted_write_the_caller_rolls_back_leaves_nothing(app_ctx):
    """``commit=False`` with a chosen id: the caller's rollback takes it all back
    (a SAVEPOINT around the insert committed it on SQLite, without its count)."""
    push.upsert("alice", "a", title="Rolled back", commit=False)
    db.session.rollback()
    assert push.search("alice").total_count == 0
    assert counters("alice") == (0, 0)


def kept_events(user: str) -> list[tuple[str, Any]]:
    """The events ``user:<user>``'s channel keeps, oldest first."""
    kept = push.state.get_realtime().backplane.replay(f"user:{user}", 0).events
    return [(event.event, event.data) for event in kept]


def test_a_write_in_a_savepoint_rolled_back_is_not_announced(app_ctx):
    """``commit=False`` inside a savepoint the caller rolls back, then the caller
    commits the rest: the item was never written, yet its ``notification`` event
    went out with the commit, and every open page showed an item it could not load
    (404). Only the savepoint's rollback decides: one released goes with the commit."""
    with pytest.raises(RuntimeError):
        with db.session.begin_nested():
            push.upsert("alice", "ghost", title="Never written", commit=False)
            raise RuntimeError("the host's other work in the savepoint fails")
    with db.session.begin_nested():
        push.upsert("alice", "kept", title="Written", commit=False)
    db.session.commit()
    assert [item.id for item in push.search("alice").items] == ["kept"]
    shown = [data["id"] for event, data in kept_events("alice") if event == "notification"]
    assert shown == ["kept"]


def test_announcing_a_change_needs_no_second_connection(make_app, database, monkeypatch):
    """The live unread count is read on the request's one connection, or after the
    caller's commit has given it back: with a pool of one, every write is announced
    at once. (A second connection per request deadlocked a pool under load: each
    request held one and waited for another, until the pool's timeout.)"""
    options = {
        **database.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
        "pool_size": 1,
        "max_overflow": 0,
        "pool_timeout": 3,
    }
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS=options)
    published = []
    realtime = app.extensions["push"].get_realtime()
    monkeypatch.setattr(
        realtime, "publish", lambda channel, event, data: published.append((channel, event, data))
    )

    def unread():
        counts = [data["count"] for _, event, data in published if event == "unread"]
        published.clear()
        return counts

    client = app.test_client()
    created = client.post("/push/notifications", json={"title": "Hi"}, headers=as_user("alice"))
    assert created.status_code == 201, created.get_json()
    assert unread() == [1]
    with app.app_context():
        push.upsert("alice", "later", title="Later", commit=False)
        assert unread() == []  # not before the caller's commit
        db.session.commit()
        assert unread() == [2]
        if db.engine.dialect.name != "sqlite":  # pysqlite's SAVEPOINT runs outside BEGIN
            with db.session.begin_nested():
                push.mark_all_read("alice", commit=False)
            assert unread() == []  # a savepoint is not a commit
            db.session.rollback()
            assert unread() == []
        push.mark_all_read("alice")
        assert unread() == [0]
    assert client.post(
        "/push/notifications/mark-all-read", json={}, headers=as_user("alice")
    ).get_json() == {"updated": 0}
