"""POST/DELETE /subscriptions: registration, re-binding, SSRF guard, key checks."""

from __future__ import annotations

import base64

import pytest
import sqlalchemy as sa

from flask_push import signals

from conftest import as_user, b64url, browser_keys, db, push


def count_subscriptions(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Subscription))


def test_subscribe_stores_the_browser_subscription(app, client, make_subscription):
    body = make_subscription(topics=["offers", "orders", "offers"], expirationTime=1893456000000)
    response = client.post(
        "/push/subscriptions", json=body, headers={**as_user("alice"), "User-Agent": "Firefox/140"}
    )
    assert response.status_code == 201
    data = response.json
    assert data["id"].startswith("sub_")
    assert data["endpoint"] == body["endpoint"]
    assert data["userId"] == "alice"
    assert data["topics"] == ["offers", "orders"]
    assert data["userAgent"] == "Firefox/140"
    assert data["expirationTime"] == 1893456000000
    assert data["status"] == "active"
    assert "keys" not in data and "auth" not in str(data)  # the secret stays on the server
    with app.app_context():
        row = db.session.get(push.models.Subscription, data["id"])
        assert (row.p256dh, row.auth) == (body["keys"]["p256dh"], body["keys"]["auth"])
        assert row.created_at.tzinfo is not None


def test_anonymous_subscription(client, make_subscription):
    response = client.post("/push/subscriptions", json=make_subscription())
    assert response.status_code == 201
    assert response.json["userId"] is None


def test_resubscribing_updates_and_rebinds_instead_of_duplicating(app, client, make_subscription):
    body = make_subscription(topics=["offers"])
    first = client.post("/push/subscriptions", json=body, headers=as_user("alice")).json
    body["keys"] = browser_keys()
    del body["topics"]
    again = client.post("/push/subscriptions", json=body, headers=as_user("alice"))
    assert again.status_code == 200
    assert again.json["id"] == first["id"]
    assert again.json["topics"] == ["offers"]  # the same owner keeps them when not sent
    assert count_subscriptions(app) == 1
    with app.app_context():
        row = db.session.get(push.models.Subscription, first["id"])
        assert row.p256dh == body["keys"]["p256dh"]


@pytest.mark.parametrize("new_owner", ["bob", None])
def test_rebinding_to_another_owner_starts_over(app, client, make_subscription, new_owner):
    """The answer (and the row) show only what the new owner sent, never the last one's."""
    body = make_subscription(topics=["orders", "offers"], expirationTime=1893456000000)
    headers = {**as_user("alice"), "User-Agent": "Firefox/140"}
    first = client.post("/push/subscriptions", json=body, headers=headers).json
    del body["topics"], body["expirationTime"]
    body["keys"] = browser_keys()
    again = client.post(
        "/push/subscriptions", json=body, headers={**as_user(new_owner), "User-Agent": "Edge/1"}
    )
    assert again.status_code == 200  # the contract's "already known, re-bound to the caller"
    shown = again.json
    assert (shown["id"], shown["userId"]) == (first["id"], new_owner)
    assert (shown["topics"], shown["userAgent"], shown["expirationTime"]) == ([], "Edge/1", None)
    assert shown["createdAt"] > first["createdAt"]  # its history starts now
    with app.app_context():
        row = db.session.get(push.models.Subscription, first["id"])
        assert (row.user_id, row.topics, row.user_agent) == (new_owner, [], "Edge/1")
    # a topic they ask for is theirs
    body["topics"] = ["news"]
    mine = client.post("/push/subscriptions", json=body, headers=as_user(new_owner))
    assert mine.json["topics"] == ["news"]


