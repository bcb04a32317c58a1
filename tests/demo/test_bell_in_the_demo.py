"""The bell inside the demo's own pages, in real Chromium: a notification with one
long unbroken word (a tracking URL, a product code) keeps every place that shows it
(the bell's menu and history, the toast, the notifications page) within the page,
at desktop and at phone width, and the history covers the page under the demo's
blurred sticky header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

pytest.importorskip("playwright.sync_api")
pytest.importorskip("dbus_next")

from served_demo import serving, submit_login

from demo import create_app, db, push
from demo.models import User
from demo.seed import seed

from browser_kit import Browser, chromium
from conftest import close_app

WORD = "x" * 300


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(tmp_path_factory.mktemp("chromium")) as session:
        yield session


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite'}",
            "PUSH_QUEUE": "inline",
        }
    )
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        db.create_all()
        seed()
    try:
        with serving(app) as base:
            yield base, app
    finally:
        close_app(app)


def notify(app: Any, email: str, title: str, body: str) -> None:
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == email))
        push.upsert(user.push_id, notify_type="order_status", title=title, body=body)


PAGE_WIDTH = "document.documentElement.scrollWidth"
BOX = "(e) => { const r = e.getBoundingClientRect(); return [r.left, r.right]; }"


@pytest.mark.parametrize("viewport", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_a_long_word_stays_within_the_page(
    browser: Browser, shop: tuple[str, Any], viewport: tuple[int, int]
) -> None:
    base, app = shop
    width, height = viewport
    notify(app, "bob@example.com", WORD[:255], "Tracking: https://track.example/" + WORD)
    page = browser.context.new_page()
    try:
        page.set_viewport_size({"width": width, "height": height})
        submit_login(page, base, "bob@example.com")
        page.wait_for_selector(".fp-badge:not([hidden])")
        page.click(".fp-bell-button")
        page.wait_for_selector(".fp-panel:not([hidden]) .fp-item")
        assert page.evaluate(PAGE_WIDTH) == width
        left, right = page.eval_on_selector(".fp-panel", BOX)
        assert 0 <= left and right <= width
        page.click(".fp-show-history")
        page.wait_for_selector(".fp-history .fp-item")
        assert page.evaluate(PAGE_WIDTH) == width
        # under the demo's sticky, blurred header the backdrop still covers the page
        corners = page.evaluate(
            """() => [[0, innerHeight - 1], [innerWidth - 1, innerHeight - 1]].map(([x, y]) =>
                 document.querySelector('.fp-history').contains(document.elementFromPoint(x, y)))"""
        )
        assert corners == [True, True]
        page.keyboard.press("Escape")

        # a live one shows as a toast, which wraps too
        notify(app, "bob@example.com", "Parcel " + WORD[:240], "Code " + WORD)
        toast = page.wait_for_selector(".toast")
        left, right = toast.evaluate(BOX)
        assert 0 <= left and right <= width

        page.goto(base + "/notifications")
        page.wait_for_selector(".inbox-item")
        assert page.evaluate(PAGE_WIDTH) == width

        # the demo links the bell's stylesheet itself (no flash of an unstyled bell),
        # before its own, so its rules win; the bell adds no second link
        sheets = page.eval_on_selector_all(
            "link[rel=stylesheet]", "(links) => links.map((l) => new URL(l.href).pathname)"
        )
        assert sheets == ["/push/static/flask-push.css", "/static/demo.css"]
    finally:
        page.close()


#: the direction the browser lays each element's text out in
DIRECTIONS = "(els) => els.map((e) => getComputedStyle(e).direction)"


def test_right_to_left_text_reads_right_to_left(browser: Browser, shop: tuple[str, Any]) -> None:
    """A title and body in Hebrew or Arabic are laid out right to left wherever they
    show (the bell's menu and history, the toast, the notifications page), so their
    punctuation ends the sentence instead of starting it; English stays left to right."""
    base, app = shop
    notify(app, "bob@example.com", "Order #7 shipped", "On its way.")
    notify(app, "bob@example.com", "ההזמנה שלך בדרך!", "השליח יגיע בעוד 10 דקות.")
    page = browser.context.new_page()
    try:
        submit_login(page, base, "bob@example.com")
        page.wait_for_selector(".fp-badge:not([hidden])")
        page.click(".fp-bell-button")
        texts = ".fp-panel .fp-item-title, .fp-panel .fp-item-body"
        page.wait_for_selector(texts)
        assert page.eval_on_selector_all(texts, DIRECTIONS) == ["rtl", "rtl", "ltr", "ltr"]
        page.click(".fp-show-history")
        texts = ".fp-history .fp-item-title, .fp-history .fp-item-body"
        page.wait_for_selector(texts)
        assert page.eval_on_selector_all(texts, DIRECTIONS) == ["rtl", "rtl", "ltr", "ltr"]
        page.keyboard.press("Escape")

        notify(app, "bob@example.com", "طلبك رقم 42 في الطريق!", "سيصل السائق قريبا.")
        toast = page.wait_for_selector(".toast span")
        assert toast.evaluate("(e) => getComputedStyle(e).direction") == "rtl"

        page.goto(base + "/notifications")
        texts = ".inbox-item strong, .inbox-item .grow > div:nth-child(2)"
        page.wait_for_selector(texts)
        assert page.eval_on_selector_all(texts, DIRECTIONS) == ["rtl"] * 4 + ["ltr"] * 2
    finally:
        page.close()


def test_the_notifications_page_follows_the_inbox_live(
    browser: Browser, shop: tuple[str, Any]
) -> None:
    """The page lists what the bell above it shows: a notification that arrives is
    listed, and what the bell marks read is shown read, without a reload."""
    from playwright.sync_api import expect

    base, app = shop
    notify(app, "bob@example.com", "Order #7 shipped", "On its way.")
    page = browser.context.new_page()
    try:
        submit_login(page, base, "bob@example.com")
        page.goto(base + "/notifications")
        page.wait_for_selector(".fp-badge:not([hidden])")  # the bell's socket is joined
        mark_all = page.locator("form button", has_text="Mark all read")
        expect(mark_all).to_have_text("Mark all read (1)")

        notify(app, "bob@example.com", "Your courier is nearby", "Two minutes away.")
        expect(page.locator(".inbox-item strong")).to_have_text(
            ["Your courier is nearby", "Order #7 shipped"]
        )
        expect(page.locator(".inbox-item.new")).to_have_count(2)
        expect(mark_all).to_have_text("Mark all read (2)")

        page.click(".fp-bell-button")
        page.click(".fp-mark-all")
        expect(page.locator(".inbox-item.new")).to_have_count(0)
        expect(mark_all).to_have_text("Mark all read (0)")
        expect(mark_all).to_be_disabled()
    finally:
        page.close()
