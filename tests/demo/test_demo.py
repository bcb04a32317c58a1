"""Server-side tests of the demo storefront's push hooks (the browser walkthrough is
separate): each goes through the demo's own routes and checks what flask-push got."""

from __future__ import annotations

import html
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from demo import create_app, db, push
from demo.models import Order, User
from demo.seed import PASSWORD, seed

from conftest import close_app

# The demo is an app in the repository, not part of the installed package: it runs
# from the repository's root (pytest's ``pythonpath`` puts that on the path here).
ROOT = str(Path(__file__).resolve().parents[2])


def apns_key() -> str:
    """A fresh .p8 key as PEM: APNs is configured, so iOS devices get deliveries
    (recorded, never sent: sends are suppressed in tests)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def demo_app(tmp_path: Path) -> Iterator[Any]:
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite'}",
            "PUSH_QUEUE": "inline",
            "DEMO_EXPORT_DELAY": 0,
            "PUSH_APNS_KEY": apns_key(),
            "PUSH_APNS_KEY_ID": "KEY1234567",
            "PUSH_APNS_TEAM_ID": "TEAM123456",
            "PUSH_APNS_TOPIC": "com.example.freshcart",
        }
    )
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        db.create_all()
        seed()
    yield app
    # an export a test started without waiting for it ends before its database goes
    for thread in threading.enumerate():
        if thread.name == "demo-export":
            thread.join(30)
    close_app(app)


def login(client: Any, email: str) -> Any:
    response = client.post("/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 302, response.text
    return client


@pytest.fixture
def alice(demo_app: Any) -> Any:
    return login(demo_app.test_client(), "alice@example.com")


@pytest.fixture
def bob(demo_app: Any) -> Any:
    return login(demo_app.test_client(), "bob@example.com")


@pytest.fixture
def staff(demo_app: Any) -> Any:
    return login(demo_app.test_client(), "staff@example.com")


def user_id(email: str) -> str:
    user = db.session.scalar(sa.select(User).where(User.email == email))
    assert user is not None
    return user.push_id


def inbox_titles(email: str) -> list[str]:
    return [item.title for item in push.search(user_id(email), take=50).items]


def add_phone(client: Any, token: str) -> None:
    response = client.post(
        "/push/installations",
        json={"appId": "com.example.freshcart", "deviceType": "ios", "deviceToken": token},
    )
    assert response.status_code == 201, response.text


def place_order(client: Any) -> int:
    client.post("/cart", data={"product_id": 1, "quantity": 2})
    response = client.post("/checkout")
    assert response.status_code == 302
    return int(response.location.rsplit("/", 1)[1])


def settings_form(off: tuple[str, ...] = (), **fields: str) -> dict[str, str]:
    """The notification settings form as a shopper who never chose gets it, with the
    boxes named in ``off`` unticked and ``fields`` changed."""
    form = {f"{c}.{ch}": "on" for c in ("offers", "shares") for ch in ("web", "mobile", "inbox")}
    form.update(quiet="off", quiet_start="22:00", quiet_end="07:00", time_zone="")
    for name in off:
        del form[name]
    form.update(fields)
    return form


def test_seed_is_idempotent(demo_app: Any) -> None:
    with demo_app.app_context():
        assert seed() == {"users": 0, "products": 0, "offers": 0}
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 4


def test_login_sets_the_push_identity(demo_app: Any) -> None:
    client = demo_app.test_client()
    assert client.get("/push/notifications").status_code == 401
    bad = client.post("/login", data={"email": "alice@example.com", "password": "nope"})
    assert b"Wrong email or password" in bad.data
    login(client, "alice@example.com")
    assert client.get("/push/notifications").json["totalCount"] == 0
    assert client.get("/push/messages").status_code == 403  # customers are not admins
    for path in ("/", "/products/avocados", "/offers/berry-weekend", "/cart", "/devices"):
        assert client.get(path).status_code == 200, path


def test_share_pushes_to_the_other_customers_only(demo_app: Any, alice: Any, bob: Any) -> None:
    add_phone(bob, "b0" * 32)
    add_phone(alice, "a0" * 32)
    with demo_app.app_context(), push.record() as outbox:
        response = alice.post("/share/offer/berry-weekend")
        assert response.status_code == 302
        assert [p.target.token for p in outbox] == ["b0" * 32]
        assert outbox[0].notification.title == "Alice shared Berry weekend"
        assert outbox[0].notification.url == "/offers/berry-weekend"
        assert inbox_titles("bob@example.com") == ["Alice shared Berry weekend"]
        assert inbox_titles("carol@example.com") == ["Alice shared Berry weekend"]
        assert inbox_titles("alice@example.com") == []


def test_order_status_change_pushes_and_publishes(
    demo_app: Any, alice: Any, staff: Any, monkeypatch: Any
) -> None:
    add_phone(alice, "a1" * 32)
    order_id = place_order(alice)
    published: list[tuple[str, str, Any]] = []
    monkeypatch.setattr(push, "publish", lambda c, e, d=None: published.append((c, e, d)) or 1)
    with demo_app.app_context(), push.record() as outbox:
        assert staff.post(f"/staff/orders/{order_id}/advance").status_code == 302
        assert db.session.get(Order, order_id).status == "confirmed"
        [sent] = outbox
        assert sent.notification.title == f"Order #{order_id}: Confirmed"
        assert sent.notification.url == f"/orders/{order_id}"
        assert inbox_titles("alice@example.com")[0] == f"Order #{order_id}: Confirmed"
    # the order's live activity: on her own channel and on the order's
    with demo_app.app_context():
        alice_id = user_id("alice@example.com")
    assert [(c, e) for c, e, _ in published] == [
        (f"user:{alice_id}", "activity"),
        (f"activity:order-{order_id}", "activity"),
    ]
    assert {d["state"]["status"] for _, _, d in published} == {"confirmed"}
    timeline = alice.get(f"/orders/{order_id}.json").json["timeline"]
    assert [step["at"] is not None for step in timeline] == [True, True, False, False, False]


def test_customers_join_only_their_own_order_channels(demo_app: Any, alice: Any) -> None:
    order_id = place_order(alice)
    channel = f"activity:order-{order_id}"
    with demo_app.app_context():
        alice_id, bob_id = user_id("alice@example.com"), user_id("bob@example.com")
        assert push.may_join(alice_id, channel)
        assert push.may_join(alice_id, f"user:{alice_id}")
        assert not push.may_join(bob_id, channel)
        assert not push.may_join(bob_id, f"user:{alice_id}")
        assert not push.may_join(None, channel)
        # digits to str.isdigit() that int() refuses: no, not an error
        assert not push.may_join(alice_id, "activity:order-\u00b2")
        assert not push.may_join("\u00b2", f"user:{alice_id}")
        assert push.may_join(user_id("staff@example.com"), channel)
        # an order placed before the demo had live activities has none: its page may
        # still join its channel, for the next state
        db.session.execute(sa.delete(push.models.Activity))
        db.session.commit()
        assert push.may_join(alice_id, channel)
        assert not push.may_join(bob_id, channel)
        assert not push.may_join(alice_id, "activity:order-99999999999999999999")


def test_offer_push_sends_the_form_text(demo_app: Any, staff: Any) -> None:
    page = staff.get("/staff/offers")
    assert b'value="Exclusive Offer: Breakfast bundle"' in page.data
    with demo_app.app_context():
        data = {"title": "Exclusive Offer: Breakfast bundle", "body": "25% off"}
        assert staff.post("/staff/offers/1/push", data=data).status_code == 302
        staff.post("/staff/offers/2/push", data={"title": "Berries, today only"})
        for email in ("alice@example.com", "bob@example.com", "carol@example.com"):
            assert inbox_titles(email) == [
                "Berries, today only",
                "Exclusive Offer: Breakfast bundle",
            ]
        assert inbox_titles("staff@example.com") == []


def test_ad_hoc_message_by_email_list(demo_app: Any, staff: Any) -> None:
    with demo_app.app_context():
        refused = staff.post(
            "/staff/messages",
            data={
                "audience": "emails",
                "emails": "bob@example.com, nobody@example.com",
                "title": "Hi",
            },
        )
        assert b"No customer with: nobody@example.com" in refused.data
        assert inbox_titles("bob@example.com") == []
        response = staff.post(
            "/staff/messages",
            data={
                "audience": "emails",
                "emails": "bob@example.com\ncarol@example.com",
                "title": "Your courier is nearby",
                "body": "5 minutes",
                "url": "/orders",
                "category": "order_status",
            },
        )
        assert response.status_code == 302
        assert inbox_titles("bob@example.com") == ["Your courier is nearby"]
        assert inbox_titles("carol@example.com") == ["Your courier is nearby"]
        assert inbox_titles("alice@example.com") == []
        # news is off until a shopper turns it on: only alice did
        push.set_preferences(user_id("alice@example.com"), categories={"news": {"inbox": True}})
        staff.post(
            "/staff/messages",
            data={"audience": "all", "title": "Open on Sunday", "category": "news"},
        )
        assert inbox_titles("alice@example.com") == ["Open on Sunday"]
        assert inbox_titles("bob@example.com") == ["Your courier is nearby"]
    listed = staff.get("/push/messages").json
    assert [m["notification"]["title"] for m in listed["items"]] == [
        "Open on Sunday",
        "Your courier is nearby",
    ]
    assert set(listed["items"][0]["counts"]) >= {"queued", "sent", "failed", "clicked"}
    assert [m["category"] for m in listed["items"]] == ["news", "order_status"]


def test_export_reports_progress_until_it_links_to_the_file(
    demo_app: Any, alice: Any, staff: Any
) -> None:
    for _ in range(3):
        place_order(alice)
    assert staff.post("/staff/export").status_code == 302
    with demo_app.app_context():
        staff_id = user_id("staff@example.com")
        deadline = time.monotonic() + 10
        while True:
            [item] = push.search(staff_id, types=["export"]).items
            if item.url or time.monotonic() > deadline:
                break
            time.sleep(0.05)
            db.session.remove()
        assert item.title == "Orders export ready"
        assert item.progress == {"total": 3, "processed": 3}
    with staff.get(item.url) as download:
        assert download.status_code == 200
        rows = download.data.decode().splitlines()
    assert rows[0] == "order,customer,status,total,placed_at" and len(rows) == 4
    assert alice.get(item.url).status_code == 403


def test_an_export_of_no_orders_offers_no_file(demo_app: Any, staff: Any) -> None:
    """With no orders it read "0 orders. Download the CSV.", a link to a header line."""
    assert staff.post("/staff/export").status_code == 302
    with demo_app.app_context():
        staff_id = user_id("staff@example.com")
        deadline = time.monotonic() + 10
        while True:
            [item] = push.search(staff_id, types=["export"]).items
            if item.title != "Orders export" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
            db.session.remove()
    assert item.title == "Nothing to export yet"
    assert item.body.startswith("No orders yet: the export lists every order once shoppers")
    assert item.url is None


# -- the demo survives its users: checked forms, local redirects, error pages ------------


def cart_lines(email: str) -> list[tuple[int, int]]:
    """(product id, quantity) of each line in the user's cart."""
    from demo.models import CartItem

    user = db.session.scalar(sa.select(User).where(User.email == email))
    rows = db.session.scalars(sa.select(CartItem).where(CartItem.user_id == user.id))
    return [(row.product_id, row.quantity) for row in rows]


