"""Providers stored per app id by ``/providers`` send to that app's installations,
through the real pyfcm and google-auth against FakeFCM; every other installation
keeps the provider of ``app.config``."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push import dispatch
from flask_push import outcomes as outcomes_module
from flask_push.errors import PayloadError
from flask_push.testing import FakeAPNs, FakeFCM

from conftest import (
    add_subscription,
    as_user,
    db,
    later,
    make_due,
    push,
    quiet_now,
    service_account,
)

ADMIN = as_user("root", admin=True)
SHOP_TOKEN = "shop-token-" + "s" * 40
OTHER_TOKEN = "other-token-" + "o" * 40


@pytest.fixture(autouse=True)
def read_stored_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # a change to /providers reaches delivery within STORED_REFRESH seconds
    monkeypatch.setattr(dispatch, "STORED_REFRESH", 0.0)


def store(client: Any, account: dict[str, Any], app_id: str = "shop") -> str:
    answer = client.post(
        "/push/providers",
        json={"appId": app_id, "kind": "fcm", "settings": {"credentials": account}},
        headers=ADMIN,
    )
    assert answer.status_code == 201, answer.get_json()
    return str(answer.get_json()["id"])


def install(client: Any, app_id: str, token: str) -> None:
    answer = client.post(
        "/push/installations",
        json={"appId": app_id, "deviceType": "android", "deviceToken": token},
        headers=as_user("al"),
    )
    assert answer.status_code == 201, answer.get_json()


def projects(fake: FakeFCM) -> dict[str | None, str]:
    """Each token's last message: the project it was sent for."""
    return {message.token: message.project_id for message in fake.messages}


def outcomes(app: Flask, message_id: str) -> dict[str, tuple[str, str | None]]:
    with app.app_context():
        return {
            entry["target"]["id"]: (entry["status"], entry["reason"])
            for entry in push.explain(message_id)
        }


