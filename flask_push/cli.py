"""The ``flask push`` commands.

Each runs in an app context (Flask's ``AppGroup``):

``vapid-keys``
    make a VAPID key pair and print the config lines to paste.
``send``
    queue a notification to users and, unless ``--no-wait``, deliver it in the
    foreground before exiting.
``worker``
    deliver due deliveries in the foreground until Ctrl-C or SIGTERM (``--once``:
    what is due now, then exit). It runs flask-push's in-process dispatcher, the
    one behind the ``thread`` queue; with the ``celery`` queue, a Celery worker
    consuming flask-push's tasks beside that dispatcher, which sweeps up retries
    and scheduled messages.
``prune``
    delete dead subscriptions and installations, and those not seen for
    ``--days`` days.
``stats``
    counts of subscriptions, installations, messages, deliveries and inbox items.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import click
import sqlalchemy as sa
from click.core import ParameterSource
from flask import current_app
from flask.cli import AppGroup, ScriptInfo
from py_vapid import Vapid

from . import outcomes, reports
from .activities import forget_tokens
from .credentials import vapid_raw_private_key
from .database import (
    diagnose,
    first_line,
    missing_tables,
    missing_tables_sentence,
    recorded_as_newer,
    refused_writes,
    tables_missing_message,
    unreachable,
)
from .errors import PayloadError, ValidationError
from .explain import why_empty
from .message import one_line
from .models import ACTIVE, DEAD, utcnow
from .operations import explain_page
from .outcomes import POLICY_REASONS, delivery_detail
from .providers.webpush import WEBPUSH
from .schemas.fields import MAX_TAKE
from .schemas.message import DELIVERY_STATUSES
from .validation import clipped


class _PushGroup(AppGroup):
    """The ``flask push`` group: a database without flask-push's tables is one line
    that says what to run, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except sa.exc.DBAPIError as err:
            # The command's app context has ended with its context: make one.
            with ctx.ensure_object(ScriptInfo).load_app().app_context():
                found = diagnose(_push())
                missing = _tables_missing(found.missing_tables) if found.missing_tables else None
            if missing is not None:
                raise missing from err
            if unreachable(err) and not found.answers:
                raise _database_unreachable(err) from err
            refused = refused_writes(err)
            if refused is not None:
                raise click.ClickException(refused) from err
            raise


def _tables_missing(missing: list[str]) -> click.ClickException:
    # in an app context: whether Alembic records them as newer than they are
    return click.ClickException(tables_missing_message(missing, recorded_as_newer(_push())))


def _database_unreachable(err: BaseException | None) -> click.ClickException:
    said = f" ({first_line(err)})" if err is not None else ""
    return click.ClickException(
        f"the database is unreachable{said}; check SQLALCHEMY_DATABASE_URI and that the "
        "server is up. Nothing was changed."
    )


push_cli = _PushGroup("push", help="flask-push: push notifications.")

#: Celery worker threads `flask push worker` runs by default with the celery queue
CELERY_CONCURRENCY = 4


def _push() -> Any:
    """The current app's :class:`~flask_push.Push`."""
    return current_app.extensions["push"].push


def _tables_checked() -> Any:
    """The current app's :class:`~flask_push.Push`, once its tables are found whole: a
    command on tables that are missing, or older than this flask-push, says what to
    run before it does anything. Gone ahead, it wrote part of its work and then failed
    (``send`` left a message behind), or printed old tables' counts as if nothing
    were wrong (``stats``). A worker that stays is not checked: it waits for the
    tables."""
    push = _push()
    missing = missing_tables(push)  # none when the database cannot tell
    if missing:
        raise _tables_missing(missing)
    return push


#: the subject written when none is given: a placeholder to replace
PLACEHOLDER_SUBJECT = "mailto:you@example.com"


