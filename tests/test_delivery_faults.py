"""The delivery pipeline under faults: a push service that never answers, a slow
one that outlives a lease, and a database that goes away mid-fan-out.

Real sockets all the way: the fake push service decrypts what it gets, the
silent one accepts and says nothing, and the database connection runs through a
TCP proxy that the test cuts (the shared PostgreSQL itself is never touched).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push import db_clock
from flask_push.dispatch import Dispatcher
from flask_push.models import utcnow
from flask_push.providers.webpush import WebPushProvider
from flask_push.testing import FakePushService

from conftest import browser_keys, db, make_due, push, wait_until
from faults import SilentService, TcpProxy

on_postgres = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


def sending_config(**config: Any) -> dict[str, Any]:
    """Sending for real, to services on 127.0.0.1."""
    return {
        "PUSH_SUPPRESS_SEND": False,
        "PUSH_ENDPOINT_HOSTS": ["127.0.0.1"],
        "PUSH_ALLOW_HTTP_ENDPOINTS": True,
        "SECRET_KEY": "test-secret",  # an app that sends signs its click tokens
        **config,
    }


def subscribe(endpoint: str, keys: dict[str, str], user_id: str) -> None:
    db.session.add(
        push.models.Subscription(
            endpoint=endpoint, p256dh=keys["p256dh"], auth=keys["auth"], user_id=user_id, topics=[]
        )
    )


def add_browsers(service: FakePushService, count: int, prefix: str = "user") -> None:
    for i in range(count):
        browser = service.subscribe(f"{prefix}-{i}")
        subscribe(browser.endpoint, {"p256dh": browser.p256dh, "auth": browser.auth}, browser.name)
    db.session.commit()


def due_for_everyone() -> str:
    """A message to everyone, due now but left to the test's own dispatchers: sent
    for later (so that the inline queue sends nothing), then made due."""
    message_id = push.send(everyone=True, title="x", send_at=utcnow() + timedelta(hours=1)).id
    make_due(message_id)
    return message_id


def deliveries(engine: sa.Engine, message_id: str) -> list[Any]:
    """Each delivery of the message with its target's endpoint, read on ``engine``."""
    d, s = push.models.Delivery, push.models.Subscription
    query = (
        sa.select(
            d.id,
            d.status,
            d.attempts,
            d.error,
            d.lease_until,
            d.due_at,
            s.endpoint,
            d.reason,
            d.events,
        )
        .join(s, s.id == d.subscription_id)
        .where(d.message_id == message_id)
        .order_by(d.id)
    )
    with engine.connect() as conn:
        return list(conn.execute(query).all())


# -- a push service that never answers ---------------------------------------------


@pytest.fixture
def patient_webpush(monkeypatch: pytest.MonkeyPatch) -> None:
    """Web Push providers that wait 120 s for an answer, not 10: the tests below
    close the silent service themselves, and on a busy machine could otherwise
    reach that point after the pushes on the network had timed out."""
    made = WebPushProvider.from_settings.__func__  # type: ignore[attr-defined]

    def patient(cls: type[WebPushProvider], settings: Any, **options: Any) -> WebPushProvider:
        return made(cls, settings, **{**options, "timeout": 120.0})  # type: ignore[no-any-return]

    monkeypatch.setattr(WebPushProvider, "from_settings", classmethod(patient))