def test_what_was_added_is_said_by_the_name_the_cart_shows(demo_app: Any, alice: Any) -> None:
    """An offer was said by its product's name ("Strawberries 400 g") while its cart
    line says the offer's ("Berry weekend")."""
    for form, name in (
        ({"offer_id": 1}, "Breakfast bundle"),
        ({"product_id": 1}, "Hass avocados (4)"),
    ):
        added = alice.post("/cart", data=form, follow_redirects=True)
        assert f"Added {name} to your cart." in added.get_data(as_text=True)


def test_a_quantity_is_a_whole_number_from_1_to_99(demo_app: Any, alice: Any) -> None:
    # a 20-digit quantity used to overflow the column (500); a million made a $5.49M order
    for quantity in ["0", "-1", "100", "1.5", "2e3", "ten", "12345678901234567890", "1000000"]:
        response = alice.post("/cart", data={"product_id": 1, "quantity": quantity})
        assert response.status_code == 400, quantity
        page = response.get_data(as_text=True)
        assert "Quantity must be a whole number from 1 to 99." in page, quantity
        assert "Hass avocados (4)" in page  # the product's page again, with the message
        assert 'max="99"' in page  # its quantity field offers the bound the server keeps
    for quantity in ["٣", "1" * 5000]:  # an Arabic-Indic 3; more digits than int() takes
        response = alice.post("/cart", data={"offer_id": 1, "quantity": quantity})
        assert response.status_code == 400
        assert "Breakfast bundle" in response.get_data(as_text=True)  # the offer's page
    with demo_app.app_context():
        assert cart_lines("alice@example.com") == []


