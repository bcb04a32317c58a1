"""Push and init_app: factories, several apps, double registration, callbacks."""

from __future__ import annotations

import dataclasses
import gc
import threading
import uuid
import warnings
import weakref
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_push import Push
from flask_push.models import Models

from conftest import add_subscription, as_user, db, push, subscribe, wait_until


def test_init_app_registers_blueprint_and_state(app):
    state = app.extensions["push"]
    assert state.push is push
    assert state.settings.url_prefix == "/push"
    assert any(rule.rule == "/push/subscriptions" for rule in app.url_map.iter_rules())
    assert "push" in app.cli.commands


def test_second_init_app_on_same_app_is_refused(app):
    with pytest.raises(RuntimeError, match="already registered"):
        push.init_app(app)


def test_init_app_needs_the_db_registered_first(vapid_private_key):
    app = Flask(__name__)
    with pytest.raises(RuntimeError, match=r"db.init_app\(app\)"):
        push.init_app(app)


def test_two_apps_in_one_process_keep_their_own_state(make_app, make_subscription):
    one = make_app(PUSH_URL_PREFIX="/one")
    two = make_app(PUSH_URL_PREFIX="/two", PUSH_DEFAULT_TTL=60)
    assert one.extensions["push"].settings.default_ttl == 86400
    assert two.extensions["push"].settings.default_ttl == 60
    with one.app_context():
        assert push.settings.url_prefix == "/one"
    with two.app_context():
        assert push.settings.url_prefix == "/two"
    assert one.test_client().get("/one/vapid-public-key").status_code == 200
    assert one.test_client().get("/two/vapid-public-key").status_code == 404
    assert two.test_client().get("/two/vapid-public-key").status_code == 200


@pytest.mark.parametrize("sends", ["recorded", "for real"])
def test_an_app_that_is_let_go_is_not_kept_alive(
    database, vapid_private_key, push_fake_webpush, sends
):
    """An app a test made, sent with and let go (an app per test, as in Flask's
    testing docs) lived on for good: the database thread of its dispatcher kept its
    last job, and so the app, its engine and their pooled connections. A suite of a
    hundred such tests on PostgreSQL ran out of connections ("too many clients").
    Let go, the dispatcher's thread ends, and an app that sent for real has its push
    service connections closed, without a word of warning."""
    subscriber = push_fake_webpush.subscribe()

    def one_test() -> tuple[weakref.ref[Flask], threading.Thread]:
        app = Flask(__name__)
        app.config.update(
            database,
            TESTING=True,
            PUSH_VAPID_PRIVATE_KEY=vapid_private_key,
            PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
        )
        if sends == "for real":
            app.config.update(
                PUSH_SUPPRESS_SEND=False,
                PUSH_QUEUE="inline",
                PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
                PUSH_ALLOW_HTTP_ENDPOINTS=True,
            )
        db.init_app(app)
        push.init_app(app)
        with app.app_context():
            db.create_all()
            subscribe(subscriber)
            push.send(users=["alice"], title="Hi")
            thread = push.state.get_inline().dispatcher._db._thread
            db.drop_all()
            db.engine.dispose()  # so that none of its connections is left open
        assert thread is not None and thread.is_alive()
        return weakref.ref(app), thread

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        app, thread = one_test()
        assert wait_until(lambda: gc.collect() >= 0 and app() is None, timeout=10)
        thread.join(10)
        assert not thread.is_alive()  # its database thread ended with it
        for closer in [t for t in threading.enumerate() if t.name == "flask-push-let-go"]:
            closer.join(10)
        gc.collect()
    assert len(subscriber.received) == (1 if sends == "for real" else 0)
    assert [str(w.message) for w in said] == []  # no unclosed session, loop or socket


def test_push_with_app_argument_sets_up_at_once(database, vapid_private_key):
    # A second Push on the same db shares its models instead of redefining tables.
    other = Push(db=db)
    assert other.models is push.models
    app = Flask(__name__)
    app.config.update(
        database,
        PUSH_VAPID_PRIVATE_KEY=vapid_private_key,
        PUSH_VAPID_SUBJECT="https://shop.example",
    )
    db.init_app(app)
    Push(app, db=db)
    assert "push" in app.extensions


def test_state_outside_init_app_says_what_to_do():
    app = Flask(__name__)
    with app.app_context(), pytest.raises(RuntimeError, match="Did you call push.init_app"):
        push.state  # noqa: B018


def test_state_of_another_push_instance_is_refused(app):
    other = Push(db=SQLAlchemy())
    with app.app_context(), pytest.raises(RuntimeError, match="different Push"):
        other.state  # noqa: B018


def test_default_callbacks():
    fresh = Push(db=SQLAlchemy())
    app = Flask(__name__)
    with app.test_request_context():
        assert fresh.current_user_id() is None
        assert fresh.current_user_is_admin() is False
        assert fresh.may_join("alice", "user:alice")
        assert not fresh.may_join("alice", "user:bob")
        assert not fresh.may_join(None, "user:alice")


