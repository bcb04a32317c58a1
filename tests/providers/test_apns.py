"""The APNs provider, through the real aioapns, against FakeAPNs over HTTP/2 and TLS.

What every provider does (gone, retry, refusals, timeouts, size checks, order,
concurrency, aclose) is in test_contract.py; here is what only APNs does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from aioapns.common import NotificationResult
from aioapns.exceptions import ConnectionClosed, MaxAttemptsExceeded
from aioapns.exceptions import ConnectionError as APNsConnectionError
from h2.errors import ErrorCodes
from h2.events import StreamReset

from flask_push.credentials import APNS
from flask_push.message import (
    DeliveryResult,
    DeviceTarget,
    Notification,
    OutgoingPush,
)
from flask_push.providers._apns_client import AnswerLost, _reset
from flask_push.providers.apns import (
    MIN_TOKEN_AGE,
    PRODUCTION_HOST,
    SANDBOX_HOST,
    APNsProvider,
    collapse_id,
)
from flask_push.pytest_plugin import APNS_TOPIC as TOPIC
from flask_push.pytest_plugin import PushFakes
from flask_push.testing.apns import FakeAPNs

MESSAGE_ID = "msg_01JD3X9K8Q4M2V7T5R1N6B0C9A"
T = TypeVar("T")

Key = tuple[str, str, str]


@pytest.fixture
def key(push_fake_apns: FakeAPNs) -> Key:
    return push_fake_apns.auth_key()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delay of every ``asyncio.sleep()`` awaited during the test.

    aioapns sleeps 1 s before each new attempt after a failed connect or a
    FlowControlError; the provider's transport must never get there. Asserting on
    the delays asked for, not on a stopwatch, keeps a busy machine from failing
    the test (or a slow path from passing it).
    """
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        asked.append(delay)
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return asked


def settings(port: int, key: Key, **values: Any) -> dict[str, Any]:
    key_pem, key_id, team_id = key
    return APNS.normalize(
        {
            "key": key_pem,
            "keyId": key_id,
            "teamId": team_id,
            "topic": TOPIC,
            "baseUrl": f"https://localhost:{port}",
            **values,
        }
    )


def provider(push_fake_apns: FakeAPNs, key: Key, **options: Any) -> APNsProvider:
    options.setdefault("ssl_context", push_fake_apns.client_ssl_context())
    return APNsProvider.from_settings(settings(push_fake_apns.port, key), **options)


def token(i: int) -> str:
    return f"{i:064x}"


def outgoing(i: int, notification: Notification, device: str | None = None) -> OutgoingPush:
    target = DeviceTarget(token(i) if device is None else device)
    return OutgoingPush(f"dlv_{i:026d}", MESSAGE_ID, notification, target)


def apns_id(push: OutgoingPush) -> str:
    """The apns-id the provider sends for ``push`` (derived from its delivery id)."""
    built = APNsProvider(key="", key_id="", team_id="", topic=TOPIC).build_payload(push)
    return built.notification_id


