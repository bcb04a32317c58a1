"""Every answer under the prefix is JSON in the contract's error shape."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from flask_push import signals
from flask_push.models import utcnow

from conftest import REDIS_URL, add_subscription, as_user, db, push


def assert_error(response, status, code):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert error["code"] == code and error["message"]
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", None],
)
def test_cross_site_form_posts_are_refused(app, client, content_type):
    headers = {**as_user("alice"), **({"Content-Type": content_type} if content_type else {})}
    for url in ("/push/notifications", "/push/notifications/mark-all-read", "/push/subscriptions"):
        assert_error(
            client.post(url, data="title=x", headers=headers), 415, "unsupported_media_type"
        )


def test_writes_without_a_body_need_no_content_type_unless_from_another_site(app, client):
    """``POST /notifications/mark-all-read`` as the contract shows it (no body) works;
    the same from another site's page (a form with nothing in it) is refused."""
    user = as_user("alice")
    client.post("/push/notifications", json={"id": "n1", "title": "Hi"}, headers=user)
    assert client.post("/push/notifications/n1/read", headers=user).status_code == 200
    assert client.post("/push/notifications/mark-all-read", headers=user).status_code == 200
    own = [{"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://localhost"}]
    for headers in own:
        answer = client.post("/push/notifications/mark-all-read", headers={**user, **headers})
        assert answer.status_code == 200, headers
    others = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"},
    ]
    for headers in others:
        answer = client.post(
            "/push/notifications/mark-all-read",
            headers={**user, **headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert_error(answer, 415, "unsupported_media_type")
        answer = client.post("/push/notifications/mark-all-read", headers={**user, **headers})
        assert_error(answer, 415, "unsupported_media_type")
    # a PATCH is its body, so it has a type
    answer = client.patch("/push/preferences", headers=user)
    assert_error(answer, 415, "unsupported_media_type")
    # a body still needs its type, and a write that needs a body says what is missing
    assert_error(
        client.post("/push/notifications", data="{}", headers=user), 415, "unsupported_media_type"
    )
    answer = client.post("/push/notifications", headers=user)
    assert answer.status_code == 400 and answer.json["error"]["field"] == "title"


def test_malformed_json(client):
    for data, said in (
        ("{not json", "The request body is not valid JSON."),
        ("[1, 2]", "The request body must be a JSON object."),
        ('"text"', "The request body must be a JSON object."),
        ("null", "The request body must be a JSON object."),  # parsed, as None
        ("[" * 5_000, "The request body is not valid JSON."),  # too deep to parse
    ):
        response = client.post(
            "/push/notifications",
            data=data,
            headers={**as_user("alice"), "Content-Type": "application/json"},
        )
        assert_error(response, 400, "invalid_json")
        assert response.json["error"]["message"] == said, data


def test_a_compressed_or_latin_1_body_is_told_what_is_wrong_with_it(client):
    """A gzipped body, or one in Latin-1, was answered "not valid JSON": true of the
    bytes, but no help to the client that sent valid JSON in them."""
    headers = {**as_user("alice"), "Content-Type": "application/json"}
    body = json.dumps({"title": "Café"}, ensure_ascii=False)
    answer = client.post(
        "/push/notifications",
        data=gzip.compress(body.encode()),
        headers={**headers, "Content-Encoding": "gzip"},
    )
    assert_error(answer, 415, "unsupported_media_type")
    assert answer.json["error"]["message"] == (
        "Send the request body uncompressed, without a Content-Encoding."
    )
    answer = client.post("/push/notifications", data=body.encode("latin-1"), headers=headers)
    assert_error(answer, 400, "invalid_json")
    assert answer.json["error"]["message"] == (
        "The request body is not valid JSON: send it as UTF-8."
    )
    plain = {**headers, "Content-Encoding": "identity"}
    assert client.post("/push/notifications", data=body, headers=plain).status_code == 201


def test_body_size_limit(make_app):
    app = make_app(PUSH_MAX_REQUEST_BYTES=2048)
    client = app.test_client()
    body = '{"title": "' + "x" * 3000 + '"}'
    response = client.post(
        "/push/notifications",
        data=body,
        headers={**as_user("alice"), "Content-Type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large")


def test_body_size_limit_without_content_length(make_app):
    """A chunked body has no Content-Length; the limit still holds, over a real socket."""
    app = make_app(PUSH_MAX_REQUEST_BYTES=2048)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        chunks = [b'{"title": "', b"x" * 4096, b'"}']
        conn.request(
            "POST",
            "/push/notifications",
            body=iter(chunks),
            encode_chunked=True,
            headers={
                **as_user("alice"),
                "Content-Type": "application/json",
                "Transfer-Encoding": "chunked",
            },
        )
        response = conn.getresponse()
        body = response.read()
        assert response.status == 413, body
        assert json.loads(body)["error"]["code"] == "payload_too_large"
        conn.close()
    finally:
        server.shutdown()
        thread.join()


def test_unknown_paths_and_methods_under_the_prefix(client):
    assert_error(client.get("/push/nope"), 404, "not_found")
    assert_error(client.get("/push"), 404, "not_found")
    response = client.put("/push/notifications", json={})
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"] and "POST" in response.headers["Allow"]
    assert_error(client.delete("/push/vapid-public-key"), 405, "method_not_allowed")


def test_an_empty_id_is_no_redirect_to_another_operation(client):
    """``/messages//deliveries`` (an id that came out empty) was redirected, with an
    HTML page, to ``/messages/deliveries``: the message whose id is "deliveries"."""
    admin = as_user("root", admin=True)
    for path in ("/push/messages//deliveries", "/push/messages/%2F/deliveries", "/push//health"):
        assert_error(client.get(path, headers=admin), 404, "not_found")


def test_the_hosts_own_routes_keep_their_errors(app, client):
    response = client.get("/not-ours")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert client.get("/pushy").mimetype == "text/html"


def test_unexpected_failure_is_a_json_500_and_rolls_back(app, client, caplog):
    from flask_push import inbox

    def broken(*args, **kwargs):
        raise RuntimeError("database on fire")

    original = inbox.search
    inbox.search = broken
    try:
        response = client.get("/push/notifications", headers=as_user("alice"))
    finally:
        inbox.search = original
    assert_error(response, 500, "internal_error")
    assert "database on fire" not in response.get_data(as_text=True)
    assert "database on fire" in caplog.text  # logged for the operator, not shown to the client


def test_vapid_public_key(app, client):
    key = client.get("/push/vapid-public-key").json["publicKey"]
    assert key == app.extensions["push"].settings.vapid_public_key
    assert len(key) == 87 and "=" not in key  # 65 bytes, base64url without padding


# -- after the commit: nothing may turn a done change into an error -------------------


def count(app, model):
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_a_failing_signal_receiver_after_the_commit_is_logged_not_a_500(
    app, client, make_subscription, caplog
):
    """A client that got a 500 for a change that was made would retry it, and make it twice."""

    def broken(sender, **kwargs):
        raise RuntimeError("a host receiver is broken")

    alice = as_user("alice")
    with (
        signals.subscription_added.connected_to(broken),
        signals.subscription_removed.connected_to(broken),
        signals.inbox_item_saved.connected_to(broken),
        signals.inbox_read.connected_to(broken),
    ):
        sub = client.post("/push/subscriptions", json=make_subscription(), headers=alice)
        item = client.post("/push/notifications", json={"title": "Hi"}, headers=alice)
        read = client.post("/push/notifications/mark-all-read", json={}, headers=alice)
        gone = client.delete(f"/push/subscriptions/{sub.json['id']}", headers=alice)
    assert (sub.status_code, item.status_code, read.status_code, gone.status_code) == (
        201,
        201,
        200,
        204,
    )
    assert read.json == {"updated": 1}
    assert count(app, push.models.InboxItem) == 1
    assert count(app, push.models.Subscription) == 0
    for name in ("subscription-added", "inbox-item-saved", "inbox-read", "subscription-removed"):
        assert f"receiver of the {name!r} signal" in caplog.text
    assert "a host receiver is broken" in caplog.text


def test_a_live_event_that_cannot_be_published_is_logged_not_a_500(make_app, caplog, redis_prefix):
    """An item stored before its data was checked (a lone surrogate in it) cannot be
    encoded for Redis; updating it still succeeds, and the lost event is logged."""
    app = make_app(PUSH_BACKPLANE_URL=REDIS_URL, PUSH_BACKPLANE_PREFIX=redis_prefix)
    with app.app_context():
        now = utcnow()
        db.session.execute(
            sa.insert(push.models.InboxItem).values(
                user_id="alice", id="legacy", type="info", title="Old", is_new=True,
                data={"note": "\ud800"}, created_at=now, updated_at=now,
            )
        )  # fmt: skip
        db.session.commit()
    response = app.test_client().post(
        "/push/notifications",
        json={"id": "legacy", "body": "updated"},
        headers=as_user("alice"),
    )
    assert response.status_code == 200, response.json
    assert response.json["body"] == "updated"
    assert "event on 'user:alice' was not published live" in caplog.text


def test_an_unknown_query_parameter_is_refused_as_an_unknown_field_is(client):
    """`?status=queued` is no filter of GET /messages: answering every message as if
    it were would mislead; a repeated parameter has a limit too."""
    answer = client.get("/push/messages?status=queued", headers=as_user("root", admin=True))
    assert answer.status_code == 400
    assert answer.json["error"] == {
        "code": "unknown_field",
        "field": "status",
        "message": "Unknown query parameter 'status'; expected one of ['skip', 'take'].",
    }
    mine = as_user("alice")
    assert client.get("/push/notifications?take=5&onlyNew=1", headers=mine).status_code == 200
    # no one's filter: a cache buster, and a bearer token for the host's identity loader
    passing = "/push/notifications?_=1733390000000&access_token=abc"
    assert client.get(passing, headers=mine).status_code == 200
    many = "&".join(f"type=t{n}" for n in range(21))
    refused = client.get(f"/push/notifications?{many}", headers=mine)
    assert (refused.status_code, refused.json["error"]["field"]) == (400, "type")
    packed = ",".join(f"t{n}" for n in range(21))
    refused = client.get(f"/push/notifications?type={packed}", headers=mine)
    assert refused.status_code == 400
    assert "at most 20 types" in refused.json["error"]["message"]
    twenty = ",".join(f"t{n}" for n in range(20))
    assert client.get(f"/push/notifications?type={twenty}", headers=mine).status_code == 200


def test_an_operation_on_everything_refuses_a_field_that_would_narrow_it(app, client):
    """`POST /messages/<id>/cancel` with `{"userId": "bob"}` cancelled every user's
    deliveries, and mark-all-read with `{"type": "order"}` marked every item read:
    the fields were ignored. These operations take no field, so one is refused, and
    nothing is changed."""
    admin = as_user("root", admin=True)
    with app.app_context():
        for user in ("alice", "bob"):
            add_subscription(user)
        later = utcnow() + timedelta(hours=1)
        message_id = push.send(users=["alice", "bob"], title="x", send_at=later, inbox=False).id
    alice = as_user("alice")
    client.post("/push/notifications", json={"id": "n1", "title": "Hi"}, headers=alice)
    narrowed = [
        (f"/push/messages/{message_id}/cancel", {"userId": "bob"}, admin),
        (f"/push/messages/{message_id}/retry", {"targetIds": [1]}, admin),
        ("/push/notifications/mark-all-read", {"type": "order"}, alice),
        ("/push/notifications/n1/read", {"read": False}, alice),
    ]
    for url, body, who in narrowed:
        answer = client.post(url, json=body, headers=who)
        assert answer.status_code == 400, url
        (field,) = body
        assert answer.json["error"] == {
            "code": "unknown_field",
            "field": field,
            "message": f"Unknown field {field!r}; this operation takes none.",
        }, url
    assert client.get(f"/push/messages/{message_id}", headers=admin).json["status"] != "cancelled"
    assert client.get("/push/notifications", headers=alice).json["newCount"] == 1
    # an empty object, or no body, is what they take
    for url, _, who in narrowed[2:]:
        assert client.post(url, json={}, headers=who).status_code == 200, url
    cancelled = client.post(f"/push/messages/{message_id}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json["counts"]["cancelled"] == 2


def test_an_operation_that_reads_no_query_refuses_one(client):
    """`PATCH /preferences?userId=bob` changed the caller's own choices and answered
    200, as though bob's had changed: an operation without a query refuses any."""
    mine = as_user("alice")
    answer = client.patch("/push/preferences?userId=bob", json={}, headers=mine)
    assert answer.status_code == 400
    assert answer.json["error"] == {
        "code": "unknown_field",
        "field": "userId",
        "message": "Unknown query parameter 'userId'; this operation takes none.",
    }
    assert client.get("/push/preferences?_=1733390000000", headers=mine).status_code == 200
    admin = as_user("root", admin=True)
    assert client.get("/push/providers?kind=apns", headers=admin).status_code == 400
    # what anyone reads, probes and scrapers among them, ignores theirs
    for path in ("/health?probe=lb", "/metrics?name[]=x", "/openapi.json?v=2"):
        assert client.get(f"/push{path}").status_code in (200, 404), path  # 404: metrics off
    assert client.get("/push/vapid-public-key?t=1").status_code == 200


def test_an_error_quotes_a_name_of_the_clients_at_most_100_characters(client):
    """A key of 60,000 characters is not answered back whole."""
    long, shown = "a" * 60_000, "a" * 99 + "…"
    mine = as_user("alice")
    for answer, field in (
        (
            client.patch("/push/preferences", json={"categories": {long: {}}}, headers=mine),
            f"categories.{shown}",
        ),
        (client.post("/push/subscriptions", json={long: 1}, headers=mine), shown),
        (client.get(f"/push/notifications?{long}=1", headers=mine), shown),
    ):
        assert answer.status_code == 400, answer.json
        error = answer.json["error"]
        assert error["field"] == field
        assert len(error["message"]) < 400


def test_a_401_for_want_of_an_identity_loader_is_said_in_the_log_once(
    make_app, caplog, monkeypatch
):
    """A host that forgot @push.identity_loader sees every user endpoint answer 401
    "Sign in first" with a signed-in session: the log says why, once."""
    from flask_push import extension

    monkeypatch.setattr(push, "_identity_loader", extension._no_identity_loader)
    app = make_app()
    client = app.test_client()
    for _ in range(3):
        assert client.get("/push/notifications").status_code == 401
    said = [r.getMessage() for r in caplog.records if "identity_loader" in r.getMessage()]
    assert said == [
        "flask-push: GET /push/notifications answered 401 because no @push.identity_loader "
        "is registered, so every request is anonymous; register one that returns the "
        "signed-in user's id (this is said once)"
    ]
    monkeypatch.undo()  # the tests' loader, as registered
    caplog.clear()
    other = make_app().test_client()  # not told yet
    assert other.get("/push/notifications").status_code == 401  # anonymous: not said
    assert "identity_loader" not in caplog.text
