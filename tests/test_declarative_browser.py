"""The bundled service worker in a real Chromium with the payloads of issue 14: WebKit's
Declarative Web Push (``PUSH_SITE_URL``) and a live activity's states, each replacing
the last in place. Pushes reach the worker through CDP's ``deliverPushMessage`` with
the payload a real send put on the wire, decrypted by the FakePushService.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from flask_push.testing.webpush import FakePushService, FakeSubscriber

pytest.importorskip("playwright.sync_api")
pytest.importorskip("dbus_next")

from browser_kit import (  # noqa: E402
    SENDING,
    TIMEOUT_MS,
    Browser,
    Live,
    deliver,
    off_loop,
    open_page,
    page_fixtures,
    push,
    register_worker,
    send_for_real,
)

browser, live, page = page_fixtures("declarative-browser")


def free_port() -> int:
    """A port nobody listens on, so that the app's own origin can be its PUSH_SITE_URL
    before it is served."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


#: what the worker showed, with what tells a replacement's alert from a quiet one
NOTIFICATIONS = """async () => (await (await navigator.serviceWorker.ready).getNotifications())
  .map((n) => ({title: n.title, body: n.body, icon: n.icon, tag: n.tag, data: n.data,
                silent: n.silent, renotify: n.renotify}))"""


