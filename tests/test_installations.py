"""/installations: mobile devices, their tokens, and who may see them."""

from __future__ import annotations

import secrets
import threading

import pytest
import sqlalchemy as sa

from conftest import as_user, db, push

IOS_TOKEN = secrets.token_hex(32)
FCM_TOKEN = "dGhpcyBpcyBub3QgYSByZWFs:APA91bH" + "x" * 140


def ios(**extra):
    return {"appId": "shop-ios", "deviceType": "ios", "deviceToken": IOS_TOKEN, **extra}


def test_register_ios_and_android(client):
    response = client.post(
        "/push/installations",
        headers=as_user("alice"),
        json=ios(appVersion="2.1.0", badge=3, timeZone="Europe/Paris", subscriptions=["offers"]),
    )
    assert response.status_code == 201
    data = response.json
    assert data["id"].startswith("ins_")
    assert (data["userId"], data["deviceType"], data["status"]) == ("alice", "ios", "active")
    assert (data["appVersion"], data["badge"], data["timeZone"]) == ("2.1.0", 3, "Europe/Paris")
    assert data["subscriptions"] == ["offers"]
    assert data["created"] and data["modified"]
    android = client.post(
        "/push/installations",
        headers=as_user("alice"),
        json={"appId": "shop-android", "deviceType": "android", "deviceToken": FCM_TOKEN},
    )
    assert android.status_code == 201


def test_apns_tokens_are_normalized_to_lowercase(client):
    data = client.post(
        "/push/installations", headers=as_user("alice"), json=ios(deviceToken=IOS_TOKEN.upper())
    ).json
    assert data["deviceToken"] == IOS_TOKEN


def test_known_device_token_is_updated_and_rebound(app, client):
    first = client.post("/push/installations", headers=as_user("alice"), json=ios(badge=1)).json
    again = client.post("/push/installations", headers=as_user("bob"), json=ios(badge=5))
    assert again.status_code == 200
    assert again.json["id"] == first["id"]
    assert (again.json["userId"], again.json["badge"]) == ("bob", 5)
    with app.app_context():
        assert (
            db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Installation)) == 1
        )


def test_needs_a_user(client):
    response = client.post("/push/installations", json=ios())
    assert response.status_code == 401
    assert response.json["error"]["code"] == "authentication_required"


def test_only_admins_register_for_someone_else(client):
    response = client.post("/push/installations", headers=as_user("alice"), json=ios(userId="bob"))
    assert response.status_code == 403
    response = client.post(
        "/push/installations", headers=as_user("root", admin=True), json=ios(userId="bob")
    )
    assert response.status_code == 201 and response.json["userId"] == "bob"


def test_owner_and_admin_read_update_delete(client):
    inst = client.post("/push/installations", headers=as_user("alice"), json=ios()).json
    url = f"/push/installations/{inst['id']}"
    assert client.get(url, headers=as_user("alice")).json["id"] == inst["id"]
    assert client.get(url, headers=as_user("mallory")).status_code == 404
    assert client.get(url).status_code == 401
    assert client.patch(url, headers=as_user("mallory"), json={"badge": 0}).status_code == 404
    assert client.delete(url, headers=as_user("mallory")).status_code == 404

    patched = client.patch(
        url,
        headers=as_user("alice"),
        json={"badge": 0, "appVersion": "2.2", "subscriptions": ["news"]},
    )
    assert patched.status_code == 200
    assert (patched.json["badge"], patched.json["appVersion"]) == (0, "2.2")
    assert patched.json["subscriptions"] == ["news"]
    assert patched.json["modified"] >= inst["modified"]
    assert client.patch(url, headers=as_user("alice"), json={"userId": "bob"}).status_code == 403
    moved = client.patch(url, headers=as_user("root", admin=True), json={"userId": "bob"})
    assert moved.json["userId"] == "bob"
    assert client.get(url, headers=as_user("alice")).status_code == 404
    token = {"activityId": "order-42", "pushToken": "ab" * 32}
    added = client.post(f"{url}/activities", headers=as_user("bob"), json=token)
    assert added.status_code in (200, 201), added.json
    assert client.delete(url, headers=as_user("bob")).status_code == 204
    assert client.get(url, headers=as_user("bob")).status_code == 404
    with client.application.app_context():  # its Live Activity tokens went with it
        assert db.session.scalars(sa.select(push.models.ActivityToken)).all() == []


