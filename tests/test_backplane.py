"""Backplanes: memory in one process, Redis across processes (and Redis going away)."""

from __future__ import annotations

import json
import logging
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_push.config import DEFAULT_BACKPLANE_PREFIX
from flask_push.errors import BackplaneError
from flask_push.realtime import Connection, Realtime
from flask_push.realtime import backplane as backplane_module
from flask_push.realtime.backplane import MemoryBackplane, RedisBackplane, backplane_for
from flask_push.realtime.events import Event, Gap, Notice, Replay

from conftest import REDIS_URL, need_service, push, wait_until
from wslive import Client, ServerProcess, serve


def collector() -> tuple[Callable[[Event], None], queue.Queue[Event]]:
    got: queue.Queue[Event] = queue.Queue()
    return got.put, got


# -- memory -------------------------------------------------------------------------


def test_memory_numbers_each_channel_and_delivers_in_order() -> None:
    backplane = MemoryBackplane(keep_seconds=60, keep_count=10)
    assert backplane_for("memory://", "p", 60, 10).__class__ is MemoryBackplane
    deliver, got = collector()
    started = time.time_ns() // 1000
    first = backplane.publish("a", "e", "1").id  # before anyone listens: kept, not delivered
    assert started <= first <= time.time_ns() // 1000  # a numbering starts at the clock
    backplane.listen(deliver, lambda: None)
    a2, b1, a3 = (backplane.publish(c, "e", "{}").id for c in ("a", "b", "a"))
    assert (a2, a3) == (first + 1, first + 2) and b1 > first
    assert [(e.channel, e.id) for e in (got.get_nowait() for _ in range(3))] == [
        ("a", a2), ("b", b1), ("a", a3),
    ]  # fmt: skip
    assert backplane.last_id("a") == a3 and backplane.last_id("zzz") == 0
    replay = backplane.replay("a", first)
    assert (replay.gap, [e.id for e in replay.events], replay.last_id) == (False, [a2, a3], a3)
    assert json.loads(replay.events[0].frame) == {
        "op": "event", "channel": "a", "id": a2, "event": "e", "data": {},
    }  # fmt: skip
    # a client that saw nothing gets everything, and no gap: the first is kept
    replay = backplane.replay("a", 0)
    assert (replay.gap, [e.id for e in replay.events]) == (False, [first, a2, a3])


def test_memory_keeps_by_count_and_age(backplane_clock: list[float]) -> None:
    backplane = MemoryBackplane(keep_seconds=1, keep_count=2)
    ids = [backplane.publish("a", "e", "null").id for _ in range(4)]
    replay = backplane.replay("a", 0)
    assert replay.gap and [e.id for e in replay.events] == ids[2:]
    assert not backplane.replay("a", ids[1]).gap
    backplane_clock[0] += 1.05
    replay = backplane.replay("a", ids[1])
    assert replay.gap and replay.events == [] and replay.last_id == ids[3]
    assert backplane.replay("a", ids[3]).gap is False


def test_memory_numbering_starts_above_the_previous_process() -> None:
    """A restarted process numbers each channel anew, above the ids the last one
    gave: a client's ``since`` falls before the new events, which is a gap."""
    before = MemoryBackplane(keep_seconds=60, keep_count=10)
    old = [before.publish("a", "e", "null").id for _ in range(3)]
    after = MemoryBackplane(keep_seconds=60, keep_count=10)
    assert after.replay("a", old[-1]) == Replay(True, [], 0)  # nothing yet, a gap
    new = [after.publish("a", "e", "null").id for _ in range(2)]
    assert min(new) > max(old)
    replay = after.replay("a", old[-1])
    assert (replay.gap, [e.id for e in replay.events]) == (True, new)


