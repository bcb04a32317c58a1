"""FCMProvider through the real pyfcm, google-auth and aiohttp, against FakeFCM.

What every provider does (gone, retry without sleeping, timeouts, size checks, order,
concurrency, aclose) is in test_contract.py; here is what only FCM does.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any, TypeVar

import pytest

from flask_push.credentials import FCM
from flask_push.errors import PayloadError
from flask_push.message import (
    DeliveryResult,
    DeviceTarget,
    Notification,
    OutgoingPush,
)
from flask_push.providers import provider_class
from flask_push.providers.fcm import FCMProvider
from flask_push.testing.fcm import FakeFCM, make_registration_token

from conftest import run_provider as run
from conftest import send_batch as send
from conftest import service_account as foreign_service_account
from faults import SilentService

T = TypeVar("T")

ORDER = Notification(
    title="Order #42",
    body="Out for delivery",
    url="/orders/42",
    icon="ic_truck",
    image="https://shop.example/van.png",
    badge=3,
    sound="default",
    data={"orderId": 42, "paid": True, "note": "ring twice", "items": [1, 2], "gift": None},
    ttl=3600,
    urgency="high",
    collapse_key="order-42",
)


@pytest.fixture
def account(push_fake_fcm: FakeFCM) -> dict[str, str]:
    return push_fake_fcm.service_account()


def make_provider(
    fake: FakeFCM, account: dict[str, Any], *, timeout: float = 5.0, **settings: Any
) -> FCMProvider:
    # Through the settings check, as init_app and the /providers API do.
    checked = FCM.normalize({"credentials": account, "baseUrl": fake.base_url, **settings})
    provider = provider_class("fcm").from_settings(checked, concurrency=10, timeout=timeout)
    assert isinstance(provider, FCMProvider)
    return provider


MESSAGE_ID = "msg_01JD3X9K8Q4M2V7T5R1N6B0C9A"


def push(token: str, notification: Notification = ORDER, n: int = 0, **extra: Any) -> OutgoingPush:
    return OutgoingPush(f"dlv_{n}", MESSAGE_ID, notification, DeviceTarget(token), **extra)


def send_one(provider: FCMProvider, one: OutgoingPush) -> DeliveryResult:
    [result] = send(provider, [one])
    return result


def test_batch_arrives_mapped_with_one_token(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    tokens = [make_registration_token() for _ in range(30)]
    pushes = [push(token, n=i) for i, token in enumerate(tokens)]
    issued_before = len(push_fake_fcm.issued_tokens)
    provider = make_provider(push_fake_fcm, account)

    results = send(provider, pushes)

    assert [r.delivery_id for r in results] == [p.delivery_id for p in pushes]
    assert {(r.status, r.provider, r.status_code) for r in results} == {("sent", "fcm", 200)}
    by_token = {m.token: m for m in push_fake_fcm.messages}
    assert sorted(by_token) == sorted(tokens)
    for token in tokens:
        assert by_token[token].project_id == "flask-push-test"
        assert by_token[token].message == {
            "token": token,
            "notification": {
                "title": "Order #42",
                "body": "Out for delivery",
                "image": "https://shop.example/van.png",
            },
            "data": {
                "orderId": "42",
                "paid": "true",
                "note": "ring twice",
                "items": "[1,2]",
                "gift": "null",
                "url": "/orders/42",
                "messageId": MESSAGE_ID,
            },
            "android": {
                "ttl": "3600s",
                "priority": "HIGH",
                "collapse_key": "order-42",
                "notification": {
                    "icon": "ic_truck",
                    "sound": "default",
                    "tag": "order-42",
                    "notification_count": 3,
                },
            },
        }
    # One access token from the fake's /token served all 30 sends, 10 at a time.
    assert len(push_fake_fcm.issued_tokens) == issued_before + 1
    assert {m.access_token for m in push_fake_fcm.messages} == {
        push_fake_fcm.issued_tokens[-1].access_token
    }
    assert push_fake_fcm.send_attempts == 30


def test_minimal_notification_and_click_token(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    token = make_registration_token()
    plain = Notification(title="Hi", badge="/badge.png", data={"url": "/theirs"}, ttl=10**8)
    result = send_one(make_provider(push_fake_fcm, account), push(token, plain, click_token="ck.1"))
    assert result.status == "sent"
    assert push_fake_fcm.messages[0].message == {
        "token": token,
        "notification": {"title": "Hi"},
        # data's own "url" is kept when the notification has none
        "data": {"url": "/theirs", "messageId": MESSAGE_ID, "clickToken": "ck.1"},
        # the ttl is capped at FCM's four weeks; a str badge has no Android counterpart
        "android": {"ttl": "2419200s", "priority": "NORMAL"},
    }


def test_project_from_settings_wins_over_the_keys(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    # pyfcm would post to the key's project_id; the configured one must be used.
    key = dict(account, project_id="not-this-one")
    provider = make_provider(push_fake_fcm, key, projectId="flask-push-test")
    assert send_one(provider, push(make_registration_token())).status == "sent"
    assert push_fake_fcm.messages[0].project_id == "flask-push-test"


def test_wrong_project_fails_and_keeps_the_token(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    provider = make_provider(push_fake_fcm, account, projectId="another-project")
    result = send_one(provider, push(make_registration_token()))
    assert (result.status, result.status_code) == ("failed", 403)
    assert "'another-project'" in (result.error or "")
    assert "PUSH_FCM_PROJECT_ID" in (result.error or "")


def test_a_404_that_is_not_unregistered_fails_and_keeps_the_token(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    """A base URL with a wrong path (a proxy's prefix mistyped) gets 404 for every
    send: each installation was marked dead, said "the registration token is
    unregistered". Only FCM's UNREGISTERED is a dead token."""
    wrong = make_provider(push_fake_fcm, account, baseUrl=f"{push_fake_fcm.base_url}/fcm-proxy")
    result = send_one(wrong, push(make_registration_token()))
    assert (result.status, result.status_code) == ("failed", 404), result
    assert "was not found" in (result.error or "")
    assert "check PUSH_FCM_BASE_URL and the project 'flask-push-test'" in (result.error or "")
    dead = make_registration_token()
    push_fake_fcm.unregister(dead)
    gone = send_one(make_provider(push_fake_fcm, account), push(dead))
    assert (gone.status, gone.status_code) == ("gone", 404)
    assert gone.error == "FCM: the registration token is unregistered"


def test_malformed_token_is_gone_other_invalid_argument_fails(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    other = make_registration_token()
    push_fake_fcm.fail_next(
        400, "INVALID_ARGUMENT", token=other, message="Invalid value at 'message'"
    )
    results = send(make_provider(push_fake_fcm, account), [push("not a token"), push(other, n=1)])
    assert [(r.status, r.status_code) for r in results] == [("gone", 400), ("failed", 400)]
    assert "not a valid FCM registration token" in (results[0].error or "")
    assert "Invalid value at 'message'" in (results[1].error or "")


def test_expired_access_token_is_replaced_once(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    provider = make_provider(push_fake_fcm, account)
    first, second = make_registration_token(), make_registration_token()
    issued_before = len(push_fake_fcm.issued_tokens)

    async def work() -> list[DeliveryResult]:
        results = await provider.send_batch([push(first)])
        push_fake_fcm.expire_tokens()
        return results + await provider.send_batch([push(second, n=1)])

    assert [r.status for r in run(provider, work)] == ["sent", "sent"]
    assert len(push_fake_fcm.issued_tokens) == issued_before + 2
    assert push_fake_fcm.send_attempts == 3  # the refused one, then the resend


def test_refused_credentials_fail_with_advice(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    push_fake_fcm.fail_next(401, "UNAUTHENTICATED")
    result = send_one(make_provider(push_fake_fcm, account), push(make_registration_token()))
    assert (result.status, result.status_code, result.reason) == (
        "failed",
        401,
        "credentials_refused",
    )
    assert "Check that PUSH_FCM_CREDENTIALS is a current service-account key" in (
        result.error or ""
    )

    # A key the token endpoint does not know: invalid_grant, not worth retrying,
    # and remembered for a while rather than asked again for every push.
    stranger = foreign_service_account(token_uri=push_fake_fcm.token_uri)
    pushes = [push(make_registration_token(), n=i) for i in range(3)]
    results = send(make_provider(push_fake_fcm, stranger), pushes)
    assert [(r.status, r.reason) for r in results] == [("failed", "credentials_refused")] * 3
    for result in results:
        assert "invalid_grant" in (result.error or "")
        assert "PUSH_FCM_CREDENTIALS" in (result.error or "")
    assert push_fake_fcm.send_attempts == 1  # only the scripted 401 above reached messages:send


def test_apns_or_web_push_refusing_fcms_own_credentials_points_at_the_firebase_console(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    """401 THIRD_PARTY_AUTH_ERROR: FCM took the service account; the APNs key (or
    the Web Push certificates) uploaded to Firebase were refused. The sentence sent
    the operator to the service account, which is not at fault, and the access
    token was thrown away for nothing."""
    provider = make_provider(push_fake_fcm, account)
    push_fake_fcm.fail_next(401, "THIRD_PARTY_AUTH_ERROR")

    async def work() -> list[DeliveryResult]:
        results = await provider.send_batch([push(make_registration_token())])
        return results + await provider.send_batch([push(make_registration_token(), n=1)])

    issued_before = len(push_fake_fcm.issued_tokens)
    refused, sent = run(provider, work)
    assert (refused.status, refused.status_code, refused.reason) == (
        "failed",
        401,
        "credentials_refused",
    )
    error = refused.error or ""
    assert "FCM answered 401 THIRD_PARTY_AUTH_ERROR" in error
    assert "APNs authentication key" in error and "Firebase console" in error
    assert "PUSH_FCM_CREDENTIALS was accepted" in error
    assert sent.status == "sent"
    assert len(push_fake_fcm.issued_tokens) == issued_before + 1  # the token kept


def test_a_stopped_server_without_an_access_token_yet_is_retried(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    cold = make_provider(push_fake_fcm, account)  # has no access token yet
    push_fake_fcm.stop()
    [no_token] = send(cold, [push(make_registration_token())])
    assert no_token.status == "retry" and "token endpoint" in (no_token.error or "")


def test_a_token_endpoint_that_fails_for_now_is_not_said_to_be_fcms_answer(
    push_fake_fcm: FakeFCM,
) -> None:
    """Google's token endpoint answers 503 (try later): the push is retried as one
    that could not reach FCM, whose timeline said "FCM answered" (``unavailable``)
    though FCM never saw it."""
    import http.server

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"error": "temporarily_unavailable", "error_description": "try later"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        account = foreign_service_account(token_uri=f"http://127.0.0.1:{server.server_port}/token")
        # time for google-auth's own tries of a 503 (about 3 s), then its error
        provider = make_provider(push_fake_fcm, account, timeout=20.0)
        result = send_one(provider, push(make_registration_token()))
    finally:
        server.shutdown()
        server.server_close()
    assert (result.status, result.reason) == ("retry", "unreachable"), result
    assert (result.error or "").startswith("the FCM token endpoint failed: ")
    assert push_fake_fcm.send_attempts == 0


def test_reserved_data_keys_are_refused_by_check(account: dict[str, str]) -> None:
    provider = FCMProvider(credentials=account, project_id="flask-push-test")
    with pytest.raises(PayloadError, match="limit is 4000"):
        provider.check(Notification(title="Sale", body="x" * 2000, data={"more": "é" * 1000}))
    with pytest.raises(PayloadError, match="'google.c.a.e'"):
        provider.check(Notification(title="Sale", data={"google.c.a.e": "1"}))


def test_payload_size_covers_what_is_sent(push_fake_fcm: FakeFCM, account: dict[str, str]) -> None:
    provider = make_provider(push_fake_fcm, account)
    size = provider.payload_size(ORDER)
    assert (
        send_one(provider, push(make_registration_token(), click_token="x" * 100)).status == "sent"
    )
    message = push_fake_fcm.messages[0].message
    sent = json.dumps(
        {"notification": message["notification"], "data": message["data"]},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert len(sent) < size < len(sent) + 200


def test_sends_run_on_the_loop_without_threads(
    push_fake_fcm: FakeFCM, account: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the token fetch (blocking google-auth) leaves the loop, for the loop's
    # executor; once the token is there, sends start no thread and use none.
    provider = make_provider(push_fake_fcm, account)
    issued_before = len(push_fake_fcm.issued_tokens)
    loop_thread = threading.current_thread()
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def noted_start(thread: threading.Thread) -> None:
        if threading.current_thread() is loop_thread:  # not the fake's handler threads
            started.append(thread)
        start(thread)

    async def work() -> list[DeliveryResult]:
        await provider.send_batch([push(make_registration_token())])
        monkeypatch.setattr(threading.Thread, "start", noted_start)
        try:
            return await provider.send_batch(
                [push(make_registration_token(), n=i) for i in range(1, 21)]
            )
        finally:
            monkeypatch.undo()

    results = run(provider, work)
    assert started == []
    assert {r.status for r in results} == {"sent"}
    assert len(push_fake_fcm.issued_tokens) == issued_before + 1


def test_sends_take_the_proxy_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # As requests did (and does for the token request): HTTPS_PROXY, unless NO_PROXY.
    from flask_push.providers.fcm import _env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal.example")
    assert _env_proxy("https://fcm.googleapis.com/v1/projects/p/messages:send") == (
        "http://proxy.example:3128"
    )
    assert _env_proxy("https://fcm.internal.example/v1/projects/p/messages:send") is None
    assert _env_proxy("https://localhost:8443/v1/projects/p/messages:send") is None


def answering(raw: bytes, then_hold: bool = False) -> tuple[str, threading.Thread, socket.socket]:
    """A server on 127.0.0.1 that reads one request and answers ``raw`` (and then,
    with ``then_hold``, keeps the connection open without another byte); returns
    its base URL, its thread and its socket."""
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
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread, listener


def send_to_raw(
    fake: FakeFCM, account: dict[str, str], raw: bytes, then_hold: bool = False, **settings: Any
) -> DeliveryResult:
    """One push through a provider whose FCM answers ``raw`` (see :func:`answering`)."""
    base_url, thread, listener = answering(raw, then_hold)
    try:
        provider = make_provider(fake, account, baseUrl=base_url, **settings)
        return send_one(provider, push(make_registration_token()))
    finally:
        listener.close()
        thread.join(5)


def test_a_redirect_is_not_followed(push_fake_fcm: FakeFCM, account: dict[str, str]) -> None:
    """FCM never redirects a send: one elsewhere must not carry the access token
    and the push there, nor count as sent by what that server answers."""
    elsewhere = socket.create_server(("127.0.0.1", 0))
    elsewhere.settimeout(0.5)
    location = f"http://127.0.0.1:{elsewhere.getsockname()[1]}/v1/projects/p/messages:send"
    head = f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
    base_url, thread, listener = answering(head.encode())
    try:
        provider = make_provider(push_fake_fcm, account, baseUrl=base_url)
        result = send_one(provider, push(make_registration_token()))
        with pytest.raises(TimeoutError):
            elsewhere.accept()  # nobody came
    finally:
        thread.join(5)
        listener.close()
        elsewhere.close()
    assert (result.status, result.status_code) == ("failed", 307), result


def test_an_endless_answer_is_read_only_so_far(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    """A 500 whose body never ends (a proxy gone wrong): its start is read, and the
    push is retried at once, without waiting for the rest or keeping it."""
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 600000000\r\n\r\n"
    raw = head + b"x" * 200_000
    result = send_to_raw(push_fake_fcm, account, raw, then_hold=True, timeout=30.0)
    assert (result.status, result.status_code) == ("retry", 500), result
    assert len(result.error or "") < 1000


@pytest.mark.parametrize(
    ("body", "then_hold"),
    [
        (b'{"name": "projects/flask-push-test/messages/0:1', False),
        (b'{"name": "projects/flask-push-test/messages/0:1', True),
        (b"", True),
    ],
    ids=["cut-off", "stalled", "stalled-before-a-byte"],
)
def test_a_message_taken_whose_answer_broke_off_is_sent(
    push_fake_fcm: FakeFCM, account: dict[str, str], body: bytes, then_hold: bool
) -> None:
    """FCM said 200 and the connection closed before the body's end, or the body
    stalled: the message was taken, and was retried ("no_answer", or the push's
    timeout), so the device showed it twice."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    result = send_to_raw(push_fake_fcm, account, head + body, then_hold)
    assert (result.status, result.status_code, result.error) == ("sent", 200, None), result


def test_a_200_that_says_its_body_is_empty_is_not_counted_sent(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    """FCM's 200 always names the message; one whose body is whole and empty is no
    answer of FCM's (pyfcm refuses it too)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"
    result = send_to_raw(push_fake_fcm, account, head)
    assert (result.status, result.error) == ("failed", "FCM answered 200 with an empty body")


def test_any_401_sends_the_next_push_with_a_new_access_token(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    """A 401 that does not say the token expired fails its push (the credentials may
    be refused), and the next push asks for another token rather than keep the
    refused one for up to an hour."""
    provider = make_provider(push_fake_fcm, account)
    push_fake_fcm.fail_next(401, "UNAUTHENTICATED")

    async def work() -> list[DeliveryResult]:
        first = await provider.send_batch([push(make_registration_token())])
        return first + await provider.send_batch([push(make_registration_token(), n=1)])

    issued_before = len(push_fake_fcm.issued_tokens)
    results = run(provider, work)
    assert [(r.status, r.reason) for r in results] == [
        ("failed", "credentials_refused"),
        ("sent", None),
    ]
    assert len(push_fake_fcm.issued_tokens) == issued_before + 2
    # credentials refused for good: a fan-out's next waves do not each ask for a
    # token (a refused one is forgotten once in half a minute, and was just now)
    push_fake_fcm.fail_next(401, "UNAUTHENTICATED", times=3)

    async def waves() -> list[DeliveryResult]:
        done = []
        for n in range(3):
            done += await provider.send_batch([push(make_registration_token(), n=10 + n)])
        return done

    assert [r.status for r in run(provider, waves)] == ["failed"] * 3
    assert len(push_fake_fcm.issued_tokens) == issued_before + 2


@pytest.mark.parametrize(
    "answer",
    [
        b'"a string"',
        b'{"access_token": "t", "expires_in": "soon"}',
        b'{"access_token": "t", "expires_in": 1e300}',
    ],
)
def test_a_token_answer_that_is_no_token_is_retried_and_says_so(answer: bytes) -> None:
    """FCM never saw the push: it is retried, with what went wrong, not failed
    for good with a Python error as its reason."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    base_url, thread, listener = answering(head % len(answer) + answer)
    try:
        account = foreign_service_account(token_uri=f"{base_url}/token")
        checked = FCM.normalize({"credentials": account})
        provider = provider_class("fcm").from_settings(checked, timeout=5.0)
        result = send_one(provider, push(make_registration_token()))
    finally:
        thread.join(5)
        listener.close()
    assert (result.status, result.reason) == ("retry", "unreachable"), result
    assert (result.error or "").startswith(
        "Google's OAuth token endpoint answered something that is not an access token ("
    )


def test_sends_waiting_for_an_access_token_that_never_comes_say_so() -> None:
    """A token endpoint that never answers: the sends queued behind its fetch were
    timed out as if FCM had not answered them ("no answer came", so the push "may
    have arrived"), though none left. Each says it waited for the token, and that
    it was not sent."""
    with SilentService() as silent:
        account = foreign_service_account(token_uri=f"{silent.origin}/token")
        checked = FCM.normalize({"credentials": account})
        provider = provider_class("fcm").from_settings(checked, concurrency=10, timeout=2.0)
        results = send(provider, [push(make_registration_token(), n=n) for n in range(20)])
    assert [(r.status, r.reason) for r in results] == [("retry", "unreachable")] * 20
    waited = [r.error for r in results if "could not be reached" not in (r.error or "")]
    assert waited and set(waited) == {
        "Google's OAuth token endpoint gave no access token within 1 s, so the push was not sent"
    }


@pytest.mark.parametrize(
    ("status", "answer", "outcome"),
    [
        (400, b'{"error": {"details": [{"fieldViolations": null}]}}', "failed"),
        (400, b'{"error": {"details": [{"fieldViolations": 5}]}}', "failed"),
        (400, b'{"error": {"status": 400, "details": [{"errorCode": null}]}}', "failed"),
        (503, b'{"error": {"status": {"code": "UNAVAILABLE"}}}', "retry"),
        (500, b'{"error": {"status": ["INTERNAL"]}}', "retry"),
        (401, b'{"error": {"details": 5}}', "failed"),
        (
            401,
            b'{"error": {"status": 7, "details": [{"reason": "ACCESS_TOKEN_EXPIRED"}]}}',
            "failed",
        ),
    ],
)
def test_an_error_answer_of_unexpected_shape_is_read_as_its_status(
    push_fake_fcm: FakeFCM, account: dict[str, str], status: int, answer: bytes, outcome: str
) -> None:
    """An error body whose fields have other types than FCM's (a proxy's, a broken
    gateway's) is an answer all the same: the push gets its status's outcome, with
    what was said, not a Python error retried as a bug of flask-push."""
    head = b"HTTP/1.1 %d Oops\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    raw = head % (status, len(answer)) + answer
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    done = threading.Event()

    def serve() -> None:  # every request gets the answer (a 401 may be asked again)
        while not done.is_set():
            with contextlib.suppress(OSError):
                connection, _ = listener.accept()
                with connection:
                    connection.recv(65536)
                    connection.sendall(raw)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        provider = make_provider(push_fake_fcm, account, baseUrl=base_url)
        result = send_one(provider, push(make_registration_token()))
    finally:
        done.set()
        thread.join(5)
        listener.close()
    assert (result.status, result.status_code) == (outcome, status), result
    # no TypeError or AttributeError, and no "None" for a code that was not given
    assert "Error" not in (result.error or "") and "None" not in (result.error or ""), result
