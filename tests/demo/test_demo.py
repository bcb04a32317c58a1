"""Server-side tests of the demo storefront's push hooks (the browser walkthrough is
separate): each goes through the demo's own routes and checks what flask-push got."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# The demo is an app in the repository, not part of the installed package.
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from demo import create_app, db, push  # noqa: E402
from demo.models import Order, User  # noqa: E402
from demo.seed import PASSWORD, seed  # noqa: E402


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
    with app.app_context():
        app.extensions["push"].shutdown()
        db.session.remove()
        db.engine.dispose()


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
    [(channel, event, data)] = published
    assert (channel, event, data["status"]) == (f"order:{order_id}", "status", "confirmed")
    timeline = alice.get(f"/orders/{order_id}.json").json["timeline"]
    assert [step["at"] is not None for step in timeline] == [True, True, False, False, False]


def test_customers_join_only_their_own_order_channels(demo_app: Any, alice: Any) -> None:
    order_id = place_order(alice)
    with demo_app.app_context():
        alice_id, bob_id = user_id("alice@example.com"), user_id("bob@example.com")
        assert push.may_join(alice_id, f"order:{order_id}")
        assert push.may_join(alice_id, f"user:{alice_id}")
        assert not push.may_join(bob_id, f"order:{order_id}")
        assert not push.may_join(bob_id, f"user:{alice_id}")
        assert not push.may_join(None, f"order:{order_id}")
        assert push.may_join(user_id("staff@example.com"), f"order:{order_id}")


def test_offer_push_uses_the_default_text(demo_app: Any, staff: Any) -> None:
    page = staff.get("/staff/offers")
    assert b'value="Exclusive Offer: Breakfast bundle"' in page.data
    with demo_app.app_context():
        assert staff.post("/staff/offers/1/push", data={"title": ""}).status_code == 302
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
            },
        )
        assert response.status_code == 302
        assert inbox_titles("bob@example.com") == ["Your courier is nearby"]
        assert inbox_titles("carol@example.com") == ["Your courier is nearby"]
        assert inbox_titles("alice@example.com") == []
        staff.post("/staff/messages", data={"audience": "all", "title": "Open on Sunday"})
        assert inbox_titles("alice@example.com") == ["Open on Sunday"]
    listed = staff.get("/push/messages").json
    assert [m["notification"]["title"] for m in listed["items"]] == [
        "Open on Sunday",
        "Your courier is nearby",
    ]
    assert set(listed["items"][0]["counts"]) >= {"queued", "sent", "failed", "clicked"}


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