def test_memory_numbering_below_a_client_id_is_a_gap_then_all_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A clock stepped back: a ``since`` beyond the latest id is from the earlier
    numbering, so every kept event is new to that client."""
    backplane = MemoryBackplane(keep_seconds=60, keep_count=10)
    monkeypatch.setattr(backplane_module, "_clock_micros", lambda: 1000)
    ids = [backplane.publish("a", "e", "null").id for _ in range(2)]
    assert ids == [1000, 1001]
    replay = backplane.replay("a", 5000)
    assert (replay.gap, [e.id for e in replay.events], replay.last_id) == (True, ids, 1001)


# -- Redis --------------------------------------------------------------------------


@pytest.fixture
def redis_backplane(redis_prefix: str) -> Iterator[Callable[..., RedisBackplane]]:
    made: list[RedisBackplane] = []

    def make(url: str = REDIS_URL, keep_seconds: int = 60, keep_count: int = 10) -> RedisBackplane:
        backplane = backplane_for(url, redis_prefix, keep_seconds, keep_count)
        assert isinstance(backplane, RedisBackplane)
        made.append(backplane)
        return backplane

    yield make
    for backplane in made:
        backplane.close()


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    """The test Redis behind a :class:`TcpProxy` (its ``stop`` cuts every connection
    off, ``start`` lets them in again), stopped after the test."""
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    proxy = TcpProxy((host, int(port)))
    proxy.start()
    yield proxy
    proxy.stop()


def test_redis_ids_and_replay_are_shared(redis_backplane: Any) -> None:
    one, two = redis_backplane(), redis_backplane()
    deliver, got = collector()
    two.listen(deliver, lambda: None)
    started = two._client.time()
    first = one.publish("order:1", "s", '{"n":1}').id
    # a numbering starts at Redis's clock in microseconds; ids beyond 2**48 come
    # through the Lua script and pub/sub whole
    assert first >= started[0] * 1_000_000 + started[1] > 2**48
    assert two.publish("order:1", "s", "2").id == first + 1
    other = one.publish("order:2", "s", "null").id
    assert other > first + 1
    received = [got.get(timeout=3) for _ in range(3)]
    assert [(e.channel, e.id, e.data) for e in received] == [
        ("order:1", first, {"n": 1}), ("order:1", first + 1, 2), ("order:2", other, None),
    ]  # fmt: skip
    replay = two.replay("order:1", 0)  # a client that saw none: all of it, the first is kept
    assert (replay.gap, [e.data for e in replay.events], replay.last_id) == (
        False,
        [{"n": 1}, 2],
        first + 1,
    )
    assert two.last_id("order:1") == first + 1 and two.last_id("nothing") == 0


def test_redis_a_rejoin_that_finds_nothing_new_reads_no_kept_event(
    redis_backplane: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual reconnect asks for what came after the latest id: one GET of the
    counter answers it, not a read of every kept event (up to 100,000 of them, for
    each such frame a socket sends)."""
    backplane = redis_backplane(keep_count=1000)
    for n in range(50):
        last = backplane.publish("user:alice", "tick", str(n)).id

    def read_all() -> Any:
        raise AssertionError("the kept events were read")

    monkeypatch.setattr(backplane._client, "pipeline", read_all)
    assert backplane.replay("user:alice", last) == Replay(False, [], last)
    monkeypatch.undo()
    missed = backplane.replay("user:alice", last - 2)  # one that missed some reads them
    assert [e.data for e in missed.events] == [48, 49] and not missed.gap


def test_redis_apps_on_other_databases_do_not_hear_each_other(redis_backplane: Any) -> None:
    """Pub/sub ignores Redis's database number: apps kept apart by it (the same
    prefix on /1 and /2) heard each other's events, a user's inbox included."""
    base = REDIS_URL.rsplit("/", 1)[0]
    one, two = redis_backplane(f"{base}/1"), redis_backplane(f"{base}/2")
    deliver, got = collector()
    one.listen(deliver, lambda: None)
    two.publish("user:alice", "notification", '{"from":"two"}')
    mine = one.publish("user:alice", "notification", '{"from":"one"}')
    assert [(e.id, e.data) for e in [got.get(timeout=3)]] == [(mine.id, {"from": "one"})]
    assert got.empty()


def test_redis_carries_any_channel_a_user_id_makes(redis_backplane: Any) -> None:
    """A user id may hold spaces and line breaks, and ``user:<id>`` is its channel:
    pub/sub carries it whole, with its own id, event and data."""
    one, two = redis_backplane(), redis_backplane()
    deliver, got = collector()
    two.listen(deliver, lambda: None)
    channels = ["user:Ada Lovelace " + "x" * 242, "user:bob\n99999999999999", "user:a\tb\r\n"]
    sent = [one.publish(channel, "e", '{"a":"b\\nc"}').id for channel in channels]
    received = [got.get(timeout=3) for _ in channels]
    assert [(e.channel, e.id, e.event, e.data) for e in received] == [
        (channel, id, "e", {"a": "b\nc"}) for channel, id in zip(channels, sent, strict=True)
    ]
    replay = two.replay(channels[1], 0)
    assert [(e.channel, e.id) for e in replay.events] == [(channels[1], sent[1])]


def test_redis_listen_returns_once_what_is_published_next_comes(redis_backplane: Any) -> None:
    # the first websocket to join a process starts its subscriber: the client is
    # told "subscribed", and must get the event published right after that
    for _ in range(5):
        one, two = redis_backplane(), redis_backplane()
        deliver, got = collector()
        two.listen(deliver, lambda: None)
        sent = one.publish("order:1", "s", "1").id
        assert got.get(timeout=3).id == sent


def test_redis_keeps_by_count_and_age(redis_backplane: Any) -> None:
    backplane = redis_backplane(keep_seconds=1, keep_count=2)
    ids = [backplane.publish("a", "e", "null").id for _ in range(4)]
    replay = backplane.replay("a", 0)  # the numbering's first is no longer kept
    assert replay.gap and [e.id for e in replay.events] == ids[2:]
    assert not backplane.replay("a", ids[1]).gap
    time.sleep(1.1)
    replay = backplane.replay("a", ids[1])
    assert replay.gap and replay.events == [] and replay.last_id == ids[3]