@push_cli.command("vapid-keys")
@click.option(
    "--subject",
    default=PLACEHOLDER_SUBJECT,
    show_default=True,
    help="Contact for the push services: a mailto: or https: URI.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=(
        "Write the lines to this new file (readable by its owner alone) instead of "
        "printing them; a file that holds anything already is refused."
    ),
)
def vapid_keys(subject: str, output: Path | None) -> None:
    """Make a VAPID key pair: print the config lines to paste, or write them to --output."""
    if output is not None:
        _check_output(output)
    if "webpush" in _push().settings.providers:
        # stderr, as below: stdout may be the config file being written
        click.echo(
            "Warning: this app has a VAPID key already (PUSH_VAPID_PRIVATE_KEY). Replacing "
            "it with this one stops the pushes to every browser subscribed until now, "
            "until each subscribes again.",
            err=True,
        )
    if subject == PLACEHOLDER_SUBJECT:
        # stderr: stdout is the config file being written
        click.echo(
            f"PUSH_VAPID_SUBJECT is the placeholder {PLACEHOLDER_SUBJECT!r}: push services "
            "use it to reach you about your pushes; give yours with --subject, or edit the "
            "line.",
            err=True,
        )
    vapid = Vapid()
    vapid.generate_keys()
    try:
        # the check init_app makes of these lines, before they are printed
        values = WEBPUSH.normalize({"privateKey": vapid_raw_private_key(vapid), "subject": subject})
    except ValidationError as err:
        raise click.BadParameter(err.message, param_hint="'--subject'") from None
    lines = [
        "# Web Push (VAPID) keys made by `flask push vapid-keys`; keep the private key secret."
    ]
    # JSON strings are Python strings too: whatever the subject holds, it stays one
    for key, name in (
        ("PRIVATE_KEY", "privateKey"),
        ("PUBLIC_KEY", "publicKey"),
        ("SUBJECT", "subject"),
    ):
        lines.append(f"PUSH_VAPID_{key} = {json.dumps(values[name])}")
    if output is None:
        click.echo("\n".join(lines))
        return
    try:
        # for its owner alone, since it holds the private key (a file that was there
        # keeps its mode through O_TRUNC: set it)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(fd, 0o600)
            f.write("\n".join(lines) + "\n")
    except OSError as err:
        raise click.ClickException(f"{output} could not be written: {err.strerror}") from None
    click.echo(f"Wrote the VAPID keys to {output}; keep it out of version control.")
    # app.config.from_pyfile("push_keys.py") reads from the config's folder (the app's,
    # or its instance folder with instance_relative_config), not from here
    written, root = Path(output).resolve().parent, Path(current_app.config.root_path).resolve()
    if written != root:
        click.echo(
            f"Note: the app reads a config file named without a folder "
            f"(app.config.from_pyfile) from {root}.",
            err=True,
        )


def _check_output(path: Path) -> None:
    """Refuse to write the keys over anything but a new or empty file: over a key, it
    would stop the pushes to every subscribed browser (a shell's ``>`` empties the
    file before the app reads it, so no warning could come); over other lines (an
    app's config), it would lose them."""
    try:
        found = path.lstat()
    except FileNotFoundError:
        return
    except OSError as err:
        raise click.ClickException(f"{path} could not be read: {err.strerror}") from None
    if stat.S_ISREG(found.st_mode) and found.st_size == 0:
        return
    if not stat.S_ISREG(found.st_mode):
        raise click.ClickException(
            f"{path} is not a plain file (a link, say): give the path of a new file."
        )
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise click.ClickException(f"{path} could not be read: {err.strerror}") from None
    if "PUSH_VAPID_PRIVATE_KEY" in text:
        raise click.ClickException(
            f"{path} holds a VAPID key already. Replacing it stops the pushes to every "
            "browser subscribed until now, until each subscribes again; delete the file "
            "first if that is what you mean."
        )
    raise click.ClickException(
        f"{path} holds other lines, which writing the keys would lose: give a new file "
        "(and load it as well), or print the lines without --output and paste them."
    )


# -- send ------------------------------------------------------------------------


