"""The browser side in a real Chromium: the service worker, the client and the bell.

One Chromium for the module (a persistent profile, because only that one shows
notifications through D-Bus, where a trusted click comes from), a fresh app and
server per test on its own port, so each test is its own origin with its own
service worker. Pushes reach the worker through CDP's ``deliverPushMessage`` with
the payload a real send put on the wire, decrypted by the FakePushService.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, redirect, request, session
from flask_sqlalchemy import SQLAlchemy
from werkzeug.serving import make_server

from flask_push import Push
from flask_push.testing.webpush import FakePushService, FakeSubscriber

pytest.importorskip("playwright.sync_api")
pytest.importorskip("dbus_next")

from browser_kit import TIMEOUT_MS, Browser, chromium, deliver, off_loop, shown  # noqa: E402

SCREENSHOTS = Path(__file__).parent / "browser" / "screenshots"

# An app of its own: the browser proves who it is with the session cookie, as a
# host's pages (and websockets) do.
db = SQLAlchemy()
push = Push(db=db)


@push.identity_loader
def _identity() -> str | None:
    return session.get("user_id")


@push.admin_loader
def _is_admin() -> bool:
    return request.headers.get("X-Admin") == "1"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<style>body{margin:0;font-family:system-ui,sans-serif;background:#f6f8fa}
header{display:flex;justify-content:space-between;align-items:center;padding:8px 20px;
background:#fff;border-bottom:1px solid #d0d7de}</style></head>
<body><header><strong>Shop</strong><div id="bell"></div></header>
<script src="/push/static/flask-push.js"></script></body></html>"""


# Module-scoped, not session-scoped: while Playwright's sync API is open, the test
# thread counts as running an asyncio loop, and later modules' asyncio.run() fails.
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(tmp_path_factory.mktemp("browser")) as session:
        yield session


# -- the app --------------------------------------------------------------------------


class Live:
    """An app served on its own port; pages are opened at http://localhost:PORT."""

    def __init__(self, app: Flask, port: int) -> None:
        self.app = app
        self.origin = f"http://localhost:{port}"

    def admin_get(self, path: str) -> Any:
        response = self.app.test_client().get(path, headers={"X-Admin": "1"})
        assert response.status_code == 200, response.get_json()
        return response.get_json()


@pytest.fixture
def live(tmp_path: Path, vapid_private_key: str) -> Iterator[Callable[..., Live]]:
    servers: list[tuple[Any, threading.Thread, Flask]] = []

    def start(**config: Any) -> Live:
        app = Flask(__name__)
        app.config.update(
            TESTING=True,
            SECRET_KEY="browser-tests",
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
            PUSH_VAPID_PRIVATE_KEY=vapid_private_key,
            PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
            **config,
        )
        db.init_app(app)
        push.init_app(app)
        with app.app_context():
            db.create_all()

        @app.get("/login/<user>")
        def login(user: str) -> Any:
            session["user_id"] = user
            return redirect("/")

        @app.get("/")
        @app.get("/orders/<int:number>")
        def page(number: int | None = None) -> str:
            return PAGE

        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        servers.append((server, thread, app))
        return Live(app, server.server_port)

    yield start
    for server, thread, app in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)
        off_loop(lambda app=app: _close(app))


def _close(app: Flask) -> None:
    with app.app_context():
        app.extensions["push"].shutdown()
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def page(browser: Browser) -> Iterator[Any]:
    page = browser.context.new_page()
    yield page
    browser.make_subscription = None
    for each in browser.context.pages:
        each.close()


def open_page(browser: Browser, page: Any, live: Live, user: str | None = None) -> None:
    browser.context.grant_permissions(["notifications"], origin=live.origin)
    page.goto(f"{live.origin}/login/{user}" if user else f"{live.origin}/")


def register_worker(page: Any) -> None:
    page.evaluate(
        "navigator.serviceWorker.register('/push-sw.js').then(() => navigator.serviceWorker.ready)"
    )


def send_for_real(live: Live, service: FakePushService, user: str, **notification: Any) -> Any:
    """push.send through the inline queue to the FakePushService; its decrypted payload."""

    def send() -> Any:
        with live.app.app_context():
            return push.send(users=[user], **notification)

    message = off_loop(send)
    subscriber = next(s for s in service.subscribers)
    [received] = subscriber.wait(1)
    return message, received


SENDING = {
    "PUSH_QUEUE": "inline",
    "PUSH_SUPPRESS_SEND": False,
    "PUSH_ENDPOINT_HOSTS": ["127.0.0.1"],
    "PUSH_ALLOW_HTTP_ENDPOINTS": True,
}


