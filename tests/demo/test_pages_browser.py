"""The demo's pages in real Chromium: what they show of what was stored, and what
opening a notification from them does.

Needs Chromium at /usr/bin/chromium and the ``playwright`` package; without them the
test is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

from served_demo import chromium_fixtures, server_fixture, sign_in

server = server_fixture()
chromium_session, chromium = chromium_fixtures()

#: an app id that is markup: an administrator stored it, the page must show it as text
MARKUP = "<img src=x onerror=\"window.ran='providers'\">shop"


def test_the_providers_page_shows_what_was_stored_as_text(
    server: tuple[str, Any], chromium: Any, vapid_private_key: str
) -> None:
    """The staff's providers page built its table from the stored app ids as HTML:
    one that was markup ran its script (the console's providers page shows it as
    text)."""
    base, _app = server
    staff = sign_in(chromium, base, "staff@example.com")
    stored = staff.request.post(
        base + "/push/providers",
        data={
            "appId": MARKUP,
            "kind": "webpush",
            "settings": {"privateKey": vapid_private_key, "subject": "mailto:ops@shop.example"},
        },
    )
    assert stored.status == 201, stored.text()
    staff.goto(base + "/staff/providers")
    staff.wait_for_selector("[data-providers] table")
    assert staff.inner_text("[data-providers] code") == MARKUP
    assert staff.evaluate("window.ran") is None


def test_a_notification_opened_from_the_notifications_page_is_read(
    server: tuple[str, Any], chromium: Any
) -> None:
    """Opened from the bell, a notification is read; opened from the Notifications
    page, it went to its order and stayed unread there and in the bell."""
    base, _app = server
    alice = sign_in(chromium, base, "alice@example.com")
    alice.request.post(base + "/cart", form={"product_id": "1"})
    placed = alice.request.post(base + "/checkout")
    assert placed.ok
    alice.goto(base + "/notifications")
    unread = alice.request.get(base + "/push/notifications").json()["newCount"]
    assert unread >= 1
    link = alice.locator(".inbox-item.new a").first
    target = link.get_attribute("href")
    link.click()
    alice.wait_for_url(base + str(target))
    assert alice.request.get(base + "/push/notifications").json()["newCount"] == unread - 1


def test_signed_out_in_one_tab_the_others_stop_showing_hers(
    server: tuple[str, Any], chromium: Any
) -> None:
    """Signed out in one tab, her other open tabs kept her live events: a message
    for her came as a toast and into the bell of a tab on a shared browser. They
    load again, signed out."""
    base, _app = server
    first = sign_in(chromium, base, "alice@example.com")
    other = first.context.new_page()
    other.goto(base + "/orders")
    assert other.evaluate("document.body.dataset.user") != ""
    first.click("text=Sign out")
    other.wait_for_function("document.body.dataset.user === ''", timeout=10_000)


def test_the_messages_chart_counts_an_orders_one_inbox_item_once(
    server: tuple[str, Any], chromium: Any
) -> None:
    """Each state of an order updates the one item of its bell, and each state's
    message says "1 inbox": the chart summed them, and read 9 inbox items where 4
    were."""
    base, _app = server
    alice = sign_in(chromium, base, "alice@example.com")
    alice.request.post(base + "/cart", form={"product_id": "1"})
    order = alice.request.post(base + "/checkout").url.rsplit("/", 1)[1]
    staff = sign_in(chromium, base, "staff@example.com")
    for status in ("confirmed", "preparing"):
        moved = staff.request.post(base + f"/staff/orders/{order}/advance", form={"status": status})
        assert moved.ok
    staff.goto(base + "/staff/messages")
    staff.wait_for_selector(".chart")
    listed = staff.request.get(base + "/push/messages?take=25").json()["items"]
    ids = "&".join(f"id={m['id']}" for m in listed)
    counts = staff.request.get(base + f"/staff/messages/inbox.json?{ids}").json()
    assert sum(c["inbox"] for c in counts.values()) > len({c["item"] for c in counts.values()})
    items = {c["item"]: c["inbox"] for c in counts.values()}
    assert staff.inner_text(".chart .col:first-child span") == str(sum(items.values()))