def test_an_admin_without_a_user_of_their_own(client):
    """A service account the admin_loader trusts, with no user identity, acts for
    the user it names, as an admin who is signed in does."""
    service = as_user(None, admin=True)
    assert client.post("/push/installations", headers=service, json=ios()).status_code == 401
    made = client.post("/push/installations", headers=service, json=ios(userId="bob"))
    assert made.status_code == 201 and made.json["userId"] == "bob"
    url = f"/push/installations/{made.json['id']}"
    assert client.get(url, headers=service).json["userId"] == "bob"
    moved = client.patch(url, headers=service, json={"userId": "carol"})
    assert moved.status_code == 200 and moved.json["userId"] == "carol"
    assert client.delete(url, headers=service).status_code == 204
    written = client.post(
        "/push/notifications", headers=service, json={"userId": "bob", "title": "Hi"}
    )
    assert written.status_code == 201 and written.json["userId"] == "bob"
    refused = client.post("/push/notifications", headers=service, json={"title": "Hi"})
    assert refused.status_code == 401


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        (ios(deviceToken="abc"), "deviceToken", "invalid_device_token"),
        (ios(deviceToken="zz" * 32), "deviceToken", "invalid_device_token"),
        (ios(deviceToken=None), "deviceToken", "required"),
        (
            {**ios(), "deviceType": "android", "deviceToken": "short"},
            "deviceToken",
            "invalid_device_token",
        ),
        (
            {**ios(), "deviceType": "android", "deviceToken": "has spaces " * 5},
            "deviceToken",
            "invalid_device_token",
        ),
        (ios(deviceType="windows"), "deviceType", "invalid_value"),
        (ios(appId=None), "appId", "required"),
        (ios(appId="x" * 256), "appId", "too_long"),
        (ios(badge=-1), "badge", "invalid_value"),
        (ios(badge="3"), "badge", "invalid_value"),
        (ios(timeZone="Mars/Olympus"), "timeZone", "invalid_value"),
        (ios(timeZone="../../etc/passwd"), "timeZone", "invalid_value"),
        (ios(subscriptions=["a b"]), "subscriptions", "invalid_value"),
        (ios(status="dead"), "status", "unknown_field"),
    ],
)
def test_bad_installations_are_refused(app, client, body, field, code):
    response = client.post("/push/installations", headers=as_user("alice"), json=body)
    assert response.status_code == 400, response.json
    assert (response.json["error"]["field"], response.json["error"]["code"]) == (field, code)
    with app.app_context():
        assert (
            db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Installation)) == 0
        )


def test_bad_patch_changes_nothing(client):
    inst = client.post("/push/installations", headers=as_user("alice"), json=ios(badge=2)).json
    url = f"/push/installations/{inst['id']}"
    response = client.patch(url, headers=as_user("alice"), json={"badge": 1, "timeZone": "Nowhere"})
    assert response.status_code == 400
    assert client.get(url, headers=as_user("alice")).json["badge"] == 2
    response = client.patch(url, headers=as_user("alice"), json={"deviceType": "android"})
    assert response.json["error"]["code"] == "unknown_field"


def test_moving_to_a_token_another_install_has_is_a_conflict(client):
    other = secrets.token_hex(32)
    client.post("/push/installations", headers=as_user("alice"), json=ios(deviceToken=other))
    inst = client.post("/push/installations", headers=as_user("alice"), json=ios()).json
    for token in (other, other.upper()):  # the same token, as APNs tokens compare
        response = client.patch(
            f"/push/installations/{inst['id']}",
            headers=as_user("alice"),
            json={"deviceToken": token},
        )
        assert response.status_code == 409
        error = response.json["error"]
        assert error["code"] == "conflict"
        # what is wrong and what to do, not "a concurrent change; retry" (it never passes)
        assert error["message"].startswith(
            "Another installation of appId 'shop-ios' has this device token: "
            "register it with POST /installations"
        ), error
    assert (
        client.get(f"/push/installations/{inst['id']}", headers=as_user("alice")).json[
            "deviceToken"
        ]
        == IOS_TOKEN
    )


def count_installations(app):
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Installation))


def test_an_identity_that_cannot_be_stored_is_refused_before_writing(app, client):
    """identity_loader's id becomes the owner (255 characters): 400, never a 500 halfway."""
    for user in ("u" * 256, "a\x00b"):
        response = client.post("/push/installations", headers={"X-User": user}, json=ios())
        assert response.status_code == 400, response.json
        assert response.json["error"]["field"] == "userId"
    assert count_installations(app) == 0