def notifications(page: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate(NOTIFICATIONS)
    return result


def test_a_declarative_push_is_shown_and_its_click_opens_navigate(
    browser: Browser, page: Any, live: Callable[..., Live], push_fake_webpush: FakePushService
) -> None:
    port = free_port()
    site = f"http://localhost:{port}"
    app = live(port=port, PUSH_SITE_URL=site, **SENDING)
    subscriber = push_fake_webpush.subscribe("alice's browser")
    client = app.app.test_client()
    client.get("/login/alice")
    assert client.post("/push/subscriptions", json=subscriber.info).status_code == 201
    message, received = send_for_real(
        app,
        push_fake_webpush,
        "alice",
        title="Order #42",
        body="Out for delivery",
        url="/orders/42",
        icon="/static/icon.png",
        tag="order-42",
        badge=2,
    )
    sent = received.json()
    assert sent["web_push"] == 8030 and sent["app_badge"] == 2
    assert sent["notification"]["navigate"] == f"{site}/orders/42"

    open_page(browser, page, app)
    register_worker(page)
    before = len(browser.notifications.shown)
    deliver(browser, page, app.origin, received.payload)
    [note] = notifications(page)
    assert (note["title"], note["body"], note["tag"]) == (
        "Order #42",
        "Out for delivery",
        "order-42",
    )
    assert note["icon"] == f"{site}/static/icon.png"
    assert note["data"]["url"] == f"{site}/orders/42"
    assert note["data"]["messageId"] == message.id
    shown = browser.notifications.wait_shown(before + 1)[-1]
    assert shown["summary"] == "Order #42" and "Out for delivery" in shown["body"]
    with browser.context.expect_page(timeout=TIMEOUT_MS) as opened:
        browser.notifications.click(shown["id"])  # a trusted click, from the desktop
    opened.value.wait_for_url(f"{site}/orders/42")
    deadline = time.monotonic() + 10
    while app.admin_get(f"/push/messages/{message.id}")["counts"]["clicked"] != 1:
        assert time.monotonic() < deadline, "the click was not reported"
        time.sleep(0.05)


def send_activity(live: Live, subscriber: FakeSubscriber, event: str, state: dict[str, Any]) -> Any:
    """``push.activity`` for order 42 through the inline queue; the message, and the
    push as the FakePushService decrypted it."""

    def send() -> Any:
        with live.app.app_context():
            return push.activity(
                "order-42",
                users=["bob"],
                title="Order #42",
                body=f"{state['status']} ({state['step']}/{state['steps']})",
                url="/orders/42",
                state=state,
                event=event,
            )

    before = len(subscriber.received)
    message = off_loop(send)
    received = subscriber.wait(before + 1)[-1]
    assert received.topic == "order-42"
    return message, received


def bobs_browser(
    browser: Browser,
    page: Any,
    live: Callable[..., Live],
    service: FakePushService,
    declarative: bool,
) -> tuple[Live, FakeSubscriber]:
    """An app that sends for real (with ``PUSH_SITE_URL`` when ``declarative``), and
    bob's browser subscribed to it, its service worker running in ``page``."""
    port = free_port()
    site = {"PUSH_SITE_URL": f"http://localhost:{port}"} if declarative else {}
    app = live(port=port, **site, **SENDING)
    subscriber = service.subscribe("bob's browser")
    client = app.app.test_client()
    client.get("/login/bob")
    assert client.post("/push/subscriptions", json=subscriber.info).status_code == 201
    open_page(browser, page, app)
    register_worker(page)
    return app, subscriber


@pytest.mark.parametrize("declarative", [False, True], ids=["plain", "declarative"])
def test_a_newer_state_of_an_activity_replaces_the_older_in_place(
    browser: Browser,
    page: Any,
    live: Callable[..., Live],
    push_fake_webpush: FakePushService,
    declarative: bool,
) -> None:
    app, subscriber = bobs_browser(browser, page, live, push_fake_webpush, declarative)

    states = [
        ("start", {"status": "Confirmed", "step": 2, "steps": 5}),
        ("update", {"status": "Out for delivery", "step": 4, "steps": 5}),
        ("end", {"status": "Delivered", "step": 5, "steps": 5}),
    ]
    before = len(browser.notifications.shown)
    seen, messages = [], []
    for event, state in states:
        message, received = send_activity(app, subscriber, event, state)
        messages.append(message.id)
        deliver(browser, page, app.origin, received.payload)
        seen.append(notifications(page))

    # one notification throughout, showing the newest state
    assert [len(each) for each in seen] == [1, 1, 1]
    update, end = seen[1][0], seen[2][0]
    assert (update["title"], update["body"], update["tag"]) == (
        "Order #42",
        "Out for delivery (4/5)",
        "order-42",
    )
    assert update["data"]["activity"] == {
        "id": "order-42",
        "event": "update",
        "state": states[1][1],
        "timestamp": update["data"]["activity"]["timestamp"],
    }
    assert seen[0][0]["data"]["activity"]["timestamp"] < update["data"]["activity"]["timestamp"]
    assert update["data"]["messageId"] == messages[1]
    # the update replaced the start quietly, as a Live Activity's update does; the end
    # alerts again
    assert (update["silent"], update["renotify"]) == (True, False)
    assert (end["body"], end["silent"], end["renotify"]) == ("Delivered (5/5)", False, True)
    assert end["data"]["activity"]["event"] == "end"
    # on the desktop too: each Notify replaced the first one's id
    desktop = browser.notifications.wait_shown(before + 3)[before:]
    assert {note["id"] for note in desktop} == {desktop[0]["id"]}
    assert "Delivered" in desktop[-1]["body"]


@pytest.mark.parametrize("declarative", [False, True], ids=["plain", "declarative"])
def test_an_older_state_arriving_after_a_newer_one_leaves_the_newer_shown(
    browser: Browser,
    page: Any,
    live: Callable[..., Live],
    push_fake_webpush: FakePushService,
    declarative: bool,
) -> None:
    """Push services keep no order: the start, on its way when the update went out,
    arrives after it. Shown, it would put "Confirmed" back over "Out for delivery"."""
    app, subscriber = bobs_browser(browser, page, live, push_fake_webpush, declarative)

    _, start = send_activity(
        app, subscriber, "start", {"status": "Confirmed", "step": 2, "steps": 5}
    )
    later = {"status": "Out for delivery", "step": 4, "steps": 5}
    _, update = send_activity(app, subscriber, "update", later)
    deliver(browser, page, app.origin, update.payload)
    deliver(browser, page, app.origin, start.payload)  # late: shows the update again

    [note] = notifications(page)
    assert (note["body"], note["tag"]) == ("Out for delivery (4/5)", "order-42")
    assert note["data"]["activity"]["event"] == "update"
    assert note["silent"] is True  # shown again without a sound