def test_a_cart_line_holds_at_most_99(demo_app: Any, alice: Any) -> None:
    assert alice.post("/cart", data={"product_id": 1, "quantity": "98"}).status_code == 302
    refused = alice.post("/cart", data={"product_id": 1, "quantity": "2"})
    assert refused.status_code == 400
    assert "your cart already has 98 of Hass avocados (4)" in refused.get_data(as_text=True)
    assert alice.post("/cart", data={"product_id": 1}).status_code == 302  # 1 by default
    order_id = place_order_of(alice)
    with demo_app.app_context():
        order = db.session.get(Order, order_id)
        assert [(line.quantity, line.unit_cents) for line in order.lines] == [(99, 549)]


def place_order_of(client: Any) -> int:
    response = client.post("/checkout")
    assert response.status_code == 302
    return int(response.location.rsplit("/", 1)[1])


def test_the_cart_needs_a_real_product(alice: Any) -> None:
    for data, status, message in [
        ({}, 400, "Product must be a whole number"),
        ({"product_id": "avocados"}, 400, "Product must be a whole number"),
        ({"product_id": "99999"}, 404, "Page not found"),
        ({"offer_id": "1e9"}, 400, "Offer id must be a whole number"),
    ]:
        response = alice.post("/cart", data=data)
        assert response.status_code == status, data
        assert message in response.get_data(as_text=True), data


OFF_SITE = [
    "https://evil.example/",
    "//evil.example",
    "/\\evil.example",
    "javascript:alert(1)",
    "/\t/evil.example",
    "http:evil.example",
]


def test_next_redirects_only_to_local_paths(demo_app: Any, staff: Any) -> None:
    for target in OFF_SITE:
        shopper = demo_app.test_client()
        signed_in = shopper.post(
            "/login",
            query_string={"next": target},
            data={"email": "alice@example.com", "password": PASSWORD},
        )
        assert signed_in.location == "/", target
        added = shopper.post("/cart", data={"product_id": 1, "next": target})
        assert added.location == "/cart", target
        order_id = place_order(shopper)
        advanced = staff.post(f"/staff/orders/{order_id}/advance", data={"next": target})
        assert advanced.location == "/staff/", target
        exported = staff.post("/staff/export", data={"next": target})
        assert exported.location == "/staff/", target


def test_next_keeps_local_paths(demo_app: Any, staff: Any) -> None:
    shopper = demo_app.test_client()
    signed_in = shopper.post(
        "/login",
        query_string={"next": "/orders?page=1"},
        data={"email": "alice@example.com", "password": PASSWORD},
    )
    assert signed_in.location == "/orders?page=1"
    added = shopper.post("/cart", data={"product_id": 1, "next": "/products/avocados"})
    assert added.location == "/products/avocados"
    order_id = place_order(shopper)
    advanced = staff.post(f"/staff/orders/{order_id}/advance", data={"next": f"/orders/{order_id}"})
    assert advanced.location == f"/orders/{order_id}"


def test_sign_in_is_checked(demo_app: Any) -> None:
    client = demo_app.test_client()
    for data, status, message in [
        ({"email": "", "password": ""}, 400, "Enter your email and your password."),
        ({"email": "alice@example.com"}, 400, "Enter your email and your password."),
        ({"email": "alice", "password": "x"}, 400, "“alice” is not an email address."),
        ({"email": "alice@example.com", "password": "nope"}, 200, "Wrong email or password."),
    ]:
        response = client.post("/login", data=data)
        assert response.status_code == status, data
        assert message in response.get_data(as_text=True), data


def test_error_pages_have_the_shop_header_and_a_way_back(
    demo_app: Any, alice: Any, staff: Any
) -> None:
    pages = [
        (alice, "get", "/nope", 404, "Page not found", "Back to the shop"),
        (alice, "get", "/orders/999", 404, "Page not found", "Back to the shop"),
        (alice, "get", "/staff/", 403, "Not for this account", "Back to the shop"),
        (staff, "get", "/cart", 403, "Not for this account", "Back to the orders board"),
        (alice, "get", "/checkout", 405, "That does not work here", "Back to the shop"),
        (alice, "get", "/notifications?page=x", 400, "Page must be a whole number", "shop"),
        (staff, "post", "/staff/orders/1/advance", 404, "Page not found", "orders board"),
    ]
    for client, method, path, status, title, back in pages:
        response = getattr(client, method)(path)
        page = response.get_data(as_text=True)
        assert response.status_code == status, path
        assert response.mimetype == "text/html", path
        assert title in page and back in page, path
        assert 'class="topbar"' in page and "Sign out" in page, path
    assert "GET" not in alice.get("/checkout").headers["Allow"]