def test_a_renewed_subscription_keeps_its_topics_and_replaces_the_old(
    app, client, make_subscription
):
    """The service worker's pushsubscriptionchange posts the new subscription with
    the old endpoint: the topics carry over, and the old one, which its push service
    no longer serves, is gone. Someone else's old endpoint is left as it is."""
    old = make_subscription(topics=["offers"])
    first = client.post("/push/subscriptions", json=old, headers=as_user("alice")).json
    renewed = make_subscription(oldEndpoint=old["endpoint"])
    removed: list[str] = []

    def receive(sender, subscription):
        removed.append(subscription.id)

    with signals.subscription_removed.connected_to(receive):
        answer = client.post("/push/subscriptions", json=renewed, headers=as_user("alice"))
    assert answer.status_code == 201, answer.json
    assert removed == [first["id"]]  # said to hosts, as a DELETE says it
    assert (answer.json["topics"], answer.json["userId"]) == (["offers"], "alice")
    with app.app_context():
        assert db.session.get(push.models.Subscription, first["id"]) is None
        assert push.send(topic="offers", title="Sale").recipient_count == 1
    # topics sent with it win; and bob cannot take or remove alice's subscription
    theirs = make_subscription(topics=["news"])
    kept = client.post("/push/subscriptions", json=theirs, headers=as_user("alice")).json
    other = make_subscription(oldEndpoint=theirs["endpoint"], topics=["orders"])
    answer = client.post("/push/subscriptions", json=other, headers=as_user("bob"))
    assert answer.status_code == 201 and answer.json["topics"] == ["orders"]
    with app.app_context():
        assert db.session.get(push.models.Subscription, kept["id"]).topics == ["news"]
    bad = make_subscription(oldEndpoint="x" * 5000)
    refused = client.post("/push/subscriptions", json=bad, headers=as_user("alice"))
    assert refused.status_code == 400 and refused.json["error"]["field"] == "oldEndpoint"


def test_a_dead_endpoint_is_refused_not_revived(app, client, make_subscription):
    """Its push service said 404/410: that endpoint can never receive a push again."""
    body = make_subscription(topics=["offers"])
    first = client.post("/push/subscriptions", json=body, headers=as_user("alice")).json
    with app.app_context():
        row = db.session.get(push.models.Subscription, first["id"])
        row.status, row.dead_reason = "dead", "410 Gone"
        db.session.commit()
    for who in ("alice", "bob", None):
        again = client.post(
            "/push/subscriptions", json={**body, "keys": browser_keys()}, headers=as_user(who)
        )
        assert again.status_code == 410
        error = again.json["error"]
        assert (error["code"], error["field"]) == ("subscription_gone", "endpoint")
        assert "subscribe again" in error["message"]
    with app.app_context():
        row = db.session.get(push.models.Subscription, first["id"])
        assert (row.status, row.user_id, row.p256dh) == ("dead", "alice", body["keys"]["p256dh"])
    assert count_subscriptions(app) == 1


def test_signals_on_subscribe_and_unsubscribe(app, client, make_subscription):
    seen = []
    with (
        signals.subscription_added.connected_to(
            lambda s, **kw: seen.append(("added", kw["created"]))
        ),
        signals.subscription_removed.connected_to(lambda s, **kw: seen.append(("removed", None))),
    ):
        body = make_subscription()
        sub = client.post("/push/subscriptions", json=body, headers=as_user("alice")).json
        client.post("/push/subscriptions", json=body, headers=as_user("alice"))
        client.delete(f"/push/subscriptions/{sub['id']}", headers=as_user("alice"))
    assert seen == [("added", True), ("added", False), ("removed", None)]


def test_delete_by_owner_admin_or_anonymous_holder(app, client, make_subscription):
    sub = client.post(
        "/push/subscriptions", json=make_subscription(), headers=as_user("alice")
    ).json
    url = f"/push/subscriptions/{sub['id']}"
    for who in (None, "mallory"):
        response = client.delete(url, headers=as_user(who))
        assert response.status_code == 404  # not "forbidden": never confirm someone else's id
        assert response.json["error"]["code"] == "not_found"
    assert client.delete(url, headers=as_user("alice")).status_code == 204
    assert client.delete(url, headers=as_user("alice")).status_code == 404

    sub = client.post("/push/subscriptions", json=make_subscription(), headers=as_user("bob")).json
    assert (
        client.delete(
            f"/push/subscriptions/{sub['id']}", headers=as_user("root", admin=True)
        ).status_code
        == 204
    )
    anonymous = client.post("/push/subscriptions", json=make_subscription()).json
    assert client.delete(f"/push/subscriptions/{anonymous['id']}").status_code == 204
    assert count_subscriptions(app) == 0