@push_cli.command("send")
@click.option("--user", "users", multiple=True, help="A user id; repeat for several.")
@click.option("--topic", default=None, help="Everyone subscribed to this topic.")
@click.option("--everyone", is_flag=True, help="Every browser and device.")
@click.option("--title", required=True, help="The notification's title.")
@click.option("--body", default=None, help="The notification's text.")
@click.option("--url", default=None, help="The page a click opens.")
@click.option("--ttl", type=int, default=None, help="Seconds the push services keep it.")
@click.option(
    "--urgency",
    type=click.Choice(["high", "normal", "low", "very-low"]),
    default="normal",
    show_default=True,
)
@click.option(
    "--category",
    default=None,
    help="A category of PUSH_CATEGORIES: the users' choices, quiet hours and cap apply.",
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="Return once the message is queued; leave delivery to the workers.",
)
def send(
    users: tuple[str, ...],
    topic: str | None,
    everyone: bool,
    title: str,
    body: str | None,
    url: str | None,
    ttl: int | None,
    urgency: str,
    category: str | None,
    no_wait: bool,
) -> None:
    """Send a notification to users (--user, repeated), a --topic or --everyone.

    The message is queued, then delivered here before the command exits, so the
    process does not end with its deliveries in hand; the outcome is printed per
    status, with the reason of each failure, and the exit code is 1 when nothing
    was delivered. Deliveries a push service asked to retry later stay queued for
    the workers. With --no-wait the command returns once the message is queued
    (the pushes the app's thread worker already has on the network finish first;
    the rest stay queued for the workers), and exits 1 only when nobody matched or
    every delivery failed as it was queued (no provider for it).
    """
    push = _tables_checked()
    stop = threading.Event()
    elsewhere = 0  # deliveries another worker still holds
    # Ctrl-C or SIGTERM, from here on: the pushes on the network finish and their
    # outcomes are written; the rest are handed back to the workers (an interrupted
    # loop would lose both, and the workers would send them all again)
    with _stop_on_signals(stop):
        try:
            try:
                message = push.send(
                    users=list(users) or None,
                    topic=topic,
                    everyone=everyone,
                    title=title,
                    body=body,
                    url=url,
                    ttl=ttl,
                    urgency=urgency,
                    category=category,
                )
            except ValidationError as err:
                raise click.UsageError(_as_option(err)) from None
            except PayloadError as err:
                raise click.ClickException(f"{err.provider}: {err}") from None
            recipients = message.recipient_count
            # its status as it was queued: the counts below say what became of it
            click.echo(
                f"Message {message.id}: {reports.status_as_queued(message)}, "
                f"{recipients} recipient{'' if recipients == 1 else 's'}"
            )
            if not no_wait:
                # The app's thread worker, woken by the send, may hold some of its rows:
                # stopping it lets its pushes on the network finish and hands back the
                # rest, which this thread then sends. Only this message's rows: a
                # backlog of others is the workers' business.
                push.shutdown()
                push.state.get_inline().run_once(message.id, stop=stop.is_set)
                elsewhere = _wait_for_other_workers(push, message.id, stop)
        finally:
            push.shutdown()
    counts = _delivery_counts(push, message.id)
    suppressed = _suppressed(push)
    if counts:
        words = {"sent": "recorded"} if suppressed else {}
        click.echo("Deliveries: " + ", ".join(f"{words.get(s, s)} {n}" for s, n in counts.items()))
    for line in _problems(push, message.id) + _held_back(push, message.id):
        click.echo(f"  {one_line(line)}")
    queued = counts.get("queued", 0)
    if queued and push.settings.queue == "thread" and not stop.is_set():
        # "queued 1" read as if something would send it (left with --no-wait, or a
        # retry, or held for quiet hours): with the thread queue, nothing does once
        # this process has ended
        click.echo(_left_on_the_thread_queue(queued))
    if suppressed and counts.get("sent"):
        # what the app asked for (a test, say): said, not failed
        click.echo(
            f"Warning: nothing went out: {suppressed}. `flask push explain {message.id}` "
            "shows what would have gone, and to whom; set PUSH_SUPPRESS_SEND = False to send.",
            err=True,
        )
    if stop.is_set():
        raise click.ClickException(
            f"Stopped: the pushes on the network were finished; {counts.get('queued', 0)} "
            "deliveries stay queued for the workers (flask push worker)."
        )
    # With --no-wait too: a message with no recipients will never be delivered.
    if not recipients:
        if counts.get("suppressed") or counts.get("expired"):
            raise click.ClickException(
                f"Nothing was delivered: {_held_back_by(push, message.id)} held back every "
                "push; the reasons are above."
            )
        raise click.ClickException(
            "Nothing was delivered: no active browser or device matches this audience."
        )
    if no_wait:
        if counts.get("queued") or counts.get("sent"):
            return
        # every one ended as it was queued (no provider for it): none will go later
        raise click.ClickException("Nothing will be delivered; the reasons are above.")
    if not counts.get("sent"):
        if counts.get("queued") and _only_quiet_hours(push, message.id):
            # nothing failed: the workers send them when the quiet hours end
            return
        if elsewhere:
            raise click.ClickException(
                f"Nothing was delivered yet: {elsewhere} deliveries are still with another "
                f"worker; `flask push explain {message.id}` says how they went."
            )
        raise click.ClickException("Nothing was delivered; the reasons are above.")


def _left_on_the_thread_queue(queued: int) -> str:
    """Who sends what ``send`` left queued on the thread queue (with ``--no-wait``,
    or a retry, or a push held for quiet hours)."""
    them = "it" if queued == 1 else "them"
    return (
        f"{queued} {'delivery stays' if queued == 1 else 'deliveries stay'} queued: "
        "PUSH_QUEUE is 'thread', which sends only while a process of the app runs it, and "
        f"this command has ended. `flask push worker` delivers {them}, as do the app's web "
        "processes once they serve a request."
    )


#: how often ``send`` looks whether another worker is done with its deliveries
OTHER_WORKERS_POLL = 0.1