def test_flask_push_keeps_its_json_errors(demo_app: Any, alice: Any) -> None:
    for path, status, code in [
        ("/push/nope", 404, "not_found"),
        ("/push/messages", 403, "forbidden"),
        ("/push/notifications/nope", 404, "not_found"),
    ]:
        response = alice.get(path)
        assert response.status_code == status, path
        assert response.json["error"]["code"] == code, path
    response = alice.get("/orders/999.json")  # the demo's own JSON answers in JSON too
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_a_crash_gets_the_styled_500_page(demo_app: Any, caplog: Any) -> None:
    demo_app.config["PROPAGATE_EXCEPTIONS"] = False  # what a served app does

    def boom() -> str:
        raise RuntimeError("a bug in a view")

    demo_app.add_url_rule("/boom", view_func=boom)
    client = login(demo_app.test_client(), "alice@example.com")
    response = client.get("/boom")
    page = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Something went wrong" in page and "Back to the shop" in page
    assert 'class="topbar"' in page and "a bug in a view" not in page
    assert any(r.exc_info and "a bug in a view" in str(r.exc_info[1]) for r in caplog.records)


def test_an_emptied_offer_title_is_an_error(demo_app: Any, staff: Any) -> None:
    for title, message in [("", "The title is needed."), ("x" * 121, "at most 120 characters")]:
        response = staff.post("/staff/offers/1/push", data={"title": title, "body": "Hurry"})
        page = response.get_data(as_text=True)
        assert response.status_code == 400
        assert "Breakfast bundle was not sent" in page and message in page
        assert 'value="Hurry"' in page  # the form as it was sent, to fix
    assert staff.get("/push/messages").json["totalCount"] == 0
    with demo_app.app_context():
        assert inbox_titles("alice@example.com") == []


def test_an_emptied_offer_text_sends_none(demo_app: Any, staff: Any) -> None:
    response = staff.post("/staff/offers/1/push", data={"title": "Croissants!", "body": " "})
    assert response.status_code == 302
    [message] = staff.get("/push/messages").json["items"]
    assert message["notification"]["title"] == "Croissants!"
    assert message["notification"].get("body") is None


def test_the_message_form_is_checked(demo_app: Any, staff: Any) -> None:
    emails = {"title": "Hi", "audience": "emails"}
    for data, message in [
        ({"title": " "}, "A title is needed."),
        ({"title": "x" * 121}, "A title can be at most 120 characters long."),
        ({"title": "Hi", "body": "x" * 501}, "The text can be at most 500 characters long."),
        ({"title": "Hi", "url": "javascript:alert(1)"}, "The link must be a path on this shop"),
        ({"title": "Hi", "url": "//evil.example"}, "The link must be a path on this shop"),
        ({"title": "Hi", "url": "http://["}, "The link must be a path on this shop"),
        ({"title": "Hi", "audience": "staff"}, "Choose all customers, or customers by email."),
        ({**emails, "emails": " "}, "A list of emails is needed."),
        ({**emails, "emails": "bob@example.com, bob@"}, "Not an email address: bob@"),
        ({**emails, "emails": "nobody@example.com"}, "No customer with: nobody@example.com"),
        ({"title": "Hi"}, "Choose what the message is: News, Offers and deals, Order updates."),
        ({"title": "Hi", "category": "shares"}, "Choose what the message is:"),
    ]:
        response = staff.post("/staff/messages", data=data)
        assert response.status_code == 400, data
        assert message in response.get_data(as_text=True), data
    assert staff.get("/push/messages").json["totalCount"] == 0


def test_order_advance_is_checked(demo_app: Any, alice: Any, staff: Any) -> None:
    order_id = place_order(alice)
    refused = staff.post(f"/staff/orders/{order_id}/advance", data={"status": "teleported"})
    assert refused.status_code == 400
    assert "“teleported” is not an order status." in refused.get_data(as_text=True)
    staff.post(f"/staff/orders/{order_id}/advance", data={"status": "delivered"})
    again = staff.post(f"/staff/orders/{order_id}/advance", follow_redirects=True)
    assert f"Order #{order_id} is already Delivered: nothing to advance." in again.text


def test_a_board_older_than_the_order_moves_it_no_further(
    demo_app: Any, alice: Any, staff: Any
) -> None:
    """A board left open said "Confirmed →" for an order another tab had confirmed
    since: its click moved the order on to Preparing, a step its button never said,
    and told the customer so. The form says the status it moves to."""
    import re

    order_id = place_order(alice)
    board = staff.get("/staff/").text
    form = board[board.index(f"/staff/orders/{order_id}/advance") :]
    status = re.search(r'name="status" value="([a-z_]+)"', form)
    assert status is not None and status.group(1) == "confirmed"
    for _ in range(2):  # this tab, then the stale one
        moved = staff.post(
            f"/staff/orders/{order_id}/advance", data={"status": status.group(1)},
            follow_redirects=True,
        )  # fmt: skip
    assert f"Order #{order_id} is already Confirmed: nothing to advance." in moved.text
    page = staff.get(f"/orders/{order_id}").text
    assert 'name="status" value="preparing"' in page


def test_an_unknown_aisle_or_a_page_past_the_last_says_so(demo_app: Any, alice: Any) -> None:
    """An unknown category showed the shop empty, no chip chosen, with no word of
    why; a Notifications page past the last said "Nothing yet" beside "Mark all
    read (11)"."""
    aisle = alice.get("/?category=Nope")
    assert aisle.status_code == 404
    assert "There is no “Nope” aisle in this shop." in aisle.text
    place_order(alice)
    past = alice.get("/notifications?page=999").text
    assert "No more notifications." in past and "Nothing yet" not in past


def test_a_send_that_reached_only_inboxes_says_so(demo_app: Any, staff: Any, bob: Any) -> None:
    sent = staff.post(
        "/staff/messages",
        data={"title": "Open on Sunday", "category": "order_status"},
        follow_redirects=True,
    )
    assert "“Open on Sunday” sent to 3 inboxes; no browsers or phones are registered." in sent.text
    pushed = staff.post(
        "/staff/offers/2/push", data={"title": "Berries!", "body": ""}, follow_redirects=True
    )
    assert "“Berries!” sent to 3 inboxes; no browsers or phones are registered." in pushed.text
    add_phone(bob, "b1" * 32)
    sent = staff.post(
        "/staff/messages",
        data={
            "audience": "emails",
            "emails": "bob@example.com",
            "title": "Nearby",
            "category": "order_status",
        },
        follow_redirects=True,
    )
    assert "“Nearby” sent to 1 inbox and queued for 1 browser or phone." in sent.text


