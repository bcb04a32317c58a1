"""The notification settings in real Chromium: ``FlaskPush.preferences()`` against the
real ``/preferences`` endpoints of an app with ``PUSH_CATEGORIES``, under a strict
Content-Security-Policy, with the mouse and with the keyboard, at desktop and phone
width; and the bell's way to them. Screenshots go to ``$PUSH_PREFERENCES_SHOTS`` (a
temporary folder by default) for a person to look at.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, redirect, session
from flask_sqlalchemy import SQLAlchemy
from werkzeug.serving import make_server

from flask_push import Push

pytest.importorskip("playwright.sync_api")
pytest.importorskip("dbus_next")

from playwright.sync_api import expect  # noqa: E402

from browser_kit import Browser, chromium, off_loop  # noqa: E402
from conftest import close_app  # noqa: E402

db = SQLAlchemy()
push = Push(db=db)


@push.identity_loader
def _identity() -> str | None:
    return session.get("user_id")


CATEGORIES = {
    "order_status": {"label": "Order updates", "required": True},
    "offers": {"label": "Offers and deals", "default": True, "max_per_day": 2},
    "shares": {"label": "Things friends share", "channels": ["web", "inbox"]},
    "news": {"label": "News", "default": False},
}
# As strict as a careful host's: files only, no inline script or style.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self'"
)
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Your notifications</title><link rel="stylesheet" href="/page.css"></head>
<body><header><strong>Shop</strong><div id="bell"></div></header>
<main><h1>Notifications</h1><div id="prefs"></div></main>
<script src="/push/static/flask-push.js"></script><script src="/page.js"></script>
</body></html>"""
PAGE_CSS = """body { margin: 0; font-family: system-ui, sans-serif; background: #f6f8fa; }
header { display: flex; justify-content: space-between; align-items: center;
  padding: 8px 20px; background: #fff; border-bottom: 1px solid #d0d7de; }
main { max-width: 640px; margin: 0 auto; padding: 8px 16px 24px; }"""
# the page's own script (no inline script may run): the settings where it has a place
# for them; the bell is started by the tests that want it
PAGE_JS = """const place = document.getElementById('prefs');
if (place.dataset.start !== 'no') window.prefs = FlaskPush.preferences(place);"""
RECORD = """window.violations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});"""
WIDTHS = {"desktop": 1280, "phone": 390}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(tmp_path_factory.mktemp("preferences-browser")) as session:
        yield session


class Live:
    """The app served on a port of its own (its own origin)."""

    def __init__(self, app: Flask, port: int) -> None:
        self.app = app
        self.origin = f"http://localhost:{port}"

    def preferences(self, user: str) -> Any:
        """What ``GET /preferences`` answers ``user``."""
        client = self.app.test_client()
        with client.session_transaction() as cookie:
            cookie["user_id"] = user
        response = client.get("/push/preferences")
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def channels(self, user: str) -> dict[str, dict[str, bool]]:
        return {c["id"]: c["channels"] for c in self.preferences(user)["categories"]}


@pytest.fixture
def live(tmp_path: Path, vapid_private_key: str) -> Iterator[Live]:
    with served(tmp_path, vapid_private_key, CATEGORIES) as app:
        yield app


@pytest.fixture
def live_without_categories(tmp_path: Path, vapid_private_key: str) -> Iterator[Live]:
    """An app whose users have nothing to choose: no ``PUSH_CATEGORIES``."""
    with served(tmp_path, vapid_private_key, {}) as app:
        yield app


