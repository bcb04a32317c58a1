"""flask-push inside a host app with extensions and handlers of its own: CSRF
protection, error pages by status, a JSON provider of its own."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from flask_wtf.csrf import CSRFProtect

from conftest import as_user, push


@pytest.fixture
def host_app(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """A host app with a form of its own at /checkout; ``before`` and ``after`` set
    up its own extensions before or after flask-push's ``init_app``."""

    def factory(
        before: Callable[[Flask], Any] = lambda app: None,
        after: Callable[[Flask], Any] = lambda app: None,
    ) -> Flask:
        def host(app: Flask) -> None:
            after(app)

            @app.post("/checkout")
            def checkout() -> str:
                return "paid"

        return make_app(
            before=before, after=host, SECRET_KEY="host-secret", PUSH_MAX_REQUEST_BYTES=1024
        )

    return factory


def csrf_protect(app: Flask) -> None:
    app.config["WTF_CSRF_ENABLED"] = True  # Flask-WTF turns it off when testing
    CSRFProtect(app)


@pytest.mark.parametrize("order", ["before", "after"])
def test_a_hosts_csrf_protection_leaves_flask_pushs_api_alone(
    host_app: Callable[..., Flask], make_subscription: Callable[..., Any], order: str
) -> None:
    """Flask-WTF's CSRFProtect refused every write of the API (the browser client
    cannot send its token), set up before flask-push or after it. The API takes
    only JSON, which a cross-site form cannot send; the host's own forms still
    need their token."""
    app = host_app(**{order: csrf_protect})
    client = app.test_client()
    answer = client.post("/push/subscriptions", json=make_subscription(), headers=as_user("al"))
    assert answer.status_code == 201, answer.get_json()
    assert client.post("/checkout", data={"card": "4242"}).status_code == 400
    # a cross-site form is still refused by flask-push itself
    form = client.post("/push/subscriptions", data={"endpoint": "x"}, headers=as_user("al"))
    assert form.status_code == 415


def test_one_csrf_protect_of_an_app_factory_leaves_each_apps_api_alone(
    host_app: Callable[..., Flask], make_subscription: Callable[..., Any]
) -> None:
    """An app factory's module-level CSRFProtect, set up on each app it makes: the
    second app's API was refused ("The CSRF token is missing.")."""
    shared = CSRFProtect()

    def protect(app: Flask) -> None:
        app.config["WTF_CSRF_ENABLED"] = True
        shared.init_app(app)

    for _ in range(2):
        client = host_app(after=protect).test_client()
        body = make_subscription()
        answer = client.post("/push/subscriptions", json=body, headers=as_user("al"))
        assert answer.status_code == 201, answer.get_json()


def test_a_hosts_error_page_for_a_status_does_not_replace_the_apis_json(
    host_app: Callable[..., Flask],
) -> None:
    """Flask looks for a handler of the status before one of its class: a host's
    HTML page for 413 answered the API's too-large bodies."""

    def pages(app: Flask) -> None:
        for status in (400, 404, 405, 413):
            app.register_error_handler(status, lambda err: ("<h1>Oops</h1>", err.code))

    client = host_app(after=pages).test_client()
    answer = client.post("/push/subscriptions", json={"endpoint": "x" * 2000})
    assert answer.status_code == 413
    assert answer.get_json()["error"]["code"] == "payload_too_large"
    assert client.get("/checkout").data == b"<h1>Oops</h1>"  # the host's, for its own


def test_a_reason_of_the_hosts_own_is_kept(host_app: Callable[..., Flask]) -> None:
    """A host's check that refuses an API request with a reason of its own (as
    Flask-WTF's "The CSRF token is missing."): the JSON answer says it."""
    from werkzeug.exceptions import BadRequest

    def refuse(app: Flask) -> None:
        @app.before_request
        def maintenance() -> None:
            raise BadRequest("The shop is in maintenance until 14:00.")

    answer = host_app(after=refuse).test_client().get("/push/notifications", headers=as_user("al"))
    assert answer.status_code == 400
    assert answer.get_json()["error"] == {
        "code": "bad_request",
        "message": "The shop is in maintenance until 14:00.",
    }


class DecimalJSON(DefaultJSONProvider):
    """A money app's JSON: floats are read as Decimal."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return super().loads(s, parse_float=Decimal, **kwargs)


def test_a_hosts_json_provider_does_not_read_the_apis_bodies(
    host_app: Callable[..., Flask],
) -> None:
    """A float in a body came to the checks as a Decimal, which no JSON holds, and
    the client was told its valid JSON was not."""

    def decimals(app: Flask) -> None:
        app.json = DecimalJSON(app)

    client = host_app(after=decimals).test_client()
    body = {"title": "Deal", "data": {"price": 9.99}}
    answer = client.post("/push/notifications", json=body, headers=as_user("al"))
    assert answer.status_code == 201, answer.get_json()
    assert json.loads(answer.data)["data"] == {"price": 9.99}


def test_testing_set_after_the_factory_records_instead_of_sending(
    make_app: Callable[..., Flask], push_fake_webpush: Any
) -> None:
    """Flask's testing docs set ``TESTING`` on the app the factory returned, after
    ``init_app``: sends went out for real, by a worker thread, and ``push.record()``
    saw nothing. Unset, ``PUSH_SUPPRESS_SEND`` follows ``app.testing`` as it is."""
    app = make_app(
        TESTING=False,
        PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )
    app.config.update({"TESTING": True})  # the docs' fixture
    browser = push_fake_webpush.subscribe()
    answer = app.test_client().post(
        "/push/subscriptions", json=browser.info, headers=as_user("alice")
    )
    assert answer.status_code == 201, answer.get_json()

    with app.app_context(), push.record() as outbox:
        push.send(users=["alice"], title="Order #42")
        assert push.state.worker is None  # no thread sending behind the test's back
    assert [sent.notification.title for sent in outbox] == ["Order #42"]
    assert push_fake_webpush.pushes == []

    # set, PUSH_SUPPRESS_SEND is what it says, whatever TESTING is
    sending = make_app(
        PUSH_SUPPRESS_SEND=False,
        PUSH_QUEUE="inline",
        PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )
    answer = sending.test_client().post(
        "/push/subscriptions", json=browser.info, headers=as_user("alice")
    )
    with sending.app_context():
        push.send(users=["alice"], title="Order #43")
    assert [received.json()["title"] for received in browser.wait(1)] == ["Order #43"]
