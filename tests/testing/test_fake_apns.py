"""The fake APNs, driven by the real client aioapns over HTTP/2 and TLS.

A few wire-level checks (ALPN, methods, headers aioapns cannot send wrong, flow
control) use a bare ``h2`` client instead. What every fake does alike (its lifecycle,
waiting, scripting, delay and hold) is tested once for all three in
test_fake_service.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
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

from flask_push.pytest_plugin import APNS_TOPIC as TOPIC
from flask_push.testing.apns import FakeAPNs, ReceivedNotification

from aioapns_client import client, close

TOKEN = "ab12" * 16
OTHER_TOKEN = "cd34" * 16
T = TypeVar("T")

Key = tuple[str, str, str]


@pytest.fixture
def key(push_fake_apns: FakeAPNs) -> Key:
    return push_fake_apns.auth_key()


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


def test_alert_arrives_with_its_headers_and_payload(push_fake_apns: FakeAPNs, key: Key) -> None:
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

    result = send(push_fake_apns, key, request)

    assert (result.status, result.description) == ("200", None)
    assert result.is_successful
    [received] = push_fake_apns.wait(1)
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


def test_push_type_topics(push_fake_apns: FakeAPNs, key: Key) -> None:
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

    results = run(push_fake_apns, key, use)

    assert [(r.status, r.description) for r in results] == [
        ("200", None),
        ("200", None),
        ("400", "TopicDisallowed"),
        ("400", "TopicDisallowed"),
    ]
    assert [n.topic for n in push_fake_apns.notifications] == [f"{TOPIC}.voip", TOPIC]


def test_unregistered_device_gets_410_with_timestamp(push_fake_apns: FakeAPNs, key: Key) -> None:
    push_fake_apns.unregister(TOKEN, timestamp=1_700_000_000_000)

    result = send(push_fake_apns, key, alert())

    assert (result.status, result.description) == ("410", "Unregistered")
    assert result.timestamp == 1_700_000_000_000
    assert push_fake_apns.notifications == []
    [rejection] = push_fake_apns.rejections
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
    push_fake_apns: FakeAPNs, key: Key, request_: NotificationRequest, status: str, reason: str
) -> None:
    result = send(push_fake_apns, key, request_)

    assert (result.status, result.description) == (status, reason)
    assert result.notification_id == request_.notification_id
    assert push_fake_apns.notifications == []


def test_voip_payloads_may_be_larger(push_fake_apns: FakeAPNs, key: Key) -> None:
    request = alert(text="x" * 4500, push_type=PushType.VOIP, apns_topic=f"{TOPIC}.voip")

    assert send(push_fake_apns, key, request).status == "200"


def test_a_key_the_fake_did_not_issue_is_refused(push_fake_apns: FakeAPNs, key: Key) -> None:
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
        result = send(push_fake_apns, forged, alert())

        assert (result.status, result.description) == ("403", "InvalidProviderToken")
    assert push_fake_apns.notifications == []


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
    push_fake_apns: FakeAPNs, key: Key, claims: dict[str, Any] | None, reason: str
) -> None:
    key_pem, key_id, team_id = key
    header = ""
    if claims is not None:
        claims = dict(claims)
        payload = {"iss": team_id, "iat": int(time.time()) + claims.pop("iat", 0), **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        token = jwt.encode(payload, key_pem, algorithm="ES256", headers={"kid": key_id})
        header = f"bearer {token}"
    base = push_fake_apns.aioapns_protocol_class()

    class Protocol(base):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.auth_provider = StaticToken(header) if header else None

    async def use(apns: APNs) -> NotificationResult:
        apns.pool.protocol_class = Protocol
        return await apns.send_notification(alert())

    result = run(push_fake_apns, key, use)

    assert (result.status, result.description) == ("403", reason)


def test_a_scripted_failure_answers_with_its_reason(push_fake_apns: FakeAPNs, key: Key) -> None:
    # (Their order, targets and counts are every fake's: in test_fake_service.py.)
    push_fake_apns.fail_next(503, "ServiceUnavailable", token=OTHER_TOKEN)

    result = send(push_fake_apns, key, alert(OTHER_TOKEN))

    assert (result.status, result.description) == ("503", "ServiceUnavailable")
    assert [(r.status, r.reason) for r in push_fake_apns.rejections] == [
        (503, "ServiceUnavailable")
    ]


def test_concurrent_notifications_share_one_connection(push_fake_apns: FakeAPNs, key: Key) -> None:
    connections_before = push_fake_apns.connection_count

    async def use(apns: APNs) -> list[NotificationResult]:
        sends = [apns.send_notification(alert(text=f"#{i}")) for i in range(100)]
        return await asyncio.wait_for(asyncio.gather(*sends), 10)

    results = run(push_fake_apns, key, use)

    assert {result.status for result in results} == {"200"}
    received = push_fake_apns.wait(100, timeout=1)
    assert sorted(n.payload["aps"]["alert"] for n in received) == sorted(
        f"#{i}" for i in range(100)
    )
    assert {n.apns_id for n in received} == {r.notification_id for r in results}
    assert push_fake_apns.connection_count == connections_before + 1  # HTTP/2 multiplexing


def test_several_clients_at_once(push_fake_apns: FakeAPNs, key: Key) -> None:
    connections_before = push_fake_apns.connection_count

    async def main() -> list[NotificationResult]:
        clients = [client(push_fake_apns, key) for _ in range(3)]
        try:
            sends = [apns.send_notification(alert(text=f"{i}")) for i, apns in enumerate(clients)]
            return await asyncio.wait_for(asyncio.gather(*sends), 5)
        finally:
            for apns in clients:
                await close(apns)

    results = asyncio.run(main())

    assert [result.status for result in results] == ["200"] * 3
    assert len(push_fake_apns.wait(3)) == 3
    assert push_fake_apns.connection_count == connections_before + 3


def test_streams_on_one_connection_are_served_side_by_side(
    push_fake_apns: FakeAPNs, key: Key
) -> None:
    async def use(apns: APNs) -> list[NotificationResult]:
        await apns.send_notification(alert())  # connect first
        connections = push_fake_apns.connection_count
        push_fake_apns.hold()
        sending = asyncio.gather(*(apns.send_notification(alert()) for _ in range(30)))
        try:
            # all 30 held at once, on the one connection: none waits for another
            await asyncio.to_thread(push_fake_apns.wait_in_flight, 30)
        finally:
            push_fake_apns.release()
        results = await sending
        assert push_fake_apns.connection_count == connections
        return results

    results = run(push_fake_apns, key, use)

    assert {result.status for result in results} == {"200"}
    assert len(push_fake_apns.notifications) == 31 and push_fake_apns.peak_in_flight == 30


def test_reset_forgets_unregistered_devices_and_rejections(
    push_fake_apns: FakeAPNs, key: Key
) -> None:
    push_fake_apns.unregister(OTHER_TOKEN)
    assert send(push_fake_apns, key, alert(OTHER_TOKEN)).status == "410"

    push_fake_apns.reset()

    assert push_fake_apns.rejections == []
    assert send(push_fake_apns, key, alert(OTHER_TOKEN)).status == "200"
    assert isinstance(push_fake_apns.wait(1, timeout=0.05)[0], ReceivedNotification)


# The wire, with a bare h2 client


def _read_until_closed(sock: socket.socket) -> None:
    """Read what the server still sends (a GOAWAY, say) until it closes the socket."""
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        pass


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
def test_speaks_http2_with_or_without_alpn(push_fake_apns: FakeAPNs, key: Key, alpn: bool) -> None:
    status, headers, body, protocol = exchange(
        push_fake_apns, request_headers(key), PAYLOAD, alpn=alpn
    )

    assert (status, body) == (200, None)
    assert protocol == ("h2" if alpn else None)
    [received] = push_fake_apns.wait(1)
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
    push_fake_apns: FakeAPNs,
    key: Key,
    headers: dict[str, str],
    body: bytes,
    status: int,
    reason: str,
) -> None:
    path, method = headers.pop("path", f"/3/device/{TOKEN}"), headers.pop("method", "POST")

    answer, response_headers, reply, _ = exchange(
        push_fake_apns, request_headers(key, path, method, **headers), body
    )

    assert (answer, reply) == (status, {"reason": reason})
    assert response_headers["apns-id"]
    assert push_fake_apns.rejections[-1].reason == reason


def test_missing_topic_and_duplicate_headers(push_fake_apns: FakeAPNs, key: Key) -> None:
    without_topic = [h for h in request_headers(key) if h[0] != "apns-topic"]
    twice = request_headers(key, priority="10") + [("apns-priority", "5")]

    assert exchange(push_fake_apns, without_topic, PAYLOAD)[2] == {"reason": "MissingTopic"}
    assert exchange(push_fake_apns, twice, PAYLOAD)[2] == {"reason": "DuplicateHeaders"}


def test_stop_closes_open_connections(push_fake_apns: FakeAPNs) -> None:
    issued = push_fake_apns.auth_key()
    with socket.create_connection((push_fake_apns.host, push_fake_apns.port)) as raw:
        with push_fake_apns.client_ssl_context().wrap_socket(
            raw, server_hostname=push_fake_apns.host
        ) as tls:
            conn = H2Connection()
            conn.initiate_connection()
            tls.sendall(conn.data_to_send())
            assert exchange(push_fake_apns, request_headers(issued), PAYLOAD)[0] == 200

            push_fake_apns.stop()  # returns while this client still holds its connection

            assert not push_fake_apns.running
            tls.settimeout(30)  # only ends a hang: the server has closed it already
            _read_until_closed(tls)  # raises TimeoutError if stop() left it open
            with pytest.raises(RuntimeError):
                push_fake_apns.port  # noqa: B018
    assert len(push_fake_apns.notifications) == 1  # kept after stop


# Live Activity pushes

LIVE_TOPIC = f"{TOPIC}.push-type.liveactivity"
#: Live Activity tokens are longer than device tokens (Apple: do not rely on the length)
ACTIVITY_TOKEN = "ef56" * 40


def live(aps: dict[str, Any], **options: Any) -> NotificationRequest:
    options.setdefault("apns_topic", LIVE_TOPIC)
    options.setdefault("priority", 10)
    return NotificationRequest(
        options.pop("token", ACTIVITY_TOKEN),
        {"aps": aps},
        push_type=PushType.LIVEACTIVITY,
        **options,
    )


def state(step: int) -> dict[str, Any]:
    return {"status": "out_for_delivery", "step": step, "steps": 5}


UPDATE = {"timestamp": 1_767_000_000, "event": "update", "content-state": state(4)}
START = {
    "timestamp": 1_767_000_000,
    "event": "start",
    "content-state": state(1),
    "attributes-type": "OrderAttributes",
    "attributes": {"orderId": 42},
    "alert": {"title": "Order #42", "body": "Placed"},
}


def sent_all(
    fake: FakeAPNs, key: Key, requests: list[NotificationRequest]
) -> list[tuple[str, str | None]]:
    async def use(apns: APNs) -> list[NotificationResult]:
        return [await apns.send_notification(request) for request in requests]

    return [(r.status, r.description) for r in run(fake, key, use)]


def test_live_activity_pushes_show_the_newest_state_per_token(
    push_fake_apns: FakeAPNs, key: Key
) -> None:
    start_token = "0a" * 80
    end = {
        "timestamp": 1_767_000_300,
        "event": "end",
        "content-state": state(5),
        "dismissal-date": 1_767_003_900,
        "stale-date": 1_767_001_000,
        "alert": {"title": "Order #42", "body": "Delivered", "sound": "default"},
    }
    older = {**UPDATE, "timestamp": 1_767_000_100, "content-state": state(3)}
    requests = [
        live(START, token=start_token),
        live(UPDATE, priority=5),
        live({**UPDATE, "timestamp": 1_767_000_200}),
        live(older),  # arrives late: accepted, and ignored as the device does
        live(end),
    ]

    assert sent_all(push_fake_apns, key, requests) == [("200", None)] * 5

    assert [n.push_type for n in push_fake_apns.notifications] == ["liveactivity"] * 5
    assert {n.topic for n in push_fake_apns.notifications} == {LIVE_TOPIC}
    shown = push_fake_apns.live_activities
    assert set(shown) == {start_token, ACTIVITY_TOKEN}
    started = shown[start_token]
    assert (started.event, started.content_state) == ("start", state(1))
    assert (started.attributes_type, started.attributes) == ("OrderAttributes", {"orderId": 42})
    ended = shown[ACTIVITY_TOKEN]
    assert (ended.event, ended.timestamp, ended.content_state) == ("end", 1_767_000_300, state(5))
    assert ended.aps["dismissal-date"] == 1_767_003_900
    assert ended.attributes_type is None  # started in the app, not by a push

    push_fake_apns.reset()
    assert push_fake_apns.live_activities == {}


@pytest.mark.parametrize(
    ("request_", "reason", "detail"),
    [
        (live(UPDATE, apns_topic=TOPIC), "TopicDisallowed", ""),
        (live(UPDATE, apns_topic=f"{TOPIC}.voip"), "TopicDisallowed", ""),
        (live(UPDATE, priority=1), "BadPriority", "priority 5 or 10"),
        (live({**UPDATE, "timestamp": None}), "BadPayload", "aps.timestamp"),
        (live({"event": "update", "content-state": state(1)}), "BadPayload", "aps.timestamp"),
        (live({**UPDATE, "timestamp": "1767000000"}), "BadPayload", "aps.timestamp"),
        (live({**UPDATE, "event": "pause"}), "BadPayload", "aps.event"),
        (live({"timestamp": 1, "event": "update"}), "BadPayload", "aps.content-state"),
        (live({**UPDATE, "content-state": "on its way"}), "BadPayload", "aps.content-state"),
        (
            live({**UPDATE, "attributes-type": "OrderAttributes", "attributes": {}}),
            "BadPayload",
            "event start only",
        ),
        (live({**START, "event": "end"}), "BadPayload", "event start only"),
        (live({**START, "attributes": None}), "BadPayload", "aps.attributes must"),
        (
            live({k: v for k, v in START.items() if k != "attributes"}),
            "BadPayload",
            "together",
        ),
        (live({**UPDATE, "stale-date": "soon"}), "BadPayload", "aps.stale-date"),
    ],
    ids=[
        "bare-topic",
        "other-push-type-topic",
        "priority-1",
        "null-timestamp",
        "no-timestamp",
        "text-timestamp",
        "bad-event",
        "no-content-state",
        "text-content-state",
        "attributes-on-update",
        "attributes-on-end",
        "attributes-not-an-object",
        "attributes-type-alone",
        "text-stale-date",
    ],
)
def test_live_activity_rules_are_enforced(
    push_fake_apns: FakeAPNs, key: Key, request_: NotificationRequest, reason: str, detail: str
) -> None:
    assert sent_all(push_fake_apns, key, [request_]) == [("400", reason)]

    assert push_fake_apns.notifications == []
    assert push_fake_apns.live_activities == {}
    [rejection] = push_fake_apns.rejections
    assert rejection.reason == reason and detail in rejection.detail


def test_an_alert_may_not_use_the_live_activity_topic(push_fake_apns: FakeAPNs, key: Key) -> None:
    assert sent_all(push_fake_apns, key, [alert(apns_topic=LIVE_TOPIC)]) == [
        ("400", "TopicDisallowed")
    ]


def test_its_certificate_folder_lives_as_long_as_the_fake() -> None:
    # Each fake left its certificate's folder in the temporary directory: hundreds of
    # folders (a quarter of a megabyte each with the trust bundle) a test run.
    fake = FakeAPNs(TOPIC).start()
    folder = Path(fake.certificate.trust_bundle()).parent
    assert sorted(p.name for p in folder.iterdir()) == ["ca-bundle.pem", "cert.pem", "key.pem"]
    fake.stop()
    fake.start()  # a restart serves the same certificate, which its clients trust
    assert folder.is_dir()
    fake.stop()
    del fake
    gc.collect()
    assert not folder.exists()