def test_a_send_says_what_the_shoppers_settings_held_back(
    demo_app: Any, staff: Any, bob: Any
) -> None:
    # nobody turned news on: nothing is written, and the summary says why
    sent = staff.post(
        "/staff/messages", data={"title": "New shop", "category": "news"}, follow_redirects=True
    )
    assert "“New shop” reached nobody: the shoppers it was for have “News” turned off." in sent.text
    add_phone(bob, "b2" * 32)
    bob.post("/settings/notifications", data=settings_form(off=("offers.web", "offers.mobile")))
    pushed = staff.post("/staff/offers/2/push", data={"title": "Berries!"}, follow_redirects=True)
    assert (
        "“Berries!” sent to 3 inboxes; no browser or phone gets it: 1 push held back by the "
        "shoppers’ settings or the daily cap." in pushed.text
    )


def test_the_analytics_count_inbox_deliveries(demo_app: Any, staff: Any, bob: Any) -> None:
    staff.post("/staff/messages", data={"title": "Free delivery", "category": "offers"})
    [message] = staff.get("/push/messages").json["items"]
    assert message["recipientCount"] == 0
    counts = staff.get("/staff/messages/inbox.json", query_string={"id": [message["id"], "x"]})
    item = message["id"]  # the items of a message sent to a list of users: its id
    assert counts.json == {item: {"inbox": 3, "read": 0, "heldBack": 0, "item": item}}
    bob.post("/notifications/read-all")
    counts = staff.get("/staff/messages/inbox.json", query_string={"id": message["id"]})
    assert counts.json == {item: {"inbox": 3, "read": 1, "heldBack": 0, "item": item}}
    assert bob.get("/staff/messages/inbox.json").status_code == 403
    too_many = staff.get("/staff/messages/inbox.json", query_string={"id": ["m"] * 101})
    assert too_many.status_code == 400
    assert too_many.json["error"] == {
        "code": "bad_request",
        "message": "Ask for at most 100 messages at a time.",
        "field": "id",
    }


def test_the_analytics_count_the_shoppers_whose_settings_held_the_inbox_back(
    demo_app: Any, staff: Any, bob: Any
) -> None:
    """News is off until a shopper turns it on: a news message wrote no inbox item, and
    the Sent card read "no browsers or phones registered" for want of this count."""
    bob.post("/settings/notifications", data={**settings_form(), "news.inbox": "on"})
    staff.post("/staff/messages", data={"title": "New shop", "category": "news"})
    [message] = staff.get("/push/messages").json["items"]
    counts = staff.get("/staff/messages/inbox.json", query_string={"id": message["id"]})
    item = message["id"]
    assert counts.json == {item: {"inbox": 1, "read": 0, "heldBack": 2, "item": item}}


def test_new_order_in_the_staff_bell_links_to_the_order(
    demo_app: Any, alice: Any, staff: Any
) -> None:
    order_id = place_order(alice)
    with demo_app.app_context():
        [item] = push.search(user_id("staff@example.com"), types=["new_order"]).items
    assert item.title == f"New order #{order_id}"
    assert item.url == f"/orders/{order_id}"
    page = staff.get(item.url)
    assert page.status_code == 200 and "Advance status" in page.text


def test_the_notifications_page_shows_types_as_labels(demo_app: Any, alice: Any) -> None:
    with demo_app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == "alice@example.com"))
        push.upsert(user.push_id, notify_type="order_status", title="Order #7 is on its way")
    page = alice.get("/notifications").get_data(as_text=True)
    assert "· Order updates</div>" in page and "order_status<" not in page


def test_the_notifications_page_says_when_each_arrived_not_when_it_was_read(
    demo_app: Any, alice: Any
) -> None:
    """Marking all read touches every item (its updatedAt moves): the page kept showing
    that moment for all of them, as if they had all just arrived. It shows when each
    arrived, as the bell does."""
    with demo_app.app_context():
        shopper = user_id("alice@example.com")
        push.upsert(shopper, "old-news", notify_type="news", title="Sunday deliveries")
        item, march = push.models.InboxItem, datetime(2026, 3, 1, 8, 30, tzinfo=timezone.utc)
        db.session.execute(
            sa.update(item).where(item.id == "old-news").values(created_at=march, updated_at=march)
        )
        db.session.commit()
    assert "Mar 01, 08:30 UTC" in alice.get("/notifications").text
    alice.post("/notifications/read-all")
    page = alice.get("/notifications").text
    assert "Mar 01, 08:30 UTC" in page and "Mark all read (0)" in page


def test_an_empty_inbox_offers_nothing_to_mark_read(demo_app: Any, alice: Any) -> None:
    """A new shopper's Notifications page showed a greyed-out "Mark all read (0)" over
    "Nothing yet"; it shows the button once there is an item, disabled while none is
    new."""
    assert "Mark all read" not in alice.get("/notifications").text
    with demo_app.app_context():
        push.upsert(user_id("alice@example.com"), "welcome", notify_type="news", title="Hi")
    assert "Mark all read (1)</button>" in alice.get("/notifications").text
    alice.post("/notifications/read-all")
    assert "disabled>Mark all read (0)</button>" in alice.get("/notifications").text


def test_a_staff_message_is_named_in_the_inbox_by_its_category(
    demo_app: Any, staff: Any, alice: Any
) -> None:
    """As the notification settings name it, not "Announcement"; the bell gets the
    same labels from the page."""
    staff.post(
        "/staff/messages", data={"title": "Your order's new slot", "category": "order_status"}
    )
    page = alice.get("/notifications").get_data(as_text=True)
    assert "· Order updates</div>" in page and "· Announcement" not in page
    labels = re.search(r'data-type-labels="([^"]*)"', page)
    assert labels is not None
    assert json.loads(html.unescape(labels.group(1)))["order_status"] == "Order updates"