def test_redis_unreachable_raises_backplane_error(redis_backplane: Any) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backplane = redis_backplane(url=f"redis://127.0.0.1:{port}/0")
    with pytest.raises(BackplaneError, match="live event not published, Redis is unreachable"):
        backplane.publish("a", "e", "null")
    with pytest.raises(BackplaneError, match="cannot replay, Redis is unreachable"):
        backplane.replay("a", 0)
    # the first join waits a connection attempt for the subscription, not forever
    listening = threading.Thread(target=backplane.listen, args=(lambda event: None, lambda: None))
    listening.start()
    listening.join(backplane_module.CONNECT_TIMEOUT + 10)
    assert not listening.is_alive()


def test_redis_a_subscription_confirmed_late_is_followed_by_a_resync(
    redis_backplane: Any,
) -> None:
    # Redis answers the subscriber after the first join stopped waiting for it: what
    # was published meanwhile reached nobody here, so the subscriber resyncs
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    proxy = TcpProxy((host, int(port)), hold=backplane_module.CONNECT_TIMEOUT + 1)
    proxy.start()
    try:
        far = redis_backplane(url=f"redis://127.0.0.1:{proxy.port}/0")
        near = redis_backplane()
        deliver, got = collector()
        resyncs: list[None] = []
        far.listen(deliver, lambda: resyncs.append(None))  # gave up waiting
        near.publish("order:1", "s", "1")
        assert wait_until(lambda: bool(resyncs), 10), "no resync after the late subscription"
        # subscribed now: the next event comes live, and one resync was enough
        sent = near.publish("order:1", "s", "2").id
        assert got.get(timeout=5).id == sent
        assert resyncs == [None]
    finally:
        proxy.stop()


def test_redis_a_subscription_gone_silent_is_found_out_and_made_again(
    redis_backplane: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_proxy: TcpProxy,
) -> None:
    # A connection that a load balancer or NAT forgot never errors: without a
    # question, the subscriber would wait on it for good, hearing nothing.
    monkeypatch.setattr(backplane_module, "SUBSCRIBER_PING_AFTER", 0.5)
    monkeypatch.setattr(backplane_module, "SUBSCRIBER_PONG_TIMEOUT", 1.0)
    far, near = redis_backplane(url=f"redis://127.0.0.1:{redis_proxy.port}/0"), redis_backplane()
    deliver, got = collector()
    resyncs: list[None] = []
    caplog.set_level("WARNING", logger="flask_push.realtime")
    far.listen(deliver, lambda: resyncs.append(None))
    sent = near.publish("order:1", "s", "1").id
    assert got.get(timeout=5).id == sent
    time.sleep(1)  # quiet for longer than SUBSCRIBER_PING_AFTER: pings are answered
    sent = near.publish("order:1", "s", "2").id
    assert got.get(timeout=5).id == sent
    assert resyncs == []
    redis_proxy.freeze()
    near.publish("order:1", "s", "3")  # lost on the silent connection
    assert wait_until(lambda: bool(resyncs), 15), "the silent subscription was not found out"
    assert "no answer to a ping in 1 s" in caplog.text
    sent = near.publish("order:1", "s", "4").id
    assert got.get(timeout=5).id == sent  # live again


class SilentRedis:
    """Answers every command +OK but HELLO (unknown) and SUBSCRIBE, which it never
    confirms."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.subscribed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            while line := stream.readline():  # *<n>, then <n> of $<len> and the bytes
                words = []
                for _ in range(int(line[1:])):
                    size = int(stream.readline()[1:])
                    words.append(stream.read(size + 2)[:size].upper())
                if words[0] == b"SUBSCRIBE":
                    self.subscribed.set()
                elif words[0] == b"HELLO":  # the client then speaks RESP2, as to Redis 5
                    conn.sendall(b"-ERR unknown command 'HELLO'\r\n")
                else:
                    conn.sendall(b"+OK\r\n")

    def close(self) -> None:
        self.listener.close()


def test_redis_closed_while_its_subscription_waits_does_not_resync(
    redis_backplane: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backplane = redis_backplane(url=f"redis://127.0.0.1:{port}/0")
    resyncs: list[None] = []
    backplane.listen(lambda event: None, lambda: resyncs.append(None))  # refused: goes on
    silent = SilentRedis(port)  # "back", but it never confirms the subscription
    try:
        assert silent.subscribed.wait(15)
        backplane.close()
    finally:
        silent.close()
    assert resyncs == []
    assert "subscriber is back" not in caplog.text


@pytest.fixture
def refused_user(redis_prefix: str) -> Iterator[tuple[str, Callable[[], None]]]:
    """A Redis ACL user that may run every command on every key but use no pub/sub
    channel, as an ACL written for another app would be, and a function that grants
    it every channel: a URL that logs in as it, and the grant."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    name = f"{redis_prefix}-user"
    try:
        client.acl_setuser(name, enabled=True, nopass=True, commands=["+@all"], keys=["*"],
                           reset_channels=True)  # fmt: skip
    except redis.ResponseError as err:  # a managed Redis, or one before 6.2
        client.close()
        need_service("A Redis that lets the tests make ACL users", err)
    scheme, rest = REDIS_URL.split("://", 1)

    def grant() -> None:
        client.acl_setuser(name, enabled=True, nopass=True, channels=["*"])

    try:
        yield f"{scheme}://{name}@{rest}", grant
    finally:
        client.acl_deluser(name)
        client.close()