@pytest.mark.parametrize(
    ("endpoint", "code"),
    [
        ("http://fcm.googleapis.com/fcm/send/x", "invalid_endpoint"),
        ("ftp://fcm.googleapis.com/x", "invalid_endpoint"),
        ("https://user:pw@fcm.googleapis.com/x", "invalid_endpoint"),
        ("https:///no-host", "invalid_endpoint"),
        ("https://fcm.googleapis.com:99999/x", "invalid_endpoint"),
        ("https://fcm.googleapis.com:0/x", "invalid_endpoint"),
        ("https://evil.example/x", "endpoint_not_allowed"),
        ("https://fcm.googleapis.com.evil.example/x", "endpoint_not_allowed"),
        ("https://127.0.0.1/x", "endpoint_not_allowed"),
        ("https://127.1/x", "endpoint_not_allowed"),
        ("https://2130706433/x", "endpoint_not_allowed"),
        ("https://0x7f.0.0.1/x", "endpoint_not_allowed"),
        ("https://10.0.0.8/x", "endpoint_not_allowed"),
        ("https://192.168.1.1/x", "endpoint_not_allowed"),
        ("https://169.254.169.254/latest/meta-data", "endpoint_not_allowed"),
        ("https://[::1]/x", "endpoint_not_allowed"),
        ("https://[fe80::1]/x", "endpoint_not_allowed"),
        ("https://localhost/x", "endpoint_not_allowed"),
        ("https://push.localhost/x", "endpoint_not_allowed"),
        ("https://fcm.googleapis.com/" + "x" * 2100, "too_long"),
        (42, "invalid_type"),
        (None, "required"),
    ],
)
def test_untrusted_endpoints_are_refused(client, make_subscription, endpoint, code):
    response = client.post("/push/subscriptions", json=make_subscription(endpoint=endpoint))
    assert response.status_code == 400
    assert response.json["error"]["code"] == code
    assert response.json["error"]["field"] == "endpoint"


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://fcm.googleapis.com/fcm/send/abc:def",
        "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
        "https://wns2-par02p.notify.windows.com/w/?token=BQYAAA",
        "https://web.push.apple.com/QGuQyavXutnMH",
        "https://FCM.googleapis.com./fcm/send/x",
    ],
)
def test_public_push_services_are_accepted(client, make_subscription, endpoint):
    response = client.post("/push/subscriptions", json=make_subscription(endpoint=endpoint))
    assert response.status_code == 201, response.json


def test_wildcards_never_open_ip_literals_or_loopback(make_app, make_subscription):
    app = make_app(PUSH_ENDPOINT_HOSTS=["*", "127.0.0.*"], PUSH_ALLOW_HTTP_ENDPOINTS=True)
    client = app.test_client()
    ok = client.post(
        "/push/subscriptions", json=make_subscription(endpoint="https://any.example/x")
    )
    assert ok.status_code == 201
    for endpoint in ("http://127.0.0.1:8080/push/1", "https://localhost/x", "https://10.1.2.3/x"):
        response = client.post("/push/subscriptions", json=make_subscription(endpoint=endpoint))
        assert response.json["error"]["code"] == "endpoint_not_allowed", endpoint


def test_local_test_service_named_exactly_with_http_allowed(make_app, make_subscription):
    app = make_app(PUSH_ENDPOINT_HOSTS=["127.0.0.1", "localhost"], PUSH_ALLOW_HTTP_ENDPOINTS=True)
    client = app.test_client()
    for endpoint in ("http://127.0.0.1:8765/push/1", "http://localhost:9000/notify/abc"):
        response = client.post("/push/subscriptions", json=make_subscription(endpoint=endpoint))
        assert response.status_code == 201, response.json


def test_http_needs_the_setting(make_app, make_subscription):
    app = make_app(PUSH_ENDPOINT_HOSTS=["127.0.0.1"])
    response = app.test_client().post(
        "/push/subscriptions", json=make_subscription(endpoint="http://127.0.0.1:8765/push/1")
    )
    assert response.json["error"]["code"] == "invalid_endpoint"
    assert "PUSH_ALLOW_HTTP_ENDPOINTS" in response.json["error"]["message"]


