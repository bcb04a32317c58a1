"""The console's pages: overview, messages, users, test send, providers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from .. import app_providers, explain, outcomes, reports, scheduled_inbox
from ..activities import activity_from_json
from ..api.messages import status as message_status
from ..categories import CHANNELS
from ..errors import PayloadError, ValidationError
from ..preferences import known
from ..providers import kinds, provider_class
from ..schemas.fields import MAX_LINK, MAX_TEXT, MOST_SKIPPED
from ..schemas.inbox import MAX_BODY
from ..validation import digits
from . import data, guard, preview

#: the nav, in order: (endpoint, label)
NAV = (
    ("overview", "Overview"),
    ("messages", "Messages"),
    ("users", "Users"),
    ("send", "Test send"),
    ("providers", "Providers"),
)
#: messages per page, deliveries per page of a message
PAGE = 25
DELIVERIES_PAGE = 50
#: what the test send's form passes on to ``push.send`` (empty fields are left out)
SEND_FIELDS = ("title", "body", "url", "urgency", "collapse_key")
#: the test send's inputs: id -> its label, and the field a ValidationError names
#: (the API's name) -> the input's id. An error is said with the label the reader
#: sees, not the API's name ("collapseKey", "id"), and marked on its input.
SEND_LABELS = {
    "send-user": "User id",
    "send-target": "One subscription or installation id",
    "send-title": "Title",
    "send-url": "URL opened on click",
    "send-body": "Body",
    "send-urgency": "Urgency",
    "send-collapse": "Collapse key (Web Push Topic)",
}
SEND_INPUTS = {
    "users": "send-user",
    "id": "send-target",
    "title": "send-title",
    "url": "send-url",
    "body": "send-body",
    "urgency": "send-urgency",
    "collapseKey": "send-collapse",
}


def _state() -> Any:
    return current_app.extensions["push"]


def _push() -> Any:
    return _state().push


def page_nonce() -> str | None:
    """The CSRF cookie value made for this response, when the browser had none."""
    nonce = g.get("push_console_nonce")
    return nonce if isinstance(nonce, str) else None


def csrf_token() -> str:
    """The token for this page's forms (makes the cookie's value on first use)."""
    nonce = guard.cookie_nonce() or page_nonce()
    if nonce is None:
        nonce = g.push_console_nonce = guard.new_nonce()
    return guard.csrf_token(nonce)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def readable(value: Any) -> str:
    """A time as a person reads it in a table: ``Dec 4, 17:03:09 UTC``."""
    when = _as_datetime(value)
    if when is None:
        return "" if value is None else str(value)
    return f"{when:%b} {when.day}, {when:%H:%M:%S} UTC"


def iso(value: Any) -> str:
    when = _as_datetime(value)
    return when.isoformat() if when is not None else ""


def activity_facts(message: Any) -> dict[str, Any] | None:
    """Which state of a live activity ``message`` showed (``push.activity``): its
    activity, event, state and times; None for another message. Each state is a
    message with the same title, which alone does not tell them apart."""
    shown = activity_from_json(message.activity)
    if shown is None:
        return None

    def at(seconds: int | None) -> datetime | None:
        return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)

    return {
        "id": shown.id,
        "event": shown.event,
        "state": json.dumps(dict(shown.state), ensure_ascii=False),
        "stale_at": at(shown.stale_at),
        "dismiss_at": at(shown.dismiss_at),
        "catch_up": shown.catch_up,
        "farewell": shown.farewell,
    }


#: the API's own limits, as the forms' ``maxlength``: the browser stops what it refuses
LIMITS = {"text": MAX_TEXT, "link": MAX_LINK, "body": MAX_BODY}


def _render(template: str, code: int = 200, **context: Any) -> ResponseReturnValue:
    return render_template(
        f"flask_push/console/{template}", nav=NAV, limits=LIMITS, **context
    ), code


def refused(err: guard.Refused) -> ResponseReturnValue:
    """The page of a refused request: the sentence, nothing else."""
    return _render("error.html", err.status, message=err.message, page=None)


def missing_page() -> ResponseReturnValue:
    return _render("error.html", 404, message="The console has no such page.", page=None)


def _not_found(what: str) -> ResponseReturnValue:
    return _render("error.html", 404, message=f"There is no {what} with that id.", page=None)


def _int_arg(name: str, default: int) -> int:
    value = request.args.get(name, "")
    return max(1, int(value)) if digits(value) and len(value) < 9 else default


# -- pages --------------------------------------------------------------------------


def overview() -> ResponseReturnValue:
    push = _push()
    session = push.db.session
    bars = data.deliveries_by_provider(session, push.models)
    dead_total, dead = data.dead_today(session, push.models)
    return _render(
        "overview.html",
        page="overview",
        bars=bars,
        statuses=data.statuses({bar.provider: bar.counts for bar in bars}),
        outbox=push.outbox_state(),
        # as long as a queued push's sentence waits before it says no worker took it
        overdue_after=outcomes.OVERDUE_AFTER,
        dead_total=dead_total,
        dead=dead,
    )


def shown_status(message: Any, counts: dict[str, int]) -> str:
    """A message's status as the console shows it: the API's, but ``cancelled`` for
    a ``done`` one an operator cancelled, which "done" would say went out. (The API
    keeps ``done``: nothing of it is queued any more, and clients wait for that.)"""
    status = message_status(message, counts)
    return "cancelled" if status == "done" and message.cancelled_at else status


def messages() -> ResponseReturnValue:
    push = _push()
    number = _int_arg("page", 1)
    total, rows = data.messages_page(push.db.session, push.models, (number - 1) * PAGE, PAGE)
    counts = reports.delivery_counts(push.db.session, push.models, [m.id for m in rows])
    items = [(m, shown_status(m, counts[m.id]), counts[m.id]) for m in rows]
    return _render(
        "messages.html",
        page="messages",
        items=items,
        total=total,
        number=number,
        pages=max(1, -(-total // PAGE)),
        statuses=data.statuses(counts),
    )


def message(id: str) -> ResponseReturnValue:
    push = _push()
    session = push.db.session
    row = session.get(push.models.Message, id)
    if row is None:
        return _not_found("message")
    counts = reports.message_counts(session, push.models, [id])[id]
    status = request.args.get("status") or None
    number = _int_arg("page", 1)
    skip = (number - 1) * DELIVERIES_PAGE
    deliveries = (
        push.explain(id, status=status, skip=skip, take=DELIVERIES_PAGE + 1)
        if skip <= MOST_SKIPPED
        else []  # past any message's last page
    )
    return _render(
        "message.html",
        page="messages",
        message=row,
        status=shown_status(row, counts),
        counts=counts,
        # deferred is a part of queued, not a status of its own
        statuses=data.statuses({id: {s: n for s, n in counts.items() if s != "deferred"}}),
        problems=reports.problems(session, push.models, id),
        deliveries=deliveries[:DELIVERIES_PAGE],
        more=len(deliveries) > DELIVERIES_PAGE,
        number=number,
        filter=status,
        done=request.args.get("done"),
        category_label=_category_label(row.category),
        held_back=data.held_back(session, push.models, id, row.recipient_count),
        held_inbox=scheduled_inbox.held(session, push.models, id),
        retry=data.retry_outlook(session, push.models, id),
        no_delivery=explain.NO_DELIVERY,
    )


def _category_label(category: str | None) -> str | None:
    """What people call a message's category (``PUSH_CATEGORIES``), if it has one."""
    found = _state().settings.categories.get(category) if category else None
    return found.label if found is not None else None


