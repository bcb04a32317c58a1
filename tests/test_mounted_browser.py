"""An app served below the site's root, in a real Chromium.

The host mounts its app at ``/shop`` (a ``DispatcherMiddleware`` here; ``SCRIPT_NAME``
or ProxyFix's ``X-Forwarded-Prefix`` come to the same): the page, the API, the
websocket and the service worker are all below ``/shop``, and nothing of the app's
answers at the site's root. What a page and the worker do must stay within it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from flask_push.testing.webpush import FakePushService, FakeSubscriber

pytest.importorskip("playwright.sync_api")
pytest.importorskip("dbus_next")

from browser_kit import (  # noqa: E402
    PAGE,
    SENDING,
    TIMEOUT_MS,
    Browser,
    Live,
    db,
    deliver,
    off_loop,
    open_page,
    page_fixtures,
    push,
    send_for_real,
    shown,
)

MOUNT = "/shop"
#: the page of an app mounted at /shop loads the client from there
MOUNTED_PAGE = PAGE.replace('"/push/static/flask-push.js"', f'"{MOUNT}/push/static/flask-push.js"')
ICON = ("", "image/png")


browser, live, page = page_fixtures("browser")


def mounted(live: Callable[..., Live], **config: Any) -> Live:
    return live(html=MOUNTED_PAGE, mount=MOUNT, files={"/static/icon.png": ICON}, **config)


def subscriptions_from(browser: Browser, service: FakePushService) -> list[FakeSubscriber]:
    made: list[FakeSubscriber] = []

    def subscription() -> dict[str, Any]:
        made.append(service.subscribe("bob's browser"))
        return made[-1].info

    browser.make_subscription = subscription
    return made


def test_subscribe_registers_the_mounts_worker_with_the_mounts_scope(
    browser: Browser, page: Any, live: Callable[..., Live], push_fake_webpush: FakePushService
) -> None:
    """The client looked for the worker at the site's root, /push-sw.js, where nothing of
    the app answers: subscribe() rejected with service_worker_failed unless the page
    called configure({serviceWorkerUrl, scope}). It asks the app where its worker is."""
    app = mounted(live, **SENDING)
    made = subscriptions_from(browser, push_fake_webpush)
    open_page(browser, page, app, user="bob")
    assert page.url == f"{app.base}/"
    saved = page.evaluate(
        "FlaskPush.subscribe().catch((err) => ({code: err.code, message: err.message}))"
    )
    assert "code" not in saved, saved
    [subscriber] = made
    assert saved["endpoint"] == subscriber.endpoint
    registrations = page.evaluate(
        """navigator.serviceWorker.getRegistrations().then((all) => all.map((r) =>
          [r.scope, (r.active || r.waiting || r.installing).scriptURL]))"""
    )
    assert registrations == [[f"{app.base}/", f"{app.base}/push-sw.js"]]
    with app.app.app_context():
        row = db.session.get(push.models.Subscription, saved["id"])
        assert row is not None and row.user_id == "bob"

    # unsubscribe() finds that worker's subscription too, and ends it in the browser
    page.evaluate(
        """window.ended = false; PushManager.prototype.getSubscription = async function () {
          return {endpoint: 'x', unsubscribe: async () => { window.ended = true; return true; }};
        }"""
    )
    page.evaluate("FlaskPush.unsubscribe()")
    assert page.evaluate("window.ended") is True
    with app.app.app_context():
        assert db.session.get(push.models.Subscription, saved["id"]) is None


def test_the_page_may_still_say_where_its_worker_is(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """configure({serviceWorkerUrl}) wins over what the app says."""
    app = mounted(live)
    open_page(browser, page, app, user="bob")
    failed = page.evaluate(
        """FlaskPush.configure({serviceWorkerUrl: '/elsewhere/sw.js'}) &&
        FlaskPush.subscribe().then(() => null, (err) => ({code: err.code, message: err.message}))"""
    )
    assert failed["code"] == "service_worker_failed"
    assert failed["message"].startswith("The service worker /elsewhere/sw.js could not be")


def test_a_push_opens_and_shows_the_apps_addresses_below_the_mount(
    browser: Browser, page: Any, live: Callable[..., Live], push_fake_webpush: FakePushService
) -> None:
    """A push's url /orders/42 opened the site's /orders/42, outside the app (a 404
    or another app's page), and its icon /static/icon.png was asked of the site's
    root. They are the app's paths: below its mount point. A url made with the mount
    already (url_for in a request) is not mounted twice."""
    app = mounted(live, **SENDING)
    subscriptions_from(browser, push_fake_webpush)
    open_page(browser, page, app, user="alice")
    page.evaluate("FlaskPush.subscribe()")

    message, received = send_for_real(
        app,
        push_fake_webpush,
        "alice",
        title="Order #42",
        body="Out for delivery",
        url="/orders/42",
        icon="/static/icon.png",
    )
    assert received.json()["url"] == "/orders/42"  # the wire keeps the app's path
    deliver(browser, page, app.origin, received.payload, scope=f"{MOUNT}/")
    [note] = shown(page)
    assert note["icon"] == f"{app.base}/static/icon.png"
    clicked = browser.notifications.shown[-1]
    with browser.context.expect_page(timeout=TIMEOUT_MS) as opened:
        browser.notifications.click(clicked["id"])  # a trusted click, from the desktop
    opened.value.wait_for_url(f"{app.base}/orders/42")
    deadline = time.monotonic() + 10
    while app.admin_get(f"/push/messages/{message.id}")["counts"]["clicked"] != 1:
        assert time.monotonic() < deadline, "the click was not reported"
        time.sleep(0.05)
    opened.value.close()

    _, again = send_for_real(
        app, push_fake_webpush, "alice", title="Order #7", url=f"{MOUNT}/orders/7"
    )
    deliver(browser, page, app.origin, again.payload, scope=f"{MOUNT}/")
    with browser.context.expect_page(timeout=TIMEOUT_MS) as opened:
        browser.notifications.click(browser.notifications.shown[-1]["id"])
    opened.value.wait_for_url(f"{app.base}/orders/7")


def test_the_bell_opens_an_items_page_below_the_mount(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """A click on a bell item whose url is /orders/42 left the app for the site's
    /orders/42; it opens the app's, as the service worker does."""
    app = mounted(live)

    def item() -> None:
        with app.app.app_context():
            push.upsert("bob", title="Order #42 shipped", url="/orders/42")

    off_loop(item)
    open_page(browser, page, app, user="bob")
    page.evaluate("FlaskPush.bell(document.querySelector('#bell')).ready")
    page.click("#bell .fp-bell-button")
    page.click("#bell .fp-item")
    page.wait_for_url(f"{app.base}/orders/42")


def test_the_websocket_connects_below_the_mount(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    app = mounted(live)
    open_page(browser, page, app, user="bob")
    page.evaluate(
        """() => new Promise((resolve) => {
             window.got = null;
             FlaskPush.on('user:bob', 'hello', (data) => { window.got = data; });
             const off = FlaskPush.on('*', 'open', () => {
               off();
               FlaskPush.ping().then(resolve);
             });
             FlaskPush.connect();
           })"""
    )  # open, and joined to user:bob (a ping answered)

    def publish() -> None:
        with app.app.app_context():
            push.publish("user:bob", "hello", {"to": "bob"})

    off_loop(publish)
    page.wait_for_function("window.got !== null")
    assert page.evaluate("window.got") == {"to": "bob"}