def _not_on_curve() -> str:
    raw = bytearray(base64.urlsafe_b64decode(browser_keys()["p256dh"] + "=="))
    raw[-1] ^= 1  # moves the point off the curve
    return b64url(bytes(raw))


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        ({"p256dh": _not_on_curve()}, "keys.p256dh"),
        ({"p256dh": b64url(b"\x04" + b"\x01" * 64)}, "keys.p256dh"),
        ({"p256dh": b64url(b"\x02" + b"\x01" * 32)}, "keys.p256dh"),  # compressed form
        ({"p256dh": "!!!not base64!!!"}, "keys.p256dh"),
        ({"p256dh": None}, "keys.p256dh"),
        ({"auth": b64url(b"x" * 15)}, "keys.auth"),
        ({"auth": b64url(b"x" * 17)}, "keys.auth"),
        ({"auth": 16}, "keys.auth"),
    ],
)
def test_bad_keys_are_refused(app, client, make_subscription, keys, field):
    body = make_subscription()
    body["keys"].update(keys)
    response = client.post("/push/subscriptions", json=body)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field
    assert count_subscriptions(app) == 0


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"keys": None}, "keys", "required"),
        ({"keys": "x"}, "keys", "required"),
        ({"topics": "offers"}, "topics", "invalid_value"),
        ({"topics": ["no spaces"]}, "topics", "invalid_value"),
        ({"topics": [f"t{i}" for i in range(51)]}, "topics", "invalid_value"),
        ({"expirationTime": "tomorrow"}, "expirationTime", "invalid_value"),
        ({"expirationTime": -1}, "expirationTime", "invalid_value"),
        ({"extra": 1}, "extra", "unknown_field"),
    ],
)
def test_bad_fields_are_refused(app, client, make_subscription, change, field, code):
    body = make_subscription()
    body.update(change)
    response = client.post("/push/subscriptions", json=body)
    assert response.status_code == 400
    assert (response.json["error"]["field"], response.json["error"]["code"]) == (field, code)
    assert count_subscriptions(app) == 0


def test_rejected_update_leaves_the_stored_subscription_untouched(app, client, make_subscription):
    body = make_subscription(topics=["offers"])
    client.post("/push/subscriptions", json=body, headers=as_user("alice"))
    bad = {**body, "topics": ["not valid!"]}
    assert client.post("/push/subscriptions", json=bad, headers=as_user("bob")).status_code == 400
    with app.app_context():
        row = db.session.scalar(sa.select(push.models.Subscription))
        assert (row.user_id, row.topics) == ("alice", ["offers"])


def test_subscribing_needs_web_push_configured(make_app, make_subscription):
    app = make_app(PUSH_VAPID_PRIVATE_KEY=None, PUSH_VAPID_SUBJECT=None)
    response = app.test_client().post("/push/subscriptions", json=make_subscription())
    assert response.status_code == 503
    assert response.json["error"]["code"] == "webpush_not_configured"


# -- abuse: rate limit, topics, identities ---------------------------------------------


def post_from(client, address, body, **headers):
    return client.post(
        "/push/subscriptions", json=body, headers=headers, environ_base={"REMOTE_ADDR": address}
    )


