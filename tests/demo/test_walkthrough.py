"""The demo in real Chromium: a shopper turns notifications on and orders; the staff
advances the order; her open page follows live, and with the page closed her service
worker shows the order's pushes as one notification (the order is one live
activity), whose click opens the order and is counted. On her notification
settings she turned "Offers and deals" off for her browser and phone: the staff's
offer reaches her inbox only, while the next order update reaches both, and the
analytics count the offer's suppressed pushes. A share and staff pushes reach another
shopper's bell, a simulated phone receives over the fake FCM, the analytics count the
deliveries and the export finishes with its progress item.
Screenshots of the main pages, at desktop and phone width, go to
``test-artifacts/demo/``.

The shopper with notifications uses a persistent Chromium profile whose
notifications go to a D-Bus server of the test's (``browser_kit``); the others use
ordinary contexts of a second Chromium. Needs Chromium at /usr/bin/chromium, dbus,
and the ``playwright`` and ``dbus-next`` packages; without them the test is skipped,
except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_push.testing import FakePushService

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("playwright.sync_api")
pytest.importorskip("dbus_next")

from served_demo import log_in, server_fixture, sign_in  # noqa: E402

from demo.extensions import db, push  # noqa: E402
from demo.models import Order, User  # noqa: E402

from browser_kit import ARGS, CHROMIUM, Browser, chromium, deliver, shown  # noqa: E402

SHOTS = ROOT / "test-artifacts" / "demo"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
#: the demo's pushes to browsers go to this local service, which decrypts them
WEB_PUSH = {"PUSH_ENDPOINT_HOSTS": ["127.0.0.1"], "PUSH_ALLOW_HTTP_ENDPOINTS": True}


server = server_fixture(WEB_PUSH, DEMO_EXPORT_DELAY=0.05)


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[tuple[Browser, Any]]:
    """A Chromium with a persistent profile (notifications over D-Bus) for the shopper
    who turns notifications on, and a second one for everybody else."""
    with chromium(tmp_path / "chromium", viewport=DESKTOP) as persistent:
        others = persistent.playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield persistent, others
        finally:
            others.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def rows_of(app: Any, email: str, model: Any, *where: Any) -> int:
    """How many rows of ``model`` belong to the shopper ``email`` (and match ``where``)."""
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == email))
        count = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(model)
            .where(model.user_id == user.push_id, *where)
        )
        db.session.remove()
        return int(count or 0)


def unread_of(app: Any, email: str) -> int:
    """The count a loaded bell of ``email`` shows: her unread inbox items."""
    items = push.models.InboxItem
    return rows_of(app, email, items, items.is_new)


def subscriptions_of(app: Any, email: str) -> int:
    return rows_of(app, email, push.models.Subscription)


def deliveries_of(app: Any, title: str) -> list[tuple[str, str, str | None]]:
    """(kind, status, reason) of each delivery of the message titled ``title``."""
    with app.app_context():
        message, delivery = push.models.Message, push.models.Delivery
        rows = db.session.execute(
            sa.select(delivery.kind, delivery.status, delivery.reason)
            .join(message, message.id == delivery.message_id)
            .where(message.notification["title"].as_string() == title)
            .order_by(delivery.kind)
        )
        found = [tuple(row) for row in rows]
        db.session.remove()
        return found


def test_walkthrough(
    server: tuple[str, Any], browsers: tuple[Browser, Any], push_fake_webpush: FakePushService
) -> None:
    from playwright.sync_api import expect

    base, app = server
    persistent, chromium = browsers
    fcm = app.extensions["demo_fakes"]["fcm"]
    walk(base, app, persistent, chromium, fcm, push_fake_webpush, expect)


def walk(
    base: str, app: Any, persistent: Browser, chromium: Any, fcm: Any, service: Any, expect: Any
) -> None:
    # alice's browser: PushManager.subscribe() answers with a subscription at the
    # local push service (browser_kit), the rest of the chain is the demo's own
    persistent.make_subscription = lambda: service.subscribe("alice's browser").info
    persistent.context.grant_permissions(["notifications"], origin=base)
    alice = log_in(persistent.context.new_page(), base, "alice@example.com")
    bob = sign_in(chromium, base, "bob@example.com", viewport=DESKTOP)
    staff = sign_in(chromium, base, "staff@example.com", viewport=DESKTOP)
    shot(alice, "home")

    # she turns notifications on
    alice.click("[data-enable-notifications]")
    alice.wait_for_selector("[data-enable-notifications].btn-done")
    assert subscriptions_of(app, "alice@example.com") == 1

    # and gets a (simulated) Android phone
    alice.goto(base + "/devices")
    alice.click("text=Add Android phone")
    alice.wait_for_selector(".device-android")

    # offers are not for her browser or her phone: the inbox may keep them
    # the bell's menu leads to the shop's settings page too
    settings = alice.locator("#bell a.fp-show-settings")
    assert settings.get_attribute("href") == "/settings/notifications"
    alice.locator("p.lead").get_by_role("link", name="notification settings").click()
    alice.uncheck("input[name='offers.web']")
    alice.uncheck("input[name='offers.mobile']")
    assert alice.locator("input[name='order_status.web']").is_disabled()
    alice.click("text=Save settings")
    alice.get_by_text("Your notification settings are saved.").wait_for()
    assert not alice.locator("input[name='offers.web']").is_checked()
    assert alice.locator("input[name='offers.inbox']").is_checked()
    shot(alice, "settings")

    # she orders and keeps the order page open
    alice.goto(base + "/products/avocados")
    alice.click("text=Add to cart")
    shot(alice, "cart")
    alice.click("text=Place order")
    alice.wait_for_selector("[data-live].on")
    order_id = alice.url.rsplit("/", 1)[1]
    order_url = f"{base}/orders/{order_id}"

    # the staff moves it along: the open page follows live
    staff.goto(base + "/staff/")
    shot(staff, "staff-board")
    staff.click(f"form[action='/staff/orders/{order_id}/advance'] button")
    alice.wait_for_function(
        "document.querySelector('[data-order-status]').textContent.trim() === 'Confirmed'"
    )
    # the status text and the step bar change in two steps: wait for the bar too
    expect(alice.locator("[data-step=confirmed].done")).to_have_count(1)
    shot(alice, "order-live")
    # the order is one live activity: placing it started it, each state replaces the
    # last on her phone (one tag) and in her browser
    activity = f"order-{order_id}"
    # two states saved at once may be announced in either order: an older one
    # announced late is not shown over the newer
    alice.evaluate(
        "(channel) => FlaskPush.on(channel, 'marker', () => { window.markerCame = true; })",
        f"activity:{activity}",
    )
    with app.app_context():
        late = {"id": activity, "event": "start", "state": {"status": "placed"}, "timestamp": 1}
        push.publish(f"activity:{activity}", "activity", {**late, "title": "Placed, late"})
        push.publish(f"activity:{activity}", "marker", {})
    alice.wait_for_function("window.markerCame === true")
    # at once: the page's reload would put the right state back a moment later
    assert alice.locator("[data-order-status]").text_content().strip() == "Confirmed"
    assert alice.get_by_text("Placed, late").count() == 0
    placed, confirmed = fcm.wait(2, timeout=10)
    assert [m.notification["title"] for m in (placed, confirmed)] == [
        f"Order #{order_id}: Placed",
        f"Order #{order_id}: Confirmed",
    ]
    assert {m.android["notification"]["tag"] for m in (placed, confirmed)} == {activity}

    # the same pushes reached her browser's push service; with the order page closed,
    # her service worker shows them as one notification, and a click on it opens the
    # order
    pushed = service.subscribers[0].wait(2, timeout=10)
    assert [r.json()["title"] for r in pushed] == [
        f"Order #{order_id}: Placed",
        f"Order #{order_id}: Confirmed",
    ]
    alice.goto(base + "/")
    before = len(persistent.notifications.shown)
    for received in pushed:
        deliver(persistent, alice, base, received.payload)
    first, note = persistent.notifications.wait_shown(before + 2)[-2:]
    assert note["summary"] == f"Order #{order_id}: Confirmed"
    assert note["id"] == first["id"]  # the desktop replaced the first one
    [showing] = shown(alice)
    assert (showing["title"], showing["tag"]) == (f"Order #{order_id}: Confirmed", activity)
    unread = unread_of(app, "alice@example.com")
    assert unread > 0  # her order's updates: her bell shows a count
    with persistent.context.expect_page() as opened:
        persistent.notifications.click(note["id"])  # a trusted click, from the desktop
    tapped = opened.value
    tapped.wait_for_url(order_url)
    tapped.wait_for_selector("[data-order-status]")
    tapped.close()
    # she opened her order from it: its item in her bell is read (the click's report)
    deadline = time.monotonic() + 10
    while unread_of(app, "alice@example.com") != unread - 1:
        assert time.monotonic() < deadline, "the click did not mark the order's item read"
        time.sleep(0.05)

    # a share reaches bob's bell, live; alice's own bell does not count it
    bob.goto(base + "/")
    before = unread_of(app, "alice@example.com")
    alice.goto(base + "/offers/berry-weekend")
    alice.click("[data-test=share]")
    bob.wait_for_function("document.querySelector('.fp-badge').textContent === '1'")
    bob.click(".fp-bell-button")
    assert bob.locator(".fp-panel").get_by_text("Alice shared Berry weekend").is_visible()
    shot(bob, "bell")
    assert unread_of(app, "alice@example.com") == before
    expect(alice.locator(".fp-badge")).to_have_text(str(before))  # once her bell loaded

    # an offer push and an ad hoc push by email arrive too
    staff.goto(base + "/staff/offers")
    staff.locator("[data-test=push-offer]").first.click()
    offer = "Exclusive Offer: Breakfast bundle"
    expect(staff.locator(".flash")).to_contain_text(
        f"“{offer}” sent to 3 inboxes; no browser or phone gets it: 2 pushes held back"
    )
    # not to alice's browser and phone (the only ones): she turned offers off there
    assert deliveries_of(app, offer) == [
        ("fcm", "suppressed", "opted_out"),
        ("webpush", "suppressed", "opted_out"),
    ]
    # the next order update still reaches both: it is the next thing they receive
    staff.goto(f"{base}/orders/{order_id}")
    staff.click("text=Advance status")
    expect(staff.locator("[data-order-status]")).to_have_text("Preparing")
    titles = [m.notification["title"] for m in fcm.wait(3, timeout=10)]
    assert titles == [f"Order #{order_id}: {s}" for s in ("Placed", "Confirmed", "Preparing")]
    received = service.subscribers[0].wait(3, timeout=10)
    assert [r.json()["title"] for r in received] == titles
    with app.app_context():
        assert db.session.get(Order, int(order_id)).status == "preparing"
        db.session.remove()
    staff.goto(base + "/staff/messages")
    staff.check("input[value=emails]")
    staff.fill("textarea[name=emails]", "bob@example.com")
    staff.fill("input[name=title]", "Your courier is nearby")
    staff.select_option("select[name=category]", "order_status")
    staff.click("form[data-audience-form] button[type=submit]")
    bob.wait_for_function("document.querySelector('.fp-badge').textContent === '3'")
    bob.goto(base + "/notifications")
    titles = bob.locator(".inbox-item strong").all_text_contents()
    assert titles[:2] == ["Your courier is nearby", offer]
    shot(bob, "notifications")

    # the analytics count the order push: her phone and her browser got it, and she
    # clicked it once
    expect(staff.locator("[data-message]")).to_have_count(6)
    order_message = staff.locator("[data-message]", has_text=f"Order #{order_id}: Confirmed")
    expect(order_message.locator(".counts")).to_contain_text("2 sent")
    expect(order_message.locator(".counts")).to_contain_text("1 clicked")
    expect(order_message.locator(".counts")).to_contain_text("1 inbox")
    expect(order_message.locator(".counts")).to_contain_text("0 suppressed")
    expect(order_message.locator(".category-tag")).to_have_text("Order updates")
    # each message leads to the console, which says what became of each target
    why = order_message.locator("[data-why]")
    expect(why).to_have_text("Each browser and phone (console)")
    console = staff.context.new_page()
    console.goto(base + why.get_attribute("href"))
    expect(console.locator("h1")).to_contain_text(f"Order #{order_id}: Confirmed")
    console.close()
    # the offer: held back from alice's browser and phone, by her settings
    offer_message = staff.locator("[data-message]", has_text=offer)
    expect(offer_message.locator(".category-tag")).to_have_text("Offers and deals")
    expect(offer_message.locator(".counts")).to_contain_text("2 suppressed")
    expect(offer_message.locator(".counts")).to_contain_text("0 deferred")
    expect(offer_message.locator(".counts")).to_contain_text("3 inbox")
    expect(offer_message.locator("[data-reached]")).to_have_text(
        "3 inboxes · no browser or phone gets it · 2 pushes held back"
    )
    expect(staff.locator("[data-legend]")).to_contain_text("turned the message's kind off")
    # bob has no browser or phone with notifications: the message reached his inbox only
    nearby = staff.locator("[data-message]", has_text="Your courier is nearby")
    expect(nearby.locator("[data-reached]")).to_have_text(
        "1 inbox · no browsers or phones registered"
    )
    shot(staff, "staff-messages")

    # the export reports through one inbox item, then links to the file
    staff.goto(base + "/staff/")
    staff.click("[data-test=export]")
    staff.click(".fp-bell-button")
    staff.locator(".fp-panel").get_by_text("Orders export ready").wait_for()
    shot(staff, "staff-export")

    alice.goto(base + "/devices")
    alice.locator("[data-received]").get_by_text(f"Order #{order_id}: Confirmed").wait_for()
    # her Android phone shows the order once, in its newest state
    android = alice.locator("[data-screen][data-kind=android]")
    android.locator("[data-note-title]", has_text=f"Order #{order_id}: Preparing").wait_for()
    assert android.locator("[data-note]").count() == 1
    shot(alice, "devices")
    alice.goto(base + "/orders")
    alice.locator(".line").get_by_text(f"Order #{order_id}").wait_for()
    shot(alice, "orders")
    for path in ("/staff/installations", "/staff/providers", "/staff/offers"):
        staff.goto(base + path)
        shot(staff, "staff-" + path.rsplit("/", 1)[1])

    # phone width: the main shopper pages
    phone = sign_in(chromium, base, "carol@example.com", viewport=PHONE)
    for path, name in (
        ("/", "home"),
        ("/offers/berry-weekend", "offer"),
        ("/devices", "devices"),
        ("/settings/notifications", "settings"),
    ):
        phone.goto(base + path)
        shot(phone, f"phone-{name}")
    phone.goto(base + f"/orders/{order_id}")  # not hers: 404, with the shop's header
    assert phone.locator("[data-error='404'] h1").text_content() == "Page not found"
    assert phone.locator(".topbar").get_by_text("Sign out").is_visible()