@contextmanager
def served(tmp_path: Path, vapid_private_key: str, categories: dict[str, Any]) -> Iterator[Live]:
    """The app with ``categories``, served on a port of its own until the block ends."""
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        SECRET_KEY="preferences-browser-tests",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
        PUSH_VAPID_PRIVATE_KEY=vapid_private_key,
        PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
        PUSH_CATEGORIES=categories,
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
    @app.get("/account/notifications")
    def page() -> Any:
        return PAGE, 200, {"Content-Security-Policy": CSP}

    files = {
        "/page.css": (PAGE_CSS, "text/css"),
        "/page.js": (PAGE_JS, "text/javascript"),
        "/favicon.ico": ("", "image/x-icon"),  # else its 404 is a console error
    }
    for path, (text, mimetype) in files.items():
        app.add_url_rule(
            path, path, lambda text=text, mimetype=mimetype: Response(text, mimetype=mimetype)
        )

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Live(app, server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        off_loop(lambda: close_app(app))


@pytest.fixture
def page(browser: Browser) -> Iterator[Any]:
    # cookies go by host, not port: the last test's sign-in would hold on every origin
    browser.context.clear_cookies()
    page = browser.context.new_page()
    page.add_init_script(RECORD)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.console_errors = errors
    yield page
    page.close()


def open_settings(page: Any, live: Live, user: str, time_zone: str | None = None) -> Any:
    """Sign ``user`` in and open the page with the settings on it, in ``time_zone``
    (the browser's own, as CDP's Emulation sets it). Returns the CDP session, which
    must stay open for the zone to hold."""
    cdp = page.context.new_cdp_session(page)
    if time_zone:
        cdp.send("Emulation.setTimezoneOverride", {"timezoneId": time_zone})
    page.goto(f"{live.origin}/login/{user}")
    page.evaluate("window.prefs.ready")
    expect(page.locator(".fp-prefs-form")).to_be_visible()
    return cdp


def box(page: Any, category: str, label: str) -> Any:
    """The checkbox of a channel, found as a person finds it: by its group and words."""
    group = page.get_by_role("group", name=category)
    return group.get_by_role("checkbox", name=label, exact=True)


def save(page: Any) -> None:
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")


def test_each_category_shows_its_channels_and_a_channel_turned_off_is_saved(
    browser: Browser, page: Any, live: Live
) -> None:
    open_settings(page, live, "alice")
    legends = page.locator(".fp-prefs-group legend").all_inner_texts()
    assert [" ".join(text.split()) for text in legends] == [
        "Order updates Always on",
        "Offers and deals",
        "Things friends share",
        "News",
        "Quiet hours",
    ]
    # only the channels the category lets the user choose, in plain words
    labels = """(group) => [...group.querySelectorAll('.fp-check')].map((l) => l.textContent)"""
    shares = page.locator(".fp-prefs-group[data-category=shares]")
    assert shares.evaluate(labels) == ["Browser", "Inbox"]
    offers = page.locator(".fp-prefs-group[data-category=offers]")
    assert offers.evaluate(labels) == ["Browser", "Phone app", "Inbox"]
    # a category that starts off (consent first) shows so
    for channel in ("Browser", "Phone app", "Inbox"):
        expect(box(page, "News", channel)).not_to_be_checked()
        expect(box(page, "Offers and deals", channel)).to_be_checked()

    box(page, "Offers and deals", "Browser").click()
    save(page)
    assert live.channels("alice") == {
        "order_status": {"web": True, "mobile": True, "inbox": True},
        "offers": {"web": False, "mobile": True, "inbox": True},
        "shares": {"web": True, "inbox": True},
        "news": {"web": False, "mobile": False, "inbox": False},
    }
    # and it is what the page shows when opened again
    page.reload()
    page.evaluate("window.prefs.ready")
    expect(box(page, "Offers and deals", "Browser")).not_to_be_checked()
    expect(box(page, "Offers and deals", "Phone app")).to_be_checked()
    # a click on the words toggles the box too; nothing changed says so
    page.locator(".fp-prefs-group[data-category=news] .fp-check", has_text="Inbox").click()
    expect(box(page, "News", "Inbox")).to_be_checked()
    save(page)
    assert live.channels("alice")["news"] == {"web": False, "mobile": False, "inbox": True}
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("No changes to save.")


def test_a_required_category_is_shown_on_and_cannot_be_turned_off(
    browser: Browser, page: Any, live: Live
) -> None:
    open_settings(page, live, "bob")
    group = page.get_by_role("group", name="Order updates Always on")
    expect(group.locator(".fp-prefs-always")).to_have_text("Always on")
    boxes = group.get_by_role("checkbox")
    assert boxes.count() == 3
    for each in boxes.all():
        expect(each).to_be_checked()
        expect(each).to_be_disabled()
    boxes.first.click(force=True)  # a disabled box ignores the click
    expect(boxes.first).to_be_checked()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("No changes to save.")
    assert live.channels("bob")["order_status"] == {"web": True, "mobile": True, "inbox": True}


def test_quiet_hours_promise_the_inbox_only_what_it_lets_in(
    browser: Browser, page: Any, live: Live
) -> None:
    # a category whose inbox is off writes no inbox item, in quiet hours or not
    open_settings(page, live, "mia")
    on = page.get_by_role("checkbox", name="Hold push notifications during quiet hours")
    expect(on).to_have_accessible_description(
        "They arrive when quiet hours end, except those that are always on. "
        "What you let into your inbox still arrives there at once."
    )


def test_quiet_hours_propose_the_browsers_time_zone_and_are_saved(
    browser: Browser, page: Any, live: Live
) -> None:
    # Auckland is the browser's (CDP's Emulation), not the server's or the machine's:
    # the server never heard of it until the page sends it
    cdp = open_settings(page, live, "carol", time_zone="Pacific/Auckland")
    assert live.preferences("carol")["quietHours"] is None
    on = page.get_by_role("checkbox", name="Hold push notifications during quiet hours")
    start = page.get_by_label("From")
    end = page.get_by_label("Until")
    zone = page.get_by_label("Time zone")
    expect(on).not_to_be_checked()
    for field in (start, end, zone):
        expect(field).to_be_disabled()  # until quiet hours are turned on
    # a <select> of the zones the browser knows, with its own chosen
    assert zone.evaluate("(z) => z.tagName") == "SELECT"
    expect(zone).to_have_value("Pacific/Auckland")

    on.check()
    expect(zone).to_be_enabled()
    start.fill("21:30")
    end.fill("06:45")
    save(page)
    assert live.preferences("carol")["quietHours"] == {
        "start": "21:30",
        "end": "06:45",
        "timeZone": "Pacific/Auckland",
    }

    # another zone, chosen from the list
    zone.select_option("Europe/Berlin")
    save(page)
    assert live.preferences("carol")["quietHours"]["timeZone"] == "Europe/Berlin"
    # opened again, the saved zone is shown, not the browser's
    page.reload()
    page.evaluate("window.prefs.ready")
    expect(page.get_by_label("Time zone")).to_have_value("Europe/Berlin")
    expect(page.get_by_label("From")).to_have_value("21:30")

    # turned off: none
    page.get_by_role("checkbox", name="Hold push notifications during quiet hours").uncheck()
    save(page)
    assert live.preferences("carol")["quietHours"] is None
    cdp.detach()


def test_a_browser_that_cannot_list_zones_gets_a_text_field_with_its_own(
    browser: Browser, page: Any, live: Live
) -> None:
    page.add_init_script("delete Intl.supportedValuesOf;")
    cdp = open_settings(page, live, "dora", time_zone="America/Argentina/Buenos_Aires")
    zone = page.get_by_label("Time zone")
    assert zone.evaluate("(z) => [z.tagName, z.type]") == ["INPUT", "text"]
    # Chromium names this zone by its older alias, as the server's tz database also does
    own = page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    assert own in ("America/Argentina/Buenos_Aires", "America/Buenos_Aires")
    expect(zone).to_have_value(own)
    page.get_by_role("checkbox", name="Hold push notifications during quiet hours").check()
    save(page)
    assert live.preferences("dora")["quietHours"]["timeZone"] == own
    cdp.detach()


def test_a_refused_change_shows_the_servers_message_by_its_field_and_changes_nothing(
    browser: Browser, page: Any, live: Live
) -> None:
    page.add_init_script("delete Intl.supportedValuesOf;")  # a zone may be typed
    cdp = open_settings(page, live, "erin", time_zone="Europe/Paris")
    before = live.preferences("erin")
    box(page, "Offers and deals", "Phone app").uncheck()
    page.get_by_role("checkbox", name="Hold push notifications during quiet hours").check()
    zone = page.get_by_label("Time zone")
    zone.fill("Mars/Olympus_Mons")
    page.get_by_role("button", name="Save").click()

    # next to the time zone, announced, the field marked and focused
    error = page.locator(".fp-prefs-field", has=zone).get_by_role("alert")
    expect(error).to_be_visible()
    message = error.inner_text()
    assert "Mars/Olympus_Mons" in message and "time zone" in message, message
    assert message[0].isupper()
    expect(zone).to_have_attribute("aria-invalid", "true")
    assert zone.evaluate("(z) => z.getAttribute('aria-describedby').split(' ')") == [
        error.get_attribute("id")
    ]
    expect(zone).to_be_focused()
    expect(page.get_by_role("status")).to_have_text("")
    # what the user typed and chose stays; the server changed nothing, the channel included
    expect(zone).to_have_value("Mars/Olympus_Mons")
    expect(box(page, "Offers and deals", "Phone app")).not_to_be_checked()
    assert live.preferences("erin") == before

    # a window that is no window: its message by "Until"
    zone.fill("Europe/Paris")
    page.get_by_label("From").fill("22:00")
    page.get_by_label("Until").fill("22:00")
    page.get_by_role("button", name="Save").click()
    until = page.locator(".fp-prefs-field", has=page.get_by_label("Until")).get_by_role("alert")
    expect(until).to_be_visible()
    expect(error).to_be_hidden()  # the earlier error went with the next try
    expect(zone).not_to_have_attribute("aria-invalid", "true")
    assert live.preferences("erin") == before

    # put right, it saves, and the errors go
    page.get_by_label("Until").fill("07:00")
    save(page)
    expect(page.locator(".fp-prefs-error:visible")).to_have_count(0)
    assert live.preferences("erin")["quietHours"] == {
        "start": "22:00",
        "end": "07:00",
        "timeZone": "Europe/Paris",
    }
    assert live.channels("erin")["offers"]["mobile"] is False
    cdp.detach()


def test_the_keyboard_reaches_every_choice_and_space_toggles_it(
    browser: Browser, page: Any, live: Live
) -> None:
    open_settings(page, live, "fred")
    page.locator("h1").click()  # start from the page, before the settings
    focused = """() => {
      const el = document.activeElement;
      const group = el.closest('fieldset');
      return [group ? group.querySelector('legend').textContent : '', el.type || el.tagName,
              el.labels && el.labels.length ? el.labels[0].textContent : el.textContent];
    }"""
    seen = []
    for _ in range(20):
        page.keyboard.press("Tab")
        seen.append(page.evaluate(focused))
        if seen[-1][2] == "Save":
            break
    assert seen == [
        # the required category's boxes are disabled: the keyboard passes them by
        ["Offers and deals", "checkbox", "Browser"],
        ["Offers and deals", "checkbox", "Phone app"],
        ["Offers and deals", "checkbox", "Inbox"],
        ["Things friends share", "checkbox", "Browser"],
        ["Things friends share", "checkbox", "Inbox"],
        ["News", "checkbox", "Browser"],
        ["News", "checkbox", "Phone app"],
        ["News", "checkbox", "Inbox"],
        ["Quiet hours", "checkbox", "Hold push notifications during quiet hours"],
        # the times are disabled until quiet hours are on
        ["", "submit", "Save"],
    ]
    # back to News → Browser, Space turns it on; its focus is visible
    for _ in range(4):
        page.keyboard.press("Shift+Tab")
    news = box(page, "News", "Browser")
    expect(news).to_be_focused()
    outline = news.evaluate("(b) => getComputedStyle(b).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Space")
    expect(news).to_be_checked()
    # quiet hours on with Space opens the times to the keyboard
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    expect(page.get_by_label("From")).to_be_focused()
    # Enter in a field saves the form
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Saved.")
    saved = live.preferences("fred")
    assert {c["id"]: c["channels"] for c in saved["categories"]}["news"]["web"] is True
    assert saved["quietHours"]["start"] == "22:00"


def test_the_settings_work_under_a_strict_content_security_policy(
    browser: Browser, page: Any, live: Live
) -> None:
    open_settings(page, live, "gina")
    # styled by the stylesheet file the client links, which the policy allows
    group = page.locator(".fp-prefs-group").first
    assert group.evaluate("(g) => getComputedStyle(g).borderRadius") == "10px"
    box(page, "Things friends share", "Inbox").uncheck()
    page.get_by_role("checkbox", name="Hold push notifications during quiet hours").check()
    save(page)
    assert live.channels("gina")["shares"] == {"web": True, "inbox": False}
    assert page.evaluate("window.violations") == []
    assert page.console_errors == []


def test_a_visitor_not_signed_in_is_told_why_and_may_try_again(
    browser: Browser, page: Any, live: Live
) -> None:
    page.goto(f"{live.origin}/")
    assert page.evaluate("window.prefs.ready") is None
    alert = page.locator("#prefs").get_by_role("alert")
    expect(alert).to_have_text(
        "Your notification settings could not be loaded: Sign in first: this endpoint needs a user."
    )
    # signed in meanwhile (in another tab), Try again shows them
    page.context.request.get(f"{live.origin}/login/kate")
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("group", name="Offers and deals")).to_be_visible()
    assert page.evaluate("window.violations") == []


