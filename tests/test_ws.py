"""The websocket endpoint against a live server (CONTRACT.md section 5)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import simple_websocket
from flask import Flask, request
from wsproto.frame_protocol import FrameProtocol, Opcode

from flask_push.errors import ValidationError
from flask_push.realtime import budget as budget_module
from flask_push.realtime import hub as hub_module
from flask_push.realtime import inbox_events
from flask_push.realtime import ws as ws_module
from flask_push.realtime.budget import FrameBudget, Verdict
from flask_push.realtime.events import Event, Gap
from flask_push.realtime.hub import Connection, Hub, direct_socket

from conftest import REDIS_URL, as_user, db, push, wait_until
from wslive import Client, ServerProcess, serve


@pytest.fixture
def database(tmp_path: Any) -> dict[str, Any]:
    # The socket protocol does not touch the database; one is enough here.
    return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}"}


@pytest.fixture
def live(make_app: Callable[..., Flask]) -> Iterator[Callable[..., tuple[Flask, str]]]:
    """Start a live server for an app with the given config; yields (app, ws url)."""
    started: list[Any] = []

    def start(**config: Any) -> tuple[Flask, str]:
        config.setdefault("PUSH_WS_HEARTBEAT", 0)
        app = make_app(**config)
        context = serve(app)
        origin = context.__enter__()
        started.append(context)
        return app, f"{origin}/push/ws"

    clients: list[Client] = []
    yield start
    for client in clients:
        client.close()
    for context in reversed(started):
        context.__exit__(None, None, None)


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def open_(url: str, user: str | None = None, **options: Any) -> Client:
        client = Client(url, user, **options)
        clients.append(client)
        return client

    yield open_
    for client in clients:
        client.close()


def publish(app: Flask, channel: str, event: str, data: Any = None) -> int:
    with app.app_context():
        return push.publish(channel, event, data)


def test_joins_own_channel(live: Any, connect: Any) -> None:
    app, url = live()
    alice, bob = connect(url, "alice"), connect(url, "bob")
    alice.sync(), bob.sync()
    first = publish(app, "user:alice", "hello", {"n": 1})
    assert alice.recv() == {
        "op": "event", "channel": "user:alice", "id": first, "event": "hello", "data": {"n": 1},
    }  # fmt: skip
    bob.nothing()


@pytest.fixture(params=["memory", "redis"])
def backplane(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The config of a backplane: memory, or a prefix of this test's own in the real
    Redis."""
    if request.param == "memory":
        return {}
    prefix = request.getfixturevalue("redis_prefix")
    return {"PUSH_BACKPLANE_URL": REDIS_URL, "PUSH_BACKPLANE_PREFIX": prefix}


def hold_handlers(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Hold each websocket's handler after the 101 until ``go`` is set; ``holding`` is
    set once one waits."""
    holding, go = threading.Event(), threading.Event()
    serve = ws_module._serve

    def held(ws: Any) -> None:
        holding.set()
        assert go.wait(10)
        serve(ws)

    monkeypatch.setattr(ws_module, "_serve", held)
    return holding, go


def test_what_is_published_to_the_user_once_the_socket_is_open_arrives(
    live: Any, connect: Any, monkeypatch: pytest.MonkeyPatch, backplane: dict[str, Any]
) -> None:
    # The handler joins user:<id> once the 101 has gone, and a client may count on
    # live events from `open` on: here the handler is held back until an event
    # was published (with Redis, before this process even subscribes).
    app, url = live(**backplane)
    holding, go = hold_handlers(monkeypatch)
    alice = connect(url, "alice")  # open
    assert holding.wait(10)
    first = publish(app, "user:alice", "hello", {"n": 1})
    go.set()
    assert alice.recv() == {
        "op": "event", "channel": "user:alice", "id": first, "event": "hello", "data": {"n": 1},
    }  # fmt: skip
    last = publish(app, "user:alice", "after")  # live, or in the replay: once either way
    assert alice.recv()["id"] == last
    alice.nothing()


OWN = {"op": "subscribed", "channel": "user:alice", "own": True}


def test_a_client_that_asks_is_told_its_own_channel_first(live: Any, connect: Any) -> None:
    """A page may follow other users' channels too (a staff page): `?own=` has the
    server name the user's own one, whose events are the page's inbox."""
    app, url = live()
    alice = connect(f"{url}?own=", "alice")
    assert alice.recv() == OWN
    first = publish(app, "user:alice", "hello")
    assert alice.recv()["id"] == first
    alice.send({"op": "subscribe", "channel": "user:alice"})  # named once, not per join
    assert alice.recv() == {"op": "subscribed", "channel": "user:alice"}
    connect(f"{url}?own=").sync()  # anonymous: no channel of its own to name
    connect(url, "alice").sync()  # not asked: not named, as before


def test_a_reconnect_says_how_far_it_got_and_is_replayed_the_rest_before_live_events(
    live: Any, connect: Any, monkeypatch: pytest.MonkeyPatch, backplane: dict[str, Any]
) -> None:
    """A client that asked with a `subscribe` after the open could have a live event
    answered first, and then drop the older ones replayed after it as seen. Said in
    the socket's URL, the replay comes before anything live."""
    app, url = live(**backplane)
    ids = [publish(app, "user:alice", "tick", {"n": n}) for n in range(3)]
    holding, go = hold_handlers(monkeypatch)
    alice = connect(f"{url}?own=user:alice&since={ids[0]}", "alice")
    assert holding.wait(10)
    during = publish(app, "user:alice", "tick", {"n": 3})  # after the 101, before the join
    go.set()
    assert alice.recv() == OWN
    assert [alice.recv()["id"] for _ in range(3)] == [*ids[1:], during]
    after = publish(app, "user:alice", "tick", {"n": 4})
    assert alice.recv()["id"] == after
    alice.nothing()


def test_since_for_another_channel_than_the_users_own_is_not_taken(live: Any, connect: Any) -> None:
    """Another user signed in since the last socket: the ids the client holds are of
    that user's channel, and say nothing of this one."""
    app, url = live()
    publish(app, "user:alice", "old")
    alice = connect(f"{url}?own=user:bob&since=0", "alice")
    assert alice.recv() == OWN
    alice.nothing()  # not replayed from 0
    latest = publish(app, "user:alice", "new")
    assert alice.recv()["id"] == latest


def test_since_the_last_kept_event_on_reconnect_is_a_gap(live: Any, connect: Any) -> None:
    app, url = live(PUSH_EVENTS_KEEP_COUNT=2)
    ids = [publish(app, "user:alice", "tick") for _ in range(4)]
    alice = connect(f"{url}?own=user:alice&since={ids[0]}", "alice")
    assert alice.recv() == OWN
    assert alice.recv() == {"op": "gap", "channel": "user:alice"}
    assert [alice.recv()["id"] for _ in range(2)] == ids[2:]


#: a websocket handshake's headers, as written by hand
_UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
    "X-User": "alice",
}


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("since=3", "give that channel as 'own' too"),
        ("own=user:alice&since=-1", "'since' must be a whole number"),
        ("own=user:alice&since=1.5", "'since' must be a whole number"),
        ("own=user:alice&since=%EF%BC%91", "'since' must be a whole number"),  # a wide 1
        (f"own=user:alice&since={2**63}", "'since' must be a whole number"),
        (f"own=user:alice&since={'9' * 5000}", "'since' must be a whole number"),
    ],
)
def test_a_bad_since_in_the_url_gets_400_before_the_upgrade(
    live: Any, connect: Any, query: str, said: str
) -> None:
    app, url = live()
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", f"/push/ws?{query}", headers=_UPGRADE)
    answer = conn.getresponse()
    body = json.loads(answer.read())
    conn.close()
    assert answer.status == 400 and answer.getheader("Upgrade") is None
    assert body["error"]["code"] == "bad_request" and said in body["error"]["message"]
    connect(url, "alice").sync()  # the server lives


def test_anonymous_joins_nothing_and_may_not_join_a_user(live: Any, connect: Any) -> None:
    app, url = live()
    anonymous = connect(url)
    anonymous.send({"op": "subscribe", "channel": "user:alice"})
    reply = anonymous.recv()
    assert reply["op"] == "error" and reply["code"] == "forbidden"
    publish(app, "user:alice", "secret")
    anonymous.nothing()