def test_a_stored_provider_sends_for_its_app_and_config_for_the_rest(
    sending_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    app = sending_app()  # app.config's FCM: project flask-push-test
    client = app.test_client()
    id = store(client, push_fake_fcm.service_account("shop-project"))
    # shown at the address it sends to: app.config's (the fake), not Google's
    shown = client.get(f"/push/providers/{id}", headers=ADMIN).get_json()
    assert shown["settings"] == {"projectId": "shop-project", "baseUrl": push_fake_fcm.base_url}
    console = client.get("/push/console/providers", headers=ADMIN).get_data(as_text=True)
    assert push_fake_fcm.base_url in console and "fcm.googleapis.com" not in console
    install(client, "shop", SHOP_TOKEN)
    install(client, "other", OTHER_TOKEN)
    with app.app_context():
        push.send(users=["al"], title="Your order shipped")
    assert projects(push_fake_fcm) == {SHOP_TOKEN: "shop-project", OTHER_TOKEN: "flask-push-test"}

    # a new service account (a rotated key) is used from then on
    rotated = push_fake_fcm.service_account("shop-project")
    changed = client.patch(
        f"/push/providers/{id}", json={"settings": {"credentials": rotated}}, headers=ADMIN
    )
    assert changed.status_code == 200, changed.get_json()
    with app.app_context():
        push.send(users=["al"], title="Again")
    assert rotated["client_email"] in {t.client_email for t in push_fake_fcm.issued_tokens}

    # removed: the app's installations go back to app.config's provider
    assert client.delete(f"/push/providers/{id}", headers=ADMIN).status_code == 204
    with app.app_context():
        push.send(users=["al"], title="Once more")
    assert projects(push_fake_fcm)[SHOP_TOKEN] == "flask-push-test"


def test_without_fcm_in_config_only_the_stored_apps_are_reachable(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    # PUSH_FCM_BASE_URL alone says where FCM is (here, the fake), and turns nothing on
    app = make_app(
        PUSH_QUEUE="inline", PUSH_SUPPRESS_SEND=False, PUSH_FCM_BASE_URL=push_fake_fcm.base_url
    )
    client = app.test_client()
    store(client, push_fake_fcm.service_account("shop-project"))
    install(client, "shop", SHOP_TOKEN)
    install(client, "other", OTHER_TOKEN)
    with app.app_context():
        message = push.send(users=["al"], title="Your order shipped")
    assert projects(push_fake_fcm) == {SHOP_TOKEN: "shop-project"}
    assert sorted(outcomes(app, message.id).values()) == [
        ("failed", "no_provider"),
        ("sent", "accepted"),
    ]


def test_a_stored_provider_that_cannot_send_says_why(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    app = make_app(
        PUSH_QUEUE="inline", PUSH_SUPPRESS_SEND=False, PUSH_FCM_BASE_URL=push_fake_fcm.base_url
    )
    client = app.test_client()
    id = store(client, push_fake_fcm.service_account("shop-project"))
    install(client, "shop", SHOP_TOKEN)
    with app.app_context():
        # a row written before its checks, or by hand
        model = push.models.Provider
        db.session.execute(
            sa.update(model).where(model.id == id).values(secrets={"credentials": {"x": 1}})
        )
        db.session.commit()
        message = push.send(users=["al"], title="x")
        (entry,) = push.explain(message.id)
    assert (entry["status"], entry["reason"]) == ("failed", "provider_unusable")
    assert entry["detail"].startswith("The fcm provider stored for its app cannot send (")
    assert push_fake_fcm.messages == []


def test_the_address_of_the_service_is_the_deployments(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    client = make_app().test_client()  # app.config sends FCM to Google
    body = {"appId": "shop", "kind": "fcm"}
    refused = client.post(
        "/push/providers",
        json={**body, "settings": {"credentials": service_account(), "baseUrl": "https://x.test"}},
        headers=ADMIN,
    )
    assert refused.status_code == 400
    assert refused.get_json()["error"]["field"] == "settings.baseUrl"
    # a service account that would fetch its tokens elsewhere than Google
    elsewhere = service_account(token_uri="http://169.254.169.254/token")
    refused = client.post(
        "/push/providers", json={**body, "settings": {"credentials": elsewhere}}, headers=ADMIN
    )
    assert refused.status_code == 400
    assert refused.get_json()["error"]["field"] == "settings.credentials"
    assert "token_uri" in refused.get_json()["error"]["message"]
    id = store(client, service_account())
    patched = client.patch(
        f"/push/providers/{id}", json={"settings": {"baseUrl": "https://x.test"}}, headers=ADMIN
    )
    assert patched.status_code == 400
    assert patched.get_json()["error"]["field"] == "settings.baseUrl"


def apns_app_of_its_own(
    make_app: Callable[..., Flask], fake: Any, app_id: str, key_id: str | None = None
) -> Flask:
    """An app whose app.config says only where APNs is (the fake), with an APNs
    provider stored for ``app_id`` (its own key and topic, ``com.example.<app_id>``)
    and al's iPhone of that app."""
    base = fake.app_config(topic="com.example.app")["PUSH_APNS_BASE_URL"]
    app = make_app(PUSH_QUEUE="inline", PUSH_SUPPRESS_SEND=False, PUSH_APNS_BASE_URL=base)
    client = app.test_client()
    topic = f"com.example.{app_id}"
    fake.allow_topic(topic)
    key_pem, key_id, team_id = fake.auth_key(key_id=key_id) if key_id else fake.auth_key()
    settings = {"key": key_pem, "keyId": key_id, "teamId": team_id, "topic": topic}
    answer = client.post(
        "/push/providers",
        json={"appId": app_id, "kind": "apns", "settings": settings},
        headers=ADMIN,
    )
    assert answer.status_code == 201, answer.get_json()
    installed = client.post(
        "/push/installations",
        json={"appId": app_id, "deviceType": "ios", "deviceToken": "ab" * 32},
        headers=as_user("al"),
    )
    assert installed.status_code == 201, installed.get_json()
    return app


def test_a_stored_apns_provider_sends_with_its_own_key_and_topic(
    make_app: Callable[..., Flask], push_fake_apns: Any
) -> None:
    app = apns_app_of_its_own(make_app, push_fake_apns, "shop")
    with app.app_context():
        message = push.send(users=["al"], title="Your order shipped")
    assert [(n.device_token, n.headers["apns-topic"]) for n in push_fake_apns.notifications] == [
        ("ab" * 32, "com.example.shop")
    ]
    assert list(outcomes(app, message.id).values()) == [("sent", "accepted")]


def test_a_stored_providers_failure_names_the_settings_it_sent_with(
    make_app: Callable[..., Flask], push_fake_apns: Any
) -> None:
    """APNs refuses the stored provider's key: the hint names that provider's
    settings, not PUSH_APNS_KEY, which this app does not even set."""
    app = apns_app_of_its_own(make_app, push_fake_apns, "beta", key_id="REVOKED001")
    push_fake_apns.revoke_key("REVOKED001")
    with app.app_context():
        message = push.send(users=["al"], title="Your order shipped")
        [entry] = push.explain(message.id)
    assert (entry["status"], entry["reason"]) == ("failed", "credentials_refused")
    assert (
        "check settings.key of the apns provider stored for app 'beta', its key id "
        in (entry["detail"])
    )
    assert "PUSH_APNS" not in entry["detail"]


def al_with_a_phone(
    make_app: Callable[..., Flask], fake: FakeFCM, **config: Any
) -> tuple[Flask, Any]:
    """An app aimed at ``fake`` (FCM configured nowhere) and its client, with al's
    phone of the app ``shop`` installed: no provider reaches it until one is stored."""
    app = make_app(
        PUSH_QUEUE="inline", PUSH_SUPPRESS_SEND=False, PUSH_FCM_BASE_URL=fake.base_url, **config
    )
    client = app.test_client()
    install(client, "shop", SHOP_TOKEN)
    return app, client


def test_credentials_of_another_project_take_its_project_id(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    """A stored FCM provider given new credentials, of another Firebase project,
    kept the project id the old credentials had named (stored as if chosen): pushes
    went to the old project with the new project's account, and FCM refused each
    one. A project id chosen apart from the credentials stays chosen."""
    app, client = al_with_a_phone(make_app, push_fake_fcm)
    id = store(client, push_fake_fcm.service_account("old-project"))

    def patch(**settings: Any) -> dict[str, Any]:
        answer = client.patch(f"/push/providers/{id}", json={"settings": settings}, headers=ADMIN)
        assert answer.status_code == 200, answer.get_json()
        return dict(answer.get_json()["settings"])

    assert patch(credentials=push_fake_fcm.service_account("new-project"))["projectId"] == (
        "new-project"
    )
    with app.app_context():
        message = push.send(users=["al"], title="Your order shipped")
    assert list(outcomes(app, message.id).values()) == [("sent", "accepted")]
    assert projects(push_fake_fcm) == {SHOP_TOKEN: "new-project"}
    assert patch(projectId="chosen-project")["projectId"] == "chosen-project"
    account = push_fake_fcm.service_account("third-project")
    assert patch(credentials=account)["projectId"] == "chosen-project"


def messages_written(app: Flask) -> int:
    with app.app_context():
        return int(db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Message)))


def test_a_platform_set_up_only_for_an_app_refuses_at_send_what_it_would_refuse(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM, push_fake_apns: FakeAPNs
) -> None:
    """With FCM and APNs stored for an app only (``/providers``), not in app.config,
    push.send took a data key FCM reserves and a payload over APNs' limit, wrote
    the message, and every delivery failed. It refuses them as it does for a
    configured platform (PayloadError; nothing written), and takes them again once
    the provider is removed."""
    app, client = al_with_a_phone(make_app, push_fake_fcm)
    id = store(client, push_fake_fcm.service_account("shop-project"))
    with app.app_context(), pytest.raises(PayloadError, match="'from'"):
        push.send(users=["al"], title="Hi", data={"from": "shop"})
    assert messages_written(app) == 0
    mobile_only = apns_app_of_its_own(
        lambda **c: make_app(PUSH_VAPID_PRIVATE_KEY=None, PUSH_VAPID_SUBJECT=None, **c),
        push_fake_apns,
        "shop",
    )
    with mobile_only.app_context(), pytest.raises(PayloadError, match="apns payload"):
        push.send(users=["al"], title="Big", body="x" * 3000, data={"n": "y" * 1500})
    assert messages_written(mobile_only) == 0
    deleted = client.delete(f"/push/providers/{id}", headers=ADMIN)
    assert deleted.status_code == 204
    with app.app_context():
        push.send(users=["al"], title="Hi", data={"from": "shop"})
    assert messages_written(app) == 1


@pytest.mark.usefixtures("same_utc_day")
def test_retrying_what_failed_keeps_a_scheduled_messages_send_time(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    """A message for tomorrow fails at once on a device no provider reaches; the
    operator stores one and retries what failed, as the detail says: the device
    gets it tomorrow, with everyone else, not now."""
    app, client = al_with_a_phone(make_app, push_fake_fcm)
    send_at = later()
    with app.app_context():
        message = push.send(users=["al"], title="Tomorrow's sale", send_at=send_at)
    assert list(outcomes(app, message.id).values()) == [("failed", "no_provider")]
    store(client, push_fake_fcm.service_account("shop-project"))
    answer = client.post(f"/push/messages/{message.id}/retry", json={}, headers=ADMIN)
    assert answer.status_code == 200, answer.get_json()
    assert push_fake_fcm.messages == []  # not before its time
    with app.app_context():
        (entry,) = push.explain(message.id)
    assert entry["status"] == "queued"
    assert entry["nextAttemptAt"] == send_at.isoformat().replace("+00:00", "Z")
    assert f"it is due at {outcomes_module.clock(send_at)}" in entry["detail"]


OFFERS = {"offers": {"label": "Offers and deals"}}


def test_retrying_what_failed_keeps_the_users_quiet_hours(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    """An offer reaches her phone during her quiet hours and fails at once: no
    provider yet. The operator stores one and retries what failed: the phone is
    held to the end of her quiet hours, as it would have been, not woken now."""
    app, client = al_with_a_phone(make_app, push_fake_fcm, PUSH_CATEGORIES=OFFERS)
    with app.app_context():
        quiet_now("al")
        id = push.send(users=["al"], title="Half price", category="offers").id
    assert list(outcomes(app, id).values()) == [("failed", "no_provider")]
    store(client, push_fake_fcm.service_account("shop-project"))
    answer = client.post(f"/push/messages/{id}/retry", json={}, headers=ADMIN)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["counts"]["queued"] == 1
    assert push_fake_fcm.messages == []  # not in her quiet hours
    with app.app_context():
        (entry,) = push.explain(id)
        quiet = push.get_preferences("al").quiet_hours
    assert (entry["status"], entry["reason"]) == ("queued", "quiet_hours")
    assert entry["nextAttemptAt"][11:16] == quiet.end
    assert [event["what"] for event in entry["events"]][-2:] == ["retry", "deferred"]


@pytest.mark.usefixtures("same_utc_day")
def test_a_retried_push_that_waits_for_its_time_follows_new_quiet_hours(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    """An offer for later fails at once on her phone; the operator stores a provider
    and retries it, so it waits for the message's time. She then sets quiet hours
    over that time: it waits for their end, as the message's other pushes do. (It
    kept its time, and woke her.)"""
    app, client = al_with_a_phone(make_app, push_fake_fcm, PUSH_CATEGORIES=OFFERS)
    send_at = later().replace(second=0, microsecond=0)
    with app.app_context():
        id = push.send(users=["al"], title="Half price", category="offers", send_at=send_at).id
    store(client, push_fake_fcm.service_account("shop-project"))
    client.post(f"/push/messages/{id}/retry", json={}, headers=ADMIN)
    assert list(outcomes(app, id).values()) == [("queued", "operator_retry")]
    end = send_at + timedelta(hours=1)
    window = {"start": f"{send_at - timedelta(hours=1):%H:%M}", "end": f"{end:%H:%M}"}
    with app.app_context():
        push.set_preferences("al", quiet_hours={**window, "time_zone": "UTC"})
        (entry,) = push.explain(id)
    assert (entry["status"], entry["reason"]) == ("queued", "quiet_hours")
    assert entry["nextAttemptAt"] == end.isoformat().replace("+00:00", "Z")
    assert f"it is due at {outcomes_module.clock(end)}" in entry["detail"]
    with app.app_context():
        push.set_preferences("al", quiet_hours=None)  # its own time again
        (entry,) = push.explain(id)
    # still the operator's retry, as it was before the quiet hours held it
    assert (entry["status"], entry["reason"]) == ("queued", "operator_retry")
    assert entry["nextAttemptAt"] == send_at.isoformat().replace("+00:00", "Z")


def test_retrying_what_failed_keeps_a_category_the_user_turned_off_since(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    """She turned offers off on her phone after the offer failed there: a retry ends
    it suppressed (opted_out), as a send would, and nothing reaches the phone."""
    app, client = al_with_a_phone(make_app, push_fake_fcm, PUSH_CATEGORIES=OFFERS)
    with app.app_context():
        id = push.send(users=["al"], title="Half price", category="offers").id
        push.set_preferences("al", categories={"offers": {"mobile": False}})
    store(client, push_fake_fcm.service_account("shop-project"))
    answer = client.post(f"/push/messages/{id}/retry", json={}, headers=ADMIN)
    counts = answer.get_json()["counts"]
    assert (counts["queued"], counts["failed"], counts["suppressed"]) == (0, 0, 1)
    assert list(outcomes(app, id).values()) == [("suppressed", "opted_out")]
    with app.app_context():
        make_due(id)
        push.dispatch_due()
    assert push_fake_fcm.messages == []


def test_retrying_what_failed_before_it_was_pushed_keeps_the_daily_cap(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    """An offer fails at once on her phone (no provider yet), which frees its place
    under a cap of two: she got nothing. Retried once a provider is stored, it
    reaches her: it takes its place again, so two more offers make three, and the
    third is held back. (It went uncounted, and she got three offers that day.)"""
    capped = {"offers": {"label": "Offers and deals", "max_per_day": 2}}
    app, client = al_with_a_phone(make_app, push_fake_fcm, PUSH_CATEGORIES=capped)
    with app.app_context():
        missed = push.send(users=["al"], title="Deal 1", category="offers").id
    assert list(outcomes(app, missed).values()) == [("failed", "no_provider")]
    store(client, push_fake_fcm.service_account("shop-project"))
    answer = client.post(f"/push/messages/{missed}/retry", json={}, headers=ADMIN)
    assert answer.get_json()["counts"]["sent"] == 1
    with app.app_context():
        second = push.send(users=["al"], title="Deal 2", category="offers").id
        third = push.send(users=["al"], title="Deal 3", category="offers").id
    assert list(outcomes(app, second).values()) == [("sent", "accepted")]
    assert list(outcomes(app, third).values()) == [("suppressed", "frequency_cap")]
    assert len(push_fake_fcm.messages) == 2


def two_offers_today(app: Flask) -> list[str]:
    """Deals 2 and 3 to al: under a cap of two, her day is full."""
    with app.app_context():
        sent = [push.send(users=["al"], title=f"Deal {n}", category="offers") for n in (2, 3)]
        return [message.id for message in sent]


def retried_on_a_full_day(app: Flask, client: Any, id: str) -> None:
    """Retry what failed of message ``id``: it is held back (frequency_cap)."""
    answer = client.post(f"/push/messages/{id}/retry", json={}, headers=ADMIN)
    counts = answer.get_json()["counts"]
    assert (counts["queued"], counts["sent"], counts["suppressed"]) == (0, 0, 1)
    assert list(outcomes(app, id).values()) == [("suppressed", "frequency_cap")]


def test_retrying_what_failed_before_it_was_pushed_on_a_full_day_holds_it_back(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    """The offer that failed at once is retried after two others reached her: her
    day is full, so it is held back (frequency_cap), as a send would be."""
    capped = {"offers": {"label": "Offers and deals", "max_per_day": 2}}
    app, client = al_with_a_phone(make_app, push_fake_fcm, PUSH_CATEGORIES=capped)
    with app.app_context():
        missed = push.send(users=["al"], title="Deal 1", category="offers").id
    store(client, push_fake_fcm.service_account("shop-project"))
    two_offers_today(app)
    retried_on_a_full_day(app, client, missed)
    assert len(push_fake_fcm.messages) == 2


def test_retrying_an_offer_that_failed_days_ago_weighs_todays_offers(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    """An offer failed at once 30 hours ago (no provider then). Today she had two
    offers, her cap. The operator retries the old one now: it would push now, so
    today's two count, and it is held back (frequency_cap), not a third offer of
    the day because its own day, long past, was empty."""
    capped = {"offers": {"label": "Offers and deals", "max_per_day": 2}}
    app, client = al_with_a_phone(make_app, push_fake_fcm, PUSH_CATEGORIES=capped)
    with app.app_context():
        missed = push.send(users=["al"], title="Deal 1", category="offers").id
        days_ago = datetime.now(timezone.utc) - timedelta(hours=30)
        m, d = push.models.Message, push.models.Delivery
        db.session.execute(sa.update(m).where(m.id == missed).values(created_at=days_ago))
        db.session.execute(
            sa.update(d)
            .where(d.message_id == missed)
            .values(due_at=days_ago, expires_at=datetime.now(timezone.utc) + timedelta(days=1))
        )
        db.session.commit()
    store(client, push_fake_fcm.service_account("shop-project"))
    two_offers_today(app)
    retried_on_a_full_day(app, client, missed)
    assert len(push_fake_fcm.messages) == 2


@pytest.mark.parametrize("retried_first", [True, False], ids=["then-two-more", "after-two"])
def test_retrying_an_offer_pushed_days_ago_counts_today(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM, retried_first: bool
) -> None:
    """An offer reached FCM three days ago and failed (FCM refused it: a push, which
    the cap counted on its day). Retried today, it reaches her today, yet the cap
    still counted it on its own day: with a cap of two, two more offers today went
    out, three within minutes. It now counts when it pushes; and, retried after two
    offers today, it is held back (frequency_cap)."""
    capped = {"offers": {"label": "Offers and deals", "max_per_day": 2}}
    app, client = al_with_a_phone(make_app, push_fake_fcm, PUSH_CATEGORIES=capped)
    store(client, push_fake_fcm.service_account("shop-project"))
    push_fake_fcm.fail_next(400, "INVALID_ARGUMENT")  # refused: it failed, once pushed
    with app.app_context():
        old = push.send(users=["al"], title="Deal 1", category="offers").id
        assert list(outcomes(app, old).values()) == [("failed", "rejected")]
        back = timedelta(days=3)
        m, d, c = push.models.Message, push.models.Delivery, push.models.CappedSend
        message = db.session.get(m, old)
        message.created_at -= back
        for counted in db.session.scalars(sa.select(c).where(c.message_id == old)):
            counted.sent_at -= back
        for delivery in db.session.scalars(sa.select(d).where(d.message_id == old)):
            delivery.expires_at += back  # still within its time to live
        db.session.commit()
    if retried_first:
        client.post(f"/push/messages/{old}/retry", json={}, headers=ADMIN)
        assert list(outcomes(app, old).values()) == [("sent", "accepted")]
        second, third = two_offers_today(app)
        assert list(outcomes(app, second).values()) == [("sent", "accepted")]
        assert list(outcomes(app, third).values()) == [("suppressed", "frequency_cap")]
    else:
        two_offers_today(app)
        retried_on_a_full_day(app, client, old)
    assert len(push_fake_fcm.messages) == 2  # two today, her cap (the refused one is none)


def test_a_cancelled_message_is_not_sent_by_retrying_what_failed(
    make_app: Callable[..., Flask], push_fake_fcm: FakeFCM
) -> None:
    """The operator cancels a message for tomorrow; its device without a provider had
    failed as it was queued. Storing a provider and retrying what failed (the button
    and the detail both offer it) must not send what was cancelled."""
    # a SECRET_KEY, for the console
    app, client = al_with_a_phone(make_app, push_fake_fcm, SECRET_KEY="test-secret")
    with app.app_context():
        add_subscription("al")  # her browser: queued for tomorrow
        message = push.send(users=["al"], title="Tomorrow's sale", send_at=later())
    assert sorted(outcomes(app, message.id).values()) == [
        ("failed", "no_provider"),
        ("queued", None),
    ]
    cancelled = client.post(f"/push/messages/{message.id}/cancel", json={}, headers=ADMIN)
    assert cancelled.get_json()["counts"]["cancelled"] == 1
    store(client, push_fake_fcm.service_account("shop-project"))
    answer = client.post(f"/push/messages/{message.id}/retry", json={}, headers=ADMIN)
    assert answer.status_code == 409, answer.get_json()
    assert answer.get_json()["error"] == {
        "code": "message_cancelled",
        "field": "id",
        "message": outcomes_module.RETRY_CANCELLED,
    }
    counts = client.get(f"/push/messages/{message.id}", headers=ADMIN).get_json()["counts"]
    assert (counts["queued"], counts["failed"], counts["cancelled"]) == (0, 1, 1)
    console = client.get(f"/push/console/messages/{message.id}", headers=ADMIN)
    assert re.search(rb"<button [^>]*\bdisabled>Retry failed</button>", console.data)
    with app.app_context():
        make_due(message.id)
        push.dispatch_due()
    assert push_fake_fcm.messages == []