def start_bell(page: Any, options: dict[str, Any] | None = None) -> None:
    page.evaluate(
        "(options) => (window.bell = FlaskPush.bell(document.getElementById('bell'), options))"
        ".ready",
        options or {},
    )


def test_the_bells_menu_opens_the_settings_in_a_dialog(
    browser: Browser, page: Any, live: Live
) -> None:
    open_settings(page, live, "hank")
    start_bell(page)
    page.locator(".fp-bell-button").click()
    link = page.locator(".fp-panel").get_by_role("button", name="Notification settings")
    link.click()
    dialog = page.get_by_role("dialog", name="Notification settings")
    expect(dialog).to_be_visible()
    assert dialog.evaluate("(d) => d.matches(':modal')")
    expect(page.locator(".fp-panel")).to_be_hidden()  # the menu made way
    dialog.get_by_role("group", name="News").get_by_role("checkbox", name="Inbox").check()
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.get_by_role("status")).to_have_text("Saved.")
    assert live.channels("hank")["news"]["inbox"] is True

    # Escape closes it, and the focus goes back to the bell
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator(".fp-bell-button")).to_be_focused()
    # opened again, it reads the server anew (a change made elsewhere shows)
    client = live.app.test_client()
    with client.session_transaction() as cookie:
        cookie["user_id"] = "hank"
    client.patch("/push/preferences", json={"categories": {"news": {"web": True}}})
    page.locator(".fp-bell-button").click()
    link.click()
    news_web = dialog.get_by_role("group", name="News").get_by_role("checkbox", name="Browser")
    expect(news_web).to_be_checked()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    assert page.evaluate("window.violations") == []
    assert page.console_errors == []