def test_a_push_service_that_never_answers_does_not_hold_back_the_others(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture, patient_webpush: None
) -> None:
    hung, healthy_count = 150, 60
    app = make_app(**sending_config(PUSH_QUEUE="thread"))
    caplog.set_level(logging.DEBUG, logger="flask_push")
    with SilentService() as silent, FakePushService() as healthy, app.app_context():
        # the silent service's subscriptions first: claimed first, they would take
        # every slot of the provider
        for i in range(hung):
            subscribe(f"{silent.origin}/push/{i}", browser_keys(), f"hung-{i}")
        add_browsers(healthy, healthy_count)
        message = push.send(everyone=True, title="Flash sale")
        engine = db.engine

        def healthy_recorded() -> bool:
            rows = deliveries(engine, message.id)
            return [r.status for r in rows if r.endpoint.startswith(healthy.origin)] == [
                "sent"
            ] * healthy_count

        # The moment every healthy push is recorded, the silent service's pushes
        # are still in hand: none has timed out (the provider waits 120 s).
        assert wait_until(healthy_recorded)
        stuck = [r for r in deliveries(engine, message.id) if r.endpoint.startswith(silent.origin)]
        assert len(healthy.pushes) == healthy_count
        assert [r.status for r in stuck] == ["queued"] * hung
        assert not [r for r in stuck if r.error and "no answer came within" in r.error]
        # and it holds just its own share of the slots: 100 of the provider's 200
        assert wait_until(lambda: silent.requests == 100)

        # Those waiting behind the silent service are put back without an attempt
        # once it has been silent for a while, so that they hold nothing meanwhile.
        def put_back() -> list[Any]:
            rows = deliveries(engine, message.id)
            return [r for r in rows if r.lease_until is None and r.status == "queued"]

        assert wait_until(lambda: len(put_back()) == hung - 100)
        now = utcnow()
        for row in put_back():
            assert row.attempts == 0 and row.due_at > now
            assert f"its push service ({silent.origin}) gave no answer" in row.error
            # its timeline says so, with when it is due again
            assert row.reason == "stalled"
            assert [event["what"] for event in row.events] == ["queued", "deferred"]
            assert "held back before it was sent" in row.events[-1]["detail"]
        assert silent.requests == 100
        silent.close()  # its requests fail now, instead of timing out
        assert wait_until(lambda: len(put_back()) == hung)
        push.shutdown()
    # Said once as a warning; on a busy machine a claim may bring the last of the 50
    # in after it, and those are put back with a debug line of their own.
    shed = re.compile(
        f"flask-push: {re.escape(silent.origin)} has not answered for 2 s; "
        r"(\d+) pushes waiting for it are put back and tried again in 120 s"
    )
    [warning] = said(caplog, logging.WARNING)
    assert shed.fullmatch(warning)
    counts = [shed.fullmatch(line) for line in said(caplog, logging.DEBUG)]
    assert sum(int(m[1]) for m in [shed.fullmatch(warning), *counts] if m) == hung - 100
    assert Counter(p.subscriber_name for p in healthy.pushes) == Counter(
        f"user-{i}" for i in range(healthy_count)
    )


def test_a_stopping_worker_hands_back_what_it_has_not_sent(
    make_app: Callable[..., Flask], patient_webpush: None
) -> None:
    app = make_app(**sending_config(PUSH_QUEUE="inline"))
    stop = threading.Event()
    with SilentService() as silent:
        with app.app_context():
            for i in range(150):
                subscribe(f"{silent.origin}/push/{i}", browser_keys(), f"user-{i}")
            db.session.commit()
            message_id = due_for_everyone()
            dispatcher = Dispatcher(app, push.models, db.engine, push.settings)
            dispatcher.providers["webpush"].stall_after = 3600.0  # not put back as stalled
            engine = db.engine

        def work() -> None:
            with app.app_context():
                dispatcher.run_until_idle(stop=stop.is_set)

        def handed_back() -> list[Any]:
            rows = deliveries(engine, message_id)
            return [r for r in rows if r.lease_until is None and r.status == "queued"]

        def all_claimed() -> bool:
            return all(r.lease_until is not None for r in deliveries(engine, message_id))

        worker = threading.Thread(target=work)
        worker.start()
        try:
            # 100 on the network, the rest claimed and waiting for a slot (not yet
            # claimed, they too would look handed back)
            assert wait_until(lambda: silent.requests == 100 and all_claimed())
            stop.set()
            # at once, while the requests on the network are still unanswered
            assert wait_until(lambda: len(handed_back()) == 50)
            assert worker.is_alive() and silent.requests == 100
            assert all(r.attempts == 0 and r.error is None for r in handed_back())
            silent.close()  # the 100 on the network fail, to be retried
        finally:
            worker.join()
            dispatcher.close()
    rows = deliveries(engine, message_id)
    assert sorted(r.attempts for r in rows) == [0] * 50 + [1] * 100
    assert all(r.lease_until is None and r.status == "queued" for r in rows)


