"""The operator console through Flask's test client: who sees it, its headers, its
CSRF guard, escaping, the test send's preview and the providers page. Real Chromium
drives it in tests/test_console_browser.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from html import unescape
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from flask_push.console import guard
from flask_push.testing import FakePushService

from conftest import (
    add_subscription,
    as_user,
    db,
    later,
    make_due,
    pem,
    push,
    quiet_now,
    service_account,
    subscribe,
)

SECRET = "console-test-secret"
ADMIN = as_user("ops", admin=True)
CONSOLE = "/push/console"
PAGES = ("/", "/messages", "/users", "/users?id=alice", "/send", "/providers")
EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def console_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(SECRET_KEY=SECRET)


def csrf(client: Any, path: str = "/send") -> str:
    """The CSRF token of a console page's form (the client keeps the cookie)."""
    page = client.get(CONSOLE + path, headers=ADMIN)
    assert page.status_code == 200, page.get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert found is not None
    return found.group(1)


def later_message(app: Flask, title: str = "Tomorrow's sale") -> str:
    """A message to alice's browser, scheduled for tomorrow: its delivery is queued."""
    with app.app_context():
        add_subscription("alice", user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0")
        send_at = datetime.now(timezone.utc) + timedelta(days=1)
        return str(push.send(users=["alice"], title=title, send_at=send_at).id)


def test_only_admins_see_it(console_app: Flask) -> None:
    client = console_app.test_client()
    unknown = client.get(f"{CONSOLE}/no-such-page", headers=as_user("alice"))
    assert unknown.status_code == 404
    for who in (as_user(None), as_user("alice")):
        for path in PAGES:
            answer = client.get(CONSOLE + path, headers=who)
            # exactly what an unknown path under the prefix answers: nothing to see
            assert answer.status_code == 404, path
            assert answer.get_json() == unknown.get_json()
            assert sorted(answer.headers) == sorted(unknown.headers), path
        static = client.get(f"{CONSOLE}/static/console.css", headers=who)
        assert static.status_code == 404
    id = later_message(console_app)
    refused = client.post(f"{CONSOLE}/messages/{id}/cancel", headers=as_user("alice"))
    assert refused.status_code == 404
    # a wrong method says nothing either
    for method, path in (("GET", f"/messages/{id}/cancel"), ("POST", "/"), ("PUT", "/send")):
        wrong = client.open(CONSOLE + path, method=method, headers=as_user("alice"))
        assert wrong.status_code == 404 and wrong.get_json() == unknown.get_json(), path
    assert client.post(f"{CONSOLE}/", headers=ADMIN).status_code == 405
    for path in PAGES:
        assert client.get(CONSOLE + path, headers=ADMIN).status_code == 200, path
    css = client.get(f"{CONSOLE}/static/console.css", headers=ADMIN)
    assert css.status_code == 200 and css.content_type.startswith("text/css")


def test_the_console_without_its_slash_redirects_admins_only(console_app: Flask) -> None:
    # README names <prefix>/console; its pages live under <prefix>/console/
    client = console_app.test_client()
    moved = client.get(CONSOLE, headers=ADMIN)
    assert moved.status_code == 308
    assert moved.headers["Location"].endswith(f"{CONSOLE}/")
    followed = client.get(CONSOLE, headers=ADMIN, follow_redirects=True)
    assert followed.status_code == 200 and followed.request.path == f"{CONSOLE}/"
    unknown = client.get(f"{CONSOLE}/no-such-page", headers=as_user("alice"))
    for who in (as_user(None), as_user("alice")):
        hidden = client.get(CONSOLE, headers=who)
        assert hidden.status_code == 404 and hidden.get_json() == unknown.get_json()


def test_a_static_file_it_lacks_is_a_console_page_not_werkzeugs(console_app: Flask) -> None:
    """A missing file under the console's static/ (a stale link, a probe) is said as a
    mistyped console address is: a console page for an admin, the API's JSON for
    anyone else; and a Range past a file's end gets the API's JSON. Never
    Werkzeug's bare HTML page."""
    client = console_app.test_client()
    mistyped = client.get(f"{CONSOLE}/no-such-page", headers=ADMIN)
    for path in ("/static/no-such-file.css", "/static/", "/static/console.css/x"):
        missing = client.get(CONSOLE + path, headers=ADMIN)
        assert missing.status_code == 404, path
        assert missing.get_data() == mistyped.get_data(), path
        assert missing.headers["Content-Security-Policy"] == guard.CSP, path
    past_the_end = client.get(
        f"{CONSOLE}/static/console.css", headers={**ADMIN, "Range": "bytes=99999999-"}
    )
    assert past_the_end.status_code == 416
    assert past_the_end.get_json()["error"]["code"] == "http_error"


def test_push_console_false_turns_it_off(make_app: Callable[..., Flask]) -> None:
    client = make_app(SECRET_KEY=SECRET, PUSH_CONSOLE=False).test_client()
    for path in PAGES:
        assert client.get(CONSOLE + path, headers=ADMIN).status_code == 404, path


def test_push_console_must_be_a_bool(make_app: Callable[..., Flask]) -> None:
    from flask_push.errors import PushConfigError

    with pytest.raises(PushConfigError, match="PUSH_CONSOLE must be True or False"):
        make_app(PUSH_CONSOLE="yes")


def test_every_answer_carries_the_security_headers(console_app: Flask) -> None:
    client = console_app.test_client()
    for path in (*PAGES, "/static/console.js", "/messages/msg_none"):
        answer = client.get(CONSOLE + path, headers=ADMIN)
        assert answer.headers["Content-Security-Policy"] == guard.CSP, path
        assert "'unsafe-inline'" not in guard.CSP
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Referrer-Policy"] == "same-origin"
    assert client.get(f"{CONSOLE}/messages/msg_none", headers=ADMIN).status_code == 404


def test_a_mistyped_address_is_a_console_page_for_admins(console_app: Flask) -> None:
    client = console_app.test_client()
    answer = client.get(f"{CONSOLE}/mesages", headers=ADMIN)
    assert answer.status_code == 404 and answer.content_type.startswith("text/html")
    html = answer.get_data(as_text=True)
    assert "The console has no such page." in html and f'href="{CONSOLE}/"' in html
    assert answer.headers["Content-Security-Policy"] == guard.CSP
    assert answer.headers["Cache-Control"] == "no-store"
    # anyone else: the API's answer for a path it does not have, as before
    hidden = client.get(f"{CONSOLE}/mesages", headers=as_user("alice"))
    assert hidden.status_code == 404 and hidden.get_json()["error"]["code"] == "not_found"


def test_empty_console_lists_say_what_comes_there_and_how(console_app: Flask) -> None:
    """On a fresh database the users page was a search box over nothing, and the
    messages page said only "Try a test send", not how messages come there."""
    client = console_app.test_client()
    users = client.get(f"{CONSOLE}/users", headers=ADMIN).get_data(as_text=True)
    registered = "No browser or device has registered yet. A user shows here, newest first"
    assert registered in users
    assert "<code>FlaskPush.subscribe()</code>" in users
    messages = client.get(f"{CONSOLE}/messages", headers=ADMIN).get_data(as_text=True)
    assert "No message has been sent yet. Each one sent with <code>push.send()</code>" in messages
    later_message(console_app)
    users = client.get(f"{CONSOLE}/users", headers=ADMIN).get_data(as_text=True)
    assert registered not in users and "Recently registered" in users
    # a user looked up says its own sentence, not this one
    searched = client.get(f"{CONSOLE}/users?id=nobody", headers=ADMIN).get_data(as_text=True)
    assert registered not in searched
    messages = client.get(f"{CONSOLE}/messages", headers=ADMIN).get_data(as_text=True)
    assert "No message has been sent yet" not in messages


def test_messages_past_the_last_page_say_so(console_app: Flask) -> None:
    later_message(console_app)
    html = console_app.test_client().get(f"{CONSOLE}/messages?page=99", headers=ADMIN)
    text = html.get_data(as_text=True)
    assert "Page 99 is past the last page (1)." in text
    assert "No message has been sent yet" not in text


def test_a_page_number_past_the_end_or_no_number_is_a_page(console_app: Flask) -> None:
    id = later_message(console_app)
    client = console_app.test_client()
    for page in ("2", "99999999"):  # the second is past what a listing may skip
        html = client.get(f"{CONSOLE}/messages/{id}?page={page}", headers=ADMIN)
        assert html.status_code == 200
        assert f"Page {page} is past the last page." in html.get_data(as_text=True)
    # a digit to str.isdigit() that int() refuses reads as no number
    for path in ("/messages", f"/messages/{id}"):
        shown = client.get(f"{CONSOLE}{path}?page=\u00b2", headers=ADMIN)
        assert shown.status_code == 200 and "Page 1" in shown.get_data(as_text=True), path


def test_users_page_says_what_a_user_id_is_and_lists_recent_ones(console_app: Flask) -> None:
    with console_app.app_context():
        for user in ("7", "42", "7"):
            add_subscription(user)
            time.sleep(0.002)  # ids order by the millisecond: one each
        add_subscription(None)  # anonymous: not a user to pick
    client = console_app.test_client()
    for path in ("/users", "/users?id=alice@example.com"):
        html = client.get(CONSOLE + path, headers=ADMIN).get_data(as_text=True)
        listed = re.findall(r'<a href="[^"]*users\?id=([^"]+)"><code>', html)
        assert listed == ["7", "42"], path  # newest first, each once
    assert "not an email address or a name" in html
    assert "No browser or device is registered for the user id" in html
    found = client.get(f"{CONSOLE}/users?id=42", headers=ADMIN).get_data(as_text=True)
    assert "Recently registered" not in found


def test_the_users_page_refuses_an_id_longer_than_a_user_id(
    make_app: Callable[..., Flask],
) -> None:
    """The users page cut the id it was asked for to 255 characters: a 256-character
    id showed the browsers of the user whose id is its first 255 characters, where
    ``GET /users/<id>/targets`` answers 400 ``too_long`` for the same id."""
    app = make_app(SECRET_KEY=SECRET, PUSH_CATEGORIES={"offers": {"label": "Offers"}})
    longest = "u" * 255
    with app.app_context():
        browser = add_subscription(longest).id
        push.set_preferences(longest, categories={"offers": {"web": False}})
    client = app.test_client()
    api = client.get(f"/push/users/{longest}x/targets", headers=ADMIN)
    assert api.status_code == 400 and api.get_json()["error"]["code"] == "too_long"
    page = client.get(f"{CONSOLE}/users?id={longest}x", headers=ADMIN)
    text = page.get_data(as_text=True)
    assert page.status_code == 400, text
    assert browser not in text and "lets through" not in text
    assert "userId: " in text
    shown = client.get(f"{CONSOLE}/users?id={longest}", headers=ADMIN).get_data(as_text=True)
    assert browser in shown and "lets through" in shown


def test_recently_registered_lists_each_user_once_whatever_their_devices(
    console_app: Flask,
) -> None:
    now = datetime.now(timezone.utc)

    def registered(model: Any, user: str | None, hours_ago: float, **values: Any) -> None:
        db.session.add(model(user_id=user, created_at=now - timedelta(hours=hours_ago), **values))

    with console_app.app_context():
        Subscription, Installation = push.models.Subscription, push.models.Installation
        browser = {"p256dh": "k", "auth": "a", "topics": []}
        phone = {"app_id": "shop", "device_type": "android", "subscriptions": []}
        for n in range(12):  # one browser each, an hour apart: user0 the newest
            registered(Subscription, f"user{n}", 2 + n, endpoint=f"https://e/{n}", **browser)
        # carol's newest is a phone, her browser is older than everyone's
        registered(Subscription, "carol", 50, endpoint="https://e/carol", **browser)
        registered(Installation, "carol", 1.5, device_token="carol", **phone)
        # a fleet account registered last, with hundreds of devices and browsers
        for n in range(300):
            registered(Installation, "fleet", 1 - n / 1000, device_token=f"f{n}", **phone)
            registered(Subscription, "fleet", 1, endpoint=f"https://e/f{n}", **browser)
        registered(Subscription, None, 0, endpoint="https://e/anonymous", **browser)
        db.session.commit()
    html = console_app.test_client().get(f"{CONSOLE}/users", headers=ADMIN).get_data(as_text=True)
    listed = re.findall(r'<a href="[^"]*users\?id=([^"]+)"><code>', html)
    # newest registration first, each user once, ten of them
    assert listed == ["fleet", "carol", *(f"user{n}" for n in range(8))]


def test_a_users_recent_deliveries_say_what_happened(console_app: Flask) -> None:
    """Each recent delivery of a browser says in a sentence what became of it, as
    the message's deliveries do, beside its machine reason."""
    with console_app.app_context():
        add_subscription("42")
        # the device has no provider here: failed as it was queued
        db.session.add(
            push.models.Installation(
                app_id="shop", device_token="ab" * 32, device_type="ios", user_id="42"
            )
        )
        db.session.commit()
        id = push.send(users=["42"], title="Sale").id
        [failed] = push.explain(id, status="failed")
    html = console_app.test_client().get(f"{CONSOLE}/users?id=42", headers=ADMIN)
    text = html.get_data(as_text=True).replace("&#39;", "'")
    assert failed["detail"].startswith("No apns provider is configured")
    assert (
        f'<code class="small">no_provider</code><br><span class="small wrap">{failed["detail"]}'
        in (text)
    )


def test_a_dead_browser_offers_no_test_send(console_app: Flask) -> None:
    with console_app.app_context():
        add_subscription("42", status="dead", dead_at=datetime.now(timezone.utc))
        live = add_subscription("42").id
    html = console_app.test_client().get(f"{CONSOLE}/users?id=42", headers=ADMIN)
    text = html.get_data(as_text=True)
    assert re.findall(r"send\?target=([^\"]+)", text) == [live]
    assert "Nothing is sent to a dead browser subscription again; when the browser" in text


def test_the_overview_asks_for_a_worker_when_the_outbox_waits(
    make_app: Callable[..., Flask],
) -> None:
    """The oldest due push had waited 30 min, tinted, with only "how long the oldest
    has waited" beside it (and on a phone not even that): not what to look at. (The
    inline queue: no worker here.)"""
    console_app = make_app(SECRET_KEY=SECRET, PUSH_QUEUE="inline")
    client = console_app.test_client()
    question = "is a delivery worker running for this app (flask push worker), and keeping up?"
    with console_app.app_context():
        add_subscription("42")
        id = push.send(users=["42"], title="Sale", send_at=later()).id
    assert question not in client.get(f"{CONSOLE}/", headers=ADMIN).get_data(as_text=True)
    with console_app.app_context():
        make_due(id, due_at=datetime.now(timezone.utc) - timedelta(minutes=30))
    html = client.get(f"{CONSOLE}/", headers=ADMIN).get_data(as_text=True)
    assert f"The oldest due delivery has waited 30 min: {question}</p>" in html


def test_the_overview_says_what_its_chart_will_show_before_anything_was_sent(
    console_app: Flask,
) -> None:
    """On a fresh database the chart was a bar of zeros per provider and a table of
    zeros, with no sentence: what comes there, and how, instead."""
    client = console_app.test_client()
    empty = "No delivery in the last 24 hours. Each message sent with <code>push.send()</code>"
    html = client.get(f"{CONSOLE}/", headers=ADMIN).get_data(as_text=True)
    assert empty in html
    assert 'class="bar-row"' not in html and '<table class="numbers">' not in html
    with console_app.app_context():
        add_subscription("42")
        # due now; under TESTING the push is recorded, not sent to a push service
        id = push.send(users=["42"], title="Sale").id
        assert [(e["status"], e["reason"]) for e in push.explain(id)] == [("sent", "recorded")]
    html = client.get(f"{CONSOLE}/", headers=ADMIN).get_data(as_text=True)
    assert empty not in html
    assert 'aria-label="webpush: 1 deliveries"' in html


def test_the_overview_counts_the_messages_due_in_the_last_24_hours(console_app: Flask) -> None:
    """The chart "Deliveries in the last 24 hours" counted the messages created in
    the last 24 hours: a message scheduled yesterday that went out a minute ago was
    missing from it (while the metrics counted its push), and one scheduled for three
    days ahead showed as a queued delivery of the last 24 hours."""
    now = datetime.now(timezone.utc)
    m = push.models.Message
    with console_app.app_context():
        for _ in range(2):
            add_subscription("42")
        add_subscription("7")
        # scheduled 30 hours ago for a minute ago: due in the window (two browsers)
        yesterdays = push.send(users=["42"], title="Morning sale", send_at=later()).id
        # sent 30 hours ago: out of the window
        old = push.send(users=["7"], title="Old news").id
        db.session.execute(
            sa.update(m)
            .where(m.id.in_([yesterdays, old]))
            .values(created_at=now - timedelta(hours=30))
        )
        db.session.execute(
            sa.update(m).where(m.id == yesterdays).values(send_at=now - timedelta(minutes=1))
        )
        db.session.commit()
        # due in three days: not yet
        push.send(users=["7"], title="Next week", send_at=now + timedelta(days=3))
        # sent now; and one given a send_at already past, which goes at once
        push.send(users=["7"], title="Now")
        push.send(users=["7"], title="Late", send_at=now - timedelta(days=2))
    html = console_app.test_client().get(f"{CONSOLE}/", headers=ADMIN).get_data(as_text=True)
    assert 'aria-label="webpush: 4 deliveries"' in html
    assert "messages due in the last 24 hours (sent then, or scheduled for then)" in html


def test_the_overview_names_what_was_found_dead(console_app: Flask) -> None:
    """A browser found dead today is shown as a person knows it ("Chrome on Linux"),
    its id beside it for the search, and why it is dead as a sentence."""
    with console_app.app_context():
        dead = add_subscription(
            "42",
            status="dead",
            dead_at=datetime.now(timezone.utc),
            dead_reason="410 Gone",
            user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
        ).id
        # why, in the sentence the users page says it in, not the service's bare answer
        (target,) = push.user_targets("42")
    html = console_app.test_client().get(f"{CONSOLE}/", headers=ADMIN).get_data(as_text=True)
    assert f'Chrome on Linux<br><code class="small">{dead}</code>' in html
    # its kind as the chart above and the users page name it, not "browser"
    assert '<td data-label="Kind">webpush</td>' in html
    assert target["deadDetail"].startswith("The browser's push service said at ")
    assert f'<td data-label="Why" class="wrap">{target["deadDetail"]}</td>' in html.replace(
        "&#39;", "'"
    )


def test_the_users_page_says_what_the_user_lets_through(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(
        SECRET_KEY=SECRET,
        PUSH_CATEGORIES={
            "orders": {"label": "Order updates", "required": True},
            "offers": {"label": "Offers and deals", "max_per_day": 2, "channels": ["web"]},
        },
    )
    with app.app_context():
        add_subscription("42")
        push.set_preferences("42", categories={"offers": {"web": False}})
    html = app.test_client().get(f"{CONSOLE}/users?id=42", headers=ADMIN).get_data(as_text=True)
    table = html[html.index('<table class="numbers choices">') : html.index("</table>")]
    rows = re.findall(r"<tr><th scope=\"row\".*?</tr>", table, re.S)
    cells = [
        re.findall(r'badge st-(on|off)">\w+</span>( <span class="muted small">fixed)?', r)
        for r in rows
    ]
    fixed = ' <span class="muted small">fixed'
    assert cells == [
        [("on", fixed)] * 3,  # required: on everywhere, not hers to change
        [("off", ""), ("on", fixed), ("on", fixed)],  # she turned off the web
    ]
    assert "at most 2 in 24 hours" in rows[1] and "Quiet hours: none" in html
    # a mistyped id is not shown the defaults as if they were someone's choices
    unknown = app.test_client().get(f"{CONSOLE}/users?id=43", headers=ADMIN)
    assert "lets through" not in unknown.get_data(as_text=True)


def test_the_users_page_says_when_quiet_hours_are_not_applied(
    make_app: Callable[..., Flask],
) -> None:
    """A zone the server's tz database lost since the user chose it leaves their
    quiet hours unapplied (test_policy): the operator reads so where the quiet hours
    are shown, not that pushes wait for them."""
    app = make_app(SECRET_KEY=SECRET, PUSH_CATEGORIES={"offers": {"label": "Offers"}})
    with app.app_context():
        add_subscription("42")
        add_subscription("43")
        for user in ("42", "43"):
            push.set_preferences(
                user, quiet_hours={"start": "22:00", "end": "07:00", "time_zone": "Asia/Kathmandu"}
            )
        p = push.models.Preference
        db.session.execute(sa.update(p).where(p.user_id == "43").values(time_zone="Mars/Olympus"))
        db.session.commit()
    pages = {
        user: app.test_client()
        .get(f"{CONSOLE}/users?id={user}", headers=ADMIN)
        .get_data(as_text=True)
        .replace("&#39;", "'")
        for user in ("42", "43")
    }
    assert "22:00 to 07:00, Asia/Kathmandu (pushes of a category" in pages["42"]
    assert "not applied" not in pages["42"]
    assert (
        "22:00 to 07:00, Mars/Olympus <strong>(not applied: this server's time zone database "
        "does not know this zone" in pages["43"]
    )


def test_a_message_names_its_category_and_what_the_users_held_back(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(
        SECRET_KEY=SECRET,
        PUSH_CATEGORIES={"offers": {"label": "Offers and deals", "default": False}},
    )
    with app.app_context():
        add_subscription("alice")
        add_subscription("bob")
        # carol opted in, but her quiet hours outlast the sale's minute to live
        add_subscription("carol")
        push.set_preferences("carol", categories={"offers": {"web": True}})
        quiet_now("carol")
        sale = push.send(users=["alice", "bob", "carol"], title="Sale", category="offers", ttl=60)
        id = sale.id
    html = app.test_client().get(f"{CONSOLE}/messages/{id}", headers=ADMIN).get_data(as_text=True)
    assert "Offers and deals <code>offers</code>" in html
    assert "<dt>Targets to send to</dt><dd>0 <span" in html
    assert "(3 held back by the users' settings or a daily cap)" in html


def test_held_back_counts_no_target_the_message_counts_to_send_to(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A push that failed (400), whose user then turned the category off, ended
    ``suppressed`` (``opted_out``) at the operator's retry; the message page said
    "Targets to send to 1 (1 held back by the users' settings or a daily cap)" for
    its one browser. So did a scheduled push whose user turned the category off, or
    set quiet hours that outlast its time to live, before it went out: those were
    targets to send to, not held back when it was sent."""
    app = sending_app(PUSH_CATEGORIES={"offers": {"label": "Offers"}})
    client = app.test_client()
    browser = push_fake_webpush.subscribe()
    with app.app_context():
        subscribe(browser, "alice")
        push_fake_webpush.fail_next(400, subscriber=browser)
        retried = push.send(users=["alice"], title="Deal", category="offers").id
        push.set_preferences("alice", categories={"offers": {"web": False}})
        push.retry_failed(retried)
        assert [(e["status"], e["reason"]) for e in push.explain(retried)] == [
            ("suppressed", "opted_out")
        ]
        for user in ("bob", "carol", "dave"):
            add_subscription(user)
        push.set_preferences("dave", categories={"offers": {"web": False}})
        soon = datetime.now(timezone.utc) + timedelta(minutes=30)
        scheduled = push.send(
            users=["bob", "carol", "dave"], title="Sale", category="offers", send_at=soon, ttl=60
        ).id
        push.set_preferences("bob", categories={"offers": {"web": False}})
        push.set_preferences(
            "carol",
            quiet_hours={
                "start": f"{soon:%H:%M}",
                "end": f"{soon + timedelta(hours=2):%H:%M}",
                "time_zone": "UTC",
            },
        )
        assert sorted((e["status"], e["reason"]) for e in push.explain(scheduled)) == [
            ("expired", "quiet_hours_expired"),
            ("suppressed", "opted_out"),
            ("suppressed", "opted_out"),
        ]
    page = client.get(f"{CONSOLE}/messages/{retried}", headers=ADMIN).get_data(as_text=True)
    assert "<dt>Targets to send to</dt><dd>1</dd>" in page
    page = client.get(f"{CONSOLE}/messages/{scheduled}", headers=ADMIN).get_data(as_text=True)
    # dave's was held back as it was sent; bob's and carol's were to be sent
    said = "(1 held back by the users' settings or a daily cap)"
    assert f'<dt>Targets to send to</dt><dd>2 <span class="muted">{said}</span></dd>' in (
        page.replace("&#39;", "'")
    )


def test_a_live_activitys_message_says_which_of_its_states_it_is(console_app: Flask) -> None:
    """Each state of a live activity is a message with the same title: the list and
    the message's page say which activity, which event and what state it showed
    (and that a catch-up is one), else an operator cannot tell them apart."""
    dismissed = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    with console_app.app_context():
        add_subscription("alice")
        push.activity(
            "order-42", users=["alice"], title="Order #42", event="start", state={"step": 1}
        )
        ended = push.activity(
            "order-42",
            users=["alice"],
            title="Order #42",
            event="end",
            state={"status": "delivered", "note": EVIL},
            dismiss_at=dismissed,
        )
        id = ended.id
    client = console_app.test_client()
    listed = client.get(f"{CONSOLE}/messages", headers=ADMIN).get_data(as_text=True)
    assert listed.count("live activity <code>order-42</code>") == 2
    assert ">end</span>" in listed and ">start</span>" in listed
    html = client.get(f"{CONSOLE}/messages/{id}", headers=ADMIN).get_data(as_text=True)
    assert "<dt>Live activity</dt><dd><code>order-42</code>: end</dd>" in html
    assert EVIL not in html  # the state is the host's data: escaped
    shown = re.search(r"<dt>State</dt><dd[^>]*><code>(.*?)</code>", html)
    assert shown is not None
    assert unescape(shown.group(1)) == json.dumps({"status": "delivered", "note": EVIL})
    assert f'<time datetime="{dismissed.isoformat()}"' in html  # dismissal, as a time


def test_a_bad_filter_is_a_page_not_a_crash(console_app: Flask) -> None:
    id = later_message(console_app)
    client = console_app.test_client()
    answer = client.get(f"{CONSOLE}/messages/{id}?status=bogus", headers=ADMIN)
    assert answer.status_code == 400
    assert "status" in answer.get_data(as_text=True)
    assert answer.headers["Content-Security-Policy"] == guard.CSP


def test_nul_in_an_id_or_a_field_is_a_page_not_a_crash(console_app: Flask) -> None:
    """PostgreSQL refuses NUL in text, even to look a row up: the console says what
    is wrong on its page, as the API does in JSON, before any query."""
    later_message(console_app)
    client = console_app.test_client()
    token = csrf(client)
    for method, path, data, status in [
        ("GET", "/messages/%00", None, 404),
        ("POST", "/messages/%00/cancel", {"csrf_token": token}, 404),
        ("POST", "/messages/%00/retry", {"csrf_token": token}, 404),
        ("GET", "/users?id=a%00b", None, 400),
        ("GET", "/send?user=%00", None, 400),
        ("POST", "/send", {"csrf_token": token, "target": "\x00", "action": "preview"}, 400),
        ("POST", "/send", {"csrf_token": token, "user": "al", "title": "a\x00"}, 400),
    ]:
        answer = client.open(CONSOLE + path, method=method, data=data, headers=ADMIN)
        assert answer.status_code == status, (path, data)
        assert answer.mimetype == "text/html"
        page = answer.get_data(as_text=True)
        assert "Traceback" not in page and "Internal Server Error" not in page
        if status == 400:
            assert "NUL character" in page


def test_no_inline_script_or_style(console_app: Flask) -> None:
    later_message(console_app)
    client = console_app.test_client()
    for path in PAGES:
        html = client.get(CONSOLE + path, headers=ADMIN).get_data(as_text=True)
        assert "<style" not in html and " style=" not in html, path
        assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, path
        assert re.search(r"\son[a-z]+=", html) is None, path


def test_without_a_secret_key_the_console_says_so(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    answer = client.get(f"{CONSOLE}/", headers=ADMIN)
    assert answer.status_code == 500
    text = answer.get_data(as_text=True)
    assert "SECRET_KEY" in text and "Traceback" not in text
    assert answer.headers["Content-Security-Policy"] == guard.CSP
    # still nothing for others
    assert client.get(f"{CONSOLE}/", headers=as_user("alice")).status_code == 404


def test_an_audience_of_many_users_names_ten(console_app: Flask) -> None:
    """A message to 1,200 users: its row and its page name ten and count the rest,
    rather than list every id."""
    users = [f"user-{n:04d}" for n in range(1200)]
    with console_app.app_context():
        id = push.send(users=users, title="Sale").id
    client = console_app.test_client()
    for path in ("/messages", f"/messages/{id}"):
        text = client.get(CONSOLE + path, headers=ADMIN).get_data(as_text=True)
        assert f"users: {', '.join(users[:10])} and 1,190 more" in text, path
        assert users[10] not in text, path


def test_output_is_escaped(console_app: Flask) -> None:
    id = later_message(console_app, title=EVIL)
    with console_app.app_context():
        target = db.session.scalars(db.select(push.models.Subscription)).one()
        target.user_agent = EVIL
        db.session.commit()
    client = console_app.test_client()
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    for path in ("/messages", f"/messages/{id}", "/users?id=alice", f"/users?id={EVIL}"):
        html = client.get(CONSOLE + path, headers=ADMIN).get_data(as_text=True)
        assert EVIL not in html, path
    assert escaped in client.get(f"{CONSOLE}/messages", headers=ADMIN).get_data(as_text=True)
    token = csrf(client)
    preview = client.post(
        f"{CONSOLE}/send",
        headers=ADMIN,
        data={"csrf_token": token, "user": "alice", "title": EVIL, "action": "preview"},
    )
    assert preview.status_code == 200
    assert EVIL not in preview.get_data(as_text=True)


def cancel(client: Any, id: str, **headers: str) -> Any:
    token = csrf(client, f"/messages/{id}")
    return client.post(
        f"{CONSOLE}/messages/{id}/cancel", headers={**ADMIN, **headers}, data={"csrf_token": token}
    )


def queued(app: Flask, id: str) -> int:
    with app.app_context():
        model = push.models.Delivery
        rows = db.session.scalars(db.select(model).where(model.message_id == id)).all()
        return sum(row.status == "queued" for row in rows)


def test_actions_refuse_cross_site_and_tokenless_posts(console_app: Flask) -> None:
    id = later_message(console_app)
    client = console_app.test_client()
    url = f"{CONSOLE}/messages/{id}/cancel"
    # no token, a forged one, a cross-site request carrying a real one: 403, nothing changes
    assert client.post(url, headers=ADMIN).status_code == 403
    assert client.post(url, headers=ADMIN, data={"csrf_token": "forged"}).status_code == 403
    assert cancel(client, id, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert cancel(client, id, Origin="https://evil.example").status_code == 403
    assert cancel(client, id, Origin="null").status_code == 403
    # a token of another admin is not this admin's
    token = csrf(client, f"/messages/{id}")
    other = {**as_user("root", admin=True)}
    assert client.post(url, headers=other, data={"csrf_token": token}).status_code == 403
    # a token without the cookie it was made for
    fresh = console_app.test_client()
    assert fresh.post(url, headers=ADMIN, data={"csrf_token": token}).status_code == 403
    refused = client.post(url, headers=ADMIN)
    assert "security token" in refused.get_data(as_text=True)
    assert queued(console_app, id) == 1
    # the same host behind a proxy that ends TLS is still this site
    done = cancel(client, id, **{"Sec-Fetch-Site": "same-origin"}, Origin="https://localhost")
    assert done.status_code == 303
    assert queued(console_app, id) == 0


@pytest.mark.parametrize("value", ["\u00e9t\u00e9", "\u00c3\u00a9"])  # é as latin-1, as UTF-8
def test_a_csrf_cookie_that_is_not_ascii_is_replaced_and_its_posts_refused(
    console_app: Flask, value: str
) -> None:
    """A cookie of the CSRF cookie's name that no console page set (another app on a
    sibling host can set one for the whole domain) holds no nonce: the page sets one
    of its own, and a post with the old cookie is refused, not answered with a 500."""
    id = later_message(console_app)
    client = console_app.test_client(use_cookies=False)
    tossed = {"HTTP_COOKIE": f"{guard.CSRF_COOKIE}={value}"}  # as the WSGI server has it
    page = client.get(f"{CONSOLE}/messages/{id}", headers=ADMIN, environ_overrides=tossed)
    assert page.status_code == 200
    assert page.headers.get("Set-Cookie", "").startswith(f"{guard.CSRF_COOKIE}=")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert found is not None
    url = f"{CONSOLE}/messages/{id}/cancel"
    form = {"csrf_token": found.group(1)}
    refused = client.post(url, headers=ADMIN, data=form, environ_overrides=tossed)
    assert refused.status_code == 403
    assert "security token" in refused.get_data(as_text=True)
    assert queued(console_app, id) == 1


def test_the_csrf_cookie_is_strict_and_scoped(console_app: Flask) -> None:
    client = console_app.test_client()
    answer = client.get(f"{CONSOLE}/send", headers=ADMIN)
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{guard.CSRF_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and f"Path={CONSOLE}" in cookie


def test_cancel_counts_cancelled(console_app: Flask) -> None:
    id = later_message(console_app)
    client = console_app.test_client()
    done = cancel(client, id)
    assert done.status_code == 303
    page = client.get(done.headers["Location"], headers=ADMIN).get_data(as_text=True)
    assert re.search(r'id="count-cancelled">1<', page)
    assert "Cancelled: 1 delivery not yet sent will not go out." in page
    # the message is shown cancelled, not "done" as if it went out: here and in the list
    assert """Tomorrow&#39;s sale <span class="badge st-cancelled">cancelled</span></h1>""" in page
    listed = client.get(f"{CONSOLE}/messages", headers=ADMIN).get_data(as_text=True)
    assert '<td data-label="Status"><span class="badge st-cancelled">cancelled</span>' in listed
    assert "st-done" not in listed
    with console_app.app_context():
        sent = str(push.send(users=["nobody"], title="Nothing queued").id)
    done = cancel(client, sent)
    page = client.get(done.headers["Location"], headers=ADMIN).get_data(as_text=True)
    assert "Nothing to cancel: every delivery had already gone out." in page
    # a disabled button says why it is
    assert (
        '<button type="submit" class="danger" disabled title="Nothing to cancel: no '
        'delivery of this message is queued, and it holds no inbox item.">Cancel</button>'
    ) in page
    assert (
        ' disabled title="Nothing to retry: no delivery of this message failed.">Retry '
        "failed</button>"
    ) in page


def test_a_message_holding_only_inbox_items_can_be_cancelled(console_app: Flask) -> None:
    """A scheduled message to users with no browser or device holds their inbox
    items alone. Its Cancel button was disabled ("no delivery of this message is
    queued"), so an operator could not stop it."""
    with console_app.app_context():
        send_at = datetime.now(timezone.utc) + timedelta(days=1)
        id = str(push.send(users=["bob", "carol"], title="Sale", inbox=True, send_at=send_at).id)
    client = console_app.test_client()
    page = client.get(f"{CONSOLE}/messages/{id}", headers=ADMIN).get_data(as_text=True)
    assert "<dt>Inbox items held</dt><dd>2</dd>" in page
    assert '<button type="submit" class="danger">Cancel</button>' in page
    assert "has not been sent, and the inbox items it holds?" in page
    done = cancel(client, id)
    page = client.get(done.headers["Location"], headers=ADMIN).get_data(as_text=True)
    assert "Cancelled: its inbox items will not be written." in page
    assert 'Sale <span class="badge st-cancelled">cancelled</span></h1>' in page
    assert "<dt>Cancelled</dt>" in page and "Inbox items held" not in page
    assert 'and it holds no inbox item.">Cancel</button>' in page
    with console_app.app_context():
        make_due(id)
        push.dispatch_due()
        assert push.search("bob").total_count == 0


def test_retrying_a_cancelled_message_says_nothing_was_tried(console_app: Flask) -> None:
    """The button is disabled once a message is cancelled; a retry posted anyway (an
    older tab) says that nothing was tried again, not that it was queued."""
    id = later_message(console_app)
    client = console_app.test_client()
    cancel(client, id)
    token = csrf(client, f"/messages/{id}")
    done = client.post(f"{CONSOLE}/messages/{id}/retry", headers=ADMIN, data={"csrf_token": token})
    assert done.status_code == 303
    page = client.get(done.headers["Location"], headers=ADMIN).get_data(as_text=True)
    assert "Nothing was tried again: the message was cancelled" in page
    assert "queued again" not in page


CHROME = "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"


def failing_message(app: Flask, service: FakePushService, user: str, answers: list[int]) -> str:
    """A message sent at once to one browser of ``user``'s per answer, each of which
    its push service answers with that status (Web Push, through the FakePushService)."""
    client = app.test_client()
    for n, status in enumerate(answers):
        subscriber = service.subscribe(f"browser-{n}")
        added = client.post(
            "/push/subscriptions",
            json=subscriber.info,
            headers={**as_user(user), "User-Agent": CHROME},
        )
        assert added.status_code == 201, added.get_json()
        service.fail_next(status, subscriber=subscriber)
    with app.app_context():
        return str(push.send(users=[user], title="Flash sale").id)


def retry_part(page: str) -> tuple[bool, str]:
    """Whether the page's "Retry failed" button is enabled, and what is said beside it."""
    button = re.search(r"<button [^>]*>Retry failed</button>", page)
    note = re.search(r'<p id="retry-outlook"[^>]*>(.*?)</p>', page, re.S)
    assert button is not None
    return "disabled" not in button.group(0), unescape(note.group(1)) if note else ""


def test_retry_failed_says_what_a_retry_can_help(
    make_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A retry sends the same push again: one refused as too large fails the same
    way. Beside the button the page counts those apart, with what they are, and
    disables it when a retry can help none of them. A plain refusal (400) may be a
    setting's fault (APNs' topic, FCM's address), which a fixed setting lets through."""
    app = make_app(
        SECRET_KEY=SECRET,
        PUSH_QUEUE="inline",
        PUSH_SUPPRESS_SEND=False,
        PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )
    client = app.test_client()
    # 413: too large; 400: refused; 403: the VAPID key refused, which a fixed key
    # lets through
    mixed = failing_message(app, push_fake_webpush, "alice", [413, 413, 400, 403])
    page = client.get(f"{CONSOLE}/messages/{mixed}", headers=ADMIN).get_data(as_text=True)
    assert re.search(r'id="count-failed">4<', page)
    enabled, said = retry_part(page)
    assert enabled
    assert said == (
        "A retry can help 2 of the 4 failed deliveries; 2 will fail the same way as they "
        "are (2 too large for the push service). The retry sends all 4 again."
    )

    vain = failing_message(app, push_fake_webpush, "bob", [413, 413])
    page = client.get(f"{CONSOLE}/messages/{vain}", headers=ADMIN).get_data(as_text=True)
    enabled, said = retry_part(page)
    assert not enabled
    assert said == (
        "A retry cannot help: both failed deliveries would fail the same way as they are "
        "(2 too large for the push service). Their sentences below say what to change; "
        "then send it again as a new message."
    )

    helped = failing_message(app, push_fake_webpush, "carol", [403])
    page = client.get(f"{CONSOLE}/messages/{helped}", headers=ADMIN).get_data(as_text=True)
    assert retry_part(page) == (True, "A retry can help the failed delivery.")

    # past its time to live, a failed delivery is left failed by a retry (no retry
    # can send it; its 403 says what went wrong): counted apart, and not sent
    late = failing_message(app, push_fake_webpush, "erin", [403, 403])
    d = push.models.Delivery
    with app.app_context():
        [first, _] = db.session.scalars(sa.select(d.id).where(d.message_id == late).order_by(d.id))
        past = datetime.now(timezone.utc) - timedelta(minutes=1)
        db.session.execute(sa.update(d).where(d.id == first).values(expires_at=past))
        db.session.commit()
    page = client.get(f"{CONSOLE}/messages/{late}", headers=ADMIN).get_data(as_text=True)
    assert retry_part(page) == (
        True,
        "A retry can help 1 of the 2 failed deliveries; 1 will fail the same way as it is "
        "(1 past their time to live). The retry sends 1 again, not those past their time "
        "to live.",
    )
    retried = client.post(f"/push/messages/{late}/retry", json={}, headers=ADMIN)
    counts = retried.get_json()["counts"]
    assert (counts["failed"], counts["sent"]) == (1, 1), counts
    with app.app_context():
        kept = db.session.get(d, first)
        assert (kept.status, kept.reason) == ("failed", "credentials_refused")

    # a cancelled message sends none of it again (push.retry_failed): the 503's
    # retry is cancelled, and the button says so rather than what a retry would help
    cancelled = failing_message(app, push_fake_webpush, "dan", [403, 503])
    cancel(client, cancelled)
    page = client.get(f"{CONSOLE}/messages/{cancelled}", headers=ADMIN).get_data(as_text=True)
    assert re.search(r'id="count-cancelled">1<', page)
    assert retry_part(page) == (
        False,
        "The message was cancelled, so a retry sends none of its 1 failed delivery: send "
        "it again as a new message.",
    )


def test_preview_shows_what_each_provider_would_send(make_app: Callable[..., Flask]) -> None:
    app = make_app(
        SECRET_KEY=SECRET,
        PUSH_FCM_CREDENTIALS=service_account(),
        PUSH_APNS_KEY=pem(ec.generate_private_key(ec.SECP256R1())),
        PUSH_APNS_KEY_ID="ABC123DEFG",
        PUSH_APNS_TEAM_ID="DEF123GHIJ",
        PUSH_APNS_TOPIC="com.example.shop",
    )
    with app.app_context():
        add_subscription("alice")
        for device_type, token in (("android", "f" * 140), ("ios", "ab" * 32)):
            db.session.add(
                push.models.Installation(
                    app_id="shop",
                    device_type=device_type,
                    device_token=token,
                    user_id="alice",
                    subscriptions=[],
                )
            )
        db.session.commit()
    client = app.test_client()
    form = {
        "csrf_token": csrf(client),
        "user": "alice",
        "title": "Your order shipped",
        "body": "Parcel 42 is on its way",
        "url": "/orders/42",
        "urgency": "high",
        "action": "preview",
    }
    html = client.post(f"{CONSOLE}/send", headers=ADMIN, data=form).get_data(as_text=True)
    # Web Push: the payload and its TTL and Urgency headers
    assert "&#34;TTL&#34;: &#34;86400&#34;" in html
    assert "&#34;Urgency&#34;: &#34;high&#34;" in html
    assert "&#34;url&#34;: &#34;/orders/42&#34;" in html
    # FCM v1: a message with a token; APNs: the apns-* headers and the aps payload
    assert "&#34;message&#34;:" in html and "&#34;token&#34;: &#34;" + "f" * 140 in html
    assert "&#34;apns-push-type&#34;: &#34;alert&#34;" in html
    assert "&#34;apns-priority&#34;: &#34;10&#34;" in html
    assert "&#34;aps&#34;:" in html
    # a refused notification says why, and sends nothing
    bad = client.post(f"{CONSOLE}/send", headers=ADMIN, data={**form, "title": ""})
    assert bad.status_code == 400
    assert "title" in bad.get_data(as_text=True)


def test_preview_of_a_dead_or_unknown_target_says_nothing_goes_out(
    console_app: Flask,
) -> None:
    with console_app.app_context():
        gone = datetime(2026, 5, 1, 10, 0, tzinfo=timezone.utc)
        dead = add_subscription("42", status="dead", dead_at=gone, dead_reason="410 Gone").id
        silent = add_subscription("42", status="dead", dead_at=gone).id
    client = console_app.test_client()
    form = {"csrf_token": csrf(client), "title": "Hello", "action": "preview"}

    def preview(target: str) -> str:
        answer = client.post(f"{CONSOLE}/send", headers=ADMIN, data={**form, "target": target})
        assert answer.status_code == 200
        return answer.get_data(as_text=True)

    html = preview(dead)
    webpush = html.split('id="preview-webpush"')[1].split("</article>")[0]
    assert "&#34;TTL&#34;" not in html  # no payload: the send skips a dead target
    assert "Nothing goes out: this subscription is dead." in webpush
    assert "that this subscription is gone: 410 Gone. It is never used again." in webpush
    assert "that this subscription is gone: no reason given." in preview(silent)
    html = preview("sub_01NOSUCHTARGET")
    assert html.count("Nothing goes out: no subscription or installation with the id") == 3
    assert "has no webpush target" not in html


def test_preview_uses_the_provider_stored_for_the_devices_app(
    make_app: Callable[..., Flask],
) -> None:
    """A device of an app with a provider of its own (``POST /providers``) is sent
    through that one: the preview shows its topic, not app.config's."""
    app = make_app(
        SECRET_KEY=SECRET,
        PUSH_APNS_KEY=pem(ec.generate_private_key(ec.SECP256R1())),
        PUSH_APNS_KEY_ID="ABC123DEFG",
        PUSH_APNS_TEAM_ID="DEF123GHIJ",
        PUSH_APNS_TOPIC="com.example.shop",
    )
    client = app.test_client()
    settings = {
        "key": pem(ec.generate_private_key(ec.SECP256R1())),
        "keyId": "BETA123456",
        "teamId": "DEF123GHIJ",
        "topic": "com.example.beta",
    }
    stored = client.post(
        "/push/providers",
        json={"appId": "beta", "kind": "apns", "settings": settings},
        headers=ADMIN,
    )
    assert stored.status_code == 201, stored.get_json()
    with app.app_context():
        db.session.add(
            push.models.Installation(
                app_id="beta", device_type="ios", device_token="ab" * 32, user_id="alice"
            )
        )
        db.session.commit()
    form = {"csrf_token": csrf(client), "user": "alice", "title": "Hi", "action": "preview"}
    html = client.post(f"{CONSOLE}/send", headers=ADMIN, data=form).get_data(as_text=True)
    assert "&#34;apns-topic&#34;: &#34;com.example.beta&#34;" in html
    assert "com.example.shop" not in html


def test_preview_and_send_share_one_mapping(console_app: Flask) -> None:
    """The provider's preview is made by build_payload, the very step a send runs."""
    from flask_push.console import preview
    from flask_push.message import Notification, OutgoingPush, WebPushTarget

    with console_app.app_context():
        sub = add_subscription("alice")
        provider = push.state.get_checkers()["webpush"]
        outgoing = OutgoingPush(
            "1",
            "msg_1",
            Notification(title="Hi", ttl=60, collapse_key="sale"),
            WebPushTarget(sub.endpoint, sub.p256dh, sub.auth),
            preview.CLICK_TOKEN,
        )
        built = provider.build_payload(outgoing)
        shown = provider.preview(outgoing)
    assert shown["headers"]["TTL"] == built.headers["TTL"] == "60"
    assert shown["headers"]["Topic"] == built.headers["Topic"] == "sale"
    assert shown["payload"]["title"] == "Hi" and shown["payload"]["clickToken"]


def test_providers_page_never_shows_secrets(
    make_app: Callable[..., Flask], vapid_private_key: str
) -> None:
    app = make_app(SECRET_KEY=SECRET, PUSH_FCM_CREDENTIALS=service_account())
    client = app.test_client()
    html = client.get(f"{CONSOLE}/providers", headers=ADMIN).get_data(as_text=True)
    assert vapid_private_key not in html
    assert "PRIVATE KEY" not in html
    assert "webpush" in html and "fcm" in html and "usable" in html
    assert "privateKey: set" in html
    assert "apns" in html and "PUSH_APNS_KEY" in html  # not configured: how to


def test_providers_page_writes_settings_as_json_does(make_app: Callable[..., Flask]) -> None:
    app = make_app(
        SECRET_KEY=SECRET,
        PUSH_APNS_KEY=pem(ec.generate_private_key(ec.SECP256R1())),
        PUSH_APNS_KEY_ID="ABC123DEFG",
        PUSH_APNS_TEAM_ID="DEF123GHIJ",
        PUSH_APNS_TOPIC="com.example.shop",
        PUSH_APNS_SANDBOX=False,
    )
    html = app.test_client().get(f"{CONSOLE}/providers", headers=ADMIN).get_data(as_text=True)
    assert "<dt>sandbox</dt><dd><code>false</code></dd>" in html
    assert "<dt>topic</dt><dd><code>com.example.shop</code></dd>" in html


def test_providers_page_says_what_a_stored_provider_sends_for(
    console_app: Flask, vapid_private_key: str
) -> None:
    client = console_app.test_client()
    for kind, settings in (
        ("fcm", {"credentials": service_account()}),
        ("webpush", {"privateKey": vapid_private_key, "subject": "mailto:ops@shop.example"}),
    ):
        created = client.post(
            "/push/providers",
            json={"appId": "shop", "kind": kind, "settings": settings},
            headers=ADMIN,
        )
        assert created.status_code == 201, created.get_json()
    html = client.get(f"{CONSOLE}/providers", headers=ADMIN).get_data(as_text=True)
    assert "For installations of this app id." in html
    assert "Browsers have no app id: Web Push sends with the app's config." in html
    # app.config has none: other apps' installations cannot be sent to
    assert "<strong>fcm</strong>: set" in html


def test_send_page_sends_and_links_to_the_message(console_app: Flask) -> None:
    with console_app.app_context():
        sub_id = add_subscription("alice").id
    client = console_app.test_client()
    form = {"csrf_token": csrf(client), "target": sub_id, "title": "Hello", "action": "send"}
    with console_app.app_context(), push.record() as outbox:
        answer = client.post(f"{CONSOLE}/send", headers=ADMIN, data=form)
    assert answer.status_code == 303
    assert re.search(r"/push/console/messages/msg_\w+\?done=sent$", answer.headers["Location"])
    assert [p.notification.title for p in outbox] == ["Hello"]
    page = client.get(answer.headers["Location"], headers=ADMIN).get_data(as_text=True)
    # every delivery has its outcome (push.record sends at once): none is said to come
    assert "Queued." not in page
    assert "Done: every delivery has its outcome, below." in page
    with console_app.app_context():
        waiting = push.send(users=["alice"], title="Later", send_at=later()).id
    page = client.get(f"{CONSOLE}/messages/{waiting}?done=sent", headers=ADMIN).get_data(
        as_text=True
    )
    assert "Queued. The outcomes below fill in as workers send." in page
    # a user with nothing to send to: the page says nothing went out, not "Queued"
    to_nobody = {**form, "target": "", "user": "nobody"}
    answer = client.post(f"{CONSOLE}/send", headers=ADMIN, data=to_nobody)
    assert answer.status_code == 303, answer.get_data(as_text=True)
    page = client.get(answer.headers["Location"], headers=ADMIN).get_data(as_text=True)
    assert "Queued." not in page
    assert "Nothing went out: no active browser or device of this audience." in page
    # and the list says so in its outcomes, rather than leave the cell empty
    listed = client.get(f"{CONSOLE}/messages", headers=ADMIN).get_data(as_text=True)
    assert listed.count("none: no browser or device to send to") == 1
    both = client.post(f"{CONSOLE}/send", headers=ADMIN, data={**form, "user": "alice"})
    assert both.status_code == 400
    # without a title (or spaces alone), to a target or to a user: said on the page
    for to in ({}, {"target": "", "user": "alice"}):
        for title in ("", "   "):
            untitled = client.post(
                f"{CONSOLE}/send", headers=ADMIN, data={**form, **to, "title": title}
            )
            assert untitled.status_code == 400
            said = untitled.get_data(as_text=True)
            # named once, by its label
            assert "Title: is required" in said and "Title: title:" not in said


def statements(app: Flask, client: Any, path: str) -> int:
    """SQL statements one console page runs."""
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        assert client.get(CONSOLE + path, headers=ADMIN).status_code == 200
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return len(seen)


def test_pages_run_a_bounded_number_of_queries(console_app: Flask) -> None:
    client = console_app.test_client()

    def grow(users: int) -> None:
        with console_app.app_context():
            for n in range(users):
                sub = add_subscription(f"user{n}")
                push.send(users=[f"user{n}"], title=f"Hello {n}")
                sub.status, sub.dead_at = "dead", datetime.now(timezone.utc)
            db.session.commit()

    grow(2)
    before = {path: statements(console_app, client, path) for path in ("/", "/messages")}
    grow(20)
    after = {path: statements(console_app, client, path) for path in ("/", "/messages")}
    assert after == before


def test_a_host_overrides_a_page_with_its_own_template(
    make_app: Callable[..., Flask], tmp_path: Any
) -> None:
    folder = tmp_path / "templates" / "flask_push" / "console"
    folder.mkdir(parents=True)
    (folder / "providers.html").write_text(
        '{% extends "flask_push/console/base.html" %}'
        "{% block main %}<h1>Our providers</h1>{% endblock %}",
        encoding="utf-8",
    )
    app = make_app(SECRET_KEY=SECRET)
    app.template_folder = str(tmp_path / "templates")
    html = app.test_client().get(f"{CONSOLE}/providers", headers=ADMIN).get_data(as_text=True)
    assert "<h1>Our providers</h1>" in html and "Test send" in html  # the console's nav