def test_topics_of_an_installation_are_capped(make_app):
    app = make_app(PUSH_MAX_TOPICS=3)
    client = app.test_client()
    refused = client.post(
        "/push/installations", headers=as_user("alice"), json=ios(subscriptions=list("abcd"))
    )
    assert refused.status_code == 400
    assert refused.json["error"]["field"] == "subscriptions"
    assert count_installations(app) == 0
    made = client.post(
        "/push/installations", headers=as_user("alice"), json=ios(subscriptions=list("abc"))
    ).json
    url = f"/push/installations/{made['id']}"
    patched = client.patch(url, headers=as_user("alice"), json={"subscriptions": list("wxyz")})
    assert patched.status_code == 400
    assert client.get(url, headers=as_user("alice")).json["subscriptions"] == ["a", "b", "c"]


def follows_order_42(client, installation_id):
    """alice's app registers the Live Activity token of order 42 on the installation."""
    live = client.post(
        f"/push/installations/{installation_id}/activities",
        headers=as_user("alice"),
        json={"activityId": "order-42", "pushToken": secrets.token_hex(32)},
    )
    assert live.status_code == 201


def live_activity_tokens(app, installation_id):
    with app.app_context():
        token = push.models.ActivityToken
        held = sa.select(token).where(token.installation_id == installation_id)
        return db.session.scalars(held).all()


def test_a_device_registered_by_another_user_starts_over(app, client):
    """Bob signs in on the phone Alice used: the installation is his now, without
    her topics, badge, time zone, push-to-start token or Live Activities, and the
    answer shows him none of them."""
    start = secrets.token_hex(32)
    hers = client.post(
        "/push/installations",
        headers=as_user("alice"),
        json=ios(
            appVersion="2.1.0",
            badge=3,
            timeZone="Europe/Paris",
            subscriptions=["offers"],
            pushToStartToken=start,
        ),
    ).json
    follows_order_42(client, hers["id"])
    # the same user again keeps it all
    same = client.post("/push/installations", headers=as_user("alice"), json=ios())
    assert (same.status_code, same.json["subscriptions"], same.json["badge"]) == (
        200,
        ["offers"],
        3,
    )

    answer = client.post("/push/installations", headers=as_user("bob"), json=ios(badge=1))
    assert answer.status_code == 200
    his = answer.json
    assert his["id"] == hers["id"] and his["userId"] == "bob"
    assert (his["subscriptions"], his["badge"], his["timeZone"]) == ([], 1, None)
    assert his["pushToStartToken"] is None and his["appVersion"] == "2.1.0"
    assert live_activity_tokens(app, his["id"]) == []


def test_an_installation_given_to_another_user_starts_over_too(app, client):
    """An admin's PATCH of userId moves the device as a new sign-in does: the new
    owner gets none of the last one's topics, badge, time zone or Live Activities."""
    hers = client.post(
        "/push/installations",
        headers=as_user("alice"),
        json=ios(badge=3, timeZone="Europe/Paris", subscriptions=["offers"]),
    ).json
    follows_order_42(client, hers["id"])
    # her own PATCH that names herself changes nothing of it
    same = client.patch(
        f"/push/installations/{hers['id']}", headers=as_user("alice"), json={"userId": "alice"}
    )
    assert (same.json["subscriptions"], same.json["badge"]) == (["offers"], 3)
    moved = client.patch(
        f"/push/installations/{hers['id']}",
        headers=as_user("root", admin=True),
        json={"userId": "bob", "subscriptions": ["news"]},
    )
    assert moved.status_code == 200
    his = moved.json
    assert (his["userId"], his["subscriptions"], his["badge"], his["timeZone"]) == (
        "bob",
        ["news"],
        None,
        None,
    )
    assert live_activity_tokens(app, his["id"]) == []


def test_a_token_registered_again_as_android_keeps_no_live_activity_token(app, client):
    """An app registered its token as iOS, with a push-to-start token and a Live
    Activity's, then again as Android (the same 64 hex digits fit both): the
    installation became an Android one that kept both tokens, which the API refuses
    to make any other way. Only iOS installations have them; the rest stays."""
    start = secrets.token_hex(32)
    first = client.post(
        "/push/installations",
        headers=as_user("alice"),
        json=ios(subscriptions=["offers"], pushToStartToken=start),
    ).json
    follows_order_42(client, first["id"])
    answer = client.post(
        "/push/installations",
        headers=as_user("alice"),
        json={"appId": "shop-ios", "deviceType": "android", "deviceToken": IOS_TOKEN},
    )
    assert answer.status_code == 200, answer.json
    again = answer.json
    assert (again["id"], again["deviceType"]) == (first["id"], "android")
    assert (again["pushToStartToken"], again["subscriptions"]) == (None, ["offers"])
    assert live_activity_tokens(app, again["id"]) == []


