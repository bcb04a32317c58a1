"""An order's live activity in real Chromium: on the Phones page the simulated iPhone
gets the order's Live Activity by its push-to-start token, registers the activity's
own token (through flask-push's endpoint, as its app would), and its card updates in
place through the five states, as the Android phone's one notification does; the
order page follows live, and the bell shows one item for the order. Screenshots of
the Phones page with its card at 1280 and 390 px go to the system's temporary folder
(``freshcart-live-activity/``).

Needs Chromium at /usr/bin/chromium and the ``playwright`` package; without them the
test is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

sync_api = pytest.importorskip("playwright.sync_api")

from served_demo import chromium_fixtures, server_fixture, sign_in  # noqa: E402

from demo.models import STATUSES  # noqa: E402

from browser_kit import TIMEOUT_MS  # noqa: E402

SHOTS = Path(tempfile.gettempdir()) / "freshcart-live-activity"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
LABELS = dict(STATUSES)


server = server_fixture()
chromium_session, chromium = chromium_fixtures()


def shot(page: Any, name: str, full_page: bool = True) -> Path:
    """A screenshot: the whole page from its top (where the sticky header is), or
    what the screen shows now."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    if full_page:
        page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full_page)
    return path


def test_an_order_is_one_live_activity_on_the_phones(
    server: tuple[str, Any], chromium: Any
) -> None:
    base, app = server
    alice = sign_in(chromium, base, "alice@example.com", viewport=DESKTOP)
    staff = sign_in(chromium, base, "staff@example.com", viewport=DESKTOP)

    # her simulated phones: an iPhone (with a push-to-start token) and an Android phone
    alice.goto(base + "/devices")
    alice.click("text=Add iPhone")
    alice.wait_for_selector(".category-tag:has-text('Live Activities')")
    alice.click("text=Add Android phone")
    alice.wait_for_selector(".device-android")
    assert alice.locator("[data-screen]").count() == 2

    # she orders in another tab, and keeps the order page open there
    order_page = alice.context.new_page()
    order_page.set_default_timeout(TIMEOUT_MS)
    order_page.goto(base + "/products/avocados")
    order_page.click("text=Add to cart")
    order_page.click("text=Place order")
    order_page.wait_for_selector("[data-live].on")
    order_id = order_page.url.rsplit("/", 1)[1]
    activity = f"order-{order_id}"

    iphone = alice.locator("[data-screen][data-kind=ios]")
    android = alice.locator("[data-screen][data-kind=android]")
    card = iphone.locator(f"[data-live-activity='{activity}']")
    # the start came by the push-to-start token; the app then registers the
    # activity's own token, which the next states go to
    card.and_(alice.locator("[data-status=placed]")).wait_for()
    card.and_(alice.locator("[data-token=own]")).wait_for()

    for step, (status, label) in enumerate(STATUSES, start=1):
        if step > 1:
            staff.goto(f"{base}/orders/{order_id}")
            staff.click("text=Advance status")
            staff.locator("[data-order-status]", has_text=label).wait_for()
        # the iPhone: one card for the order, showing the newest state
        card.and_(alice.locator(f"[data-status={status}]")).wait_for()
        assert iphone.locator("[data-live-activity]").count() == 1
        assert card.locator("[data-la-status]").text_content() == label
        assert card.locator(f"[data-steps='{step}/5']").count() == 1
        assert card.locator(".la-steps i.on").count() == step
        eta = card.locator("[data-la-eta]").text_content()
        if status == "delivered":
            assert eta == "Enjoy!"
        else:  # the shop's times are UTC, and it says so
            assert re.fullmatch(r"by \d\d:\d\d UTC", eta), eta
        # Android: one notification for the order, updated in place
        title = f"Order #{order_id}: {label}"
        android.locator("[data-note-title]", has_text=title).wait_for()
        assert android.locator("[data-note]").count() == 1
        assert android.locator(f"[data-note='{activity}'] [data-progress='{step}/5']").count() == 1
        # the order page follows live
        order_page.locator("[data-order-status]", has_text=label).wait_for()
        if status == "out_for_delivery":
            for name, viewport in (("1280", DESKTOP), ("390", PHONE)):
                alice.set_viewport_size(viewport)
                shot(alice, f"phones-live-activity-{name}")
                card.scroll_into_view_if_needed()
                shot(alice, f"phones-live-activity-{name}-card", full_page=False)
                width = alice.evaluate("document.documentElement.scrollWidth")
                assert width <= viewport["width"], (name, width)
            alice.set_viewport_size(DESKTOP)
    assert card.get_attribute("data-event") == "end"
    # the services' log lists every push: five to each phone
    alice.locator("[data-received-count]", has_text="10").wait_for()

    # the bell: one item for the order, its progress complete
    alice.reload()
    alice.click(".fp-bell-button")
    items = alice.locator(".fp-panel .fp-item", has_text=f"Order #{order_id}")
    items.first.wait_for()
    assert items.count() == 1
    assert items.first.locator(".fp-item-title").text_content() == f"Order #{order_id}: Delivered"
    shot(alice, "bell-one-item", full_page=False)
    # in the history, named as the Notifications page names it
    alice.click(".fp-show-history")
    listed = alice.locator(".fp-history .fp-item", has_text=f"Order #{order_id}")
    listed.first.wait_for()
    assert listed.first.locator(".fp-item-meta").text_content().startswith("Order updates · ")


