"""WebPushProvider through the real wire: FakePushService decrypts and checks VAPID.

What every provider does (gone, retry, timeouts, size checks, order, concurrency,
aclose) is in test_contract.py; here is what only Web Push does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import gc
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from yarl import URL

from flask_push.credentials import WEBPUSH
from flask_push.message import (
    DeliveryResult,
    DeviceTarget,
    Notification,
    OutgoingPush,
    WebPushTarget,
)
from flask_push.providers.webpush import (
    BlockedAddressError,
    WebPushProvider,
    WebPushRequest,
    encrypted_size,
    topic_for,
)
from flask_push.pytest_plugin import PushFakes
from flask_push.testing.webpush import FakePushService, FakeSubscriber

from conftest import b64url
from conftest import send_batch as send
from faults import SilentService

SUBJECT = "mailto:ops@example.com"


@pytest.fixture(params=["http", "https"])
def service(request: pytest.FixtureRequest, push_fakes: PushFakes) -> FakePushService:
    return push_fakes.webpush(tls=request.param == "https")


def make_provider(
    key: str, service: FakePushService | None = None, **options: Any
) -> WebPushProvider:
    settings = WEBPUSH.normalize({"privateKey": key, "subject": SUBJECT})
    options.setdefault("allow_http", True)
    options.setdefault("allow_private_hosts", ["127.0.0.1"])
    options.setdefault("timeout", 5.0)
    if service is not None and service.certificate is not None:
        options.setdefault("ssl_context", service.certificate.client_context())
    return WebPushProvider.from_settings(settings, **options)


def target(subscriber: FakeSubscriber, endpoint: str | None = None) -> WebPushTarget:
    return WebPushTarget(endpoint or subscriber.endpoint, subscriber.p256dh, subscriber.auth)


def outgoing(
    to: WebPushTarget | DeviceTarget, number: int = 0, click_token: str | None = None, **fields: Any
) -> OutgoingPush:
    fields.setdefault("title", f"Order #{number}")
    return OutgoingPush(
        delivery_id=f"dlv_{number}",
        message_id=f"msg_{number}",
        notification=Notification(**fields),
        target=to,
        click_token=click_token,
    )


def send_one(provider: WebPushProvider, push: OutgoingPush) -> DeliveryResult:
    (result,) = send(provider, [push])
    return result


def browser_keys() -> tuple[str, str]:
    """A browser's p256dh and auth, for pushes that never reach a service."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return b64url(point), b64url(bytes(16))


def jwt_of(authorization: str | None) -> str:
    assert authorization and authorization.startswith("vapid ")
    params = dict(part.strip().split("=", 1) for part in authorization[6:].split(","))
    return params["t"]