def assert_rate_limited(response, window_seconds):
    assert response.status_code == 429
    assert response.json["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= window_seconds


def test_default_limit_per_client_address(app, client, make_subscription):
    """30 a minute: a browser subscribes once, a page reload re-posts; a script is stopped."""
    for _ in range(30):
        assert post_from(client, "203.0.113.9", make_subscription()).status_code == 201
    assert_rate_limited(post_from(client, "203.0.113.9", make_subscription()), 60)
    assert count_subscriptions(app) == 30  # the refused one wrote nothing
    # another client is not held back by it
    assert post_from(client, "198.51.100.7", make_subscription()).status_code == 201


def test_limit_is_configurable_and_counts_an_ipv6_client_by_its_64(make_app, make_subscription):
    app = make_app(PUSH_SUBSCRIBE_RATE_LIMIT="2/hour")
    client = app.test_client()
    assert post_from(client, "2001:db8:1:2::1", make_subscription()).status_code == 201
    assert post_from(client, "2001:db8:1:2::ffff", make_subscription()).status_code == 201
    assert_rate_limited(post_from(client, "2001:db8:1:2:3::4", make_subscription()), 3600)
    assert post_from(client, "2001:db8:1:3::1", make_subscription()).status_code == 201
    assert count_subscriptions(app) == 3


def test_no_limit_when_turned_off(make_app, make_subscription):
    app = make_app(PUSH_SUBSCRIBE_RATE_LIMIT=None)
    client = app.test_client()
    for _ in range(40):
        assert post_from(client, "203.0.113.9", make_subscription()).status_code == 201


def test_limit_goes_through_the_hosts_flask_limiter(make_app, make_subscription):
    """The host's limiter: its storage, and its key function (which knows its proxies)."""
    flask_limiter = pytest.importorskip("flask_limiter")
    from flask import request

    app = make_app(PUSH_SUBSCRIBE_RATE_LIMIT="2/minute")
    limiter = flask_limiter.Limiter(
        lambda: request.headers.get("X-Client", "?"), app=app, storage_uri="memory://"
    )
    client = app.test_client()
    for _ in range(2):
        response = client.post(
            "/push/subscriptions", json=make_subscription(), headers={"X-Client": "a"}
        )
        assert response.status_code == 201
    refused = client.post(
        "/push/subscriptions", json=make_subscription(), headers={"X-Client": "a"}
    )
    assert_rate_limited(refused, 60)
    assert "2/minute" in refused.json["error"]["message"]
    # the host's key, not the address: "b" comes from the same address
    ok = client.post("/push/subscriptions", json=make_subscription(), headers={"X-Client": "b"})
    assert ok.status_code == 201
    assert count_subscriptions(app) == 3
    assert app.extensions["push"].subscribe_limiter is None  # our own counter never ran
    limiter.reset()


@pytest.mark.parametrize("max_topics", [None, 30])
def test_topics_per_subscription_are_capped(make_app, make_subscription, max_topics):
    config = {} if max_topics is None else {"PUSH_MAX_TOPICS": max_topics}
    app = make_app(**config)
    client = app.test_client()
    cap = max_topics or 20  # the default
    many = [f"t{i}" for i in range(cap + 1)]
    refused = client.post("/push/subscriptions", json=make_subscription(topics=many))
    assert refused.status_code == 400
    assert refused.json["error"]["field"] == "topics"
    assert f"at most {cap}" in refused.json["error"]["message"]
    assert count_subscriptions(app) == 0
    # re-subscribing replaces the topics: the cap holds for the subscription, not per request
    body = make_subscription(topics=many[:cap])
    headers = as_user("alice")
    assert client.post("/push/subscriptions", json=body, headers=headers).status_code == 201
    body["topics"] = [f"u{i}" for i in range(cap)]
    again = client.post("/push/subscriptions", json=body, headers=headers).json
    assert again["topics"] == sorted(body["topics"])
    served = client.get("/push/openapi.json").json["components"]["schemas"]
    assert served["SubscriptionCreate"]["properties"]["topics"]["maxItems"] == cap


def test_an_identity_that_cannot_be_stored_is_refused_before_writing(
    app, client, make_subscription, caplog
):
    """identity_loader's id is the owner column (255 characters): 400, not a 500 halfway."""
    for user in ("u" * 256, "a\x00b"):
        response = client.post(
            "/push/subscriptions", json=make_subscription(), headers={"X-User": user}
        )
        assert response.status_code == 400
        assert response.json["error"]["field"] == "userId"
    assert count_subscriptions(app) == 0
    assert "identity_loader returned a user id that cannot be stored" in caplog.text
    # the path is the caller's: written out in the log line, it cannot forge one
    response = client.delete(
        "/push/installations/ins_x%0A2026-12-05 INFO admin logged in%1b[8m",
        headers={"X-User": "u" * 256},
    )
    assert response.status_code == 400
    assert "ins_x\\n2026-12-05 INFO admin logged in\\x1b[8m" in caplog.text
    assert "\n2026" not in caplog.text and "\x1b" not in caplog.text


def test_a_user_agent_with_nul_is_stored_without_it(app, client, make_subscription):
    """PostgreSQL refuses NUL in text: the header must not turn the subscribe into a 500."""
    response = client.post(
        "/push/subscriptions", json=make_subscription(), headers={"User-Agent": "Bot\x00/1"}
    )
    assert response.status_code == 201
    assert response.json["userAgent"] == "Bot/1"