def _wait_for_other_workers(push: Any, message_id: str, stop: threading.Event) -> int:
    """Wait while other workers (a Celery worker woken by the send, another
    process) have some of the message's deliveries in hand, so that their outcomes
    are printed too; send what they hand back. In hand: leased, or due now and not
    claimable here (a claim under way elsewhere locks its rows until it commits).
    Waits at most a lease, the longest a worker may hold one; returns how many
    are still in hand."""
    d = push.models.Delivery
    session = push.db.session
    deadline = utcnow() + timedelta(seconds=push.state.settings.delivery_lease)
    while True:
        now = utcnow()
        held = session.scalar(
            sa.select(sa.func.count())
            .select_from(d)
            .where(
                d.message_id == message_id,
                d.status == "queued",
                sa.or_(d.lease_until > now, d.due_at <= now),
            )
        )
        session.rollback()  # end the read transaction: the next look sees their commits
        if not held or now >= deadline or stop.wait(OTHER_WORKERS_POLL):
            return int(held or 0)
        push.state.get_inline().run_once(message_id, stop=stop.is_set)  # handed back


@push_cli.command("explain")
@click.argument("message_id")
@click.option("--user", "user_id", default=None, help="Only this user's browsers and devices.")
@click.option(
    "--status",
    type=click.Choice(DELIVERY_STATUSES),
    default=None,
    help="Only the deliveries with this status, such as failed or gone.",
)
@click.option(
    "--skip", type=click.IntRange(min=0), default=0, help="Leave out the first N (default 0)."
)
@click.option(
    "--take",
    type=click.IntRange(1, MAX_TAKE),
    default=None,
    help=f"Print at most N (1-{MAX_TAKE}); all by default.",
)
def explain(
    message_id: str, user_id: str | None, status: str | None, skip: int, take: int | None
) -> None:
    """Print why each target did or did not get MESSAGE_ID: its status, the reason as
    a sentence, then its timeline (UTC), oldest target first. Exits 1 for an unknown
    message."""
    push = _tables_checked()
    try:
        total, entries = explain_page(
            push.state, message_id, user_id, status=status, skip=skip, take=take
        )
        # an empty page says why, read in the same transaction
        said = (
            None
            if entries
            else why_empty(
                push.db.session,
                push.models,
                message_id,
                total,
                user_id=user_id,
                status=status,
                skipped=f"--skip {skip}",
            )
        )
    except ValidationError as err:
        if err.code == "not_found":
            shown = clipped(message_id)  # a pasted page must not come back whole
            raise click.ClickException(f"No message with the id {shown!r}.") from None
        raise click.UsageError(_as_option(err)) from None
    finally:
        push.db.session.rollback()  # end the read transaction
    if said is not None:
        click.echo(one_line(said))
        return
    for number, entry in enumerate(entries):
        if number:
            click.echo()
        target = entry["target"]
        owner = f", user {target['userId']}" if target["userId"] is not None else ""
        # one_line: the label holds the app's version, and the user id, the reasons and
        # what push services said came from outside; none may start a line of its own
        # or reach the terminal as a control sequence
        click.echo(
            one_line(
                f"{target['label']} ({target['kind']} {target['id']}{owner}): {entry['status']}"
                + (f" [{entry['reason']}]" if entry["reason"] else "")
            )
        )
        if entry["detail"]:
            click.echo(f"  {one_line(entry['detail'])}")
        for event in entry["events"]:
            when = str(event["at"]).replace("T", " ")[:19]
            said = f"  {event['detail']}" if event["detail"] else ""
            click.echo(one_line(f"    {when}  {event['what']:<10}{said}"))
    if skip > 0 or take is not None:
        shown_to = skip + len(entries)
        more = f"; the next with --skip {shown_to}" if shown_to < total else ""
        click.echo(f"\n{skip + 1}-{shown_to} of {total}{more}.")


def _as_option(err: ValidationError) -> str:
    """A ValidationError of ``push.send`` (or of ``explain``'s page) in the command's
    own terms."""
    if err.field == "audience":
        return "give exactly one audience: --user (repeatable), --topic or --everyone"
    field = re.split(r"[.\[]", err.field or "", maxsplit=1)[0]
    option = _OPTIONS.get(field)
    return f"{option}: {err.message}" if option else str(err)


#: the fields of ``push.send`` that ``flask push send`` takes, and of the deliveries'
#: page that ``flask push explain`` takes, by option
_OPTIONS = {
    "users": "--user",
    "userId": "--user",
    "topic": "--topic",
    "title": "--title",
    "body": "--body",
    "url": "--url",
    "ttl": "--ttl",
    "urgency": "--urgency",
    "category": "--category",
    "skip": "--skip",
    "take": "--take",
    "status": "--status",
}