class MapResolver(AbstractResolver):
    """Resolves the names it was given, like a DNS server an attacker controls."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.names[host]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


# -- delivery ------------------------------------------------------------------------------


def test_a_batch_arrives_decrypted_with_headers_and_one_vapid_token(
    service: FakePushService, vapid_private_key: str
) -> None:
    subscribers = [service.subscribe() for _ in range(50)]
    pushes = [
        outgoing(
            target(subscriber),
            i,
            click_token=f"ct_{i}",
            body="Out for delivery",
            url=f"/orders/{i}",
            icon="/icon.png",
            data={"orderId": i, "émoji": "📦"},
            ttl=3600,
            urgency="high",
            collapse_key=f"order-{i}",
        )
        for i, subscriber in enumerate(subscribers)
    ]
    provider = make_provider(vapid_private_key, service)

    results = send(provider, pushes)

    assert [r.delivery_id for r in results] == [p.delivery_id for p in pushes]
    assert {(r.status, r.status_code, r.provider) for r in results} == {("sent", 201, "webpush")}
    for i, subscriber in enumerate(subscribers):
        (received,) = subscriber.received
        assert received.json() == {
            "title": f"Order #{i}",
            "body": "Out for delivery",
            "url": f"/orders/{i}",
            "icon": "/icon.png",
            "tag": f"order-{i}",
            "data": {"orderId": i, "émoji": "📦"},
            "messageId": f"msg_{i}",
            "clickToken": f"ct_{i}",
        }
        assert (received.ttl, received.urgency, received.topic) == (3600, "high", f"order-{i}")
        assert received.content_type == "application/octet-stream"
        assert received.vapid.sub == SUBJECT
        assert received.vapid.aud == service.origin
        assert received.vapid.public_key == provider.public_key
        assert received.vapid.exp <= time.time() + 12 * 3600 + 5
    requests = service.requests
    assert len(requests) == 50
    # One VAPID token for the whole batch: signed once per origin, not per push.
    assert len({jwt_of(r.header("Authorization")) for r in requests}) == 1
    assert {r.header("Content-Encoding") for r in requests} == {"aes128gcm"}


def test_the_payload_is_compact_json_without_nulls(
    push_fake_webpush: FakePushService, vapid_private_key: str
) -> None:
    subscriber = push_fake_webpush.subscribe()
    provider = make_provider(vapid_private_key)
    push = outgoing(target(subscriber), 7, tag="t", collapse_key="c", badge=3)

    assert send_one(provider, push).status == "sent"
    assert subscriber.received[0].payload == (
        b'{"title":"Order #7","body":"","badge":3,"tag":"t","messageId":"msg_7"}'
    )
    assert subscriber.received[0].topic == "c"
    # Urgency is always sent; normal is the default.
    assert subscriber.received[0].urgency == "normal"
    assert subscriber.received[0].ttl == 86400


def test_tokens_are_reused_per_origin_and_differ_between_origins(
    push_fakes: PushFakes, vapid_private_key: str
) -> None:
    one, two = push_fakes.webpush(), push_fakes.webpush()
    first = [one.subscribe() for _ in range(3)]
    second = [two.subscribe() for _ in range(3)]
    provider = make_provider(vapid_private_key)
    pushes = [outgoing(target(s), i) for i, s in enumerate(first + second)]

    async def run() -> list[DeliveryResult]:
        try:
            results = await provider.send_batch(pushes)
            # A later batch on the same provider still uses the cached tokens.
            return results + await provider.send_batch(pushes)
        finally:
            await provider.aclose()

    assert {r.status for r in asyncio.run(run())} == {"sent"}
    tokens_one = {jwt_of(r.header("Authorization")) for r in one.requests}
    tokens_two = {jwt_of(r.header("Authorization")) for r in two.requests}
    assert len(one.requests) == len(two.requests) == 6
    assert len(tokens_one) == len(tokens_two) == 1
    assert tokens_one != tokens_two
    assert {p.vapid.aud for p in one.pushes} == {one.origin}
    assert {p.vapid.aud for p in two.pushes} == {two.origin}


def test_the_tokens_kept_are_bounded_however_many_origins_endpoints_name(
    push_fakes: PushFakes, vapid_private_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each origin gets a token of its own, and an endpoint may name any port of an
    allowed host (anyone may subscribe): the tokens kept were pruned of expired ones
    only, so they grew without bound, each signature past 1024 rescanning them all
    (16,000 origins took 10 s of the loop). Here with a bound of 4, and 6 services."""
    monkeypatch.setattr(WebPushProvider, "max_tokens", 4, raising=False)
    services = [push_fakes.webpush() for _ in range(6)]
    subscribers = [service.subscribe() for service in services]
    provider = make_provider(vapid_private_key)
    pushes = [outgoing(target(s), i) for i, s in enumerate(subscribers)]

    async def run() -> list[DeliveryResult]:
        try:
            results = await provider.send_batch(pushes)
            kept.append(len(provider._tokens))
            results += await provider.send_batch(pushes)  # the evicted are signed again
            kept.append(len(provider._tokens))
            return results
        finally:
            await provider.aclose()

    kept: list[int] = []
    assert [r.status for r in asyncio.run(run())] == ["sent"] * 12
    assert max(kept) <= 4
    for service in services:
        assert {p.vapid.aud for p in service.pushes} == {service.origin}