def test_subscribe_own_and_forbidden(live: Any, connect: Any) -> None:
    app, url = live()
    alice = connect(url, "alice")
    alice.send({"op": "subscribe", "channel": "user:alice"})
    assert alice.recv() == {"op": "subscribed", "channel": "user:alice"}
    alice.send({"op": "subscribe", "channel": "user:bob"})
    reply = alice.recv()
    assert (reply["op"], reply["code"]) == ("error", "forbidden") and reply["message"]
    assert reply["channel"] == "user:bob"  # which join it answers
    alice.send({"op": "subscribe", "channel": "order:42"})
    reply = alice.recv()
    assert reply["code"] == "forbidden"
    # says what the host must do: there is no channel_authorizer yet
    assert reply["message"] == (
        "You may not join 'order:42': a socket joins only its own user:<id> channel "
        "unless the app registers @push.channel_authorizer to allow others."
    )


def test_channel_authorizer_and_unsubscribe(live: Any, connect: Any) -> None:
    app, url = live()
    previous = push._channel_authorizer
    push.channel_authorizer(lambda user_id, channel: channel.startswith("order:"))
    try:
        client = connect(url, "carol")
        client.send({"op": "subscribe", "channel": "order:42"})
        assert client.recv() == {"op": "subscribed", "channel": "order:42"}
        publish(app, "order:42", "status", {"status": "out_for_delivery"})
        event = client.recv()
        assert (event["channel"], event["event"], event["data"]) == (
            "order:42", "status", {"status": "out_for_delivery"},
        )  # fmt: skip
        client.send({"op": "unsubscribe", "channel": "order:42"})
        client.sync()
        publish(app, "order:42", "status", {"status": "delivered"})
        client.nothing()
        client.send({"op": "subscribe", "channel": "shop:news"})
        assert client.recv()["message"] == (
            "You may not join 'shop:news': the app's channel_authorizer said no."
        )
    finally:
        push._channel_authorizer = previous


def test_a_refused_subscribe_to_a_channel_followed_leaves_it(live: Any, connect: Any) -> None:
    """alice follows order:1; her access to it is taken away, and her page subscribes
    again: told she may not join it, she gets nothing more of it either."""
    app, url = live()
    allowed = {"order:1"}
    previous = push._channel_authorizer
    push.channel_authorizer(lambda user_id, channel: channel in allowed)
    try:
        client = connect(url, "alice")
        client.send({"op": "subscribe", "channel": "order:1"})
        assert client.recv() == {"op": "subscribed", "channel": "order:1"}
        allowed.clear()
        client.send({"op": "subscribe", "channel": "order:1"})
        assert client.recv()["code"] == "forbidden"
        publish(app, "order:1", "status", {"paid": True})
        client.nothing()
    finally:
        push._channel_authorizer = previous


def test_subscribing_again_to_a_channel_followed_loses_no_event(
    live: Any, connect: Any, backplane: dict[str, Any]
) -> None:
    """A page's on() for a channel its socket follows subscribes again, without
    ``since``; an event published meanwhile (here: while the authorizer is asked)
    still comes. (It was taken for one seen already, and dropped.)"""
    app, url = live(**backplane)
    asked: list[str] = []
    published: list[int] = []

    def authorize(user_id: str | None, channel: str) -> bool:
        asked.append(channel)
        if len(asked) == 2:  # the second subscribe: an order changes meanwhile
            published.append(push.publish("order:1", "status", {"n": 2}))
        return True

    previous = push._channel_authorizer
    push.channel_authorizer(authorize)
    try:
        client = connect(url, "alice")
        client.send({"op": "subscribe", "channel": "order:1"})
        assert client.recv() == {"op": "subscribed", "channel": "order:1"}
        client.send({"op": "subscribe", "channel": "order:1"})
        assert client.recv() == {"op": "subscribed", "channel": "order:1"}
        event = client.recv()
        assert (event["id"], event["data"]) == (published[0], {"n": 2})
    finally:
        push._channel_authorizer = previous