def test_a_device_registered_twice_at_once_is_one_installation(app, client):
    """The app posts its token twice at once (a launch and a token refresh): the
    second to insert finds the first's row made since it looked, and updates it
    instead of answering 409."""
    raced, started = [], []

    def other_request_first(session, flush_context, instances):
        # between this request's look for the device and its insert, the other
        # request (a thread, and so an app context and a session, of its own) makes it
        if started or not any(isinstance(row, push.models.Installation) for row in session.new):
            return
        started.append(True)
        other = threading.Thread(
            target=lambda: raced.append(
                client.post("/push/installations", headers=as_user("alice"), json=ios(badge=1))
            )
        )
        other.start()
        other.join()

    sa.event.listen(sa.orm.Session, "before_flush", other_request_first)
    try:
        response = client.post("/push/installations", headers=as_user("alice"), json=ios(badge=2))
    finally:
        sa.event.remove(sa.orm.Session, "before_flush", other_request_first)
    assert [r.status_code for r in raced] == [201]
    assert response.status_code == 200, response.json
    assert response.json["id"] == raced[0].json["id"]
    assert response.json["badge"] == 2
    assert count_installations(app) == 1


def test_a_new_token_patched_on_a_dead_installation_brings_it_back(app, client):
    """Its push service said the old token was unregistered (dead); the app gets a
    new one and PATCHes it: the installation is active again, and pushed to, as a
    POST of the new token would have it."""
    made = client.post("/push/installations", headers=as_user("alice"), json=ios()).json
    with app.app_context():
        row = db.session.get(push.models.Installation, made["id"])
        row.status, row.dead_reason = "dead", "Unregistered"
        db.session.commit()
    fresh = secrets.token_hex(32)
    patched = client.patch(
        f"/push/installations/{made['id']}", headers=as_user("alice"), json={"deviceToken": fresh}
    )
    assert patched.status_code == 200
    assert (patched.json["deviceToken"], patched.json["status"]) == (fresh, "active")
    with app.app_context():
        assert push.send(users=["alice"], title="Hi").recipient_count == 1
    # the same token again, or other fields, leave a dead one dead
    with app.app_context():
        row = db.session.get(push.models.Installation, made["id"])
        row.status = "dead"
        db.session.commit()
    again = client.patch(
        f"/push/installations/{made['id']}",
        headers=as_user("alice"),
        json={"deviceToken": fresh, "badge": 2},
    )
    assert again.json["status"] == "dead"


def test_a_late_unregistered_for_the_old_token_leaves_the_new_one_alive(sending_app, push_fake_fcm):
    """A push to token A is on its way when the app PATCHes token B; FCM then says
    A is unregistered. A is dead, not the installation, which holds B now."""
    from datetime import datetime, timedelta, timezone

    from flask_push.dispatch import Dispatcher

    from conftest import make_due, sending_held

    app = sending_app()
    client = app.test_client()
    old, new = "old:APA91bH" + "x" * 140, "new:APA91bH" + "y" * 140
    android = {"appId": "shop-android", "deviceType": "android", "deviceToken": old}
    made = client.post("/push/installations", headers=as_user("alice"), json=android).json
    push_fake_fcm.unregister(old)
    with app.app_context():
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        message_id = push.send(users=["alice"], title="Sale", send_at=later).id
        make_due(message_id)
        worker = Dispatcher(app, push.models, db.engine, push.settings)
    with sending_held(push_fake_fcm, worker, message_id):
        assert push_fake_fcm.wait_in_flight(1) == 1
        patched = client.patch(
            f"/push/installations/{made['id']}", headers=as_user("alice"), json={"deviceToken": new}
        )
        assert patched.status_code == 200
    shown = client.get(f"/push/installations/{made['id']}", headers=as_user("alice")).json
    assert (shown["deviceToken"], shown["status"]) == (new, "active")
    with app.app_context():
        [entry] = push.explain(message_id)
        assert entry["status"] == "gone"  # the push to the old token
        assert push.send(users=["alice"], title="Next sale").recipient_count == 1
