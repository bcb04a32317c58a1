"""The operator console in real Chromium: an admin opens every page at desktop and
phone width (no horizontal scroll, no Content-Security-Policy violation), cancels a
scheduled message, retries what failed, previews and sends a test push that the
FakePushService receives. Screenshots go to ``$PUSH_CONSOLE_SHOTS`` (a temporary
folder by default) for a person to look at."""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect
from werkzeug.serving import make_server

from flask_push.schemas.fields import MAX_LINK, MAX_TEXT
from flask_push.schemas.inbox import MAX_BODY
from flask_push.testing import FakeFCM, FakePushService

from browser_kit import TIMEOUT_MS, Browser, chromium, off_loop
from conftest import db, push, tear_down

ADMIN_HEADERS = {"X-User": "ops", "X-Admin": "1"}
CONSOLE = "/push/console"
WIDTHS = {"desktop": 1280, "phone": 390}
RECORD = """window.violations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});"""
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:133.0) Gecko/20100101 Firefox/133.0"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(tmp_path_factory.mktemp("console-browser")) as session:
        yield session


@pytest.fixture
def page(browser: Browser) -> Iterator[Any]:
    page = browser.context.new_page()
    page.set_extra_http_headers(ADMIN_HEADERS)
    page.add_init_script(RECORD)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.console_errors = errors
    yield page
    page.close()


class Console:
    """A served app with data: messages with sent, failed, gone and retrying
    deliveries, a user with a dead browser and a live phone, a scheduled message."""

    def __init__(self, app: Flask, port: int, service: FakePushService) -> None:
        self.app, self.service = app, service
        self.origin = f"http://localhost:{port}"
        self.ids: dict[str, str] = {}
        self.subscribers: dict[str, Any] = {}

    def url(self, path: str = "/") -> str:
        return f"{self.origin}{CONSOLE}{path}"


def subscribe(console: Console, user: str, agent: str = CHROME_LINUX) -> Any:
    """A browser of ``user`` at the FakePushService, registered (in an app context;
    the caller commits)."""
    subscriber = console.service.subscribe(user)
    db.session.add(
        push.models.Subscription(
            endpoint=subscriber.endpoint,
            p256dh=subscriber.p256dh,
            auth=subscriber.auth,
            user_id=user,
            topics=[],
            user_agent=agent,
        )
    )
    return subscriber


def _seed(console: Console, fcm: FakeFCM) -> None:
    service = console.service
    with console.app.app_context():
        for user, agent in (
            ("alice", CHROME_LINUX),
            ("bob", FIREFOX_MAC),
            ("carol", CHROME_LINUX),
            ("dave", CHROME_LINUX),
            ("erin", FIREFOX_MAC),
        ):
            console.subscribers[user] = subscribe(console, user, agent)
        db.session.add(
            push.models.Installation(
                app_id="shop",
                app_version="2.4.1",
                device_type="android",
                device_token="phone-" + "x" * 150,
                user_id="alice",
                subscriptions=[],
            )
        )
        db.session.commit()
        console.subscribers["alice"].expire()
        # carol's browser refuses the key (fixed since: a retry can help), erin's
        # refuses the payload as too large (as it does again on a retry)
        service.fail_next(403, subscriber=console.subscribers["carol"])
        service.fail_next(413, subscriber=console.subscribers["erin"], times=2)
        service.fail_next(503, subscriber=console.subscribers["dave"], retry_after=600)
        sale = push.send(
            users=["alice", "bob", "carol", "dave", "erin"],
            title="Spring sale: 30% off everything",
            body="Until Sunday midnight, on every order.",
            url="/sale",
        )
        shipped = push.send(users=["bob"], title="Your order #1042 has shipped", url="/orders/1042")
        later = push.send(
            users=["bob", "alice"],
            title="Reminder: your cart is waiting",
            send_at=datetime.now(timezone.utc) + timedelta(days=1),
        )
        # a live activity's state: a long state without a space must wrap on a phone
        push.activity("order-1042", users=["bob"], title="Order #1042", event="start")
        delivered = push.activity(
            "order-1042",
            users=["bob"],
            title="Order #1042",
            body="Delivered",
            event="end",
            state={"status": "delivered", "step": 5, "steps": 5, "proof": "x" * 120},
            dismiss_at=datetime.now(timezone.utc) + timedelta(hours=1),
        )
        console.ids.update(sale=sale.id, shipped=shipped.id, later=later.id, order=delivered.id)
        push.set_preferences(
            "alice",
            categories={"offers": {"web": False}},
            quiet_hours={"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"},
        )


