"""Prometheus metrics at <prefix>/metrics, counted from real deliveries to the fakes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import test_celery_queue as celery_tests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from flask_push import PushConfigError
from flask_push.models import utcnow
from flask_push.testing import FakeAPNs, FakeFCM, FakePushService
from flask_push.testing.fcm import make_registration_token

from conftest import (
    a_claim_before,
    db,
    later,
    make_due,
    push,
    quiet_now,
    sending_held,
    subscribe,
    wait_until,
)
from wslive import Client, serve

TOKEN = "scrape-me-7f3a"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(app: Flask, token: str | None = TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = app.test_client().get("/push/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return parse(response.get_data(as_text=True))


def delivered(samples: Samples, provider: str, outcome: str) -> float:
    key = frozenset({("provider", provider), ("outcome", outcome)})
    return samples.get(("flask_push_deliveries_total", key), 0.0)


def round_trips(samples: Samples, provider: str) -> float:
    return samples.get(
        ("flask_push_delivery_seconds_count", frozenset({("provider", provider)})), 0
    )


@pytest.fixture
def metrics_app(sending_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """An app that really sends Web Push and FCM (to the fakes), inline, with metrics on."""

    def factory(**config: Any) -> Flask:
        return sending_app(**{"PUSH_METRICS": True, "PUSH_METRICS_TOKEN": TOKEN, **config})

    return factory


def test_outcomes_and_round_trips_are_counted(
    metrics_app: Callable[..., Flask], push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    app = metrics_app()
    ok, dead, busy, refused = (push_fake_webpush.subscribe() for _ in range(4))
    dead.expire()  # 410 Gone
    push_fake_webpush.fail_next(500, subscriber=busy)
    push_fake_webpush.fail_next(400, subscriber=refused)
    before = scrape(app)
    assert delivered(before, "webpush", "sent") == 0
    with app.app_context():
        for subscriber in (ok, dead, busy, refused):
            subscribe(subscriber)
        db.session.add(
            push.models.Installation(
                app_id="shop",
                device_token=make_registration_token(),
                device_type="android",
                user_id="alice",
            )
        )
        db.session.commit()
        message = push.send(users=["alice"], title="Order #42")
        after = scrape(app)
        assert delivered(after, "webpush", "sent") == 1
        assert delivered(after, "webpush", "gone") == 1
        assert delivered(after, "webpush", "retry") == 1
        assert delivered(after, "webpush", "failed") == 1
        assert delivered(after, "fcm", "sent") == 1
        assert round_trips(after, "fcm") == 1
        # one round trip per push that reached the push service
        assert round_trips(after, "webpush") == 4
        assert after[("flask_push_delivery_seconds_sum", frozenset({("provider", "webpush")}))] > 0

        # The retried one's ttl runs out before its next try: expired, without a push.
        model = push.models.Delivery
        db.session.execute(
            sa.update(model)
            .where(model.message_id == message.id, model.status == "queued")
            .values(due_at=utcnow() - timedelta(seconds=5), expires_at=utcnow())
        )
        db.session.commit()
        assert push.dispatch_due() == 1
    final = scrape(app)
    assert delivered(final, "webpush", "expired") == 1
    assert round_trips(final, "webpush") == 4
    assert len(push_fake_webpush.requests) == 4
    assert len(push_fake_fcm.messages) == 1


def test_refused_credentials_are_counted_and_said_as_such(
    make_app: Callable[..., Flask], push_fake_apns: FakeAPNs
) -> None:
    """A revoked APNs key fails every iOS push: not "refused it" like a bad payload,
    but a reason and a counter of its own, for an alert."""
    config = push_fake_apns.app_config()
    app = make_app(PUSH_QUEUE="inline", PUSH_METRICS=True, PUSH_METRICS_TOKEN=TOKEN, **config)
    push_fake_apns.revoke_key(config["PUSH_APNS_KEY_ID"])
    with app.app_context():
        for n in range(2):
            db.session.add(
                push.models.Installation(
                    app_id="shop",
                    device_token=f"{n:02x}" * 32,
                    device_type="ios",
                    user_id="alice",
                )
            )
        db.session.commit()
        message = push.send(users=["alice"], title="Order #42")
        entries = push.explain(message.id)
    samples = scrape(app)
    assert delivered(samples, "apns", "failed") == 2
    key = ("flask_push_credentials_refused_total", frozenset({("provider", "apns")}))
    assert samples[key] == 2
    for entry in entries:
        assert (entry["status"], entry["reason"]) == ("failed", "credentials_refused")
        assert entry["detail"].startswith(
            "Apple's push service (APNs) refused flask-push's credentials at "
        )
        assert (
            "(403 InvalidProviderToken: APNs refused the provider token; check " in entry["detail"]
        )
        assert entry["detail"].endswith(
            "and that the key was not revoked); it will not be tried again as it is."
        )


def test_outcomes_are_counted_as_written_wherever_they_are_written(
    metrics_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """What the policy ends at send time, what a newer state supersedes (at its
    call, or at the claim of an older state an operator retried) and what has no
    provider: each counted once, under the status the API shows."""
    app = metrics_app(
        PUSH_CATEGORIES={"offers": {"label": "Offers"}, "orders": {"label": "Orders"}}
    )
    browser = push_fake_webpush.subscribe()
    with app.app_context():
        subscribe(browser)
        db.session.add(
            push.models.Installation(
                app_id="shop", device_token="ab" * 32, device_type="ios", user_id="alice"
            )
        )  # no APNs provider: failed at once
        db.session.commit()
        push.set_preferences("alice", categories={"offers": {"web": False}})
        deal = push.send(users=["alice"], title="Deal", category="offers")  # web: suppressed
        # an older state fails (400), a newer one is sent, the older one is retried
        push_fake_webpush.fail_next(400, subscriber=browser)
        older = push.activity("order-1", users=["alice"], title="Placed", category="orders")
        push.activity("order-1", users=["alice"], title="Packed", category="orders")
        push.retry_failed(older.id)
        push.dispatch_due()
        # quiet hours: one push outlasts them, and one is superseded while it waits
        quiet_now()
        push.send(users=["alice"], title="Soon", category="orders", ttl=60)
        push.activity("order-2", users=["alice"], title="Placed", category="orders")
        push.activity("order-2", users=["alice"], title="Packed", category="orders")
        # what waits is ended when she turns its category off: a push for tomorrow,
        # and order-2's newer state, held for her quiet hours
        later = datetime.now(timezone.utc) + timedelta(days=1)
        push.send(users=["alice"], title="Tomorrow", category="orders", send_at=later)
        push.set_preferences("alice", categories={"orders": {"web": False}})
        # the deal failed on the iPhone; she turns offers off there before the retry
        push.set_preferences("alice", categories={"offers": {"mobile": False}})
        push.retry_failed(deal.id)
    after = scrape(app)
    assert delivered(after, "webpush", "suppressed") == 3
    assert delivered(after, "webpush", "failed") == 1  # the older state's 400
    assert delivered(after, "webpush", "sent") == 1
    assert delivered(after, "webpush", "superseded") == 2
    assert delivered(after, "webpush", "expired") == 1
    assert delivered(after, "webpush", "retry") == 0
    # the iPhone, with no APNs provider: failed at once for six messages, and again
    # when the operator retried the older state; "Soon" outlasted the quiet hours
    assert delivered(after, "apns", "failed") == 7
    assert delivered(after, "apns", "expired") == 1
    assert delivered(after, "apns", "suppressed") == 1  # the deal, at its retry


def test_an_operators_cancel_is_counted_as_the_counts_show_it(
    metrics_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A cancel writes ``cancelled`` outcomes: counted, as every other outcome is,
    so that the metrics tell what the console's chart and the message's counts do."""
    app = metrics_app()
    with app.app_context():
        for _ in range(2):
            subscribe(push_fake_webpush.subscribe())
        later = datetime.now(timezone.utc) + timedelta(days=1)
        message = push.send(users=["alice"], title="Tomorrow", send_at=later)
        shown = push.cancel(message.id)
        again = push.cancel(message.id)  # nothing left to cancel: counted once
    assert shown["counts"]["cancelled"] == again["counts"]["cancelled"] == 2
    assert delivered(scrape(app), "webpush", "cancelled") == 2