def test_the_bells_menu_links_to_the_hosts_settings_page(
    browser: Browser, page: Any, live: Live
) -> None:
    open_settings(page, live, "ivy")
    start_bell(page, {"preferencesUrl": "/account/notifications"})
    page.locator(".fp-bell-button").click()
    link = page.locator(".fp-panel").get_by_role("link", name="Notification settings")
    expect(link).to_have_attribute("href", "/account/notifications")
    link.click()
    page.wait_for_url(f"{live.origin}/account/notifications")


def test_the_bell_is_ready_while_its_settings_entry_waits_for_the_preferences(
    browser: Browser, page: Any, live: Live
) -> None:
    """A server slow to answer ``GET /preferences`` holds back only the menu's
    "Notification settings", which shows once the answer comes: the bell's ``ready``
    (its items and count) does not wait for it."""
    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append(route)  # answered at the end, not before

    page.route("**/push/preferences", hold)
    page.goto(f"{live.origin}/login/nina")
    page.evaluate(
        """() => {
             window.bell = FlaskPush.bell(document.getElementById('bell'));
             window.bellReady = false;
             window.bell.ready.then(() => { window.bellReady = true; });
           }"""
    )
    page.wait_for_function("() => window.bellReady")
    while len(held) < 2:  # the page's own read and the bell's, both still unanswered
        page.wait_for_timeout(20)
    page.locator(".fp-bell-button").click()
    expect(page.locator(".fp-panel").get_by_role("button", name="See all")).to_be_visible()
    expect(page.locator(".fp-show-settings")).to_be_hidden()
    for route in held:
        route.fulfill(response=route.fetch())
    settings = page.locator(".fp-panel").get_by_role("button", name="Notification settings")
    expect(settings).to_be_visible()
    assert page.console_errors == []