def test_the_order_page_says_so_when_her_session_ended(
    server: tuple[str, Any], chromium: Any
) -> None:
    """Her session ended where the page could not hear of it (it expired; a sign-out
    in another tab makes the page load again, signed out): when the order page's live
    connection comes back, the server no longer knows her. The page says she is
    signed out, instead of "reconnecting…" for ever over a state that no longer
    changes, and throws nothing."""
    from playwright.sync_api import expect

    base, _app = server
    alice = sign_in(chromium, base, "alice@example.com", viewport=DESKTOP)
    thrown: list[str] = []
    alice.on("pageerror", lambda err: thrown.append(str(err)))
    alice.goto(base + "/products/avocados")
    alice.click("text=Add to cart")
    alice.click("text=Place order")
    alice.wait_for_selector("[data-live].on")

    alice.context.clear_cookies()  # the session is gone

    # the connection drops (a network change, say) and comes back
    alice.evaluate("FlaskPush.disconnect(); FlaskPush.connect()")
    expect(alice.locator("[data-live]")).to_have_text("signed out: sign in to follow it live")
    assert thrown == []


def test_a_delivered_order_offers_no_next_step_on_the_open_page(
    server: tuple[str, Any], chromium: Any
) -> None:
    """The order page stays open while the order is delivered: it still offered
    "Enable notifications" for the next steps, and another staff's page "Advance
    status", where the page loaded then offers neither. Both go when the last step
    comes live, and stay until then."""
    from playwright.sync_api import expect

    base, _app = server
    alice = sign_in(chromium, base, "alice@example.com", viewport=PHONE)
    watching = sign_in(chromium, base, "staff@example.com", viewport=DESKTOP)
    staff = sign_in(chromium, base, "staff@example.com", viewport=DESKTOP)
    alice.goto(base + "/products/avocados")
    alice.click("text=Add to cart")
    alice.click("text=Place order")
    alice.wait_for_selector("[data-live].on")
    order_url = alice.url
    watching.goto(order_url)
    watching.wait_for_selector("[data-live].on")
    enable = alice.locator("[data-enable-notifications]")
    advance = watching.get_by_role("button", name="Advance status")

    for _status, label in STATUSES[1:]:
        staff.goto(order_url)
        staff.click("text=Advance status")
        staff.locator("[data-order-status]", has_text=label).wait_for()
        for page in (alice, watching):
            page.locator("[data-order-status]", has_text=label).wait_for()
        if label != LABELS["delivered"]:
            expect(enable).to_be_visible()
            expect(advance).to_be_visible()
    expect(enable).to_be_hidden()
    expect(advance).to_be_hidden()
    expect(alice.locator(".notice")).to_be_hidden()
    shot(alice, "order-delivered-live-390")
    # as the page loaded now shows it
    alice.reload()
    assert alice.locator(".notice").count() == 0