def a_sale_to_150(app: Flask, service: FakePushService) -> tuple[str, Any]:
    """A sale due now to 150 browsers, and a worker (a ``Dispatcher``) that claims 50
    at a time, counting into ``app``'s metrics: the message's id and the worker."""
    from flask_push.dispatch import Dispatcher

    with app.app_context():
        for number in range(150):
            subscribe(service.subscribe(f"s{number}"))
        message = push.send(users=["alice"], title="Sale", send_at=utcnow() + timedelta(hours=1))
        make_due(message.id)
        message_id, state = message.id, push.state
        worker = Dispatcher(
            app, push.models, db.engine, state.settings, batch_size=50, metrics=state.metrics
        )
    return message_id, worker


def assert_100_sent_and_50_cancelled(app: Flask, message_id: str) -> None:
    """What the message's timelines say, the metrics say: each delivery once."""
    with app.app_context():
        ended = Counter(entry["status"] for entry in push.explain(message_id))
    assert ended == {"sent": 100, "cancelled": 50}
    samples = scrape(app)
    assert delivered(samples, "webpush", "sent") == 100
    assert delivered(samples, "webpush", "cancelled") == 50


def test_a_cancel_mid_send_counts_each_delivery_once(
    metrics_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A worker holds 150 pushes: 100 on the network (a lane's share), 50 waiting for
    a slot. The cancel counted all 150 as cancelled, and the 100 that went out then
    counted as sent too: 250 outcomes for 150 deliveries. Each counts once now."""
    app = metrics_app()
    service = push_fake_webpush
    message_id, worker = a_sale_to_150(app, service)
    with sending_held(service, worker, message_id):
        assert service.wait_in_flight(100) == 100
        with app.app_context():
            shown = push.cancel(message_id)
        assert shown["counts"]["cancelled"] == 150  # as the cancel saw them
        # the worker finds the cancel and takes back the 50 waiting, counting them
        assert wait_until(lambda: delivered(scrape(app), "webpush", "cancelled") == 50)
    assert_100_sent_and_50_cancelled(app, message_id)


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_cancel_counts_none_that_a_worker_claims_as_it_reads_them(
    metrics_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A worker's claim committed between the cancel's read of the queued deliveries
    and its write: the cancel counted them as in no worker's hand, and the worker,
    which sent them before its next look for cancels, counted them as sent too (200
    outcomes for the sale to 150, in a loaded run). The cancel's read locks them, so
    the claim (which skips locked rows) takes none of them."""
    app = metrics_app()
    message_id, _ = a_sale_to_150(app, push_fake_webpush)
    with app.app_context(), a_claim_before("UPDATE push_deliveries SET status") as claimed:
        push.cancel(message_id)
    # each one counted once: by the cancel, or by the worker that holds it
    assert delivered(scrape(app), "webpush", "cancelled") + claimed[0] == 150


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_choice_counts_none_that_a_worker_claims_as_it_reads_them(
    metrics_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """As above, for a user who turns a category off: their pushes of it that wait are
    suppressed, and were counted so, while the worker that had just claimed them
    (and checks the choice only at the claim) sent them."""
    app = metrics_app(PUSH_CATEGORIES={"offers": {"label": "Offers"}})
    with app.app_context():
        for number in range(3):
            subscribe(push_fake_webpush.subscribe(f"s{number}"))
        message = push.send(users=["alice"], title="Sale", category="offers", send_at=later())
        make_due(message.id)
        with a_claim_before("UPDATE push_deliveries SET status") as claimed:
            push.set_preferences("alice", categories={"offers": {"web": False}})
    assert delivered(scrape(app), "webpush", "suppressed") + claimed[0] == 3


def test_a_cancel_mid_send_counts_the_pushes_a_stalled_service_had_put_back(
    metrics_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As above, but the worker hands the 50 waiting back because their push service
    stopped answering, before it finds the cancel (a busy machine): the cancel left
    them to this worker to count, and no one counted them."""

    from flask_push import dispatch

    # the worker looks for cancels once, before there is one
    monkeypatch.setattr(dispatch, "_CANCEL_CHECK_EVERY", 3600.0)
    app = metrics_app()
    service = push_fake_webpush
    message_id, worker = a_sale_to_150(app, service)
    webpush = worker.providers["webpush"]
    webpush.stall_after = 3600.0
    with sending_held(service, worker, message_id):
        assert service.wait_in_flight(100) == 100
        with app.app_context():
            assert push.cancel(message_id)["counts"]["cancelled"] == 150
        webpush.stall_after = 0.0  # the service is silent: the 50 waiting go back
        assert wait_until(lambda: delivered(scrape(app), "webpush", "cancelled") == 50)
    assert_100_sent_and_50_cancelled(app, message_id)


def test_a_cancel_mid_send_counts_a_retry_it_stopped_as_cancelled(
    metrics_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A push on the network when its message is cancelled, whose service then says
    503: its retry is not written (the cancel wins), so it ends ``cancelled``. Its
    worker counted a ``retry`` that never was, and no one counted it ``cancelled``."""

    from flask_push.dispatch import Dispatcher

    app = metrics_app()
    service = push_fake_webpush
    with app.app_context():
        subscribe(service.subscribe())
        message = push.send(users=["alice"], title="Sale", send_at=utcnow() + timedelta(hours=1))
        make_due(message.id)
        message_id, state = message.id, push.state
        worker = Dispatcher(app, push.models, db.engine, state.settings, metrics=state.metrics)
    with sending_held(service, worker, message_id):
        assert service.wait_in_flight(1) == 1
        with app.app_context():
            assert push.cancel(message_id)["counts"]["cancelled"] == 1
        service.fail_next(503)
    with app.app_context():
        assert [entry["status"] for entry in push.explain(message_id)] == ["cancelled"]
    samples = scrape(app)
    assert delivered(samples, "webpush", "retry") == 0
    assert delivered(samples, "webpush", "cancelled") == 1


def test_outbox_gauges_are_read_from_the_database(
    metrics_app: Callable[..., Flask], make_app: Callable[..., Flask]
) -> None:
    """The gauges are right whichever process delivers: here a second app on the same
    database (as a worker on another host would be) queues and then sends."""
    scraped = metrics_app()
    sender = make_app(PUSH_QUEUE="inline", PUSH_SUPPRESS_SEND=True)
    samples = scrape(scraped)
    assert samples[("flask_push_outbox_due", frozenset())] == 0
    assert samples[("flask_push_outbox_oldest_due_seconds", frozenset())] == 0
    with sender.app_context():
        for user in ("alice", "bob", "carol"):
            db.session.add(
                push.models.Subscription(
                    endpoint=f"https://fcm.googleapis.com/fcm/send/{user}",
                    p256dh="BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                    auth="tBHItJI5svbpez7KI4CCXg",
                    user_id=user,
                    topics=[],
                )
            )
        db.session.commit()
        # scheduled: queued, not due yet, so nothing sends it
        message = push.send(everyone=True, title="Sale", send_at=utcnow() + timedelta(hours=1))
    assert scrape(scraped)[("flask_push_outbox_due", frozenset())] == 0
    with sender.app_context():
        model = push.models.Delivery
        db.session.execute(
            sa.update(model)
            .where(model.message_id == message.id)
            .values(due_at=utcnow() - timedelta(seconds=30))
        )
        db.session.commit()
    samples = scrape(scraped)
    assert samples[("flask_push_outbox_due", frozenset())] == 3
    assert samples[("flask_push_outbox_oldest_due_seconds", frozenset())] >= 30
    with sender.app_context():
        assert push.dispatch_due() == 3
    samples = scrape(scraped)
    assert samples[("flask_push_outbox_due", frozenset())] == 0
    # the other app's sends are counted in its own registry (or, across processes,
    # through the multiprocess mode below), never in this one's
    assert delivered(samples, "webpush", "sent") == 0


def test_token_is_required_when_set(metrics_app: Callable[..., Flask]) -> None:
    client = metrics_app().test_client()
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        response = client.get("/push/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.get_json()["error"]["code"] == "authentication_required"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = client.get("/push/metrics", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


def test_without_token_anyone_may_scrape(metrics_app: Callable[..., Flask]) -> None:
    app = metrics_app(PUSH_METRICS_TOKEN=None)
    samples = scrape(app, token=None)
    assert samples[("flask_push_ws_connections", frozenset())] == 0


def test_off_by_default_answers_404(app: Flask) -> None:
    response = app.test_client().get("/push/metrics")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_two_apps_in_one_process_count_apart(
    metrics_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    first, second = metrics_app(), metrics_app()
    with first.app_context():
        subscribe(push_fake_webpush.subscribe())
        push.send(users=["alice"], title="Hi")
    assert delivered(scrape(first), "webpush", "sent") == 1
    assert delivered(scrape(second), "webpush", "sent") == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [("PUSH_METRICS", "yes"), ("PUSH_METRICS_TOKEN", ""), ("PUSH_METRICS_TOKEN", 5)],
)
def test_bad_config_names_the_key(make_app: Callable[..., Flask], key: str, value: Any) -> None:
    with pytest.raises(PushConfigError, match=key):
        make_app(**{"PUSH_METRICS": True, key: value})


def test_a_token_read_from_a_secret_file_is_the_token_inside(
    make_app: Callable[..., Flask],
) -> None:
    """PUSH_METRICS_TOKEN read from a secret file keeps the file's last newline
    ("...\\n"): init_app took it, and every scrape answered 401 (the scrape's token
    was stripped, then compared with the token and its newline, which no header can
    carry)."""
    app = make_app(PUSH_METRICS=True, PUSH_METRICS_TOKEN=f"  {TOKEN}\n")
    assert app.extensions["push"].settings.metrics_token == TOKEN
    scrape(app)
    # a space inside is the token's own: a scrape's header carries it
    spaced = make_app(PUSH_METRICS=True, PUSH_METRICS_TOKEN="two words\n")
    answer = spaced.test_client().get(
        "/push/metrics", headers={"Authorization": "Bearer two words"}
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("token", "what"),
    [
        ("s3cret\nline-2\n", "a control character"),
        ("s3cret\ttoken", "a control character"),
        ("s3cr\u00e9t", "a non-ASCII character"),
    ],
)
def test_a_token_no_header_can_carry_is_refused_without_its_value(
    make_app: Callable[..., Flask], token: str, what: str
) -> None:
    """A token a scraper cannot send as it is in 'Authorization: Bearer <token>' was
    taken, and no scrape could ever match it: refused at init_app, saying why, and
    not the secret."""
    with pytest.raises(PushConfigError) as info:
        make_app(PUSH_METRICS=True, PUSH_METRICS_TOKEN=token)
    message = str(info.value)
    assert info.value.key == "PUSH_METRICS_TOKEN"
    assert message == (
        "PUSH_METRICS_TOKEN must be printable ASCII, as a scraper sends it in its "
        "'Authorization: Bearer <token>' header; got a token with "
        f"{what} inside (a newline of a secret file at its end is fine)"
    )
    assert "s3cr" not in message


def test_metrics_without_prometheus_client_says_what_to_install(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "prometheus_client" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(PushConfigError, match=r"pip install (-e )?'\S*\[metrics\]'"):
        make_app(PUSH_METRICS=True)


def test_the_gunicorn_hook_without_prometheus_client_says_what_to_install() -> None:
    """The README's gunicorn.conf.py imports flask_push.metrics, before any init_app has
    checked PUSH_METRICS: without the extra, it says which extra to install, not only
    that prometheus_client is missing."""
    code = """
        import sys
        sys.modules["prometheus_client"] = None  # as if the metrics extra were not installed
        try:
            from flask_push.metrics import mark_process_dead
        except ImportError as err:
            print(isinstance(err, ModuleNotFoundError), err.name)
            print(err)
    """
    kind, said = _run(code, {}).splitlines()
    assert kind == "True prometheus_client"  # still what it was, for code that catches it
    assert re.fullmatch(
        r"flask_push\.metrics needs flask-push's 'metrics' extra \('prometheus_client' is not "
        r"installed\): pip install (-e )?'\S+\[metrics\]'",
        said,
    ), said


def test_a_multiprocess_dir_that_is_not_there_is_a_config_error(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Emptied with `rm -rf` and not made again: one line naming the variable, which a
    `flask` command prints as `Error: ...`, not prometheus_client's traceback."""
    missing = tmp_path / "gone"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    with pytest.raises(PushConfigError, match="PROMETHEUS_MULTIPROC_DIR .* not a directory"):
        make_app(PUSH_METRICS=True)
    missing.mkdir()
    assert make_app(PUSH_METRICS=True)


ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_off_imports_no_prometheus_client(tmp_path: Path) -> None:
    code = """
        import sys
        from flask import Flask
        from flask_sqlalchemy import SQLAlchemy
        from flask_push import Push
        db = SQLAlchemy(); push = Push(db=db)
        app = Flask(__name__)
        app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", TESTING=True)
        db.init_app(app); push.init_app(app)
        with app.app_context():
            db.create_all()
        assert app.test_client().get("/push/health").status_code == 200
        print("prometheus_client" in sys.modules)
    """
    assert _run(code, {}).strip() == "False"


_PROCESS = """
    import json, sys
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from flask_push import Push
    db = SQLAlchemy(); push = Push(db=db)
    given = json.loads(sys.argv[1])
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=given["db"], TESTING=True, PUSH_METRICS=True,
        PUSH_QUEUE="inline", PUSH_SUPPRESS_SEND=False, PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True, PUSH_VAPID_PRIVATE_KEY=given["key"],
        PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
    )
    db.init_app(app); push.init_app(app)
    with app.app_context():
        db.create_all()
        if given.get("subscriber"):
            s = given["subscriber"]
            db.session.add(push.models.Subscription(
                endpoint=s["endpoint"], p256dh=s["p256dh"], auth=s["auth"], user_id=s["user"],
                topics=[]))
            db.session.commit()
            push.send(users=[s["user"]], title="from another process")
            push.shutdown()
        else:
            print(app.test_client().get("/push/metrics").get_data(as_text=True))
"""


def test_multiprocess_mode_sums_every_process(
    tmp_path: Path, push_fake_webpush: FakePushService, vapid_private_key: str
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, what worker processes counted is in any scrape."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    for user in ("alice", "bob"):  # two worker processes, one push each
        subscriber = push_fake_webpush.subscribe()
        given = {
            "db": database,
            "key": vapid_private_key,
            "subscriber": {
                "endpoint": subscriber.endpoint,
                "p256dh": subscriber.p256dh,
                "auth": subscriber.auth,
                "user": user,
            },
        }
        _run(_PROCESS, env, json.dumps(given))
        assert len(subscriber.received) == 1
    scraped = _run(_PROCESS, env, json.dumps({"db": database, "key": vapid_private_key}))
    samples = parse(scraped)
    assert delivered(samples, "webpush", "sent") == 2
    assert round_trips(samples, "webpush") == 2
    assert samples[("flask_push_outbox_due", frozenset())] == 0


def test_ws_connections_counts_this_process_sockets(metrics_app: Callable[..., Flask]) -> None:
    app = metrics_app(PUSH_WS_HEARTBEAT=0)
    with serve(app) as origin:
        alice = Client(f"{origin}/push/ws", "alice")
        bob = Client(f"{origin}/push/ws", "bob")
        try:
            alice.sync(), bob.sync()
            assert scrape(app)[("flask_push_ws_connections", frozenset())] == 2
        finally:
            alice.close()
            bob.close()


def test_scrape_conforms_to_the_document(metrics_app: Callable[..., Flask]) -> None:
    """The fuzz run of test_openapi.py sees /metrics off; here it is on, with a token."""
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from flask_push.api.openapi import document

    app = metrics_app()
    schema = schemathesis.openapi.from_dict(document("/push", server="http://localhost"))
    operation = schema["/push/metrics"]["GET"]
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    for headers, status in (({"Authorization": f"Bearer {TOKEN}"}, 200), ({}, 401)):
        response = operation.Case().call_and_validate(app=app, headers=headers, checks=checks)
        assert response.status_code == status


# -- a real Celery worker process --------------------------------------------------------

# the Celery tests' fixtures: a broker queue of this test's own, the shared config, and
# `flask push worker` processes
broker = celery_tests.broker
celery_config = celery_tests.celery_config
workers = celery_tests.workers


@celery_tests.on_postgres
def test_a_celery_worker_counts_into_the_multiprocess_directory(
    make_app: Callable[..., Flask],
    celery_config: dict[str, Any],
    push_fake_webpush: FakePushService,
    workers: celery_tests.Workers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `flask push worker` process counts what it delivers; the web process's
    scrape sums it through prometheus_client's multiprocess files."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    app = make_app(**celery_config)
    with app.app_context():
        celery_tests.add_browsers(push_fake_webpush, 12)
    folder = tmp_path / "prometheus"
    folder.mkdir()
    with monkeypatch.context() as patched:  # the worker's environment only
        patched.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
        name = workers.start({**celery_config, "PUSH_METRICS": True})
    workers.wait_ready(name)
    with app.app_context():
        message = push.send(everyone=True, title="Flash sale")
    assert wait_until(celery_tests.all_sent(app, message.id, 12), 30), workers.log(name)

    def counted() -> Samples:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
        return parse(generate_latest(registry).decode())

    assert wait_until(lambda: delivered(counted(), "webpush", "sent") == 12, 10), counted()
    assert round_trips(counted(), "webpush") == 12
