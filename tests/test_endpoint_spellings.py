"""SSRF through odd spellings of a Web Push endpoint's host.

The HTTP client (aiohttp, through yarl) connects to ``①②⑦.0.0.1`` as 127.0.0.1
and to ``⑯⑨.②⑤④.⑯⑨.②⑤④`` as 169.254.169.254, and the system resolver reads
``0x7f.0.0.1`` or ``127.1`` as 127.0.0.1. Each spelling is refused when a browser
subscribes, whatever ``PUSH_ENDPOINT_HOSTS`` says, and a row stored before that
check existed is refused at delivery: a real FakePushService listens on 127.0.0.1,
so a push that got through would show in its requests.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push.credentials import WEBPUSH
from flask_push.message import Notification, OutgoingPush, WebPushTarget
from flask_push.providers import provider_class
from flask_push.providers.webpush import BlockedAddressError, _AddressGuard
from flask_push.testing import FakePushService

from conftest import add_subscription, browser_keys, db, push

#: the host lists of the issue: the default (the public push services), a
#: wildcard for everything, and the local test service named exactly
HOST_LISTS = {"default": None, "star": ["*"], "loopback": ["127.0.0.1"]}

INVALID, NOT_ALLOWED = "invalid_endpoint", "endpoint_not_allowed"

#: (how the host is written, the error code). Hosts that are not plain ASCII
#: letters, digits, hyphens and dots are malformed; numbers that are not an IP
#: address's canonical form are addresses nobody may name that way.
HOSTS = [
    ("①②⑦.0.0.1", INVALID),  # circled digits; yarl makes them 127.0.0.1
    ("１２７.０.０.１", INVALID),  # fullwidth digits
    ("127。0。0。1", INVALID),  # ideographic full stops
    ("127．0．0．1", INVALID),  # fullwidth full stops
    ("⑯⑨.②⑤④.⑯⑨.②⑤④", INVALID),  # 169.254.169.254, cloud metadata
    ("bücher.push.apple.com", INVALID),  # an IDN written in Unicode, not xn--
    ("2130706433", NOT_ALLOWED),  # decimal
    ("0177.0.0.1", NOT_ALLOWED),  # octal
    ("0x7f.0.0.1", NOT_ALLOWED),  # hex
    ("127.1", NOT_ALLOWED),  # short
    ("127.0.0.1.", NOT_ALLOWED),  # an address with a trailing dot
    ("[::ffff:127.0.0.1]", NOT_ALLOWED),  # IPv4-mapped, dotted
    ("[::ffff:7f00:1]", NOT_ALLOWED),  # IPv4-mapped, canonical IPv6
    ("[0:0:0:0:0:0:0:1]", NOT_ALLOWED),  # ::1 spelled out
    ("evil.example\\.push.apple.com", INVALID),  # fnmatch's * matches a backslash
    ("evil.example%2f.push.apple.com", INVALID),  # ... and a percent sign
    ("evil.example_.push.apple.com", INVALID),  # not a host name character
    ("127.0.0.1\t", INVALID),  # a tab, which URL parsers drop
]

#: (the endpoint made of the local service's endpoint, the error code): the
#: whole-URL tricks, in which the host itself is spelled normally
WRAPPERS = [
    (lambda url: " " + url, INVALID),  # a leading space: stored with it until now
    (lambda url: url + "\n", INVALID),
    (lambda url: url.replace("/push/", "/pu\x01sh/"), INVALID),  # a control character
]


def make(make_app: Callable[..., Flask], hosts: list[str] | None, **config: Any) -> Flask:
    if hosts is not None:
        config["PUSH_ENDPOINT_HOSTS"] = hosts
    # http is allowed, so that it is never the reason for a refusal here.
    return make_app(PUSH_ALLOW_HTTP_ENDPOINTS=True, **config)


def respelled(endpoint: str, host: str) -> str:
    return endpoint.replace("127.0.0.1", host, 1)


def stored(subscriber: Any, endpoint: str) -> dict[str, str]:
    """A fake push service's subscriber's keys, with another ``endpoint``, as a
    subscription row stores them."""
    return {"endpoint": endpoint, "p256dh": subscriber.p256dh, "auth": subscriber.auth}


def count_subscriptions(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Subscription))


def assert_refused(app: Flask, endpoint: str, code: str) -> None:
    body = {"endpoint": endpoint, "expirationTime": None, "keys": browser_keys()}
    response = app.test_client().post("/push/subscriptions", json=body)
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == code, response.json
    assert response.json["error"]["field"] == "endpoint"
    assert count_subscriptions(app) == 0


def refusal_failures(app: Flask, cases: list[tuple[str, str]]) -> list[str]:
    """What :func:`assert_refused` says of each ``(endpoint, code)`` case, for those
    it fails, named by their endpoint.

    One app checks every case (an app and its tables per case cost far more than the
    request): each case is a refused request that stores nothing, so they are
    independent; a case that did store a subscription has it deleted, so that it
    cannot fail the cases after it.
    """
    failures = []
    for endpoint, code in cases:
        try:
            assert_refused(app, endpoint, code)
        except Exception as err:  # noqa: BLE001 - reported with the case's endpoint
            failures.append(f"{endpoint!r}: {type(err).__name__}: {err}")
            with app.app_context():
                db.session.execute(sa.delete(push.models.Subscription))
                db.session.commit()
    return failures


# -- when a browser subscribes -------------------------------------------------------------


@pytest.mark.parametrize("hosts", HOST_LISTS.values(), ids=HOST_LISTS.keys())
def test_odd_host_spellings_are_refused_at_subscribe(
    make_app: Callable[..., Flask], push_fake_webpush: FakePushService, hosts: list[str] | None
) -> None:
    app = make(make_app, hosts)
    endpoint = push_fake_webpush.subscribe().endpoint
    cases = [(respelled(endpoint, host), code) for host, code in HOSTS]
    assert refusal_failures(app, cases) == []


@pytest.mark.parametrize("hosts", HOST_LISTS.values(), ids=HOST_LISTS.keys())
def test_whitespace_and_control_characters_are_refused_not_stored(
    make_app: Callable[..., Flask], push_fake_webpush: FakePushService, hosts: list[str] | None
) -> None:
    app = make(make_app, hosts)
    endpoint = push_fake_webpush.subscribe().endpoint
    assert refusal_failures(app, [(wrap(endpoint), code) for wrap, code in WRAPPERS]) == []


def test_the_refusal_says_what_is_wrong(make_app: Callable[..., Flask]) -> None:
    client = make(make_app, ["*"]).test_client()
    keys = browser_keys()

    def error(endpoint: str) -> str:
        body = {"endpoint": endpoint, "keys": keys}
        return str(client.post("/push/subscriptions", json=body).json["error"]["message"])

    assert "xn--" in error("https://bücher.example/x")
    assert "127.0.0.1" in error("http://①②⑦.0.0.1:8080/x")
    assert "canonical" in error("http://0x7f.0.0.1:8080/x")
    assert "space" in error(" https://push.example/x")


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://xn--bcher-kva.push.apple.com/x",  # an IDN in its ASCII form
        "https://WEB.Push.Apple.com/x",  # host names are case-insensitive
        "https://web.push.apple.com:443/x",
    ],
)
def test_ascii_spellings_of_push_services_are_accepted(
    make_app: Callable[..., Flask], endpoint: str
) -> None:
    body = {"endpoint": endpoint, "keys": browser_keys()}
    response = make(make_app, None).test_client().post("/push/subscriptions", json=body)
    assert response.status_code == 201, response.json
    assert response.json["endpoint"] == endpoint  # stored exactly as validated


def test_the_local_service_named_exactly_still_subscribes_and_delivers(
    make_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    app = make(make_app, ["127.0.0.1"], PUSH_QUEUE="inline", PUSH_SUPPRESS_SEND=False)
    subscriber = push_fake_webpush.subscribe()
    keys = {"p256dh": subscriber.p256dh, "auth": subscriber.auth}
    body = {"endpoint": subscriber.endpoint, "keys": keys}
    client = app.test_client()
    response = client.post("/push/subscriptions", json=body, headers={"X-User": "alice"})
    assert response.status_code == 201, response.json
    with app.app_context():
        push.send(users=["alice"], title="Order #42")
    assert [json.loads(p.payload)["title"] for p in subscriber.received] == ["Order #42"]


# -- rows stored before the check: refused at delivery -------------------------------------

#: spellings that aiohttp would connect to 127.0.0.1 (directly or by the system resolver)
LOCAL_SPELLINGS = [
    "①②⑦.0.0.1",
    "１２７.０.０.１",
    "127。0。0。1",
    "2130706433",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "127.1",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
]


#: each stored endpoint, made of the local service's endpoint, by its name
STORED_SPELLINGS: dict[str, Callable[[str], str]] = {
    **{host: (lambda url, h=host: respelled(url, h)) for host in LOCAL_SPELLINGS},
    "leading-space": lambda url: " " + url,
}


@pytest.mark.parametrize("hosts", HOST_LISTS.values(), ids=HOST_LISTS.keys())
def test_a_stored_odd_spelling_is_refused_at_delivery(
    make_app: Callable[..., Flask], push_fake_webpush: FakePushService, hosts: list[str] | None
) -> None:
    app = make(make_app, hosts, PUSH_QUEUE="inline", PUSH_SUPPRESS_SEND=False)
    delivery = push.models.Delivery
    # One app for every spelling (an app per spelling costs far more than its send).
    # Each spelling is a user of its own with one subscription, so a send reaches its
    # row alone; the failures are collected by name.
    failures = []
    with app.app_context():
        for index, (name, endpoint_of) in enumerate(STORED_SPELLINGS.items()):
            subscriber = push_fake_webpush.subscribe()
            endpoint = endpoint_of(subscriber.endpoint)
            user, sent_before = f"mallory-{index}", len(push_fake_webpush.requests)
            try:
                # Inserted as an older release could have stored it, past today's checks.
                add_subscription(user, **stored(subscriber, endpoint))
                message = push.send(users=[user], title="Hello")
                query = sa.select(delivery).where(delivery.message_id == message.id)
                (row,) = db.session.scalars(query)
                assert row.status == "failed"
                assert row.error  # a reason a person can read
                assert push_fake_webpush.requests[sent_before:] == []
            except Exception as err:  # noqa: BLE001 - reported with the spelling's name
                db.session.rollback()
                failures.append(f"{name}: {type(err).__name__}: {err}")
    assert failures == []
    assert push_fake_webpush.requests == []


@pytest.mark.parametrize("host", [host for host, _ in HOSTS])
def test_the_provider_refuses_odd_spellings_without_io(vapid_private_key: str, host: str) -> None:
    """Even a provider told to allow 127.0.0.1 refuses it spelled otherwise."""
    provider = provider_class("webpush").from_settings(
        WEBPUSH.normalize({"privateKey": vapid_private_key, "subject": "mailto:ops@example.com"}),
        allow_http=True,
        allow_private_hosts=["127.0.0.1"],
    )
    p256dh, auth = browser_keys().values()
    target = WebPushTarget(f"http://{host}:8080/push/x", p256dh, auth)
    push_ = OutgoingPush("dlv_1", "msg_1", Notification(title="Hi"), target)
    with pytest.raises(ValueError, match="endpoint"):
        provider.build_payload(push_)


# -- addresses a name resolves to: judged at connect time ------------------------------

#: addresses that reach a private, loopback or reserved network, whatever Python's
#: ``is_global`` says of the IPv6 ones: an IPv4 address inside IPv6 (NAT64's
#: well-known prefix, SIIT, mapped, 6to4, the old compatible form), NAT64 for local
#: use, site-local, the documentation range of RFC 9637, SRv6 segment ids
BLOCKED_ADDRESSES = [
    "127.0.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::a00:1",
    "64:ff9b:1::a00:1",
    "::ffff:0:a9fe:a9fe",
    "::ffff:127.0.0.1",
    "2002:7f00:1::",
    "::127.0.0.1",
    "fec0::1",
    "3fff::1",
    "5f00::1",
    "fe80::1%eth0",
    "ff02::1",
]
#: public addresses, some inside IPv6 the same ways
PUBLIC_ADDRESSES = ["8.8.8.8", "64:ff9b::808:808", "::ffff:0:808:808", "2a00:1450:4001::200a"]


@pytest.mark.parametrize("address", BLOCKED_ADDRESSES)
def test_a_name_resolving_to_a_private_address_is_refused_however_it_is_wrapped(
    address: str,
) -> None:
    guard = _AddressGuard([])
    with pytest.raises(BlockedAddressError, match="private, loopback"):
        guard.check("push.example.test", address)


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_a_name_resolving_to_a_public_address_passes(address: str) -> None:
    _AddressGuard([]).check("push.example.test", address)


def test_a_stored_endpoint_the_host_list_no_longer_allows_is_not_sent_to(
    make_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator who narrows PUSH_ENDPOINT_HOSTS (a wildcard abused) stops the
    pushes to the endpoints it no longer allows: not even their names are looked up."""
    looked_up: list[Any] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    app = make(make_app, ["127.0.0.1"], PUSH_QUEUE="inline", PUSH_SUPPRESS_SEND=False)
    subscriber = push_fake_webpush.subscribe()
    with app.app_context():
        # subscribed while the list was ["*.evil.test", ...]
        endpoint = subscriber.endpoint.replace("127.0.0.1", "attacker.evil.test")
        add_subscription("mallory", **stored(subscriber, endpoint))
        message = push.send(users=["mallory"], title="Hello")
        (entry,) = push.explain(message.id)
    assert entry["status"] == "failed"
    assert "'attacker.evil.test', which PUSH_ENDPOINT_HOSTS no longer allows" in entry["detail"]
    assert "attacker.evil.test" not in looked_up
    assert push_fake_webpush.requests == []


def test_the_host_verdicts_kept_are_bounded_and_the_trust_store_is_loaded_once() -> None:
    """A wildcard lets in any number of hosts: the verdicts kept on them have a
    bound. The system trust store, which takes milliseconds to load, is loaded once
    per setting, not once per pool."""
    from flask_push.providers import webpush

    assert webpush._host_allowed.cache_info().maxsize == 4096
    assert webpush._system_trust(None, None) is webpush._system_trust(None, None)