def test_a_socket_follows_a_bounded_number_of_channels(
    live: Any, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that joins channel after channel (an authorizer that lets anyone
    follow any ``product:<id>``) is refused past the limit: each channel joined costs
    the process memory for as long as the socket lives."""
    monkeypatch.setattr(hub_module, "MAX_CHANNELS", 3, raising=False)
    app, url = live()
    previous = push._channel_authorizer
    push.channel_authorizer(lambda user_id, channel: True)
    try:
        client = connect(url, "carol")  # on user:carol already
        for n in (1, 2):
            client.send({"op": "subscribe", "channel": f"product:{n}"})
            assert client.recv() == {"op": "subscribed", "channel": f"product:{n}"}
        client.send({"op": "subscribe", "channel": "product:3"})
        refused = client.recv()
        assert (refused["op"], refused["code"]) == ("error", "too_many_channels")
        assert refused["channel"] == "product:3"
        assert "3 channels" in refused["message"]
        # a channel it follows may be asked for again, and leaving one makes room
        client.send({"op": "subscribe", "channel": "product:2"})
        assert client.recv() == {"op": "subscribed", "channel": "product:2"}
        client.send({"op": "unsubscribe", "channel": "product:1"})
        client.send({"op": "subscribe", "channel": "product:3"})
        assert client.recv() == {"op": "subscribed", "channel": "product:3"}
        publish(app, "product:3", "stock", {"left": 2})
        assert client.recv()["event"] == "stock"
    finally:
        push._channel_authorizer = previous


def test_a_user_left_out_of_an_activity_leaves_its_channel_at_once(
    live: Any, connect: Any, backplane: dict[str, Any]
) -> None:
    """A courier replaced by another (the activity's latest call leaves them out) is
    made to leave its channel before its next state (a door code) goes out there, in
    every process; the users still in it keep it."""
    app, url = live(**backplane)
    with app.app_context():
        push.activity("order-42", users=["alice", "courier_a"], title="Order #42", event="start")
    clients = {user: connect(url, user) for user in ("alice", "courier_a", "carol")}
    for client in clients.values():
        client.sync()
        client.send({"op": "subscribe", "channel": "activity:order-42"})
    assert clients["alice"].recv() == {"op": "subscribed", "channel": "activity:order-42"}
    assert clients["courier_a"].recv() == {"op": "subscribed", "channel": "activity:order-42"}
    assert clients["carol"].recv()["code"] == "forbidden"

    with app.app_context():
        push.activity(
            "order-42", users=["alice", "courier_b"], title="Order #42", state={"door": "4711"}
        )
    assert clients["courier_a"].recv() == {
        "op": "error",
        "code": "forbidden",
        "channel": "activity:order-42",
        "message": "You no longer follow 'activity:order-42': the activity's latest call "
        "leaves you out.",
    }
    clients["courier_a"].nothing()  # no door code
    event = clients["alice"].recv()
    while event["channel"] != "activity:order-42":  # her own channel's come too
        event = clients["alice"].recv()
    assert event["data"]["state"] == {"door": "4711"}
    # nor can the socket join it again
    clients["courier_a"].send({"op": "subscribe", "channel": "activity:order-42"})
    assert clients["courier_a"].recv()["code"] == "forbidden"
    clients["carol"].nothing()


def test_a_user_left_out_while_their_socket_joins_does_not_stay_on(
    live: Any, connect: Any, backplane: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the socket is let in, then the call that leaves its user out commits
    and its shut-out passes this process, and only then is the socket on the channel.
    Asked again once joined, it is refused: no replay and no live state reach it."""
    app, url = live(**backplane)
    with app.app_context():
        push.activity("order-42", users=["alice", "courier_a"], title="Order #42", event="start")
    real = type(push).may_join
    answers: list[bool] = []

    def may_join(self: Any, user_id: str | None, channel: str) -> bool:
        allowed = real(self, user_id, channel)
        answers.append(allowed)
        if channel == "activity:order-42" and len(answers) == 1:
            self.activity(
                "order-42", users=["alice", "courier_b"], title="Order #42", state={"door": "4711"}
            )
        return allowed

    monkeypatch.setattr(type(push), "may_join", may_join)
    courier = connect(url, "courier_a")
    courier.sync()
    courier.send({"op": "subscribe", "channel": "activity:order-42", "since": 0})
    refused = courier.recv()
    assert (refused["op"], refused["code"]) == ("error", "forbidden"), refused
    assert answers == [True, False]
    courier.nothing()  # no door code, replayed or live
    with app.app_context():
        push.activity("order-42", users=["alice", "courier_b"], title="Order #42", event="end")
    courier.nothing()


def test_a_server_that_serves_one_request_at_a_time_is_named_in_the_log(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """gunicorn's default sync worker (here Werkzeug's, unthreaded) serves a websocket,
    and nothing else of that process until it closes: said once, in the log."""
    from werkzeug.serving import make_server

    monkeypatch.setattr(ws_module, "_said", set())
    app = make_app(PUSH_WS_HEARTBEAT=0)
    with serve(app) as origin:  # threaded: nothing to say
        client = Client(f"{origin}/push/ws", "alice")
        client.sync()
        client.close()
    assert "one request at a time" not in caplog.text

    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        for _ in range(2):
            client = Client(f"ws://127.0.0.1:{server.server_port}/push/ws", "alice")
            client.sync()
            client.close()
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()
    said = [r.getMessage() for r in caplog.records if "one request at a time" in r.getMessage()]
    assert len(said) == 1, said
    assert "gunicorn -k gevent" in said[0] and "--threads N" in said[0]


def test_memory_on_a_server_of_several_processes_is_named_in_the_log(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """gunicorn -w 4 with the default memory://: an event reaches the sockets of the
    process that published it only, and the others' clients miss it. Said once, when
    a websocket opens in a process whose server says it runs several."""
    monkeypatch.setattr(ws_module, "_said", set())
    app = make_app(PUSH_WS_HEARTBEAT=0)
    with serve(app) as origin:  # one process: nothing to say
        client = Client(f"{origin}/push/ws", "alice")
        client.sync()
        client.close()
    assert "several processes" not in caplog.text

    served = app.wsgi_app

    def as_a_worker_of_several(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.multiprocess"] = True  # as gunicorn says with -w 2 or more
        return served(environ, start_response)

    app.wsgi_app = as_a_worker_of_several  # type: ignore[method-assign]
    with serve(app) as origin:
        for _ in range(2):
            client = Client(f"{origin}/push/ws", "alice")
            client.sync()
            client.close()
    said = [r.getMessage() for r in caplog.records if "several processes" in r.getMessage()]
    assert len(said) == 1, said
    assert "PUSH_BACKPLANE_URL is memory://" in said[0] and "redis://" in said[0]


def test_ping_pong(live: Any, connect: Any) -> None:
    _, url = live()
    client = connect(url, "alice")
    client.send({"op": "ping"})
    assert client.recv() == {"op": "pong"}
    # an id is given back: the answer to this ping, not a heartbeat's pong
    for id in (0, 7, 2**53 - 1):
        client.send({"op": "ping", "id": id})
        assert client.recv() == {"op": "pong", "id": id}
    for id in (-1, 2**53, 1.5, True, "7", None, [1]):
        client.send({"op": "ping", "id": id})
        answer = client.recv()
        assert answer["op"] == "error" and answer["code"] == "bad_request", (id, answer)
        assert "'id'" in answer["message"]


def test_heartbeat(live: Any, connect: Any) -> None:
    _, url = live(PUSH_WS_HEARTBEAT=1)
    client = connect(url, "alice")
    # a pong nobody asked for, after a second without traffic (the generous wait
    # only ends a hang)
    assert client.recv(timeout=30) == {"op": "pong"}


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"op": "dance"}',
        '{"channel": "user:alice"}',
        '{"op": "subscribe"}',
        '{"op": "subscribe", "channel": ""}',
        '{"op": "subscribe", "channel": "nul\\u0000"}',
        '{"op": "subscribe", "channel": "' + "x" * 261 + '"}',
        '{"op": "subscribe", "channel": "user:alice", "since": -1}',
        '{"op": "subscribe", "channel": "user:alice", "since": "3"}',
        '{"op": "subscribe", "channel": "user:alice", "since": true}',
        b"\x00binary",
        "[" * 10_000,  # json.loads raises RecursionError, not ValueError
        '{"op": ' + "[" * 900 + "]" * 900 + "}",  # deep, whether it parses or not
        '{"op": "subscribe", "channel": "user:\\ud800"}',  # no UTF-8 text holds it
    ],
)
def test_bad_frames_get_an_error_and_the_connection_lives(
    live: Any, connect: Any, frame: Any
) -> None:
    app, url = live()
    client = connect(url, "alice")
    client.ws.send(frame)
    reply = client.recv()
    assert reply["op"] == "error" and reply["code"] == "bad_request" and reply["message"]
    # a join refused for its 'since' names its channel; a frame with no valid one not
    assert reply.get("channel") == ("user:alice" if '"since"' in str(frame) else None)
    client.sync()
    publish(app, "user:alice", "still", {})
    assert client.recv()["event"] == "still"


def test_oversize_frame_closes_with_1009_and_the_server_lives(live: Any, connect: Any) -> None:
    _, url = live(PUSH_WS_MAX_MESSAGE_BYTES=1024)
    client = connect(url, "alice")
    client.send({"op": "ping", "pad": "x" * 2000})
    with pytest.raises(simple_websocket.ConnectionClosed) as closed:
        for _ in range(10):
            client.ws.receive(timeout=3)
    assert closed.value.reason == 1009
    connect(url, "alice").sync()


def test_oversize_frame_after_the_handshake_ends_the_handler(live: Any, connect: Any) -> None:
    # The limit is surely set once a ping came back: simple-websocket's reader refuses
    # the frame itself, and the handler must notice and end, not wait forever.
    app, url = live(PUSH_WS_MAX_MESSAGE_BYTES=1024)
    client = connect(url, "alice")
    client.sync()
    hub = app.extensions["push"].realtime.hub
    assert hub.count() == 1
    client.send({"op": "ping", "pad": "x" * 2000})
    with pytest.raises(simple_websocket.ConnectionClosed) as closed:
        client.ws.receive(timeout=3)
    assert closed.value.reason == 1009
    deadline = time.monotonic() + 10
    while hub.count():
        assert time.monotonic() < deadline, "the handler of the refused socket lives on"
        time.sleep(0.01)


def test_a_client_that_floods_is_refused_then_closed_and_others_are_served(
    live: Any, connect: Any, backplane: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of frames a second (a loop gone wrong, or an attack) would keep a core
    busy, and ask the authorizer and Redis for each join: past its budget a frame is
    refused, and a client that keeps on is closed with a reason, logged once."""
    app, url = live(PUSH_WS_RATE_LIMIT="10/hour", **backplane)
    flood = connect(url, "mallory")
    for id in range(10):  # the burst: each answered
        flood.send({"op": "ping", "id": id})
        assert flood.recv() == {"op": "pong", "id": id}
    flood.send({"op": "subscribe", "channel": "user:mallory"})
    refused = flood.recv()
    assert (refused["op"], refused["code"]) == ("error", "rate_limited")
    assert refused["channel"] == "user:mallory"  # the join to send again
    assert "10 frames an hour" in refused["message"]
    flood.send("not json")  # a frame of any kind counts, and is refused alike
    assert flood.recv()["code"] == "rate_limited"
    with pytest.raises(simple_websocket.ConnectionClosed) as closed:
        for _ in range(budget_module.GRACE + 10):
            flood.send({"op": "ping"})
        while True:
            assert flood.recv()["code"] == "rate_limited"
    assert closed.value.reason == 1008
    assert closed.value.message == "Too many frames: more than 10 frames an hour"
    said = [r.getMessage() for r in caplog.records if "PUSH_WS_RATE_LIMIT" in r.getMessage()]
    assert len(said) == 1 and "'mallory'" in said[0], said
    # another client (of the same user, even) has a budget of its own
    other = connect(url, "mallory")
    other.sync()
    publish(app, "user:mallory", "still", {})
    assert other.recv()["event"] == "still"


def test_a_user_holds_at_most_ws_max_per_user_sockets(
    live: Any, connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Each socket holds a thread (or greenlet) and a queue of the process for as long as
    it lives: a user's script that opens them without end is closed with a reason past
    PUSH_WS_MAX_PER_USER, and logged. Other users and anonymous clients are not counted
    against them, and a socket that ends makes room."""
    app, url = live(PUSH_WS_MAX_PER_USER=3)
    held = [connect(url, "mallory") for _ in range(3)]
    for client in held:
        client.sync()

    def refused() -> simple_websocket.ConnectionClosed:
        with pytest.raises(simple_websocket.ConnectionClosed) as closed:
            connect(url, "mallory").sync()
        return closed.value

    one_too_many = refused()
    assert one_too_many.reason == 1008
    assert one_too_many.message == (
        "Too many live connections: at most 3 for one user; close one and retry"
    )
    said = [r.getMessage() for r in caplog.records if "PUSH_WS_MAX_PER_USER" in r.getMessage()]
    assert len(said) == 1 and "'mallory'" in said[0], said
    connect(url, "alice").sync()
    connect(url).sync()
    # the three she holds are served as before
    publish(app, "user:mallory", "still", {})
    assert [client.recv()["event"] for client in held] == ["still"] * 3
    held.pop().close()

    def admitted() -> bool:
        try:
            connect(url, "mallory").sync()
        except simple_websocket.ConnectionClosed:
            return False
        return True

    # the server counts her socket out once its handler has ended
    assert wait_until(admitted, timeout=10)
    assert refused().reason == 1008  # three again: the new one and the two left


def test_ws_max_per_user_none_counts_no_sockets(live: Any, connect: Any) -> None:
    app, url = live(PUSH_WS_MAX_PER_USER=None)
    assert app.extensions["push"].settings.ws_max_per_user is None
    for _ in range(5):
        connect(url, "mallory").sync()
    assert app.extensions["push"].get_realtime().hub._per_user == {}


def test_ping_frames_spend_the_budget_too(
    live: Any, connect: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """simple-websocket's reader answers a ping frame without the handler: a flood of
    them (600,000 in 3 s from one client) went past any budget the handler keeps.

    The pongs within the budget go out before the close frame, however late the
    reader gets to write them: here it writes them a moment after it read the
    frames (on a busy machine the handler's close had gone out first)."""
    reader_send = ws_module._ReaderSocket.send

    def late(self: Any, data: bytes) -> int:
        if threading.current_thread() is self._ws.thread:  # not the handler's close
            time.sleep(0.2)
        return reader_send(self, data)

    monkeypatch.setattr(ws_module._ReaderSocket, "send", late)
    _, url = live(PUSH_WS_RATE_LIMIT="10/hour")
    raw = _raw_client(url, "mallory")
    reader = _joined(raw, "user:mallory")  # one frame of the budget spent
    raw.sendall(reader.protocol.ping(b"p") * (9 + budget_module.GRACE + 10))
    raw.settimeout(5)
    closing = None
    while closing is None:
        chunk = raw.recv(1 << 16)
        assert chunk, "the socket ended without a close frame"
        reader.protocol.receive_bytes(chunk)
        for frame in reader.protocol.received_frames():
            if frame.opcode is Opcode.PONG:
                reader.pongs.append(bytes(frame.payload))
            elif frame.opcode is Opcode.CLOSE:
                closing = frame.payload
    assert reader.pongs == [b"p"] * 9  # those within the budget, and no more
    assert closing == (1008, "Too many frames: more than 10 frames an hour")
    said = [r.getMessage() for r in caplog.records if "PUSH_WS_RATE_LIMIT" in r.getMessage()]
    assert len(said) == 1, said
    raw.close()
    connect(url, "mallory").sync()


def test_a_client_far_ahead_of_its_answers_is_read_no_further(
    live: Any, connect: Any, monkeypatch: pytest.MonkeyPatch, backplane: dict[str, Any]
) -> None:
    """A client that sends and never reads: once its answers fill the socket, the
    handler waits to write them, and what the client sends meanwhile must not pile
    up in the server's memory (here with no frame budget, which would close it)."""
    sockets: list[Any] = []
    serve = ws_module._serve

    def seen(ws: Any) -> None:
        sockets.append(ws)
        serve(ws)

    monkeypatch.setattr(ws_module, "_serve", seen)
    app, url = live(PUSH_WS_RATE_LIMIT=None, **backplane)
    raw = _raw_client(url, "mallory")
    _joined(raw, "user:mallory")
    (ws,) = sockets
    # each answer (the unknown op given back) is as long as the frame
    frame = FrameProtocol(client=True, extensions=[]).send_data(json.dumps({"op": "x" * 200}))
    raw.settimeout(2)
    try:
        for _ in range(200):  # 200 × 1000 frames, 44 MB: far past any socket buffer
            raw.sendall(frame * 1000)
    except TimeoutError:
        pass  # the server reads no further: the kernel's buffers are full
    # at most the limit, and the frames of the one read that went past it
    assert len(ws.input_buffer) <= ws_module.MAX_UNREAD_FRAMES + ws.receive_bytes // len(frame) + 1
    other = connect(url, "alice")  # the server still serves others
    other.sync()
    raw.close()
    hub = app.extensions["push"].realtime.hub
    deadline = time.monotonic() + 10  # the blocked handler fails its write and ends
    while hub.count() != 1:
        assert time.monotonic() < deadline, "the handler of the closed socket lives on"
        time.sleep(0.01)


@pytest.mark.parametrize("sends", ["on", "nothing"])
def test_the_reader_of_a_socket_the_server_closed_ends_whatever_the_client_does(
    live: Any, monkeypatch: pytest.MonkeyPatch, sends: str
) -> None:
    """After the server's close frame (here for a flood), a client that never answers
    it, and either sends on or sends nothing: simple-websocket's reader must end, and
    keep nothing of what it reads, instead of living as long as the client does."""
    sockets: list[Any] = []
    serve = ws_module._serve

    def seen(ws: Any) -> None:
        sockets.append(ws)
        serve(ws)

    monkeypatch.setattr(ws_module, "_serve", seen)
    _, url = live(PUSH_WS_RATE_LIMIT="10/hour")
    raw = _raw_client(url, "mallory")
    protocol = _joined(raw, "user:mallory").protocol
    (ws,) = sockets
    ping = protocol.send_data(json.dumps({"op": "ping"}))
    stop = threading.Event()

    def read() -> None:  # the client reads (the close frame among the rest)
        raw.settimeout(0.1)
        while not stop.is_set():
            try:
                if not raw.recv(1 << 16):
                    return
            except TimeoutError:
                pass
            except OSError:
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        raw.sendall(ping * (10 + budget_module.GRACE + 10))  # closed for it
        while sends == "on" and ws.thread.is_alive():
            try:
                raw.sendall(ping * 100)
            except OSError:
                break  # the server ended the stream
        deadline = time.monotonic() + 10
        while ws.thread.is_alive():
            assert time.monotonic() < deadline, "the reader of the closed socket lives on"
            time.sleep(0.01)
        assert len(ws.input_buffer) <= ws_module.MAX_UNREAD_FRAMES
    finally:
        stop.set()
        reader.join()
        raw.close()


def test_a_frame_budget_refills_and_is_spent_by_refusals_too() -> None:
    budget = FrameBudget(3, 60, now=0.0)
    assert [budget.spend(0.0) for _ in range(4)] == [Verdict.ANSWER] * 3 + [Verdict.REFUSE]
    # a client that waits is answered again: one frame every 20 s here, and the
    # refused one cost a token too
    assert budget.spend(20.0) is Verdict.REFUSE
    assert budget.spend(60.0) is Verdict.ANSWER
    assert budget.spend(1000.0) is Verdict.ANSWER  # never more than the burst saved up
    assert [budget.spend(1000.0) for _ in range(3)] == [Verdict.ANSWER] * 2 + [Verdict.REFUSE]
    verdicts = [budget.spend(1000.0) for _ in range(budget_module.GRACE)]
    assert verdicts[-1] is Verdict.CLOSE and set(verdicts[:-1]) == {Verdict.REFUSE}
    assert budget.said() == "3 frames a minute"
    assert FrameBudget(5, 7, now=0.0).said() == "5 frames per 7 seconds"


def test_no_frame_budget_when_the_limit_is_off(live: Any, connect: Any) -> None:
    _, url = live(PUSH_WS_RATE_LIMIT=None)
    client = connect(url, "alice")
    for _ in range(3 * budget_module.GRACE):
        client.send({"op": "ping"})
    for _ in range(3 * budget_module.GRACE):
        assert client.recv() == {"op": "pong"}


def test_replay_since_in_order_without_duplicates(live: Any, connect: Any) -> None:
    app, url = live()
    ids = [publish(app, "user:alice", "tick", {"n": n}) for n in range(1, 6)]
    assert ids == list(range(ids[0], ids[0] + 5))
    client = connect(url, "alice")
    client.sync()
    client.send({"op": "subscribe", "channel": "user:alice", "since": ids[1]})
    assert client.recv() == {"op": "subscribed", "channel": "user:alice"}
    assert [client.recv()["id"] for _ in range(3)] == ids[2:]
    assert publish(app, "user:alice", "tick", {"n": 6}) == ids[-1] + 1
    assert client.recv()["id"] == ids[-1] + 1
    client.nothing()


class _MovedClock:
    """The ``time`` module as the websocket handler sees it, with a monotonic clock
    the test moves on."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead


def test_replays_asked_for_again_and_again_become_gaps(
    live: Any, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each replay may be as long as the channel keeps, for a frame of a few bytes:
    past REPLAY_BURST replays that sent events, a join with `since` gets a gap
    (reload) instead, until the socket has earned another."""
    # One replay earned in 1000 s of the handler's clock, which the test moves on: a
    # slow run of the burst earns none (with 2 s of real time it did, under load).
    monkeypatch.setattr(hub_module, "REPLAY_EVERY", 1000.0)
    clock = _MovedClock()
    monkeypatch.setattr(ws_module, "time", clock)
    app, url = live()
    ids = [publish(app, "user:alice", "tick") for _ in range(3)]
    client = connect(url, "alice")
    client.sync()
    # a rejoin that finds nothing to replay costs nothing
    for _ in range(hub_module.REPLAY_BURST + 5):
        client.send({"op": "subscribe", "channel": "user:alice", "since": ids[-1]})
        assert client.recv() == {"op": "subscribed", "channel": "user:alice"}
    client.nothing()
    ask = {"op": "subscribe", "channel": "user:alice", "since": ids[0]}
    for _ in range(hub_module.REPLAY_BURST):
        client.send(ask)
        assert client.recv()["op"] == "subscribed"
        assert [client.recv()["id"] for _ in range(2)] == ids[1:]
    client.send(ask)
    assert client.recv()["op"] == "subscribed"
    assert client.recv() == {"op": "gap", "channel": "user:alice"}
    client.nothing()
    # still joined: live events come
    latest = publish(app, "user:alice", "tick")
    assert client.recv()["id"] == latest
    clock.ahead += 1000.0  # one more earned
    client.send(ask)
    assert client.recv()["op"] == "subscribed"
    assert [client.recv()["id"] for _ in range(3)] == [*ids[1:], latest]
    client.send(ask)
    assert client.recv()["op"] == "subscribed"
    assert client.recv()["op"] == "gap"


def test_replay_races_live_events(live: Any, connect: Any) -> None:
    app, url = live(PUSH_EVENTS_KEEP_COUNT=1000)
    client = connect(url, "alice")
    client.sync()
    done = threading.Event()
    published: list[int] = []

    def publisher() -> None:
        with app.app_context():
            for n in range(200):
                published.append(push.publish("user:alice", "tick", {"n": n}))
                if n == 50:
                    done.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    done.wait(5)
    client.send({"op": "subscribe", "channel": "user:alice", "since": 0})
    thread.join(10)
    expected = list(range(published[0], published[0] + 200))
    assert published == expected
    ids, ops = [], set()
    while len(ids) < 200 or ids[-1] < expected[-1]:
        frame = client.recv()
        ops.add(frame["op"])
        if frame["op"] == "event":
            ids.append(frame["id"])
    # live events before the subscribe, then the replay, then live again: each id once
    assert sorted(set(ids)) == expected
    # the replay starts at the first id (live events may have come before it)
    replayed = ids[len(ids) - 1 - ids[::-1].index(expected[0]) :]
    assert replayed == expected
    assert "gap" not in ops  # since=0 and the channel's first event is kept: nothing missing


def test_gap_when_events_are_no_longer_kept(live: Any, connect: Any) -> None:
    app, url = live(PUSH_EVENTS_KEEP_COUNT=3)
    ids = [publish(app, "user:alice", "tick") for _ in range(6)]
    client = connect(url, "alice")
    client.send({"op": "subscribe", "channel": "user:alice", "since": ids[0]})
    assert client.recv()["op"] == "subscribed"
    assert client.recv() == {"op": "gap", "channel": "user:alice"}
    assert [client.recv()["id"] for _ in range(3)] == ids[3:]
    # nothing missing: no gap
    client.send({"op": "subscribe", "channel": "user:alice", "since": ids[4]})
    assert client.recv()["op"] == "subscribed"
    assert client.recv()["id"] == ids[5]
    client.send({"op": "subscribe", "channel": "user:alice", "since": ids[5]})
    assert client.recv()["op"] == "subscribed"
    client.nothing()
    # an id beyond the latest is from an earlier numbering (whose clock was ahead):
    # the client must reload, and every kept event is new to it
    client.send({"op": "subscribe", "channel": "user:alice", "since": ids[5] + 99})
    assert client.recv()["op"] == "subscribed"
    assert client.recv() == {"op": "gap", "channel": "user:alice"}
    assert [client.recv()["id"] for _ in range(3)] == ids[3:]
    client.nothing()


def test_a_restarted_server_numbers_above_the_ids_clients_hold(live: Any, connect: Any) -> None:
    """The memory backplane lives and dies with its process; the next one starts each
    channel at the clock, above the old ids: a client's ``since`` is a gap, and no
    new event looks like one it has seen."""
    app, url = live()
    client = connect(url, "alice")
    client.sync()
    old = publish(app, "user:alice", "tick", {"n": 1})
    assert client.recv()["id"] == old
    client.close()
    restarted, url = live()  # the next process, with a backplane of its own
    new = [publish(restarted, "user:alice", "tick", {"n": n}) for n in (2, 3)]
    assert min(new) > old
    client = connect(url, "alice")
    client.send({"op": "subscribe", "channel": "user:alice", "since": old})
    assert client.recv()["op"] == "subscribed"
    assert client.recv() == {"op": "gap", "channel": "user:alice"}
    assert [(f["id"], f["data"]) for f in (client.recv(), client.recv())] == [
        (new[0], {"n": 2}), (new[1], {"n": 3}),
    ]  # fmt: skip
    client.nothing()


def test_after_a_gap_the_hub_hands_on_lower_ids() -> None:
    """Events numbered anew below the ids sent (a Redis whose clock is behind) come
    after a gap, in order; before it, an id at or below the last sent is a copy."""
    hub = Hub()
    connection = Connection(threading.Event(), None, max_queue=10)
    hub.join(connection, "c")
    connection.last_ids["c"] = 500
    hub.deliver(Event("c", 501, "e", "1"))
    hub.deliver(Event("c", 501, "e", "1"))  # a copy (replay and live overlap): skipped
    hub.gap(Gap("c", resume=10))
    hub.deliver(Event("c", 11, "e", "2"))
    hub.deliver(Event("c", 12, "e", "3"))
    assert [json.loads(item.frame) for item in connection.take()] == [
        {"op": "event", "channel": "c", "id": 501, "event": "e", "data": 1},
        {"op": "gap", "channel": "c"},
        {"op": "event", "channel": "c", "id": 11, "event": "e", "data": 2},
        {"op": "event", "channel": "c", "id": 12, "event": "e", "data": 3},
    ]
    assert hub.joined() == {"c": 12}  # where a resync would start


def test_gap_when_events_expired(live: Any, connect: Any, backplane_clock: list[float]) -> None:
    app, url = live(PUSH_EVENTS_KEEP_SECONDS=1)
    publish(app, "user:alice", "old")
    backplane_clock[0] += 1.1
    publish(app, "user:alice", "new")
    client = connect(url, "alice")
    client.send({"op": "subscribe", "channel": "user:alice", "since": 0})
    assert client.recv()["op"] == "subscribed"
    assert client.recv() == {"op": "gap", "channel": "user:alice"}
    assert client.recv()["event"] == "new"


def test_publish_from_a_worker_thread_and_outside_requests(live: Any, connect: Any) -> None:
    app, url = live()
    client = connect(url, "alice")
    client.sync()
    thread = threading.Thread(target=publish, args=(app, "user:alice", "from-thread", [1]))
    thread.start()
    thread.join(5)
    assert client.recv()["data"] == [1]
    result = app.test_cli_runner().invoke(args=["push", "stats"])  # the CLI still works
    assert result.exit_code == 0, result.output


def test_publish_refuses_bad_names(app: Flask) -> None:
    with app.app_context():
        for channel in ("", "a\x00b", "x" * 261, "user:\ud800"):
            with pytest.raises(ValidationError) as refused:
                push.publish(channel, "e")
            assert refused.value.field == "channel"
            assert str(refused.value) == (
                "channel: must be 1-260 characters, without NUL or lone surrogates"
            )
        for event in ("", "a b", "x" * 201):
            with pytest.raises(ValidationError) as refused:
                push.publish("news", event)
            assert refused.value.field == "event"


def test_any_user_id_has_a_channel_of_its_own(
    live: Any, connect: Any, backplane: dict[str, Any]
) -> None:
    """A user id may hold spaces and be as long as a user id may be: its user's
    channel is still a channel, and the live events reach them."""
    user = "Ada Lovelace " + "x" * 242
    assert len(user) == 255  # the longest user id
    app, url = live(**backplane)
    ada = connect(url, user)
    ada.sync()
    with app.app_context():
        push.upsert(user, "n1", title="Hi")
    assert _next(ada, "notification")["userId"] == user
    assert _next(ada, "unread") == {"count": 1}
    ada.send({"op": "subscribe", "channel": f"user:{user}"})
    assert ada.recv() == {"op": "subscribed", "channel": f"user:{user}"}


def _next(client: Client, event: str) -> Any:
    frame = client.recv()
    assert frame["op"] == "event" and frame["event"] == event, frame
    return frame["data"]


def test_inbox_events(live: Any, connect: Any) -> None:
    app, url = live()
    alice = connect(url, "alice")
    alice.sync()
    with app.app_context():
        item = push.upsert(
            "alice", "export-1", title="Export", progress={"total": 2, "processed": 1}
        )
    shown = _next(alice, "notification")
    assert shown["id"] == "export-1" and shown["progress"] == {"total": 2, "processed": 1}
    assert shown["userId"] == "alice" and shown["isNew"] is True and item is not None
    assert _next(alice, "unread") == {"count": 1}

    http = app.test_client()
    answer = http.post(
        "/push/notifications", json={"id": "n2", "title": "Hi"}, headers=as_user("alice")
    )
    assert answer.status_code == 201
    assert _next(alice, "notification")["title"] == "Hi"
    assert _next(alice, "unread") == {"count": 2}

    assert (
        http.post("/push/notifications/n2/read", json={}, headers=as_user("alice")).status_code
        == 200
    )
    assert _next(alice, "unread") == {"count": 1}
    assert http.post(
        "/push/notifications/mark-all-read", json={}, headers=as_user("alice")
    ).json == {"updated": 1}
    assert _next(alice, "unread") == {"count": 0}

    with app.app_context():
        message = push.send(users=["alice"], title="Order shipped", inbox=True)
    shown = _next(alice, "notification")
    assert shown["id"] == message.id and shown["title"] == "Order shipped"
    assert _next(alice, "unread") == {"count": 1}
    alice.nothing()


def test_inbox_events_wait_for_the_callers_commit(live: Any, connect: Any) -> None:
    app, url = live()
    alice = connect(url, "alice")
    alice.sync()
    with app.app_context():
        push.upsert("alice", "a", title="Rolled back", commit=False)
        db.session.rollback()
        push.upsert("alice", "b", title="Later", commit=False)
        alice.nothing()
        db.session.commit()
    assert _next(alice, "notification")["title"] == "Later"
    assert _next(alice, "unread") == {"count": 1}
    with app.app_context():
        push.mark_all_read("alice", commit=False)
        alice.nothing()
        db.session.commit()
    assert _next(alice, "unread") == {"count": 0}
    alice.nothing()


def _raw_client(url: str, user: str) -> socket.socket:
    """A websocket client that completes the handshake and then never reads."""
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(5)
    raw.connect((host, int(port)))
    raw.sendall(
        f"GET /push/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nX-User: {user}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0]
    return raw


def test_a_slow_client_is_dropped_and_others_still_receive(live: Any, connect: Any) -> None:
    app, url = live(PUSH_WS_QUEUE_SIZE=4)
    slow = _raw_client(url, "bob")
    # its handler joins apart from the handshake: counted before that, the slow
    # client would look dropped from the start
    _joined(slow, "user:bob")
    fast = connect(url, "bob")
    fast.sync()
    hub = app.extensions["push"].realtime.hub
    assert hub.count() == 2
    blob = os.urandom(32 * 1024).hex()  # not compressible: it fills the socket buffers
    # A publish never waits for the slow client (a broadcast writes what its socket
    # takes and queues the rest, as the tests of Connection below show): each one
    # returns and the fast client has it, until the slow one's queue overflows.
    for n in range(300):
        publish(app, "user:bob", "blob", {"n": n, "blob": blob})
        assert _next(fast, "blob")["n"] == n
        if hub.count() == 1:
            break
    deadline = time.monotonic() + 10  # its handler leaves the channel on its own thread
    while hub.count() != 1:
        assert time.monotonic() < deadline, "the slow client was not dropped"
        time.sleep(0.01)
    # the slow client's socket was closed: reading drains what was sent, then ends
    slow.settimeout(5)
    try:
        while slow.recv(65536):
            pass
    except ConnectionResetError:
        pass
    slow.close()
    publish(app, "user:bob", "after", {})
    assert _next(fast, "after") == {}


def _bytes_to_the_end(sock: socket.socket) -> bytes:
    """What the server sends until it ends the stream."""
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_socket_the_client_closes_ends_with_the_close_frame(live: Any) -> None:
    """Werkzeug's development server writes an HTTP answer ("HTTP/1.1 200 OK ...")
    once the handler returns: behind the close frame it reads as a broken frame, which
    Chromium's console shows as "Invalid frame header". The stream ends after it."""
    _, url = live()
    raw = _raw_client(url, "alice")
    _joined(raw, "user:alice")  # served: its handler runs
    raw.sendall(FrameProtocol(client=True, extensions=[]).close(1000, "bye"))
    server = FrameProtocol(client=False, extensions=[])  # how the server writes it
    assert _bytes_to_the_end(raw) == server.close(1000, "bye")
    raw.close()


def test_a_socket_the_server_closes_ends_with_the_close_frame(live: Any) -> None:
    """The same when the server closes it (here, for a frame over the limit): its
    close frame, the client's answer, and the end of the stream."""
    _, url = live(PUSH_WS_MAX_MESSAGE_BYTES=1024)
    raw = _raw_client(url, "alice")
    protocol = _joined(raw, "user:alice").protocol
    raw.sendall(protocol.send_data(json.dumps({"op": "ping", "pad": "x" * 2000})))
    closing = FrameProtocol(client=False, extensions=[]).close(1009, "Message is too big")
    received = b""
    while len(received) < len(closing):
        received += raw.recv(len(closing) - len(received))
    assert received == closing
    raw.sendall(protocol.close(1009))
    assert _bytes_to_the_end(raw) == b""
    raw.close()


class _Reader:
    """The client's end of a socket the hub writes to: reads its bytes as
    websocket frames (unmasked, from a server) and gives their JSON."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.protocol = FrameProtocol(client=True, extensions=[])
        #: the payloads of the pong frames read so far
        self.pongs: list[bytes] = []

    def frames(self, count: int, pongs: int = 0) -> list[dict[str, Any]]:
        """The next ``count`` messages, read on until ``pongs`` pongs came in all."""
        out: list[dict[str, Any]] = []
        text = ""
        self.sock.settimeout(5)
        while len(out) < count or len(self.pongs) < pongs:
            chunk = self.sock.recv(1 << 16)
            assert chunk, "the socket closed"
            self.protocol.receive_bytes(chunk)
            for frame in self.protocol.received_frames():  # raises on a broken stream
                if frame.opcode is Opcode.PONG:
                    self.pongs.append(bytes(frame.payload))
                    continue
                assert frame.opcode in (Opcode.TEXT, Opcode.CONTINUATION)
                text += frame.payload
                if frame.message_finished:
                    out.append(json.loads(text))
                    text = ""
        return out

    def pending(self) -> bytes:
        """Whatever the socket holds now, without waiting."""
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1 << 20)
        except BlockingIOError:
            return b""
        finally:
            self.sock.setblocking(True)


def _joined(client: socket.socket, channel: str) -> _Reader:
    """Subscribe a raw client to ``channel`` and read the answer: from then on its
    handler has joined the channel, and gets what is published to it."""
    subscribe = {"op": "subscribe", "channel": channel}
    client.sendall(FrameProtocol(client=True, extensions=[]).send_data(json.dumps(subscribe)))
    reader = _Reader(client)
    assert reader.frames(1) == [{"op": "subscribed", "channel": channel}]
    return reader


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of blocking sockets: the server's end, the client's end."""
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def _event(n: int, data: str = "1") -> Event:
    return Event("c", n, "e", data)


def test_a_broadcast_writes_to_idle_sockets_and_wakes_no_handler(pair: Any) -> None:
    server, client = pair
    hub = Hub()
    wake = threading.Event()
    connection = Connection(wake, server, max_queue=4)
    hub.join(connection, "c")
    for n in (1, 2, 3):
        hub.deliver(_event(n, str(n)))
    assert [(f["id"], f["data"]) for f in _Reader(client).frames(3)] == [(1, 1), (2, 2), (3, 3)]
    assert not wake.is_set(), "the handler was woken for events already written"
    assert connection.queue == [] and connection.pending == b""
    hub.deliver(_event(2))  # a copy of one sent: skipped
    hub.leave(connection, "c")
    hub.deliver(_event(4))  # after leaving: not sent
    assert _Reader(client).pending() == b""


def test_a_full_socket_falls_back_to_the_queue_in_order(pair: Any) -> None:
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hub = Hub()
    wake = threading.Event()
    connection = Connection(wake, server, max_queue=4)
    hub.join(connection, "c")
    big = json.dumps("x" * 1_000_000)  # more than the socket's buffers hold
    hub.deliver(_event(1, big))
    assert connection.pending, "the whole frame fitted: nothing to fall back from"
    assert wake.is_set(), "the handler was not woken to write the rest"
    for n in (2, 3, 4):
        hub.deliver(_event(n))
    assert [item.id for item in connection.queue] == [2, 3, 4]  # type: ignore[union-attr]
    # What the handler does when woken: the rest of the frame, then the queue.
    writer = threading.Thread(
        target=lambda: server.sendall(
            connection.pending + b"".join(item.wire for item in connection.take())
        )
    )
    writer.start()
    frames = _Reader(client).frames(4)
    writer.join(5)
    assert [f["id"] for f in frames] == [1, 2, 3, 4]
    assert frames[0]["data"] == json.loads(big)


def test_a_broadcast_waits_behind_the_handlers_own_writes(pair: Any) -> None:
    """While the handler writes (it holds the connection's lock), a broadcast
    queues and wakes it instead of writing into the middle of its frames."""
    server, client = pair
    hub = Hub()
    wake = threading.Event()
    connection = Connection(wake, server, max_queue=4)
    hub.join(connection, "c")
    with connection.lock:
        hub.deliver(_event(1))
        assert _Reader(client).pending() == b""
        assert wake.is_set()
    hub.deliver(_event(2))  # the handler has not taken the queue yet: behind it
    assert [item.id for item in connection.take()] == [1, 2]  # type: ignore[union-attr]
    assert _Reader(client).pending() == b""


def test_a_queue_that_fills_drops_the_connection(pair: Any) -> None:
    server, _ = pair
    hub = Hub()
    connection = Connection(threading.Event(), server, max_queue=2)
    hub.join(connection, "c")
    with connection.lock:  # a handler stuck writing to a client that does not read
        for n in (1, 2, 3):
            hub.deliver(_event(n))
    assert connection.dropped
    assert len(connection.queue) == 2


def test_gevent_sockets_are_written_without_waiting(pair: Any) -> None:
    """Under gevent the direct write uses the non-blocking socket inside gevent's,
    which never waits for room (gevent's own send would switch to the hub)."""
    gsocket = pytest.importorskip("gevent.socket", reason="pip install -e '.[test]' brings gevent")
    server, client = pair
    wrapped = gsocket.socket(fileno=server.detach())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        direct = direct_socket(wrapped)
        assert direct is not None
        raw, flags = direct
        sent = raw.send(b"x" * 10_000_000, flags)
        assert 0 < sent < 10_000_000
        with pytest.raises(BlockingIOError):
            while True:
                raw.send(b"x" * 1_000_000, flags)
    finally:
        wrapped.close()


def test_a_socket_with_a_timeout_gets_no_direct_writes(pair: Any) -> None:
    server, _ = pair
    server.settimeout(5)  # its send would wait for room
    assert direct_socket(server) is None
    assert direct_socket(None) is None


def test_replies_reach_a_client_that_reads_slowly_whole_under_gevent(tmp_path: Path) -> None:
    """A replay to a client that reads slowly fills the socket's buffers. Under
    gevent (as in gunicorn's gevent worker) one ``send`` writes only what fits, so
    each reply must be written to its end, or the client gets a broken stream."""
    pytest.importorskip("gevent", reason="pip install -e '.[test]' brings gevent")
    server = ServerProcess("memory://", "test", tmp_path / "app.db", "ws_gevent_server.py")
    try:
        blob = os.urandom(16 * 1024).hex()  # not compressible: 32 KiB a frame
        ids = []
        for n in range(40):
            status, body = server.publish("user:alice", "blob", {"n": n, "blob": blob})
            assert status == 200, body
            ids.append(body["id"])
        client = _raw_client(server.ws, "alice")
        subscribe = {"op": "subscribe", "channel": "user:alice", "since": 0}
        client.sendall(
            FrameProtocol(client=True, extensions=[]).send_data(json.dumps(subscribe), fin=True)
        )
        time.sleep(0.5)  # the server writes the replay until the buffers are full
        frames = _Reader(client).frames(41)
        client.close()
    finally:
        server.stop()
    assert frames[0] == {"op": "subscribed", "channel": "user:alice"}
    assert [frame["id"] for frame in frames[1:]] == ids
    assert all(frame["data"] == {"n": n, "blob": blob} for n, frame in enumerate(frames[1:]))


def test_a_socket_the_server_closes_ends_under_gevent_if_the_client_never_answers(
    tmp_path: Path,
) -> None:
    """gevent's server leaves a socket to simple-websocket's reader once the handler
    has ended, and the reader waits for the client's close frame: a client that never
    sends it kept the socket, and the reader, for as long as it stayed connected."""
    pytest.importorskip("gevent", reason="pip install -e '.[test]' brings gevent")
    server = ServerProcess("memory://", "test", tmp_path / "app.db", "ws_gevent_server.py")
    try:
        raw = _raw_client(server.ws, "alice")
        protocol = _joined(raw, "user:alice").protocol
        raw.sendall(protocol.send_data(json.dumps({"op": "ping", "pad": "x" * 20_000})))
        closing = FrameProtocol(client=False, extensions=[]).close(1009, "Message is too big")
        assert _bytes_to_the_end(raw) == closing  # then the end of the stream
        raw.close()
    finally:
        server.stop()


def test_a_client_that_reads_late_gets_every_event_in_order(live: Any, connect: Any) -> None:
    """Events that do not fit the socket wait in the connection's queue and follow
    the frame begun, in order, while other clients get theirs at once."""
    app, url = live(PUSH_WS_QUEUE_SIZE=1000)
    late = _raw_client(url, "bob")
    reader = _joined(late, "user:bob")  # its handler joins apart from the handshake
    fast = connect(url, "bob")
    fast.sync()
    blob = os.urandom(32 * 1024).hex()
    count = 120  # 7.5 MiB: more than the sockets' buffers hold
    for n in range(count):
        publish(app, "user:bob", "blob", {"n": n, "blob": blob})
        assert _next(fast, "blob")["n"] == n
    frames = reader.frames(count)
    assert [f["data"]["n"] for f in frames] == list(range(count))
    assert app.extensions["push"].realtime.hub.count() == 2  # nobody was dropped
    late.close()


@pytest.mark.parametrize("server", ["threads", "gevent"])
def test_pongs_to_a_clients_pings_never_cut_into_an_event(
    server: str, live: Any, tmp_path: Path
) -> None:
    """A client that sends ping frames (Python's websockets does, every 20 s) gets its
    pongs between whole frames, even while a broadcaster has left half an event in a
    full socket: simple-websocket's reader answers pings on the same socket."""
    if server == "gevent":
        pytest.importorskip("gevent", reason="pip install -e '.[test]' brings gevent")
        process = ServerProcess("memory://", "test", tmp_path / "app.db", "ws_gevent_server.py")
        url, send_event = process.ws, process.publish
    else:
        app, url = live(PUSH_WS_QUEUE_SIZE=1000)
        process = None

        def send_event(channel: str, event: str, data: Any) -> tuple[int, Any]:
            return 200, publish(app, channel, event, data)

    client: socket.socket | None = None
    try:
        client = _raw_client(url, "alice")
        reader = _joined(client, "user:alice")
        framing = FrameProtocol(client=True, extensions=[])
        blob = os.urandom(16 * 1024).hex()  # not compressible: 32 KiB a frame
        count = 60  # more than the sockets' buffers hold: frames are left half-written
        pings = [f"ping {n}".encode() for n in range(20)]
        for n in range(count):
            status, _ = send_event("user:alice", "blob", {"n": n, "blob": blob})
            assert status == 200
            if n % 3 == 0:
                client.sendall(framing.ping(pings[n // 3]))
        time.sleep(0.3)  # the reader answers the pings while the buffers are full
        messages = reader.frames(count, pongs=len(pings))
    finally:
        if client is not None:
            client.close()
        if process is not None:
            process.stop()
    assert [m["data"]["n"] for m in messages] == list(range(count))
    assert all(m["data"]["blob"] == blob for m in messages)
    assert reader.pongs == pings


def test_websocket_url_needs_a_websocket(live: Any) -> None:
    app, _ = live()
    answer = app.test_client().get("/push/ws")
    assert answer.status_code == 400
    assert json.loads(answer.data)["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    ("drop", "extra", "named"),
    [
        ("Sec-WebSocket-Key", {}, "Sec-WebSocket-Key"),
        ("Sec-WebSocket-Version", {"Sec-WebSocket-Version": "99"}, "Sec-WebSocket-Version"),
    ],
)
def test_a_handshake_the_protocol_refuses_gets_400_not_500(
    live: Any, connect: Any, caplog: pytest.LogCaptureFixture, drop: str, extra: Any, named: str
) -> None:
    """An upgrade without a key, or for a version of the protocol other than 13, is
    the client's mistake: 400 naming the header, not a 500 with a traceback."""
    app, url = live()
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    headers = dict(_UPGRADE)
    del headers[drop]
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    with caplog.at_level(logging.ERROR):
        conn.request("GET", "/push/ws", headers={**headers, **extra})
        answer = conn.getresponse()
        body = json.loads(answer.read())
    conn.close()
    assert answer.status == 400 and answer.getheader("Upgrade") is None
    assert body["error"]["code"] == "bad_request" and named in body["error"]["message"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    connect(url, "alice").sync()  # the server lives


# -- the handshake's Origin (cross-site websocket hijacking) -------------------------


@pytest.fixture
def identity_calls() -> Iterator[list[str | None]]:
    """The Origins of the handshakes that reached ``identity_loader``."""
    calls: list[str | None] = []
    previous = push._identity_loader

    def recording() -> str | None:
        calls.append(request.headers.get("Origin"))
        return previous()  # type: ignore[no-any-return]

    push.identity_loader(recording)
    yield calls
    push._identity_loader = previous


def _own_origin(url: str) -> str:
    """The origin of the page a ws:// URL of the live server belongs to."""
    return "http" + url.removeprefix("ws").removesuffix("/push/ws")


def test_a_cross_site_handshake_gets_403_before_the_upgrade(
    live: Any, connect: Any, identity_calls: list[str | None]
) -> None:
    # The hijack: evil.example's page opens the socket, and the browser adds the
    # victim's cookie (here: the tests' X-User header).
    app, url = live()
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request(
        "GET",
        "/push/ws",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "Origin": "https://evil.example",
            "X-User": "alice",
        },
    )
    answer = conn.getresponse()
    body = json.loads(answer.read())
    conn.close()
    assert answer.status == 403 and answer.getheader("Upgrade") is None
    assert body["error"]["code"] == "forbidden_origin"
    assert "PUSH_WS_ALLOWED_ORIGINS" in body["error"]["message"]
    with pytest.raises(simple_websocket.ConnectionError) as refused:
        connect(url, "alice", origin="https://evil.example")
    assert refused.value.status_code == 403
    assert identity_calls == []  # never asked who the cookie belongs to
    assert app.extensions["push"].realtime is None  # nobody joined anything

    alice = connect(url, "alice", origin=_own_origin(url))
    alice.sync()
    publish(app, "user:alice", "inbox", {"n": 1})
    assert _next(alice, "inbox") == {"n": 1}
    assert identity_calls == [_own_origin(url)]


def test_allowed_origins_open_the_socket_and_others_do_not(live: Any, connect: Any) -> None:
    app, url = live(PUSH_WS_ALLOWED_ORIGINS=["https://app.shop.example"])
    spa = connect(url, "alice", origin="https://app.shop.example")
    same = connect(url, "alice", origin=_own_origin(url))
    spa.sync(), same.sync()
    publish(app, "user:alice", "hello", {})
    assert _next(spa, "hello") == _next(same, "hello") == {}
    for origin in ("https://evil.example", "https://shop.example", "http://app.shop.example"):
        with pytest.raises(simple_websocket.ConnectionError) as refused:
            connect(url, "alice", origin=origin)
        assert refused.value.status_code == 403, origin


@pytest.mark.parametrize(
    ("origin", "opens"),
    [
        ("https://shop.example", True),  # through a proxy that terminates TLS
        ("http://shop.example", True),
        ("https://SHOP.example", True),
        ("https://shop.example:443", True),
        (None, True),  # not a browser: an app or a server, without anyone's cookies
        ("https://api.shop.example", False),  # a sibling subdomain is another site
        ("https://shop.example.evil.example", False),
        ("https://evilshop.example", False),
        ("https://shop.example:8443", False),
        ("null", False),  # sandboxed frames and files
        ("", False),
        ("https://shop.example/", True),
        ("https://shop.example/path", False),
        ("https://alice@shop.example", False),
    ],
)
def test_same_origin_is_the_host_the_browser_asked_for(
    live: Any, connect: Any, identity_calls: list[str | None], origin: str | None, opens: bool
) -> None:
    app, url = live()
    if not opens:
        with pytest.raises(simple_websocket.ConnectionError) as refused:
            connect(url, "alice", origin=origin, host="shop.example")
        assert refused.value.status_code == 403
        assert identity_calls == []
        return
    alice = connect(url, "alice", origin=origin, host="shop.example")
    alice.sync()
    publish(app, "user:alice", "hello", {})
    assert _next(alice, "hello") == {}


# -- what a socket is sent and what it survives ---------------------------------------


def test_an_error_in_the_handler_closes_the_socket_with_1011(
    live: Any, connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Raised out of the handler, it would become Flask's "HTTP/1.1 500" written
    # into the websocket stream, which the client reads as garbage.
    _, url = live()
    previous = push._identity_loader

    calls: list[None] = []

    def broken() -> str | None:
        calls.append(None)
        raise RuntimeError("session store on fire")

    push.identity_loader(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="flask_push"):
            raw = _raw_client(url, "alice")
            stream = b""
            try:
                while chunk := raw.recv(4096):  # until the server closes the connection
                    stream += chunk
            except ConnectionResetError:
                pass
            raw.close()
    finally:
        push._identity_loader = previous
    # the first thing after the 101: a close frame (0x88, unmasked, short) with code 1011
    assert stream[:1] == b"\x88" and stream[1] < 126, stream
    assert int.from_bytes(stream[2:4], "big") == 1011, stream
    assert b"HTTP/1.1 500" not in stream
    assert "session store on fire" in caplog.text and "1011" in caplog.text
    assert len(calls) == 1  # asked before the upgrade, raised after it: once
    connect(url, "alice").sync()  # the server lives on


@pytest.mark.parametrize(
    "data",
    [
        {"title": "\ud800"},
        {"\udfff": 1},  # keys too
        ["ok", {"deep": "x\udc80y"}],
        float("nan"),
        {"n": float("inf")},
        {1, 2},
    ],
)
def test_publish_refuses_data_a_frame_cannot_carry(app: Flask, data: Any) -> None:
    with app.app_context():
        first = push.publish("user:alice", "ok", {})
        with pytest.raises(ValidationError) as refused:
            push.publish("user:alice", "notification", data)
        assert refused.value.field == "data"
        assert push.publish("user:alice", "ok", {}) == first + 1  # nothing numbered or kept


def test_publish_refuses_names_no_utf8_text_holds(app: Flask) -> None:
    with app.app_context():
        with pytest.raises(ValidationError) as refused:
            push.publish("order:\ud800", "status")
        assert refused.value.field == "channel"
        with pytest.raises(ValidationError) as refused:
            push.publish("order:1", "st\udc00tus")
        assert refused.value.field == "event"


def test_a_kept_event_that_cannot_be_encoded_is_skipped_live_and_on_reconnect(
    live: Any, connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, url = live()
    alice = connect(url, "alice")
    alice.sync()
    first = publish(app, "user:alice", "before", {})
    with app.app_context(), caplog.at_level(logging.ERROR, logger="flask_push"):
        # as an older version kept it: straight into the backplane, past publish's check
        realtime = push.state.get_realtime()
        bad = realtime.backplane.publish("user:alice", "notification", '{"title":"\ud800"}')
    publish(app, "user:alice", "after", {})
    assert [(e["id"], e["event"]) for e in (alice.recv(), alice.recv())] == [
        (first, "before"), (first + 2, "after"),
    ]  # fmt: skip
    alice.sync()
    assert bad.id == first + 1 and f"event {bad.id} of channel 'user:alice'" in caplog.text

    # every reconnect replays the kept events: the bad one is skipped each time
    for _ in range(2):
        again = connect(url, "alice")
        again.send({"op": "subscribe", "channel": "user:alice", "since": 0})
        assert again.recv() == {"op": "subscribed", "channel": "user:alice"}
        assert [again.recv()["id"] for _ in range(2)] == [first, first + 2]
        again.sync()
    publish(app, "user:alice", "later", {})
    assert _next(again, "later") == {}


def test_an_inbox_item_that_cannot_be_sent_still_updates_the_count(
    live: Any, connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, url = live()
    alice = connect(url, "alice")
    alice.sync()
    with app.app_context(), caplog.at_level(logging.WARNING, logger="flask_push"):
        inbox_events.publish_item(app, "alice", {"id": "n1", "title": "\ud800"})
    assert _next(alice, "unread") == {"count": 0}
    alice.sync()
    assert "not published live" in caplog.text