def cancel(id: str) -> ResponseReturnValue:
    push = _push()
    if push.db.session.get(push.models.Message, id) is None:
        return _not_found("message")
    push.cancel(id)
    return redirect(url_for(".message", id=id, done="cancel"), 303)


def retry(id: str) -> ResponseReturnValue:
    push = _push()
    if push.db.session.get(push.models.Message, id) is None:
        return _not_found("message")
    try:
        push.retry_failed(id)
    except ValidationError as err:
        if err.code != "message_cancelled":
            raise
        # the page says it: "Nothing was tried again: the message was cancelled…"
    return redirect(url_for(".message", id=id, done="retry"), 303)


def users() -> ResponseReturnValue:
    # not cut to a length: an id one character too long would show the user whose id
    # is its start; push.user_targets refuses it (a 400 page, as the API's too_long)
    user_id = request.args.get("id", "").strip()
    push = _push()
    targets = push.user_targets(user_id) if user_id else None
    # ids to pick from when none was given, or the one given has nothing
    recent = data.recent_users(push.db.session, push.models) if not targets else []
    choices = _choices(push, user_id) if user_id else None
    return _render(
        "users.html",
        page="users",
        user_id=user_id,
        targets=targets,
        recent=recent,
        choices=choices,
        channels=CHANNELS,
    )


def _choices(push: Any, user_id: str) -> dict[str, Any] | None:
    """What ``user_id`` lets through, for the users page: per category, each channel
    on or off, and whether the user may change it; their quiet hours. None without
    ``PUSH_CATEGORIES``, or for a user flask-push does not know."""
    categories = push.settings.categories
    if not categories or not known(push.db.session, push.models, user_id):
        return None  # the defaults would be shown for a mistyped id too
    chosen = push.get_preferences(user_id)
    rows = []
    for category in categories.values():
        mine = chosen.categories.get(category.id, {})
        cells = [
            (mine[channel], False)
            if channel in mine and not category.required
            else (category.is_on(channel, None), True)
            for channel in CHANNELS
        ]
        rows.append((category, cells))
    return {"rows": rows, "quiet_hours": chosen.quiet_hours}