def test_a_token_is_renewed_after_its_renewal_time(
    push_fake_webpush: FakePushService, vapid_private_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    subscriber = push_fake_webpush.subscribe()
    monkeypatch.setattr(WebPushProvider, "vapid_renew_after", 0.0)
    provider = make_provider(vapid_private_key)
    # ECDSA signatures are randomized: each signing gives a token of its own.
    results = send(provider, [outgoing(target(subscriber), i) for i in range(3)])
    assert {r.status for r in results} == {"sent"}
    assert len({jwt_of(r.header("Authorization")) for r in push_fake_webpush.requests}) == 3


def test_long_or_unusual_collapse_keys_become_a_stable_topic(
    push_fake_webpush: FakePushService, vapid_private_key: str
) -> None:
    subscriber = push_fake_webpush.subscribe()
    keys = ["order 42 / status", "x" * 33, "commande-été"]
    provider = make_provider(vapid_private_key)
    pushes = [outgoing(target(subscriber), i, collapse_key=k) for i, k in enumerate(keys)]

    assert {r.status for r in send(provider, pushes)} == {"sent"}
    received = sorted(subscriber.received, key=lambda p: str(p.json()["messageId"]))
    topics = [p.topic for p in received]
    assert topics == [topic_for(k) for k in keys]
    assert all(t is not None and len(t) == 32 for t in topics)
    assert topic_for("order 42 / status") == topic_for("order 42 / status")
    assert topic_for("order-42") == "order-42"
    # The tag keeps the key as the host wrote it.
    assert [p.json()["tag"] for p in received] == keys


# -- what the push service says ------------------------------------------------------------


def test_an_endpoint_the_service_never_made_is_gone(
    service: FakePushService, vapid_private_key: str
) -> None:
    unknown = service.subscribe()
    push = outgoing(target(unknown, f"{service.origin}/push/never-made"))
    result = send_one(make_provider(vapid_private_key, service), push)
    assert (result.status, result.status_code) == ("gone", 404)
    assert result.error is not None and "does not know" in result.error


def test_a_retry_after_date_becomes_seconds(
    push_fake_webpush: FakePushService, vapid_private_key: str
) -> None:
    subscriber = push_fake_webpush.subscribe()
    later = email.utils.formatdate(time.time() + 90, usegmt=True)
    push_fake_webpush.fail_next(429, retry_after=later)
    result = send_one(make_provider(vapid_private_key), outgoing(target(subscriber)))
    assert (result.status, result.status_code) == ("retry", 429)
    assert result.retry_after is not None and 80 <= result.retry_after <= 91


@pytest.mark.parametrize("status", [400, 403, 413])
def test_refusals_fail_with_the_services_reason(
    push_fake_webpush: FakePushService, vapid_private_key: str, status: int
) -> None:
    subscriber = push_fake_webpush.subscribe()
    push_fake_webpush.fail_next(status)
    result = send_one(make_provider(vapid_private_key), outgoing(target(subscriber)))
    assert (result.status, result.status_code) == ("failed", status)
    assert result.error is not None and str(status) in result.error
    assert "scripted with fail_next" in result.error


def test_a_bad_vapid_token_fails_with_the_services_explanation(
    push_fake_webpush: FakePushService, vapid_private_key: str
) -> None:
    subscriber = push_fake_webpush.subscribe()
    # Sent to "localhost", the token's aud is not the origin the service expects.
    endpoint = subscriber.endpoint.replace("127.0.0.1", "localhost")
    provider = make_provider(vapid_private_key, allow_private_hosts=["localhost"])
    result = send_one(provider, outgoing(target(subscriber, endpoint)))
    assert (result.status, result.status_code, result.reason) == (
        "failed",
        403,
        "credentials_refused",
    )
    assert result.error is not None and "aud" in result.error
    assert result.error.endswith(
        "; check PUSH_VAPID_PRIVATE_KEY and PUSH_VAPID_SUBJECT: a subscription made for "
        "another key is refused (the browser must subscribe again)"
    )


def test_bad_subscription_keys_and_data_that_is_not_json_fail_alone(
    push_fake_webpush: FakePushService, vapid_private_key: str
) -> None:
    good = push_fake_webpush.subscribe()
    pushes = [
        outgoing(WebPushTarget(good.endpoint, "not-a-key", good.auth), 0),
        outgoing(target(good), 1, data={"when": object()}),
        outgoing(target(good), 2),
    ]
    results = send(make_provider(vapid_private_key), pushes)
    assert [r.status for r in results] == ["failed", "failed", "sent"]
    assert "p256dh" in (results[0].error or "")
    assert "not JSON" in (results[1].error or "")


def test_http_endpoints_need_allow_http(
    push_fake_webpush: FakePushService, vapid_private_key: str
) -> None:
    subscriber = push_fake_webpush.subscribe()
    result = send_one(
        make_provider(vapid_private_key, allow_http=False), outgoing(target(subscriber))
    )
    assert result.status == "failed"
    assert result.error is not None and "https" in result.error
    assert push_fake_webpush.requests == []


SEND_ONE = """
import asyncio, json, sys
from flask_push.credentials import WEBPUSH
from flask_push.message import Notification, OutgoingPush, WebPushTarget
from flask_push.providers.webpush import WebPushProvider

key, endpoint, p256dh, auth = json.load(sys.stdin)
settings = WEBPUSH.normalize({"privateKey": key, "subject": "mailto:ops@example.com"})
provider = WebPushProvider.from_settings(settings, allow_private_hosts=["127.0.0.1"])
push = OutgoingPush("d", "m", Notification(title="Hi"), WebPushTarget(endpoint, p256dh, auth))

async def main():
    try:
        (result,) = await provider.send_batch([push])
    finally:
        await provider.aclose()
    print(result.status, result.error)

asyncio.run(main())
"""


def test_tls_is_verified_against_ssl_cert_file(
    push_fakes: PushFakes, vapid_private_key: str
) -> None:
    # aiohttp reads the default trust store when it is imported, so the
    # variable must be set when the process starts: run a fresh one.
    service = push_fakes.webpush(tls=True)
    subscriber = service.subscribe()
    assert service.certificate is not None
    stdin = json.dumps([vapid_private_key, subscriber.endpoint, subscriber.p256dh, subscriber.auth])
    # Both at once: each process spends most of its time importing.
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SEND_ONE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "SSL_CERT_FILE": cert_file},
            text=True,
        )
        for cert_file in (service.certificate.cert_file, os.devnull)
    ]
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(stdin, timeout=30)
        assert process.returncode == 0, stderr
        outputs.append(stdout)
    assert len(subscriber.received) == 1
    trusted, untrusted = outputs
    assert trusted.startswith("sent")
    assert untrusted.startswith("retry") and "certificate verify failed" in untrusted
    assert "TLS certificate is not trusted" in untrusted