def _problems(push: Any, message_id: str) -> list[str]:
    """One line per status and reason of a message's deliveries that failed, are
    gone or expired, or wait for a retry: how many, the machine reason, and the
    sentence of the latest of them."""
    # what the users' preferences held back has lines of its own (_held_back)
    found = reports.problems(
        push.db.session, push.models, message_id, limit=50, leave_out=POLICY_REASONS
    )
    push.db.session.rollback()  # end the read transaction
    labels = {"queued": "will retry"}
    # the sentence of the latest, as _held_back and `flask push explain` say it; a row
    # older than machine reasons has only its text
    lines = [
        f"{labels.get(p.status, p.status)} ({p.count}): "
        + (
            f"{p.code}: {'the latest: ' if p.count > 1 else ''}{p.detail or p.reason}"
            if p.code
            else p.reason
        )
        for p in found.shown
    ]
    if found.more:
        reasons = f"{found.more} more reason{'' if found.more == 1 else 's'}"
        deliveries = f"{found.more_count} deliver{'y' if found.more_count == 1 else 'ies'}"
        lines.append(f"... and {reasons}, for {deliveries}")
    return lines


def _held_back(push: Any, message_id: str) -> list[str]:
    """One line per reason the users' preferences held deliveries back for, with
    the sentence of the latest such delivery (its times are its user's own)."""
    d = push.models.Delivery
    session = push.db.session
    found = session.execute(
        sa.select(d.status, d.reason, sa.func.count(), sa.func.max(d.id))
        .where(d.message_id == message_id, d.reason.in_(POLICY_REASONS))
        .group_by(d.status, d.reason)
        .order_by(d.status, d.reason)
    ).all()
    latest = {
        row.id: row for row in session.scalars(sa.select(d).where(d.id.in_(r[3] for r in found)))
    }
    lines = []
    labels = {"queued": "waiting"}
    for status, reason, count, id in found:
        row = latest.get(id)
        if row is None:
            continue  # deleted since the count (flask push prune, say)
        said = delivery_detail(row)
        lines.append(
            f"{labels.get(status, status)} ({count}): {reason}: "
            f"{'the latest: ' if count > 1 else ''}{said}"
        )
    session.rollback()  # end the read transaction
    return lines


def _held_back_by(push: Any, message_id: str) -> str:
    """Who held back a message's pushes: the users' preferences (their choices and
    quiet hours), the category's daily cap (the app's ``max_per_day``, not a user's
    choice), or both."""
    d = push.models.Delivery
    reasons = set(
        push.db.session.scalars(
            sa.select(d.reason)
            .where(d.message_id == message_id, d.reason.in_(POLICY_REASONS))
            .distinct()
        )
    )
    push.db.session.rollback()  # end the read transaction
    cap = "the category's daily cap (max_per_day in PUSH_CATEGORIES)"
    if reasons == {"frequency_cap"}:
        return cap
    if "frequency_cap" in reasons:
        return f"the users' preferences and {cap}"
    return "the users' preferences"


def _only_quiet_hours(push: Any, message_id: str) -> bool:
    """Does every queued delivery of the message wait for its user's quiet hours,
    none after a try the push service did not take (a retry held for them: its
    ``error`` says what the service answered)?"""
    d = push.models.Delivery
    other = sa.exists().where(
        d.message_id == message_id,
        d.status == "queued",
        sa.or_(d.reason.is_(None), d.reason != "quiet_hours", d.error.is_not(None)),
    )
    found = bool(push.db.session.scalar(sa.select(other)))
    push.db.session.rollback()  # end the read transaction
    return not found


def _suppressed(push: Any) -> str | None:
    """Why this app records pushes instead of sending them, or None when it sends."""
    if not push.settings.suppresses_send(current_app):
        return None
    why = "on" if "PUSH_SUPPRESS_SEND" in current_app.config else "on, as under TESTING"
    return f"sending is suppressed (PUSH_SUPPRESS_SEND is {why}): pushes are recorded, not sent"


def _worker_warnings(push: Any, once: bool) -> list[str]:
    """What a worker's config makes it do unseen: a worker is a process of its own,
    with the config it was started with, not the web app's. (A run ``--once``, a
    test's or a cron job's, is not told of its live events.)"""
    settings, warnings = push.settings, []
    if not settings.providers:
        warnings.append(
            "no provider is configured in this worker's config: each delivery it claims "
            "fails (no_provider) unless a provider is stored for its app (POST "
            "/providers). Give the worker the web app's PUSH_* settings."
        )
    if (
        settings.providers
        and not settings.suppresses_send(current_app)
        and not current_app.config.get("SECRET_KEY")
    ):
        warnings.append(
            "this worker's config has no SECRET_KEY, so the notifications it sends carry "
            "no click token and their clicks are not counted (clicked stays 0). Give the "
            "worker the web app's SECRET_KEY: it counts no click whose token another key "
            "signed."
        )
    if not once and urlsplit(settings.backplane_url).scheme == "memory":
        warnings.append(
            "PUSH_BACKPLANE_URL is memory://, so the live events this worker publishes "
            "(the inbox items of scheduled messages it writes) reach no browser: set it "
            "to the Redis the web processes use."
        )
    metrics = push.state.metrics
    if metrics is not None and not metrics.multiprocess:
        warnings.append(
            "PUSH_METRICS is on but PROMETHEUS_MULTIPROC_DIR is not set, so what this "
            "worker counts (flask_push_deliveries_total, ...) reaches no scrape: a worker "
            "serves none. Give it, and the web processes on this host, the same "
            "PROMETHEUS_MULTIPROC_DIR."
        )
    return warnings


