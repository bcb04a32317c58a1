"""Notification policy: categories, each user's preferences, quiet hours and the daily
cap, applied at send time and sent through the real fakes (Web Push and FCM), on
SQLite and PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push import categories, outcomes, signals
from flask_push.errors import PushConfigError, ValidationError
from flask_push.preferences import QuietHours
from flask_push.testing import FakeFCM, FakePushService
from flask_push.testing.fcm import make_registration_token

from conftest import (
    as_user,
    db,
    instant,
    make_due,
    many_subscriptions,
    push,
    quiet_now,
    statements,
    subscribe,
)

CATEGORIES = {
    "order_status": {"label": "Order updates", "required": True},
    "offers": {"label": "Offers and deals", "default": True, "max_per_day": 2},
    "shares": {"label": "Things friends share", "channels": ["web", "inbox"]},
    "news": {"label": "News", "default": False},
}
ADMIN = as_user("root", admin=True)
#: far from UTC (UTC+14 all year): a window that crosses midnight there is daytime in UTC
KIRITIMATI = "Pacific/Kiritimati"


@pytest.fixture
def live(sending_app: Callable[..., Flask]) -> Flask:
    return sending_app(PUSH_CATEGORIES=CATEGORIES)


@contextmanager
def context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def browser_and_phone(service: FakePushService, user: str = "alice") -> tuple[Any, str]:
    """``user``'s browser (a fake push service's subscriber) and Android phone (its token)."""
    subscriber = service.subscribe(user)
    subscribe(subscriber, user)
    token = make_registration_token()
    db.session.add(
        push.models.Installation(
            app_id="shop", device_token=token, device_type="android", user_id=user
        )
    )
    db.session.commit()
    return subscriber, token


def statuses(message_id: str) -> dict[str, tuple[str, str | None]]:
    """kind -> (status, reason) of each delivery of a message."""
    d = push.models.Delivery
    rows = db.session.execute(
        sa.select(d.kind, d.status, d.reason).where(d.message_id == message_id)
    )
    return {kind: (status, reason) for kind, status, reason in rows}


def inbox_ids(user: str) -> set[str]:
    return {item.id for item in push.search(user).items}


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"required": True}, "needs 'label'"),
        ({"label": "Offers", "colour": "red"}, "unknown field 'colour'"),
        ({"label": "Offers", "channels": ["sms"]}, "'channels' must list some of web"),
        ({"label": "Offers", "channels": []}, "'channels' must list"),
        ({"label": "Offers", "channels": ["web", "web"]}, "names a channel twice"),
        ({"label": "Offers", "max_per_day": 0}, "'max_per_day'"),
        ({"label": "Offers", "max_per_day": "2"}, "'max_per_day'"),
        ({"label": "Offers", "required": "yes"}, "'required'"),
        ({"label": "Offers", "required": True, "default": False}, "contradicts"),
        ("Offers", "must be a dict"),
    ],
)
def test_a_bad_category_names_the_key_and_the_entry(entry: Any, says: str) -> None:
    with pytest.raises(PushConfigError) as raised:
        categories.load({"PUSH_CATEGORIES": {"offers": entry}})
    assert "PUSH_CATEGORIES['offers']" in str(raised.value)
    assert says in str(raised.value)


def test_init_app_refuses_bad_categories(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(PushConfigError, match=r"PUSH_CATEGORIES has the category id 'a b'"):
        make_app(PUSH_CATEGORIES={"a b": {"label": "Spaces"}})
    with pytest.raises(PushConfigError, match="PUSH_CATEGORIES must be a dict"):
        make_app(PUSH_CATEGORIES=["offers"])


def test_categories_keep_their_order_and_defaults() -> None:
    found = categories.load({"PUSH_CATEGORIES": CATEGORIES})
    assert list(found) == ["order_status", "offers", "shares", "news"]
    assert found["shares"].channels == ("web", "inbox")
    assert found["offers"].max_per_day == 2 and found["offers"].default
    assert not found["news"].default and not found["news"].required
    assert found["order_status"].is_on("web", {"web": False})  # required: always on
    assert not found["news"].is_on("web", None)  # opt-in: off until chosen
    assert found["news"].is_on("web", {"web": True})
    # a channel the user does not choose for a category follows its default
    assert found["shares"].is_on("mobile", {"mobile": False})


# -- preferences: Python and HTTP -------------------------------------------------------


def test_defaults_before_any_choice(live: Flask) -> None:
    answer = live.test_client().get("/push/preferences", headers=as_user("alice"))
    assert answer.status_code == 200
    assert answer.get_json() == {
        "categories": [
            {
                "id": "order_status",
                "label": "Order updates",
                "required": True,
                "channels": {"web": True, "mobile": True, "inbox": True},
            },
            {
                "id": "offers",
                "label": "Offers and deals",
                "required": False,
                "channels": {"web": True, "mobile": True, "inbox": True},
            },
            {
                "id": "shares",
                "label": "Things friends share",
                "required": False,
                "channels": {"web": True, "inbox": True},
            },
            {
                "id": "news",
                "label": "News",
                "required": False,
                "channels": {"web": False, "mobile": False, "inbox": False},
            },
        ],
        "quietHours": None,
    }


def test_patch_changes_only_what_it_names(live: Flask) -> None:
    client = live.test_client()
    alice = as_user("alice")
    first = client.patch(
        "/push/preferences", json={"categories": {"offers": {"web": False}}}, headers=alice
    )
    assert first.status_code == 200, first.get_json()
    second = client.patch(
        "/push/preferences",
        json={
            "categories": {"news": {"mobile": True}},
            "quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Europe/Berlin"},
        },
        headers=alice,
    )
    found = {c["id"]: c["channels"] for c in second.get_json()["categories"]}
    assert found["offers"] == {"web": False, "mobile": True, "inbox": True}
    assert found["news"] == {"web": False, "mobile": True, "inbox": False}
    assert second.get_json()["quietHours"] == {
        "start": "22:00",
        "end": "07:00",
        "timeZone": "Europe/Berlin",
    }
    # absent keeps the quiet hours; null removes them
    assert client.patch("/push/preferences", json={}, headers=alice).get_json()["quietHours"]
    removed = client.patch("/push/preferences", json={"quietHours": None}, headers=alice)
    assert removed.get_json()["quietHours"] is None
    # someone else's are their own
    bob = client.get("/push/preferences", headers=as_user("bob")).get_json()
    assert bob["categories"][1]["channels"]["web"] is True


#: eight changes of one channel each, none the default: each must be kept
EIGHT_CHANGES = [
    (category, channel, category == "news")
    for category, channels in [
        ("offers", ("web", "mobile", "inbox")),
        ("news", ("web", "mobile", "inbox")),
        ("shares", ("web", "inbox")),
    ]
    for channel in channels
]


@pytest.mark.parametrize("chose_before", [False, True], ids=["first choice", "chose before"])
def test_changes_at_once_each_keep_theirs(live: Flask, chose_before: bool) -> None:
    """Eight PATCHes at once, each of another channel: each change holds the user's
    row while it reads and writes, so none undoes another (before, most rounds lost
    some, on both databases)."""
    import threading

    def change(
        start: threading.Barrier,
        answers: list[int],
        user: dict[str, str],
        category: str,
        channel: str,
        on: bool,
    ) -> None:
        client = live.test_client()
        start.wait()
        body = {"categories": {category: {channel: on}}}
        answers.append(client.patch("/push/preferences", json=body, headers=user).status_code)

    for round in range(5):
        user = as_user(f"user{round}")
        if chose_before:
            live.test_client().patch("/push/preferences", json={}, headers=user)
        start = threading.Barrier(len(EIGHT_CHANGES))
        answers: list[int] = []
        threads = [
            threading.Thread(target=change, args=(start, answers, user, *each))
            for each in EIGHT_CHANGES
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [200] * len(EIGHT_CHANGES)
        shown = live.test_client().get("/push/preferences", headers=user).get_json()
        found = {c["id"]: c["channels"] for c in shown["categories"]}
        assert [found[category][channel] for category, channel, _ in EIGHT_CHANGES] == [
            on for _, _, on in EIGHT_CHANGES
        ], f"round {round}"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        (
            {"categories": {"order_status": {"web": False}}},
            "categories.order_status.web",
            "required_category",
        ),
        ({"categories": {"coupons": {"web": False}}}, "categories.coupons", "unknown_category"),
        (
            {"categories": {"shares": {"mobile": False}}},
            "categories.shares.mobile",
            "invalid_value",
        ),
        ({"categories": {"offers": {"web": "no"}}}, "categories.offers.web", "invalid_type"),
        ({"categories": {"offers": False}}, "categories.offers", "invalid_type"),
        ({"categories": ["offers"]}, "categories", "invalid_type"),
        ({"quietHours": {"start": "22:00", "end": "07:00"}}, "quietHours.timeZone", "required"),
        (
            {"quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Mars/Olympus"}},
            "quietHours.timeZone",
            "invalid_value",
        ),
        # files beside the tz database's names, not names ("localtime" is the server's zone)
        *(
            (
                {"quietHours": {"start": "22:00", "end": "07:00", "timeZone": zone}},
                "quietHours.timeZone",
                "invalid_value",
            )
            for zone in ("localtime", "posixrules", "right/UTC", "posix/Europe/Berlin")
        ),
        (
            {"quietHours": {"start": "25:00", "end": "07:00", "timeZone": "Europe/Berlin"}},
            "quietHours.start",
            "invalid_value",
        ),
        (
            {"quietHours": {"start": "7:00", "end": "08:00", "timeZone": "Europe/Berlin"}},
            "quietHours.start",
            "invalid_value",
        ),
        (
            {"quietHours": {"start": "22:00", "end": "22:00", "timeZone": "Europe/Berlin"}},
            "quietHours.end",
            "invalid_value",
        ),
        ({"quietHours": "22-07"}, "quietHours", "invalid_type"),
        # a lone surrogate as a channel (JSON's "\ud800"), named in the error as escaped
        *(
            ({"categories": {category: {"\ud800": on}}}, f"categories.{category}.\\ud800", code)
            for category, on, code in (
                ("offers", False, "invalid_value"),
                ("order_status", True, "invalid_value"),
            )
        ),
        ({"theme": "dark"}, "theme", "unknown_field"),
        # a refused change beside a valid one applies neither
        (
            {"categories": {"offers": {"web": True}, "news": {"fax": True}}},
            "categories.news.fax",
            "invalid_value",
        ),
        (
            {"categories": {"offers": {"web": True}}, "quietHours": {"start": "1"}},
            "quietHours.start",
            "invalid_value",
        ),
    ],
)
def test_a_refused_change_names_the_field_and_changes_nothing(
    live: Flask, body: dict[str, Any], field: str, code: str
) -> None:
    client = live.test_client()
    alice = as_user("alice")
    before = client.patch(
        "/push/preferences",
        json={
            "categories": {"offers": {"web": False}},
            "quietHours": {"start": "23:00", "end": "06:00", "timeZone": "Asia/Tokyo"},
        },
        headers=alice,
    ).get_json()
    answer = client.patch("/push/preferences", json=body, headers=alice)
    assert answer.status_code == 400, answer.get_json()
    error = answer.get_json()["error"]
    assert (error["field"], error["code"]) == (field, code), error
    assert "Traceback" not in error["message"]
    assert client.get("/push/preferences", headers=alice).get_json() == before


def test_a_channel_that_is_no_text_is_refused_from_python_too(live: Flask) -> None:
    with live.app_context(), pytest.raises(ValidationError) as refused:
        push.set_preferences("alice", categories={"offers": {"\ud800": False}})
    assert (refused.value.field, refused.value.code) == (
        "categories.offers.\\ud800",
        "invalid_value",
    )


def test_preferences_need_a_user(live: Flask) -> None:
    client = live.test_client()
    assert client.get("/push/preferences").status_code == 401
    assert client.patch("/push/preferences", json={}).status_code == 401


def test_an_operator_reads_a_users_preferences(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    client = live.test_client()
    alice = as_user("alice")
    client.patch(
        "/push/preferences", json={"categories": {"offers": {"web": False}}}, headers=alice
    )
    admin = as_user("root", admin=True)
    theirs = client.get("/push/users/alice/preferences", headers=admin)
    assert theirs.status_code == 200
    assert theirs.get_json() == client.get("/push/preferences", headers=alice).get_json()
    # one with a browser who never chose has the defaults
    with context(live):
        subscribe(push_fake_webpush.subscribe(), "bob")
    bob = client.get("/push/users/bob/preferences", headers=admin).get_json()
    assert bob == client.get("/push/preferences", headers=as_user("bob")).get_json()
    # and one who only has inbox items
    with context(live):
        push.send(users=["carol"], title="Welcome", inbox=True)
    assert client.get("/push/users/carol/preferences", headers=admin).status_code == 200
    # a mistyped id is said so, not answered with the defaults; only an admin may ask
    assert client.get("/push/users/nobody/preferences", headers=admin).status_code == 404
    assert client.get("/push/users/alice/preferences", headers=alice).status_code == 403
    bad = client.get("/push/users/" + "x" * 300 + "/preferences", headers=admin)
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "userId"


def test_python_api(live: Flask) -> None:
    with context(live):
        assert push.get_preferences("alice").categories["news"] == {
            "web": False,
            "mobile": False,
            "inbox": False,
        }
        changed = push.set_preferences(
            "alice",
            categories={"offers": {"web": False}},
            quiet_hours={"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"},
        )
        assert changed.categories["offers"]["web"] is False
        assert changed.quiet_hours == QuietHours("22:00", "07:00", "Europe/Berlin")
        kept = push.set_preferences("alice", categories={"news": {"web": True}})
        assert kept.quiet_hours is not None and kept.categories["offers"]["web"] is False
        # what get_preferences returns is what set_preferences takes: copied to bob
        mine = push.get_preferences("alice")
        copied = push.set_preferences(
            "bob", categories=mine.categories, quiet_hours=mine.quiet_hours
        )
        assert (copied.categories, copied.quiet_hours) == (mine.categories, mine.quiet_hours)
        assert push.set_preferences("alice", quiet_hours=None).quiet_hours is None
        with pytest.raises(ValidationError) as raised:
            push.set_preferences("alice", categories={"order_status": {"inbox": False}})
        assert raised.value.code == "required_category"
        with pytest.raises(ValidationError) as raised:
            push.set_preferences("", categories={})
        assert raised.value.field == "userId"


# -- applied at send time ---------------------------------------------------------------


def test_a_channel_turned_off_is_suppressed_and_not_counted(
    live: Flask, push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    with context(live):
        browser, phone = browser_and_phone(push_fake_webpush)
        push.set_preferences("alice", categories={"offers": {"web": False, "inbox": False}})
        message = push.send(users=["alice"], title="2 for 1", category="offers", inbox=True)
        assert statuses(message.id) == {
            "webpush": ("suppressed", "opted_out"),
            "fcm": ("sent", "accepted"),
        }
        assert message.recipient_count == 1
        assert inbox_ids("alice") == set()  # the inbox channel is off too
        [entry] = [e for e in push.explain(message.id) if e["status"] == "suppressed"]
        assert entry["reason"] == "opted_out"
        assert "they turned it off, or it is off until they turn it on" in entry["detail"]
        assert [event["what"] for event in entry["events"]] == ["suppressed"]
        # an uncategorised message is not subject to preferences
        plain = push.send(users=["alice"], title="Hello")
        assert {s for s, _ in statuses(plain.id).values()} == {"sent"}
        id = message.id
    assert browser.received and len(browser.received) == 1
    assert [m.token for m in push_fake_fcm.messages] == [phone, phone]
    shown = live.test_client().get(f"/push/messages/{id}", headers=ADMIN).get_json()
    assert shown["category"] == "offers"
    assert shown["recipientCount"] == 1
    assert shown["counts"]["suppressed"] == 1 and shown["counts"]["sent"] == 1


def test_a_channel_turned_off_is_suppressed_even_without_a_provider(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """The user's choice is the reason, not the missing FCM: the console shows no
    failure that an operator would look into."""
    app = sending_app(PUSH_CATEGORIES=CATEGORIES, PUSH_FCM_CREDENTIALS=None, PUSH_FCM_BASE_URL=None)
    with context(app):
        browser_and_phone(push_fake_webpush)
        push.set_preferences("alice", categories={"offers": {"mobile": False}})
        message = push.send(users=["alice"], title="Deal", category="offers")
        assert statuses(message.id) == {
            "webpush": ("sent", "accepted"),
            "fcm": ("suppressed", "opted_out"),
        }
        assert message.recipient_count == 1


def test_an_opt_in_category_reaches_only_who_turned_it_on(
    live: Flask, push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    with context(live):
        alice, _ = browser_and_phone(push_fake_webpush, "alice")
        bob, _ = browser_and_phone(push_fake_webpush, "bob")
        push.set_preferences("bob", categories={"news": {"web": True, "inbox": True}})
        message = push.send(users=["alice", "bob"], title="News", category="news", inbox=True)
        assert message.recipient_count == 1
        assert inbox_ids("alice") == set() and inbox_ids("bob") == {message.id}
    assert not alice.received and len(bob.received) == 1
    assert not push_fake_fcm.messages  # nobody turned news on for their phone


AUDIENCES: dict[str, Callable[[str], dict[str, Any]]] = {
    "users": lambda _: {"users": ["alice", "bob"]},
    "topic": lambda _: {"topic": "deals"},
    "query": lambda _: {"query": {"userId": {"inq": ["alice", "bob"]}}},
    "everyone": lambda _: {"everyone": True},
}


@pytest.mark.parametrize("audience", [*AUDIENCES, "notify_by_id", "POST /messages"])
def test_every_audience_is_subject_to_preferences(
    live: Flask, push_fake_webpush: FakePushService, audience: str
) -> None:
    with context(live):
        subscriptions = {}
        for user in ("alice", "bob"):
            subscription = subscribe(push_fake_webpush.subscribe(user), user)
            subscription.topics = ["deals"]
            subscriptions[user] = subscription.id
        db.session.commit()
        push.set_preferences("alice", categories={"offers": {"web": False}})
        if audience == "notify_by_id":
            message = push.notify_by_id(subscriptions["alice"], title="Deal", category="offers")
            expected = {"suppressed": 1}
        elif audience == "POST /messages":
            answer = live.test_client().post(
                "/push/messages",
                json={
                    "audience": {"users": ["alice", "bob"]},
                    "notification": {"title": "Deal", "category": "offers"},
                },
                headers=ADMIN,
            )
            assert answer.status_code == 202, answer.get_json()
            assert answer.get_json()["recipientCount"] == 1
            message = db.session.get(push.models.Message, answer.get_json()["id"])
            expected = {"suppressed": 1, "sent": 1}
        else:
            message = push.send(**AUDIENCES[audience](""), title="Deal", category="offers")
            expected = {"suppressed": 1, "sent": 1}
        d = push.models.Delivery
        found = dict(
            db.session.execute(
                sa.select(d.status, sa.func.count())
                .where(d.message_id == message.id)
                .group_by(d.status)
            ).all()
        )
        assert found == expected
        assert message.recipient_count == expected.get("sent", 0)


def test_an_unknown_category_is_refused_and_nothing_is_written(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    with context(live):
        subscribe(push_fake_webpush.subscribe())
        with pytest.raises(ValidationError) as raised:
            push.send(users=["alice"], title="Deal", category="coupons")
        assert (raised.value.code, raised.value.field) == ("unknown_category", "category")
        assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Message)) == 0
    answer = live.test_client().post(
        "/push/messages",
        json={"audience": {"everyone": True}, "notification": {"title": "x", "category": "zz"}},
        headers=ADMIN,
    )
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "unknown_category"


# -- quiet hours ------------------------------------------------------------------------


def test_quiet_hours_cross_midnight_in_the_users_zone() -> None:
    night = QuietHours("22:00", "07:00", KIRITIMATI)
    # 23:30 on Dec 4 in Kiritimati (UTC+14) is 09:30 UTC: quiet until 07:00 on Dec 5 there
    assert night.ends_after(datetime(2026, 12, 4, 9, 30, tzinfo=timezone.utc)) == datetime(
        2026, 12, 4, 17, 0, tzinfo=timezone.utc
    )
    # 06:59 on Dec 5 there (16:59 UTC): a minute left
    assert night.ends_after(datetime(2026, 12, 4, 16, 59, tzinfo=timezone.utc)) == datetime(
        2026, 12, 4, 17, 0, tzinfo=timezone.utc
    )
    # 07:00 and 21:59 there are outside
    assert night.ends_after(datetime(2026, 12, 4, 17, 0, tzinfo=timezone.utc)) is None
    assert night.ends_after(datetime(2026, 12, 5, 7, 59, tzinfo=timezone.utc)) is None
    # a window inside one day
    lunch = QuietHours("12:00", "13:30", "Europe/Berlin")
    assert lunch.ends_after(datetime(2026, 12, 4, 11, 15, tzinfo=timezone.utc)) == datetime(
        2026, 12, 4, 12, 30, tzinfo=timezone.utc
    )
    assert lunch.ends_after(datetime(2026, 12, 4, 12, 30, tzinfo=timezone.utc)) is None


def test_quiet_hours_across_the_clock_changes() -> None:
    """In the hour an autumn night repeats, the end is the one after the time
    asked about; an end a spring night skips is the clock change itself."""
    night = QuietHours("01:00", "02:30", "Europe/Berlin")
    utc = timezone.utc
    # 26 Oct 2025: 02:15 CEST (00:15 UTC), the first pass: it ends at 02:30 CEST
    assert night.ends_after(datetime(2025, 10, 26, 0, 15, tzinfo=utc)) == datetime(
        2025, 10, 26, 0, 30, tzinfo=utc
    )
    # 02:15 CET (01:15 UTC), the second pass: 02:30 CEST is over, it ends at 02:30 CET
    assert night.ends_after(datetime(2025, 10, 26, 1, 15, tzinfo=utc)) == datetime(
        2025, 10, 26, 1, 30, tzinfo=utc
    )
    assert night.ends_after(datetime(2025, 10, 26, 1, 30, tzinfo=utc)) is None
    # 30 Mar 2025: 02:30 is skipped (02:00 CET becomes 03:00 CEST at 01:00 UTC): at
    # 01:30 CET the window ends with the change, when the clock already shows later
    # than its end and "is it quiet?" answers no
    change = datetime(2025, 3, 30, 1, 0, tzinfo=utc)
    assert night.ends_after(datetime(2025, 3, 30, 0, 30, tzinfo=utc)) == change
    assert night.ends_after(change - timedelta(seconds=1)) == change
    assert night.ends_after(change) is None
    assert night.ends_after(datetime(2025, 3, 30, 1, 10, tzinfo=utc)) is None  # 03:10 CEST
    # a window across midnight, and another zone (Santiago: 24:00 becomes 23:00 in
    # autumn there, 00:00 becomes 01:00 in its spring, 7 Sep 2025 at 04:00 UTC)
    late = QuietHours("22:00", "00:30", "America/Santiago")
    spring = datetime(2025, 9, 7, 4, 0, tzinfo=utc)
    assert late.ends_after(datetime(2025, 9, 7, 3, 50, tzinfo=utc)) == spring
    assert late.ends_after(spring) is None


def _utc(*at: int) -> datetime:
    return datetime(*at, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("window", "zone", "begun", "back", "end"),
    [
        # 1 Nov 2026: it begins at 01:30 EDT (05:30 UTC); 01:59 EDT becomes 01:00 EST
        # at 06:00 UTC; it ends at 03:00 EST
        (
            ("01:30", "03:00"),
            "America/New_York",
            _utc(2026, 11, 1, 5, 35),
            _utc(2026, 11, 1, 6, 10),  # 01:10 EST
            _utc(2026, 11, 1, 8, 0),
        ),
        # 25 Oct 2026: 02:15 CEST begins it; 02:59 CEST becomes 02:00 CET at 01:00 UTC
        (
            ("02:15", "05:00"),
            "Europe/Berlin",
            _utc(2026, 10, 25, 0, 20),
            _utc(2026, 10, 25, 1, 5),  # 02:05 CET
            _utc(2026, 10, 25, 4, 0),
        ),
        # 5 Apr 2026 on Lord Howe: 01:59 (UTC+11) becomes 01:30 (UTC+10:30) at 15:00 UTC
        (
            ("01:45", "02:15"),
            "Australia/Lord_Howe",
            _utc(2026, 4, 4, 14, 50),
            _utc(2026, 4, 4, 15, 5),  # 01:35, the second time
            _utc(2026, 4, 4, 15, 45),
        ),
    ],
)
def test_quiet_hours_begun_before_the_clock_goes_back_go_on(
    window: tuple[str, str], zone: str, begun: datetime, back: datetime, end: datetime
) -> None:
    """A window that begins in the hour an autumn night repeats stays on when the
    clock goes back to before its start: quiet from 01:30 to 03:00 in New York, a
    push at 01:10 EST (after 01:30 EDT) went out at once, in the middle of it."""
    night = QuietHours(*window, zone)
    assert night.ends_after(begun) == end
    assert night.ends_after(back) == end
    assert night.ends_after(end - timedelta(seconds=1)) == end
    assert night.ends_after(end) is None


def next_fall_back(zone: str) -> datetime:
    """The next instant (UTC) the clock in ``zone`` goes back: up to 371 days ahead
    (52 or 53 weeks when the rule is "the first Sunday in November")."""
    tz, at = ZoneInfo(zone), datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    for _ in range(372 * 96):
        later = at + timedelta(minutes=15)
        offset = later.astimezone(tz).utcoffset()
        if offset is not None and offset < at.astimezone(tz).utcoffset():  # type: ignore[operator]
            return later
        at = later
    raise AssertionError(f"{zone} keeps its offset all year")


def test_a_push_in_the_repeated_hour_waits_for_the_windows_end(
    live: Flask, push_fake_webpush: FakePushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent through the real dispatcher on the night New York's clocks go back: at
    01:10 EST, in quiet hours 01:30 to 03:00 that began at 01:30 EDT, the push
    waits for 03:00 EST and its timeline says so."""
    from flask_push.schemas import notification

    # in the days after a night the clocks went back, the next one can be up to 371
    # days ahead (1 Nov 2026, then 7 Nov 2027), past how far a send may be scheduled
    monkeypatch.setattr(notification, "MAX_SCHEDULE_DAYS", 372)
    zone = "America/New_York"
    with context(live):
        browser = push_fake_webpush.subscribe("alice")
        subscribe(browser, "alice")
        push.set_preferences(
            "alice", quiet_hours={"start": "01:30", "end": "03:00", "time_zone": zone}
        )
        back = next_fall_back(zone)  # 01:59:59 EDT becomes 01:00 EST
        at = back + timedelta(minutes=10)
        end = back + timedelta(hours=2)
        assert f"{at.astimezone(ZoneInfo(zone)):%H:%M %Z}" == "01:10 EST"
        message = push.send(users=["alice"], title="Deal", category="offers", send_at=at)
        assert statuses(message.id) == {"webpush": ("queued", "quiet_hours")}
        d = push.models.Delivery
        assert db.session.scalar(sa.select(d.due_at).where(d.message_id == message.id)) == end
        [entry] = push.explain(message.id)
        assert entry["detail"] == outcomes.detail("quiet_hours", next=end)
        assert f"{end:%H:%M} UTC" in entry["detail"]
        # 03:00 EST has come: the window is over, whatever the hour this test runs at
        # (run between 01:30 and 03:00 in New York, the worker would rightly hold it)
        quiet_hours_ended()
        make_due(message.id)
        push.dispatch_due()
        assert statuses(message.id) == {"webpush": ("sent", "accepted")}
    assert [p.json()["title"] for p in browser.received] == ["Deal"]