# -- the service worker ------------------------------------------------------------------


def test_the_worker_shows_a_push(browser: Browser, page: Any, live: Callable[..., Live]) -> None:
    app = live()
    open_page(browser, page, app)
    register_worker(page)
    payload = {
        "title": "Order #42",
        "body": "Out for delivery",
        "url": "/orders/42",
        "icon": "/static/icon.png",
        "tag": "order-42",
        "badge": 3,  # an app-icon count (iOS); not an image URL, so not shown on the web
        "data": {"orderId": 42},
        "messageId": "msg_1",
        "clickToken": "token",
    }
    deliver(browser, page, app.origin, json.dumps(payload).encode())
    [note] = shown(page)
    assert note["title"] == "Order #42" and note["body"] == "Out for delivery"
    assert note["icon"] == f"{app.origin}/static/icon.png" and note["tag"] == "order-42"
    assert note["data"] == {
        "messageId": "msg_1",
        "clickToken": "token",
        "url": "/orders/42",
        "data": {"orderId": 42},
    }


def test_a_click_opens_the_url_and_is_counted(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    app = live(**SENDING)
    with FakePushService() as service:
        subscriber = service.subscribe("alice's browser")
        client = app.app.test_client()
        client.get("/login/alice")
        assert client.post("/push/subscriptions", json=subscriber.info).status_code == 201
        message, received = send_for_real(
            app, service, "alice", title="Order #42", body="Out for delivery", url="/orders/42"
        )
    assert received.json()["clickToken"]  # signed by the server, checked on the way back

    open_page(browser, page, app)
    register_worker(page)
    before = len(browser.notifications.shown)
    deliver(browser, page, app.origin, received.payload)
    note = browser.notifications.wait_shown(before + 1)[-1]
    assert note["summary"] == "Order #42" and "Out for delivery" in note["body"]
    with browser.context.expect_page(timeout=TIMEOUT_MS) as opened:
        browser.notifications.click(note["id"])  # a trusted click, from the desktop
    opened.value.wait_for_url(f"{app.origin}/orders/42")
    deadline = time.monotonic() + 10
    while app.admin_get(f"/push/messages/{message.id}")["counts"]["clicked"] != 1:
        assert time.monotonic() < deadline, "the click was not reported"
        time.sleep(0.05)


# -- the client ---------------------------------------------------------------------------


def test_subscribe_reaches_the_server_and_a_send_the_worker(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    app = live(**SENDING)
    with FakePushService() as service:
        made: list[FakeSubscriber] = []

        def subscription() -> dict[str, Any]:
            made.append(service.subscribe("bob's browser"))
            return made[-1].info

        browser.make_subscription = subscription
        open_page(browser, page, app, user="bob")
        saved = page.evaluate("FlaskPush.subscribe({topics: ['offers']})")
        [subscriber] = made
        assert saved["endpoint"] == subscriber.endpoint and saved["topics"] == ["offers"]
        with app.app.app_context():
            row = db.session.get(push.models.Subscription, saved["id"])
            assert row.user_id == "bob"
            assert (row.p256dh, row.auth) == (subscriber.p256dh, subscriber.auth)
        message, received = send_for_real(
            app, service, "bob", title="Spring sale", body="20% off", tag="sale"
        )
    assert received.json()["messageId"] == message.id
    deliver(browser, page, app.origin, received.payload)
    [note] = shown(page)
    assert (note["title"], note["body"], note["tag"]) == ("Spring sale", "20% off", "sale")

    page.evaluate("FlaskPush.unsubscribe()")
    with app.app.app_context():
        assert db.session.get(push.models.Subscription, saved["id"]) is None


# -- the bell -----------------------------------------------------------------------------


def _has_websocket(app: Flask) -> bool:
    return any(rule.rule == "/push/ws" for rule in app.url_map.iter_rules())


def badge(page: Any) -> str:
    text: str = page.eval_on_selector(".fp-badge", "(b) => b.hidden ? '' : b.textContent")
    return text


def test_the_bell_follows_the_inbox_live(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    app = live()
    if not _has_websocket(app.app):
        pytest.skip("the websocket endpoint is not built yet")
    with app.app.app_context():
        push.upsert("carol", notify_type="order_status", title="Order #41", body="Delivered")
        push.upsert("carol", notify_type="order_status", title="Order #42", body="Shipped")
    open_page(browser, page, app, user="carol")
    # once the socket is open and a ping answered, the server has joined us to user:carol
    page.evaluate(
        """() => new Promise((resolve) => {
             const off = FlaskPush.on('*', 'open', () => {
               off();
               FlaskPush.ping().then(resolve);
             });
             window.bell = FlaskPush.bell(document.getElementById('bell'));
           })"""
    )
    page.wait_for_function("document.querySelector('.fp-badge').textContent === '2'")

    with app.app.app_context():
        push.upsert(
            "carol",
            notify_type="export",
            title="Orders export",
            body="40% done",
            progress={"total": 100, "processed": 40},
        )
    page.wait_for_function("document.querySelector('.fp-badge').textContent === '3'")
    page.wait_for_function(
        "document.querySelector('.fp-bell-button').classList.contains('fp-flash')"
    )

    page.click(".fp-bell-button")
    titles = page.locator(".fp-panel .fp-item-title").all_inner_texts()
    assert titles == ["Orders export", "Order #42", "Order #41"]
    page.click(".fp-show-history")
    page.wait_for_selector(".fp-history:not([hidden]) .fp-item")
    assert page.locator(".fp-history .fp-item-title").all_inner_texts() == titles
    page.click(".fp-close")
    page.click(".fp-bell-button")
    page.click(".fp-mark-all")
    page.wait_for_function("document.querySelector('.fp-badge').hidden")
    with app.app.app_context():
        assert push.search("carol").new_count == 0


def test_the_client_reconnects_and_replays_what_it_missed(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    app = live()
    open_page(browser, page, app, user="dave")
    page.evaluate(
        """() => new Promise((resolve) => {
             window.seen = [];
             window.reconnects = 0;
             FlaskPush.on('user:dave', 'tick', (data) => window.seen.push(data.n));
             FlaskPush.on('*', 'reconnect', () => { window.reconnects += 1; });
             const off = FlaskPush.on('*', 'open', () => {
               off();
               FlaskPush.ping().then(resolve);
             });
             FlaskPush.connect();
           })"""
    )

    def publish(n: int) -> None:
        with app.app.app_context():
            push.publish("user:dave", "tick", {"n": n})

    publish(1)
    page.wait_for_function("window.seen.length === 1")
    # The server drops the socket (as it does a client that falls behind, or as a
    # restart would), and an event comes while the client is away.
    hub = app.app.extensions["push"].realtime.hub
    with hub._lock:
        connections = {c for joined in hub._channels.values() for c in joined}
    assert connections
    for connection in connections:
        connection.drop()
    publish(2)
    page.wait_for_function("window.reconnects === 1")
    page.wait_for_function("window.seen.length === 2")
    publish(3)
    page.wait_for_function("window.seen.length === 3")
    assert page.evaluate("window.seen") == [1, 2, 3]  # in order, none twice


def test_screenshots_of_the_bell(browser: Browser, page: Any, live: Callable[..., Live]) -> None:
    """What a person sees: the badge, the open menu and the history (look at them)."""
    app = live()
    with app.app.app_context():
        push.upsert(
            "dave",
            notify_type="order_status",
            title="Order #41 delivered",
            body="Left with the neighbour at number 12.",
            url="/orders/41",
        )
        push.upsert(
            "dave",
            notify_type="export",
            title="Orders export",
            body="40% done",
            progress={"total": 100, "processed": 40},
        )
        push.upsert(
            "dave",
            notify_type="warning",
            title="Card expires soon",
            body="The card ending in 4242 expires at the end of the month. "
            "Update it to keep your subscription running.",
        )
        push.mark_read("dave", None)
        push.upsert(
            "dave",
            notify_type="error",
            title="Payment failed",
            body="We could not charge your card for order #43.",
        )
        push.upsert("dave", notify_type="info", title="Welcome back", body="3 new offers")
    open_page(browser, page, app, user="dave")
    page.evaluate("window.bell = FlaskPush.bell(document.getElementById('bell'))")
    page.wait_for_function("document.querySelector('.fp-badge').textContent === '2'")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "bell-badge.png")
    page.click(".fp-bell-button")
    page.wait_for_selector(".fp-panel:not([hidden]) .fp-item")
    page.screenshot(path=SCREENSHOTS / "bell-menu.png")
    page.click(".fp-show-history")
    page.wait_for_selector(".fp-history:not([hidden]) .fp-item")
    page.screenshot(path=SCREENSHOTS / "bell-history.png")
    assert page.locator(".fp-history .fp-item").count() == 5