def _delivery_counts(push: Any, message_id: str | None = None) -> dict[str, int]:
    d = push.models.Delivery
    query = sa.select(d.status, sa.func.count()).group_by(d.status)
    if message_id is not None:
        query = query.where(d.message_id == message_id)
    found = dict(push.db.session.execute(query).all())
    push.db.session.rollback()  # end the read transaction
    return _ordered(found, DELIVERY_STATUSES)


def _ordered(found: dict[str, int], order: tuple[str, ...]) -> dict[str, int]:
    """``found``'s counts in ``order``, then any other keys."""
    ordered = {k: int(found[k]) for k in order if k in found}
    ordered.update({k: int(v) for k, v in sorted(found.items()) if k not in ordered})
    return ordered


# -- worker ----------------------------------------------------------------------


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl-C or SIGTERM asks the loop to stop once the pushes on the
    network are done; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        # the second: a round that cannot end (a database that hangs) is left, and
        # its claims fall back to their lease
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@push_cli.command("worker")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=3600.0),  # 0 would poll without a pause
    callback=lambda ctx, param, value: _a_number(value, param),
    default=1.0,
    show_default=True,
    help="Seconds between two looks at the outbox when nothing is due (not with celery).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=CELERY_CONCURRENCY,
    show_default=True,
    help="Celery queue only: tasks run at once, in threads.",
)
@click.option(
    "--loglevel",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
    help="Celery queue only: the Celery worker's log level.",
)
def worker(once: bool, interval: float, concurrency: int, loglevel: str) -> None:
    """Deliver queued notifications in the foreground until Ctrl-C or SIGTERM.

    This runs flask-push's in-process dispatcher (the one behind the thread
    queue) on this app's database: due deliveries, retries and scheduled
    messages. Several workers may run at once; each claims its own rows.
    It says so when it starts, then how many deliveries it handled in each round
    that had any.

    With PUSH_QUEUE="celery" it runs a Celery worker consuming this app's
    delivery tasks (PUSH_CELERY_QUEUE), and the same dispatcher beside it, about
    every second, for retries, scheduled messages and tasks that were lost.
    --once then delivers what is due in this process, without Celery.
    """
    # A worker that stays waits for its tables (they may be on their way); one run
    # (a cron job's) on missing or old ones says so, not "Nothing was due."
    push = _tables_checked() if once else _push()
    suppressed = _suppressed(push)
    if suppressed:
        # what a test may want, and what a worker left with TESTING on in production
        # must not do unseen: it takes the deliveries other processes queued
        click.echo(
            f"Warning: this worker marks each due delivery sent without sending it: "
            f"{suppressed}. Set PUSH_SUPPRESS_SEND = False in its config to send.",
            err=True,
        )
    for warning in _worker_warnings(push, once):
        click.echo(f"Warning: {warning}", err=True)
    if not current_app.config.get("SECRET_KEY"):
        push.state.told_no_secret_key = True  # said above, in the worker's own words
    ctx = click.get_current_context()
    given = {
        name for name in ctx.params if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
    }
    if push.settings.queue == "celery" and not once:
        if "interval" in given:
            raise click.UsageError(
                "--interval is for the thread and inline queues; the celery queue's "
                "worker sweeps the outbox every second"
            )
        _celery_worker(push, concurrency, loglevel, suppressed=bool(suppressed))
        return
    celery_only = [f"--{name}" for name in ("concurrency", "loglevel") if name in given]
    if celery_only:
        why = "--once runs none" if once else f"PUSH_QUEUE is {push.settings.queue!r}"
        verb = "apply" if len(celery_only) > 1 else "applies"
        raise click.UsageError(
            f"{' and '.join(celery_only)} only {verb} to a Celery worker, and {why}"
        )
    if not once:
        # said first: an idle worker prints nothing else until something is due
        click.echo(
            f"flask-push: a worker delivering what is due, looking every {interval:g} s "
            "when nothing is; Ctrl-C or SIGTERM stops it"
        )
    stop = threading.Event()
    said = None  # why the last round failed, as last printed
    told = 0  # the inbox items of scheduled messages written, as said so far
    try:
        with _stop_on_signals(stop):
            while not stop.is_set():
                inbox_failure = None
                try:
                    handled, outcomes = _round(push, stop)
                    if once:  # a cron job's run ends with what came due in the inboxes
                        inbox_failure = _inbox_settled(push)
                    said = None
                except Exception as err:  # noqa: BLE001 - keep serving; rows stay queued
                    if once:
                        raise
                    # tables not made yet, writes refused: one line that says what to
                    # do, once (and again only when the reason changes)
                    sentence = missing_tables_sentence(_push()) or refused_writes(err)
                    told_why = (
                        f"flask-push: a delivery round failed: {err!r}"
                        if sentence is None
                        else f"flask-push: nothing is delivered until then: {sentence}"
                    )
                    if told_why != said:
                        said = told_why
                        click.echo(told_why, err=True)
                    handled, outcomes = 0, Counter()
                # said in the log already; a cron job must see it fail too
                unreachable = once and push.state.get_inline().dispatcher.database_unreachable
                if unreachable and not handled:
                    missing = missing_tables(_push())
                    raise _tables_missing(missing) if missing else _database_unreachable(None)
                # written beside the rounds, on a thread of their own
                wrote = max(0, push.state.get_inline().dispatcher.inbox_written - told)
                told += wrote
                stamp = _stamp()
                if handled:
                    click.echo(_handled(handled, outcomes, suppressed=bool(suppressed), at=stamp))
                if wrote:
                    items = "inbox item" if wrote == 1 else "inbox items"
                    click.echo(f"{stamp} wrote {wrote} {items} of scheduled messages")
                if once and not handled and not wrote:
                    click.echo("Nothing was due.")
                if unreachable:
                    raise click.ClickException(
                        "the database went away during the run; the deliveries whose "
                        "outcomes were not written stay queued and are sent again once "
                        "their lease runs out, so some may arrive twice"
                    )
                if inbox_failure is not None:
                    if not handled and not wrote:
                        raise inbox_failure  # nothing was done: the group says why
                    raise click.ClickException(
                        "the inbox items of scheduled messages that came due could not "
                        f"be written ({first_line(inbox_failure)}); they stay held for "
                        "the next run"
                    )
                if once:
                    break
                stop.wait(interval)
    finally:
        push.shutdown()