def test_staff_reach_flask_pushs_console_and_shoppers_do_not(staff: Any, alice: Any) -> None:
    assert 'href="/push/console/">Console</a>' in staff.get("/staff/").text
    for path in ("/push/console/", "/push/console/messages", "/push/console/providers"):
        assert staff.get(path).status_code == 200, path
        assert alice.get(path).status_code == 404, path


# -- notification settings and the policy at send time -------------------------------------


def preferences(email: str) -> tuple[dict[str, dict[str, bool]], Any]:
    saved = push.get_preferences(user_id(email))
    return saved.categories, saved.quiet_hours


def boxes(page: str) -> dict[str, str]:
    """Each checkbox of the settings page: its name -> "on", "off" or "always" (ticked
    and disabled)."""
    found = {}
    for tag in re.findall(r"<input type=\"checkbox\"[^>]*>", page):
        name = re.search(r'name="([^"]+)"', tag).group(1)
        found[name] = "always" if " disabled" in tag else "on" if " checked" in tag else "off"
    return found


def test_every_send_names_its_category(demo_app: Any, alice: Any, staff: Any) -> None:
    order_id = place_order(alice)
    alice.post("/share/offer/berry-weekend")
    staff.post(f"/staff/orders/{order_id}/advance")
    staff.post("/staff/offers/1/push", data={"title": "Croissants!"})
    staff.post("/staff/messages", data={"title": "Hello", "category": "offers"})
    listed = staff.get("/push/messages").json["items"]
    assert [(m["notification"]["title"], m["category"]) for m in listed] == [
        ("Hello", "offers"),
        ("Croissants!", "offers"),
        (f"Order #{order_id}: Confirmed", "order_status"),
        ("Alice shared Berry weekend", "shares"),
        (f"Order #{order_id}: Placed", "order_status"),
    ]


def test_the_settings_page_starts_from_the_defaults(demo_app: Any, alice: Any) -> None:
    page = alice.get("/settings/notifications").text
    assert boxes(page) == {
        **{f"order_status.{ch}": "always" for ch in ("web", "mobile", "inbox")},
        **{f"offers.{ch}": "on" for ch in ("web", "mobile", "inbox")},
        **{f"shares.{ch}": "on" for ch in ("web", "mobile", "inbox")},
        **{f"news.{ch}": "off" for ch in ("web", "mobile", "inbox")},
    }
    assert "Always on" in page and "At most 2 a day" in page and "Off until you turn it on" in page
    assert 'value="off" checked' in page  # no quiet hours
    # no zone saved: none is selected, and the page's script may pick the browser's
    assert '<select name="time_zone" data-browser-zone' in page
    assert '<option value="" selected>Choose your time zone</option>' in page
    assert "<option>Europe/Berlin</option>" in page and "<script>" not in page
    for path in ("/devices", "/notifications", "/"):
        assert 'href="/settings/notifications"' in alice.get(path).text, path


def test_the_quiet_hours_promise_the_inbox_only_what_it_lets_in(demo_app: Any, alice: Any) -> None:
    """A category whose inbox is off writes no inbox item, in quiet hours or not: the
    page said "The inbox gets everything at once"."""
    page = alice.get("/settings/notifications").text
    assert "What you let into your inbox still arrives there at once." in page
    assert "everything" not in page


def test_staff_are_offered_no_notification_settings(demo_app: Any, staff: Any) -> None:
    """The categories are the shoppers' choices; the staff's inbox (new orders,
    exports) has none: the staff's notifications page offered the shoppers' settings."""
    for path in ("/notifications", "/staff/"):
        assert 'href="/settings/notifications"' not in staff.get(path).text, path


def test_the_empty_orders_board_says_what_comes_there(
    demo_app: Any, staff: Any, alice: Any
) -> None:
    """A first run's board was five columns of dashes, with nothing to say that it
    waits for the shoppers' orders."""
    assert "No orders yet. A shopper's order shows here" in staff.get("/staff/").text
    alice.post("/cart", data={"product_id": 1})
    alice.post("/checkout")
    assert "No orders yet" not in staff.get("/staff/").text


def test_the_empty_sent_list_says_what_comes_there(demo_app: Any, staff: Any) -> None:
    """A first run's list of sent messages read "No messages yet." and no more. The
    sentence is the page's, which the script shows when the API lists nothing."""
    page = staff.get("/staff/messages").text
    assert 'data-empty="No messages yet. A message sent with the form here, an offer' in page
    assert "messages.dataset.empty" in staff.get("/static/demo.js").text


def test_an_empty_inbox_names_what_comes_to_its_reader(
    demo_app: Any, staff: Any, alice: Any
) -> None:
    """The staff's empty notifications page promised the shoppers' shares, order
    updates and offers, none of which come to them."""
    shoppers = "Nothing yet. Shares, order updates and offers land here."
    assert shoppers in alice.get("/notifications").text
    page = staff.get("/notifications").text
    assert shoppers not in page
    assert "Nothing yet. Each new order lands here as it is placed, and each export" in page


def test_the_pages_find_flask_push_below_a_mount(demo_app: Any, staff: Any) -> None:
    """Served at /shop, the pages asked for flask-push's script, stylesheet and API at
    the site's /push, and told the client its service worker was the site's
    /push-sw.js, which overrides what the app answers (/shop/push-sw.js)."""
    page = staff.get("/staff/messages", base_url="http://localhost/shop").text
    assert '<script src="/shop/push/static/flask-push.js"></script>' in page
    assert 'href="/shop/push/static/flask-push.css"' in page
    assert 'data-push-prefix="/shop/push"' in page
    assert 'data-url="/shop/push/messages?take=25"' in page
    assert "data-sw-url" not in page and "push-sw.js" not in page
    assert "serviceWorkerUrl" not in staff.get("/static/demo.js").text
    # at the root, as before
    assert '<script src="/push/static/flask-push.js"></script>' in staff.get("/staff/").text