# -- size ----------------------------------------------------------------------------------


def test_payload_size_is_the_wire_size_at_its_largest(
    push_fake_webpush: FakePushService, vapid_private_key: str
) -> None:
    provider = make_provider(vapid_private_key)
    fits = Notification(title="T", body="")
    room = provider.max_payload - provider.payload_size(fits)
    largest = Notification(title="T", body="b" * room)
    assert provider.payload_size(largest) == 4096

    # With an id and a click token of the assumed maximal lengths, the push
    # service gets exactly 4096 bytes and accepts them.
    subscriber = push_fake_webpush.subscribe()
    push = OutgoingPush(
        delivery_id="dlv_big",
        message_id="m" * provider.max_message_id_length,
        notification=largest,
        target=target(subscriber),
        click_token="c" * provider.max_click_token_length,
    )
    assert send_one(provider, push).status == "sent"
    (request,) = push_fake_webpush.requests
    assert len(request.body) == 4096
    assert subscriber.received[0].json()["body"] == "b" * room


def test_an_oversized_push_is_never_sent(
    push_fake_webpush: FakePushService, vapid_private_key: str
) -> None:
    subscriber = push_fake_webpush.subscribe()
    provider = make_provider(vapid_private_key)
    push = outgoing(target(subscriber), click_token="c" * 5000)
    result = send_one(provider, push)
    assert result.status == "failed"
    assert result.error is not None and "limit is 4096" in result.error
    assert push_fake_webpush.requests == []


def test_encrypted_size_matches_http_ece() -> None:
    assert [encrypted_size(n) for n in (1, 3993, 4079, 4080)] == [104, 4096, 4182, 4200]


# -- the pure steps ------------------------------------------------------------------------