def test_a_stop_asked_for_during_a_claim_sends_none_of_it(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(**sending_config(PUSH_QUEUE="inline"))
    with FakePushService() as service:
        with app.app_context():
            add_browsers(service, 30)
            message_id = due_for_everyone()
            dispatcher = Dispatcher(app, push.models, db.engine, push.settings)
            engine = db.engine

        # SIGTERM while the claim is on its way to the database: the dispatcher
        # looks before the claim (no) and again once it is back (yes).
        def stop() -> bool:
            return any(r.lease_until is not None for r in deliveries(engine, message_id))

        try:
            with app.app_context():
                assert dispatcher.run_until_idle(stop=stop) == 30
        finally:
            dispatcher.close()
        assert service.pushes == []
        rows = deliveries(engine, message_id)
        assert [(r.status, r.attempts, r.lease_until, r.error) for r in rows] == [
            ("queued", 0, None, None)
        ] * 30
        # what `flask push worker` says of the round
        assert dispatcher.written == {"handed_back": 30}


# -- leases ------------------------------------------------------------------------


def test_leases_are_renewed_while_the_pushes_are_in_hand(make_app: Callable[..., Flask]) -> None:
    # A lease shorter than the push service takes to answer: without renewal,
    # another worker would claim the rows and send them again.
    # (a lease of seconds, renewed every third of it: a busy machine's stall of a
    # second must not let the other worker in)
    lease = timedelta(seconds=3)
    app = make_app(**sending_config(PUSH_QUEUE="inline"))
    with FakePushService(delay=7.0) as service:
        with app.app_context():
            add_browsers(service, 3)
            message_id = due_for_everyone()
            first, second = (
                Dispatcher(app, push.models, db.engine, push.settings, lease=lease)
                for _ in range(2)
            )
            engine = db.engine

        worker = round_in_thread(app, first)
        leases: list[Any] = []
        taken = 0
        try:
            with app.app_context():
                # on the network: the service answers each after 7 s
                assert wait_until(
                    lambda: all(r.lease_until for r in deliveries(engine, message_id))
                )
                while worker.is_alive():
                    held = [r.lease_until for r in deliveries(engine, message_id) if r.lease_until]
                    leases.extend(held[:1])
                    taken += second.run_once()
                    time.sleep(0.05)
        finally:
            worker.join()
            first.close()
            second.close()
    assert taken == 0
    assert sorted(p.subscriber_name for p in service.pushes) == ["user-0", "user-1", "user-2"]
    # renewed again and again, each time a lease ahead
    assert len(set(leases)) >= 3 and leases == sorted(leases)
    assert [r.status for r in deliveries(engine, message_id)] == ["sent"] * 3


def one_slot_dispatcher(
    app: Flask, service: FakePushService, browsers: int, stall_after: float = 3600.0
) -> tuple[str, Dispatcher, sa.Engine]:
    """A message due to ``browsers`` of ``service``'s, and a dispatcher with a 1 s
    lease that sends one push at a time to it: one on the network, the others
    waiting for its slot. Returns the message id, the dispatcher and its engine."""
    with app.app_context():
        add_browsers(service, browsers)
        message_id = due_for_everyone()
        dispatcher = Dispatcher(
            app, push.models, db.engine, push.settings, lease=timedelta(seconds=1)
        )
        engine = db.engine
    webpush = dispatcher.providers["webpush"]
    webpush.lane_concurrency = 1
    webpush.stall_after = stall_after
    return message_id, dispatcher, engine


def run_round(app: Flask, dispatcher: Dispatcher) -> None:
    """One round of ``dispatcher`` until nothing is due, in ``app``'s context."""
    with app.app_context():
        dispatcher.run_until_idle()


def round_in_thread(app: Flask, dispatcher: Dispatcher) -> threading.Thread:
    """:func:`run_round` in a thread of its own, started."""
    thread = threading.Thread(target=run_round, args=(app, dispatcher))
    thread.start()
    return thread


async def never_renew(r: Any) -> None:
    """A dispatcher's lease renewals, held up for as long as its round lasts (a
    starved machine, a database that does not answer)."""
    await asyncio.Event().wait()


@pytest.mark.parametrize("stalled", [False, True], ids=["answered", "shed"])
def test_a_round_whose_lease_ran_out_sends_what_it_holds_once(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stalled: bool,
) -> None:
    """A round whose renewals were held up past the lease (a starved machine or
    database) claimed again the rows it still held, and sent each a second time
    beside the first. A worker's log in CI showed the worse face of it: the stalled
    service's waiting pushes were shed, the hand-back forgot a row whose first send
    was still on the network, and that send's outcome then failed the write of the
    whole batch (``KeyError``), so that every push of it went out again. The claim
    now renews what the round holds, sends none of it twice, and says so."""
    from flask_push import dispatch

    monkeypatch.setattr(dispatch, "_RECHECK", 0.1)  # claims again soon
    app = make_app(**sending_config(PUSH_QUEUE="inline"))
    with FakePushService() as service:
        # one on the network, two waiting; shed, if at all, once the round has
        # claimed them again (after the 1 s lease)
        message_id, dispatcher, engine = one_slot_dispatcher(
            app, service, 3, stall_after=2.0 if stalled else 3600.0
        )
        monkeypatch.setattr(dispatcher, "_heartbeat", never_renew)
        claims: list[int] = []
        claim = dispatcher._claim

        def counted(*args: Any) -> list[int]:
            ids = claim(*args)
            claims.append(len(ids))
            return ids

        monkeypatch.setattr(dispatcher, "_claim", counted)
        service.hold()
        worker = round_in_thread(app, dispatcher)
        try:
            # a loaded machine may leave the first past its 1 s lease before it goes
            # out: then it goes on a later claim
            assert service.wait_in_flight(1, timeout=30) == 1
            # the lease runs out under all three, and the round claims them again
            assert wait_until(lambda: claims.count(3) >= 2, 10)
            if stalled:
                assert wait_until(lambda: "are put back" in caplog.text, 10)
            service.release()
            worker.join(30)
            assert not worker.is_alive()
        finally:
            service.release()
            worker.join()
            dispatcher.close()
    names = [p.subscriber_name for p in service.pushes]
    assert len(names) == len(set(names))  # none twice
    rows = deliveries(engine, message_id)
    # each claimed once: the second claim's attempt is taken back
    sent = [(r.status, r.attempts) for r in rows if r.status == "sent"]
    assert sent == [("sent", 1)] * len(names)
    # The two shed (stalled) wait for the service's timeout; or, shed once their
    # lease had run out again, for the next claim (their lease left as it was), which
    # this round may make before it ends. At their slot, they go once the first is
    # answered, unless a loaded machine kept them waiting for it past their lease
    # again (never renewed here): then they too are left to the next claim, and said
    # so. Either way their attempt is taken back: none is lost, nor sent twice.
    unsent = [(r.status, r.attempts) for r in rows if r.status != "sent"]
    assert unsent == [("queued", 0)] * (3 - len(names))
    if not stalled and len(names) < 3:
        assert "waited for a free slot longer than its lease" in caplog.text
    assert (
        "the lease of 3 deliveries in hand ran out before this worker renewed it (it was "
        "held up for more than PUSH_DELIVERY_LEASE, 1 s" in caplog.text
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def all_end(service: FakePushService, workers: list[threading.Thread]) -> None:
    """The push service answers what it held, and every worker's round ends."""
    service.release()
    for worker in workers:
        worker.join(30)
        assert not worker.is_alive()


def left_to_the_second(engine: sa.Engine, message_id: str) -> None:
    """The first of two workers has written what it kept of three pushes (once its
    database thread got to it: a loaded machine's takes a while): the two it never
    sent count the second's attempt alone, and stay the second's, leased."""
    assert wait_until(
        lambda: sorted(r.attempts for r in deliveries(engine, message_id)) == [1, 1, 2], 10
    ), deliveries(engine, message_id)
    time.sleep(0.2)  # a hand-back would be written by now
    rows = deliveries(engine, message_id)
    assert all(r.status == "queued" and r.lease_until is not None for r in rows)
    assert sorted(r.attempts for r in rows) == [1, 1, 2]


@pytest.mark.parametrize("stalled", [False, True], ids=["at its slot", "shed"])
def test_a_push_whose_lease_ran_out_while_it_waited_is_left_to_the_next_claim(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stalled: bool,
) -> None:
    """Two workers: the first's renewals are held up past the lease while one of its
    pushes is on the network and two wait for a slot, and the second claims all
    three, their lease run out, and sends them. The one on the network goes twice,
    which no worker can help once its lease ran out under it; but the first then got
    its slots and sent the other two as well. It now sends no push whose lease may
    have run out while it waited. Nor does it hand such a push back when it sheds
    it as stalled: that cleared the second worker's lease on it."""
    from flask_push import dispatch

    monkeypatch.setattr(dispatch, "_RECHECK", 3600.0)  # the first claims once
    app = make_app(**sending_config(PUSH_QUEUE="inline"))
    with FakePushService() as service:
        # one on the network, two waiting; shed, if at all, once the second has
        # claimed them
        message_id, first, engine = one_slot_dispatcher(
            app, service, 3, stall_after=2.5 if stalled else 3600.0
        )
        with app.app_context():
            second = Dispatcher(
                app, push.models, db.engine, push.settings, lease=timedelta(seconds=1)
            )
        monkeypatch.setattr(first, "_heartbeat", never_renew)
        service.hold()
        workers = [round_in_thread(app, first)]
        try:
            assert service.wait_in_flight(1) == 1
            time.sleep(1.2)  # the lease runs out
            workers.append(round_in_thread(app, second))
            assert service.wait_in_flight(4) == 4  # the second sends all three
            if stalled:
                assert wait_until(lambda: "are put back" in caplog.text, 10)
                left_to_the_second(engine, message_id)
            all_end(service, workers)
        finally:
            service.release()
            for worker in workers:
                worker.join()
            first.close()
            second.close()
    # the one on the network twice, the two that waited once, as their attempts say
    assert sorted(Counter(p.subscriber_name for p in service.pushes).values()) == [1, 1, 2]
    rows = deliveries(engine, message_id)
    assert [(r.status, r.lease_until) for r in rows] == [("sent", None)] * 3
    assert sorted(r.attempts for r in rows) == [1, 1, 2]
    if not stalled:
        said = "waited for a free slot longer than its lease (PUSH_DELIVERY_LEASE, 1 s)"
        assert said in caplog.text


def test_a_hand_back_held_up_by_an_outage_past_the_lease_leaves_the_row_alone(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first worker lost its database with one push on the network and two
    waiting for a slot: it took the two back, to hand them back once the database
    answered again. That came after their lease had run out and a second worker had
    claimed them and was sending them; the hand-back cleared the second's lease on
    them, and a third worker sent them again: every push went twice. The hand-back
    now leaves a row whose lease may have run out to whoever holds it."""
    from flask_push import dispatch

    monkeypatch.setattr(dispatch, "_RECHECK", 3600.0)  # the first claims once
    app = make_app(**sending_config(PUSH_QUEUE="inline"))
    with FakePushService() as service:
        message_id, first, engine = one_slot_dispatcher(app, service, 3)
        with app.app_context():
            second, third = (
                Dispatcher(app, push.models, db.engine, push.settings) for _ in range(2)
            )
        down = threading.Event()  # the first's database does not answer while set
        on_db_thread = first._on_db_thread

        async def unreachable_while_down(work: Any, *args: Any) -> Any:
            if down.is_set():
                raise sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError())
            return await on_db_thread(work, *args)

        monkeypatch.setattr(first, "_on_db_thread", unreachable_while_down)
        service.hold()
        workers = [round_in_thread(app, first)]
        try:
            assert service.wait_in_flight(1) == 1  # one on the network, two waiting
            down.set()
            time.sleep(1.5)  # their lease runs out meanwhile
            workers.append(round_in_thread(app, second))
            assert service.wait_in_flight(4) == 4  # the second sends all three
            down.clear()
            # the first writes what it kept (its retries are 0.1 s, 0.2 s, ... apart)
            left_to_the_second(engine, message_id)
            workers.append(round_in_thread(app, third))  # finds nothing due
            workers[-1].join(30)
            all_end(service, workers)
        finally:
            service.release()
            for worker in workers:
                worker.join()
            for dispatcher in (first, second, third):
                dispatcher.close()
    # the one on the network twice (its lease ran out under it), the others once
    assert sorted(Counter(p.subscriber_name for p in service.pushes).values()) == [1, 1, 2]
    assert [r.status for r in deliveries(engine, message_id)] == ["sent"] * 3


def test_a_push_on_the_network_keeps_its_lease_renewed_after_a_lapse(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a renewal held up past the lease, the next renews the push that is on
    the network (it goes anyway: a lease keeps the other workers off it while it is
    answered), but not the one that waited for its slot, which another worker may
    have taken up meanwhile: that one goes with a claim of its own, once."""
    from flask_push import dispatch

    # the round claims once: a claim of its own rows again would renew them too
    monkeypatch.setattr(dispatch, "_RECHECK", 3600.0)
    app = make_app(**sending_config(PUSH_QUEUE="inline"))
    with FakePushService() as service:
        # one on the network, one waiting for its slot
        message_id, dispatcher, engine = one_slot_dispatcher(app, service, 2)
        renew, renewals = dispatcher._renew, []

        def held_up_once(ids: Any) -> None:
            renewals.append(list(ids))
            if len(renewals) == 1:
                time.sleep(1.5)  # past the lease
            renew(ids)

        monkeypatch.setattr(dispatcher, "_renew", held_up_once)
        service.hold()
        worker = round_in_thread(app, dispatcher)
        try:
            assert service.wait_in_flight(1) == 1
            assert wait_until(lambda: len(renewals) >= 2, 10)

            def renewed() -> list[bool]:
                now = utcnow()
                return sorted(r.lease_until > now for r in deliveries(engine, message_id))

            # the one on the network renewed a lease ahead, again and again; the
            # waiting one's runs out (the late renewal's, which ran after the wait)
            assert wait_until(lambda: renewed() == [False, True], 10), renewed()
            assert [len(ids) for ids in renewals[:2]] == [2, 1]
            service.release()
            worker.join(30)
            assert not worker.is_alive()
            # the waiting one was not sent at its slot, and its attempt was taken back
            assert len(service.pushes) == 1
            rows = deliveries(engine, message_id)
            assert sorted((r.status, r.attempts) for r in rows) == [("queued", 0), ("sent", 1)]
            run_round(app, dispatcher)  # the next round claims it
        finally:
            service.release()
            worker.join()
            dispatcher.close()
    assert sorted(p.subscriber_name for p in service.pushes) == ["user-0", "user-1"]
    rows = deliveries(engine, message_id)
    assert [(r.status, r.attempts) for r in rows] == [("sent", 1)] * 2


#: ``flask push worker`` on a host whose clock is ``PUSH_TEST_SKEW`` seconds off:
#: flask-push reads that clock (the test's own process keeps the true one)
SKEWED_HOST = """
import json, os, sys
from datetime import timedelta
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
import flask_push.cli, flask_push.dispatch, flask_push.models
from flask_push import Push

true_clock = flask_push.models.utcnow
skew = timedelta(seconds=float(os.environ["PUSH_TEST_SKEW"]))
for module in list(sys.modules.values()):
    if module.__name__.startswith("flask_push") and getattr(module, "utcnow", None) is true_clock:
        module.utcnow = lambda: true_clock() + skew

db = SQLAlchemy()
push = Push(db=db)


def create_app():
    app = Flask(__name__)
    app.config.update(json.loads(os.environ["PUSH_TEST_CONFIG"]))
    db.init_app(app)
    push.init_app(app)
    return app
"""


@on_postgres
def test_a_worker_whose_clock_is_behind_keeps_its_leases(
    make_app: Callable[..., Flask], database: dict[str, Any], tmp_path: Path
) -> None:
    """Leases were set by the worker's own clock: one five minutes behind wrote
    leases that had run out by every other worker's, which took its deliveries in
    hand and sent them a second time. Leases go by the database's clock."""
    config = {
        **database,
        **sending_config(),
        "PUSH_DELIVERY_LEASE": 30,
        "PUSH_VAPID_SUBJECT": "mailto:ops@shop.example",
    }
    app = make_app(PUSH_QUEUE="inline", **config)
    config["PUSH_VAPID_PRIVATE_KEY"] = app.config["PUSH_VAPID_PRIVATE_KEY"]
    (tmp_path / "host.py").write_text(SKEWED_HOST)
    env = {
        **os.environ,
        "PUSH_TEST_CONFIG": json.dumps(config),
        "PUSH_TEST_SKEW": "-300",
        "PYTHONPATH": str(tmp_path),
    }
    with FakePushService() as service:
        with app.app_context():
            add_browsers(service, 20)
            # due for a while (a backlog): due by the skewed clock too
            message_id = due_for_everyone()
            make_due(message_id, due_at=utcnow() - timedelta(minutes=10))
            other = Dispatcher(app, push.models, db.engine, push.settings)
            engine = db.engine
        service.hold()
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "host:create_app", "push", "worker",
                 "--interval", "0.1"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            assert service.wait_in_flight(20, timeout=60), log.read_text()
            # another worker, whose clock is right, looks while the 20 are on the wire:
            # it claims none, or sends what it claimed (held too)
            taken: list[int] = []

            def look() -> None:
                with app.app_context():
                    taken.append(other.run_once())

            looking = threading.Thread(target=look)
            looking.start()
            assert wait_until(lambda: not looking.is_alive() or service.in_flight > 20)
            service.release()
            looking.join()
            assert wait_until(
                lambda: [r.status for r in deliveries(engine, message_id)] == ["sent"] * 20
            ), log.read_text()
        finally:
            service.release()
            worker.terminate()
            worker.wait(30)
            other.close()
    assert taken == [0]
    assert Counter(p.subscriber_name for p in service.pushes) == Counter(
        f"user-{i}" for i in range(20)
    )
    [said] = [line for line in log.read_text().splitlines() if "clock" in line]
    assert re.fullmatch(
        r"flask-push: this host's clock is 30\d s behind the database's; this worker "
        r"sets its leases and due times by the database's clock, but other processes "
        r"on this host go by theirs: set the host's clock right \(NTP\)",
        said,
    ), said


@on_postgres
def test_a_clock_that_jumps_after_the_read_moves_no_lease(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's clock steps back an hour (a VM resumed, a wrong NTP server) between
    two reads of the database's: leases and due times stay on the database's."""
    app = make_app(PUSH_QUEUE="inline")  # sending suppressed: recorded as sent
    with app.app_context():
        subscribe("https://push.example/1", browser_keys(), "alice")
        db.session.commit()
        due_for_everyone()
        dispatcher = Dispatcher(app, push.models, db.engine, push.settings)
        try:
            assert dispatcher.run_once() == 1  # its claim says the database's time
            true_clock = db_clock.utcnow
            monkeypatch.setattr(db_clock, "utcnow", lambda: true_clock() - timedelta(hours=1))
            assert abs(dispatcher.clock.now() - true_clock()) < timedelta(seconds=1)
        finally:
            dispatcher.close()


# -- the database goes away ----------------------------------------------------------


@pytest.fixture
def proxy(database: dict[str, Any]) -> Iterator[TcpProxy]:
    """A TCP proxy to the test's PostgreSQL; the app connects through it."""
    url = sa.engine.make_url(database["SQLALCHEMY_DATABASE_URI"])
    with TcpProxy((url.host or "127.0.0.1", url.port or 5432)) as tcp:
        yield tcp


def through(database: dict[str, Any], proxy: TcpProxy) -> dict[str, Any]:
    url = sa.engine.make_url(database["SQLALCHEMY_DATABASE_URI"])
    proxied = url.set(host="127.0.0.1", port=proxy.port)
    return {"SQLALCHEMY_DATABASE_URI": proxied.render_as_string(hide_password=False)}


@pytest.fixture
def direct(database: dict[str, Any]) -> Iterator[sa.Engine]:
    """The test's own view of the database, not through the proxy."""
    engine = sa.create_engine(
        database["SQLALCHEMY_DATABASE_URI"], **database.get("SQLALCHEMY_ENGINE_OPTIONS", {})
    )
    yield engine
    engine.dispose()


def said(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flask_push" and r.levelno == level]


@on_postgres
def test_outcomes_are_kept_while_the_database_is_unreachable(
    database: dict[str, Any],
    proxy: TcpProxy,
    direct: sa.Engine,
    make_app: Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    targets = 300
    app = make_app(**sending_config(PUSH_QUEUE="thread"), **through(database, proxy))
    with FakePushService(delay=0.3) as service:
        with app.app_context():
            add_browsers(service, targets)
        with caplog.at_level(logging.INFO, logger="flask_push"), app.app_context():
            message_id = push.send(everyone=True, title="Flash sale").id
            db.session.remove()  # as the end of a request does: no connection kept
            assert wait_until(lambda: len(service.pushes) >= 100)
            proxy.cut()  # a restart: connections dropped, new ones refused
            assert wait_until(lambda: bool(said(caplog, logging.WARNING)))
            time.sleep(2)  # while it lasts, more answers come in and are kept
            proxy.restore()

            def all_sent() -> bool:
                return [r.status for r in deliveries(direct, message_id)] == ["sent"] * targets

            assert wait_until(all_sent), said(caplog, logging.WARNING)
            push.shutdown()
        pushes = service.pushes
    # nobody got it twice: outcomes on hand were written, unsent claims released
    assert Counter(p.subscriber_name for p in pushes) == Counter(
        f"user-{i}" for i in range(targets)
    )
    # once (a loaded machine may add a push service's stall, 0.3 s answers taking 2)
    [warning] = [m for m in said(caplog, logging.WARNING) if "database is unreachable" in m]
    assert warning.startswith("flask-push: the database is unreachable (")
    kept = re.search(r"; (\d+) outcomes are kept and will be written when it is back", warning)
    assert kept and int(kept.group(1)) > 0, warning
    # at the outage's level: `flask push worker` shows WARNINGs, not INFO, by default
    [back] = [m for m in said(caplog, logging.WARNING) if "database is back" in m]
    assert re.fullmatch(
        r"flask-push: the database is back after [\d.]+ s; \d+ outcomes were written and "
        r"\d+ claimed deliveries that were not sent were released",
        back,
    )
    assert not said(caplog, logging.ERROR)
    assert not [r for r in caplog.records if r.exc_info]  # a sentence, not a traceback


@on_postgres
def test_worker_once_fails_when_it_gave_up_on_outcomes(
    database: dict[str, Any],
    proxy: TcpProxy,
    direct: sa.Engine,
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a cron job's `flask push worker --once` must not exit 0 when what it sent is
    # to be sent again
    # A look for due inbox items at every turn, so one fails in the outage, as a
    # round that lasts over a second makes happen: the run still says what it did.
    monkeypatch.setattr("flask_push.dispatch._INBOX_CHECK_EVERY", 0.0)
    app = make_app(**sending_config(PUSH_QUEUE="inline"), **through(database, proxy))
    with FakePushService() as service:
        with app.app_context():
            add_browsers(service, 3)
            push.send(everyone=True, title="x", send_at=utcnow() + timedelta(hours=1))
            dispatcher = push.state.get_inline().dispatcher  # the one the command uses
            dispatcher.outage_patience = 0.5
            dispatcher.lease = timedelta(seconds=1)
        with direct.begin() as conn:
            conn.execute(sa.update(push.models.Delivery).values(due_at=utcnow()))
        service.hold()

        def cut_once_sending() -> None:
            service.wait_in_flight(3, timeout=30)
            proxy.cut()
            service.release()

        cutter = threading.Thread(target=cut_once_sending)
        cutter.start()
        try:
            result = app.test_cli_runner().invoke(args=["push", "worker", "--once"])
        finally:
            cutter.join()
            proxy.restore()
            with app.app_context():
                db.engine.dispose()
    assert result.exit_code == 1, result.output
    assert re.search(r"Z handled 3 deliveries", result.output), result.output
    assert "Error: the database went away during the run; the deliveries whose " in result.output


@on_postgres
def test_a_worker_gives_up_on_its_outcomes_after_a_while_and_says_so(
    database: dict[str, Any],
    proxy: TcpProxy,
    direct: sa.Engine,
    make_app: Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(**sending_config(PUSH_QUEUE="inline"), **through(database, proxy))
    with FakePushService() as service:
        with app.app_context():
            add_browsers(service, 5)
            message_id = push.send(
                everyone=True, title="x", send_at=utcnow() + timedelta(hours=1)
            ).id
            dispatcher = Dispatcher(
                app,
                push.models,
                db.engine,
                push.settings,
                lease=timedelta(seconds=1),
                outage_patience=0.5,
            )
        with direct.begin() as conn:
            conn.execute(sa.update(push.models.Delivery).values(due_at=utcnow()))

        # The pushes wait for their answers while the database goes away, so their
        # outcomes can only be written after it did.
        service.hold()

        def cut_once_sending() -> None:
            service.wait_in_flight(5, timeout=30)
            proxy.cut()
            service.release()

        cutter = threading.Thread(target=cut_once_sending)
        cutter.start()
        with caplog.at_level(logging.INFO, logger="flask_push"), app.app_context():
            try:
                assert dispatcher.run_until_idle() == 5
            finally:
                cutter.join()
                proxy.restore()
                dispatcher.close()
                # the connections the cut killed are dropped, not met by the teardown
                db.engine.dispose()
    [error] = said(caplog, logging.ERROR)
    assert re.fullmatch(
        r"flask-push: gave up writing 5 outcomes after \d+ s: the database is still "
        r"unreachable; their deliveries stay queued and are sent again once their lease "
        r"runs out, so some may arrive twice",
        error,
    )
    # the rows fall back to their lease (a second, since nothing renews it now)
    rows = deliveries(direct, message_id)
    assert [(r.status, r.attempts) for r in rows] == [("queued", 1)] * 5
    assert all(r.lease_until is not None for r in rows)