def _stamp() -> str:
    """Now, as the worker's lines begin."""
    return utcnow().isoformat(timespec="seconds").replace("+00:00", "Z")


def _handled(handled: int, outcomes: Counter[str], *, suppressed: bool, at: str) -> str:
    """The worker's line for a round (or a Celery task) that handled deliveries:
    ``<at> handled 3 deliveries: sent 1, to retry 1, gone 1``."""
    words = {**_OUTCOME_WORDS, "sent": "recorded"} if suppressed else _OUTCOME_WORDS
    said = ", ".join(
        f"{words.get(status, status)} {count}"
        for status, count in _ordered(dict(outcomes), _OUTCOMES).items()
    )
    deliveries = "delivery" if handled == 1 else "deliveries"
    return f"{at} handled {handled} {deliveries}" + (f": {said}" if said else "")


def _a_number(value: float, param: click.Parameter) -> float:
    """``value``, unless it is NaN, which every range lets through (it compares false)."""
    if math.isnan(value):
        raise click.BadParameter("must be a number, not nan", param=param)
    return value


def _celery_worker(push: Any, concurrency: int, loglevel: str, *, suppressed: bool) -> None:
    """A Celery worker in the foreground, and the sweep beside it: the thread
    queue's poller, which delivers retries, scheduled messages and anything a lost
    task left, about every second (a batch a second while tasks run here). Each
    task and each round of the sweep that handled deliveries says so, as the thread
    queue's worker does."""
    state = push.state
    queue = state.get_celery()
    click.echo(
        f"flask-push: a Celery worker on queue {queue.queue!r} ({concurrency} threads), "
        "and a sweep of the outbox every second"
    )

    def report(handled: int, outcomes: Counter[str]) -> None:
        click.echo(_handled(handled, outcomes, suppressed=suppressed, at=_stamp()))

    queue.report = report
    try:
        state.get_worker(yield_to=queue.busy).report = report  # the sweep
        exitcode = queue.run_worker(concurrency=concurrency, loglevel=loglevel.upper())
    finally:
        push.shutdown()
    if exitcode:
        raise SystemExit(exitcode)


#: a round's outcomes, in the order the worker says them, and how
_OUTCOMES = ("sent", "retry", "failed", "gone", "expired", "quiet_hours", "handed_back")
_OUTCOME_WORDS = {
    "retry": "to retry",
    "quiet_hours": "held for quiet hours",
    "handed_back": "handed back unsent",
}


def _inbox_settled(push: Any) -> Exception | None:
    """Wait for the inbox items that came due during the round; what made their
    writing fail, if anything, is told after what the round did, not instead of it
    (the round's deliveries are written by then)."""
    try:
        push.state.get_inline().dispatcher.settle_inbox()
    except Exception as err:  # noqa: BLE001 - told by the caller, after the round's report
        return err
    return None