def test_the_shop_front_offers_the_staff_their_own_pages(demo_app: Any, staff: Any) -> None:
    """The staff reach the shop's front page (the console's "Back to the site" leads
    there): its hero offered them the shopper's "Go to cart", a 403 for them, and
    "Enable notifications" for pushes their inbox never sends."""
    page = staff.get("/").text
    assert 'href="/cart"' not in page
    assert "data-enable-notifications" not in page
    assert '<a class="btn" href="/staff/">Orders board</a>' in page
    assert 'href="/staff/offers">Push an offer</a>' in page


def test_staff_cannot_open_the_shoppers_settings_or_phones(demo_app: Any, staff: Any) -> None:
    """By its address, the settings page showed the staff the shoppers' categories and
    saved their choices, which changed nothing (their inbox has no category); the
    Phones page registered phones that got nothing. Both say why they are closed."""
    for path in ("/settings/notifications", "/devices"):
        page = staff.get(path)
        assert page.status_code == 403, path
        assert "Not for this account" in page.text, path
        assert "the shoppers" in page.text, path
    refused = staff.post("/settings/notifications", data=settings_form(off=("offers.web",)))
    assert refused.status_code == 403
    with demo_app.app_context():
        assert push.get_preferences(user_id("staff@example.com")).categories["offers"]["web"]
    answer = staff.get("/devices/received.json")
    assert answer.status_code == 403
    assert answer.get_json()["error"]["code"] == "forbidden"
    assert "shoppers" in answer.get_json()["error"]["message"]


def test_the_settings_form_round_trip(demo_app: Any, alice: Any) -> None:
    form = settings_form(
        off=("offers.web", "offers.mobile"),
        **{"news.inbox": "on", "order_status.web": ""},  # a disabled box is never sent on
    )
    form.update(quiet="on", quiet_start="22:30", quiet_end="06:45", time_zone="Europe/Berlin")
    saved = alice.post("/settings/notifications", data=form, follow_redirects=True)
    assert saved.status_code == 200
    assert "Your notification settings are saved." in saved.text
    with demo_app.app_context():
        categories, quiet = preferences("alice@example.com")
    assert categories == {
        "order_status": {"web": True, "mobile": True, "inbox": True},
        "offers": {"web": False, "mobile": False, "inbox": True},
        "shares": {"web": True, "mobile": True, "inbox": True},
        "news": {"web": False, "mobile": False, "inbox": True},
    }
    assert (quiet.start, quiet.end, quiet.time_zone) == ("22:30", "06:45", "Europe/Berlin")
    page = alice.get("/settings/notifications").text
    assert boxes(page)["offers.web"] == "off" and boxes(page)["news.inbox"] == "on"
    assert 'value="on" checked' in page
    assert 'name="quiet_start" value="22:30"' in page and 'name="quiet_end" value="06:45"' in page
    assert "<option selected>Europe/Berlin</option>" in page and "data-browser-zone" not in page

    # "no quiet hours" removes them; everything else stays as it was
    alice.post("/settings/notifications", data={**form, "quiet": "off"})
    with demo_app.app_context():
        categories_after, quiet = preferences("alice@example.com")
    assert quiet is None and categories_after == categories
    # seconds, as some browsers send a time, are fine
    alice.post(
        "/settings/notifications",
        data={**form, "quiet_start": "21:00:00", "quiet_end": "07:00:00"},
    )
    with demo_app.app_context():
        assert preferences("alice@example.com")[1].start == "21:00"


def test_a_required_category_stays_on(demo_app: Any, alice: Any) -> None:
    # a hand-made form sending the required boxes off changes nothing about them
    form = settings_form(**{f"order_status.{ch}": "" for ch in ("web", "mobile", "inbox")})
    assert alice.post("/settings/notifications", data=form).status_code == 302
    with demo_app.app_context():
        categories, _ = preferences("alice@example.com")
    assert categories["order_status"] == {"web": True, "mobile": True, "inbox": True}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"time_zone": "Mars/Olympus_Mons"},
            "time_zone",
            "The time zone must be an IANA time zone such as",
        ),
        ({"time_zone": ""}, "time_zone", "Choose your time zone."),
        (
            {"quiet_start": "24:00"},
            "quiet_start",
            "The start must be a time of day as HH:MM, such as 22:00.",
        ),
        ({"quiet_end": ""}, "quiet_end", "The end must be a time of day as HH:MM"),
        ({"quiet_end": "22:00"}, "quiet_end", "The end must differ from the start."),
        ({"quiet": "sometimes"}, "quiet", "Choose quiet hours, or none."),
    ],
)
def test_a_refused_setting_changes_nothing(
    demo_app: Any, alice: Any, fields: dict[str, str], field: str, message: str
) -> None:
    with demo_app.app_context():
        before = preferences("alice@example.com")
    form = settings_form(off=("offers.web",), **{"news.web": "on"})
    form.update(quiet="on", quiet_start="22:00", quiet_end="07:00", time_zone="Europe/Berlin")
    form.update(fields)
    response = alice.post("/settings/notifications", data=form)
    page = response.text
    assert response.status_code == 400
    assert "Nothing was saved: fix what is marked below." in page
    # the reason sits right after its field
    [error] = re.findall(r'<(?:span|p) class="field-error" role="alert">([^<]*)<', page)
    assert error.startswith(message), error
    name = {"quiet": "quiet"}.get(field, field)
    if field != "quiet":
        field_at = page.index(f'name="{name}"')
        assert field_at < page.index(error) < page.index("</label>", field_at)
    # the form as it was sent, to fix
    assert boxes(page)["offers.web"] == "off" and boxes(page)["news.web"] == "on"
    assert f'name="quiet_start" value="{form["quiet_start"]}"' in page
    if form["time_zone"]:
        assert f"<option selected>{form['time_zone']}</option>" in page
    with demo_app.app_context():
        assert preferences("alice@example.com") == before