def test_build_payload_is_pure_and_plain(vapid_private_key: str) -> None:
    provider = make_provider(vapid_private_key, allow_http=False)
    push = outgoing(
        WebPushTarget("https://push.example.com:443/send/abc", *browser_keys()),
        1,
        ttl=60,
        urgency="low",
        collapse_key="k",
    )
    first, second = provider.build_payload(push), provider.build_payload(push)
    assert isinstance(first, WebPushRequest)
    assert first == second
    assert first.origin == "https://push.example.com"
    assert dict(first.headers) == {
        "TTL": "60",
        "Urgency": "low",
        "Topic": "k",
        "Content-Type": "application/octet-stream",
        "Content-Encoding": "aes128gcm",
    }


def test_options_are_checked_and_nothing_is_opened_before_a_send(vapid_private_key: str) -> None:
    provider = make_provider(vapid_private_key, concurrency=7, timeout=3.0)
    assert (provider.concurrency, provider.timeout, provider._session) == (7, 3.0, None)
    with pytest.raises(TypeError):
        make_provider(vapid_private_key, concurrence=7)


# -- SSRF ----------------------------------------------------------------------------------


def test_private_addresses_are_refused_unless_allowed(
    service: FakePushService, vapid_private_key: str
) -> None:
    subscriber = service.subscribe()
    # A public-looking name that resolves to loopback (DNS rebinding); over TLS
    # the fake's certificate names only localhost.
    name = "localhost" if service.tls else "push.example.test"
    renamed = subscriber.endpoint.replace("127.0.0.1", name)

    def attempt(endpoint: str, allowed: list[str], mapped: bool = True) -> DeliveryResult:
        provider = make_provider(
            vapid_private_key,
            service,
            allow_private_hosts=allowed,
            resolver=MapResolver({name: "127.0.0.1"}) if mapped else None,
        )
        return send_one(provider, outgoing(target(subscriber, endpoint)))

    for refused in (
        attempt(subscriber.endpoint, []),
        attempt(renamed, []),
        attempt(renamed, ["other.example.test", "10.0.0.0/8"]),
        # An allowed address opens it to an endpoint naming it, never to a name
        # that resolves there: PUSH_ENDPOINT_HOSTS = ["127.0.0.1", "*.example.test"]
        # must not reach 127.0.0.1 through the wildcard.
        attempt(renamed, ["127.0.0.1"]),
        attempt(renamed, ["127.0.0.0/8"]),
        # The system resolver's answer for localhost is checked too.
        attempt(subscriber.endpoint.replace("127.0.0.1", "localhost"), [], mapped=False),
    ):
        assert (refused.status, refused.reason) == ("failed", "address_blocked")
        assert refused.error is not None and "PUSH_ENDPOINT_HOSTS" in refused.error
    assert service.requests == []

    # A named host or an allowed address gets through. The fake then answers 403,
    # as its origin is 127.0.0.1 and the token's aud is not: the request arrived.
    assert attempt(renamed, [name.upper()]).status_code == 403
    assert attempt(subscriber.endpoint, ["127.0.0.0/8"]).status == "sent"
    assert attempt(subscriber.endpoint, ["127.0.0.1"]).status == "sent"
    assert len(service.requests) == 3


BLOCKED = [
    "10.1.2.3",
    "192.168.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "::1",
    "fd00::1",
    "fe80::1",
    "::ffff:127.0.0.1",
    "2002:7f00:1::",
]


def test_every_kind_of_non_public_address_is_refused(vapid_private_key: str) -> None:
    p256dh, auth = browser_keys()
    names = {f"h{i}.example.test": address for i, address in enumerate(BLOCKED)}
    endpoints = [f"https://{name}/push/x" for name in names]
    # IP literals skip the resolver and are checked on their own; the IPv4-mapped
    # one is refused before that, as a spelling of 127.0.0.1 other than its own.
    endpoints += [f"https://[{a}]/push/x" if ":" in a else f"https://{a}/push/x" for a in BLOCKED]
    pushes = [
        outgoing(WebPushTarget(endpoint, p256dh, auth), i) for i, endpoint in enumerate(endpoints)
    ]
    provider = make_provider(vapid_private_key, allow_private_hosts=[], resolver=MapResolver(names))
    results = send(provider, pushes)
    assert [r.status for r in results] == ["failed"] * len(pushes)
    reasons = [r.error or "" for r in results]
    assert all("PUSH_ENDPOINT_HOSTS" in reason or "canonical" in reason for reason in reasons)
    assert sum("canonical" in reason for reason in reasons) == 1