def test_redis_refusing_the_subscription_is_said_and_tried_again(
    refused_user: tuple[str, Callable[[], None]], redis_backplane: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # A refusal is not a lost connection, yet it must not end the subscriber (and
    # with it every live event from other processes) for good either.
    url, grant = refused_user
    refused, other = redis_backplane(url=url), redis_backplane()
    deliver, got = collector()
    resyncs: list[None] = []
    caplog.set_level("WARNING", logger="flask_push.realtime")
    refused.listen(deliver, lambda: resyncs.append(None))  # refused: goes on at once
    deadline = time.monotonic() + 10  # for both waits of this test
    assert wait_until(lambda: "backplane subscriber failed" in caplog.text, 10), (
        "the refused subscription was not logged"
    )
    assert "Redis refused it: " in caplog.text and "no permissions" in caplog.text
    # its publish is refused too (the script publishes to the channel): said, not
    # raw, and (Redis 7 can tell first) neither numbered nor kept
    with pytest.raises(BackplaneError, match="live event not published, Redis refused it: "):
        refused.publish("order:1", "s", "1")
    if int(other._client.info("server")["redis_version"].split(".")[0]) >= 7:
        assert other.last_id("order:1") == 0 and other.replay("order:1", 0).events == []
    grant()
    assert wait_until(lambda: bool(resyncs), deadline - time.monotonic()), (
        "no resync once the subscription was allowed"
    )
    sent = other.publish("order:1", "s", "2").id
    assert got.get(timeout=5).id == sent
    assert caplog.text.count("backplane subscriber failed") == 1  # once, not per retry
    assert caplog.text.count("backplane subscriber is back") == 1


def test_redis_a_failing_resync_is_said_and_live_events_go_on(
    refused_user: tuple[str, Callable[[], None]], redis_backplane: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # a bug in what runs on the subscriber's thread is logged with its traceback,
    # and live events go on: connecting again would not mend it
    url, grant = refused_user
    refused, other = redis_backplane(url=url), redis_backplane()
    deliver, got = collector()
    resyncs: list[None] = []

    def resync() -> None:
        resyncs.append(None)
        raise RuntimeError("a resync that failed")

    caplog.set_level("WARNING", logger="flask_push.realtime")
    refused.listen(deliver, resync)
    grant()
    assert wait_until(lambda: bool(resyncs), 15), "no resync once the subscription was allowed"
    sent = other.publish("order:1", "s", "1").id
    assert got.get(timeout=5).id == sent
    [failed] = [r for r in caplog.records if "catching up after" in r.message]
    assert failed.exc_info is not None and "a resync that failed" in caplog.text
    assert resyncs == [None]


def test_a_channel_that_cannot_be_caught_up_gets_a_gap_and_the_others_their_events(
    make_app: Callable[..., Flask],
) -> None:
    # After the backplane was away: a channel whose replay is refused gets a gap
    # (its clients reload) and the next ones are still asked; once Redis does not
    # answer at all, the rest get a gap without waiting for it channel by channel.
    asked: list[str] = []

    class Failing(MemoryBackplane):
        def replay(self, channel: str, since: int) -> Replay:
            asked.append(channel)
            if channel == "refused":
                raise BackplaneError("cannot replay, Redis refused it: WRONGTYPE")
            if channel == "unreachable":
                raise backplane_module.BackplaneUnreachable("cannot replay, Redis is unreachable")
            return super().replay(channel, since)

    backplane = Failing(keep_seconds=60, keep_count=10)
    realtime: Realtime = make_app().extensions["push"].get_realtime()
    realtime.backplane = backplane
    got: list[Any] = []
    realtime.hub.deliver = got.append  # type: ignore[method-assign]
    realtime.hub.gap = got.append  # type: ignore[method-assign]
    names = ("refused", "fine", "unreachable", "after")
    joined = {name: backplane.publish(name, "e", "1").id for name in names}
    missed = backplane.publish("fine", "e", "2")
    realtime.hub.joined = lambda: joined  # type: ignore[method-assign]
    realtime._resync()
    assert asked == ["refused", "fine", "unreachable"]
    assert got == [
        Gap("refused", joined["refused"]), missed,
        Gap("unreachable", joined["unreachable"]), Gap("after", joined["after"]),
    ]  # fmt: skip


def test_an_event_that_cannot_be_published_sends_this_process_sockets_a_gap(
    make_app: Callable[..., Flask],
) -> None:
    """Redis is away when a change is published: the event is lost (nothing numbered
    or kept it), so the sockets here on its channel are told at once and their
    clients reload, rather than wait for an event that will never come."""

    class Away(MemoryBackplane):
        def publish(self, channel: str, event: str, data_json: str) -> Event:
            raise backplane_module.BackplaneUnreachable("cannot publish, Redis is unreachable")

    realtime: Realtime = make_app().extensions["push"].get_realtime()
    realtime.backplane = Away(keep_seconds=60, keep_count=10)
    got: list[Any] = []
    realtime.hub.gap = got.append  # type: ignore[method-assign]
    realtime.hub.joined = lambda: {"user:alice": 7}  # type: ignore[method-assign]
    for channel in ("user:alice", "user:bob"):  # bob has no socket here
        with pytest.raises(BackplaneError):
            realtime.publish(channel, "notification", {"id": "n1"})
    assert got == [Gap("user:alice", 7)]


class TcpProxy:
    """Forwards a fixed local port to Redis; ``stop()`` is Redis going away."""

    def __init__(self, target: tuple[str, int], hold: float = 0.0) -> None:
        self.target = target
        #: seconds each new connection's bytes wait before they go through: a slow
        #: network, or a far-away Redis
        self.hold = hold
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        #: the connections made so far, and those frozen (their bytes are dropped)
        self._made = self._frozen = 0

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(listener, client), daemon=True).start()

    def _connect(self, listener: socket.socket, client: socket.socket) -> None:
        time.sleep(self.hold)
        with self._lock:
            if self._listener is not listener:  # stopped meanwhile
                client.close()
                return
            upstream = socket.create_connection(self.target, timeout=2)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            self._made += 1
            number = self._made
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b, number), daemon=True).start()

    def freeze(self) -> None:
        """The connections open now go silent both ways, yet stay open, as those a
        load balancer or NAT forgot; new ones go through."""
        with self._lock:
            self._frozen = self._made

    def _pipe(self, source: socket.socket, sink: socket.socket, number: int) -> None:
        try:
            while data := source.recv(65536):
                if number > self._frozen:
                    sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stop(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def servers(tmp_path: Path, redis_prefix: str) -> Iterator[Callable[[str], ServerProcess]]:
    started: list[ServerProcess] = []

    def start(url: str) -> ServerProcess:
        server = ServerProcess(url, redis_prefix, tmp_path / "app.db")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def _event(client: Client) -> tuple[int, str, Any]:
    frame = client.recv(timeout=5)
    assert frame["op"] == "event", frame
    return frame["id"], frame["event"], frame["data"]


def test_two_processes_share_events_and_replay(servers: Any, clients: Any) -> None:
    first, second = servers(REDIS_URL), servers(REDIS_URL)
    alice = Client(second.ws, "alice")
    clients.append(alice)
    alice.sync()
    status, body = first.publish("user:alice", "hello", {"n": 1})
    assert status == 200
    one = body["id"]
    assert _event(alice) == (one, "hello", {"n": 1})
    assert second.publish("user:alice", "hello", {"n": 2}) == (200, {"id": one + 1})
    assert _event(alice) == (one + 1, "hello", {"n": 2})
    for n in (3, 4):
        first.publish("user:alice", "hello", {"n": n})
    assert [_event(alice)[0] for _ in range(2)] == [one + 2, one + 3]

    # a client of the first process catches up on what both published
    late = Client(first.ws, "alice")
    clients.append(late)
    late.send({"op": "subscribe", "channel": "user:alice", "since": one})
    assert late.recv()["op"] == "subscribed"
    assert [_event(late)[0] for _ in range(3)] == [one + 1, one + 2, one + 3]
    late.nothing()


def test_redis_going_away_and_coming_back(
    servers: Any, clients: Any, redis_backplane: Any, redis_proxy: TcpProxy
) -> None:
    via_proxy = f"redis://127.0.0.1:{redis_proxy.port}/0"
    first, second = servers(via_proxy), servers(via_proxy)
    alice = Client(second.ws, "alice")
    clients.append(alice)
    alice.sync()
    status, body = first.publish("user:alice", "before", None)
    assert status == 200
    one = body["id"]
    assert _event(alice)[:2] == (one, "before")

    redis_proxy.stop()
    # the processes live on: publishing says Redis is away, sockets still answer
    status, body = first.publish("user:alice", "lost", None)
    assert status == 503 and "Redis" in body["error"]
    alice.sync()
    direct = redis_backplane()  # another host, still reaching Redis
    direct.publish("user:alice", "during", '{"n": 1}')
    direct.publish("user:alice", "during", '{"n": 2}')

    redis_proxy.start()
    # the second process reconnects, and replays what its clients missed
    assert [_event(alice) for _ in range(2)] == [
        (one + 1, "during", {"n": 1}), (one + 2, "during", {"n": 2}),
    ]  # fmt: skip
    deadline = time.monotonic() + 10
    while first.publish("user:alice", "after", None)[0] != 200:
        assert time.monotonic() < deadline, "the first process never got Redis back"
        time.sleep(0.2)
    assert _event(alice)[:2] == (one + 3, "after")
    alice.nothing()


def test_a_shut_out_published_while_redis_was_away_is_caught_up_first(
    make_app: Callable[..., Flask],
    redis_backplane: Any,
    caplog: pytest.LogCaptureFixture,
    redis_proxy: TcpProxy,
) -> None:
    """A user an activity left out while this process's subscriber was cut off from
    Redis: on the way back, their socket leaves the channel before the channel's
    missed events are replayed, so the door code published after reaches only the
    users still in it."""
    realtime: Realtime = make_app().extensions["push"].get_realtime()
    realtime.backplane = redis_backplane(url=f"redis://127.0.0.1:{redis_proxy.port}/0")
    elsewhere = Realtime(realtime.settings)  # another process, still reaching Redis
    elsewhere.backplane = redis_backplane()
    channel = "activity:order-42"
    alice, courier = (
        Connection(threading.Event(), None, 100, user_id=user) for user in ("alice", "courier_a")
    )
    for connection in (alice, courier):
        realtime.join(connection, channel)
    assert wait_until(lambda: realtime.backplane._subscribed, 10)

    caplog.set_level("WARNING", logger="flask_push.realtime")
    redis_proxy.stop()
    assert wait_until(lambda: "backplane subscriber failed" in caplog.text, 10)
    elsewhere.shut_out(channel, ["courier_a"], "You no longer follow it.")
    door = elsewhere.publish(channel, "activity", {"door": "4711"})
    redis_proxy.start()

    assert wait_until(lambda: bool(alice.queue), 15), "no resync once Redis was back"
    assert [(item.id, item.data) for item in alice.take()] == [(door.id, {"door": "4711"})]
    (notice,) = courier.take()
    assert isinstance(notice, Notice) and json.loads(notice.frame)["code"] == "forbidden"
    assert channel not in courier.last_ids
    assert realtime._left_seen is not None and realtime._left_seen > 0


def test_a_socket_that_joined_while_redis_was_away_is_not_replayed_older_events(
    make_app: Callable[..., Flask],
    redis_backplane: Any,
    caplog: pytest.LogCaptureFixture,
    redis_proxy: TcpProxy,
) -> None:
    """A page opened while this process could not reach Redis: its socket joined its
    channel at a place not known. Once Redis is back, it is told to reload (a gap)
    rather than sent again every event the channel keeps from before the page read
    its state, and it gets what was published after."""
    realtime: Realtime = make_app().extensions["push"].get_realtime()
    realtime.backplane = redis_backplane(url=f"redis://127.0.0.1:{redis_proxy.port}/0")
    elsewhere = redis_backplane()  # another process, still reaching Redis
    older = [elsewhere.publish("user:alice", "notification", f'{{"n": {n}}}') for n in (1, 2)]
    bob = Connection(threading.Event(), None, 100, user_id="bob")
    realtime.join(bob, "user:bob")  # this process listens
    assert wait_until(lambda: realtime.backplane._subscribed, 10)

    caplog.set_level("WARNING", logger="flask_push.realtime")
    redis_proxy.stop()
    assert wait_until(lambda: "backplane subscriber failed" in caplog.text, 10)
    alice, tab = (Connection(threading.Event(), None, 100, user_id="alice") for _ in "ab")
    assert realtime.join(alice, "user:alice") is None  # its page read its state now
    with pytest.raises(BackplaneError):  # another tab, back from sleep, says since
        realtime.join(tab, "user:alice", since=older[0].id)
    later = elsewhere.publish("user:alice", "notification", '{"n": 3}')
    redis_proxy.start()

    assert wait_until(lambda: bool(alice.queue), 15), "no resync once Redis was back"
    # the gap, and no event: what came after the page read its state (n 3), the
    # reload reads; the older ones (n 1, n 2) it had
    for connection in (alice, tab):
        assert connection.take() == [Gap("user:alice", later.id)]
    assert older[-1].id < later.id == realtime.hub.joined()["user:alice"]
    after = elsewhere.publish("user:alice", "notification", '{"n": 4}')
    assert wait_until(lambda: bool(alice.queue), 10)
    assert [item.id for item in alice.take()] == [after.id]


def test_a_kept_event_that_is_not_utf8_is_skipped_on_reconnect(
    servers: Any, clients: Any, redis_prefix: str
) -> None:
    import redis

    server = servers(REDIS_URL)
    status, body = server.publish("user:alice", "before", {})
    assert status == 200
    first = body["id"]
    # Written by something else than flask-push: a lone surrogate as CESU-8 bytes,
    # which no UTF-8 decoder takes.
    raw = redis.Redis.from_url(REDIS_URL)
    number = raw.incr(f"{redis_prefix}:seq:user:alice")
    raw.xadd(
        f"{redis_prefix}:log:user:alice",
        {"i": number, "e": "notification", "d": b'{"title":"\xed\xa0\x80"}'},
    )
    raw.close()
    assert server.publish("user:alice", "after", {}) == (200, {"id": first + 2})

    for _ in range(2):  # every reconnect: the socket lives, and the rest arrives
        alice = Client(server.ws, "alice")
        clients.append(alice)
        alice.send({"op": "subscribe", "channel": "user:alice", "since": 0})
        assert alice.recv()["op"] == "subscribed"
        assert [_event(alice)[:2] for _ in range(2)] == [(first, "before"), (first + 2, "after")]
        alice.sync()
    assert server.publish("user:alice", "later", {})[0] == 200
    assert _event(alice)[:2] == (first + 3, "later")


# -- Redis restarting, with and without its data -------------------------------------


class RedisServer:
    """A ``redis-server`` of the test's own on a free port, to kill and start again.

    ``persist=False`` is a cache setup (nothing on disk: a restart loses every key);
    ``persist=True`` writes each command to an append-only file before answering.
    """

    def __init__(self, directory: Path, persist: bool) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            need_service("redis-server", RuntimeError("the redis-server binary is not installed"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        directory.mkdir()
        durability = ["--appendfsync", "always"] if persist else []
        self.command = [
            str(binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "yes" if persist else "no", *durability,
        ]  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    assert self.process.poll() is None, "redis-server exited at start"
                    assert time.monotonic() < deadline, "redis-server did not answer"
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: what it has not written to disk is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[[bool], RedisServer]]:
    started: list[RedisServer] = []

    def start(persist: bool) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", persist)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def database(tmp_path: Path) -> dict[str, Any]:
    # make_app's database: these tests are about the backplane, one database is enough
    return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}"}


def _publish(app: Flask, channel: str, n: int) -> int:
    """``push.publish``, until Redis answers (it may still be starting)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with app.app_context():
                return push.publish(channel, "tick", {"n": n})
        except BackplaneError:
            assert time.monotonic() < deadline, "Redis did not come back"
            time.sleep(0.05)


def _restart_case(
    redis_server: Any, make_app: Any, clients: list[Client], persist: bool, clock_behind: bool
) -> tuple[list[int], list[int], list[list[dict[str, Any]]]]:
    """Three clients of alice and one of bob on a live server on a private Redis:
    5 events, Redis killed and started again, 5 more. The ids published before and
    after, and the frames each of alice's clients got after the restart."""
    server = redis_server(persist)
    app = make_app(PUSH_BACKPLANE_URL=server.url, PUSH_WS_HEARTBEAT=0)
    with serve(app) as origin:
        alices = [Client(f"{origin}/push/ws", "alice") for _ in range(3)]
        bob = Client(f"{origin}/push/ws", "bob")
        clients.extend([*alices, bob])
        for client in [*alices, bob]:
            client.sync()
        before = [_publish(app, "user:alice", n) for n in range(5)]
        for client in alices:
            assert [_event(client)[0] for _ in range(5)] == before

        server.kill()
        server.start()
        if clock_behind:
            # a Redis whose clock is behind the old one's numbers the channel anew,
            # below the ids the clients hold
            import redis

            with redis.Redis.from_url(server.url) as direct:
                direct.set(f"{DEFAULT_BACKPLANE_PREFIX}:seq:user:alice", before[0] - 1000)
        after = [_publish(app, "user:alice", n) for n in range(5, 10)]
        got = []
        for client in alices:
            frames = [client.recv(timeout=10)]
            if frames[0]["op"] == "gap":
                frames.append(client.recv(timeout=10))
            frames += [client.recv(timeout=10) for _ in range(4)]
            client.nothing()
            got.append(frames)
        bob.nothing()  # nothing was published to bob, nothing is missing: no gap
        for client in clients:
            client.close()
    return before, after, got


def test_redis_losing_its_data_sends_a_gap_then_every_later_event(
    redis_server: Any, make_app: Any, clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    before, after, got = _restart_case(redis_server, make_app, clients, False, clock_behind=False)
    assert "1 channel(s) lost live events" in caplog.text  # and the operator is told
    # ids keep increasing across the loss: none of the new events looks seen already
    assert min(after) > max(before)
    for frames in got:
        assert frames[0] == {"op": "gap", "channel": "user:alice"}
        assert [(f["op"], f["id"], f["data"]) for f in frames[1:]] == [
            ("event", id, {"n": n}) for n, id in zip(range(5, 10), after, strict=True)
        ]


def test_redis_losing_its_data_with_its_clock_behind(
    redis_server: Any, make_app: Any, clients: list[Client]
) -> None:
    before, after, got = _restart_case(redis_server, make_app, clients, False, clock_behind=True)
    assert max(after) < min(before)  # numbered anew, lower
    for frames in got:
        # the gap tells the client that the ids after it start anew
        assert frames[0] == {"op": "gap", "channel": "user:alice"}
        assert [(f["op"], f["id"]) for f in frames[1:]] == [("event", id) for id in after]


def test_redis_restarting_with_its_data_misses_and_repeats_nothing(
    redis_server: Any, make_app: Any, clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    before, after, got = _restart_case(redis_server, make_app, clients, True, clock_behind=False)
    assert "lost live events" not in caplog.text
    assert after == list(range(before[-1] + 1, before[-1] + 6))  # the numbering goes on
    for frames in got:
        assert [(f["op"], f["id"], f["data"]) for f in frames] == [
            ("event", id, {"n": n}) for n, id in zip(range(5, 10), after, strict=True)
        ]


def test_a_page_opened_while_redis_was_down_is_told_to_reload_once_it_is_back(
    redis_server: Any, make_app: Any, clients: list[Client]
) -> None:
    """A page of alice's opens, and another tab rejoins with ``since`` (in a
    ``subscribe``, or in the socket's URL), while Redis is down: the rejoin is told
    the missed events cannot be read. When Redis is back
    with its data, both get a gap (reload), never the events from before they read
    their state, then the events published after."""
    server = redis_server(True)
    app = make_app(PUSH_BACKPLANE_URL=server.url, PUSH_WS_HEARTBEAT=0)
    with serve(app) as origin:
        bob = Client(f"{origin}/push/ws", "bob")  # this process listens to Redis
        clients.append(bob)
        bob.sync()
        # Bob gets an event through the subscriber: it is subscribed, and done with
        # any catch-up a slow first subscription owed (on a loaded machine, one that
        # ran after Redis was killed sent a page joined meanwhile a gap before its pong)
        heard = _publish(app, "user:bob", 0)
        assert _event(bob) == (heard, "tick", {"n": 0})
        before = [_publish(app, "user:alice", n) for n in range(2)]
        server.kill()
        page, tab = (Client(f"{origin}/push/ws", "alice") for _ in "ab")
        # a third reconnects, with the id it got to in the socket's URL (flask-push.js)
        back = Client(f"{origin}/push/ws?own=user:alice&since={before[0]}", "alice")
        clients.extend([page, tab, back])
        page.sync()
        tab.send({"op": "subscribe", "channel": "user:alice", "since": before[0]})
        assert tab.recv() == {"op": "subscribed", "channel": "user:alice"}
        for client in (tab, back):
            if client is back:
                assert back.recv() == {"op": "subscribed", "channel": "user:alice", "own": True}
            refused = client.recv()
            assert (refused["code"], refused["channel"]) == ("unavailable", "user:alice")

        server.start()
        for client in (page, tab, back):
            assert client.recv(timeout=15) == {"op": "gap", "channel": "user:alice"}
        after = _publish(app, "user:alice", 2)
        for client in (page, tab, back):
            assert _event(client) == (after, "tick", {"n": 2})
            client.nothing()


def test_a_redis_that_stops_answering_is_asked_once_for_a_whole_send(
    redis_server: Any, make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that takes connections but answers nothing (hung, or cut off by the
    network): a send with an inbox item for ten users asked it once, not once for
    each of their two events (each ask waits the socket's timeout, 2 s: a send to a
    thousand users waited over an hour). The failure is logged once; the next
    publish after the pause asks again, and goes when Redis answers."""
    server = redis_server(False)
    app = make_app(PUSH_BACKPLANE_URL=server.url)
    with app.app_context():
        backplane = push.state.get_realtime().backplane
        asked: list[str] = []
        script = backplane._script
        backplane._script = lambda **given: asked.append(given["args"][0]) or script(**given)
        push.publish("user:u0", "tick", {})  # the script is loaded: Redis answers
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            message = push.send(users=[f"u{n}" for n in range(10)], title="Hi", inbox=True)
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert [item.id for item in push.search("u9").items] == [message.id]
        assert asked == ["user:u0", "user:u0"]  # the tick, then one ask for the send
        said = [r for r in caplog.records if "not published live" in r.getMessage()]
        assert [r.levelname for r in said if r.levelno >= logging.WARNING] == ["WARNING"]
        assert "Redis is unreachable" in said[0].getMessage()
        backplane._unanswered_at -= backplane_module.UNANSWERED_PAUSE  # the pause is over
        assert push.publish("user:u0", "tick", {}) > 0
        assert backplane._unanswered_at is None


def test_after_the_pause_one_publish_asks_a_redis_still_hung(
    redis_server: Any, make_app: Any
) -> None:
    """When the pause ends, one publish asks Redis again; the others of the process
    go on resting at once until it has its answer, instead of each waiting the
    socket's timeout for a Redis still hung."""
    server = redis_server(False)
    app = make_app(PUSH_BACKPLANE_URL=server.url)
    with app.app_context():
        backplane = push.state.get_realtime().backplane
        push.publish("user:u0", "tick", {})
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(BackplaneError):
                push.publish("user:u0", "tick", {})  # waits the timeout: the pause begins
            backplane._unanswered_at -= backplane_module.UNANSWERED_PAUSE  # and is over
            failed: list[Exception] = []

            def ask() -> None:
                with app.app_context():
                    try:
                        push.publish("user:u1", "tick", {})
                    except BackplaneError as err:
                        failed.append(err)

            asking = threading.Thread(target=ask)
            asking.start()
            while not backplane._asking:
                time.sleep(0.01)
            with pytest.raises(backplane_module.BackplaneResting, match="another publish is"):
                push.publish("user:u2", "tick", {})
            asking.join()
            assert [type(err).__name__ for err in failed] == ["BackplaneUnreachable"]
            assert not backplane._asking  # it did not answer: a new pause
            with pytest.raises(backplane_module.BackplaneResting, match="not asked again"):
                push.publish("user:u2", "tick", {})
        finally:
            server.process.send_signal(signal.SIGCONT)