def run(apns: APNsProvider, use: Callable[[APNsProvider], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await use(apns)
        finally:
            await apns.aclose()

    return asyncio.run(main())


def send(apns: APNsProvider, pushes: list[OutgoingPush]) -> list[DeliveryResult]:
    return run(apns, lambda apns: apns.send_batch(pushes))


ALERT = Notification(
    title="Order #42",
    body="Out for delivery",
    url="/orders/42",
    image="https://shop.example/van.png",
    badge=3,
    sound="default",
    data={"orderId": 42, "items": ["tea"]},
    ttl=3600,
    urgency="high",
    collapse_key="order-42",
)


# Settings


def test_settings_pick_the_host_and_construction_does_no_io(key: Key) -> None:
    production = APNsProvider.from_settings(settings(1, key, baseUrl=None))
    sandbox = APNsProvider.from_settings(settings(1, key, baseUrl=None, sandbox=True))
    local = APNsProvider.from_settings(settings(1, key, sandbox=True, baseUrl="https://[::1]:2197"))
    assert (production.host, production.port) == (PRODUCTION_HOST, 443)
    assert (sandbox.host, sandbox.port) == (SANDBOX_HOST, 443)
    assert (local.host, local.port) == ("::1", 2197)  # baseUrl wins over sandbox
    assert production._pool is None  # made in the loop, on the first post
    assert APNsProvider.max_payload == 4096


# Delivery


def test_a_batch_arrives_concurrently_with_its_headers_and_payload(
    push_fake_apns: FakeAPNs, key: Key
) -> None:
    pushes = [outgoing(i, ALERT) for i in range(100)]
    connections = push_fake_apns.connection_count
    started = time.time()

    results = send(provider(push_fake_apns, key), pushes)

    assert [r.delivery_id for r in results] == [p.delivery_id for p in pushes]
    assert {(r.status, r.provider, r.status_code, r.error) for r in results} == {
        ("sent", "apns", 200, None)
    }
    assert push_fake_apns.connection_count == connections + 1  # 100 streams on one connection
    received = {n.apns_id.lower(): n for n in push_fake_apns.notifications}
    assert len(received) == 100
    for push in pushes:
        notification = received[apns_id(push)]
        assert notification.device_token == push.target.token  # type: ignore[union-attr]
        headers = notification.headers
        assert headers["apns-push-type"] == "alert"
        assert headers["apns-priority"] == "10"
        assert headers["apns-topic"] == TOPIC
        assert headers["apns-collapse-id"] == "order-42"
        assert started + 3600 - 1 <= int(headers["apns-expiration"]) <= time.time() + 3600
        assert notification.payload == {
            "aps": {
                "alert": {"title": "Order #42", "body": "Out for delivery"},
                "badge": 3,
                "sound": "default",
                "thread-id": "order-42",
                "mutable-content": 1,
            },
            "messageId": MESSAGE_ID,
            "url": "/orders/42",
            "image": "https://shop.example/van.png",
            "data": {"orderId": 42, "items": ["tea"]},
        }


def test_background_low_urgency_ttl_zero_and_a_long_collapse_key(
    push_fake_apns: FakeAPNs, key: Key
) -> None:
    long_key = "order-" + "é" * 40  # 86 bytes
    background = Notification(title="", data={"sync": True}, ttl=0, badge="/badge.png")
    low = Notification(title="Weekly offers", urgency="low", collapse_key=long_key, tag="offers")
    very_low = Notification(title="", body="Tip", urgency="very-low", collapse_key=long_key)
    normal = Notification(title="Shipped")
    pushes = [outgoing(0, background), outgoing(1, low), outgoing(2, very_low), outgoing(3, normal)]

    assert [r.status for r in send(provider(push_fake_apns, key), pushes)] == ["sent"] * 4

    received = {n.device_token: n for n in push_fake_apns.notifications}
    quiet = received[token(0)]
    assert quiet.headers["apns-push-type"] == "background"
    assert quiet.headers["apns-priority"] == "5"
    assert quiet.headers["apns-expiration"] == "0"  # deliver once, never store
    assert "apns-collapse-id" not in quiet.headers
    assert quiet.payload == {
        "aps": {"content-available": 1},  # a str badge is a Web Push icon: not for APNs
        "messageId": MESSAGE_ID,
        "data": {"sync": True},
    }
    offers = received[token(1)]
    assert offers.headers["apns-push-type"] == "alert"
    assert offers.headers["apns-priority"] == "5"
    assert offers.aps == {"alert": {"title": "Weekly offers"}, "thread-id": "offers"}
    short = collapse_id(long_key)
    assert short is not None and len(short.encode()) <= 64 and short.startswith("order-é")
    assert short == collapse_id(long_key) != collapse_id(long_key + "!")  # stable, distinct
    assert offers.headers["apns-collapse-id"] == short
    tip = received[token(2)]
    assert tip.headers["apns-priority"] == "5"
    assert tip.aps == {"alert": {"body": "Tip"}, "thread-id": long_key}
    assert received[token(3)].headers["apns-priority"] == "10"  # normal: shown at once


def test_a_collapse_key_no_header_can_hold_is_sent_in_a_form_one_can(
    push_fake_apns: FakeAPNs, key: Key
) -> None:
    """A host may make collapse keys of what its users write. A line break in one
    went out in ``apns-collapse-id`` as it was (h2 does not check values): a malformed
    HTTP/2 request, on which the server drops the connection with every push on it,
    and the push was retried as "unreachable" until given up."""
    keys = ["chat\nroom", "x\r\nauthorization: bearer forged", " padded ", "a\x1bb", "tab\tinside"]
    pushes = [outgoing(i, Notification(title="Hi", collapse_key=k)) for i, k in enumerate(keys)]
    connections = push_fake_apns.connection_count

    results = send(provider(push_fake_apns, key), pushes)

    assert [(r.status, r.error) for r in results] == [("sent", None)] * len(keys)
    assert push_fake_apns.connection_count == connections + 1  # none dropped
    received = {n.device_token: n.headers["apns-collapse-id"] for n in push_fake_apns.notifications}
    sent = [received[token(i)] for i in range(len(keys))]
    assert sent == [collapse_id(k) for k in keys]  # stable
    assert sent[0].startswith("chatroom~") and sent[1].startswith("xauthorization: bearer ")
    assert sent[2].startswith("padded ~")
    assert sent[4] == "tab\tinside"  # a tab is a field value's own character
    assert len(set(sent)) == len(keys)
    assert collapse_id("chatroom") == "chatroom" != collapse_id("chat\nroom")  # distinct


def test_dead_tokens_are_gone_and_results_keep_their_order(
    push_fake_apns: FakeAPNs, key: Key, caplog: pytest.LogCaptureFixture
) -> None:
    push_fake_apns.unregister(token(0), timestamp=1_700_000_000_000)
    push_fake_apns.fail_next(400, "DeviceTokenNotForTopic", token=token(2))
    note = Notification(title="Hi")
    pushes = [
        outgoing(0, note),  # 410 Unregistered
        outgoing(1, note, device="ab" * 16),  # 400 BadDeviceToken: too short
        outgoing(2, note),  # 400 DeviceTokenNotForTopic
        outgoing(3, note, device="not a token"),  # never sent
        outgoing(4, note),
    ]

    with caplog.at_level(logging.WARNING):
        results = send(provider(push_fake_apns, key), pushes)

    assert [r.delivery_id for r in results] == [p.delivery_id for p in pushes]
    assert [r.status for r in results] == ["gone", "gone", "failed", "gone", "sent"]
    assert [r.status_code for r in results] == [410, 400, 400, None, 200]
    assert results[0].error == "Unregistered (the token is invalid since 2023-11-14T22:13:20+00:00)"
    assert results[1].error is not None and results[1].error.startswith("BadDeviceToken")
    assert "PUSH_APNS_SANDBOX" in results[1].error  # the usual cause
    # a topic of another app of the team says this of every device: never "gone"
    assert results[2].error is not None
    assert results[2].error.startswith("400 DeviceTokenNotForTopic")
    assert "PUSH_APNS_TOPIC" in results[2].error
    assert results[3].error is not None and "not hex" in results[3].error
    assert sorted(r.reason for r in push_fake_apns.rejections) == [
        "BadDeviceToken",
        "DeviceTokenNotForTopic",
        "Unregistered",
    ]
    # The results carry the errors; nothing is logged for each one.
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.parametrize("timestamp", [10**20, -(10**20), 10**15])
def test_a_410_whose_timestamp_no_calendar_holds_is_gone_all_the_same(
    push_fake_apns: FakeAPNs, key: Key, timestamp: int
) -> None:
    """The time a 410 says the token died is only told: one that is no date (a
    gateway's garbage, a fake's) does not make the answer a bug of flask-push."""
    push_fake_apns.unregister(token(0), timestamp=timestamp)
    [result] = send(provider(push_fake_apns, key), [outgoing(0, Notification(title="Hi"))])
    assert (result.status, result.status_code, result.error) == ("gone", 410, "Unregistered")


def test_a_revoked_key_fails_with_a_hint(push_fake_apns: FakeAPNs) -> None:
    revoked = push_fake_apns.auth_key(key_id="REVOKED001")
    push_fake_apns.revoke_key("REVOKED001")
    [result] = send(provider(push_fake_apns, revoked), [outgoing(0, ALERT)])
    assert (result.status, result.status_code, result.reason) == (
        "failed",
        403,
        "credentials_refused",
    )
    assert result.error is not None
    assert result.error.startswith("403 InvalidProviderToken: APNs refused the provider token")
    assert "REVOKED001" in result.error and "TEAM123456" in result.error
    assert "revoked" in result.error


# The transport's corner cases


def test_thousands_of_error_bodies_do_not_stall_the_connection(
    push_fake_apns: FakeAPNs, key: Key
) -> None:
    # aioapns never returns flow-control credit for response bodies: without the fix,
    # about 1,300 of these ~45-byte bodies fill the 64 KiB window and the rest hang.
    push_fake_apns.unregister(token(7))
    pushes = [outgoing(i, ALERT, device=token(7)) for i in range(3000)]
    connections = push_fake_apns.connection_count

    async def use(apns: APNsProvider) -> list[DeliveryResult]:
        # without the fix the rest never come back: this bound only ends a hang
        return await asyncio.wait_for(apns.send_batch(pushes), 120)

    results = run(provider(push_fake_apns, key), use)

    assert {(r.status, r.status_code) for r in results} == {("gone", 410)}
    assert push_fake_apns.connection_count == connections + 1


def test_large_payloads_wait_for_the_send_window(
    push_fake_apns: FakeAPNs, key: Key, sleeps: list[float]
) -> None:
    # 100 bodies of ~4 KB at once outrun the 64 KiB send window; aioapns would raise
    # FlowControlError mid-request, leave the stream half open and sleep 1 s.
    pushes = [outgoing(i, Notification(title=f"#{i}", body=str(i % 10) * 3900)) for i in range(100)]

    async def use(apns: APNsProvider) -> list[DeliveryResult]:
        await apns.send_batch([outgoing(100, ALERT)])  # connected: the 100 go out at once
        return await apns.send_batch(pushes)

    results = run(provider(push_fake_apns, key), use)

    assert all(delay < 1 for delay in sleeps), sleeps  # never aioapns's wait
    assert [r.status for r in results] == ["sent"] * 100
    bodies = {
        n.aps["alert"]["title"]: n.aps["alert"].get("body") for n in push_fake_apns.notifications
    }
    assert bodies == {f"#{i}": str(i % 10) * 3900 for i in range(100)} | {"Order #42": ALERT.body}


def test_an_unreachable_server_is_retried_without_waiting(key: Key, sleeps: list[float]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    apns = APNsProvider.from_settings(settings(port, key))

    results = send(apns, [outgoing(i, ALERT) for i in range(50)])

    assert all(delay < 1 for delay in sleeps), sleeps  # aioapns alone sleeps 1 s per attempt
    assert {r.status for r in results} == {"retry"}
    assert all(f"the connection to localhost:{port} failed" in (r.error or "") for r in results)


def test_a_stopped_server_is_retried_without_waiting(
    push_fake_apns: FakeAPNs, key: Key, sleeps: list[float]
) -> None:
    apns = provider(push_fake_apns, key)

    async def use(apns: APNsProvider) -> tuple[list[DeliveryResult], list[DeliveryResult]]:
        before = await apns.send_batch([outgoing(0, ALERT)])
        await asyncio.get_running_loop().run_in_executor(None, push_fake_apns.stop)
        after = await apns.send_batch([outgoing(i, ALERT) for i in range(20)])
        return before, after

    before, after = run(apns, use)
    assert all(delay < 1 for delay in sleeps), sleeps  # never aioapns's 1 s per attempt
    assert [r.status for r in before] == ["sent"]
    assert {r.status for r in after} == {"retry"}
    assert all("the connection to localhost:" in (r.error or "") for r in after)


def test_requests_in_flight_when_the_server_stops_are_retried(
    push_fake_apns: FakeAPNs, key: Key
) -> None:
    push_fake_apns.hold()  # it will never answer in time
    # a timeout they never reach: a push that waited for it would say "no answer
    # came within 30 s", not that the connection to APNs failed
    apns = provider(push_fake_apns, key, timeout=30.0)

    async def use(apns: APNsProvider) -> list[DeliveryResult]:
        sending = asyncio.ensure_future(apns.send_batch([outgoing(i, ALERT) for i in range(20)]))
        await asyncio.to_thread(push_fake_apns.wait_in_flight, 20)  # the requests are on the wire
        await asyncio.to_thread(push_fake_apns.stop)
        return await sending

    results = run(apns, use)
    assert {r.status for r in results} == {"retry"}
    # they were on the wire: APNs may have taken them
    assert {r.reason for r in results} == {"no_answer"}
    assert all("the connection to localhost:" in (r.error or "") for r in results)


def test_a_connection_that_breaks_after_the_requests_went_out_sends_none_again_unseen(
    push_fake_apns: FakeAPNs, key: Key
) -> None:
    """A connection broken (a reset, no GOAWAY) while its requests wait for their
    answers: APNs may have taken and shown them. aioapns' pool sent them again at
    once on a new connection, so the device could show them twice, and a push that
    failed on every try was said to be "unreachable". Each is now a retry of the
    outbox, "no_answer", as a Web Push or FCM request left unanswered is."""
    push_fake_apns.hold()
    apns = provider(push_fake_apns, key, timeout=30.0)

    async def use(apns: APNsProvider) -> list[DeliveryResult]:
        sending = asyncio.ensure_future(apns.send_batch([outgoing(i, ALERT) for i in range(5)]))
        await asyncio.to_thread(push_fake_apns.wait_in_flight, 5)
        await asyncio.to_thread(push_fake_apns.drop_connections)
        push_fake_apns.release()  # what came again would be answered at once
        return await sending

    results = run(apns, use)
    assert [(r.status, r.reason) for r in results] == [("retry", "no_answer")] * 5
    assert all(
        f"the connection to localhost:{push_fake_apns.port} broke before APNs answered"
        in (r.error or "")
        for r in results
    ), results
    assert push_fake_apns.connection_count == 1  # none sent again
    assert push_fake_apns.notifications == []


@pytest.mark.parametrize(
    ("code", "again"), [(ErrorCodes.REFUSED_STREAM, True), (ErrorCodes.INTERNAL_ERROR, False)]
)
def test_a_reset_stream_goes_again_only_when_apns_says_it_was_not_processed(
    code: ErrorCodes, again: bool
) -> None:
    error = _reset(StreamReset(stream_id=1, error_code=code))
    # ConnectionClosed is what aioapns' pool sends again on another connection
    assert isinstance(error, ConnectionClosed) is again
    assert isinstance(error, AnswerLost) is not again
    assert code.name in str(error)


@pytest.mark.parametrize("taken", [None, 12])
def test_a_goaway_mid_batch_delivers_each_push_once(
    push_fake_apns: FakeAPNs, key: Key, taken: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """APNs closes a connection it has had long enough with a GOAWAY naming the last
    request it took, and still answers those. h2 refused every frame after a GOAWAY,
    so those answers were lost and the pool sent the pushes again on a new
    connection: the device showed them twice. The requests it took are read on the
    old connection; those it did not take (past ``taken``) go on a new one."""
    push_fake_apns.hold()  # all 20 on the wire when the GOAWAY comes
    apns = provider(push_fake_apns, key, timeout=30.0)
    pushes = [outgoing(i, ALERT) for i in range(20)]

    async def use(apns: APNsProvider) -> list[DeliveryResult]:
        sending = asyncio.ensure_future(apns.send_batch(pushes))
        await asyncio.to_thread(push_fake_apns.wait_in_flight, 20)
        await asyncio.to_thread(push_fake_apns.go_away, taken)
        push_fake_apns.release()  # what goes on a new connection is answered
        return await sending

    with caplog.at_level(logging.INFO, logger="flask_push.providers.apns"):
        results = run(apns, use)
    assert [r.status for r in results] == ["sent"] * 20
    delivered = [n.device_token for n in push_fake_apns.notifications]
    assert sorted(delivered) == sorted(token(i) for i in range(20))  # each once
    again = 0 if taken is None else 20 - taken
    assert push_fake_apns.connection_count == (2 if again else 1)
    [said] = [r.getMessage() for r in caplog.records if "closing a connection" in r.getMessage()]
    assert said == (
        f"APNs is closing a connection (GOAWAY NO_ERROR): the {20 - again} requests it "
        f"took are answered on it, the {again} it did not take go on another"
    )


def test_tls_is_verified_against_the_default_trust_store(
    push_fakes: PushFakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    push_fake_apns = push_fakes.apns(TOPIC, trusted=False)
    key = push_fake_apns.auth_key()
    untrusted = APNsProvider.from_settings(settings(push_fake_apns.port, key))
    [refused] = send(untrusted, [outgoing(0, ALERT)])
    assert refused.status == "retry"
    assert "CERTIFICATE_VERIFY_FAILED" in (refused.error or "")
    assert push_fake_apns.notifications == []

    monkeypatch.setenv("SSL_CERT_FILE", push_fake_apns.certificate.cert_file)
    trusted = APNsProvider.from_settings(settings(push_fake_apns.port, key))
    assert [r.status for r in send(trusted, [outgoing(0, ALERT)])] == ["sent"]


def test_a_request_that_timed_out_leaves_the_connection_usable(
    push_fake_apns: FakeAPNs, key: Key, caplog: pytest.LogCaptureFixture
) -> None:
    # aioapns crashes the connection (InvalidStateError) when a request it gave up on
    # is answered; here the stream is cancelled and the connection carries on.
    connections = push_fake_apns.connection_count

    async def use(apns: APNsProvider) -> list[list[DeliveryResult]]:
        connected = await apns.send_batch([outgoing(0, ALERT)])
        push_fake_apns.delay, apns.timeout = 0.3, 0.1
        late = await apns.send_batch([outgoing(i, ALERT) for i in range(1, 21)])
        push_fake_apns.delay, apns.timeout = 0.0, 10.0
        await asyncio.sleep(0.4)  # when the answers would have come
        return [connected, late, await apns.send_batch([outgoing(i, ALERT) for i in range(21, 41)])]

    with caplog.at_level(logging.WARNING):
        connected, late, prompt = run(provider(push_fake_apns, key), use)

    assert [r.status for r in connected] == ["sent"]
    assert {(r.status, r.error) for r in late} == {("retry", "no answer came within 0.1 s")}
    assert [r.status for r in prompt] == ["sent"] * 20
    assert push_fake_apns.connection_count == connections + 1
    assert [r.getMessage() for r in caplog.records] == []


# Size


def test_payload_size_is_the_size_on_the_wire(push_fake_apns: FakeAPNs, key: Key) -> None:
    apns = provider(push_fake_apns, key)

    def note(body: str) -> Notification:
        return Notification(title="Fits", body=body, url="/a", data={"k": "v"})

    room = 4096 - apns.payload_size(note("x"))
    fits = note("x" + "é" * (room // 2) + "x" * (room % 2))  # é is 2 bytes in UTF-8
    assert apns.payload_size(fits) == 4096
    apns.check(fits)

    longest_id = "msg_" + "X" * 36  # ids are at most 40 characters
    push = OutgoingPush("dlv_size", longest_id, fits, DeviceTarget(token(1)))
    assert [r.status for r in send(apns, [push])] == ["sent"]  # FakeAPNs takes <= 4096
    [received] = push_fake_apns.notifications
    sent = json.dumps(received.payload, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(sent) == 4096


# Clean up


def test_aclose_closes_the_pool(push_fake_apns: FakeAPNs, key: Key) -> None:
    apns = provider(push_fake_apns, key)

    async def use(apns: APNsProvider) -> None:
        assert [r.status for r in await apns.send_batch([outgoing(0, ALERT)])] == ["sent"]
        pool = apns._pool
        assert pool is not None and len(pool.connections) == 1
        await apns.aclose()
        assert pool.connections == [] and apns._pool is None

    run(apns, use)


# Parsing, without a server


@pytest.mark.parametrize(
    ("answer", "status", "code", "error"),
    [
        (NotificationResult("id", "200"), "sent", 200, None),
        (NotificationResult("id", "410", "Unregistered"), "gone", 410, "Unregistered"),
        (NotificationResult("id", "400", "BadDeviceToken"), "gone", 400, "BadDeviceToken"),
        (NotificationResult("id", "429", "TooManyProviderTokenUpdates"), "retry", 429, "429"),
        (NotificationResult("id", "403", "ExpiredProviderToken"), "failed", 403, "clock"),
        (NotificationResult("id", "400", "TopicDisallowed"), "failed", 400, "PUSH_APNS_TOPIC"),
        (NotificationResult("id", "405", "MethodNotAllowed"), "failed", 405, "405"),
        (MaxAttemptsExceeded(), "retry", None, "dropped on every attempt"),
        (AnswerLost("reset by peer"), "retry", None, "broke before APNs answered (reset by"),
        (
            APNsConnectionError(),
            "retry",
            None,
            "the connection to localhost:1 failed (ConnectionError)",
        ),
        (
            ConnectionRefusedError(111, "Connect call failed"),
            "retry",
            None,
            "the connection to localhost:1 failed (Connection refused)",
        ),
        (
            RuntimeError("can't create new thread at interpreter shutdown"),
            "retry",
            None,
            "this process was exiting",
        ),
        (ValueError("odd"), "failed", None, "ValueError: odd"),
    ],
)
def test_parse(answer: Any, status: str, code: int | None, error: str | None, key: Key) -> None:
    apns = APNsProvider.from_settings(settings(1, key))
    result = apns.parse(outgoing(0, ALERT), answer)
    assert (result.status, result.status_code) == (status, code)
    if error is None:
        assert result.error is None
    else:
        assert result.error is not None and error in result.error


def test_apns_id_is_a_uuid_derived_from_the_delivery() -> None:
    push = outgoing(0, ALERT)
    assert uuid.UUID(apns_id(push)).version == 5
    assert apns_id(push) == apns_id(push) != apns_id(outgoing(1, ALERT))


def test_an_error_body_is_kept_only_so_far(push_fake_apns: FakeAPNs, key: Key) -> None:
    """APNs' error bodies are a line of JSON: more than a few KiB is not kept."""
    push_fake_apns.fail_next(400, "BadPriority" + "x" * 10_000)
    (result,) = send(provider(push_fake_apns, key), [outgoing(0, Notification(title="Hi"))])
    assert result.status == "failed" and result.status_code == 400, result
    assert len(result.error or "") < 1000


def test_an_expired_provider_token_is_renewed_once_old_enough(
    push_fake_apns: FakeAPNs, key: Key
) -> None:
    """APNs says the token expired though this process read it as fresh (its wall
    clock stepped back): the next try carries a new one. A token younger than
    APNs' 20 minutes between changes is kept, and the clock is named."""
    apns = provider(push_fake_apns, key)
    first = apns._token.get_header()
    expired = NotificationResult("id", "403", "ExpiredProviderToken")
    young = apns.parse(outgoing(0, Notification(title="Hi")), expired)
    assert (young.status, young.reason) == ("failed", "credentials_refused")
    assert "check the server clock" in (young.error or "")
    assert apns._token.get_header() == first

    assert apns._token._signed_at is not None
    apns._token._signed_at -= MIN_TOKEN_AGE  # signed 20 minutes ago
    old = apns.parse(outgoing(0, Notification(title="Hi")), expired)
    assert old.status == "retry"
    assert old.error == (
        "403 ExpiredProviderToken: APNs said the provider token expired; the next try "
        "carries a new one"
    )
    # the pushes that were on their way with the old token get the same answer
    # moments later: theirs are retried too, with the new token
    also = apns.parse(outgoing(1, Notification(title="Hi")), expired)
    assert also.status == "retry"
    renewed = apns._token.get_header()
    assert renewed != first
    # ... which APNs takes
    (sent,) = send(apns, [outgoing(2, Notification(title="Hi"))])
    assert sent.status == "sent"