def next_local(clock: time, zone: str) -> datetime:
    """The next time the clock in ``zone`` shows ``clock``, at least a minute from now (UTC)."""
    tz = ZoneInfo(zone)
    now = datetime.now(tz) + timedelta(minutes=1)
    at = datetime.combine(now.date(), clock, tzinfo=tz)
    if at <= now:
        at = datetime.combine(now.date() + timedelta(days=1), clock, tzinfo=tz)
    return at.astimezone(timezone.utc)


def test_quiet_hours_defer_pushes_but_not_the_inbox_item(
    live: Flask, push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    with context(live):
        browser, _ = browser_and_phone(push_fake_webpush)
        push.set_preferences(
            "alice", quiet_hours={"start": "22:00", "end": "07:00", "time_zone": KIRITIMATI}
        )
        late = next_local(time(23, 30), KIRITIMATI)
        message = push.send(
            users=["alice"], title="Deal", category="offers", inbox=True, send_at=late
        )
        assert message.recipient_count == 2
        assert statuses(message.id) == {
            "webpush": ("queued", "quiet_hours"),
            "fcm": ("queued", "quiet_hours"),
        }
        # the inbox item waits for send_at, not for the quiet hours
        assert inbox_ids("alice") == set()
        held = push.models.ScheduledInboxItem
        db.session.execute(sa.update(held).values(due_at=datetime.now(timezone.utc)))
        db.session.commit()
        assert push.dispatch_due() == 0
        assert inbox_ids("alice") == {message.id}
        d = push.models.Delivery
        due = set(db.session.scalars(sa.select(d.due_at).where(d.message_id == message.id)))
        # 07:00 the next morning in Kiritimati
        assert due == {late + timedelta(hours=7, minutes=30)}
        [entry, _] = push.explain(message.id)
        assert [e["what"] for e in entry["events"]] == ["queued", "deferred"]
        assert "quiet hours" in entry["detail"]
        shown = live.test_client().get(f"/push/messages/{message.id}", headers=ADMIN).get_json()
        assert shown["counts"]["deferred"] == 2 and shown["counts"]["queued"] == 2
        page = live.test_client().get(f"/push/console/messages/{message.id}", headers=ADMIN)
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        assert "<code>offers</code>" in text
        assert '<dd id="count-deferred">2</dd>' in text
        assert "It waits for the end of the user&#39;s quiet hours" in text
        # required categories do not wait
        urgent = push.send(
            users=["alice"], title="Your order", category="order_status", send_at=late
        )
        assert {s for s, _ in statuses(urgent.id).values()} == {"queued"}
        assert set(db.session.scalars(sa.select(d.due_at).where(d.message_id == urgent.id))) == {
            late
        }
        # when the window ends, the waiting pushes go (the clock past its end, whatever
        # the hour this test runs at: 08:00-17:00 UTC is night in Kiritimati)
        quiet_hours_ended()
        db.session.execute(
            sa.update(d).where(d.message_id == message.id).values(due_at=datetime.now(timezone.utc))
        )
        db.session.commit()
        push.dispatch_due(message_id=message.id)
        assert {s for s, _ in statuses(message.id).values()} == {"sent"}
    assert len(browser.received) == 1 and len(push_fake_fcm.messages) == 1


# -- choices changed while a push waits ---------------------------------------------------


def test_a_category_turned_off_ends_the_pushes_that_wait_for_it(
    live: Flask, push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    """The user's choices are theirs until a push goes: an offer scheduled for
    tomorrow, which she turns off tonight, is not sent, and its inbox item is not
    written (before, both came at send_at)."""
    with context(live):
        browser, _ = browser_and_phone(push_fake_webpush)
        tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
        offer = push.send(
            users=["alice"], title="Deal", category="offers", inbox=True, send_at=tomorrow
        )
        news = push.send(users=["alice"], title="News", category="shares", send_at=tomorrow)
        push.set_preferences("alice", categories={"offers": {"web": False, "inbox": False}})
        assert statuses(offer.id) == {
            "webpush": ("suppressed", "opted_out"),
            "fcm": ("queued", None),  # mobile stays on
        }
        [web] = [e for e in push.explain(offer.id) if e["target"]["kind"] == "webpush"]
        assert [e["what"] for e in web["events"]] == ["queued", "suppressed"]
        assert "off on the web (browsers)" in web["events"][-1]["detail"]
        # another category
        assert statuses(news.id) == {"webpush": ("queued", None), "fcm": ("queued", None)}
        make_due(offer.id)
        make_due(news.id)
        push.dispatch_due()
        assert statuses(offer.id) == {
            "webpush": ("suppressed", "opted_out"),
            "fcm": ("sent", "accepted"),
        }
        assert [p.json()["title"] for p in browser.received] == ["News"]
        assert inbox_ids("alice") == set()
    shown = live.test_client().get(f"/push/messages/{offer.id}", headers=ADMIN).get_json()
    assert (shown["counts"]["suppressed"], shown["counts"]["sent"]) == (1, 1)


def test_a_push_a_stopped_worker_held_is_not_sent_after_the_user_opted_out(
    live: Flask, push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    """An offer held for quiet hours, claimed when they ended by a worker that then
    stopped: the shopper turned offers off while its claim lasted, which left it to
    that worker, and once the claim ran out the next worker sent it. The worker that
    claims a push now checks the user's choices as they are then."""
    with context(live):
        browser, _ = browser_and_phone(push_fake_webpush)
        quiet_now()
        offer = push.send(users=["alice"], title="Deal", category="offers")
        assert statuses(offer.id) == {
            "webpush": ("queued", "quiet_hours"),
            "fcm": ("queued", "quiet_hours"),
        }
        now = datetime.now(timezone.utc)
        # the quiet hours end; a worker claims both and stops before sending
        make_due(offer.id, lease_until=now + timedelta(minutes=5), attempts=1)
        offer_id = offer.id
        push.set_preferences("alice", categories={"offers": {"web": False, "mobile": False}})
        assert statuses(offer.id) == {
            "webpush": ("queued", "quiet_hours"),
            "fcm": ("queued", "quiet_hours"),
        }
        make_due(offer.id, lease_until=now - timedelta(seconds=1))  # its claim ran out
        push.dispatch_due()
        assert statuses(offer.id) == {
            "webpush": ("suppressed", "opted_out"),
            "fcm": ("suppressed", "opted_out"),
        }
        for entry in push.explain(offer.id):
            assert entry["events"][-1]["what"] == "suppressed"
            assert entry["detail"].startswith('The category "Offers and deals" is off on')
        # what her choices do not hold back goes as before
        other = push.send(users=["alice"], title="Look", category="order_status")
        assert statuses(other.id) == {"webpush": ("sent", "accepted"), "fcm": ("sent", "accepted")}
    assert [p.json()["title"] for p in browser.received] == ["Look"]
    assert [m.notification["title"] for m in push_fake_fcm.messages] == ["Look"]
    shown = live.test_client().get(f"/push/messages/{offer_id}", headers=ADMIN).get_json()
    assert shown["counts"]["suppressed"] == 2


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_an_opt_out_while_a_send_is_written_holds_its_push_back(
    database: dict[str, Any],
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shopper turns offers off while a broadcast of one is being written: the
    change commits after the send read her choices and before its rows are there
    for the change to end, and the offer went out. The worker now holds it back."""
    import threading

    from flask_push import policy

    app = sending_app(PUSH_CATEGORIES=CATEGORIES)
    read = policy.stored_for

    def opt_out() -> None:
        with app.app_context():
            push.set_preferences("alice", categories={"offers": {"web": False}})

    def read_then_opt_out(*args: Any) -> Any:
        found = read(*args)
        monkeypatch.setattr(policy, "stored_for", read)  # once: the send's read
        # another request, committed while the send's transaction is open
        thread = threading.Thread(target=opt_out)
        thread.start()
        thread.join()
        return found

    with context(app):
        browser = push_fake_webpush.subscribe("alice")
        subscribe(browser, "alice")
        monkeypatch.setattr(policy, "stored_for", read_then_opt_out)
        offer = push.send(users=["alice"], title="Deal", category="offers")
        assert push.get_preferences("alice").categories["offers"]["web"] is False
        push.dispatch_due()
        assert statuses(offer.id) == {"webpush": ("suppressed", "opted_out")}
    assert browser.received == []


def test_inbox_items_dropped_for_a_choice_do_not_end_the_writing_early(
    live: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer goes on while whole batches are due: a batch whose items were all
    dropped (their users turned the inbox off) is not "the last one"."""
    from flask_push import scheduled_inbox

    monkeypatch.setattr(scheduled_inbox, "WRITE_AT_ONCE", 2)
    users = ["a", "b", "c", "d"]
    with context(live):
        tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
        message = push.send(
            users=users, title="Deal", category="offers", inbox=True, send_at=tomorrow
        )
        for user in users[:3]:
            push.set_preferences(user, categories={"offers": {"inbox": False}})
        make_due(message.id)
        push.dispatch_due()
        assert [inbox_ids(user) for user in users] == [set(), set(), set(), {message.id}]
        held = push.models.ScheduledInboxItem
        assert db.session.scalars(sa.select(held.user_id)).all() == []


def test_quiet_hours_changed_move_the_pushes_that_wait(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """Quiet hours set after a push was scheduled hold it to their end; quiet hours
    removed let go at once what waited for them (before, it waited for the old end)."""
    with context(live):
        browser = push_fake_webpush.subscribe("alice")
        subscribe(browser, "alice")
        late = next_local(time(23, 30), KIRITIMATI)
        scheduled = push.send(users=["alice"], title="Deal", category="offers", send_at=late)
        d = push.models.Delivery

        def due_of(message_id: str) -> datetime:
            return db.session.scalar(sa.select(d.due_at).where(d.message_id == message_id))

        assert due_of(scheduled.id) == late
        push.set_preferences(
            "alice", quiet_hours={"start": "22:00", "end": "07:00", "time_zone": KIRITIMATI}
        )
        assert statuses(scheduled.id) == {"webpush": ("queued", "quiet_hours")}
        assert due_of(scheduled.id) == late + timedelta(hours=7, minutes=30)
        [entry] = push.explain(scheduled.id)
        assert [e["what"] for e in entry["events"]] == ["queued", "deferred"]
        assert "changed their quiet hours" in entry["events"][-1]["detail"]
        # one that waits for quiet hours now goes as soon as they are removed
        quiet_now()
        held = push.send(users=["alice"], title="Flash sale", category="offers")
        assert statuses(held.id) == {"webpush": ("queued", "quiet_hours")}
        # a change of something else moves nothing, and says nothing of quiet hours
        [before] = push.explain(held.id)
        push.set_preferences("alice", categories={"news": {"web": True}})
        [after] = push.explain(held.id)
        assert after["events"] == before["events"]
        assert due_of(held.id) > datetime.now(timezone.utc)
        push.set_preferences("alice", quiet_hours=None)
        assert statuses(held.id) == {"webpush": ("queued", None)}
        assert due_of(held.id) <= datetime.now(timezone.utc)
        assert due_of(scheduled.id) == late  # its own time again
        push.dispatch_due()
        assert statuses(held.id) == {"webpush": ("sent", "accepted")}
        assert [p.json()["title"] for p in browser.received] == ["Flash sale"]


# SQLite keeps no time zone: what it hands back is UTC already
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.usefixtures("same_utc_day")
def test_times_said_are_utc_whatever_the_databases_time_zone(
    database: dict[str, Any],
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
) -> None:
    """A PostgreSQL server whose time zone is not UTC (initdb takes the machine's)
    hands timestamps back in its own zone: a scheduled push moved by quiet hours
    said "it is due at 16:30 UTC" for 21:30 UTC, and the console read its times so
    too."""
    options = database["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]["options"]
    engine = {"connect_args": {"options": f"{options} -ctimezone=America/New_York"}}
    app = sending_app(PUSH_CATEGORIES=CATEGORIES, SQLALCHEMY_ENGINE_OPTIONS=engine)
    with context(app):
        subscribe(push_fake_webpush.subscribe("alice"), "alice")
        send_at = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(hours=3)
        message = push.send(users=["alice"], title="Deal", category="offers", send_at=send_at)
        end = send_at + timedelta(hours=1)
        window = {"start": f"{send_at - timedelta(hours=1):%H:%M}", "end": f"{end:%H:%M}"}
        push.set_preferences("alice", quiet_hours={**window, "time_zone": "UTC"})
        assert statuses(message.id) == {"webpush": ("queued", "quiet_hours")}
        [entry] = push.explain(message.id)
        assert entry["detail"].endswith(f"it is due at {outcomes.clock(end)}.")
    page = app.test_client().get(f"/push/console/messages/{message.id}", headers=ADMIN)
    assert "Next attempt <time" in page.get_data(as_text=True)
    assert f"{end:%b} {end.day}, {end:%H:%M:%S} UTC</time>" in page.get_data(as_text=True)


def test_a_deleted_browser_or_device_ends_its_waiting_pushes_at_once(
    live: Flask, push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    """A push held for quiet hours to a browser or device the user then deletes: it
    ended only when the quiet hours did (hours on), "waiting for the end of the
    user's quiet hours". Now the next worker round ends it, as the target is gone."""
    with context(live):
        _, token = browser_and_phone(push_fake_webpush)
        s, i = push.models.Subscription, push.models.Installation
        browser = db.session.scalar(sa.select(s.id).where(s.user_id == "alice"))
        phone = db.session.scalar(sa.select(i.id).where(i.device_token == token))
        quiet_now()
        held = push.send(users=["alice"], title="Flash sale", category="offers")
        assert statuses(held.id) == {
            "webpush": ("queued", "quiet_hours"),
            "fcm": ("queued", "quiet_hours"),
        }
        client = live.test_client()
        for path in (f"/push/subscriptions/{browser}", f"/push/installations/{phone}"):
            assert client.delete(path, headers=as_user("alice")).status_code == 204
        push.dispatch_due()
        assert statuses(held.id) == {
            "webpush": ("gone", "target_dead"),
            "fcm": ("gone", "target_dead"),
        }
        for entry in push.explain(held.id):
            assert "was already dead or deleted" in entry["detail"]
        assert push_fake_webpush.requests == []
        assert push_fake_fcm.send_attempts == 0

        # a browser's renewed subscription (oldEndpoint) replaces the old one alike
        old = push_fake_webpush.subscribe("alice")
        subscribe(old, "alice")
        waiting = push.send(users=["alice"], title="Flash sale", category="offers")
        renewed = push_fake_webpush.subscribe("alice")
        body = {**renewed.info, "oldEndpoint": old.endpoint}
        answer = client.post("/push/subscriptions", json=body, headers=as_user("alice"))
        assert answer.status_code == 201, answer.get_json()
        push.dispatch_due()
        assert statuses(waiting.id) == {"webpush": ("gone", "target_dead")}


def test_quiet_hours_that_outlast_a_waiting_push_expire_it(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    with context(live):
        subscribe(push_fake_webpush.subscribe("alice"), "alice")
        soon = datetime.now(timezone.utc) + timedelta(minutes=10)
        message = push.send(
            users=["alice"], title="Deal", category="offers", ttl=1800, send_at=soon
        )
        quiet_now()
        assert statuses(message.id) == {"webpush": ("expired", "quiet_hours_expired")}


def test_quiet_hours_longer_than_the_ttl_expire_it(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    with context(live):
        subscribe(push_fake_webpush.subscribe())
        push.set_preferences(
            "alice", quiet_hours={"start": "22:00", "end": "07:00", "time_zone": KIRITIMATI}
        )
        message = push.send(
            users=["alice"],
            title="Flash sale, one hour",
            category="offers",
            ttl=3600,
            send_at=next_local(time(23, 0), KIRITIMATI),
        )
        assert statuses(message.id) == {"webpush": ("expired", "quiet_hours_expired")}
        assert message.recipient_count == 0
        [entry] = push.explain(message.id)
        assert [e["what"] for e in entry["events"]] == ["queued", "deferred", "expired"]
        assert "time to live" in entry["detail"]
        message_id = message.id
    # the message's problems say why, where they said "no reason was recorded"
    shown = live.test_client().get(f"/push/messages/{message_id}", headers=ADMIN).get_json()
    assert [(p["status"], p["reason"], p["count"]) for p in shown["problems"]] == [
        ("expired", "the user's quiet hours last past its time to live", 1)
    ]


def quiet_soon(user: str = "alice") -> datetime:
    """Quiet hours for ``user`` (UTC) from half an hour from now to three hours from
    now: a retry an hour away falls in them. Returns their end."""
    now = datetime.now(timezone.utc)
    start, end = now + timedelta(minutes=30), now + timedelta(hours=3)
    window = {"start": f"{start:%H:%M}", "end": f"{end:%H:%M}", "time_zone": "UTC"}
    push.set_preferences(user, quiet_hours=window)
    return end.replace(second=0, microsecond=0)


def retries(message_id: str) -> dict[str, Any]:
    """kind -> the delivery row of each delivery of a message."""
    d = push.models.Delivery
    query = sa.select(d).where(d.message_id == message_id)
    return {
        row.kind: row for row in db.session.scalars(query.execution_options(populate_existing=True))
    }


@pytest.mark.usefixtures("same_utc_day")
def test_a_retry_that_would_come_in_quiet_hours_waits_for_their_end(
    live: Flask, push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    """An offer sent at 21:50 while the push services are down, asked to come back in
    an hour: its retry came at 22:50, in her 22:00-07:00 quiet hours. Now it waits
    for their end, counted and shown as a push held at send time is; a required
    category's retry does not wait, and a change of the quiet hours moves it, never
    to before the time its service asked for."""
    with context(live):
        browser, token = browser_and_phone(push_fake_webpush)
        end = quiet_soon()
        for _ in range(2):  # the offer's and the order update's
            push_fake_webpush.fail_next(503, retry_after=3600)
            push_fake_fcm.fail_next(503, "UNAVAILABLE", retry_after=3600)
        before = datetime.now(timezone.utc)
        offer = push.send(users=["alice"], title="Deal", category="offers")
        urgent = push.send(users=["alice"], title="Your order", category="order_status")
        assert statuses(offer.id) == {
            "webpush": ("queued", "quiet_hours"),
            "fcm": ("queued", "quiet_hours"),
        }
        for row in retries(offer.id).values():
            assert row.attempts == 1 and row.due_at == end
        # a required category goes when its service asked, quiet hours or not
        assert statuses(urgent.id) == {
            "webpush": ("queued", "unavailable"),
            "fcm": ("queued", "unavailable"),
        }
        for row in retries(urgent.id).values():
            assert before + timedelta(hours=1) <= row.due_at < end - timedelta(hours=1)
        for entry in push.explain(offer.id):
            assert [e["what"] for e in entry["events"]] == [
                "queued",
                "attempt",
                "retry",
                "deferred",
            ]
            asked = instant(entry["events"][2]["nextAttemptAt"])
            assert before + timedelta(hours=1) <= asked < end
            assert entry["detail"] == (
                f"Its next try, at {outcomes.clock(asked)}, would fall in the user's quiet "
                f"hours: it waits for their end, at {outcomes.clock(end)}."
            )
            assert instant(entry["events"][-1]["nextAttemptAt"]) == end
            assert instant(entry["nextAttemptAt"]) == end
        shown = live.test_client().get(f"/push/messages/{offer.id}", headers=ADMIN).get_json()
        assert shown["counts"]["deferred"] == 2 and shown["counts"]["queued"] == 2
        page = live.test_client().get(f"/push/console/messages/{offer.id}", headers=ADMIN)
        text = page.get_data(as_text=True)
        assert '<dd id="count-deferred">2</dd>' in text
        assert "would fall in the user&#39;s quiet hours: it waits for their end" in text

        # quiet hours removed: due when its service asked again, for the same reason
        push.set_preferences("alice", quiet_hours=None)
        assert statuses(offer.id) == {
            "webpush": ("queued", "unavailable"),
            "fcm": ("queued", "unavailable"),
        }
        for entry in push.explain(offer.id):
            asked = instant(entry["events"][2]["nextAttemptAt"])
            row = retries(offer.id)[entry["target"]["kind"]]
            assert row.due_at == asked and "503" in row.error
        make_due(offer.id)
        push.dispatch_due(message_id=offer.id)
        assert {s for s, _ in statuses(offer.id).values()} == {"sent"}
    assert [p.json()["title"] for p in browser.received] == ["Deal"]
    assert [m.token for m in push_fake_fcm.messages] == [token]


@pytest.mark.usefixtures("same_utc_day")
def test_the_cli_says_a_held_retry_failed_a_try(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """Waiting for quiet hours is no failure, but a retry held for them is one: the
    push service did not take it."""
    with context(live):
        subscribe(push_fake_webpush.subscribe("alice"), "alice")
        end = quiet_soon()
    push_fake_webpush.fail_next(503, retry_after=3600)
    result = live.test_cli_runner().invoke(
        args=["push", "send", "--user", "alice", "--title", "Deal", "--category", "offers"]
    )
    assert result.exit_code == 1, result.output
    assert "waiting (1): quiet_hours: Its next try, at " in result.output
    assert f"it waits for their end, at {outcomes.clock(end)}." in result.output
    assert "Nothing was delivered; the reasons are above." in result.output


def test_quiet_hours_changed_move_a_held_retry_never_before_its_time(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    with context(live):
        subscribe(push_fake_webpush.subscribe("alice"), "alice")
        end = quiet_soon()
        push_fake_webpush.fail_next(503, retry_after=3600)
        offer = push.send(users=["alice"], title="Deal", category="offers")
        [row] = retries(offer.id).values()
        assert (row.reason, row.due_at) == ("quiet_hours", end)
        [entry] = push.explain(offer.id)
        asked = instant(entry["events"][2]["nextAttemptAt"])
        now = datetime.now(timezone.utc)

        def window(start: datetime, end: datetime) -> dict[str, str]:
            return {"start": f"{start:%H:%M}", "end": f"{end:%H:%M}", "time_zone": "UTC"}

        # longer quiet hours: held to their end
        longer = now + timedelta(hours=5)
        push.set_preferences("alice", quiet_hours=window(now + timedelta(minutes=30), longer))
        [row] = retries(offer.id).values()
        assert (row.reason, row.due_at) == ("quiet_hours", longer.replace(second=0, microsecond=0))
        [entry] = push.explain(offer.id)
        assert [e["what"] for e in entry["events"]][-2:] == ["deferred", "deferred"]
        assert "changed their quiet hours" in entry["detail"]
        # quiet hours that end before the time its service asked for: due then, not
        # at their end, nor at once
        push.set_preferences(
            "alice", quiet_hours=window(now - timedelta(hours=1), now + timedelta(minutes=30))
        )
        [row] = retries(offer.id).values()
        assert (row.reason, row.due_at) == ("unavailable", asked)
    assert len(push_fake_webpush.requests) == 1


@pytest.mark.usefixtures("same_utc_day")
def test_quiet_hours_set_while_a_retry_waits_hold_it(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A retry waiting for its push service, and quiet hours set over its time
    afterwards: it went in them. Now it waits for their end; when they outlast its
    time to live, it ends expired."""
    with context(live):
        subscribe(push_fake_webpush.subscribe("alice"), "alice")
        push_fake_webpush.fail_next(503, retry_after=3600, times=2)
        offer = push.send(users=["alice"], title="Deal", category="offers")
        brief = push.send(users=["alice"], title="Flash", category="offers", ttl=5400)
        [row] = retries(offer.id).values()
        assert row.reason == "unavailable"
        asked = row.due_at
        end = quiet_soon()
        [row] = retries(offer.id).values()
        assert (row.reason, row.due_at) == ("quiet_hours", end)
        assert "503" in row.error
        [entry] = push.explain(offer.id)
        assert [e["what"] for e in entry["events"]] == ["queued", "attempt", "retry", "deferred"]
        assert entry["detail"].startswith("The user changed their quiet hours at ")
        assert entry["detail"].endswith(f": it is due at {outcomes.clock(end)}.")
        assert statuses(brief.id) == {"webpush": ("expired", "quiet_hours_expired")}
        # removed again: due when its service asked
        push.set_preferences("alice", quiet_hours=None)
        [row] = retries(offer.id).values()
        assert (row.reason, row.due_at) == ("unavailable", asked)
        # quiet hours that do not cover its time leave it as it is
        now = datetime.now(timezone.utc)
        window = {
            "start": f"{now + timedelta(hours=2):%H:%M}",
            "end": f"{now + timedelta(hours=3):%H:%M}",
            "time_zone": "UTC",
        }
        before = retries(offer.id)["webpush"].events
        push.set_preferences("alice", quiet_hours=window)
        [row] = retries(offer.id).values()
        assert (row.reason, row.due_at, row.events) == ("unavailable", asked, before)


@pytest.mark.usefixtures("same_utc_day")
def test_quiet_hours_that_outlast_a_retrys_ttl_expire_it(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    failed: list[bool] = []

    def on_failed(sender: Any, push: Any, result: Any, will_retry: bool) -> None:
        failed.append(will_retry)

    with context(live), signals.delivery_failed.connected_to(on_failed, sender=live):
        subscribe(push_fake_webpush.subscribe("alice"), "alice")
        end = quiet_soon()
        push_fake_webpush.fail_next(503, retry_after=3600)
        offer = push.send(users=["alice"], title="Deal", category="offers", ttl=5400)
        assert statuses(offer.id) == {"webpush": ("expired", "quiet_hours_expired")}
        [entry] = push.explain(offer.id)
        assert [e["what"] for e in entry["events"]] == ["queued", "attempt", "expired"]
        assert "would fall in the user's quiet hours, which last until" in entry["detail"]
        assert f"until {outcomes.clock(end)}, and its time to live ends" in entry["detail"]
        assert entry["detail"].endswith("before that: it is not tried again.")
        message_id = offer.id
    assert failed == [False]
    shown = live.test_client().get(f"/push/messages/{message_id}", headers=ADMIN).get_json()
    assert (shown["counts"]["expired"], shown["counts"]["deferred"]) == (1, 0)
    [problem] = shown["problems"]
    assert problem["status"] == "expired"
    assert problem["reason"].startswith("the user's quiet hours last past its time to live: ")


def quiet_window(user: str, start: datetime, end: datetime) -> datetime:
    """``user``'s quiet hours from ``start`` to ``end`` (UTC), written to their row
    directly: as if the clock had moved while their pushes waited, which no change
    of theirs follows (:func:`flask_push.policy.replan_waiting`). Returns the end."""
    p = push.models.Preference
    row = db.session.get(p, user) or p(user_id=user, categories={})
    row.quiet_start, row.quiet_end, row.time_zone = f"{start:%H:%M}", f"{end:%H:%M}", "UTC"
    row.updated_at = datetime.now(timezone.utc)
    db.session.add(row)
    db.session.commit()
    return end.replace(second=0, microsecond=0)


def quiet_hours_began(user: str = "alice") -> datetime:
    """The clock has come into ``user``'s quiet hours (an hour ago to an hour from
    now, UTC) since their pushes were queued. Returns their end."""
    now = datetime.now(timezone.utc)
    return quiet_window(user, now - timedelta(hours=1), now + timedelta(hours=1))


def quiet_hours_ended(user: str = "alice") -> None:
    """The clock has gone past the end of ``user``'s quiet hours."""
    now = datetime.now(timezone.utc)
    quiet_window(user, now - timedelta(hours=3), now - timedelta(hours=1))


@pytest.mark.usefixtures("same_utc_day")
def test_a_push_a_worker_reaches_in_quiet_hours_waits_for_their_end(
    live: Flask, push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    """Offers due at 21:59, before her 22:00-07:00 quiet hours, that a worker reached
    at 22:04 (the last pushes of a large fan-out, a backlog, the workers down for a
    while) went out in the middle of her night: quiet hours were looked at when a
    push was queued, not when it went. The worker now holds them to the window's
    end, as the send would have, and lets her order update and a message without a
    category go."""
    with context(live):
        browser, token = browser_and_phone(push_fake_webpush)
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        offers = [
            push.send(users=["alice"], title=f"Deal {n}", category="offers", send_at=later)
            for n in range(2)
        ]
        order = push.send(
            users=["alice"], title="Your order", category="order_status", send_at=later
        )
        plain = push.send(users=["alice"], title="Hello", send_at=later)
        assert statuses(offers[0].id) == {"webpush": ("queued", None), "fcm": ("queued", None)}
        end = quiet_hours_began()
        for message in (*offers, order, plain):
            make_due(message.id)
        push.dispatch_due()
        for offer in offers:
            assert statuses(offer.id) == {
                "webpush": ("queued", "quiet_hours"),
                "fcm": ("queued", "quiet_hours"),
            }
            for row in retries(offer.id).values():
                # its claim was no attempt: it went nowhere
                assert (row.due_at, row.attempts, row.lease_until) == (end, 0, None)
        # a required category and a message without one ignore quiet hours
        assert {s for s, _ in statuses(order.id).values()} == {"sent"}
        assert {s for s, _ in statuses(plain.id).values()} == {"sent"}
        assert sorted(p.json()["title"] for p in browser.received) == ["Hello", "Your order"]
        assert sorted(m.notification["title"] for m in push_fake_fcm.messages) == [
            "Hello",
            "Your order",
        ]

        # told and counted as a push held at send time
        for entry in push.explain(offers[0].id):
            assert [e["what"] for e in entry["events"]] == ["queued", "deferred"]
            reached = instant(entry["events"][-1]["at"])
            assert entry["detail"] == (
                f"A worker reached it at {outcomes.clock(reached)}, after the user's quiet "
                f"hours had begun, so it was held: it waits for their end, at "
                f"{outcomes.clock(end)}."
            )
            assert instant(entry["nextAttemptAt"]) == end
        shown = live.test_client().get(f"/push/messages/{offers[0].id}", headers=ADMIN).get_json()
        assert (shown["counts"]["queued"], shown["counts"]["deferred"]) == (2, 2)
        assert shown["counts"]["sent"] == 0
        # and still counted against the daily cap (2), as such a push is
        capped = push.send(users=["alice"], title="One more", category="offers")
        assert statuses(capped.id) == {
            "webpush": ("suppressed", "frequency_cap"),
            "fcm": ("suppressed", "frequency_cap"),
        }

        # a change of her quiet hours moves them, as it moves any push that waits
        now = datetime.now(timezone.utc)
        longer = now + timedelta(hours=2)
        push.set_preferences(
            "alice",
            quiet_hours={
                "start": f"{now - timedelta(hours=1):%H:%M}",
                "end": f"{longer:%H:%M}",
                "time_zone": "UTC",
            },
        )
        for row in retries(offers[0].id).values():
            assert (row.reason, row.due_at) == (
                "quiet_hours",
                longer.replace(second=0, microsecond=0),
            )
        [web, _] = push.explain(offers[0].id)
        assert "changed their quiet hours" in web["detail"]

        # the window ends: they go
        quiet_hours_ended()
        for offer in offers:
            make_due(offer.id)
        push.dispatch_due()
        for offer in offers:
            assert {s for s, _ in statuses(offer.id).values()} == {"sent"}
            assert {row.attempts for row in retries(offer.id).values()} == {1}
    assert sorted(p.json()["title"] for p in browser.received[2:]) == ["Deal 0", "Deal 1"]
    assert [m.token for m in push_fake_fcm.messages] == [token] * 4


@pytest.mark.usefixtures("same_utc_day")
def test_a_push_a_worker_reaches_in_quiet_hours_past_its_ttl_expires(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A flash sale with half an hour to live, reached by a worker in quiet hours
    that last an hour more: it ends ``expired`` now (counted in the metrics, its
    place under the cap given back), as it would have at send time. A retry that
    still has time waits, counted nowhere until it goes, and goes when she removes
    her quiet hours, as the retry it was."""
    from test_metrics import TOKEN, parse

    app = sending_app(PUSH_CATEGORIES=CATEGORIES, PUSH_METRICS=True, PUSH_METRICS_TOKEN=TOKEN)

    def counted() -> dict[tuple[str, str], float]:
        scraped = app.test_client().get(
            "/push/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        return {
            (dict(labels)["provider"], dict(labels)["outcome"]): value
            for (name, labels), value in parse(scraped.get_data(as_text=True)).items()
            if name == "flask_push_deliveries_total" and value
        }

    with context(app):
        browser = push_fake_webpush.subscribe("alice")
        subscribe(browser, "alice")
        later = datetime.now(timezone.utc) + timedelta(minutes=10)
        flash = push.send(
            users=["alice"], title="Flash sale", category="offers", ttl=1800, send_at=later
        )
        push_fake_webpush.fail_next(503, retry_after=60)
        deal = push.send(users=["alice"], title="Deal", category="offers")
        assert statuses(deal.id) == {"webpush": ("queued", "unavailable")}
        end = quiet_hours_began()
        make_due(flash.id)
        make_due(deal.id)
        asked = retries(deal.id)["webpush"].due_at
        push.dispatch_due()
        assert statuses(flash.id) == {"webpush": ("expired", "quiet_hours_expired")}
        [entry] = push.explain(flash.id)
        assert [e["what"] for e in entry["events"]] == ["queued", "expired"]
        reached = instant(entry["events"][-1]["at"])
        ends = retries(flash.id)["webpush"].expires_at
        assert entry["detail"] == (
            f"A worker reached it at {outcomes.clock(reached)}, after the user's quiet hours "
            f"had begun; they last until {outcomes.clock(end)}, and its time to live ends at "
            f"{outcomes.clock(ends)}, before that: it was not sent."
        )
        # the retry waits, its one attempt and what its service answered kept
        row = retries(deal.id)["webpush"]
        assert (row.status, row.reason, row.due_at, row.attempts) == (
            "queued",
            "quiet_hours",
            end,
            1,
        )
        assert "503" in row.error
        # the expiry is counted, the hold is not (it is no outcome)
        assert counted() == {("webpush", "retry"): 1, ("webpush", "expired"): 1}
        # the flash sale's place under the cap (2) is free again: one more offer
        # is held for her quiet hours, not capped
        another = push.send(users=["alice"], title="Another deal", category="offers")
        assert statuses(another.id) == {"webpush": ("queued", "quiet_hours")}
        # removed, her quiet hours hold nothing back any more
        push.set_preferences("alice", quiet_hours=None)
        assert statuses(deal.id) == {"webpush": ("queued", "unavailable")}
        assert asked <= retries(deal.id)["webpush"].due_at <= datetime.now(timezone.utc)
        push.dispatch_due()
        assert statuses(deal.id) == {"webpush": ("sent", "accepted")}
        shown = app.test_client().get(f"/push/messages/{flash.id}", headers=ADMIN).get_json()
        assert [(p["status"], p["reason"]) for p in shown["problems"]] == [
            ("expired", "the user's quiet hours last past its time to live")
        ]
    assert sorted(p.json()["title"] for p in browser.received) == ["Another deal", "Deal"]
    assert counted() == {
        ("webpush", "retry"): 1,
        ("webpush", "expired"): 1,
        ("webpush", "sent"): 2,
    }


def test_a_time_zone_the_server_no_longer_knows_breaks_no_send(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A zone checked when the user chose it may leave the tz database later (tzdata
    2020b removed US/Pacific-New), or be missing where the sender runs: that one
    user's quiet hours are not applied, and the broadcast still goes to everyone
    (it failed with ZoneInfoNotFoundError: 500 for POST /messages)."""
    with context(live):
        alice = push_fake_webpush.subscribe("alice")
        bob = push_fake_webpush.subscribe("bob")
        subscribe(alice, "alice")
        subscribe(bob, "bob")
        quiet_now("alice")
        p = push.models.Preference
        db.session.execute(
            sa.update(p).where(p.user_id == "alice").values(time_zone="US/Pacific-New")
        )
        db.session.commit()
    answer = live.test_client().post(
        "/push/messages",
        json={
            "audience": {"everyone": True},
            "notification": {"title": "2 for 1 on apples", "category": "offers"},
        },
        headers=ADMIN,
    )
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["recipientCount"] == 2
    with context(live):
        message_id = answer.get_json()["id"]
        assert [len(alice.received), len(bob.received)] == [1, 1]
        [first] = push.explain(message_id, user_id="alice")[0]["events"][:1]
        assert first["what"] == "queued"
        assert first["detail"].endswith(
            'The user\'s quiet hours were not applied: their time zone "US/Pacific-New" is '
            "not in this server's time zone database (they can choose their zone again in "
            "their settings)."
        )
        # bob's timeline says nothing of it
        [bobs] = push.explain(message_id, user_id="bob")[0]["events"][:1]
        assert bobs["detail"] == "Queued for sending."
        # the user still sees what they chose, and can choose again
        shown = live.test_client().get("/push/preferences", headers=as_user("alice"))
        assert shown.get_json()["quietHours"]["timeZone"] == "US/Pacific-New"


# -- the daily cap ----------------------------------------------------------------------


def test_the_daily_cap_suppresses_pushes_but_not_the_inbox(
    live: Flask, push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    with context(live):
        browser, _ = browser_and_phone(push_fake_webpush)
        sent = [
            push.send(users=["alice"], title=f"Deal {n}", category="offers", inbox=True)
            for n in range(3)
        ]
        assert [m.recipient_count for m in sent] == [2, 2, 0]
        assert statuses(sent[2].id) == {
            "webpush": ("suppressed", "frequency_cap"),
            "fcm": ("suppressed", "frequency_cap"),
        }
        assert {entry["events"][-1]["detail"] for entry in push.explain(sent[2].id)} == {
            'The user already has 2 of the category "Offers and deals" pushed or due within '
            "24 hours of it, as many as its daily cap allows."
        }
        assert inbox_ids("alice") == {m.id for m in sent}
        # the cap is per category: other categories still go
        other = push.send(users=["alice"], title="Shared", category="shares")
        assert statuses(other.id)["webpush"] == ("sent", "accepted")
    assert len(browser.received) == 3 and len(push_fake_fcm.messages) == 3


def test_the_cap_counts_exactly_the_last_24_hours(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    with context(live):
        subscribe(push_fake_webpush.subscribe())
        first, second = (
            push.send(users=["alice"], title=f"Deal {n}", category="offers") for n in range(2)
        )
        c = push.models.CappedSend
        now = datetime.now(timezone.utc)
        # the first was 23h59m ago: still inside the window
        db.session.execute(
            sa.update(c)
            .where(c.message_id == first.id)
            .values(sent_at=now - timedelta(hours=23, minutes=59))
        )
        db.session.commit()
        held = push.send(users=["alice"], title="Deal 3", category="offers")
        assert statuses(held.id) == {"webpush": ("suppressed", "frequency_cap")}
        # a second past 24 hours: it no longer counts
        db.session.execute(
            sa.update(c)
            .where(c.message_id == first.id)
            .values(sent_at=now - timedelta(hours=24, seconds=1))
        )
        db.session.commit()
        freed = push.send(users=["alice"], title="Deal 4", category="offers")
        assert statuses(freed.id) == {"webpush": ("sent", "accepted")}
        # a suppressed message does not count against the cap
        assert (
            db.session.scalar(
                sa.select(sa.func.count()).select_from(c).where(c.message_id == held.id)
            )
            == 0
        )
        assert second.recipient_count == 1


def test_other_users_have_caps_of_their_own(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    with context(live):
        subscribe(push_fake_webpush.subscribe(), "alice")
        subscribe(push_fake_webpush.subscribe(), "bob")
        for n in range(2):
            push.send(users=["alice"], title=f"Deal {n}", category="offers")
        both = push.send(users=["alice", "bob"], title="Deal", category="offers")
        assert both.recipient_count == 1
        d = push.models.Delivery
        found = sorted(
            db.session.execute(sa.select(d.status, d.reason).where(d.message_id == both.id)).all()
        )
        assert found == [("sent", "accepted"), ("suppressed", "frequency_cap")]


def test_a_scheduled_send_counts_in_the_24_hours_before_it(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """The cap holds in the 24 hours before every push, a scheduled one too: two
    sends now and one queued for later are one too many for a cap of two."""
    with context(live):
        subscribe(push_fake_webpush.subscribe())
        later = datetime.now(timezone.utc) + timedelta(hours=2)
        scheduled = push.send(users=["alice"], title="Later", category="offers", send_at=later)
        now = push.send(users=["alice"], title="Now", category="offers")
        held = push.send(users=["alice"], title="Now, again", category="offers")
        assert statuses(scheduled.id) == {"webpush": ("queued", None)}
        assert statuses(now.id) == {"webpush": ("sent", "accepted")}
        assert statuses(held.id) == {"webpush": ("suppressed", "frequency_cap")}
        # a day after the scheduled one, its window no longer reaches back to now
        free = push.send(
            users=["alice"],
            title="Much later",
            category="offers",
            send_at=later + timedelta(hours=23),
        )
        assert statuses(free.id) == {"webpush": ("queued", None)}


def test_sends_at_once_never_pass_the_cap(live: Flask, push_fake_webpush: FakePushService) -> None:
    """Each send counts the ones before it under the category's lock: six at once
    against a cap of two push twice."""
    import threading

    with context(live):
        subscribe(push_fake_webpush.subscribe())
    start = threading.Barrier(6)
    counts: list[int] = []

    def send(n: int) -> None:
        with context(live):
            start.wait()
            counts.append(
                push.send(users=["alice"], title=f"Deal {n}", category="offers").recipient_count
            )
            db.session.remove()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counts) == [0, 0, 0, 0, 1, 1]


def test_pushes_that_will_never_be_made_stop_counting(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """Cancelled and superseded pushes do not use up the cap: the user got nothing."""
    with context(live):
        subscribe(push_fake_webpush.subscribe())
        quiet_now()
        waiting = [
            push.send(users=["alice"], title=f"Deal {n}", category="offers") for n in range(2)
        ]
        assert [m.recipient_count for m in waiting] == [1, 1]
        for message in waiting:
            push.cancel(message.id)
        # each newer state of an activity supersedes the last one still waiting:
        # only the newest counts
        states = [
            push.activity("deal-1", users=["alice"], title=f"Deal {n}", category="offers")
            for n in range(3)
        ]
        assert [statuses(m.id)["webpush"][0] for m in states] == ["superseded"] * 2 + ["queued"]
        again = push.send(users=["alice"], title="Deal, again", category="offers")
        assert statuses(again.id) == {"webpush": ("queued", "quiet_hours")}
        capped = push.send(users=["alice"], title="One more", category="offers")
        assert statuses(capped.id) == {"webpush": ("suppressed", "frequency_cap")}


def test_a_push_whose_ttl_ran_out_unsent_stops_counting(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A push that expired before any worker sent it never reached the user: it
    gives its place under the cap back."""
    with context(live):
        browser = push_fake_webpush.subscribe()
        subscribe(browser)
        later = datetime.now(timezone.utc) + timedelta(minutes=5)
        missed = [
            push.send(users=["alice"], title=f"Deal {n}", category="offers", send_at=later)
            for n in range(2)
        ]
        assert statuses(push.send(users=["alice"], title="Held", category="offers").id) == {
            "webpush": ("suppressed", "frequency_cap")
        }
        # as if the workers were down until their time to live ran out
        d = push.models.Delivery
        past = datetime.now(timezone.utc) - timedelta(minutes=1)
        db.session.execute(
            sa.update(d)
            .where(d.message_id.in_([m.id for m in missed]))
            .values(due_at=past, expires_at=past)
        )
        db.session.commit()
        push.dispatch_due()
        assert [statuses(m.id) for m in missed] == [{"webpush": ("expired", "ttl_expired")}] * 2
        freed = push.send(users=["alice"], title="Deal, at last", category="offers")
        assert statuses(freed.id) == {"webpush": ("sent", "accepted")}
        assert [p.json()["title"] for p in browser.received] == ["Deal, at last"]


def test_pushes_ended_before_they_were_pushed_do_not_count(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A device no provider can reach (no APNs here), or a browser found dead before
    its push went out: the user got nothing, and their day's places stay free."""
    with context(live):
        db.session.add(
            push.models.Installation(
                app_id="shop", device_token="ab" * 32, device_type="ios", user_id="alice"
            )
        )
        db.session.commit()
        for n in range(3):
            message = push.send(users=["alice"], title=f"Deal {n}", category="offers")
            assert statuses(message.id) == {"apns": ("failed", "no_provider")}
        db.session.execute(sa.delete(push.models.Installation))
        browser = push_fake_webpush.subscribe()
        subscription_id = subscribe(browser).id
        later = datetime.now(timezone.utc) + timedelta(minutes=5)
        missed = [
            push.send(users=["alice"], title=f"Later {n}", category="offers", send_at=later)
            for n in range(2)
        ]
        # the browser dies before they are due
        s, d = push.models.Subscription, push.models.Delivery
        db.session.execute(sa.update(s).where(s.id == subscription_id).values(status="dead"))
        db.session.execute(
            sa.update(d)
            .where(d.message_id.in_([m.id for m in missed]))
            .values(due_at=later - timedelta(hours=1))
        )
        db.session.commit()
        push.dispatch_due()
        assert [statuses(m.id) for m in missed] == [{"webpush": ("gone", "target_dead")}] * 2
        again = push_fake_webpush.subscribe()
        subscribe(again)
        freed = push.send(users=["alice"], title="Deal, at last", category="offers")
        assert statuses(freed.id) == {"webpush": ("sent", "accepted")}
        assert [p.json()["title"] for p in again.received] == ["Deal, at last"]


def test_a_push_on_the_network_when_cancelled_still_counts(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """Cancel cannot call back a push already sent: its outcome replaces the cancel,
    and the cap keeps counting it."""
    import time

    app = sending_app(
        PUSH_QUEUE="thread", PUSH_CATEGORIES={"deals": {"label": "Deals", "max_per_day": 1}}
    )
    with context(app):
        browser = push_fake_webpush.subscribe()
        subscribe(browser)
        push_fake_webpush.hold()
        first = push.send(users=["alice"], title="Deal", category="deals")
        push_fake_webpush.wait_in_flight(1)
        push.cancel(first.id)
        push_fake_webpush.release()
        deadline = time.monotonic() + 10
        while statuses(first.id)["webpush"][0] != "sent" and time.monotonic() < deadline:
            db.session.rollback()
            time.sleep(0.05)
        assert statuses(first.id) == {"webpush": ("sent", "accepted")}
        second = push.send(users=["alice"], title="Another deal", category="deals")
        assert statuses(second.id) == {"webpush": ("suppressed", "frequency_cap")}
        push.shutdown()
    assert len(browser.received) == 1


@contextmanager
def cancelled_while_held(app: Flask, message_id: str) -> Iterator[None]:
    """An operator cancels ``message_id`` while a worker holds its pushes: between
    the worker's claim and its write of what became of them, so that the cancel
    wins over whatever it writes that only a queued row takes."""
    from flask_push import dispatch

    original = dispatch.Dispatcher._write

    def write(self: Any, *args: Any, **kwargs: Any) -> Any:
        with app.app_context():
            push.cancel(message_id)
            db.session.remove()
        return original(self, *args, **kwargs)

    dispatch.Dispatcher._write = write  # type: ignore[method-assign]
    try:
        yield
    finally:
        dispatch.Dispatcher._write = original  # type: ignore[method-assign]
        db.session.rollback()


def test_a_cancel_that_wins_over_a_hold_for_quiet_hours_gives_the_cap_back(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A worker reaches a deal in alice's quiet hours and would hold it for their
    end; the operator cancels it meanwhile. She got nothing, so the deal leaves
    her daily cap: the next one reaches her."""
    app = sending_app(PUSH_CATEGORIES={"deals": {"label": "Deals", "max_per_day": 1}})
    with context(app):
        browser = push_fake_webpush.subscribe()
        subscribe(browser)
        later = datetime.now(timezone.utc) + timedelta(minutes=5)
        first = push.send(users=["alice"], title="Deal", category="deals", send_at=later)
        # quiet hours over now, that the waiting push has not seen (a backlog reaching
        # a push due before the window began, say): the claim holds it
        now = datetime.now(timezone.utc)
        db.session.add(
            push.models.Preference(
                user_id="alice",
                categories={},
                quiet_start=f"{now - timedelta(hours=1):%H:%M}",
                quiet_end=f"{now + timedelta(hours=1):%H:%M}",
                time_zone="UTC",
                updated_at=now,
            )
        )
        db.session.commit()
        make_due(first.id)
        with cancelled_while_held(app, first.id):
            push.dispatch_due()
        assert statuses(first.id) == {"webpush": ("cancelled", "cancelled")}
        push.set_preferences("alice", quiet_hours=None)
        second = push.send(users=["alice"], title="Another deal", category="deals")
        assert statuses(second.id) == {"webpush": ("sent", "accepted")}
    assert [p.json()["title"] for p in browser.received] == ["Another deal"]


def test_a_cancel_that_wins_over_a_retry_gives_the_cap_back(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """alice's push service answers 503 to a deal, and the operator cancels it before
    the worker writes the retry: the deal never reaches her, so it leaves her cap."""
    app = sending_app(PUSH_CATEGORIES={"deals": {"label": "Deals", "max_per_day": 1}})
    with context(app):
        browser = push_fake_webpush.subscribe()
        subscribe(browser)
        later = datetime.now(timezone.utc) + timedelta(minutes=5)
        first = push.send(users=["alice"], title="Deal", category="deals", send_at=later)
        make_due(first.id)
        push_fake_webpush.fail_next(503, subscriber=browser)
        with cancelled_while_held(app, first.id):
            push.dispatch_due()
        assert statuses(first.id) == {"webpush": ("cancelled", "cancelled")}
        second = push.send(users=["alice"], title="Another deal", category="deals")
        assert statuses(second.id) == {"webpush": ("sent", "accepted")}
    assert [p.json()["title"] for p in browser.received] == ["Another deal"]


def users_statuses(message_id: str) -> dict[str | None, tuple[str, str | None]]:
    """user -> (status, reason) of each delivery of a message (one target each)."""
    d = push.models.Delivery
    rows = db.session.execute(
        sa.select(d.user_id, d.status, d.reason).where(d.message_id == message_id)
    )
    return {user: (status, reason) for user, status, reason in rows}


def alice_refused_bob_asleep(service: FakePushService) -> tuple[str, Any]:
    """A deal to alice and bob: alice's push service refuses it (400), bob's push
    waits for the end of his quiet hours. Returns the message's id and bob's browser."""
    alice, bob = service.subscribe("alice"), service.subscribe("bob")
    subscribe(alice, "alice")
    subscribe(bob, "bob")
    quiet_now("bob")
    service.fail_next(400, subscriber=alice)
    message = push.send(users=["alice", "bob"], title="Deal 1", category="offers")
    assert users_statuses(message.id) == {
        "alice": ("failed", "rejected"),
        "bob": ("queued", "quiet_hours"),
    }
    return message.id, bob


def two_more_deals_reach_bob() -> None:
    """Under a cap of two, bob, who got no deal today, gets the next two."""
    push.set_preferences("bob", categories={"offers": {"web": True}}, quiet_hours=None)
    sent = [push.send(users=["bob"], title=f"Deal {n}", category="offers") for n in (2, 3)]
    assert [users_statuses(m.id)["bob"] for m in sent] == [("sent", "accepted")] * 2


@pytest.mark.parametrize("how", ["cancel", "opt_out"])
def test_a_push_ended_after_a_retry_of_others_gives_its_place_back(
    live: Flask, push_fake_webpush: FakePushService, how: str
) -> None:
    """The operator retried alice's refused deal, which moved the message's time in
    the ledger to the retry's; bob's place, still at its first time, was then never
    given back when his waiting push ended (cancelled, or turned off): he got no
    deal, yet the next one of two was held back (frequency_cap)."""
    with context(live):
        id, _ = alice_refused_bob_asleep(push_fake_webpush)
        push.retry_failed(id)
        assert users_statuses(id)["alice"] == ("sent", "accepted")
        if how == "cancel":
            push.cancel(id)
        else:
            push.set_preferences("bob", categories={"offers": {"web": False}})
        assert users_statuses(id)["bob"][0] in ("cancelled", "suppressed")
        two_more_deals_reach_bob()


def test_a_message_retried_twice_counts_once_for_each_user(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A second retry pushed bob's deal at last: his place at the message's first
    time stayed beside the new one, so one deal counted twice and the next was held
    back. (The README: a message counts once per user.)"""
    with context(live):
        id, bob = alice_refused_bob_asleep(push_fake_webpush)
        push.retry_failed(id)  # alice's
        push.set_preferences("bob", quiet_hours=None)
        push_fake_webpush.fail_next(400, subscriber=bob)
        push.dispatch_due()
        assert users_statuses(id)["bob"] == ("failed", "rejected")
        push.retry_failed(id)  # bob's
        assert users_statuses(id)["bob"] == ("sent", "accepted")
        deal = push.send(users=["bob"], title="Deal 2", category="offers")
        assert users_statuses(deal.id)["bob"] == ("sent", "accepted")


def test_pushes_the_address_check_refused_do_not_count(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """flask-push refused to connect to al's browser's push service (its listed
    name resolved to a loopback address): two deals went nowhere, yet they used up
    his cap of two, and the third, to a browser that works, was held back."""
    real = socket.getaddrinfo

    def rebound(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "push.example.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    app = sending_app(
        PUSH_CATEGORIES=CATEGORIES,
        PUSH_ENDPOINT_HOSTS=["*.example.test", "127.0.0.1"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )
    blocked = push_fake_webpush.subscribe()
    endpoint = blocked.endpoint.replace("127.0.0.1", "push.example.test")
    answer = app.test_client().post(
        "/push/subscriptions", json={**blocked.info, "endpoint": endpoint}, headers=as_user("al")
    )
    assert answer.status_code == 201, answer.get_json()
    with context(app):
        for n in (1, 2):
            missed = push.send(users=["al"], title=f"Deal {n}", category="offers")
            assert statuses(missed.id) == {"webpush": ("failed", "address_blocked")}
        working = push_fake_webpush.subscribe()
        subscribe(working, "al")
        push.send(users=["al"], title="Deal 3", category="offers")
    assert [p.json()["title"] for p in working.received] == ["Deal 3"]


# -- at scale ---------------------------------------------------------------------------


def audience_of(n: int) -> None:
    """``n`` users with a browser each; every tenth turned offers off, every seventh
    has quiet hours, and every fifth already had today's offers."""
    many_subscriptions(n, lambda i: f"user-{i}")
    for table in (push.models.Preference.__table__, push.models.CappedSend.__table__):
        db.session.execute(sa.delete(table))
    now = datetime.now(timezone.utc)
    db.session.execute(
        sa.insert(push.models.Preference.__table__),
        [
            {
                "user_id": f"user-{i}",
                "categories": {"offers": {"web": i % 10 != 0}},
                "quiet_start": "00:00" if i % 7 == 0 else None,
                "quiet_end": "23:59" if i % 7 == 0 else None,
                "time_zone": "UTC" if i % 7 == 0 else None,
                "updated_at": now,
            }
            for i in range(n)
            if i % 10 == 0 or i % 7 == 0
        ],
    )
    db.session.execute(
        sa.insert(push.models.CappedSend.__table__),
        [
            {"category": "offers", "user_id": f"user-{i}", "message_id": "msg_x", "sent_at": now}
            for i in range(0, n, 5)
            for _ in range(2)
        ],
    )
    db.session.commit()


def test_the_policy_reads_a_whole_audience_in_a_fixed_number_of_queries(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(PUSH_QUEUE="inline", PUSH_CATEGORIES=CATEGORIES)
    seen: dict[int, list[str]] = {}
    with app.app_context():
        for n in (500, 4_000):
            audience_of(n)
            with statements() as found:
                message = push.send(
                    everyone=True,
                    title="Sale",
                    category="offers",
                    # later, so that nothing is sent while the statements are counted
                    send_at=datetime.now(timezone.utc) + timedelta(hours=1),
                )
            seen[n] = found
            d = push.models.Delivery
            counts = dict(
                db.session.execute(
                    sa.select(d.reason, sa.func.count())
                    .where(d.message_id == message.id)
                    .group_by(d.reason)
                ).all()
            )
            off = len(range(0, n, 10))
            capped = len([i for i in range(0, n, 5) if i % 10 != 0])
            quiet = len([i for i in range(0, n, 7) if i % 10 != 0 and i % 5 != 0])
            assert counts == {
                "opted_out": off,
                "frequency_cap": capped,
                "quiet_hours": quiet,
                None: n - off - capped - quiet,
            }
            assert message.recipient_count == n - off - capped
    # the same statements for 8 times the audience: none per user
    assert seen[500] == seen[4_000], (seen[500], seen[4_000])
    assert len(seen[4_000]) < 30


def test_retries_read_quiet_hours_once_a_batch_and_sends_never(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """The quiet hours of retries are read in one query per batch of outcomes, not
    one per push; pushes that went (the common case) read nothing more."""
    n = 20
    with context(live):
        for i in range(n):
            subscribe(push_fake_webpush.subscribe(f"user-{i}"), f"user-{i}")
            quiet_soon(f"user-{i}")
        users = [f"user-{i}" for i in range(n)]

        def quiet_reads(seen: list[str]) -> int:
            return sum(s.startswith("SELECT push_deliveries.id, push_preferences.") for s in seen)

        with statements() as went:
            sent = push.send(users=users, title="Deal", category="offers")
        assert {s for s, _ in statuses(sent.id).values()} == {"sent"}
        assert quiet_reads(went) == 0
        push_fake_webpush.fail_next(503, retry_after=3600, times=n)
        with statements() as failed:
            held = push.send(users=users, title="Deal", category="offers")
        d = push.models.Delivery
        reasons = db.session.scalars(sa.select(d.reason).where(d.message_id == held.id)).all()
        assert reasons == ["quiet_hours"] * n
        # one per write of outcomes: no more than the claims and writes (UPDATEs), far
        # fewer than the pushes
        writes = sum(s.startswith("UPDATE push_deliveries SET") for s in failed)
        assert 1 <= quiet_reads(failed) <= writes < n, failed


def preference_reads(seen: list[str]) -> int:
    """How many of the statements ``seen`` read users' stored choices."""
    return sum(s.startswith("SELECT push_preferences.user_id,") for s in seen)


def claim_loads(seen: list[str]) -> int:
    """How many of the statements ``seen`` are a claim's load of its rows."""
    return sum(s.startswith("SELECT push_deliveries.id, push_deliveries.message_id,") for s in seen)


def twenty_users_with_a_browser(service: FakePushService) -> list[str]:
    users = [f"user-{i}" for i in range(20)]
    for user in users:
        subscribe(service.subscribe(user), user)
    return users


def test_a_claim_reads_its_users_choices_once_and_only_for_a_category(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """The worker looks at the users' choices before it sends (a change may have
    missed a push): one query per claim, not per push, and none for a message
    without a category or of a required one."""
    app = sending_app(PUSH_CATEGORIES=CATEGORIES, PUSH_DELIVERY_BATCH=5)
    with context(app):
        users = twenty_users_with_a_browser(push_fake_webpush)
        n = len(users)
        push.set_preferences("user-3", categories={"offers": {"web": False}})
        reads, claims = preference_reads, claim_loads
        with statements() as offers:
            sent = push.send(users=users, title="Deal", category="offers")
        d = push.models.Delivery
        went = db.session.scalars(sa.select(d.status).where(d.message_id == sent.id)).all()
        assert sorted(went) == ["sent"] * (n - 1) + ["suppressed"]
        # the send's own read, then one per claim
        assert reads(offers) == 1 + claims(offers), offers
        assert 1 < claims(offers) < n
        for category in (None, "order_status"):
            with statements() as other:
                push.send(users=users, title="Your order", category=category)
            assert reads(other) == 0, other


def test_a_claim_finds_quiet_hours_in_its_one_read_of_the_users_choices(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """The worker holds the pushes it reaches in their users' quiet hours with the
    read of their choices it makes anyway: still one query per claim, not per push,
    and no other read of their quiet hours."""
    app = sending_app(PUSH_CATEGORIES=CATEGORIES, PUSH_DELIVERY_BATCH=5)
    with context(app):
        users = twenty_users_with_a_browser(push_fake_webpush)
        n = len(users)
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        message = push.send(users=users, title="Deal", category="offers", send_at=later)
        quiet = users[::2]
        for user in quiet:
            quiet_hours_began(user)
        make_due(message.id)

        reads, claims = preference_reads, claim_loads

        def quiet_reads(seen: list[str]) -> int:  # a retry's (policy.quiet_retries)
            return sum(s.startswith("SELECT push_deliveries.id, push_preferences.") for s in seen)

        with statements() as seen:
            push.dispatch_due()
        d = push.models.Delivery
        went = dict(
            db.session.execute(
                sa.select(d.user_id, d.status).where(d.message_id == message.id)
            ).all()
        )
        assert went == {user: "queued" if user in quiet else "sent" for user in users}
        assert reads(seen) == claims(seen), seen
        assert 1 < claims(seen) < n
        assert quiet_reads(seen) == 0
        # written a batch at a time: no statement per push
        assert sum(s.startswith("UPDATE push_deliveries SET") for s in seen) < n
    assert len(push_fake_webpush.requests) == n - len(quiet)


def test_a_push_held_to_the_end_of_quiet_hours_is_not_held_again_by_a_slow_clock(
    sending_app: Callable[..., Flask],
) -> None:
    """A worker goes by its own clock while it is within two seconds of the
    database's (flask_push.db_clock), and PostgreSQL claims by the database's. A push
    held to 07:00, claimed at 07:00:00 by the database, read as still in the window
    by a worker half a second behind: held to 07:00 again, it was claimed again at
    once, over and over, a ``deferred`` event each time, until the worker's clock
    got there. It goes; one due before the window's end is held, as it should be."""
    from flask_push import policy

    app = sending_app(PUSH_CATEGORIES=CATEGORIES)
    with context(app):
        push.set_preferences(
            "alice", quiet_hours={"start": "22:00", "end": "07:00", "time_zone": "UTC"}
        )
        end = datetime(2026, 12, 7, 7, 0, tzinfo=timezone.utc)
        worker_now = end - timedelta(milliseconds=500)
        found = policy.at_claim(
            db.session,
            push.models,
            push.settings.categories,
            [
                (1, "offers", "alice", True, end),  # held to the window's end at send time
                (2, "offers", "alice", True, end - timedelta(minutes=10)),  # due in it
            ],
            worker_now,
        )
    assert found.quiet == {2: end}
    assert found.opted_out == {}


def test_the_cli_blames_the_daily_cap_not_the_users_for_what_it_held_back(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A send the category's cap held back said "the users' preferences held back
    every push": the operator went looking at settings the user never changed."""
    with context(live):
        subscribe(push_fake_webpush.subscribe())
        subscribe(push_fake_webpush.subscribe(), "bob")
        push.set_preferences("bob", categories={"offers": {"web": False}})
        for _ in range(2):  # the cap of "offers"
            push.send(users=["alice"], title="Deal", category="offers")

    def send(*users: str) -> str:
        who = [arg for user in users for arg in ("--user", user)]
        result = live.test_cli_runner().invoke(
            args=["push", "send", *who, "--title", "Deal", "--category", "offers"]
        )
        assert result.exit_code == 1, result.output
        return result.output.splitlines()[-1]

    assert send("alice") == (
        "Error: Nothing was delivered: the category's daily cap (max_per_day in "
        "PUSH_CATEGORIES) held back every push; the reasons are above."
    )
    assert send("alice", "bob") == (
        "Error: Nothing was delivered: the users' preferences and the category's daily cap "
        "(max_per_day in PUSH_CATEGORIES) held back every push; the reasons are above."
    )


def test_the_cli_says_what_the_preferences_held_back(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    with context(live):
        subscribe(push_fake_webpush.subscribe())
        push.set_preferences("alice", categories={"offers": {"web": False}})
    runner = live.test_cli_runner()
    result = runner.invoke(
        args=["push", "send", "--user", "alice", "--title", "Deal", "--category", "offers"]
    )
    assert result.exit_code == 1, result.output
    assert (
        'suppressed (1): opted_out: The category "Offers and deals" is off on the web '
        "(browsers) for the user"
    ) in result.output
    assert "preferences held back every push" in result.output
    assert "daily cap" not in result.output
    result = runner.invoke(
        args=["push", "send", "--user", "alice", "--title", "Deal", "--category", "nope"]
    )
    assert result.exit_code == 2
    assert "category: is not a category of this app" in result.output
    now = datetime.now(timezone.utc)
    around_now = {
        "start": f"{now - timedelta(hours=1):%H:%M}",
        "end": f"{now + timedelta(hours=1):%H:%M}",
        "time_zone": "UTC",
    }
    with context(live):
        push.set_preferences("alice", quiet_hours=around_now)
    result = runner.invoke(
        args=["push", "send", "--user", "alice", "--title", "Tip", "--category", "shares"]
    )
    # waiting for the quiet hours to end is not a failure; the line says when they end
    assert result.exit_code == 0, result.output
    end = instant(f"{now:%Y-%m-%d}T{around_now['end']}+00:00")
    if end < now:
        end += timedelta(days=1)
    assert (
        "waiting (1): quiet_hours: It waits for the end of the user's quiet hours, at "
        f"{end:%H:%M} UTC."
        in result.output
        or f"at {end:%Y-%m-%d %H:%M} UTC." in result.output
    ), result.output
    # quiet hours that outlast the push's time to live: the line has both times
    result = runner.invoke(
        args=["push", "send", "--user", "alice", "--title", "Tip", "--category", "shares",
              "--ttl", "60"]
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "no reason was recorded" not in result.output and "unknown time" not in result.output
    assert "quiet hours last past its time to live" not in result.output  # said once, below
    assert "expired (1): quiet_hours_expired: The user's quiet hours last until " in result.output