def test_the_settings_need_a_sign_in(demo_app: Any) -> None:
    client = demo_app.test_client()
    response = client.get("/settings/notifications")
    assert response.status_code == 302 and "/login" in response.location
    assert client.post("/settings/notifications", data=settings_form()).status_code == 302


def test_the_analytics_count_what_the_settings_held_back(
    demo_app: Any, alice: Any, bob: Any, staff: Any
) -> None:
    """Alice turns offers off for her phone; Bob has quiet hours now. An offer is then
    suppressed for her phone and deferred for his, and an order update still reaches
    her phone at once. The staff's numbers are flask-push's message counts."""
    add_phone(alice, "a2" * 32)
    add_phone(bob, "b3" * 32)
    alice.post("/settings/notifications", data=settings_form(off=("offers.mobile",)))
    now = datetime.now(timezone.utc)
    quiet = {
        "quiet": "on",
        "quiet_start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "quiet_end": (now + timedelta(hours=1)).strftime("%H:%M"),
        "time_zone": "UTC",
    }
    assert bob.post("/settings/notifications", data=settings_form(**quiet)).status_code == 302
    order_id = place_order(alice)
    with demo_app.app_context(), push.record() as outbox:
        pushed = staff.post("/staff/offers/1/push", data={"title": "Croissants!"})
        summary = staff.get("/staff/messages").text
        assert "“Croissants!” sent to 3 inboxes and queued for 1 browser or phone" in summary
        assert "(1 of them after the shoppers’ quiet hours); 1 push held back" in summary
        staff.post(f"/staff/orders/{order_id}/advance")
        # only the order update went out now: to alice's phone
        assert [(p.notification.title, p.target.token) for p in outbox] == [
            (f"Order #{order_id}: Confirmed", "a2" * 32)
        ]
    assert pushed.status_code == 302
    _placed, offer, order = staff.get("/push/messages").json["items"][::-1]
    assert offer["category"] == "offers" and order["category"] == "order_status"
    assert offer["counts"]["suppressed"] == 1 and offer["counts"]["deferred"] == 1
    assert offer["counts"]["queued"] == 1 and offer["recipientCount"] == 1
    assert order["counts"]["suppressed"] == 0 and order["counts"]["deferred"] == 0
    # the page says what the numbers mean
    page = staff.get("/staff/messages").text
    assert "<dt>suppressed</dt>" in page and "<dt>deferred</dt>" in page
    labels = re.search(r'data-categories="([^"]*)"', page).group(1)
    assert json.loads(html.unescape(labels))["offers"] == "Offers and deals"


def test_the_daily_cap_holds_back_the_third_offer(demo_app: Any, alice: Any, staff: Any) -> None:
    add_phone(alice, "a3" * 32)
    with demo_app.app_context(), push.record() as outbox:
        for offer_id in (1, 2, 3):
            staff.post(f"/staff/offers/{offer_id}/push", data={"title": f"Offer {offer_id}"})
        assert [p.notification.title for p in outbox] == ["Offer 1", "Offer 2"]
        # the inbox still gets it
        assert inbox_titles("alice@example.com") == ["Offer 3", "Offer 2", "Offer 1"]
    third = staff.get("/push/messages").json["items"][0]
    assert third["counts"]["suppressed"] == 1 and third["recipientCount"] == 0


def test_an_old_demo_database_gets_the_new_tables_and_columns(demo_app: Any) -> None:
    """A database from a run before the notification policy: no preferences, no cap
    ledger, no message category. ``create_tables`` (what ``make demo`` runs) adds them."""
    from demo.schema import create_tables

    with demo_app.app_context():
        with db.engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE push_preferences"))
            connection.execute(sa.text("DROP TABLE push_capped_sends"))
            connection.execute(sa.text("ALTER TABLE push_messages DROP COLUMN category"))
        assert create_tables() == ["push_messages.category"]
        tables = sa.inspect(db.engine).get_table_names()
        assert {"push_preferences", "push_capped_sends"} <= set(tables)
        alice = user_id("alice@example.com")
        push.set_preferences(alice, categories={"offers": {"inbox": False}})
        message = push.send(users=[alice], title="Hi", category="offers", inbox=True)
        assert message.category == "offers" and inbox_titles("alice@example.com") == []
        assert create_tables() == []  # and once is enough


def test_a_port_in_use_is_said_before_anything_is_built() -> None:
    """`make demo` on a busy port: one line that says what to do, exit 1, and
    nothing seeded into instance/ (the check comes first)."""
    import socket
    import subprocess

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ran = subprocess.run(
            [sys.executable, "-m", "demo", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert ran.returncode == 1 and ran.stdout == ""
    assert ran.stderr == (
        f"Port {port} on 127.0.0.1 is in use (Address already in use): stop what serves "
        f"there, or serve the demo elsewhere with `make demo PORT={port + 1}` "
        f"(or `.venv/bin/python -m demo --port {port + 1}`).\n"
    )


@pytest.mark.parametrize("port", ["99999", "0"])
def test_a_port_out_of_range_is_said_without_a_traceback(port: str) -> None:
    """`make demo PORT=99999` (a digit too many) or 0: argparse's one line saying which
    ports there are, exit 2, instead of a traceback from bind() or a demo announced
    at port 0."""
    import subprocess

    ran = subprocess.run(
        [sys.executable, "-m", "demo", "--port", port],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 2 and ran.stdout == ""
    assert ran.stderr.endswith(
        f"error: argument --port: {port} is not a port: choose one from 1 to 65535\n"
    )
    assert "Traceback" not in ran.stderr


def test_a_delivered_order_no_longer_offers_notifications_of_its_steps(
    demo_app: Any, alice: Any
) -> None:
    order_id = place_order(alice)
    assert "Get a notification at each step" in alice.get(f"/orders/{order_id}").text
    with demo_app.app_context():
        db.session.get(Order, order_id).status = "delivered"
        db.session.commit()
    assert "Get a notification at each step" not in alice.get(f"/orders/{order_id}").text