@pytest.fixture
def console(
    tmp_path: Path,
    vapid_private_key: str,
    push_fake_webpush: FakePushService,
    push_fake_fcm: FakeFCM,
) -> Iterator[Console]:
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        SECRET_KEY="console-browser-tests",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
        PUSH_VAPID_PRIVATE_KEY=vapid_private_key,
        PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
        PUSH_FCM_CREDENTIALS=push_fake_fcm.service_account(),
        PUSH_FCM_BASE_URL=push_fake_fcm.base_url,
        PUSH_QUEUE="inline",
        PUSH_SUPPRESS_SEND=False,
        PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
        PUSH_CATEGORIES={
            "orders": {"label": "Order updates", "required": True},
            "offers": {"label": "Offers and deals", "max_per_day": 2, "channels": ["web"]},
        },
    )
    db.init_app(app)
    push.init_app(app)
    with app.app_context():
        db.create_all()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    served = Console(app, server.server_port, push_fake_webpush)
    try:
        # the inline queue runs an event loop: not in Playwright's thread
        off_loop(lambda: _seed(served, push_fake_fcm))
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        off_loop(lambda: tear_down(app))


def shots() -> Path:
    default = Path(tempfile.gettempdir()) / "flask-push-console-shots"
    folder = Path(os.environ.get("PUSH_CONSOLE_SHOTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_until(page: Any, script: str) -> None:
    """Poll ``script`` (a function) in the page; the strict CSP refuses string eval."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not page.evaluate(script):
        assert time.monotonic() < deadline, f"still false: {script}"
        page.wait_for_timeout(25)


def look(page: Any, name: str, width: int) -> None:
    """The page fits its width, broke no policy, logged no error; a screenshot of it."""
    # a page reached by a form's POST can be in the DOM before its stylesheet has
    # loaded, and measured unstyled its <pre> blocks are wider than a phone
    page.wait_for_load_state("load")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        name,
        width,
        page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]"),
    )
    assert page.evaluate("window.violations") == [], name
    assert page.console_errors == [], name
    # styled by the console's own stylesheet (a file, as the policy wants)
    assert page.evaluate("getComputedStyle(document.querySelector('.top')).display") == "flex"
    page.screenshot(path=str(shots() / f"{name}-{width}.png"), full_page=True)
    # a long page also in screen-sized parts, which stay readable when opened
    height = page.evaluate("document.documentElement.scrollHeight")
    for part, top in enumerate(range(0, height if height > 1600 else 0, 1200)):
        clip = {"x": 0, "y": top, "width": width, "height": min(1200, height - top)}
        page.screenshot(path=str(shots() / f"{name}-{width}-{part}.png"), clip=clip, full_page=True)


# the text of elements that reach past the right edge of the box they are in
SPILLED_OUT_OF = """(boxes) => [...document.querySelectorAll(boxes)].flatMap((box) => {
  const edge = box.getBoundingClientRect().right;
  return [...box.querySelectorAll('*')]
    .filter((el) => el.getBoundingClientRect().right > edge + 0.5)
    .map((el) => el.textContent);
})"""


def count(page: Any, status: str) -> int:
    return int(page.inner_text(f"#count-{status}"))


def test_every_page_at_desktop_and_phone_width(console: Console, page: Any) -> None:
    pages = {
        "overview": "/",
        "messages": "/messages",
        "message": f"/messages/{console.ids['sale']}",
        "activity": f"/messages/{console.ids['order']}",
        "user": "/users?id=alice",
        "providers": "/providers",
        "send": "/send",
    }
    for width in WIDTHS.values():
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in pages.items():
            page.goto(console.url(path))
            assert page.title().endswith("flask-push"), name
            # a way back to the app the console is part of, on every page
            assert page.get_attribute("a.site", "href") == "/", name
            if name == "message":
                for details in page.query_selector_all("details.timeline"):
                    details.evaluate("(d) => { d.open = true; }")
            if name == "send":
                page.fill("#send-user", "alice")
                page.fill("#send-title", "Back in stock: the blue kettle")
                page.fill("#send-body", "The one you asked about is back.")
                page.fill("#send-url", "/products/kettle")
                page.click("button[value=preview]")
                page.wait_for_selector("#preview-fcm pre")
            look(page, name, width)
            if name == "user":  # nothing spills out of a device's card (its two dates)
                assert page.evaluate(SPILLED_OUT_OF, ".target") == [], width
    # what the overview drew: a bar per provider, the dead browser of today
    page.goto(console.url("/"))
    assert page.locator("svg.bar rect.st-sent").count() == 2  # webpush and fcm
    assert "1" in page.inner_text(".tiles .tile:nth-child(3) .value")


def test_the_message_page_tells_each_targets_story(console: Console, page: Any) -> None:
    page.goto(console.url(f"/messages/{console.ids['sale']}"))
    assert count(page, "sent") == 2  # bob's browser and alice's phone
    assert count(page, "failed") == 2 and count(page, "gone") == 1 and count(page, "queued") == 1
    rows = page.locator("table.deliveries tbody tr").all_inner_texts()
    assert any("Chrome on Linux" in row and "gone" in row for row in rows)
    assert any("Firefox on macOS" in row and "sent" in row for row in rows)
    page.goto(console.url("/users?id=alice"))
    cards = page.locator(".target").all_inner_texts()
    assert any("dead" in card for card in cards) and any("active" in card for card in cards)
    # what she lets through: offers are off in browsers, by her choice
    rows = page.locator("table.choices tbody tr").all_inner_texts()
    assert [row.split()[:2] for row in rows] == [["Order", "updates"], ["Offers", "and"]]
    assert "off" in rows[1].split("24 hours")[1].split()[0]
    assert "22:00 to 07:00, Europe/Berlin" in page.inner_text(".choices + p")


def test_cancel_a_scheduled_message(console: Console, page: Any) -> None:
    page.goto(console.url(f"/messages/{console.ids['later']}"))
    assert count(page, "queued") == 2
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button.danger")
    page.wait_for_selector(".notice.good")
    assert count(page, "cancelled") == 2 and count(page, "queued") == 0
    assert page.is_disabled("button.danger")
    assert page.evaluate("window.violations") == []


def test_a_cancel_the_admin_declines_changes_nothing(console: Console, page: Any) -> None:
    page.goto(console.url(f"/messages/{console.ids['later']}"))
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("button.danger")
    page.reload()
    assert count(page, "queued") == 2


def test_retry_failed(console: Console, page: Any) -> None:
    page.goto(console.url(f"/messages/{console.ids['sale']}"))
    assert count(page, "failed") == 2
    assert page.inner_text("#retry-outlook") == (
        "A retry can help 1 of the 2 failed deliveries; 1 will fail the same way as it is "
        "(1 too large for the push service). The retry sends both again."
    )
    # carol's push service takes it this time; erin's refuses it as too large again
    page.click("text=Retry failed")
    page.wait_for_selector(".notice.good")
    console.subscribers["carol"].wait(1)
    page.reload()
    assert count(page, "failed") == 1 and count(page, "sent") == 3
    assert page.inner_text("#retry-outlook") == (
        "A retry cannot help: the failed delivery would fail the same way as it is (1 too "
        "large for the push service). Its sentence below says what to change; then send it "
        "again as a new message."
    )
    assert page.is_disabled("text=Retry failed")
    for width in WIDTHS.values():
        page.set_viewport_size({"width": width, "height": 900})
        look(page, "message-retry-futile", width)


def test_preview_then_send_a_test_push(console: Console, page: Any) -> None:
    page.goto(console.url("/users?id=bob"))
    page.click("text=Test send to this user")
    assert page.input_value("#send-user") == "bob"
    page.fill("#send-title", "Test from the console")
    page.fill("#send-body", "Does this arrive?")
    page.fill("#send-url", "/orders/1042")
    page.select_option("#send-urgency", "high")
    page.fill("#send-collapse", "order-1042")
    page.click("button[value=preview]")
    preview = page.inner_text("#preview-webpush pre")
    assert '"TTL": "86400"' in preview and '"Urgency": "high"' in preview
    assert '"Topic": "order-1042"' in preview
    assert '"title": "Test from the console"' in preview
    assert "no fcm target" in page.inner_text("#preview-fcm").lower()
    page.click("button[value=send]")
    page.wait_for_url(re.compile(r".*/messages/msg_\w+\?done=sent$"))
    bob = console.subscribers["bob"]
    received = bob.wait(3)  # the sale, the order, and this one
    assert received[-1].json()["title"] == "Test from the console"
    assert received[-1].json()["url"] == "/orders/1042"
    assert received[-1].urgency == "high" and received[-1].topic == "order-1042"
    page.reload()
    assert count(page, "sent") == 1
    assert page.evaluate("window.violations") == []


# the numbers ("17. ") that find no room left of a list's items: each set in the
# first item's font, against the list's left padding (where an outside marker goes)
MARKERS_CUT = """([list, numbers]) => numbers.filter((n) => {
  const probe = document.createElement('span');
  probe.textContent = `${n}. `;
  probe.style.whiteSpace = 'pre';
  list.firstElementChild.prepend(probe);
  const width = probe.getBoundingClientRect().width;
  probe.remove();
  return width > parseFloat(getComputedStyle(list).paddingLeft);
})"""


def test_a_long_timeline_keeps_its_numbers(console: Console, page: Any) -> None:
    def lengthen() -> None:
        with console.app.app_context():
            Delivery = push.models.Delivery
            delivery = db.session.scalars(
                db.select(Delivery).filter_by(message_id=console.ids["shipped"])
            ).one()
            at = "2026-05-01T10:00:00+00:00"
            events = [{"at": at, "what": "queued"}]
            events += [{"at": at, "what": "attempt", "detail": "503"} for _ in range(16)]
            delivery.events = events
            db.session.commit()

    off_loop(lengthen)
    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(console.url(f"/messages/{console.ids['shipped']}"))
        timeline = page.locator("details.timeline")
        timeline.evaluate("(d) => { d.open = true; }")
        items = timeline.locator("ol > li")
        assert items.count() == 17
        look(page, "long-timeline", width)
        # every number up to 17, and any of three digits, has room to be read whole
        numbers = [*range(1, 18), 100, 888, 999]
        ol = timeline.locator("ol").element_handle()
        assert page.evaluate(MARKERS_CUT, [ol, numbers]) == [], name


def test_a_long_user_id_wraps_in_every_table(console: Console, page: Any) -> None:
    """A user id of MAX_TEXT characters and no space, whose browser is found gone:
    the overview's dead targets and the message's deliveries keep to the page."""
    long_id = "customer-" + "7f3a9c" * ((MAX_TEXT - 9) // 6)

    def send() -> None:
        with console.app.app_context():
            subscriber = subscribe(console, long_id)
            db.session.commit()
            subscriber.expire()
            console.ids["long"] = push.send(users=[long_id], title="Your basket").id

    off_loop(send)
    for width in WIDTHS.values():
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in (("overview", "/"), ("message", f"/messages/{console.ids['long']}")):
            page.goto(console.url(path))
            assert page.locator(f"table.cards a:text-is('{long_id}')").count() == 1
            look(page, f"long-user-{name}", width)
            # a phone's card hides what passes its edge rather than scroll
            assert page.evaluate(SPILLED_OUT_OF, "table.cards tbody tr") == [], (name, width)


BAD_REQUEST = "the server responded with a status of 400 (BAD REQUEST)"
NO_CLIPBOARD = "Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined });"


def test_copy_says_what_became_of_the_copy(console: Console, page: Any) -> None:
    """The preview's Copy puts the request on the clipboard and says so; where the
    browser gives no clipboard (a console served over plain HTTP), it selects the
    text and says to copy it by hand, rather than do nothing."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.origin)
    preview = console.url("/send?user=bob&title=Copy%20me")
    page.set_viewport_size({"width": WIDTHS["phone"], "height": 900})
    for clipboard in (True, False):
        if not clipboard:
            page.add_init_script(NO_CLIPBOARD)
        page.goto(preview)
        page.click("button[value=preview]")
        block = page.inner_text("#preview-webpush pre")
        page.click("button[aria-label='Copy the webpush request']")
        status = page.locator("#preview-webpush [role=status]")
        if clipboard:
            expect(status).to_have_text("Copied.", timeout=TIMEOUT_MS)
            assert page.evaluate("navigator.clipboard.readText()") == block
        else:
            expect(status).to_contain_text("copy it with Ctrl+C", timeout=TIMEOUT_MS)
            assert page.evaluate("String(window.getSelection())") == block
            look(page, "copy-by-hand", WIDTHS["phone"])


def test_the_send_forms_limits_are_the_apis(console: Console, page: Any) -> None:
    """The browser stops what the API would refuse: each input's maxlength is the
    API's own limit, read from its schema, not a number typed into the page."""
    page.goto(console.url("/send"))
    limits = page.eval_on_selector_all(
        "#send-user, #send-title, #send-url, #send-body, #send-collapse",
        "(inputs) => inputs.map((input) => [input.id, input.maxLength])",
    )
    assert dict(limits) == {
        "send-user": MAX_TEXT,
        "send-title": MAX_TEXT,
        "send-url": MAX_LINK,
        "send-body": MAX_BODY,
        "send-collapse": MAX_TEXT,
    }


def test_a_send_form_error_names_the_field_as_labelled_and_focuses_it(
    console: Console, page: Any
) -> None:
    """The test send's errors name a field by its label (not the API's ``id`` or
    ``collapseKey``), and the keyboard lands on the field to correct."""
    cases = {
        "send-url": ("javascript:alert(1)", "URL opened on click: must be a path such as"),
        "send-body": ("x" * 4001, "Body: must be at most 4000 characters"),
        # a preview of it says nothing goes out: the send refuses it
        "send-target": ("sub_nope", "One subscription or installation id: is not the id of"),
    }
    for width in WIDTHS.values():
        page.set_viewport_size({"width": width, "height": 900})
        for field, (value, said) in cases.items():
            page.goto(console.url("/send"))
            page.fill("#send-title", "Hello")
            if field != "send-target":
                page.fill("#send-user", "bob")
            # the form's maxlength (the API's own limit) stops a long body in the
            # browser; the server still names the field for a client without it
            page.eval_on_selector(f"#{field}", "(input) => input.removeAttribute('maxlength')")
            page.fill(f"#{field}", value)
            page.click("button[value=send]" if field == "send-target" else "button[value=preview]")
            expect(page.locator("#send-error")).to_contain_text(said, timeout=TIMEOUT_MS)
            # autofocus is applied at the page's next rendering, not with its DOM
            expect(page.locator(f"#{field}")).to_be_focused(timeout=TIMEOUT_MS)
            assert page.get_attribute(f"#{field}", "aria-invalid") == "true"
            assert page.get_attribute(f"#{field}", "aria-describedby") == "send-error"
            # the page answered 400, which Chromium logs as a resource that failed
            assert page.console_errors == [f"Failed to load resource: {BAD_REQUEST}"]
            page.console_errors.clear()
            look(page, f"send-error-{field}", width)


#: each nav link focused by the keyboard: the sides its focus ring is cut on by the
#: nearest ancestor that clips (the nav's row scrolls sideways on a phone)
NAV_RINGS = """async () => {
  const cut = {};
  for (const link of document.querySelectorAll('.top nav a')) {
    link.focus();
    const style = getComputedStyle(link);
    const grow = parseFloat(style.outlineOffset) + parseFloat(style.outlineWidth);
    const box = link.getBoundingClientRect();
    let sides = style.outlineStyle === 'none' || !link.matches(':focus-visible') ? ['none'] : [];
    for (let up = link.parentElement; up && !sides.length; up = up.parentElement) {
      const clip = getComputedStyle(up);
      if (clip.overflowY === 'visible') continue;
      const frame = up.getBoundingClientRect();
      if (box.top - grow < frame.top - 0.5) sides.push('top');
      if (box.bottom + grow > frame.bottom + 0.5) sides.push('bottom');
    }
    if (sides.length) cut[link.textContent.trim()] = sides.join(', ');
  }
  return cut;
}"""


def test_the_nav_shows_its_focus_ring_whole(console: Console, page: Any) -> None:
    """On a phone the nav's row scrolls sideways, so it clips: the focused link's
    ring was cut at its top and bottom (on the current page's white tab only a
    sliver of one side showed). The ring is drawn inside the link, at both widths."""
    for width in WIDTHS.values():
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(console.url("/"))
        page.keyboard.press("Tab")  # the keyboard was used: focus() now shows its ring
        assert page.evaluate(NAV_RINGS) == {}, width
        page.locator(".top nav a[aria-current=page]").focus()
        look(page, "nav-focus", width)