def test_the_bell_offers_no_settings_when_there_is_nothing_to_choose(
    browser: Browser, page: Any, live_without_categories: Live
) -> None:
    live = live_without_categories
    page.goto(f"{live.origin}/login/kim")
    for options in ({}, {"preferencesUrl": "/account/notifications"}):
        page.goto(f"{live.origin}/")
        page.evaluate("window.prefs.ready")  # the page's own read is done
        # the bell's `ready` does not wait for its read of the preferences: wait for
        # the answer, and for a read the page sends after it, so the bell has used it
        with page.expect_response(lambda r: r.url.endswith("/push/preferences")) as read:
            start_bell(page, options)
        read.value.finished()
        page.evaluate("FlaskPush.api('GET', '/preferences')")
        page.locator(".fp-bell-button").click()
        expect(page.locator(".fp-panel").get_by_role("button", name="See all")).to_be_visible()
        # not a way to "There are no notifications to choose from"
        expect(page.locator(".fp-show-settings")).to_have_count(1)
        expect(page.locator(".fp-show-settings")).to_be_hidden()
    assert page.console_errors == []


def test_a_bell_told_there_are_no_settings_offers_none(
    browser: Browser, page: Any, live: Live
) -> None:
    open_settings(page, live, "lea")
    start_bell(page, {"preferencesUrl": False})
    page.locator(".fp-bell-button").click()
    expect(page.locator(".fp-panel").get_by_role("button", name="See all")).to_be_visible()
    expect(page.locator(".fp-show-settings")).to_have_count(0)