def test_decorators_register_and_return_the_callback():
    fresh = Push(db=SQLAlchemy())

    @fresh.identity_loader
    def who():
        return 42

    @fresh.admin_loader
    def admin():
        return 1

    @fresh.channel_authorizer
    def may(user_id, channel):
        return channel.startswith("order:")

    assert who() == 42
    app = Flask(__name__)
    with app.test_request_context():
        assert fresh.current_user_id() == "42"  # ids are strings on the wire
        assert fresh.current_user_is_admin() is True
        assert fresh.may_join(None, "order:1") and not fresh.may_join("a", "user:a")


def test_identity_loader_decides_who_the_caller_is(client):
    assert client.get("/push/notifications").status_code == 401
    assert client.get("/push/notifications", headers=as_user("alice")).status_code == 200


def test_an_identity_loader_saying_false_is_anonymous_and_a_user_object_an_error(caplog):
    """``current_user.is_authenticated and current_user.id`` gives False for a
    visitor: flask-push took it as the user "False", so every anonymous visitor was
    one user and read what the others wrote. A user object returned instead of its
    id became its repr. False is anonymous now, and an object a 500 that says why."""
    own_db = SQLAlchemy()
    own = Push(db=own_db)
    app = Flask(__name__)
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI="sqlite://")
    own_db.init_app(app)
    own.init_app(app)
    answer: dict[str, object] = {"user": False}
    own.identity_loader(lambda: answer["user"])
    with app.app_context():
        own_db.create_all()
    client = app.test_client()
    made = client.post("/push/notifications", json={"title": "Mine"})
    assert made.status_code == 401, made.get_json()

    class User:
        id = 7

    answer["user"] = User()
    failed = client.get("/push/notifications")
    assert failed.status_code == 500
    assert failed.get_json()["error"]["code"] == "internal_error"
    assert "the identity_loader returned User" in caplog.text
    answer["user"] = 7  # an int id is its text, and a UUID's
    assert client.post("/push/notifications", json={"title": "Seven's"}).status_code == 201
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    answer["user"] = key
    assert client.post("/push/notifications", json={"title": "Key's"}).status_code == 201

    class ObjectId:  # MongoDB's ids: a type of their own, with a text of their own
        def __str__(self) -> str:
            return "65a1f0c2e4b0a1b2c3d4e5f6"

    answer["user"] = ObjectId()
    assert client.post("/push/notifications", json={"title": "Mongo's"}).status_code == 201
    answer["user"] = True
    assert client.get("/push/notifications").status_code == 500
    with app.app_context():
        assert [item.title for item in own.search("7").items] == ["Seven's"]
        assert [item.title for item in own.search(str(key)).items] == ["Key's"]
        assert [item.title for item in own.search("65a1f0c2e4b0a1b2c3d4e5f6").items] == ["Mongo's"]
        own_db.engine.dispose()


def test_the_version_is_the_installed_distributions() -> None:
    import importlib.metadata

    import flask_push
    from flask_push._version import __version__

    assert flask_push.__version__ == __version__ == importlib.metadata.version("flask-push")


def test_no_module_calls_the_facades_private_methods() -> None:
    # The API, the CLI and the websocket go through Push's public methods and the
    # per-app state's get_* methods, never through Push's internals.
    import pathlib
    import re

    import flask_push

    root = pathlib.Path(flask_push.__file__).parent
    private = re.compile(r"\b(push|ext|state)\._[a-z]")
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "extension.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert found == []


def test_suppressed_sends_use_the_inline_queue(app):
    from flask_push.queues import InlineQueue

    with app.app_context():
        state = push.state
        assert state.settings.suppresses_send(app)
        queue = state.get_queue()
        assert isinstance(queue, InlineQueue) and queue is state.get_inline()
        assert state.worker is None  # no thread started for a suppressed send


def test_flask_shell_has_the_extension_as_push(app):
    """The README's calls, tried in `flask shell` as it says, find `push` there."""
    with app.app_context():  # as the shell runs
        assert app.make_shell_context()["push"] is push