def _round(push: Any, stop: threading.Event) -> tuple[int, Counter[str]]:
    """Claim and deliver until nothing is due or a stop is asked; returns how many
    deliveries were claimed and the outcomes written, by status."""
    dispatcher = push.state.get_inline().dispatcher
    before = Counter(dispatcher.written)
    handled = int(dispatcher.run_until_idle(stop=stop.is_set))
    return handled, Counter(dispatcher.written) - before


# -- prune -----------------------------------------------------------------------


@push_cli.command("prune")
@click.option(
    "--days",
    type=click.IntRange(min=1, max=36500),
    default=270,
    show_default=True,
    help="Also remove those not seen for this many days.",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
def prune(days: int, dry_run: bool) -> None:
    """Delete dead subscriptions and installations, and those not seen for --days days.

    A subscription is seen when its browser last registered it (last_seen_at),
    an installation when it was last modified. Their queued deliveries end
    `gone` when a worker reaches them.
    """
    push = _tables_checked()
    models, session = push.models, push.db.session
    cutoff = utcnow() - timedelta(days=days)
    kinds = {
        "subscriptions": (
            models.Subscription,
            sa.or_(models.Subscription.status == DEAD, models.Subscription.last_seen_at < cutoff),
        ),
        "installations": (
            models.Installation,
            sa.or_(models.Installation.status == DEAD, models.Installation.modified_at < cutoff),
        ),
    }
    counts: dict[str, int] = {}
    try:
        for kind, (model, where) in kinds.items():
            if dry_run:
                counts[kind] = int(
                    session.scalar(sa.select(sa.func.count()).select_from(model).where(where)) or 0
                )
            else:
                if model is models.Installation:
                    forget_tokens(session, models, sa.select(model.id).where(where))
                result = session.execute(
                    sa.delete(model).where(where),
                    execution_options={"synchronize_session": False},
                )
                counts[kind] = int(result.rowcount)
        if dry_run:
            session.rollback()
        else:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    verb = "Would remove" if dry_run else "Removed"
    click.echo(
        f"{verb} {counts['subscriptions']} subscriptions and "
        f"{counts['installations']} installations (dead, or not seen for {days} days)."
    )


# -- stats -----------------------------------------------------------------------


@push_cli.command("stats")
def stats() -> None:
    """Print counts: subscriptions, installations, messages, deliveries, inbox items."""
    push = _tables_checked()
    models, session = push.models, push.db.session
    sub, ins, msg = models.Subscription, models.Installation, models.Message
    counter = models.InboxCounter
    try:
        subs = dict(
            session.execute(sa.select(sub.status, sa.func.count()).group_by(sub.status)).all()
        )
        devices: dict[str, dict[str, int]] = {}
        for device_type, status, count in session.execute(
            sa.select(ins.device_type, ins.status, sa.func.count()).group_by(
                ins.device_type, ins.status
            )
        ):
            devices.setdefault(device_type, {})[status] = int(count)
        since = utcnow() - timedelta(hours=24)
        total_messages, recent_messages = session.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(sa.case((msg.created_at >= since, 1))),
            ).select_from(msg)
        ).one()
        inbox_total, inbox_unread = session.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(counter.total), 0),
                sa.func.coalesce(sa.func.sum(counter.unread), 0),
            )
        ).one()
        outbox = push.outbox_state()
    finally:
        session.rollback()  # end the read transaction
    deliveries = _delivery_counts(push)

    def states(found: dict[str, int]) -> str:
        ordered = _ordered(found, (ACTIVE, DEAD))
        for status in (ACTIVE, DEAD):
            ordered.setdefault(status, 0)
        return ", ".join(f"{s} {n}" for s, n in _ordered(ordered, (ACTIVE, DEAD)).items())

    rows = [("subscriptions", states(subs))]
    if devices:
        rows += [
            (f"installations {kind}", states(found)) for kind, found in sorted(devices.items())
        ]
    else:
        rows.append(("installations", states({})))
    rows.append(("messages", f"total {int(total_messages)}, last 24 h {int(recent_messages)}"))
    all_deliveries = {status: deliveries.get(status, 0) for status in DELIVERY_STATUSES}
    all_deliveries.update(deliveries)
    rows.append(("deliveries", ", ".join(f"{s} {n}" for s, n in all_deliveries.items())))
    rows.append(("inbox items", f"total {int(inbox_total)}, unread {int(inbox_unread)}"))
    # what GET /health, the metrics and the console's overview say of the outbox: the
    # deliveries due now, and how long the oldest has waited for a worker
    waiting = (
        f", the oldest for {outcomes.waited(outbox.oldest_due_seconds)}"
        if outbox.oldest_due_seconds is not None
        else ""
    )
    rows.append(("outbox", f"due {outbox.due}{waiting}"))
    width = max(len(label) for label, _ in rows)
    for label, values in rows:
        click.echo(f"{label.ljust(width)}  {values}")
