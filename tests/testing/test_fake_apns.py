"""The fake APNs, driven by the real client aioapns over HTTP/2 and TLS.

A few wire-level checks (ALPN, methods, headers aioapns cannot send wrong, flow
control) use a bare ``h2`` client instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import jwt
import pytest
from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import AuthorizationHeaderProvider
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded

from flask_push.testing.apns import FakeAPNs, ReceivedNotification

TOPIC = "com.example.shop"
TOKEN = "ab12" * 16
OTHER_TOKEN = "cd34" * 16
T = TypeVar("T")

Key = tuple[str, str, str]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAPNs]:
    with FakeAPNs(topic=TOPIC) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAPNs) -> FakeAPNs:
    server.reset()
    return server


@pytest.fixture(scope="module")
def key(server: FakeAPNs) -> Key:
    return server.auth_key()


def client(fake: FakeAPNs, key: Key, **options: Any) -> APNs:
    """An aioapns client aimed at the fake; call inside the running loop."""
    key_pem, key_id, team_id = key
    apns = APNs(
        key=key_pem,
        key_id=key_id,
        team_id=team_id,
        topic=TOPIC,
        use_sandbox=True,
        ssl_context=fake.client_ssl_context(),
        **options,
    )
    apns.pool.protocol_class = fake.aioapns_protocol_class()
    return apns


async def close(apns: APNs) -> None:
    """Close the pool and wait until every connection is really gone.

    aioapns has no ``close()`` of its own; ``pool.close()`` only starts closing the
    transports, and the loop must keep running until ``connection_lost`` has run
    (which takes the connection out of ``pool.connections``), or the transports are
    left unclosed.
    """
    apns.pool.close()
    deadline = time.monotonic() + 5
    while apns.pool.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert not apns.pool.connections, "aioapns connections did not close"


def run(fake: FakeAPNs, key: Key, use: Callable[[APNs], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        apns = client(fake, key, **options)
        try:
            return await use(apns)
        finally:
            await close(apns)

    return asyncio.run(main())


def send(fake: FakeAPNs, key: Key, request: NotificationRequest) -> NotificationResult:
    async def use(apns: APNs) -> NotificationResult:
        return await asyncio.wait_for(apns.send_notification(request), 5)

    return run(fake, key, use)


def alert(token: str = TOKEN, text: str = "Hello", **options: Any) -> NotificationRequest:
    return NotificationRequest(token, {"aps": {"alert": text}}, **options)


# Delivery through aioapns


def test_alert_arrives_with_its_headers_and_payload(fake: FakeAPNs, key: Key) -> None:
    message = {
        "aps": {
            "alert": {"title": "Order shipped", "body": "On its way"},
            "badge": 3,
            "sound": "default",
        },
        "order": 42,
    }
    request = NotificationRequest(
        TOKEN,
        message,
        time_to_live=3600,
        priority=5,
        collapse_key="order-42",
        push_type=PushType.ALERT,
    )
    before = time.time()

    result = send(fake, key, request)

    assert (result.status, result.description) == ("200", None)
    assert result.is_successful
    [received] = fake.wait(1)
    assert received.device_token == TOKEN
    assert received.payload == message
    assert received.aps["badge"] == 3 and received.aps["sound"] == "default"
    assert received.apns_id == result.notification_id == request.notification_id
    assert received.topic == TOPIC
    assert received.push_type == "alert"
    assert received.headers["apns-priority"] == "5"
    assert received.headers["apns-collapse-id"] == "order-42"
    expiration = int(received.headers["apns-expiration"])
    assert before + 3600 - 1 <= expiration <= time.time() + 3600
    assert "authorization" not in received.headers
    assert before <= received.received_at <= time.time()
    with pytest.raises(dataclasses.FrozenInstanceError):
        received.device_token = OTHER_TOKEN  # type: ignore[misc]


def test_push_type_topics(fake: FakeAPNs, key: Key) -> None:
    async def use(apns: APNs) -> list[NotificationResult]:
        return [
            await apns.send_notification(
                alert(push_type=PushType.VOIP, apns_topic=f"{TOPIC}.voip")
            ),
            await apns.send_notification(
                NotificationRequest(
                    TOKEN,
                    {"aps": {"content-available": 1}},
                    priority=5,
                    push_type=PushType.BACKGROUND,
                )
            ),
            # a VoIP push must use the .voip topic
            await apns.send_notification(alert(push_type=PushType.VOIP)),
            await apns.send_notification(alert(apns_topic="com.example.other")),
        ]

    results = run(fake, key, use)

    assert [(r.status, r.description) for r in results] == [
        ("200", None),
        ("200", None),
        ("400", "TopicDisallowed"),
        ("400", "TopicDisallowed"),
    ]
    assert [n.topic for n in fake.notifications] == [f"{TOPIC}.voip", TOPIC]


def test_unregistered_device_gets_410_with_timestamp(fake: FakeAPNs, key: Key) -> None:
    fake.unregister(TOKEN, timestamp=1_700_000_000_000)

    result = send(fake, key, alert())

    assert (result.status, result.description) == ("410", "Unregistered")
    assert result.timestamp == 1_700_000_000_000
    assert fake.notifications == []
    [rejection] = fake.rejections
    assert (rejection.device_token, rejection.status, rejection.reason) == (
        TOKEN,
        410,
        "Unregistered",
    )


@pytest.mark.parametrize(
    ("request_", "status", "reason"),
    [
        (alert(token="not-a-token"), "400", "BadDeviceToken"),
        (alert(token=TOKEN[:-2]), "400", "BadDeviceToken"),
        (alert(text="x" * 4096), "413", "PayloadTooLarge"),
        (alert(priority=7), "400", "BadPriority"),
        (alert(collapse_key="c" * 65), "400", "BadCollapseId"),
        (NotificationRequest(TOKEN, {"alert": "no aps"}), "400", "PayloadEmpty"),
    ],
    ids=["bad-token", "short-token", "too-large", "priority", "collapse-id", "no-aps"],
)
def test_invalid_requests_are_rejected(
    fake: FakeAPNs, key: Key, request_: NotificationRequest, status: str, reason: str
) -> None:
    result = send(fake, key, request_)

    assert (result.status, result.description) == (status, reason)
    assert result.notification_id == request_.notification_id
    assert fake.notifications == []


def test_voip_payloads_may_be_larger(fake: FakeAPNs, key: Key) -> None:
    request = alert(text="x" * 4500, push_type=PushType.VOIP, apns_topic=f"{TOPIC}.voip")

    assert send(fake, key, request).status == "200"


def test_a_key_the_fake_did_not_issue_is_refused(fake: FakeAPNs, key: Key) -> None:
    _, key_id, team_id = key
    stranger = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for forged in [
        (stranger.decode(), key_id, team_id),
        (stranger.decode(), "UNKNOWN123", team_id),
    ]:
        result = send(fake, forged, alert())

        assert (result.status, result.description) == ("403", "InvalidProviderToken")
    assert fake.notifications == []


class StaticToken(AuthorizationHeaderProvider):
    def __init__(self, header: str) -> None:
        self.header = header

    def get_header(self) -> str:
        return self.header


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iat": -7200}, "ExpiredProviderToken"),
        ({"iss": "OTHERTEAM1"}, "InvalidProviderToken"),
        ({"iat": 3600}, "InvalidProviderToken"),  # issued in the future
        ({"iss": None}, "InvalidProviderToken"),
        (None, "MissingProviderToken"),
    ],
    ids=["expired", "other-team", "future", "no-iss", "missing"],
)
def test_provider_token_claims(
    fake: FakeAPNs, key: Key, claims: dict[str, Any] | None, reason: str
) -> None:
    key_pem, key_id, team_id = key
    header = ""
    if claims is not None:
        claims = dict(claims)
        payload = {"iss": team_id, "iat": int(time.time()) + claims.pop("iat", 0), **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        token = jwt.encode(payload, key_pem, algorithm="ES256", headers={"kid": key_id})
        header = f"bearer {token}"
    base = fake.aioapns_protocol_class()

    class Protocol(base):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.auth_provider = StaticToken(header) if header else None

    async def use(apns: APNs) -> NotificationResult:
        apns.pool.protocol_class = Protocol
        return await apns.send_notification(alert())

    result = run(fake, key, use)

    assert (result.status, result.description) == ("403", reason)


def test_scripted_failures(fake: FakeAPNs, key: Key) -> None:
    fake.fail_next(429, "TooManyRequests")
    fake.fail_next(503, "ServiceUnavailable", token=OTHER_TOKEN, times=2)

    async def use(apns: APNs) -> list[tuple[str, str | None]]:
        results = []
        for token in [OTHER_TOKEN, TOKEN, OTHER_TOKEN, OTHER_TOKEN, TOKEN]:
            result = await apns.send_notification(alert(token))
            results.append((result.status, result.description))
        return results

    assert run(fake, key, use) == [
        ("429", "TooManyRequests"),
        ("200", None),
        ("503", "ServiceUnavailable"),
        ("503", "ServiceUnavailable"),
        ("200", None),
    ]
    assert len(fake.notifications) == 2


def test_concurrent_notifications_share_one_connection(fake: FakeAPNs, key: Key) -> None:
    connections_before = fake.connection_count

    async def use(apns: APNs) -> list[NotificationResult]:
        sends = [apns.send_notification(alert(text=f"#{i}")) for i in range(100)]
        return await asyncio.wait_for(asyncio.gather(*sends), 10)

    results = run(fake, key, use)

    assert {result.status for result in results} == {"200"}
    received = fake.wait(100, timeout=1)
    assert sorted(n.payload["aps"]["alert"] for n in received) == sorted(
        f"#{i}" for i in range(100)
    )
    assert {n.apns_id for n in received} == {r.notification_id for r in results}
    assert fake.connection_count == connections_before + 1  # HTTP/2 multiplexing


def test_several_clients_at_once(fake: FakeAPNs, key: Key) -> None:
    connections_before = fake.connection_count

    async def main() -> list[NotificationResult]:
        clients = [client(fake, key) for _ in range(3)]
        try:
            sends = [apns.send_notification(alert(text=f"{i}")) for i, apns in enumerate(clients)]
            return await asyncio.wait_for(asyncio.gather(*sends), 5)
        finally:
            for apns in clients:
                await close(apns)

    results = asyncio.run(main())

    assert [result.status for result in results] == ["200"] * 3
    assert len(fake.wait(3)) == 3
    assert fake.connection_count == connections_before + 3


def test_delay_does_not_serialize_streams() -> None:
    with FakeAPNs(topic=TOPIC, delay=0.3) as slow:
        slow_key = slow.auth_key()

        async def use(apns: APNs) -> list[NotificationResult]:
            await apns.send_notification(alert())  # connect first
            started = time.perf_counter()
            results = await asyncio.gather(*(apns.send_notification(alert()) for _ in range(30)))
            assert 0.3 <= time.perf_counter() - started < 1.5
            return results

        results = run(slow, slow_key, use)

    assert {result.status for result in results} == {"200"}
    assert len(slow.notifications) == 31


def test_wait_for_and_reset(fake: FakeAPNs, key: Key) -> None:
    with pytest.raises(TimeoutError, match="received 0 of 1 notifications"):
        fake.wait(1, timeout=0.05)
    fake.unregister(OTHER_TOKEN)
    fake.fail_next(500, "InternalServerError")

    fake.reset()

    assert send(fake, key, alert(OTHER_TOKEN)).status == "200"
    assert isinstance(fake.wait(1, timeout=0.05)[0], ReceivedNotification)
    fake.reset()
    assert fake.notifications == [] and fake.rejections == []


# The wire, with a bare h2 client


def exchange(
    fake: FakeAPNs,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    alpn: bool = True,
) -> tuple[int, dict[str, str], dict[str, Any] | None, str | None]:
    """One request on a fresh connection: (status, headers, JSON body, ALPN protocol)."""
    context = fake.client_ssl_context()
    if alpn:
        context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((fake.host, fake.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=fake.host) as tls,
    ):
        conn = H2Connection()
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, headers, end_stream=not body)
        status, response_headers, data, ended = 0, {}, b"", False

        def receive() -> None:
            nonlocal status, response_headers, data, ended
            chunk = tls.recv(65536)
            assert chunk, "the server closed the connection"
            for event in conn.receive_data(chunk):
                if isinstance(event, ResponseReceived):
                    response_headers = {
                        name.decode(): value.decode() for name, value in event.headers or []
                    }
                    status = int(response_headers[":status"])
                elif isinstance(event, DataReceived):
                    data += event.data or b""
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                elif isinstance(event, StreamEnded):
                    ended = True

        # Send the body as fast as the server's flow-control windows allow.
        while body:
            tls.sendall(conn.data_to_send())
            size = min(
                len(body), conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
            )
            if size == 0:
                receive()
                continue
            conn.send_data(stream_id, body[:size], end_stream=size == len(body))
            body = body[size:]
        tls.sendall(conn.data_to_send())
        while not ended:
            receive()
            tls.sendall(conn.data_to_send())
        conn.close_connection()
        tls.sendall(conn.data_to_send())
        protocol = tls.selected_alpn_protocol()
    return status, response_headers, json.loads(data) if data else None, protocol


def request_headers(
    key: Key, path: str = f"/3/device/{TOKEN}", method: str = "POST", **apns: str
) -> list[tuple[str, str]]:
    key_pem, key_id, team_id = key
    token = jwt.encode(
        {"iss": team_id, "iat": int(time.time())},
        key_pem,
        algorithm="ES256",
        headers={"kid": key_id},
    )
    headers = [
        (":method", method),
        (":scheme", "https"),
        (":path", path),
        (":authority", "api.sandbox.push.apple.com"),
        ("authorization", f"bearer {token}"),
        ("apns-topic", TOPIC),
    ]
    return headers + [(f"apns-{name.replace('_', '-')}", value) for name, value in apns.items()]


PAYLOAD = b'{"aps":{"alert":"hi"}}'


@pytest.mark.parametrize("alpn", [True, False], ids=["alpn", "no-alpn"])
def test_speaks_http2_with_or_without_alpn(fake: FakeAPNs, key: Key, alpn: bool) -> None:
    status, headers, body, protocol = exchange(fake, request_headers(key), PAYLOAD, alpn=alpn)

    assert (status, body) == (200, None)
    assert protocol == ("h2" if alpn else None)
    [received] = fake.wait(1)
    assert headers["apns-id"] == received.apns_id  # generated when the client sent none


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({"method": "GET"}, PAYLOAD, 405, "MethodNotAllowed"),
        ({"path": "/3/devices/x"}, PAYLOAD, 404, "BadPath"),
        ({"path": "/3/device/"}, PAYLOAD, 400, "MissingDeviceToken"),
        ({"expiration": "soon"}, PAYLOAD, 400, "BadExpirationDate"),
        ({"push_type": "fax"}, PAYLOAD, 400, "InvalidPushType"),
        ({"id": "not-a-uuid"}, PAYLOAD, 400, "BadMessageId"),
        ({}, b"", 400, "PayloadEmpty"),
        ({}, b"{not json", 400, "BadPayload"),
        ({}, b"x" * 100_000, 413, "PayloadTooLarge"),  # beyond the 64 KiB window
    ],
    ids=[
        "method",
        "path",
        "no-token",
        "expiration",
        "push-type",
        "apns-id",
        "empty",
        "not-json",
        "huge",
    ],
)
def test_wire_level_rejections(
    fake: FakeAPNs, key: Key, headers: dict[str, str], body: bytes, status: int, reason: str
) -> None:
    path, method = headers.pop("path", f"/3/device/{TOKEN}"), headers.pop("method", "POST")

    answer, response_headers, reply, _ = exchange(
        fake, request_headers(key, path, method, **headers), body
    )

    assert (answer, reply) == (status, {"reason": reason})
    assert response_headers["apns-id"]
    assert fake.rejections[-1].reason == reason


def test_missing_topic_and_duplicate_headers(fake: FakeAPNs, key: Key) -> None:
    without_topic = [h for h in request_headers(key) if h[0] != "apns-topic"]
    twice = request_headers(key, priority="10") + [("apns-priority", "5")]

    assert exchange(fake, without_topic, PAYLOAD)[2] == {"reason": "MissingTopic"}
    assert exchange(fake, twice, PAYLOAD)[2] == {"reason": "DuplicateHeaders"}


def test_stop_closes_open_connections() -> None:
    fake = FakeAPNs(topic=TOPIC).start()
    issued = fake.auth_key()
    with socket.create_connection((fake.host, fake.port)) as raw:
        with fake.client_ssl_context().wrap_socket(raw, server_hostname=fake.host) as tls:
            conn = H2Connection()
            conn.initiate_connection()
            tls.sendall(conn.data_to_send())
            assert exchange(fake, request_headers(issued), PAYLOAD)[0] == 200
            started = time.perf_counter()

            fake.stop()

            assert time.perf_counter() - started < 2
            assert not fake.running
            with pytest.raises(RuntimeError):
                fake.port  # noqa: B018
    assert len(fake.notifications) == 1  # kept after stop
