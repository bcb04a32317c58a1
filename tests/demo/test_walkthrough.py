"""The demo in real Chromium: a shopper orders and watches the status change live while
the staff advances it, a share and staff pushes reach another shopper's bell, a
simulated phone receives over the fake FCM, the analytics count the deliveries and the
export finishes with its progress item. Screenshots of the main pages, at desktop and
phone width, go to ``test-artifacts/demo/``.

Needs Chromium at /usr/bin/chromium and the ``playwright`` package; without them the
test is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from demo.__main__ import build, stop  # noqa: E402
from demo.seed import PASSWORD  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHOTS = ROOT / "test-artifacts" / "demo"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def need(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    # build() points SSL_CERT_FILE at the fake APNs' CA bundle: undo it afterwards
    monkeypatch.setenv("SSL_CERT_FILE", os.environ.get("SSL_CERT_FILE", ""))
    app, _ = build(str(tmp_path / "instance"))
    app.config["DEMO_EXPORT_DELAY"] = 0.05
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}", app
    finally:
        http.shutdown()
        thread.join(5)
        http.server_close()
        stop(app)


@pytest.fixture
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        need(False, "playwright is not installed (pip install playwright)")
    need(os.path.exists(CHROMIUM), f"Chromium is not at {CHROMIUM}")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


def sign_in(browser: Any, base: str, email: str, viewport: dict[str, int] = DESKTOP) -> Any:
    page = browser.new_context(viewport=viewport).new_page()
    page.set_default_timeout(10_000)
    page.goto(base + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_load_state("networkidle")
    return page


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def bell_count(page: Any) -> int:
    badge = page.locator(".fp-badge")
    return 0 if badge.is_hidden() else int(badge.text_content() or 0)


def test_walkthrough(server: tuple[str, Any], chromium: Any) -> None:
    from playwright.sync_api import expect

    base, app = server
    fcm = app.extensions["demo_fakes"]["fcm"]
    alice = sign_in(chromium, base, "alice@example.com")
    bob = sign_in(chromium, base, "bob@example.com")
    staff = sign_in(chromium, base, "staff@example.com")
    shot(alice, "home")

    # alice gets a (simulated) Android phone
    alice.goto(base + "/devices")
    alice.click("text=Add Android phone")
    alice.wait_for_selector(".device-android")

    # she orders and keeps the order page open
    alice.goto(base + "/products/avocados")
    alice.click("text=Add to cart")
    shot(alice, "cart")
    alice.click("text=Place order")
    alice.wait_for_selector("[data-live].on")
    order_id = alice.url.rsplit("/", 1)[1]

    # the staff moves it along: the open page follows live
    staff.goto(base + "/staff/")
    shot(staff, "staff-board")
    staff.click(f"form[action='/staff/orders/{order_id}/advance'] button")
    alice.wait_for_function(
        "document.querySelector('[data-order-status]').textContent.trim() === 'Confirmed'"
    )
    assert alice.locator("[data-step=confirmed].done").count() == 1
    shot(alice, "order-live")
    [message] = fcm.wait(1, timeout=10)
    assert message.notification["title"] == f"Order #{order_id}: Confirmed"

    # a share reaches bob's bell, live; alice's own bell does not count it
    bob.goto(base + "/")
    before = bell_count(alice)
    alice.goto(base + "/offers/berry-weekend")
    alice.click("[data-test=share]")
    bob.wait_for_function("document.querySelector('.fp-badge').textContent === '1'")
    bob.click(".fp-bell-button")
    assert bob.locator(".fp-panel").get_by_text("Alice shared Berry weekend").is_visible()
    shot(bob, "bell")
    assert bell_count(alice) == before

    # an offer push and an ad hoc push by email arrive too
    staff.goto(base + "/staff/offers")
    staff.locator("[data-test=push-offer]").first.click()
    staff.goto(base + "/staff/messages")
    staff.check("input[value=emails]")
    staff.fill("textarea[name=emails]", "bob@example.com")
    staff.fill("input[name=title]", "Your courier is nearby")
    staff.click("form[data-audience-form] button[type=submit]")
    bob.wait_for_function("document.querySelector('.fp-badge').textContent === '3'")
    bob.goto(base + "/notifications")
    titles = bob.locator(".inbox-item strong").all_text_contents()
    assert titles[:2] == ["Your courier is nearby", "Exclusive Offer: Breakfast bundle"]
    shot(bob, "notifications")

    # the analytics count the order push that reached alice's phone
    staff.wait_for_selector("[data-message]")
    assert staff.locator("[data-message]").count() == 4
    order_message = staff.locator("[data-message]", has_text=f"Order #{order_id}: Confirmed")
    expect(order_message.locator(".counts")).to_contain_text("1 sent")
    shot(staff, "staff-messages")

    # the export reports through one inbox item, then links to the file
    staff.goto(base + "/staff/")
    staff.click("[data-test=export]")
    staff.click(".fp-bell-button")
    staff.locator(".fp-panel").get_by_text("Orders export ready").wait_for()
    shot(staff, "staff-export")

    alice.goto(base + "/devices")
    alice.locator("[data-received]").get_by_text(f"Order #{order_id}: Confirmed").wait_for()
    shot(alice, "devices")
    for path in ("/staff/installations", "/staff/providers", "/staff/offers"):
        staff.goto(base + path)
        shot(staff, "staff-" + path.rsplit("/", 1)[1])

    # phone width: the main shopper pages
    phone = sign_in(chromium, base, "carol@example.com", PHONE)
    for path, name in (("/", "home"), ("/offers/berry-weekend", "offer"), ("/devices", "devices")):
        phone.goto(base + path)
        shot(phone, f"phone-{name}")
    phone.goto(base + f"/orders/{order_id}")  # not hers: 404
    assert "Not Found" in phone.content()