def shots() -> Path:
    default = Path(tempfile.gettempdir()) / "flask-push-preferences-shots"
    folder = Path(os.environ.get("PUSH_PREFERENCES_SHOTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fits(page: Any) -> list[int]:
    widths: list[int] = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    return widths


@pytest.mark.parametrize("width", WIDTHS.values(), ids=WIDTHS.keys())
def test_screenshots_at_desktop_and_phone_width(
    browser: Browser, page: Any, live: Live, width: int
) -> None:
    """What a person sees (look at them): the settings with an error showing, then
    saved, and the bell's dialog; no horizontal scroll at either width."""
    page.set_viewport_size({"width": width, "height": 900})
    open_settings(page, live, "jack", time_zone="America/Argentina/Buenos_Aires")
    box(page, "Offers and deals", "Phone app").uncheck()
    page.get_by_role("checkbox", name="Hold push notifications during quiet hours").check()
    page.get_by_label("Until").fill("22:00")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert").filter(has_text="start")).to_be_visible()
    scroll, inner = fits(page)
    assert scroll <= inner
    page.screenshot(path=str(shots() / f"preferences-error-{width}.png"), full_page=True)
    page.get_by_label("Until").fill("07:00")
    save(page)
    page.screenshot(path=str(shots() / f"preferences-saved-{width}.png"), full_page=True)

    start_bell(page)
    page.locator(".fp-bell-button").click()
    page.screenshot(path=str(shots() / f"bell-menu-{width}.png"))
    page.locator(".fp-show-settings").click()
    dialog = page.get_by_role("dialog", name="Notification settings")
    expect(dialog.locator(".fp-prefs-form")).to_be_visible()
    left, right = dialog.evaluate(
        "(d) => [d.getBoundingClientRect().left, d.getBoundingClientRect().right]"
    )
    assert 0 <= left and right <= width
    scroll, inner = fits(page)
    assert scroll <= inner
    page.screenshot(path=str(shots() / f"bell-settings-{width}.png"))
    assert page.evaluate("window.violations") == []


# every control a pointer can aim at in the bell's menu or its history, as
# [its words, width, height] (a JavaScript expression)
TARGETS = """(selector) => [...document.querySelectorAll(selector)]
  .filter((e) => e.checkVisibility())
  .map((e) => {
    const box = e.getBoundingClientRect();
    return [e.textContent.trim() || e.getAttribute('aria-label'), box.width, box.height];
  })"""
CONTROLS = ":is(button, a[href], input, select, [tabindex])"


@pytest.mark.parametrize("width", WIDTHS.values(), ids=WIDTHS.keys())
def test_every_control_of_the_bell_is_a_target_of_24_pixels_at_least(
    browser: Browser, page: Any, live: Live, width: int
) -> None:
    """WCAG 2.2's Target Size (Minimum), 2.5.8: 24 by 24 CSS pixels, for the menu's
    text buttons and link too, and the history's; look at the screenshots."""
    page.set_viewport_size({"width": width, "height": 900})
    with live.app.app_context():
        for n in range(3):
            push.upsert("olga", notify_type="info", title=f"Offer {n}", body="20% off")
    page.goto(f"{live.origin}/login/olga")
    for options in ({"historyTake": 2}, {"preferencesUrl": "/account/notifications"}):
        page.goto(f"{live.origin}/")
        start_bell(page, options)
        page.locator(".fp-bell-button").click()
        expect(page.locator(".fp-show-settings")).to_be_visible()
        targets = page.evaluate(TARGETS, f".fp-bell-button, .fp-panel {CONTROLS}")
        words = [each[0] for each in targets]
        for name in ("Mark all as read", "See all", "Notification settings", "Offer 0"):
            assert any(name in said for said in words), words
        assert [each for each in targets if min(each[1:]) < 24] == []
        kind = "link" if "preferencesUrl" in options else "button"
        page.screenshot(path=str(shots() / f"bell-targets-{kind}-{width}.png"))
    page.goto(f"{live.origin}/")
    start_bell(page, {"historyTake": 2})
    page.locator(".fp-bell-button").click()
    page.locator(".fp-show-history").click()
    expect(page.locator(".fp-show-older")).to_be_visible()
    targets = page.evaluate(TARGETS, f".fp-history {CONTROLS}")
    assert {"Close", "Show older"} <= {each[0] for each in targets}
    assert [each for each in targets if min(each[1:]) < 24] == []
    page.screenshot(path=str(shots() / f"bell-targets-history-{width}.png"))