def send() -> ResponseReturnValue:
    form: Mapping[str, str] = request.form if request.method == "POST" else request.args
    values = {name: form.get(name, "").strip() for name in ("user", "target", *SEND_FIELDS)}
    context: dict[str, Any] = {
        "page": "send",
        "values": values,
        "shown": None,
        "error": None,
        "invalid": None,  # the id of the input the error is about
        "labels": SEND_LABELS,
    }
    if request.method == "GET":
        return _render("send.html", **context)
    notification = {name: values[name] for name in SEND_FIELDS if values[name]}
    user, target = values["user"] or None, values["target"] or None
    if (user is None) == (target is None):
        context["error"] = "Give a user id or a target id (one of them)."
        context["invalid"] = "send-user" if user is None else "send-target"
        return _render("send.html", 400, **context)
    try:
        if request.form.get("action") == "send":
            push = _push()
            if user is not None:
                # a title left out is refused as notify_by_id refuses it, not a TypeError
                sent = push.send(users=[user], **{"title": None, **notification})
            else:
                sent = push.notify_by_id(target, **notification)
            return redirect(url_for(".message", id=sent.id, done="sent"), 303)
        context["shown"] = [
            (item, _pretty(item.request))
            for item in preview.previews(_state(), notification, user, target)
        ]
    except ValidationError as err:
        invalid = SEND_INPUTS.get(err.field or "")
        context["invalid"] = invalid
        context["error"] = f"{SEND_LABELS[invalid]}: {err.message}" if invalid else str(err)
        return _render("send.html", 400, **context)
    except PayloadError as err:
        context["error"] = str(err)
        return _render("send.html", 400, **context)
    return _render("send.html", **context)


def _pretty(request_parts: Any) -> str | None:
    if request_parts is None:
        return None
    return json.dumps(request_parts, indent=2, ensure_ascii=False, sort_keys=False)


def providers() -> ResponseReturnValue:
    push = _push()
    rows = []
    configured = _state().settings.providers
    for name, settings in configured.items():
        rows.append(_provider_row(name, "(app config)", settings, settings))
    model = push.models.Provider
    for row in push.db.session.query(model).order_by(model.app_id, model.kind):
        stored = _provider_row(
            row.kind,
            row.app_id,
            app_providers.shown_settings(row.kind, row.settings, current_app.config),
            {**row.settings, **row.secrets},
            config=current_app.config,
        )
        rows.append({**stored, "stored": True, "sends": app_providers.sends_for_apps(row.kind)})
    # app.config's: a stored row sends only for its app's installations
    missing = [kind for name, kind in kinds().items() if name not in configured]
    return _render("providers.html", page="providers", rows=rows, missing=missing)


def _provider_row(
    kind_name: str,
    app_id: str,
    settings: Mapping[str, Any],
    full: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One row of the providers page; ``config`` for a stored provider, which sends
    with :func:`~flask_push.app_providers.delivery_settings`."""
    kind = kinds().get(kind_name)
    secret = kind.secret_names if kind is not None else frozenset()
    shown = {k: v for k, v in settings.items() if k not in secret and v is not None}
    problem = None
    try:
        if kind is None:
            raise ValueError(f"{kind_name!r} is not a registered provider kind")
        kind.check_installed()
        if config is not None:
            full = app_providers.delivery_settings(kind_name, full, config)
        provider_class(kind_name).from_settings(full)
    except Exception as err:  # noqa: BLE001 - shown as the reason it cannot send
        problem = str(err) or type(err).__name__
    return {
        "kind": kind_name,
        "app_id": app_id,
        "settings": shown,
        "secrets": sorted(k for k in full if k in secret),
        "problem": problem,
        "stored": False,
        "sends": True,
    }


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/", "overview", overview)
    bp.add_url_rule("/messages", "messages", messages)
    bp.add_url_rule("/messages/<id>", "message", message)
    bp.add_url_rule("/messages/<id>/cancel", "cancel", cancel, methods=["POST"])
    bp.add_url_rule("/messages/<id>/retry", "retry", retry, methods=["POST"])
    bp.add_url_rule("/users", "users", users)
    bp.add_url_rule("/send", "send", send, methods=["GET", "POST"])
    bp.add_url_rule("/providers", "providers", providers)
    bp.add_app_template_global(csrf_token, "push_console_csrf_token")
    bp.add_app_template_filter(outcomes.waited, "push_console_waited")
    bp.add_app_template_filter(readable, "push_console_time")
    bp.add_app_template_filter(iso, "push_console_iso")
    bp.add_app_template_filter(activity_facts, "push_console_activity")
