"""The shopper's notification settings and the staff's message analytics in real
Chromium, at desktop (1280 px) and phone (390 px) width: the settings form round
trip (with and without JavaScript), the browser's time zone picked for a shopper
who has none, a refused value shown beside its field with nothing saved, no
sideways scrolling, and the analytics' category, suppressed and deferred counts.

Screenshots go to ``$FRESHCART_SHOTS`` (a folder in the system's temporary folder by
default): look at them. Needs Chromium at /usr/bin/chromium and the ``playwright``
package; without them the tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

sync_api = pytest.importorskip("playwright.sync_api")

from playwright.sync_api import expect  # noqa: E402
from served_demo import chromium_fixtures, server_fixture, sign_in, submit_login  # noqa: E402

from demo.extensions import db, push  # noqa: E402
from demo.models import User  # noqa: E402
from demo.seed import PASSWORD  # noqa: E402

from browser_kit import TIMEOUT_MS  # noqa: E402

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
PAGE_WIDTH = "document.documentElement.scrollWidth"
#: the boxes of every control of the settings form that lies outside the screen's width
OUTSIDE = """(width) => [...document.querySelectorAll(
    'form[data-settings] input, form[data-settings] select, form[data-settings] button')]
  .map((el) => ({name: el.name || el.textContent.trim(),
                 box: el.closest('label, button').getBoundingClientRect()}))
  .filter(({box}) => box.left < 0 || box.right > width)
  .map(({name, box}) => ({name, left: box.left, right: box.right}))"""


def shots() -> Path:
    default = Path(tempfile.gettempdir()) / "freshcart-shots"
    folder = Path(os.environ.get("FRESHCART_SHOTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shot(page: Any, name: str, viewport: dict[str, int]) -> None:
    page.screenshot(path=str(shots() / f"{name}-{viewport['width']}.png"), full_page=True)


server = server_fixture()
chromium_session, chromium = chromium_fixtures()


def push_id(app: Any, email: str) -> str:
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == email))
        db.session.remove()
        return user.push_id


def saved(app: Any, email: str) -> Any:
    with app.app_context():
        preferences = push.get_preferences(push_id(app, email))
        db.session.remove()
        return preferences


def boxes(page: Any) -> dict[str, tuple[bool, bool]]:
    """Each box of the form: name -> (ticked, can be changed)."""
    return {
        box.get_attribute("name"): (box.is_checked(), box.is_enabled())
        for box in page.locator("form[data-settings] input[type=checkbox]").all()
    }


def test_a_time_zone_refused_as_missing_is_not_filled_in_again(
    server: tuple[str, Any], chromium: Any
) -> None:
    """She set the zone back to "Choose your time zone": the page that says "Choose
    your time zone." beside it shows none chosen, not the browser's zone filled in
    over her choice (which contradicts the sentence, and which Save would keep)."""
    base, app = server
    page = sign_in(chromium, base, "carol@example.com", timezone_id="Asia/Tokyo")
    page.goto(base + "/settings/notifications")
    zone = page.locator("select[name=time_zone]")
    assert zone.input_value() == "Asia/Tokyo"  # offered: she has none yet
    page.check("input[name=quiet][value=on]")
    zone.select_option("")
    page.click("text=Save settings")
    error = page.locator("label.zone .field-error")
    assert error.text_content() == "Choose your time zone."
    page.wait_for_load_state("load")  # the page's script has run
    assert zone.input_value() == ""
    assert saved(app, "carol@example.com").quiet_hours is None


@VIEWPORTS
def test_the_settings_form_round_trip(
    server: tuple[str, Any], chromium: Any, viewport: dict[str, int]
) -> None:
    base, app = server
    page = sign_in(chromium, base, "alice@example.com", viewport=viewport, timezone_id="Asia/Tokyo")
    page.click(".mainnav >> text=Settings")
    page.wait_for_url(base + "/settings/notifications")
    # no zone saved: the page picks the browser's
    assert page.locator("select[name=time_zone]").input_value() == "Asia/Tokyo"
    assert boxes(page)["order_status.web"] == (True, False)  # always on
    assert boxes(page)["news.inbox"] == (False, True)  # off until she chooses
    assert page.locator(".pref[data-category=order_status]").get_by_text("Always on").is_visible()
    assert page.evaluate(PAGE_WIDTH) <= viewport["width"]
    assert page.evaluate(OUTSIDE, viewport["width"]) == []
    shot(page, "settings", viewport)

    page.uncheck("input[name='offers.web']")
    page.check("input[name='news.inbox']")
    page.check("input[name=quiet][value=on]")
    page.fill("input[name=quiet_start]", "21:30")
    page.fill("input[name=quiet_end]", "06:15")
    page.click("text=Save settings")
    page.get_by_text("Your notification settings are saved.").wait_for()
    preferences = saved(app, "alice@example.com")
    assert preferences.categories["offers"] == {"web": False, "mobile": True, "inbox": True}
    assert preferences.categories["news"] == {"web": False, "mobile": False, "inbox": True}
    quiet = preferences.quiet_hours
    assert (quiet.start, quiet.end, quiet.time_zone) == ("21:30", "06:15", "Asia/Tokyo")
    # the page shows what is saved
    page.reload()
    assert boxes(page)["offers.web"] == (False, True) and boxes(page)["news.inbox"] == (True, True)
    assert page.locator("input[name=quiet][value=on]").is_checked()
    assert page.locator("input[name=quiet_end]").input_value() == "06:15"
    assert page.locator("select[name=time_zone]").input_value() == "Asia/Tokyo"

    # an end equal to the start is refused beside the field; the form stays as sent
    # and nothing is saved
    page.uncheck("input[name='shares.mobile']")
    page.fill("input[name=quiet_end]", "21:30")
    page.click("text=Save settings")
    error = page.locator("label", has=page.locator("input[name=quiet_end]")).locator(".field-error")
    assert error.text_content() == "The end must differ from the start."
    assert page.locator(".flash-error").text_content() == (
        "Nothing was saved: fix what is marked below."
    )
    assert boxes(page)["shares.mobile"] == (False, True)
    assert page.locator("input[name=quiet_end]").input_value() == "21:30"
    page.wait_for_load_state("load")  # measured once styled
    assert page.evaluate(PAGE_WIDTH) <= viewport["width"]
    shot(page, "settings-refused", viewport)
    assert saved(app, "alice@example.com") == preferences


@VIEWPORTS
def test_the_quiet_hours_times_wait_while_there_are_none(
    server: tuple[str, Any], chromium: Any, viewport: dict[str, int]
) -> None:
    """With "No quiet hours" chosen, the times and the zone are off (Tab skips them,
    a click cannot change them); "Quiet every day" turns them on, and back again."""
    base, app = server
    page = sign_in(chromium, base, "alice@example.com", viewport=viewport, timezone_id="Asia/Tokyo")
    page.goto(base + "/settings/notifications")
    times = [page.locator(f"[name={name}]") for name in ("quiet_start", "quiet_end", "time_zone")]
    none = page.locator("input[name=quiet][value=off]")
    expect(none).to_be_checked(timeout=TIMEOUT_MS)  # she has none yet
    for field in times:
        expect(field).to_be_disabled(timeout=TIMEOUT_MS)
    shot(page, "settings-no-quiet-hours", viewport)
    none.focus()
    page.keyboard.press("Tab")  # out of the radio group: past the times, to Save
    expect(page.get_by_role("button", name="Save settings")).to_be_focused(timeout=TIMEOUT_MS)

    page.check("input[name=quiet][value=on]")
    for field in times:
        expect(field).to_be_enabled(timeout=TIMEOUT_MS)
    assert times[2].input_value() == "Asia/Tokyo"  # still offered: the browser's zone
    page.fill("input[name=quiet_start]", "23:00")
    page.check("input[name=quiet][value=off]")
    for field in times:
        expect(field).to_be_disabled(timeout=TIMEOUT_MS)
    page.click("text=Save settings")
    page.get_by_text("Your notification settings are saved.").wait_for()
    assert saved(app, "alice@example.com").quiet_hours is None
    for field in times:  # the page as saved: none, and the times off again
        expect(field).to_be_disabled(timeout=TIMEOUT_MS)

    page.check("input[name=quiet][value=on]")
    page.fill("input[name=quiet_start]", "23:00")
    page.click("text=Save settings")
    page.get_by_text("Your notification settings are saved.").wait_for()
    quiet = saved(app, "alice@example.com").quiet_hours
    assert (quiet.start, quiet.end, quiet.time_zone) == ("23:00", "07:00", "Asia/Tokyo")
    for field in times:
        expect(field).to_be_enabled(timeout=TIMEOUT_MS)


def test_the_settings_work_without_javascript(server: tuple[str, Any], chromium: Any) -> None:
    base, app = server
    page = sign_in(chromium, base, "bob@example.com", java_script_enabled=False)
    page.goto(base + "/settings/notifications")
    assert page.locator("select[name=time_zone]").input_value() == ""  # nobody picked one
    # nothing but a script turns the times off while "No quiet hours" is chosen
    assert page.locator("input[name=quiet][value=off]").is_checked()
    assert page.locator("input[name=quiet_start]").is_enabled()
    page.check("input[name=quiet][value=on]")
    page.click("text=Save settings")
    assert page.locator(".field-error").text_content() == "Choose your time zone."
    assert saved(app, "bob@example.com").quiet_hours is None
    page.select_option("select[name=time_zone]", "America/Sao_Paulo")
    page.uncheck("input[name='shares.web']")
    page.click("text=Save settings")
    page.get_by_text("Your notification settings are saved.").wait_for()
    preferences = saved(app, "bob@example.com")
    assert preferences.quiet_hours.time_zone == "America/Sao_Paulo"
    assert preferences.categories["shares"] == {"web": False, "mobile": True, "inbox": True}


@VIEWPORTS
def test_the_staff_analytics_show_what_the_settings_held_back(
    server: tuple[str, Any], chromium: Any, viewport: dict[str, int]
) -> None:
    """Alice turned offers off for her phone; Bob's quiet hours are now: the offer is
    suppressed for her phone and deferred for his."""
    base, app = server
    for email, token in (("alice@example.com", "a1" * 32), ("bob@example.com", "b1" * 32)):
        client = app.test_client()
        client.post("/login", data={"email": email, "password": PASSWORD})
        answer = client.post(
            "/push/installations",
            json={"appId": "com.example.freshcart", "deviceType": "ios", "deviceToken": token},
        )
        assert answer.status_code == 201, answer.text
    now = datetime.now(timezone.utc)
    with app.app_context():
        push.set_preferences(
            push_id(app, "alice@example.com"), categories={"offers": {"mobile": False}}
        )
        push.set_preferences(
            push_id(app, "bob@example.com"),
            quiet_hours={
                "start": (now - timedelta(hours=1)).strftime("%H:%M"),
                "end": (now + timedelta(hours=1)).strftime("%H:%M"),
                "time_zone": "UTC",
            },
        )
        db.session.remove()
    staff = sign_in(chromium, base, "staff@example.com", viewport=viewport)
    staff.goto(base + "/staff/offers")
    staff.locator("[data-test=push-offer]").first.click()
    staff.wait_for_url(base + "/staff/messages")
    flash = staff.locator(".flash").text_content()
    assert "queued for 1 browser or phone (1 of them after the shoppers’ quiet hours)" in flash
    assert "1 push held back by the shoppers’ settings or the daily cap" in flash
    offer = staff.locator("[data-message]", has_text="Exclusive Offer: Breakfast bundle")
    offer.wait_for()
    counts = offer.locator(".counts").text_content()
    assert "1 suppressed" in counts and "1 deferred" in counts and "1 queued" in counts
    expect(offer.locator("[data-reached]")).to_have_text(
        "3 inboxes · 1 browser or phone, 1 waiting for quiet hours · 1 push held back"
    )
    assert offer.locator(".category-tag").text_content() == "Offers and deals"
    assert staff.locator("[data-legend]").is_visible()
    assert staff.evaluate(PAGE_WIDTH) <= viewport["width"]
    shot(staff, "staff-messages", viewport)


@VIEWPORTS
def test_the_sent_card_says_the_shoppers_settings_held_a_message_back(
    server: tuple[str, Any], chromium: Any, viewport: dict[str, int]
) -> None:
    """News is off until a shopper turns it on: a news message to everyone reached no
    inbox, and its card blamed "no browsers or phones registered". It now says what
    held it back; a message that reached inboxes alone still says nothing is
    registered."""
    base, _app = server
    staff = sign_in(chromium, base, "staff@example.com", viewport=viewport)
    staff.goto(base + "/staff/messages")
    for title, category in (("Open on Sunday", "order_status"), ("New shop", "news")):
        staff.fill("input[name=title]", title)
        staff.select_option("select[name=category]", category)
        staff.click("form[data-audience-form] button[type=submit]")
        staff.wait_for_url(base + "/staff/messages")
    news = staff.locator("[data-message]", has_text="New shop")
    expect(news.locator("[data-reached]")).to_have_text(
        "0 inboxes · held back for 3 shoppers by their notification settings "
        "(News is off unless they turn it on)"
    )
    sunday = staff.locator("[data-message]", has_text="Open on Sunday")
    expect(sunday.locator("[data-reached]")).to_have_text(
        "3 inboxes · no browsers or phones registered"
    )
    assert staff.evaluate(PAGE_WIDTH) <= viewport["width"]
    shot(staff, "staff-messages-held-back", viewport)


def test_the_staff_messages_page_counts_what_the_console_cancelled(
    server: tuple[str, Any], chromium: Any
) -> None:
    """A message waiting for Bob's quiet hours, cancelled in the operator console: the
    staff's Messages page says "1 cancelled" and draws it in the bar, where it showed
    zeros everywhere and an empty bar, as if nothing had been sent."""
    base, app = server
    client = app.test_client()
    client.post("/login", data={"email": "bob@example.com", "password": PASSWORD})
    answer = client.post(
        "/push/installations",
        json={"appId": "com.example.freshcart", "deviceType": "ios", "deviceToken": "b2" * 32},
    )
    assert answer.status_code == 201, answer.text
    now = datetime.now(timezone.utc)
    with app.app_context():
        bob = push_id(app, "bob@example.com")
        push.set_preferences(
            bob,
            quiet_hours={
                "start": (now - timedelta(hours=1)).strftime("%H:%M"),
                "end": (now + timedelta(hours=1)).strftime("%H:%M"),
                "time_zone": "UTC",
            },
        )
        message = push.send(users=[bob], title="Held, then cancelled", category="offers")
        assert push.cancel(message.id)["counts"]["cancelled"] == 1
        db.session.remove()
    staff = sign_in(chromium, base, "staff@example.com", viewport=DESKTOP)
    staff.goto(base + "/staff/messages")
    card = staff.locator("[data-message]", has_text="Held, then cancelled")
    card.wait_for()
    counts = card.locator(".counts").text_content()
    assert "1 cancelled" in counts and "0 queued" in counts
    assert card.locator(".stacked .sw-cancelled").evaluate("(el) => el.style.width") == "100%"
    assert staff.locator(".legend", has_text="cancelled").is_visible()


#: what a strict host would send; the settings page needs nothing inline
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'"
)
VIOLATIONS = """window.cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.cspViolations.push(event.violatedDirective + ' ' + (event.blockedURI || 'inline'));
});"""


def test_the_settings_page_needs_nothing_inline(server: tuple[str, Any], chromium: Any) -> None:
    """The demo sends no Content-Security-Policy; a host that copies the page may: under
    a strict one (no inline script or style) the page and its time zone script work."""
    base, app = server

    @app.after_request
    def strict(response: Any) -> Any:
        response.headers["Content-Security-Policy"] = STRICT_CSP
        return response

    context = chromium.new_context(viewport=PHONE, timezone_id="Europe/Lisbon")
    context.add_init_script(VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    submit_login(page, base, "carol@example.com")
    answer = page.goto(base + "/settings/notifications")
    assert answer.headers["content-security-policy"] == STRICT_CSP
    page.wait_for_load_state("networkidle")
    assert page.locator("select[name=time_zone]").input_value() == "Europe/Lisbon"
    page.check("input[name=quiet][value=on]")
    page.click("text=Save settings")
    page.get_by_text("Your notification settings are saved.").wait_for()
    assert saved(app, "carol@example.com").quiet_hours.time_zone == "Europe/Lisbon"
    assert page.evaluate("window.cspViolations") == []