def test_the_hosts_own_models_keep_their_names(tmp_path, vapid_private_key):
    """A host with its own Subscription (billing) and Message (chat), reached by
    string from its relationships: Push(db=db) on the same db leaves them working
    (flask-push's classes once took those names in the host's registry)."""
    host_db = SQLAlchemy()

    class Customer(host_db.Model):
        __tablename__ = "customers"
        id = host_db.Column(host_db.Integer, primary_key=True)
        subscriptions = host_db.relationship("Subscription", back_populates="customer")
        messages = host_db.relationship("Message")

    class Subscription(host_db.Model):
        __tablename__ = "billing_subscriptions"
        id = host_db.Column(host_db.Integer, primary_key=True)
        customer_id = host_db.Column(host_db.ForeignKey("customers.id"))
        plan = host_db.Column(host_db.String(20))
        customer = host_db.relationship("Customer", back_populates="subscriptions")

    class Message(host_db.Model):
        __tablename__ = "chat_messages"
        id = host_db.Column(host_db.Integer, primary_key=True)
        customer_id = host_db.Column(host_db.ForeignKey("customers.id"))
        text = host_db.Column(host_db.String(200))

    host_push = Push(db=host_db)
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'host.db'}",
        PUSH_VAPID_PRIVATE_KEY=vapid_private_key,
        PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
    )
    host_db.init_app(app)
    host_push.init_app(app)
    with app.app_context():
        try:
            host_db.create_all()
            customer = Customer(
                subscriptions=[Subscription(plan="pro")], messages=[Message(text="hi")]
            )
            host_db.session.add(customer)
            host_db.session.commit()
            host_db.session.expunge_all()
            [found] = host_db.session.scalars(host_db.select(Customer)).all()
            assert [s.plan for s in found.subscriptions] == ["pro"]
            assert [m.text for m in found.messages] == ["hi"]
            # flask-push's own models, by the names push.models gives them, work alongside
            message = host_push.send(users=["alice"], title="Hello")
            assert host_db.session.get(host_push.models.Message, message.id) is not None
            assert host_push.models.Subscription.__tablename__ == "push_subscriptions"
        finally:
            app.extensions["push"].shutdown()
            host_db.session.remove()
            host_db.engine.dispose()


@pytest.mark.parametrize("name", [field.name for field in dataclasses.fields(Models)])
def test_no_name_of_a_host_model_is_taken(name):
    """Whatever flask-push calls a model (``push.models.<name>``), a host class of
    that name is still the one the host's relationships find by it."""
    host_db = SQLAlchemy()
    Push(db=host_db)
    owner = type(
        "Owner",
        (host_db.Model,),
        {
            "__tablename__": "owners",
            "id": sa.Column(sa.Integer, primary_key=True),
            "things": sa.orm.relationship(name),
        },
    )
    own = type(
        name,
        (host_db.Model,),
        {
            "__tablename__": "things",
            "id": sa.Column(sa.Integer, primary_key=True),
            "owner_id": sa.Column(sa.ForeignKey("owners.id")),
        },
    )
    host_db.Model.registry.configure()
    assert owner.things.property.mapper.class_ is own


def test_a_blueprint_of_the_host_named_as_flask_pushs_is_refused_first(database, vapid_private_key):
    """Flask's own error would tell the host to pass ``name=`` to a blueprint that is
    flask-push's, and leave the app half set up."""
    from flask import Blueprint

    from flask_push import PushConfigError

    app = Flask(__name__)
    app.config.update(database, PUSH_VAPID_PRIVATE_KEY=vapid_private_key)
    app.config.update(PUSH_VAPID_SUBJECT="mailto:ops@shop.example", PUSH_QUEUE="inline")
    app.register_blueprint(Blueprint("push", __name__), url_prefix="/notifications")
    db.init_app(app)
    with pytest.raises(PushConfigError, match=r"already has a blueprint named 'push'"):
        push.init_app(app)
    assert "push" not in app.extensions  # nothing half done


def test_a_host_route_at_the_service_worker_url_is_refused(database, vapid_private_key):
    """A route of the host's own at PUSH_SERVICE_WORKER_URL would answer in place of
    flask-push's service worker, without a word."""
    from flask_push import PushConfigError

    app = Flask(__name__)
    app.config.update(database, PUSH_VAPID_PRIVATE_KEY=vapid_private_key)
    app.config.update(PUSH_VAPID_SUBJECT="mailto:ops@shop.example", PUSH_QUEUE="inline")
    app.add_url_rule("/push-sw.js", "old_worker", lambda: "self.addEventListener()")
    db.init_app(app)
    with pytest.raises(PushConfigError, match=r"PUSH_SERVICE_WORKER_URL is '/push-sw.js'"):
        push.init_app(app)
    assert "push" not in app.extensions
    app.config["PUSH_SERVICE_WORKER_URL"] = "/sw.js"
    push.init_app(app)
    try:
        assert app.test_client().get("/sw.js").status_code == 200
    finally:
        with app.app_context():
            push.shutdown()
            db.engine.dispose()


def test_shutdown_in_a_thread_that_runs_an_event_loop(make_app: Any) -> None:
    """``push.shutdown()`` from a thread running an event loop of its own (an async
    host's; Playwright's sync API, in a test) raised "Cannot run the event loop
    while another loop is running", and left the providers' connections open."""
    import asyncio

    app = make_app(PUSH_QUEUE="inline")
    with app.app_context():
        add_subscription("alice")
        push.send(users=["alice"], title="Hi")
        inline = app.extensions["push"].inline
        assert inline is not None
        dispatcher = inline.dispatcher

        async def shut_down() -> None:
            push.shutdown()

        asyncio.run(shut_down())
        assert dispatcher.closed and dispatcher._loop.is_closed()
