"""The browser side in a real Chromium: the service worker, the client and the bell.

One Chromium for the module (a persistent profile, because only that one shows
notifications through D-Bus, where a trusted click comes from), a fresh app and
server per test on its own port, so each test is its own origin with its own
service worker. Pushes reach the worker through CDP's ``deliverPushMessage`` with
the payload a real send put on the wire, decrypted by the FakePushService.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

import flask_push
from flask_push.realtime import backplane as backplane_module
from flask_push.realtime import ws as ws_module
from flask_push.testing.webpush import FakePushService, FakeSubscriber

pytest.importorskip("playwright.sync_api")
pytest.importorskip("dbus_next")

from playwright.sync_api import expect  # noqa: E402

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
    register_worker,
    send_for_real,
    shown,
)

SCREENSHOTS = Path(__file__).parent / "browser" / "screenshots"


browser, live, page = page_fixtures("browser")


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
        "badge": 3,  # an app badge count (the Badging API), not a badge image
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
    browser: Browser, page: Any, live: Callable[..., Live], push_fake_webpush: FakePushService
) -> None:
    app = live(**SENDING)
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


def test_a_click_on_a_link_to_another_site_leaves_the_open_tab_alone(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """The push's url is another site's (a carrier's tracking page). ``openWindow``
    opens it and resolves to null, as it does for a window of another origin; the
    worker took that for a refusal and sent the user's open tab there as well,
    losing whatever it held."""
    app = live()
    carrier = live()  # another origin (another port)
    open_page(browser, page, app, user="lea")
    register_worker(page)
    page.reload()
    page.wait_for_function("navigator.serviceWorker.controller !== null")
    payload = {"title": "Your parcel", "url": f"{carrier.origin}/orders/7", "messageId": "msg_1"}
    before = len(browser.notifications.shown)
    deliver(browser, page, app.origin, json.dumps(payload).encode())
    note = browser.notifications.wait_shown(before + 1)[-1]
    with browser.context.expect_page(timeout=TIMEOUT_MS) as opened:
        browser.notifications.click(note["id"])
    opened.value.wait_for_url(f"{carrier.origin}/orders/7")
    page.wait_for_timeout(1000)  # when the worker would have sent this tab there too
    assert page.url.startswith(app.origin), page.url
    opened.value.close()


# -- the client ---------------------------------------------------------------------------


def subscriptions_from(browser: Browser, service: FakePushService) -> list[FakeSubscriber]:
    """Make the page's PushManager.subscribe() give subscriptions of ``service``; the
    list of those made."""
    made: list[FakeSubscriber] = []

    def subscription() -> dict[str, Any]:
        made.append(service.subscribe("bob's browser"))
        return made[-1].info

    browser.make_subscription = subscription
    return made


def test_subscribe_reaches_the_server_and_a_send_the_worker(
    browser: Browser, page: Any, live: Callable[..., Live], push_fake_webpush: FakePushService
) -> None:
    app = live(**SENDING)
    made = subscriptions_from(browser, push_fake_webpush)
    open_page(browser, page, app, user="bob")
    saved = page.evaluate("FlaskPush.subscribe({topics: ['offers']})")
    [subscriber] = made
    assert saved["endpoint"] == subscriber.endpoint and saved["topics"] == ["offers"]
    with app.app.app_context():
        row = db.session.get(push.models.Subscription, saved["id"])
        assert row.user_id == "bob"
        assert (row.p256dh, row.auth) == (subscriber.p256dh, subscriber.auth)
    message, received = send_for_real(
        app, push_fake_webpush, "bob", title="Spring sale", body="20% off", tag="sale"
    )
    assert received.json()["messageId"] == message.id
    deliver(browser, page, app.origin, received.payload)
    [note] = shown(page)
    assert (note["title"], note["body"], note["tag"]) == ("Spring sale", "20% off", "sale")

    page.evaluate("FlaskPush.unsubscribe()")
    with app.app.app_context():
        assert db.session.get(push.models.Subscription, saved["id"]) is None


def test_the_client_finds_a_custom_prefix_by_itself(
    browser: Browser, page: Any, live: Callable[..., Live], push_fake_webpush: FakePushService
) -> None:
    """Under PUSH_URL_PREFIX = "/api/notify" every call of a page that did not call
    configure() answered 404: the client assumed /push. It reads the prefix from the
    address it was loaded from, as a plain script and as a module."""
    html = PAGE.replace("/push/static/flask-push.js", "/api/notify/static/flask-push.js")
    app = live(html=html, PUSH_URL_PREFIX="/api/notify", **SENDING)
    made = subscriptions_from(browser, push_fake_webpush)
    open_page(browser, page, app, user="bob")
    assert page.evaluate("FlaskPush.configure().prefix") == "/api/notify"
    saved = page.evaluate("FlaskPush.subscribe()")
    assert saved["endpoint"] == made[0].endpoint
    module = page.evaluate(
        "import('/api/notify/static/flask-push.mjs').then((m) => m.configure().prefix)"
    )
    assert module == "/api/notify"

    # a module alone, in a page of its own
    page.goto(f"{app.origin}/login/bob")
    page.set_content("<!doctype html><title>shop</title>")
    alone = page.evaluate(
        "import('/api/notify/static/flask-push.mjs').then((m) => m.configure().prefix)"
    )
    assert alone == "/api/notify"


def test_the_module_exports_every_function_of_the_script(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """flask-push.mjs lists by hand what flask-push.js puts on FlaskPush (a module's
    names are fixed when it is written): a function added to one is in the other."""
    app = live()
    open_page(browser, page, app, user="bob")
    script, module = page.evaluate(
        "import('/push/static/flask-push.mjs').then((m) => ["
        "Object.keys(FlaskPush).sort(),"
        "Object.keys(m).filter((name) => name !== 'default').sort()])"
    )
    assert module == script and "bell" in module


def test_a_copy_of_the_client_in_the_apps_static_keeps_the_default_prefix(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """A host serving its own copy at /static/flask-push.js: its address says nothing
    of the prefix (which is never the root), so the default stays."""
    client = (Path(flask_push.__file__).parent / "static" / "flask-push.js").read_text()
    html = PAGE.replace("/push/static/flask-push.js", "/static/flask-push.js")
    app = live(html=html, files={"/static/flask-push.js": (client, "text/javascript")})
    open_page(browser, page, app, user="bob")
    assert page.evaluate("FlaskPush.configure().prefix") == "/push"


def test_a_page_of_another_origin_is_told_where_the_client_calls(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """A page served from another origin than the app's, loading the client from the
    app: every call went to the page's own origin and answered 404 without a word of
    why. The console now says where it calls and what to do."""
    app = live(html="<!doctype html><title>shop</title>")
    open_page(browser, page, app, user="bob")
    page.goto(f"{app.origin}/")
    other = f"http://127.0.0.1:{app.port}"  # the same server, another origin
    warned: list[str] = []
    page.on("console", lambda m: warned.append(m.text) if m.type == "warning" else None)
    page.evaluate(
        """(src) => new Promise((resolve, reject) => {
          const script = Object.assign(document.createElement('script'), {src});
          script.onload = resolve;
          script.onerror = reject;
          document.head.append(script);
        })""",
        f"{other}/push/static/flask-push.js",
    )
    said = [w for w in warned if w.startswith("flask-push:")]
    assert len(said) == 1, warned
    assert said[0].startswith(
        f"flask-push: flask-push.js was loaded from {other}, but this page is at {app.origin}"
    )
    assert f"Serve this page from {other}" in said[0]


def test_a_service_worker_not_found_says_what_to_do(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """An app whose service worker is elsewhere (mounted below the root, say): the
    page is told where the client looked and what to call, not a bare TypeError."""
    app = live()
    open_page(browser, page, app, user="bob")
    failed = page.evaluate(
        """FlaskPush.configure({serviceWorkerUrl: '/shop/push-sw.js'}) &&
        FlaskPush.subscribe().then(() => null, (err) => ({code: err.code, message: err.message}))"""
    )
    assert failed["code"] == "service_worker_failed"
    assert failed["message"].startswith(
        "The service worker /shop/push-sw.js could not be registered ("
    )
    assert "FlaskPush.configure({serviceWorkerUrl, scope})" in failed["message"]


@pytest.mark.parametrize("prefix", ["/push", "/api/notify"])
def test_the_readmes_page_and_script_work_as_written(
    browser: Browser,
    page: Any,
    live: Callable[..., Live],
    push_fake_webpush: FakePushService,
    prefix: str,
) -> None:
    """README, Browser side: its HTML in a page and its static/shop.js beside it. The
    bell shows, and a click on the button subscribes this browser to offers. Under a
    PUSH_URL_PREFIX of the app's own, only the page's addresses change: the script
    once set ``prefix: "/push"``, which sent every call of such an app to a 404."""
    from test_readme import one

    body = one("browser", "page").code.replace('"/push/static/', f'"{prefix}/static/')
    html = f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}</body></html>"
    script = one("browser", "static/shop.js").code
    app = live(
        html=html,
        files={"/static/shop.js": (script, "text/javascript")},
        PUSH_URL_PREFIX=prefix,
        **SENDING,
    )
    made: list[FakeSubscriber] = []

    def subscription() -> dict[str, Any]:
        made.append(push_fake_webpush.subscribe("bob's browser"))
        return made[-1].info

    browser.make_subscription = subscription
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    open_page(browser, page, app, user="bob")
    page.wait_for_selector("#bell .fp-bell-button")
    page.click("#allow")
    page.wait_for_function("localStorage.getItem('flask-push:subscription-id') !== null")
    page.wait_for_function(
        "document.querySelector('#allow').textContent === 'Offers will come as notifications'"
    )
    with app.app.app_context():
        [row] = db.session.scalars(sa.select(push.models.Subscription)).all()
        assert (row.user_id, row.topics) == ("bob", ["offers"])
    assert errors == []


def test_an_endpoint_reported_gone_is_replaced_by_a_new_one(
    browser: Browser, page: Any, live: Callable[..., Live], push_fake_webpush: FakePushService
) -> None:
    """The server refuses an endpoint its push service said is gone (410
    ``subscription_gone``); the client drops it and subscribes afresh, keeping its
    topics; the dead one stays, with why it died, until pruned."""
    app = live(**SENDING)
    dead = push_fake_webpush.subscribe("bob's old endpoint")
    with app.app.app_context():
        db.session.add(
            push.models.Subscription(
                endpoint=dead.endpoint, p256dh=dead.p256dh, auth=dead.auth, user_id="bob",
                topics=["offers"], status="dead", dead_reason="410 Gone",
            )
        )  # fmt: skip
        db.session.commit()
    handed: list[FakeSubscriber] = []

    def subscription() -> dict[str, Any]:
        # the browser still holds the dead endpoint; asked again, it makes a new one
        handed.append(push_fake_webpush.subscribe("bob's new endpoint") if handed else dead)
        return handed[-1].info

    browser.make_subscription = subscription
    open_page(browser, page, app, user="bob")
    # no topics asked for: the new one keeps the old one's (it sends oldEndpoint)
    saved = page.evaluate("FlaskPush.subscribe()")
    assert [s.endpoint for s in handed] == [dead.endpoint, saved["endpoint"]]
    assert (saved["status"], saved["topics"]) == ("active", ["offers"])
    with app.app.app_context():
        rows = db.session.scalars(sa.select(push.models.Subscription)).all()
        assert sorted((r.endpoint == dead.endpoint, r.status) for r in rows) == [
            (False, "active"),
            (True, "dead"),
        ]


def renew_in_worker(browser: Browser, app: Live, new: FakeSubscriber, old: FakeSubscriber) -> None:
    """Dispatch ``pushsubscriptionchange`` in the app's service worker: the push
    service renewed subscription ``old`` as ``new``. (Chromium never fires the event
    itself.)"""
    [worker] = [w for w in browser.context.service_workers if w.url.startswith(app.origin)]
    worker.evaluate(
        """([renewed, oldEndpoint]) => {
             const event = new ExtendableEvent('pushsubscriptionchange');
             Object.defineProperty(event, 'newSubscription', {value: {toJSON: () => renewed}});
             Object.defineProperty(event, 'oldSubscription', {value: {endpoint: oldEndpoint}});
             try { self.dispatchEvent(event); } catch (err) {}  // waitUntil: not trusted
           }""",
        [new.info, old.endpoint],
    )


def test_a_subscription_the_browser_renews_keeps_its_topics(
    browser: Browser, page: Any, live: Callable[..., Live], push_fake_webpush: FakePushService
) -> None:
    """The worker's pushsubscriptionchange handler posts the new subscription with
    the old endpoint: the server carries the topics over and forgets the old one."""
    app = live(**SENDING)
    old, new = push_fake_webpush.subscribe("old"), push_fake_webpush.subscribe("new")
    open_page(browser, page, app, user="bob")
    register_worker(page)
    first = page.evaluate(
        """(body) => fetch('/push/subscriptions', {method: 'POST', body: JSON.stringify(body),
             headers: {'Content-Type': 'application/json'}}).then((r) => r.json())""",
        {**old.info, "topics": ["offers"]},
    )
    renew_in_worker(browser, app, new, old)
    model = push.models.Subscription
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        with app.app.app_context():
            rows = {r.endpoint: r.topics for r in db.session.scalars(sa.select(model))}
        if new.endpoint in rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert rows == {new.endpoint: ["offers"]}, rows
    assert first["topics"] == ["offers"]


def test_unsubscribe_after_the_browser_renewed_the_subscription_forgets_the_renewed_one(
    browser: Browser, page: Any, live: Callable[..., Live], push_fake_webpush: FakePushService
) -> None:
    """The worker renewed the subscription (the server gave it a new id); the page's
    localStorage, which a worker cannot write, still held the old id. unsubscribe()
    deleted that (404, taken as already gone) and left the renewed one active on
    the server, topics and all: sends kept going to it."""
    app = live(**SENDING)
    old, new = push_fake_webpush.subscribe("old"), push_fake_webpush.subscribe("new")
    browser.make_subscription = lambda: old.info
    open_page(browser, page, app, user="bob")
    assert page.evaluate("FlaskPush.subscribe({topics: ['offers']})")["endpoint"] == old.endpoint
    renew_in_worker(browser, app, new, old)
    model = push.models.Subscription

    def endpoints() -> list[str]:
        with app.app.app_context():
            return list(db.session.scalars(sa.select(model.endpoint)))

    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while endpoints() != [new.endpoint]:
        assert time.monotonic() < deadline, endpoints()
        time.sleep(0.05)
    # the browser's subscription is the renewed one now (the test's PushManager
    # makes none of its own)
    page.evaluate(
        """(info) => {
             PushManager.prototype.getSubscription = async () => ({
               endpoint: info.endpoint, toJSON: () => info, unsubscribe: async () => true });
           }""",
        new.info,
    )
    page.evaluate("FlaskPush.unsubscribe()")
    assert endpoints() == []


# -- the bell -----------------------------------------------------------------------------


def _has_websocket(app: Flask) -> bool:
    return any(rule.rule == "/push/ws" for rule in app.url_map.iter_rules())


def badge(page: Any) -> str:
    text: str = page.eval_on_selector(".fp-badge", "(b) => b.hidden ? '' : b.textContent")
    return text


def when_joined(page: Any, setup: str = "", start: str = "FlaskPush.connect();") -> None:
    """Run ``setup`` and ``start`` (JavaScript) in the page, and return once its socket
    is open and a ping answered: the server has joined it to its user's channel."""
    page.evaluate(
        f"""() => new Promise((resolve) => {{
             {setup}
             const off = FlaskPush.on('*', 'open', () => {{
               off();
               FlaskPush.ping().then(resolve);
             }});
             {start}
           }})"""
    )


def follow_ticks(page: Any, user: str, *, with_ids: bool = False) -> None:
    """Connect, and follow ``user``'s ``tick`` events: ``window.seen`` holds each ``n``
    (``[n, frame id]`` with ``with_ids``), ``window.gaps`` and ``window.reconnects``
    count those events."""
    seen = "[data.n, f.id]" if with_ids else "data.n"
    when_joined(
        page,
        f"""window.seen = [];
             window.gaps = 0;
             window.reconnects = 0;
             FlaskPush.on('user:{user}', 'tick', (data, f) => window.seen.push({seen}));
             FlaskPush.on('user:{user}', 'gap', () => {{ window.gaps += 1; }});
             FlaskPush.on('*', 'reconnect', () => {{ window.reconnects += 1; }});""",
    )


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
    when_joined(page, start="window.bell = FlaskPush.bell(document.getElementById('bell'));")
    page.wait_for_function("document.querySelector('.fp-badge').textContent === '2'")

    with app.app.app_context():
        export = push.upsert(
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
    # and a screen reader says so, politely, with the menu closed
    spoken = page.locator(".fp-bell [role=status].fp-announce")
    expect(spoken).to_have_text("New notification: Orders export", timeout=TIMEOUT_MS)
    assert spoken.bounding_box()["width"] <= 1  # heard, not seen
    with app.app.app_context():
        push.upsert("carol", export.id, body="80% done", progress={"total": 100, "processed": 80})
    expect(spoken).to_have_text("Updated notification: Orders export", timeout=TIMEOUT_MS)

    page.click(".fp-bell-button")
    titles = page.locator(".fp-panel .fp-item-title").all_inner_texts()
    assert titles == ["Orders export", "Order #42", "Order #41"]
    page.click(".fp-show-history")
    page.wait_for_selector(".fp-history .fp-item")
    assert page.locator(".fp-history .fp-item-title").all_inner_texts() == titles
    page.click(".fp-close")
    page.click(".fp-bell-button")
    page.click(".fp-mark-all")
    page.wait_for_function("document.querySelector('.fp-badge').hidden")
    with app.app.app_context():
        assert push.search("carol").new_count == 0


def test_an_update_of_an_item_out_of_the_menu_is_said_as_an_update(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """An order's item, pushed out of the menu by newer ones, gets its next state: a
    screen reader hears "Updated notification", not "New notification" of an item
    that the menu does not even show."""
    app = live()
    with app.app.app_context():
        order = push.upsert("gus", title="Order #42", body="Placed").id
        push.upsert("gus", title="Weekend offer")
    open_page(browser, page, app, user="gus")
    start_bell(page, {"take": 1})
    with app.app.app_context():
        push.upsert("gus", order, body="Out for delivery")
    spoken = page.locator(".fp-bell .fp-announce")
    expect(spoken).to_have_text("Updated notification: Order #42", timeout=TIMEOUT_MS)


def test_a_listing_read_before_a_live_change_never_hides_it(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """The bell's first listing is read, then a change of an item and a new item come
    live, and only then does the listing's answer arrive: the bell keeps what came
    live (an export's progress item overwritten by its "ready" version was a flaky
    demo walkthrough)."""
    app = live()
    with app.app.app_context():
        item = push.upsert("carol", notify_type="export", title="Orders export", body="Starting")
    open_page(browser, page, app, user="carol")
    when_joined(page)
    held: list[tuple[Any, Any]] = []

    def hold(route: Any) -> None:
        held.append((route, route.fetch()))  # read by the server now, answered later

    page.route("**/push/notifications?take=*", hold)
    page.evaluate("window.bell = FlaskPush.bell(document.getElementById('bell'))")
    while not held:
        page.wait_for_timeout(20)
    with app.app.app_context():
        push.upsert("carol", item.id, title="Orders export ready", body="12 orders")
        push.upsert("carol", notify_type="info", title="Courier nearby")
    page.wait_for_function(
        "[...document.querySelectorAll('.fp-panel .fp-item-title')].length === 2"
    )
    page.wait_for_function("document.querySelector('.fp-badge').textContent === '2'")
    for route, answer in held:
        route.fulfill(response=answer)
    page.evaluate("window.bell.ready")
    page.click(".fp-bell-button")
    titles = page.locator(".fp-panel .fp-item-title").all_inner_texts()
    assert titles == ["Courier nearby", "Orders export ready"]
    # the listing's count (1) is older than the live one: the badge keeps 2
    assert badge(page) == "2"


def test_a_page_that_closes_its_socket_sees_no_error(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """FlaskPush.disconnect() under Werkzeug's development server: the console said
    "WebSocket connection to ... failed: Invalid frame header" (the server's HTTP
    answer written after the close frame)."""
    app = live()
    open_page(browser, page, app, user="carol")
    said: list[str] = []
    page.on("console", lambda m: said.append(m.text) if "WebSocket" in m.text else None)
    sockets: list[Any] = []
    page.on("websocket", lambda opened: sockets.append(opened))
    when_joined(page)
    (socket,) = sockets
    socket.on("socketerror", lambda error: said.append(error))
    with socket.expect_event("close"):  # fails on the way with "Socket error"
        page.evaluate("FlaskPush.disconnect()")
    page.evaluate("FlaskPush.api('GET', '/notifications')")  # the page goes on
    assert said == []


def drop_sockets(app: Live) -> int:
    """The server drops every websocket it has (as it does a client that falls
    behind, or as a restart would); returns how many."""
    hub = app.app.extensions["push"].realtime.hub
    with hub._lock:
        connections = {c for joined in hub._channels.values() for c in joined}
    for connection in connections:
        connection.drop()
    return len(connections)


def dave_follows_his_ticks(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> tuple[Live, Callable[[int], None]]:
    """dave's page follows his channel's `tick` events (:func:`follow_ticks`): the app,
    and a function that publishes tick ``n`` there."""
    app = live()
    open_page(browser, page, app, user="dave")
    follow_ticks(page, "dave")

    def publish(n: int) -> None:
        with app.app.app_context():
            push.publish("user:dave", "tick", {"n": n})

    return app, publish


def test_the_client_reconnects_and_replays_what_it_missed(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    app, publish = dave_follows_his_ticks(browser, page, live)

    publish(1)
    page.wait_for_function("window.seen.length === 1")
    # The server drops the socket (as it does a client that falls behind, or as a
    # restart would), and an event comes while the client is away.
    assert drop_sockets(app)
    publish(2)
    page.wait_for_function("window.reconnects === 1")
    page.wait_for_function("window.seen.length === 2")
    publish(3)
    page.wait_for_function("window.seen.length === 3")
    assert page.evaluate("window.seen") == [1, 2, 3]  # in order, none twice


def test_what_came_while_away_is_replayed_ahead_of_a_live_event_after_a_reconnect(
    browser: Browser, page: Any, live: Callable[..., Live], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Here an event is published just after the server joins the new socket to the
    user's channel. The client asked for what it missed with a `subscribe` sent on
    open, which a slow uplink had answered after that live event: the missed one,
    replayed after it, was dropped as seen. It now says in the socket's URL how far it
    got."""
    app, publish = dave_follows_his_ticks(browser, page, live)

    join = ws_module._join_own_channel

    def then_a_live_event(*args: Any) -> list[str]:
        frames = join(*args)
        publish(3)  # live, ahead of anything the client asks once open
        return frames

    publish(1)
    page.wait_for_function("window.seen.length === 1")
    # a slow uplink: what the client sends takes 0.5 s to reach the server
    page.evaluate(
        """() => {
             const send = WebSocket.prototype.send;
             WebSocket.prototype.send = function (data) {
               setTimeout(() => this.readyState === WebSocket.OPEN && send.call(this, data), 500);
             };
           }"""
    )
    assert drop_sockets(app)
    monkeypatch.setattr(ws_module, "_join_own_channel", then_a_live_event)
    publish(2)  # while the client is away
    page.wait_for_function("window.reconnects === 1 && window.seen.length >= 2")
    page.evaluate("FlaskPush.ping()")
    assert page.evaluate("window.seen") == [1, 2, 3]


def test_the_bell_shows_only_its_users_own_items_on_a_page_following_another_user(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """A staff page follows a shopper's channel (the app's authorizer lets it): her
    events reach its handlers, and not its bell, which is the staff member's inbox."""
    app = live()
    previous = push._channel_authorizer
    push.channel_authorizer(lambda user_id, channel: user_id == "staff" or channel == "")
    try:
        open_page(browser, page, app, user="staff")
        start_bell(page)
        page.evaluate(
            """() => new Promise((resolve) => {
                 window.hers = [];
                 FlaskPush.on('user:alice', 'notification', (data) => window.hers.push(data.title));
                 const off = FlaskPush.on('user:alice', 'subscribed', () => { off(); resolve(); });
               })"""
        )
        with app.app.app_context():
            push.upsert("alice", title="Her order shipped")
            push.upsert("staff", title="New order to pack")
        expect(page.locator(".fp-badge")).to_have_text("1")
        page.wait_for_function("window.hers.length === 1")
        page.evaluate("FlaskPush.ping()")
        page.click(".fp-bell-button")
        titles = page.locator(".fp-panel .fp-item-title").all_inner_texts()
        assert titles == ["New order to pack"]
        assert page.evaluate("window.hers") == ["Her order shipped"]
    finally:
        push._channel_authorizer = previous


def test_a_channel_with_no_event_yet_is_told_of_a_gap_after_a_reconnect(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """The client cannot ask the server for what it missed on a channel it has had
    no event from: after a reconnect it gets a `gap` there, so the page reloads."""
    app = live()
    open_page(browser, page, app, user="dave")
    follow_ticks(page, "dave")
    drop_sockets(app)
    with app.app.app_context():
        push.publish("user:dave", "tick", {"n": 1})  # while the client is away
    page.wait_for_function("window.reconnects === 1 && window.gaps === 1")
    with app.app.app_context():
        push.publish("user:dave", "tick", {"n": 2})
    page.wait_for_function("window.seen.length === 1")
    assert page.evaluate("[window.seen, window.gaps]") == [[2], 1]


def test_the_client_takes_a_channel_numbered_anew_after_a_gap(
    browser: Browser, page: Any, live: Callable[..., Live], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server restarts with its clock behind the last one's, so it numbers the
    channel below the id the client holds; after the gap it sends, the client takes
    the new events instead of skipping them as seen."""
    app = live()
    open_page(browser, page, app, user="erin")
    follow_ticks(page, "erin", with_ids=True)

    def publish(server: Live, n: int) -> int:
        with server.app.app_context():
            return push.publish("user:erin", "tick", {"n": n})

    old = publish(app, 1)
    page.wait_for_function("window.seen.length === 1")
    # the next server on the same port, whose clock is 1 ms past 1970
    monkeypatch.setattr(backplane_module, "_clock_micros", lambda: 1000)
    app.stop()
    restarted = live(port=app.port)
    drop_sockets(app)
    page.wait_for_function("window.reconnects === 1")
    page.evaluate("FlaskPush.ping()")
    new = [publish(restarted, n) for n in (2, 3)]
    assert new == [1000, 1001] and old > 1001
    page.wait_for_function("window.seen.length === 3")
    assert page.evaluate("window.seen") == [[1, old], [2, 1000], [3, 1001]]
    assert page.evaluate("window.gaps") == 1


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
    page.wait_for_selector(".fp-history .fp-item")
    page.screenshot(path=SCREENSHOTS / "bell-history.png")
    assert page.locator(".fp-history .fp-item").count() == 5


# -- the bell: what a person does with it -------------------------------------------------


def start_bell(page: Any, options: dict[str, Any] | None = None) -> None:
    """FlaskPush.bell on #bell; returns once its items are shown, its socket has
    joined the user's channel (so live events reach it) and the stylesheet it links
    has loaded (so what a test measures is the styled bell)."""
    page.evaluate(
        """(options) => new Promise((resolve) => {
             const styled = () => new Promise((loaded) => {
               const link = document.querySelector('link[href$="/flask-push.css"]');
               if (!link || link.sheet) loaded();
               else ['load', 'error'].forEach((e) => link.addEventListener(e, loaded));
             });
             const off = FlaskPush.on('*', 'open', () => {
               off();
               Promise.all([FlaskPush.ping(), window.bell.ready, styled()]).then(resolve);
             });
             window.bell = FlaskPush.bell(document.getElementById('bell'), options);
           })""",
        options or {},
    )


def test_what_another_tab_read_is_shown_read(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """Two tabs: all read in one, the other's items lose their dots too; one read in
    one, the other shows it read."""
    app = live()
    with app.app.app_context():
        for n in range(12):  # more unread than the menu shows (10)
            last = push.upsert("carol", notify_type="info", title=f"Item {n}").id
    other = browser.context.new_page()
    for tab in (page, other):
        open_page(browser, tab, app, user="carol")
        start_bell(tab)
    unread = "document.querySelectorAll('.fp-panel .fp-dot:not(.fp-dot-read)').length"
    other.wait_for_function(f"{unread} === 10")
    with app.app.app_context():
        push.mark_read("carol", last)  # the newest, shown first
    other.wait_for_function(f"{unread} === 9")
    assert badge(other) == "11"
    page.click(".fp-bell-button")
    page.click(".fp-mark-all")
    other.wait_for_function(f"{unread} === 0")
    assert badge(other) == ""


# the titles in the bell's menu, in order (a JavaScript expression)
MENU_TITLES = "[...document.querySelectorAll('.fp-panel .fp-item-title')].map((t) => t.textContent)"


def menu_shows_as_listed(page: Any, titles: list[str]) -> None:
    """The menu shows ``titles`` from what came live, and again once listed anew."""
    assert page.evaluate(MENU_TITLES) == titles
    page.evaluate("window.bell.refresh()")
    assert page.evaluate(MENU_TITLES) == titles


def test_an_activitys_item_is_updated_where_it_is(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """A live activity's next state changes its item in the menu where it is (the
    listing, newest first by creation, has it there too), not at the top."""
    app = live()

    def state(title: str, **more: Any) -> None:
        # off the test's thread: its send may run the dispatcher's own loop
        def send() -> None:
            with app.app.app_context():
                push.activity("order-42", users=["carol"], title=title, **more)

        off_loop(send)

    state("Order #42", body="Placed", event="start")
    with app.app.app_context():
        push.upsert("carol", notify_type="info", title="Newer item")
    open_page(browser, page, app, user="carol")
    start_bell(page)
    assert page.evaluate(MENU_TITLES) == ["Newer item", "Order #42"]
    state("Order #42: shipped", body="On its way")
    page.wait_for_function(f"{MENU_TITLES}[1] === 'Order #42: shipped'")
    menu_shows_as_listed(page, ["Newer item", "Order #42: shipped"])


def test_an_older_state_announced_late_is_not_shown_over_a_newer(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """Two states of an activity saved at once may be announced in either order:
    the bell keeps the one saved later."""
    from flask_push.schemas.inbox import InboxItem

    app = live()
    older: list[Any] = []

    def states() -> None:
        # off the test's thread: its send may run the dispatcher's own loop
        with app.app.app_context():
            push.activity("order-42", users=["carol"], title="Order #42: placed", event="start")
            [placed] = push.search("carol").items
            older.append(InboxItem.model_validate(placed).to_json())
            push.activity("order-42", users=["carol"], title="Order #42: shipped")

    off_loop(states)
    open_page(browser, page, app, user="carol")
    start_bell(page)
    assert page.evaluate(MENU_TITLES) == ["Order #42: shipped"]
    with app.app.app_context():
        push.publish("user:carol", "notification", older[0])  # the placed state, late
        push.upsert("carol", notify_type="info", title="After")
    page.wait_for_function(f"{MENU_TITLES}[0] === 'After'")
    assert page.evaluate(MENU_TITLES) == ["After", "Order #42: shipped"]


def test_the_menu_keeps_the_listings_order_and_only_its_latest_items(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """A live change of an item older than the menu's latest does not put it on
    top (the listing would not have it there), and the menu keeps only ``take``
    items however many come live: a tab left open all day holds no more."""
    app = live()
    with app.app.app_context():
        oldest = push.upsert("carol", notify_type="info", title="Oldest").id
        older = push.upsert("carol", notify_type="info", title="Older").id
        push.upsert("carol", notify_type="info", title="Latest")
    backdate(app, oldest, hours=2)
    backdate(app, older, hours=1)
    open_page(browser, page, app, user="carol")
    start_bell(page, {"take": 2})
    assert page.evaluate(MENU_TITLES) == ["Latest", "Older"]
    with app.app.app_context():
        push.upsert("carol", oldest, title="Oldest, changed")
        push.upsert("carol", notify_type="info", title="New 1")  # comes after the change
    page.wait_for_function(f"{MENU_TITLES}[0] === 'New 1'")
    assert page.evaluate(MENU_TITLES) == ["New 1", "Latest"]
    with app.app.app_context():
        for n in range(2, 4):
            push.upsert("carol", notify_type="info", title=f"New {n}")
    page.wait_for_function(f"{MENU_TITLES}[0] === 'New 3'")
    menu_shows_as_listed(page, ["New 3", "New 2"])


def test_a_ping_waits_for_its_own_answer(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """Each ping() resolves on the pong that answers it, not on an earlier one nor on
    a heartbeat's (which come unasked), waits for a socket still connecting, and
    fails with `closed` when there is no socket to answer it."""
    app = live(PUSH_WS_HEARTBEAT=1)
    open_page(browser, page, app, user="dave")
    page.evaluate(
        """() => new Promise((resolve) => {
             const off = FlaskPush.on('*', 'pong', () => { off(); resolve(); });
             FlaskPush.connect();
           })"""
    )  # a heartbeat came first: pongs outnumber the pings sent
    order = page.evaluate(
        """async () => {
             const order = [];
             const off = FlaskPush.on('*', 'pong', (data, frame) => {
               if (frame.id !== undefined) order.push('pong');  // not a heartbeat's
             });
             await Promise.all([
               FlaskPush.ping().then(() => order.push('first')),
               FlaskPush.ping().then(() => order.push('second')),
             ]);
             off();
             return order;
           }"""
    )
    assert order == ["pong", "first", "pong", "second"]
    failures = page.evaluate(
        """async () => {
             const code = (promise) => promise.then(() => 'answered', (err) => err.code);
             const asked = code(FlaskPush.ping());  // on its way when the socket closes
             FlaskPush.disconnect();
             return [await asked, await code(FlaskPush.ping())];
           }"""
    )
    assert failures == ["closed", "closed"]
    # connecting: answered once the socket opens
    assert page.evaluate("FlaskPush.connect(); FlaskPush.ping().then(() => 'answered')") == (
        "answered"
    )


#: a browser without push, and one that refuses a subscription though notifications
#: are allowed (Chrome's private windows, which said "permission denied")
NO_PUSH = {
    "none": (
        "delete window.PushManager",
        "This browser cannot receive push notifications.",
    ),
    "refused": (
        "PushManager.prototype.subscribe = () => Promise.reject(new DOMException("
        "'Registration failed - permission denied', 'NotAllowedError'))",
        "This browser refused a push subscription although notifications are allowed (a "
        "private window has no push): Registration failed - permission denied",
    ),
    # what Chromium 156's private windows (and Playwright's contexts) reject with
    "aborted": (
        "PushManager.prototype.subscribe = () => Promise.reject(new DOMException("
        "'Registration failed - permission denied', 'AbortError'))",
        "This browser refused a push subscription although notifications are allowed (a "
        "private window has no push): Registration failed - permission denied",
    ),
}


@pytest.mark.parametrize("how", NO_PUSH.keys())
def test_subscribe_says_when_the_browser_has_no_push(
    browser: Browser, page: Any, live: Callable[..., Live], how: str
) -> None:
    app = live()
    open_page(browser, page, app, user="dave")
    setup, message = NO_PUSH[how]
    said = page.evaluate(
        """async (setup) => {
             (0, eval)(setup);
             try {
               await FlaskPush.subscribe();
               return null;
             } catch (err) {
               return [err.code, err.message];
             }
           }""",
        setup,
    )
    assert said == ["unsupported", message]


def test_the_bell_says_what_it_could_not_do(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """The inbox cannot be loaded, or marked read: the menu says so, instead of
    "Nothing here yet." and a count that silently stays."""
    app = live()
    with app.app.app_context():
        push.upsert("carol", notify_type="info", title="Unread")
    open_page(browser, page, app, user="carol")
    down = {"error": {"code": "database_unavailable", "message": "Try again shortly."}}

    def unavailable(route: Any) -> None:
        route.fulfill(status=503, content_type="application/json", body=json.dumps(down))

    page.route("**/push/notifications?take=*", unavailable)
    page.evaluate("window.bell = FlaskPush.bell(document.getElementById('bell'))")
    problem = "document.querySelector('.fp-panel .fp-problem')"
    page.wait_for_function(f"{problem} !== null")
    page.click(".fp-bell-button")  # the menu drawn again, opening, still says it
    said = page.evaluate(f"{problem}.textContent")
    assert said.startswith("The notifications could not be loaded: ") and "Try again" in said
    assert page.locator(".fp-panel .fp-list li").count() == 1  # not "Nothing here yet."
    page.unroute("**/push/notifications?take=*")
    page.evaluate("window.bell.refresh()")
    assert page.evaluate(f"{problem} === null")  # loaded: nothing to say any more
    page.route("**/push/notifications/mark-all-read", unavailable)
    page.click(".fp-mark-all")
    page.wait_for_function(f"{problem} !== null")
    assert page.evaluate(f"{problem}.textContent").startswith("Could not mark them as read: ")
    assert badge(page) == "1"


def test_an_item_that_could_not_be_marked_read_says_so_and_stays_unread(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """Offline, or refused: the item is not shown read while the server still has it
    unread, the menu says why, and the keyboard focus stays on the item."""
    app = live()
    with app.app.app_context():
        push.upsert("mia", title="Order #6 shipped")
        news = push.upsert("mia", title="Opening hours for the holidays").id
    open_page(browser, page, app, user="mia")
    start_bell(page)
    problem = "document.querySelector('.fp-panel .fp-problem')"
    unread = "document.querySelectorAll('.fp-panel .fp-dot:not(.fp-dot-read)').length"

    # offline: neither the mark nor a new listing gets through
    page.route("**/push/notifications**", lambda route: route.abort("internetdisconnected"))
    page.click(".fp-bell-button")
    page.focus(f".fp-panel li[data-id='{news}']")
    page.keyboard.press("Enter")
    page.wait_for_function(f"{problem} !== null")
    assert page.evaluate(f"{problem}.textContent").startswith("Could not mark it as read: ")
    assert page.evaluate(unread) == 2
    assert badge(page) == "2"
    assert page.evaluate("document.activeElement.dataset.id") == news

    # refused by the server: the listing shows what it has, and the menu says why
    page.unroute("**/push/notifications**")
    down = {"error": {"code": "database_unavailable", "message": "Try again shortly."}}
    page.route(
        "**/push/notifications/*/read",
        lambda route: route.fulfill(
            status=503, content_type="application/json", body=json.dumps(down)
        ),
    )
    page.evaluate("window.bell.refresh()")  # nothing to say any more
    page.focus(f".fp-panel li[data-id='{news}']")
    page.keyboard.press("Enter")
    page.wait_for_function(f"{problem} !== null")
    said = page.evaluate(f"{problem}.textContent")
    assert said == "Could not mark it as read: Try again shortly."
    assert page.evaluate(unread) == 2
    assert badge(page) == "2"


def served_item(app: Live, user: str, item_id: str) -> dict[str, Any]:
    """The item as the API gives it to its owner."""
    client = app.app.test_client()
    client.get(f"/login/{user}")
    response = client.get(f"/push/notifications/{item_id}")
    assert response.status_code == 200, response.get_json()
    item: dict[str, Any] = response.get_json()
    return item


def backdate(app: Live, item_id: str, hours: int) -> str:
    """Move an item's times ``hours`` into the past; returns its createdAt as the API
    writes it."""
    then = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=hours)
    with app.app.app_context():
        model = push.models.InboxItem
        db.session.execute(
            sa.update(model).where(model.id == item_id).values(created_at=then, updated_at=then)
        )
        db.session.commit()
    return then.isoformat().replace("+00:00", "Z")


def test_a_click_on_an_item_marks_it_read_on_the_server_then_opens_it(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    app = live()
    with app.app.app_context():
        shipped = push.upsert("erin", title="Order #42 shipped", url="/orders/42").id
        welcome = push.upsert("erin", title="Welcome", body="Nothing to open").id
        offer = push.upsert("erin", title="Your first offer").id
        points = push.upsert("erin", title="You have 120 points").id
    open_page(browser, page, app, user="erin")
    start_bell(page)
    assert badge(page) == "4"

    # in the history, an item without a url: read on the server, the dot and the badge follow
    page.click(".fp-bell-button")
    page.click(".fp-show-history")
    page.click(f".fp-history li[data-id='{welcome}']")
    deadline = time.monotonic() + 10
    while served_item(app, "erin", welcome)["isNew"]:
        assert time.monotonic() < deadline, "the click did not mark the item read"
        time.sleep(0.05)
    page.wait_for_selector(f".fp-history li[data-id='{welcome}'] .fp-dot-read")
    page.evaluate("FlaskPush.ping()")  # the server's `unread` event has arrived
    assert badge(page) == "3"  # counted down once, not once locally and once live
    page.keyboard.press("Escape")

    # in the menu, with the keyboard: Enter on an item does what a click does, and the
    # menu stays open with the focus on that item
    page.click(".fp-bell-button")
    page.focus(f".fp-panel li[data-id='{offer}']")
    page.keyboard.press("Enter")
    page.wait_for_selector(f".fp-panel li[data-id='{offer}'] .fp-dot-read")  # shown at once
    deadline = time.monotonic() + 10
    while served_item(app, "erin", offer)["isNew"]:  # and read on the server a moment later
        assert time.monotonic() < deadline, "Enter did not mark the item read"
        time.sleep(0.05)
    assert page.is_visible(".fp-panel")
    assert page.evaluate("document.activeElement.dataset.id") == offer

    # Space does the same, as on a button
    page.focus(f".fp-panel li[data-id='{points}']")
    page.keyboard.press(" ")
    deadline = time.monotonic() + 10
    while served_item(app, "erin", points)["isNew"]:
        assert time.monotonic() < deadline, "Space did not mark the item read"
        time.sleep(0.05)
    assert page.evaluate("document.activeElement.dataset.id") == points

    # in the menu, an item with a url: read on the server before the page leaves for it
    page.click(f".fp-panel li[data-id='{shipped}']")
    page.wait_for_url(f"{app.origin}/orders/42")
    assert served_item(app, "erin", shipped)["isNew"] is False
    with app.app.app_context():
        assert push.search("erin").new_count == 0


def seven_orders_in_pages_of_three(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> tuple[Live, dict[int, str]]:
    """fay's items "Order #1" to "Order #7" (made in that order), her bell with a
    history of pages of three, and that history open at its first page; the app and
    the items' ids by number."""
    app = live()
    ids = {}
    with app.app.app_context():
        for n in range(1, 8):
            ids[n] = push.upsert("fay", title=f"Order #{n}", commit=False).id
            db.session.commit()
    open_page(browser, page, app, user="fay")
    start_bell(page, {"historyTake": 3})
    page.click(".fp-bell-button")
    page.click(".fp-show-history")
    expect(page.locator(".fp-history .fp-item-title")).to_have_count(3, timeout=TIMEOUT_MS)
    return app, ids


def test_the_history_shows_older_items_on_asking(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """The history shows a page of items, then "Show older" brings the next page,
    until she has seen every item she has; the keyboard goes on from the first item
    of the last page. Before, it stopped at the first page (50) for good."""
    app, _ = seven_orders_in_pages_of_three(browser, page, live)
    titles = page.locator(".fp-history .fp-item-title")
    older = page.locator(".fp-history .fp-show-older")
    older.click()
    expect(titles).to_have_count(6, timeout=TIMEOUT_MS)
    expect(older).to_be_visible(timeout=TIMEOUT_MS)
    older.focus()
    page.keyboard.press("Enter")
    expect(titles).to_have_count(7, timeout=TIMEOUT_MS)
    expect(older).to_be_hidden(timeout=TIMEOUT_MS)
    no_strip = page.locator(".fp-history .fp-foot")  # no empty strip under the last item
    expect(no_strip).to_be_hidden(timeout=TIMEOUT_MS)
    assert titles.all_inner_texts() == [f"Order #{n}" for n in range(7, 0, -1)]
    assert page.evaluate("document.activeElement.textContent").startswith("Order #1")
    # opened again, it starts from the first page
    page.click(".fp-history .fp-close")
    page.click(".fp-bell-button")
    page.click(".fp-show-history")
    expect(titles).to_have_count(3, timeout=TIMEOUT_MS)
    expect(older).to_be_visible(timeout=TIMEOUT_MS)


def test_an_older_item_changed_while_the_history_is_open_keeps_show_older_whole(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """An item older than the pages the history shows gets its next state live (an
    old order shipped): it comes in its own page, where it belongs. Before, it was
    added below the page shown and counted as one more item, so "Show older" skipped
    an item, put the changed one out of order, and stayed for good."""
    app, ids = seven_orders_in_pages_of_three(browser, page, live)
    titles = page.locator(".fp-history .fp-item-title")
    with app.app.app_context():
        push.upsert("fay", ids[2], body="Shipped")
    spoken = page.locator(".fp-bell .fp-announce")
    expect(spoken).to_have_text("Updated notification: Order #2", timeout=TIMEOUT_MS)
    older = page.locator(".fp-history .fp-show-older")
    for _ in range(3):  # two pages are left; a third click would be one too many
        if older.is_hidden():
            break
        with page.expect_response("**/push/notifications?skip=*"):
            older.click()
        expect(older).to_be_enabled(timeout=TIMEOUT_MS)
    assert titles.all_inner_texts() == [f"Order #{n}" for n in range(7, 0, -1)]
    expect(older).to_be_hidden(timeout=TIMEOUT_MS)
    assert "Shipped" in page.locator(".fp-history .fp-item").nth(5).inner_text()


WORD = "x" * 300  # a URL or a product code: no place to break it


@pytest.mark.parametrize("viewport", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_a_long_word_never_widens_the_page(
    browser: Browser, page: Any, live: Callable[..., Live], viewport: tuple[int, int]
) -> None:
    app = live()
    with app.app.app_context():
        push.upsert(
            "frank", notify_type=WORD[:64], title=WORD[:255], body=WORD, url=f"/orders/{WORD}"
        )
        push.upsert("frank", title="Order #7 shipped", body="Tracking code " + WORD)
    width, height = viewport
    page.set_viewport_size({"width": width, "height": height})
    open_page(browser, page, app, user="frank")
    start_bell(page)
    page.click(".fp-bell-button")
    page.wait_for_selector(".fp-panel:not([hidden]) .fp-item")
    fits = """(box) => {
      const rect = document.querySelector(box).getBoundingClientRect();
      const list = document.querySelector(box + ' .fp-list');
      return {
        page: document.documentElement.scrollWidth,
        inside: rect.left >= 0 && rect.right <= innerWidth,
        clipped: list.scrollWidth > list.clientWidth,
      };
    }"""
    assert page.evaluate(fits, ".fp-panel") == {"page": width, "inside": True, "clipped": False}
    page.click(".fp-show-history")
    page.wait_for_selector(".fp-history .fp-item")
    assert page.evaluate(fits, ".fp-history") == {
        "page": width,
        "inside": True,
        "clipped": False,
    }


@pytest.mark.parametrize(
    "header",
    ["backdrop-filter: blur(4px)", "transform: translateZ(0)", "filter: saturate(1.2)"],
)
def test_the_history_is_a_dialog_above_the_hosts_header(
    browser: Browser, page: Any, live: Callable[..., Live], header: str
) -> None:
    """A header with any of these becomes the containing block of a position:fixed
    overlay inside it; the dialog's top layer is out of its reach."""
    app = live()
    with app.app.app_context():
        for n in range(3):
            push.upsert("gina", title=f"Order #{n} shipped", body="On its way")
    open_page(browser, page, app, user="gina")
    page.add_style_tag(content=f"header {{ position: sticky; top: 0; {header}; }}")
    start_bell(page)
    page.click(".fp-bell-button")
    page.click(".fp-show-history")
    page.wait_for_selector(".fp-history .fp-item")
    covered = """() => {
      const dialog = document.querySelector('.fp-history');
      const box = dialog.getBoundingClientRect();
      const corners = [[0, 0], [innerWidth - 1, 0], [0, innerHeight - 1],
                       [innerWidth - 1, innerHeight - 1]];
      return {
        modal: dialog.matches(':modal'),
        // the backdrop answers for the dialog: every corner of the page is behind it
        corners: corners.map(([x, y]) => dialog.contains(document.elementFromPoint(x, y))),
        inside: box.left >= 0 && box.top >= 0 && box.right <= innerWidth &&
          box.bottom <= innerHeight,
      };
    }"""
    assert page.evaluate(covered) == {"modal": True, "corners": [True] * 4, "inside": True}
    focused = "document.activeElement && document.activeElement.className"

    # Escape closes it, and the focus goes back to the bell
    page.keyboard.press("Escape")
    # (the dialog's close event, which moves the focus, comes a moment after)
    page.wait_for_function(f"{focused} === 'fp-bell-button'")
    # so do its close button and a click on the backdrop
    page.click(".fp-bell-button")
    page.click(".fp-show-history")
    page.click(".fp-history[open] .fp-close")
    # (the dialog's close event, which moves the focus, comes a moment after)
    page.wait_for_function(f"{focused} === 'fp-bell-button'")
    page.click(".fp-bell-button")
    page.click(".fp-show-history")
    page.wait_for_selector(".fp-history .fp-item")
    page.mouse.click(5, page.viewport_size["height"] - 5)
    page.wait_for_selector(".fp-history:not([open])", state="attached")


FOCUSED = "document.activeElement && document.activeElement.className"


def test_mark_all_read_from_the_keyboard_leaves_the_focus_in_the_bell(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """Mark all as read turns itself off once done: the focus it had goes back to the
    bell's button, not to the page, where Escape no longer reaches the menu."""
    app = live()
    with app.app.app_context():
        for n in range(2):
            push.upsert("hana", title=f"Order #{n} shipped")
    open_page(browser, page, app, user="hana")
    start_bell(page)
    page.focus(".fp-bell-button")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED) == "fp-link fp-mark-all"
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('.fp-mark-all').disabled")
    assert page.evaluate(FOCUSED) == "fp-bell-button"
    assert badge(page) == ""
    page.keyboard.press("Escape")
    assert page.is_hidden(".fp-panel")
    assert page.evaluate(FOCUSED) == "fp-bell-button"


def test_tabbing_out_of_the_menu_closes_it(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """The keyboard's way out closes the menu, as a click elsewhere does; it does not
    stay open over the page while the focus goes on through it."""
    app = live()
    with app.app.app_context():
        push.upsert("ivy", title="Order #5 shipped")
    open_page(browser, page, app, user="ivy")
    page.eval_on_selector(
        "header", "(h) => h.insertAdjacentHTML('beforeend', '<a id=\"after\" href=\"#\">Help</a>')"
    )
    start_bell(page)
    page.focus(".fp-bell-button")
    page.keyboard.press("Enter")
    seen = []
    while page.evaluate("document.activeElement.id") != "after":
        assert len(seen) < 10, f"the focus never left the bell: {seen}"
        assert page.is_visible(".fp-panel")  # open while the focus is in it
        page.keyboard.press("Tab")
        seen.append(page.evaluate(FOCUSED))
    assert seen[:2] == ["fp-link fp-mark-all", "fp-entry"]
    assert page.is_hidden(".fp-panel")
    assert page.get_attribute(".fp-bell-button", "aria-expanded") == "false"


def test_a_screen_reader_hears_which_items_are_unread(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """The unread dot is seen, not heard, unless it is named: the accessibility tree
    says which items are unread, in the menu and the history."""
    app = live()
    with app.app.app_context():
        read = push.upsert("lena", title="Order #8 delivered").id
        push.upsert("lena", title="Order #9 shipped")
        push.mark_read("lena", read)
    open_page(browser, page, app, user="lena")
    start_bell(page)
    page.click(".fp-bell-button")
    items = page.locator(".fp-panel li")
    assert 'img "Unread"' in items.nth(0).aria_snapshot()
    assert "Unread" not in items.nth(1).aria_snapshot()
    page.click(".fp-show-history")
    page.wait_for_selector(".fp-history .fp-item")
    assert 'img "Unread"' in page.locator(".fp-history li").nth(0).aria_snapshot()
    page.keyboard.press("Escape")
    page.click(".fp-bell-button")
    page.click(".fp-mark-all")
    page.wait_for_function("document.querySelector('.fp-badge').hidden")
    assert "Unread" not in items.nth(0).aria_snapshot()


def test_the_bell_button_promises_no_menu_it_does_not_have(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """The panel is a list of links and buttons reached with Tab, not an ARIA menu
    (arrow keys, menu items): the button must not tell a screen reader it opens a
    menu. It says it shows and hides the panel, and which element that is."""
    app = live()
    open_page(browser, page, app, user="nora")
    start_bell(page)
    page.click(".fp-bell-button")  # (a hidden panel is not in the tree to point at)
    cdp = browser.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    [button] = [
        n
        for n in nodes
        if n.get("role", {}).get("value") == "button"
        and n.get("name", {}).get("value", "").startswith("Notifications (")
    ]
    properties = {p["name"]: p["value"] for p in button.get("properties", [])}
    assert "hasPopup" not in properties
    [controlled] = properties["controls"]["relatedNodes"]
    panel = page.eval_on_selector(".fp-bell-button", "(b) => b.getAttribute('aria-controls')")
    assert page.eval_on_selector(f"#{panel}", "(p) => p.classList.contains('fp-panel')")
    assert controlled["idref"] == panel


def test_types_read_as_labels_and_an_items_time_reads_the_same_everywhere(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    app = live()
    with app.app.app_context():
        order = push.upsert("hank", notify_type="new_order", title="New order #8").id
        export = push.upsert("hank", notify_type="export", title="Orders export").id
    created = backdate(app, order, hours=3)
    open_page(browser, page, app, user="hank")
    start_bell(page, {"typeLabels": {"export": "Data export"}})
    menu_time = f".fp-panel li[data-id='{order}'] .fp-item-meta"
    page.click(".fp-bell-button")
    loaded = page.inner_text(menu_time)
    assert loaded == page.evaluate(
        "new Intl.RelativeTimeFormat(undefined, {numeric: 'auto'}).format(-3, 'hour')"
    )

    # a live update of the item (its progress) shows its time the same way
    with app.app.app_context():
        push.upsert("hank", id=order, title="New order #8", progress={"total": 4, "processed": 1})
    page.wait_for_selector(f".fp-panel li[data-id='{order}'] .fp-progress")
    assert page.inner_text(menu_time) == loaded
    assert page.eval_on_selector(f"{menu_time} time", "(t) => t.dateTime") == created

    # the history: the type's label (a readable default, or the host's) and the same time
    page.click(".fp-show-history")
    page.wait_for_selector(".fp-history .fp-item")
    meta = ".fp-history li[data-id='{}'] .fp-item-meta"
    assert page.inner_text(meta.format(order)) == f"New order · {loaded}"
    assert page.inner_text(meta.format(export)).startswith("Data export · ")


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self'"
)
CSP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title></head>
<body><header><strong>Shop</strong><div id="bell"></div></header>
<script src="/push/static/flask-push.js"></script><script src="/page.js"></script></body></html>"""
# the page's own script: no inline script may run
CSP_SCRIPT = """window.ready = new Promise((resolve) => {
  const off = FlaskPush.on('*', 'open', () => {
    off();
    Promise.all([FlaskPush.ping(), window.bell.ready]).then(resolve);
  });
  window.bell = FlaskPush.bell(document.getElementById('bell'));
});"""
RECORD_VIOLATIONS = """window.violations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});"""


def wait_until(page: Any, script: str) -> None:
    """Wait until ``script`` (a function) is true in the page, without the string
    eval of Playwright's wait_for_function, which a strict CSP refuses."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not page.evaluate(script):
        assert time.monotonic() < deadline, f"still false: {script}"
        page.wait_for_timeout(25)


def test_the_bell_works_under_a_strict_content_security_policy(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    files = {
        "/page.js": (CSP_SCRIPT, "text/javascript"),
        "/favicon.ico": ("", "image/x-icon"),  # else its 404 is a console error
    }
    app = live(html=CSP_PAGE, csp=CSP, files=files)
    with app.app.app_context():
        push.upsert(
            "ivy",
            notify_type="export",
            title="Orders export",
            progress={"total": 4, "processed": 1},
        )
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.add_init_script(RECORD_VIOLATIONS)
    open_page(browser, page, app, user="ivy")
    page.evaluate("window.ready")
    # styled by its stylesheet, a file the policy allows
    wait_until(
        page,
        "() => getComputedStyle(document.querySelector('.fp-bell-button')).borderRadius === '50%'",
    )
    assert page.eval_on_selector(".fp-badge", "(b) => getComputedStyle(b).position") == "absolute"
    page.click(".fp-bell-button")
    page.wait_for_selector(".fp-panel:not([hidden]) .fp-progress-fill")
    # set through the DOM, which the policy allows, unlike a style="" attribute
    assert page.eval_on_selector(".fp-progress-fill", "(f) => f.style.width") == "25%"

    with app.app.app_context():
        push.upsert("ivy", title="Order #9 shipped")
    wait_until(page, "() => document.querySelector('.fp-badge').textContent === '2'")
    assert page.locator(".fp-panel .fp-item-title").all_inner_texts() == [
        "Order #9 shipped",
        "Orders export",
    ]
    page.click(".fp-show-history")
    page.wait_for_selector(".fp-history .fp-item")
    assert page.evaluate("window.violations") == []
    assert errors == []


@pytest.mark.parametrize(
    "template",
    [
        "`${FlaskPush.escape(n.title)} <small>${FlaskPush.escape(n.body)}</small>`",
        "`<strong>${FlaskPush.escape(n.title)}</strong><p>${FlaskPush.escape(n.body)}</p>`",
        # one element, blank lines around it: the element itself, not a wrapper
        "`\n  <p class='mine'>${FlaskPush.escape(n.title)}: ${FlaskPush.escape(n.body)}</p>\n`",
    ],
    ids=["text-and-element", "two-elements", "one-element"],
)
def test_an_html_string_template_shows_all_of_its_markup(
    browser: Browser, page: Any, live: Callable[..., Live], template: str
) -> None:
    """README: a template returns a Node or an HTML string. Of a string holding more
    than one element, or text beside one, only the first element was shown."""
    app = live()
    with app.app.app_context():
        push.upsert("hal", notify_type="order_status", title="Order #42", body="Shipped")
    open_page(browser, page, app, user="hal")
    page.evaluate(f"FlaskPush.registerTemplate({{priority: 5, template: (n) => {template}}})")
    start_bell(page)
    page.click(".fp-bell-button")
    text = page.locator(".fp-panel .fp-entry").first.inner_text()
    assert "Order #42" in text and "Shipped" in text, repr(text)
    if "mine" in template:
        assert page.locator(".fp-panel .fp-entry > p.mine").count() == 1


def test_an_item_made_while_the_page_was_disconnected_reaches_the_bell(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """A page that closes its socket while hidden (disconnect(), then connect()):
    with no event seen before, the new socket was announced as `open`, not
    `reconnect`, so the bell did not read its items again, and the one written
    meanwhile never showed."""
    app = live()
    with app.app.app_context():
        push.upsert("ivy", title="Welcome")
    open_page(browser, page, app, user="ivy")
    start_bell(page)
    expect(page.locator(".fp-badge")).to_have_text("1")
    page.evaluate(
        """() => new Promise((resolve) => {
             const off = FlaskPush.on('*', 'close', () => { off(); resolve(); });
             FlaskPush.disconnect(); })"""
    )
    with app.app.app_context():
        push.upsert("ivy", title="Order #42 shipped")
    page.evaluate("FlaskPush.connect()")
    expect(page.locator(".fp-badge")).to_have_text("2")


def test_a_socket_closed_as_it_opens_is_retried_with_backoff(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """A socket the server closes right after the handshake (a user's 101st tab
    under PUSH_WS_MAX_PER_USER, a rate limit, an error) reset the backoff as it
    opened: it was retried twice a second for ever, and each open re-read the
    bell's items."""
    app = live(PUSH_WS_MAX_PER_USER=1)
    open_page(browser, page, app, user="ann")
    start_bell(page)  # ann's one socket
    second = browser.context.new_page()
    try:
        attempts: list[str] = []
        listings: list[str] = []
        second.on("websocket", lambda ws: attempts.append(ws.url))
        second.on("request", lambda r: "/notifications" in r.url and listings.append(r.url))
        second.goto(f"{app.origin}/")
        second.evaluate("window.bell = FlaskPush.bell(document.getElementById('bell'))")
        second.wait_for_timeout(4000)
        # 0.5 s doubling, jittered to between half and all of it: the fifth try comes
        # 3.75 s after the first at the soonest (it was the tenth or so)
        assert len(attempts) <= 5, attempts
        assert len(listings) <= 6, listings
    finally:
        second.close()


def test_a_bell_made_while_the_socket_waits_to_reconnect_shows_its_items_at_once(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """The websocket cannot get through (a proxy that passes no upgrade): the client
    waits longer between tries, up to 30 s. A bell made meanwhile (a page of a
    single-page app) waited for the next try before it even listed its items."""
    app = live()
    with app.app.app_context():
        push.upsert("kim", title="Order #42 shipped")
    page.add_init_script(
        """Math.random = () => 0;  // the shortest waits, and the same each run
           const Real = WebSocket;
           window.WebSocket = function () { return new Real('ws://127.0.0.1:9/'); };
           Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});"""
    )
    open_page(browser, page, app, user="kim")
    page.evaluate(
        """() => new Promise((resolve) => {
             window.closes = 0;
             FlaskPush.on('*', 'close', () => {
               window.closes += 1;
               if (window.closes === 4) resolve();
             });
             FlaskPush.connect(); })"""
    )  # the next try is 4 s away
    closes = page.evaluate(
        """async () => {
             window.bell = FlaskPush.bell(document.getElementById('bell'));
             await window.bell.ready;
             return window.closes; }"""
    )
    assert closes == 4  # ready before the next try, not on it
    expect(page.locator(".fp-badge")).to_have_text("1")


def test_the_bell_links_its_stylesheet_once(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    app = live()
    open_page(browser, page, app, user="jack")
    links = """() => [...document.querySelectorAll('link[rel=stylesheet]')]
      .map((link) => new URL(link.href).pathname)"""
    page.evaluate(
        """() => {
             FlaskPush.bell(document.getElementById('bell'));
             FlaskPush.bell(document.body.appendChild(document.createElement('div')));
           }"""
    )
    assert page.evaluate(links) == ["/push/static/flask-push.css"]
    # first in <head>: the page's own rules win over the bell's at equal specificity
    assert page.evaluate("document.head.firstElementChild.href.endsWith('/flask-push.css')")


def test_escape_is_safe_in_attributes_too(
    browser: Browser, page: Any, live: Callable[..., Live]
) -> None:
    """Templates may put item text in attributes (title="..."), as the README shows."""
    app = live()
    open_page(browser, page, app)
    escaped = page.evaluate("FlaskPush.escape(`<a href=\"x\" title='y'>&`)")
    assert escaped == "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;"


@pytest.mark.parametrize("viewport", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_the_menu_stays_on_screen_with_the_bell_at_the_left(
    browser: Browser, page: Any, live: Callable[..., Live], viewport: tuple[int, int]
) -> None:
    app = live()
    with app.app.app_context():
        push.upsert("kim", title="Order #3 shipped")
    width, height = viewport
    page.set_viewport_size({"width": width, "height": height})
    open_page(browser, page, app, user="kim")
    page.add_style_tag(content="header { justify-content: flex-start; gap: 12px; }")
    start_bell(page)
    page.click(".fp-bell-button")
    box = page.eval_on_selector(
        ".fp-panel", "(p) => { const r = p.getBoundingClientRect(); return [r.left, r.right]; }"
    )
    assert 0 <= box[0] and box[1] <= width
    page.click(".fp-show-history")  # reachable
    page.wait_for_selector(".fp-history .fp-item")


# -- the notification policy, end to end ---------------------------------------------------

POLICY = {
    "order_status": {"label": "Order updates", "required": True},
    "offers": {"label": "Offers and deals"},
    "shares": {"label": "Things friends share", "max_per_day": 1},
    "news": {"label": "News", "default": False},
}


def test_each_rule_decides_what_the_browser_shows(
    browser: Browser, page: Any, live: Callable[..., Live], push_fake_webpush: FakePushService
) -> None:
    """The shopper's choices, made from the page, decide which sends reach her real
    browser: offers turned off, order updates always, news only once she opts in, one
    share a day, and nothing pushed during her quiet hours (in the browser's own time
    zone); her inbox still gets what the cap and the quiet hours hold back."""
    app = live(PUSH_CATEGORIES=POLICY, **SENDING)
    made: list[FakeSubscriber] = []

    def subscription() -> dict[str, Any]:
        made.append(push_fake_webpush.subscribe("carol's browser"))
        return made[-1].info

    browser.make_subscription = subscription
    open_page(browser, page, app, user="carol")
    page.evaluate("FlaskPush.subscribe()")
    [subscriber] = made

    def choose(body: dict[str, Any]) -> None:
        page.evaluate("(body) => FlaskPush.api('PATCH', '/preferences', body)", body)

    def send(title: str, category: str) -> None:
        def go() -> None:
            with app.app.app_context():
                push.send(users=["carol"], title=title, category=category, inbox=True)

        off_loop(go)

    choose({"categories": {"offers": {"web": False, "inbox": False}}})
    for title, category in (
        ("2 for 1 on apples", "offers"),  # turned off: never pushed
        ("Order #7 is on its way", "order_status"),  # required: always
        ("Our new bakery", "news"),  # opt-in: off until she chooses
        ("Bob shared a recipe", "shares"),
        ("Dan shared a list", "shares"),  # over the cap of one a day
    ):
        send(title, category)
    choose({"categories": {"news": {"web": True, "inbox": True}}})
    send("Opening hours", "news")
    # quiet hours around the browser's own clock: the next news waits for their end
    choose(
        page.evaluate(
            """() => {
              const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
              const at = (h) => new Date(Date.now() + h * 3600e3)
                .toLocaleTimeString('en-GB', {timeZone: zone, hour: '2-digit', minute: '2-digit'});
              return {quietHours: {start: at(-1), end: at(1), timeZone: zone}};
            }"""
        )
    )
    send("Late news", "news")

    received = subscriber.received
    titles = [p.json()["title"] for p in received]
    assert titles == ["Order #7 is on its way", "Bob shared a recipe", "Opening hours"]
    register_worker(page)
    for each in received:
        deliver(browser, page, app.origin, each.payload)
    notes = shown(page, count=3)
    assert sorted(n["title"] for n in notes) == sorted(titles)
    # the inbox has what the cap and the quiet hours held back; not the offer nor the
    # news sent before she opted in, whose inbox channel was off too
    inbox = page.evaluate("FlaskPush.api('GET', '/notifications')")
    assert sorted(item["title"] for item in inbox["items"]) == sorted(
        [*titles, "Dan shared a list", "Late news"]
    )
