"""The `flask push` commands: vapid-keys, send, worker, prune and stats."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from test_sigkill import start_worker

from flask_push import cli, scheduled_inbox, signals
from flask_push.database import refused_writes
from flask_push.models import DEAD, utcnow
from flask_push.queues import ThreadWorker
from flask_push.testing import FakePushService

from conftest import (
    add_subscription,
    as_user,
    bare_app,
    db,
    make_due,
    push,
    read_only,
    subscribe,
    wait_until,
)


def test_vapid_keys_prints_pasteable_config(app, make_app):
    result = app.test_cli_runner().invoke(
        args=["push", "vapid-keys", "--subject", "mailto:ops@shop.example"]
    )
    assert result.exit_code == 0, result.output
    lines = dict(re.findall(r'^(PUSH_\w+) = "([^"]+)"$', result.output, re.M))
    assert set(lines) == {"PUSH_VAPID_PRIVATE_KEY", "PUSH_VAPID_PUBLIC_KEY", "PUSH_VAPID_SUBJECT"}
    configured = make_app(**lines)  # the printed lines are a valid configuration
    assert configured.extensions["push"].settings.vapid_public_key == lines["PUSH_VAPID_PUBLIC_KEY"]


def test_vapid_keys_are_fresh_each_time(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["push", "vapid-keys"])
    second = runner.invoke(args=["push", "vapid-keys"]).stdout
    assert first.stdout != second
    assert 'PUSH_VAPID_SUBJECT = "mailto:you@example.com"' in first.stdout
    # said beside the file being written, not in it
    assert "placeholder 'mailto:you@example.com'" in first.stderr
    assert "placeholder" not in first.stdout
    # this app has a key: a new one would cut off its subscribed browsers
    assert first.stderr.startswith("Warning: this app has a VAPID key already")


def test_vapid_keys_writes_its_file_for_its_owner_and_never_over_a_key(make_app, tmp_path):
    runner = make_app(PUSH_VAPID_PRIVATE_KEY=None, PUSH_VAPID_SUBJECT=None).test_cli_runner()
    keys = tmp_path / "push_keys.py"
    args = ["push", "vapid-keys", "--subject", "mailto:ops@shop.example", "--output", str(keys)]
    made = runner.invoke(args=args)
    assert made.exit_code == 0, made.output
    assert made.stdout == f"Wrote the VAPID keys to {keys}; keep it out of version control.\n"
    # not beside the app, whose from_pyfile("push_keys.py") would not find it: said
    assert made.stderr == (
        "Note: the app reads a config file named without a folder (app.config.from_pyfile) "
        f"from {Path(runner.app.config.root_path).resolve()}.\n"
    )
    assert keys.stat().st_mode & 0o777 == 0o600  # it holds the private key
    written = keys.read_text(encoding="utf-8")
    loaded: dict[str, object] = {}
    exec(written, {}, loaded)  # noqa: S102 - as app.config.from_pyfile reads it
    assert make_app(**loaded).extensions["push"].settings.vapid_public_key
    # a second run would cut off every subscribed browser: refused, the file kept
    again = runner.invoke(args=args)
    assert again.exit_code == 1 and "holds a VAPID key already" in again.output
    assert keys.read_text(encoding="utf-8") == written
    # an empty file left from before is made its owner's alone too
    empty = tmp_path / "empty.py"
    empty.touch(mode=0o644)
    assert runner.invoke(args=[*args[:-1], str(empty)]).exit_code == 0
    assert empty.stat().st_mode & 0o777 == 0o600
    # an app's config is not lost to them, nor a file a link points at
    config = tmp_path / "config.py"
    config.write_text("SECRET_KEY = 'keep me'\n", encoding="utf-8")
    kept = runner.invoke(args=[*args[:-1], str(config)])
    assert kept.exit_code == 1 and "holds other lines" in kept.output
    assert config.read_text(encoding="utf-8") == "SECRET_KEY = 'keep me'\n"
    link = tmp_path / "link.py"
    link.symlink_to(tmp_path / "elsewhere.py")
    linked = runner.invoke(args=[*args[:-1], str(link)])
    assert linked.exit_code == 1 and "not a plain file" in linked.output
    assert not (tmp_path / "elsewhere.py").exists()
    nowhere = runner.invoke(args=[*args[:-1], str(tmp_path / "missing" / "keys.py")])
    assert nowhere.exit_code == 1 and "could not be written" in nowhere.output


def test_vapid_keys_for_an_app_without_one_says_nothing_of_it(make_app):
    result = make_app(PUSH_VAPID_PRIVATE_KEY=None, PUSH_VAPID_SUBJECT=None).test_cli_runner()
    said = result.invoke(args=["push", "vapid-keys", "--subject", "mailto:ops@shop.example"])
    assert said.exit_code == 0 and said.stderr == "", said.stderr


def test_vapid_keys_checks_the_subject_and_prints_it_as_a_string(app):
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["push", "vapid-keys", "--subject", "notauri"])
    assert refused.exit_code == 2 and "must be a contact URI" in refused.output
    # a quote in it once ended the string, and the rest ran as Python where it was pasted
    odd = 'mailto:a@b.example"; import os #'
    result = runner.invoke(args=["push", "vapid-keys", "--subject", odd])
    assert result.exit_code == 0, result.output
    pasted: dict[str, object] = {}
    exec(result.stdout, {}, pasted)  # noqa: S102 - what a user's config file would run
    assert pasted["PUSH_VAPID_SUBJECT"] == odd
    assert set(pasted) == {"PUSH_VAPID_PRIVATE_KEY", "PUSH_VAPID_PUBLIC_KEY", "PUSH_VAPID_SUBJECT"}


# -- send, worker, prune, stats ----------------------------------------------------


def add_installation(user_id: str, device_type: str = "android", **values: Any) -> str:
    ins = push.models.Installation(
        app_id="shop",
        device_token=uuid.uuid4().hex,
        device_type=device_type,
        user_id=user_id,
        subscriptions=[],
        **values,
    )
    db.session.add(ins)
    db.session.commit()
    return str(ins.id)


def statuses(message_id: str) -> list[str]:
    d = push.models.Delivery
    query = sa.select(d.status).where(d.message_id == message_id).order_by(d.id)
    return list(db.session.scalars(query))


def count(model: Any) -> int:
    return int(db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


def test_send_delivers_and_prints_the_message(app: Flask) -> None:
    with app.app_context():
        for user in ("alice", "alice", "bob", "carol"):
            add_subscription(user)
    result = app.test_cli_runner().invoke(
        args=[
            "push", "send", "--user", "alice", "--user", "bob", "--title", "Sale",
            "--body", "Today only", "--url", "https://shop.example/sale", "--ttl", "600",
            "--urgency", "high",
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = re.search(r"^Message (msg_\w+): queued, 3 recipients$", result.output, re.M)
    assert found, result.output
    # under TESTING nothing goes out, and the command says so
    assert "Deliveries: recorded 3" in result.output
    assert result.stderr.startswith(
        "Warning: nothing went out: sending is suppressed (PUSH_SUPPRESS_SEND is on, as "
        "under TESTING): pushes are recorded, not sent. `flask push explain msg_"
    )
    with app.app_context():
        message = db.session.get(push.models.Message, found.group(1))
        assert message.audience == {"users": ["alice", "bob"]}
        assert message.notification["title"] == "Sale"
        assert message.notification["ttl"] == 600
        assert statuses(message.id) == ["sent"] * 3


@pytest.mark.parametrize(
    ("args", "says"),
    [
        # in the command's words: its options, not push.send's fields
        (["--title", "Sale", "--url", "javascript:alert(1)"], "Error: --url: must be a path"),
        (["--title", ""], "Error: --title: must not be empty"),
        (["--title", "   "], "Error: --title: must not be blank"),
        (["--body", "no title"], "Missing option '--title'"),
        (["--title", "x", "--ttl", "-5"], "Error: --ttl: must be a whole number"),
        (["--title", "x", "--urgency", "now"], "urgency"),
    ],
)
def test_send_refuses_bad_values_without_writing(app: Flask, args: list[str], says: str) -> None:
    with app.app_context():
        add_subscription("alice")
    result = app.test_cli_runner().invoke(args=["push", "send", "--user", "alice", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert "Error:" in result.output and says in result.output, result.output
    with app.app_context():
        assert count(push.models.Message) == 0
        assert count(push.models.Delivery) == 0


def sending_app(make_app: Any, **config: Any) -> Flask:
    """The default thread queue, really sending to the fake push service."""
    config = {
        "PUSH_QUEUE": "thread",
        "SECRET_KEY": "test-secret",  # an app that sends signs its click tokens
        "PUSH_SUPPRESS_SEND": False,
        "PUSH_ENDPOINT_HOSTS": ["127.0.0.1"],
        "PUSH_ALLOW_HTTP_ENDPOINTS": True,
        **config,
    }
    app: Flask = make_app(**config)
    return app


def test_send_on_the_thread_queue_delivers_before_exiting(
    make_app: Any, push_fake_webpush: FakePushService
) -> None:
    app = sending_app(make_app)
    # The worker thread, woken by the send, may claim rows before the command
    # stops it: more than one push service's 100 slots, each answer slow, so
    # that some it claimed wait for a slot and are handed back to the command.
    push_fake_webpush.delay = 0.2
    with app.app_context():
        browsers = [push_fake_webpush.subscribe() for _ in range(150)]
        for browser in browsers:
            subscribe(browser, "alice")
    result = app.test_cli_runner().invoke(args=["push", "send", "--user", "alice", "--title", "Hi"])
    assert result.exit_code == 0, result.output
    assert "Deliveries: sent 150" in result.output
    # each once
    assert sorted(p.subscriber_name for p in push_fake_webpush.pushes) == sorted(
        b.name for b in browsers
    )
    with app.app_context():
        assert app.extensions["push"].worker is None  # shut down


def test_send_waits_for_deliveries_another_worker_holds(
    make_app: Any, push_fake_webpush: FakePushService
) -> None:
    """A worker of another process (a Celery worker woken by the send) may claim
    the message's deliveries first: the command waits for their outcomes instead
    of saying that nothing was delivered."""
    send_while_another_worker_holds(make_app, push_fake_webpush, "leased")


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_send_waits_for_a_claim_under_way_elsewhere(
    make_app: Any, push_fake_webpush: FakePushService
) -> None:
    """The other worker's claim has locked the rows and not committed yet, so the
    command's own claim skips them (FOR UPDATE SKIP LOCKED), and they look unleased.
    (SQLite locks the whole database, not rows.)"""
    send_while_another_worker_holds(make_app, push_fake_webpush, "being_claimed")


def send_while_another_worker_holds(
    make_app: Any, push_fake_webpush: FakePushService, held: str
) -> None:
    app = sending_app(make_app, PUSH_QUEUE="inline")
    with app.app_context():
        for _ in range(3):
            subscribe(push_fake_webpush.subscribe(), "alice")
    d = push.models.Delivery
    locked = threading.Event()

    def other_worker(sender: Any, message: Any, **extra: Any) -> None:
        def deliver() -> None:
            with app.app_context(), db.engine.begin() as connection:
                mine = sa.update(d).where(d.message_id == message.id)
                if held == "leased":  # claimed, as a worker claims, and committed
                    with db.engine.begin() as claim:
                        claim.execute(mine.values(lease_until=utcnow() + timedelta(seconds=30)))
                else:
                    connection.execute(
                        sa.select(d.id).where(d.message_id == message.id).with_for_update()
                    )
                locked.set()
                time.sleep(0.3)
                connection.execute(mine.values(status="sent", reason="accepted", lease_until=None))

        threading.Thread(target=deliver).start()
        assert locked.wait(10)

    with signals.message_queued.connected_to(other_worker):
        result = app.test_cli_runner().invoke(
            args=["push", "send", "--user", "alice", "--title", "Hi"]
        )
    assert result.exit_code == 0, result.output
    assert "Deliveries: sent 3" in result.output
    assert push_fake_webpush.pushes == []  # the other worker sent them, not the command


def test_send_no_wait_returns_once_queued(
    make_app: Any, push_fake_webpush: FakePushService
) -> None:
    app = sending_app(make_app)
    with app.app_context():
        subscribe(push_fake_webpush.subscribe(), "alice")
    result = app.test_cli_runner().invoke(
        args=["push", "send", "--user", "alice", "--title", "Hi", "--no-wait"]
    )
    assert result.exit_code == 0, result.output
    found = re.search(r"^Message (msg_\w+): queued, 1 recipient$", result.output, re.M)
    assert found, result.output
    with app.app_context():
        # queued for the workers, or sent by the batch the thread worker had taken
        assert statuses(found.group(1))[0] in ("queued", "sent")
        assert app.extensions["push"].worker is None


def test_send_no_wait_on_the_thread_queue_says_who_sends_what_it_left(
    make_app: Any, push_fake_webpush: FakePushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the app's worker thread does not get to it before the command ends
    monkeypatch.setattr(ThreadWorker, "start", lambda worker: worker)
    app = sending_app(make_app)
    with app.app_context():
        subscribe(push_fake_webpush.subscribe(), "alice")
    result = app.test_cli_runner().invoke(
        args=["push", "send", "--user", "alice", "--title", "Hi", "--no-wait"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1:] == [
        "Deliveries: queued 1",
        "1 delivery stays queued: PUSH_QUEUE is 'thread', which sends only while a process "
        "of the app runs it, and this command has ended. `flask push worker` delivers it, "
        "as do the app's web processes once they serve a request.",
    ], result.output
    assert push_fake_webpush.pushes == []


def test_a_send_on_the_thread_queue_says_who_sends_the_retries_it_leaves(
    make_app: Any, push_fake_webpush: FakePushService
) -> None:
    """As for what --no-wait leaves: once the command has ended, nothing of the
    thread queue sends the retry its push service asked for."""
    app = sending_app(make_app)
    with app.app_context():
        browser = push_fake_webpush.subscribe()
        subscribe(browser, "alice")
    push_fake_webpush.fail_next(503, subscriber=browser, retry_after=120)
    result = app.test_cli_runner().invoke(args=["push", "send", "--user", "alice", "--title", "x"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[1] == "Deliveries: queued 1" and "will retry (1): unavailable" in lines[2]
    assert lines[3:] == [
        "1 delivery stays queued: PUSH_QUEUE is 'thread', which sends only while a process "
        "of the app runs it, and this command has ended. `flask push worker` delivers it, "
        "as do the app's web processes once they serve a request.",
        "Error: Nothing was delivered; the reasons are above.",
    ], result.output


def test_send_takes_a_topic_or_everyone(app: Flask) -> None:
    with app.app_context():
        add_subscription("alice", topics=["offers"])
        add_subscription("bob")
    runner = app.test_cli_runner()
    offers = runner.invoke(args=["push", "send", "--topic", "offers", "--title", "Sale"])
    assert offers.exit_code == 0, offers.output
    assert ", 1 recipient\n" in offers.output and "Deliveries: recorded 1" in offers.output
    everyone = runner.invoke(args=["push", "send", "--everyone", "--title", "Open Sunday"])
    assert everyone.exit_code == 0, everyone.output
    assert ", 2 recipients\n" in everyone.output and "Deliveries: recorded 2" in everyone.output


@pytest.mark.parametrize(
    "audience", [[], ["--user", "alice", "--everyone"], ["--topic", "a", "--everyone"]]
)
def test_send_needs_exactly_one_audience(app: Flask, audience: list[str]) -> None:
    result = app.test_cli_runner().invoke(args=["push", "send", *audience, "--title", "x"])
    assert result.exit_code == 2, result.output
    assert "give exactly one audience: --user (repeatable), --topic or --everyone" in result.output
    with app.app_context():
        assert count(push.models.Message) == 0


def test_send_prints_each_failure_and_fails_when_nothing_arrived(
    make_app: Any, push_fake_webpush: FakePushService
) -> None:
    app = sending_app(make_app, PUSH_QUEUE="inline")
    with app.app_context():
        gone, refused = push_fake_webpush.subscribe(), push_fake_webpush.subscribe()
        subscribe(gone, "alice")
        subscribe(refused, "alice")
    gone.expire()
    push_fake_webpush.fail_next(400, subscriber=refused)
    result = app.test_cli_runner().invoke(args=["push", "send", "--user", "alice", "--title", "Hi"])
    assert result.exit_code == 1, result.output
    assert "Deliveries: failed 1, gone 1" in result.output
    lines = result.output.splitlines()
    # each cause with its machine reason and the sentence `flask push explain` says
    message_id = lines[0].split()[1].rstrip(":")
    with app.app_context():
        said = {entry["status"]: entry for entry in push.explain(message_id)}
    assert f"  failed (1): rejected: {said['failed']['detail']}" in lines, result.output
    assert f"  gone (1): unsubscribed: {said['gone']['detail']}" in lines
    assert "refused it at " in said["failed"]["detail"] and "400 Bad Request" in result.output
    assert lines[-1] == "Error: Nothing was delivered; the reasons are above."


@pytest.mark.parametrize("wait", [[], ["--no-wait"]], ids=["wait", "no-wait"])
def test_send_to_nobody_fails_and_says_why(app: Flask, wait: list[str]) -> None:
    args = ["push", "send", "--user", "nobody", "--title", "x", *wait]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 1, result.output
    # the message's status as the API says it: done, with nothing to send
    assert re.search(r"^Message msg_\w+: done, 0 recipients$", result.output, re.M)
    assert "Nothing was delivered: no active browser or device matches" in result.output


@pytest.mark.parametrize("wait", [[], ["--no-wait"]], ids=["wait", "no-wait"])
def test_send_to_devices_no_provider_reaches_fails(
    app: Flask, wait: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Failed as they were queued (no FCM here): nothing goes later either, so
    --no-wait fails too, as a cron job must see."""
    with app.app_context():
        add_installation("alice")
    result = app.test_cli_runner().invoke(
        args=["push", "send", "--user", "alice", "--title", "x", *wait]
    )
    assert result.exit_code == 1, result.output
    assert "Deliveries: failed 1" in result.output
    assert "  failed (1): no_provider: No fcm provider is configured" in result.output
    assert result.output.splitlines()[-1].startswith("Error: Nothing ")
    # and the log says it, as it says every other failure
    [line] = [r for r in caplog.records if "failed as queued" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert re.fullmatch(
        r"flask-push: msg_\w+: 1 fcm delivery failed as queued: no fcm provider is "
        r"configured, so this target cannot be reached; set PUSH_FCM_CREDENTIALS",
        line.getMessage(),
    ), line.getMessage()


def test_send_says_which_deliveries_wait_for_a_retry(
    make_app: Any, push_fake_webpush: FakePushService
) -> None:
    app = sending_app(make_app, PUSH_QUEUE="inline")
    with app.app_context():
        busy, fine = push_fake_webpush.subscribe(), push_fake_webpush.subscribe()
        subscribe(busy, "alice")
        subscribe(fine, "alice")
    push_fake_webpush.fail_next(503, subscriber=busy, retry_after=120)
    result = app.test_cli_runner().invoke(args=["push", "send", "--user", "alice", "--title", "Hi"])
    assert result.exit_code == 0, result.output  # one arrived
    assert "Deliveries: queued 1, sent 1" in result.output
    assert "  will retry (1): unavailable: The browser's push service answered 503 " in (
        result.output
    )
    assert "no sooner than its Retry-After of 120 s asked" in result.output


@pytest.mark.parametrize("command", [["stats"], ["send", "--user", "a", "--title", "x"]])
def test_a_database_without_the_tables_is_one_line(make_app: Any, command: list[str]) -> None:
    app = make_app()
    with app.app_context():
        db.drop_all()
    result = app.test_cli_runner().invoke(args=["push", *command])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # no traceback
    [line] = result.output.splitlines()
    assert line.startswith("Error: flask-push's tables are missing from this database (")
    assert "db.create_all()" in line and "flask db upgrade heads" in line


def test_tables_an_older_flask_push_made_say_to_upgrade_them(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A host that upgraded flask-push and not its tables: the command, and the API's
    log, name the missing column and the migration to run, not an outage or a
    traceback."""
    app = make_app()
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE push_deliveries DROP COLUMN user_id"))
        add_subscription("alice")
    result = app.test_cli_runner().invoke(args=["push", "send", "--user", "alice", "--title", "x"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    [line] = result.output.splitlines()
    assert line == (
        "Error: flask-push's tables in this database are older than this flask-push "
        "(push_deliveries.user_id missing). Upgrade them with the shipped Alembic "
        "migrations: `flask db upgrade heads` (README: Database migrations)."
    )
    answer = app.test_client().post(
        "/push/messages",
        json={"audience": {"users": ["alice"]}, "notification": {"title": "x"}},
        headers=as_user("root", admin=True),
    )
    assert answer.status_code == 500
    assert answer.get_json()["error"]["code"] == "database_not_set_up"
    assert any("push_deliveries.user_id missing" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "command",
    [
        ["send", "--user", "nobody", "--title", "x"],
        ["stats"],
        ["prune"],
        ["explain", "msg_1"],
        ["worker", "--once"],
    ],
    ids=["send", "stats", "prune", "explain", "worker-once"],
)
def test_commands_on_older_tables_say_so_before_doing_anything(
    make_app: Any, command: list[str]
) -> None:
    """Tables an older flask-push made: each command says to upgrade them before it
    writes or reads anything. `send` to nobody wrote its message, then failed; `stats`
    and `prune` went ahead as if the tables were fine; a cron job's `worker --once`
    said "Nothing was due." and exited 0 while the app could not send."""
    app = make_app()
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE push_deliveries DROP COLUMN user_id"))
    result = app.test_cli_runner().invoke(args=["push", *command])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.splitlines() == [
        "Error: flask-push's tables in this database are older than this flask-push "
        "(push_deliveries.user_id missing). Upgrade them with the shipped Alembic "
        "migrations: `flask db upgrade heads` (README: Database migrations)."
    ]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Message)) == 0


def test_workers_without_the_tables_say_what_to_run_once(
    make_app: Any, database: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker started before the tables were made waits for them, saying in one
    line what to run, not a traceback every round: the app's own worker thread, and
    `flask push worker`."""
    app = make_app(PUSH_QUEUE="thread")
    with app.app_context():
        db.drop_all()
        push.state.get_worker()
        wait_until(lambda: any("nothing is delivered" in r.getMessage() for r in caplog.records))
        time.sleep(2.5)  # two more rounds, each failing the same way
        push.shutdown()
    said = [r for r in caplog.records if r.name == "flask_push" and r.levelno >= logging.WARNING]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].exc_info is None
    assert "flask-push's tables are missing from this database" in said[0].getMessage()
    assert "flask db upgrade heads" in said[0].getMessage()

    # the same database, without its tables
    config = {**database, "TESTING": True, "PUSH_SUPPRESS_SEND": False}
    worker = start_worker(tmp_path, config, "worker", "--interval", "0.2")
    try:
        log = tmp_path / "worker.log"
        wait_until(lambda: "nothing is delivered" in log.read_text())
        time.sleep(1.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    lines = log.read_text().splitlines()
    [line] = [line for line in lines if "tables are missing" in line]
    assert line.startswith(
        "flask-push: nothing is delivered until then: flask-push's tables are missing from "
        "this database (push_"
    ) and line.endswith("`flask db upgrade heads` (README: Database migrations)."), lines
    assert not [line for line in lines if "Traceback" in line or "unreachable" in line], lines


def test_worker_once_delivers_due_rows(app: Flask) -> None:
    with app.app_context():
        for user in ("alice", "bob"):
            add_subscription(user)
        later = utcnow() + timedelta(hours=1)
        message_id = push.send(users=["alice", "bob"], title="x", send_at=later, inbox=True).id
        assert statuses(message_id) == ["queued", "queued"]
        assert push.search("alice").total_count == 0
        make_due(message_id)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["push", "worker", "--once"])
    assert result.exit_code == 0, result.output
    # under TESTING: recorded, not sent, and said before anything is taken
    assert re.fullmatch(
        r"\S+Z handled 2 deliveries: recorded 2\n\S+Z wrote 2 inbox items of scheduled messages\n",
        result.stdout,
    ), result.output
    assert result.stderr == (
        "Warning: this worker marks each due delivery sent without sending it: sending is "
        "suppressed (PUSH_SUPPRESS_SEND is on, as under TESTING): pushes are recorded, not "
        "sent. Set PUSH_SUPPRESS_SEND = False in its config to send.\n"
    )
    with app.app_context():
        assert statuses(message_id) == ["sent", "sent"]
        # its inbox items too, before the command ends
        assert [push.search(user).total_count for user in ("alice", "bob")] == [1, 1]
        # a user with no browser: only the inbox item is due, and said
        only_inbox = push.send(users=["carol"], title="x", send_at=later, inbox=True).id
        make_due(only_inbox)
    result = runner.invoke(args=["push", "worker", "--once"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"\S+Z wrote 1 inbox item of scheduled messages\n", result.stdout)
    # one delivery, said as one
    with app.app_context():
        make_due(push.send(users=["alice"], title="x", send_at=later).id)
    one = runner.invoke(args=["push", "worker", "--once"])
    assert re.fullmatch(r"\S+Z handled 1 delivery: recorded 1\n", one.stdout), one.output
    # nothing due: quiet
    again = runner.invoke(args=["push", "worker", "--once"])
    assert again.exit_code == 0 and again.stdout == "Nothing was due.\n"


def test_worker_once_says_what_it_handled_when_the_inbox_items_fail(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inbox items are written on a thread beside the round: their failure is told
    after what the round did, not as if nothing had been done."""
    with app.app_context():
        add_subscription("alice")
        later = utcnow() + timedelta(hours=1)
        make_due(push.send(users=["alice"], title="x", send_at=later, inbox=True).id)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the inbox table is locked")

    monkeypatch.setattr(scheduled_inbox, "write_due", refused)
    result = app.test_cli_runner().invoke(args=["push", "worker", "--once"])
    assert result.exit_code == 1, result.output
    assert re.fullmatch(r"\S+Z handled 1 delivery: recorded 1\n", result.stdout), result.output
    assert result.stderr.endswith(
        "Error: the inbox items of scheduled messages that came due could not be written "
        "(the inbox table is locked); they stay held for the next run\n"
    ), result.stderr
    monkeypatch.undo()  # the next run writes them
    again = app.test_cli_runner().invoke(args=["push", "worker", "--once"])
    assert again.exit_code == 0 and re.fullmatch(
        r"\S+Z wrote 1 inbox item of scheduled messages\n", again.stdout
    ), again.output


def test_worker_once_says_what_became_of_each_delivery(make_app: Any, push_fakes: Any) -> None:
    service = push_fakes.webpush()
    app = sending_app(make_app, PUSH_QUEUE="inline")  # no worker thread of its own
    with app.app_context():
        fine, gone, busy = service.subscribe(), service.subscribe(), service.subscribe()
        for subscriber in (fine, gone, busy):
            subscribe(subscriber, "alice")
        later = utcnow() + timedelta(hours=1)
        push.send(users=["alice"], title="x", send_at=later)  # the worker's, not send's
        d = push.models.Delivery
        db.session.execute(sa.update(d).values(due_at=utcnow()))
        db.session.commit()
    gone.expire()
    service.fail_next(503, subscriber=busy, retry_after=600)
    result = app.test_cli_runner().invoke(args=["push", "worker", "--once"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"\S+Z handled 3 deliveries: sent 1, to retry 1, gone 1\n", result.output
    ), result.output


def test_worker_loops_until_asked_to_stop(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    rounds: list[int] = []
    real = cli._round

    def counting(push_: Any, stop: Any) -> int:
        rounds.append(1)
        if len(rounds) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: stop after this round
        return real(push_, stop)

    monkeypatch.setattr(cli, "_round", counting)
    previous = signal.getsignal(signal.SIGTERM)
    result = app.test_cli_runner().invoke(args=["push", "worker", "--interval", "0.1"])
    assert result.exit_code == 0, result.output
    assert len(rounds) == 3
    assert signal.getsignal(signal.SIGTERM) is previous  # put back


def test_worker_says_what_its_config_makes_it_do_unseen(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker is a process of its own, with its own config: one without the app's
    providers fails what it claims, and one on memory:// publishes to no browser.
    Said at start, not once per delivery (or never)."""
    app = make_app(PUSH_VAPID_PRIVATE_KEY=None, PUSH_VAPID_SUBJECT=None, PUSH_SUPPRESS_SEND=False)

    def one_round(push_: Any, stop: threading.Event) -> tuple[int, Any]:
        stop.set()
        return 0, {}

    monkeypatch.setattr(cli, "_round", one_round)
    result = app.test_cli_runner().invoke(args=["push", "worker", "--interval", "0.1"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "Warning: no provider is configured in this worker's config: each delivery it "
        "claims fails (no_provider) unless a provider is stored for its app (POST "
        "/providers). Give the worker the web app's PUSH_* settings.",
        "Warning: PUSH_BACKPLANE_URL is memory://, so the live events this worker publishes "
        "(the inbox items of scheduled messages it writes) reach no browser: set it to the "
        "Redis the web processes use.",
    ]


def test_worker_says_its_metrics_reach_no_scrape_without_the_multiprocess_dir(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker serves no /metrics: without PROMETHEUS_MULTIPROC_DIR what it counts
    stays in its own memory, and the scrapes of the web processes never show it."""
    pytest.importorskip("prometheus_client")

    def one_round(push_: Any, stop: threading.Event) -> tuple[int, Any]:
        stop.set()
        return 0, {}

    monkeypatch.setattr(cli, "_round", one_round)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    app = make_app(PUSH_METRICS=True, PUSH_SUPPRESS_SEND=False, SECRET_KEY="s")
    result = app.test_cli_runner().invoke(args=["push", "worker", "--once"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "Warning: PUSH_METRICS is on but PROMETHEUS_MULTIPROC_DIR is not set, so what this "
        "worker counts (flask_push_deliveries_total, ...) reaches no scrape: a worker serves "
        "none. Give it, and the web processes on this host, the same "
        "PROMETHEUS_MULTIPROC_DIR."
    ]

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # then nothing to say
    app = make_app(PUSH_METRICS=True, PUSH_SUPPRESS_SEND=False, SECRET_KEY="s")
    result = app.test_cli_runner().invoke(args=["push", "worker", "--once"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_a_second_sigterm_stops_the_worker_at_once(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first asks for a stop after the round; a round that cannot end (its
    database hangs) would never see it, so a second interrupts, as a second Ctrl-C
    does (the claims fall back to their lease)."""
    signals_sent: list[int] = []

    def hanging(push_: Any, stop: threading.Event) -> tuple[int, Any]:
        for _ in range(2):
            signals_sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # a database that does not answer
        raise AssertionError("not interrupted")

    monkeypatch.setattr(cli, "_round", hanging)
    result = app.test_cli_runner().invoke(args=["push", "worker", "--interval", "0.1"])
    assert len(signals_sent) == 2
    assert result.exit_code == 1 and "Aborted!" in result.output, result.output


def test_worker_says_what_a_stop_handed_back(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    with app.app_context():
        for user in ("alice", "bob"):
            add_subscription(user)
        message_id = push.send(
            users=["alice", "bob"], title="x", send_at=utcnow() + timedelta(hours=1)
        ).id
        make_due(message_id)
    real = cli._round

    def stopped_during_the_claim(push_: Any, stop: threading.Event) -> tuple[int, Any]:
        dispatcher = push_.state.get_inline().dispatcher
        claim = dispatcher._claim_and_load

        def claim_then_sigterm(*args: Any) -> Any:
            try:
                return claim(*args)
            finally:
                stop.set()  # what SIGTERM does, while the claim is on its way

        monkeypatch.setattr(dispatcher, "_claim_and_load", claim_then_sigterm)
        return real(push_, stop)

    monkeypatch.setattr(cli, "_round", stopped_during_the_claim)
    result = app.test_cli_runner().invoke(args=["push", "worker", "--interval", "0.1"])
    assert result.exit_code == 0, result.output
    started, round_, end = result.stdout.split("\n")
    assert started == (
        "flask-push: a worker delivering what is due, looking every 0.1 s when nothing is; "
        "Ctrl-C or SIGTERM stops it"
    )
    assert re.fullmatch(r"\S+Z handled 2 deliveries: handed back unsent 2", round_), round_
    assert end == ""
    with app.app_context():
        assert statuses(message_id) == ["queued", "queued"]


def test_prune_removes_dead_and_stale_only(app: Flask) -> None:
    old = utcnow() - timedelta(days=300)
    recent = utcnow() - timedelta(days=100)
    with app.app_context():
        kept_phone = add_installation("alice", "ios", modified_at=recent)
        keep = {
            add_subscription("alice").id,
            add_subscription("alice", last_seen_at=recent).id,
            add_installation("alice"),
            kept_phone,
        }
        add_subscription("bob", status=DEAD, dead_at=utcnow())
        add_subscription("bob", last_seen_at=old)
        add_subscription("bob", status=DEAD, last_seen_at=old)
        add_installation("bob", status=DEAD, dead_at=utcnow())
        gone_phone = add_installation("bob", "ios", modified_at=old)
        # Live Activity tokens: the kept phone's stay, the pruned one's go with it
        token = push.models.ActivityToken
        for installation in (gone_phone, kept_phone):
            db.session.add(token(installation_id=installation, activity_id="a", push_token="t"))
        db.session.commit()
    runner = app.test_cli_runner()

    dry = runner.invoke(args=["push", "prune", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "Would remove 3 subscriptions and 2 installations" in dry.output
    with app.app_context():
        assert count(push.models.Subscription) == 5
        assert count(push.models.Installation) == 4

    result = runner.invoke(args=["push", "prune"])
    assert result.exit_code == 0, result.output
    assert "Removed 3 subscriptions and 2 installations" in result.output
    with app.app_context():
        left = set(db.session.scalars(sa.select(push.models.Subscription.id)))
        left |= set(db.session.scalars(sa.select(push.models.Installation.id)))
        assert left == keep
        tokens = set(db.session.scalars(sa.select(push.models.ActivityToken.installation_id)))
        assert tokens == {kept_phone}

    # a shorter horizon takes the ones seen 100 days ago too
    shorter = runner.invoke(args=["push", "prune", "--days", "30"])
    assert "Removed 1 subscriptions and 1 installations" in shorter.output
    assert runner.invoke(args=["push", "prune", "--days", "0"]).exit_code != 0


def test_stats_counts(app: Flask) -> None:
    with app.app_context():
        add_subscription("alice")
        add_subscription("bob")
        add_subscription("bob", status=DEAD)
        add_installation("alice")
        add_installation("alice", "ios", status=DEAD)
        add_installation("bob", "ios")
        add_installation("carol", "ios")
        push.send(users=["alice", "bob"], title="now", inbox=True)
        push.send(users=["alice"], title="later", send_at=utcnow() + timedelta(hours=1))
        old = push.send(users=["nobody"], title="old")
        old.created_at = utcnow() - timedelta(days=2)
        db.session.commit()
        push.mark_all_read("bob")
    result = app.test_cli_runner().invoke(args=["push", "stats"])
    assert result.exit_code == 0, result.output
    lines = {
        label.strip(): values
        for label, values in (line.split("  ", 1) for line in result.output.splitlines())
    }
    assert {k: v.strip() for k, v in lines.items()} == {
        "subscriptions": "active 2, dead 1",
        "installations android": "active 1, dead 0",
        "installations ios": "active 2, dead 1",
        "messages": "total 3, last 24 h 2",
        # no FCM or APNs is configured: the installations' deliveries fail
        "deliveries": "queued 1, sent 2, failed 3, gone 0, expired 0, suppressed 0, superseded 0, "
        "cancelled 0",
        "inbox items": "total 2, unread 1",
        # as GET /health and the console's overview say it: nothing due yet
        "outbox": "due 0",
    }


def test_stats_says_how_long_the_outbox_has_waited(make_app: Any) -> None:
    """With no worker running, stats counted the queued deliveries and nothing said
    they were long past due, as GET /health, the metrics and the console do. (The
    inline queue: no worker takes them here.)"""
    app = make_app(PUSH_QUEUE="inline")
    with app.app_context():
        add_subscription("alice")
        id = push.send(users=["alice"], title="later", send_at=utcnow() + timedelta(hours=1)).id
        d = push.models.Delivery
        db.session.execute(
            sa.update(d).where(d.message_id == id).values(due_at=utcnow() - timedelta(minutes=30))
        )
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["push", "stats"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "outbox         due 1, the oldest for 30 min"


def test_stats_on_an_empty_database(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["push", "stats"])
    assert result.exit_code == 0, result.output
    assert "installations  active 0, dead 0" in result.output
    assert "deliveries     queued 0, sent 0, failed 0, gone 0, expired 0" in result.output


def test_a_database_that_is_down_is_one_line_and_exit_1() -> None:
    from flask_sqlalchemy import SQLAlchemy

    from flask_push import Push

    own_db = SQLAlchemy()
    own_push = Push(db=own_db)
    app = Flask(__name__)
    # nothing listens on port 1
    app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://postgres@127.0.0.1:1/x"
    own_db.init_app(app)
    own_push.init_app(app)
    runner = app.test_cli_runner()
    for args in (
        ["stats"],
        ["prune", "--dry-run"],
        ["explain", "msg_x"],
        ["send", "--everyone", "--title", "x"],
        ["worker", "--once"],
    ):
        result = runner.invoke(args=["push", *args])
        assert result.exit_code == 1, (args, result.output)
        last = result.output.splitlines()[-1]
        assert last.startswith("Error: the database is unreachable"), (args, result.output)
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["worker", "--interval", "nan"], "must be a number, not nan"),
        (["worker", "--interval", "inf"], "is not in the range"),
        (["worker", "--interval", "0"], "is not in the range"),
        (["prune", "--days", "100000000"], "is not in the range"),
        # what argv gives for bytes that are not UTF-8: once a UnicodeEncodeError
        (["explain", "\udcff"], "No message with the id"),
    ],
)
def test_odd_arguments_are_one_line(app: Flask, args: list[str], said: str) -> None:
    result = app.test_cli_runner().invoke(args=["push", *args])
    assert result.exit_code in (1, 2), result.output
    assert said in result.output.splitlines()[-1], result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_unknown_message_id_is_quoted_clipped(app: Flask) -> None:
    """A page pasted by mistake as the id does not come back whole."""
    result = app.test_cli_runner().invoke(args=["push", "explain", "x" * 100_000])
    assert result.exit_code == 1
    last = result.output.splitlines()[-1]
    assert last.startswith("Error: No message with the id 'xxx") and len(last) < 200


def test_a_database_that_refuses_writes_is_one_line_said_once(
    make_app: Any,
    database: dict[str, Any],
    tmp_path: Path,
    push_fake_webpush: FakePushService,
    vapid_private_key: str,
) -> None:
    """A user without the grants, a read-only replica or file: what to do, in one line,
    from a command and, once, from a worker (not a traceback, nor a line a second)."""
    app = make_app()
    with app.app_context():
        subscribe(push_fake_webpush.subscribe(), "alice")
        make_due(push.send(users=["alice"], title="x", send_at=utcnow() + timedelta(hours=1)).id)
    replica, why = read_only(database, "UPDATE")
    config = {
        **replica,
        "PUSH_SUPPRESS_SEND": False,
        "SECRET_KEY": "test-secret",  # a worker that sends signs its click tokens
        "PUSH_VAPID_PRIVATE_KEY": vapid_private_key,
        "PUSH_VAPID_SUBJECT": "mailto:ops@shop.example",
        "PUSH_ENDPOINT_HOSTS": ["127.0.0.1"],
        "PUSH_ALLOW_HTTP_ENDPOINTS": True,
    }
    said = (
        f"the database refused flask-push's statement ({why}): its user needs SELECT, "
        "INSERT, UPDATE and DELETE on flask-push's tables (push_*), on a database that "
        "takes writes (not a read-only replica or file)"
    )

    with bare_app(config) as worker_app:
        result = worker_app.test_cli_runner().invoke(args=["push", "worker", "--once"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"Error: {said}"], result.output

    worker = start_worker(tmp_path, config, "worker", "--interval", "0.1")
    try:
        log = tmp_path / "worker.log"
        wait_until(lambda: "nothing is delivered" in log.read_text())
        time.sleep(1.0)  # about ten more rounds, each failing the same way
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    lines = log.read_text().splitlines()
    assert [line for line in lines if "refused" in line] == [
        f"flask-push: nothing is delivered until then: {said}"
    ], lines
    assert not [line for line in lines if "Traceback" in line], lines
    # only the database's own answer is taken for one: not a file's PermissionError
    assert refused_writes(PermissionError(13, "Permission denied")) is None


def test_a_worker_without_a_secret_key_says_its_clicks_go_uncounted(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a SECRET_KEY the pushes carry no click token, so clicks on them are
    never counted, and nothing said so: a worker given only the web app's PUSH_*
    settings is the usual case. Said at start; not when it has a key, and not when
    it sends nothing (no provider, or sending suppressed)."""

    def one_round(push_: Any, stop: threading.Event) -> tuple[int, Any]:
        stop.set()
        return 0, {}

    monkeypatch.setattr(cli, "_round", one_round)
    args = ["push", "worker", "--once"]
    keyless = make_app(PUSH_SUPPRESS_SEND=False)
    result = keyless.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "Warning: this worker's config has no SECRET_KEY, so the notifications it sends "
        "carry no click token and their clicks are not counted (clicked stays 0). Give "
        "the worker the web app's SECRET_KEY: it counts no click whose token another key "
        "signed."
    ]
    keyed = make_app(PUSH_SUPPRESS_SEND=False, SECRET_KEY="s")
    assert keyed.test_cli_runner().invoke(args=args).stderr == ""
    suppressed = make_app()  # TESTING: nothing goes out, so no click either
    assert "SECRET_KEY" not in suppressed.test_cli_runner().invoke(args=args).stderr