@pytest.mark.parametrize(
    "host", ["①②⑦.0.0.1", "2130706433", "127.0.0.1.", "0x7f.0.0.1", "[::ffff:7f00:1]", "[::1]"]
)
def test_post_checks_any_host_the_client_would_not_resolve(
    push_fake_webpush: FakePushService, vapid_private_key: str, host: str
) -> None:
    """A request that build_payload never made still meets the guard in post."""
    subscriber = push_fake_webpush.subscribe()
    provider = make_provider(vapid_private_key, allow_private_hosts=[])
    push = outgoing(target(subscriber))
    url = URL(subscriber.endpoint.replace("127.0.0.1", host))
    forged = dataclasses.replace(provider.build_payload(push), url=url, host=url.raw_host or "")

    async def run() -> Any:
        try:
            return await provider.post(push, forged)
        finally:
            await provider.aclose()

    with pytest.raises(BlockedAddressError):
        asyncio.run(run())
    assert push_fake_webpush.requests == []


# -- lifecycle -----------------------------------------------------------------------------


def test_aclose_leaves_nothing_open_over_tls(push_fakes: PushFakes, vapid_private_key: str) -> None:
    # Over http, as every provider, in test_contract.py.
    service = push_fakes.webpush(tls=True)
    subscriber = service.subscribe()
    provider = make_provider(vapid_private_key, service)

    async def run() -> list[str]:
        first = await provider.send_batch([outgoing(target(subscriber), 0)])
        await provider.aclose()
        # The pool reopens on demand and closes again.
        second = await provider.send_batch([outgoing(target(subscriber), 1)])
        await provider.aclose()
        await provider.aclose()
        return [r.status for r in first + second]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(run()) == ["sent", "sent"]
        gc.collect()
    assert [str(w.message) for w in caught] == []


def answer_once(raw: bytes, then_hold: bool = False) -> tuple[str, threading.Thread, socket.socket]:
    """A server on 127.0.0.1 that reads one request and answers ``raw`` (and then,
    with ``then_hold``, keeps the connection open without another byte); returns an
    endpoint on it, its thread and its socket."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, contextlib.suppress(OSError):  # the client may close it first
            connection.recv(65536)
            connection.sendall(raw)
            if then_hold:
                connection.recv(1)  # until the client closes it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    return f"http://127.0.0.1:{port}/push/secret-subscription-id", thread, listener


def send_to_raw(
    vapid_private_key: str, raw: bytes, then_hold: bool = False, **options: Any
) -> DeliveryResult:
    endpoint, thread, listener = answer_once(raw, then_hold)
    p256dh, auth = browser_keys()
    try:
        return send_one(
            make_provider(vapid_private_key, **options),
            outgoing(WebPushTarget(endpoint, p256dh, auth)),
        )
    finally:
        thread.join(5)
        listener.close()


def test_an_answer_that_is_not_http_is_retried_and_names_no_endpoint(
    vapid_private_key: str,
) -> None:
    """Once a permanent failure ("refused it"), its text holding the whole endpoint."""
    result = send_to_raw(vapid_private_key, b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
    assert (result.status, result.reason) == ("retry", "no_answer"), result
    assert result.error is not None and result.error.startswith("its answer was not HTTP (")
    assert "secret-subscription-id" not in result.error


@pytest.mark.parametrize(
    ("answer", "then_hold"),
    [
        (b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\nshort", False),
        (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", False),
        (b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\nshort", True),
        (b"HTTP/1.0 201 Created\r\n\r\n", False),
    ],
    ids=["cut-off", "cut-off-chunk", "stalled", "http-1.0-close"],
)
def test_a_push_taken_is_sent_whatever_becomes_of_the_body(
    vapid_private_key: str, answer: bytes, then_hold: bool
) -> None:
    """The service said 201 and its body broke off, or never ended: the push was
    taken, and was made a retry ("no_answer", or a timeout), so it arrived twice."""
    result = send_to_raw(vapid_private_key, answer, then_hold)
    assert (result.status, result.error) == ("sent", None), result


def test_an_error_whose_body_broke_off_is_read_by_its_status(vapid_private_key: str) -> None:
    """A 410 whose body broke off was a retry: the dead subscription was pushed to
    again, instead of being marked gone."""
    head = b"HTTP/1.1 410 Gone\r\nContent-Length: 100\r\n\r\n"
    result = send_to_raw(vapid_private_key, head + b"push subscription has unsubscribed")
    assert result.status == "gone", result
    assert result.error == (
        "the subscription has expired or was unsubscribed "
        "(410 Gone: push subscription has unsubscribed)"
    )


def test_a_connection_reset_once_the_request_went_is_no_answer(vapid_private_key: str) -> None:
    """The service read the push and reset the connection: it may have it, so the
    retry may show it twice; not "could not be reached"."""
    listener = socket.create_server(("127.0.0.1", 0))

    def reset() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()  # a reset, not a close

    thread = threading.Thread(target=reset, daemon=True)
    thread.start()
    p256dh, auth = browser_keys()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}/push/x"
    try:
        result = send_one(
            make_provider(vapid_private_key), outgoing(WebPushTarget(endpoint, p256dh, auth))
        )
    finally:
        thread.join(5)
        listener.close()
    assert (result.status, result.reason) == ("retry", "no_answer"), result
    assert result.error == "the connection failed (Connection reset by peer)"


def test_a_connection_not_made_in_time_is_unreachable_not_no_answer(
    vapid_private_key: str,
) -> None:
    """A TLS handshake the service never answers: the connection is given up on at
    half the push's timeout, so the push is "could not reach" (nothing was sent),
    not "may have arrived"."""
    provider = make_provider(vapid_private_key, timeout=1.0)
    with SilentService() as silent:  # takes the connection, says nothing
        endpoint = silent.origin.replace("http://", "https://") + "/push/1"
        p256dh, auth = browser_keys()
        result = send_one(provider, outgoing(WebPushTarget(endpoint, p256dh, auth)))
    assert (result.status, result.reason) == ("retry", "unreachable")
    assert result.error == "the connection was not made in time"


def test_control_characters_of_an_error_body_are_written_out(vapid_private_key: str) -> None:
    body = b"\x1b[2Jno\x07 such\tsubscription"
    head = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body)
    result = send_to_raw(vapid_private_key, head + body)
    assert result.status == "failed", result
    assert result.error == "400 Bad Request: \\x1b[2Jno\\x07 such\tsubscription"


def test_control_characters_of_a_reason_phrase_are_written_out(vapid_private_key: str) -> None:
    # aiohttp hands the status line's reason on as it came
    head = b"HTTP/1.1 400 Bad\x00Req\x1b[31m\r\nContent-Length: 0\r\n\r\n"
    result = send_to_raw(vapid_private_key, head)
    assert result.status == "failed", result
    assert result.error == "400 Bad\\x00Req\\x1b[31m"


def test_a_location_that_is_not_utf8_is_kept_printable(vapid_private_key: str) -> None:
    # aiohttp decodes a header's other bytes as lone surrogates, which no database
    # column takes: one such outcome would fail the write of its whole batch
    head = b"HTTP/1.1 201 Created\r\nLocation: https://push.example/m/\xff1\r\n"
    result = send_to_raw(vapid_private_key, head + b"Content-Length: 0\r\n\r\n")
    assert result.status == "sent", result
    assert result.service_id == "https://push.example/m/\\udcff1"
    result.service_id.encode("utf-8")


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("410 Gone", ("gone", 410)), ("413 Payload Too Large", ("failed", 413))],
)
def test_an_error_whose_body_stalls_keeps_its_status(
    vapid_private_key: str, status: str, outcome: tuple[str, int]
) -> None:
    """A push service says 410 (or 413) and its body stalls after a few bytes: the
    status line said what became of the push. It was a retry for want of an answer
    (``no_answer``), so a dead subscription was tried until given up."""
    raw = f'HTTP/1.1 {status}\r\nContent-Length: 100\r\n\r\n{{"error"'.encode()
    result = send_to_raw(vapid_private_key, raw, then_hold=True, timeout=3.0)
    assert (result.status, result.status_code) == outcome, result
