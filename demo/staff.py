"""The staff console: orders board, offer pushes, ad hoc messages with analytics,
the orders export, providers and installations."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)

from flask_push import PayloadError, ValidationError

from . import notify
from .extensions import db, push
from .models import STATUS_LABELS, STATUSES, Offer, Order
from .views import (
    FormError,
    current_user,
    is_email,
    local_path,
    plural,
    redirect_back,
    staff_required,
    text_field,
)

bp = Blueprint("staff", __name__)


@bp.get("/")
@staff_required
def board() -> str:
    orders = list(db.session.scalars(sa.select(Order).order_by(Order.id.desc())))
    columns = [
        {"status": key, "label": label, "orders": [o for o in orders if o.status == key]}
        for key, label in STATUSES
    ]
    return render_template("staff/board.html", columns=columns, labels=STATUS_LABELS)


@bp.post("/orders/<int:order_id>/advance")
@staff_required
def advance(order_id: int) -> Any:
    order = db.get_or_404(Order, order_id)
    wanted = (request.form.get("status") or "").strip()
    if wanted and wanted not in STATUS_LABELS:
        raise FormError("status", f"“{wanted[:40]}” is not an order status.")
    if notify.advance_order(order, wanted or None):
        flash(f"Order #{order.id} is now {order.status_label}; {order.user.name} was notified.")
    else:  # a second click, or a page older than the order's state
        flash(f"Order #{order.id} is already {order.status_label}: nothing to advance.", "error")
    return redirect_back(request.form.get("next"), url_for("staff.board"))


@bp.get("/offers")
@staff_required
def offers() -> str:
    return _offers_page()


def _offers_page(failed: Offer | None = None, error: str | None = None) -> str:
    """The offers, each with its push form; ``failed`` is shown again as it was sent,
    with ``error`` beside it."""
    rows = list(db.session.scalars(sa.select(Offer).order_by(Offer.id)))
    drafts = {o.id: (notify.offer_default_text(o), notify.offer_default_body(o)) for o in rows}
    if failed is not None:
        drafts[failed.id] = (request.form.get("title", ""), request.form.get("body", ""))
    return render_template(
        "staff/offers.html",
        offers=rows,
        drafts=drafts,
        failed=failed.id if failed else None,
        error=error,
    )


@bp.post("/offers/<int:offer_id>/push")
@staff_required
def push_offer(offer_id: int) -> Any:
    offer = db.get_or_404(Offer, offer_id)
    try:
        title = text_field(request.form, "title", max_length=120, label="The title")
        body = text_field(request.form, "body", max_length=240, required=False, label="The text")
        message = notify.push_offer(offer, title, body)
    except (FormError, ValidationError, PayloadError) as err:
        reason = err.message if isinstance(err, FormError) else str(err)
        flash(f"{offer.name} was not sent. {reason}", "error")
        return _offers_page(failed=offer, error=reason), 400
    flash(sent_summary(message))
    return redirect(url_for("staff.messages"))


def sent_summary(message: Any) -> str:
    """What a send reached: inbox items, the browsers and phones it is queued for, and
    the pushes the shoppers' settings held back or their quiet hours hold."""
    title = message.notification["title"]
    written = notify.inbox_counts([message.id]).get(message.id, {}).get("inbox", 0)
    counts = notify.delivery_counts(message.id)
    suppressed, deferred = counts["suppressed"], counts["deferred"]
    devices = message.recipient_count
    if not (written or devices or suppressed) and message.category:
        label = notify.category_labels().get(message.category, message.category)
        return f"“{title}” reached nobody: the shoppers it was for have “{label}” turned off."
    inboxes = plural(written, "inbox", "inboxes")
    held = (
        f"{plural(suppressed, 'push', 'pushes')} held back by the shoppers’ settings "
        "or the daily cap"
    )
    if devices == 0:
        if suppressed:
            return f"“{title}” sent to {inboxes}; no browser or phone gets it: {held}."
        return f"“{title}” sent to {inboxes}; no browsers or phones are registered."
    targets = plural(devices, "browser or phone", "browsers and phones")
    summary = f"“{title}” sent to {inboxes} and queued for {targets}"
    if deferred:
        summary += f" ({deferred} of them after the shoppers’ quiet hours)"
    return summary + (f"; {held}." if suppressed else ".")


@bp.route("/messages", methods=["GET", "POST"])
@staff_required
def messages() -> Any:
    if request.method == "GET":
        return _messages_page({})
    try:
        recipients, title, body, url, category = _message_form()
        message = notify.ad_hoc(recipients, title, body, url, category)
    except (FormError, ValidationError, PayloadError) as err:
        flash(f"Not sent. {err.message if isinstance(err, FormError) else err}", "error")
        return _messages_page(request.form), 400
    flash(sent_summary(message))
    return redirect(url_for("staff.messages"))


def _messages_page(form: Any) -> str:
    return render_template(
        "staff/messages.html",
        form=form,
        kinds=notify.staff_categories(),
        category_labels=notify.category_labels(),
        off_by_default=notify.off_by_default(),
    )


def _message_form() -> tuple[list[Any], str, str | None, str | None, str]:
    """The message form's recipients, title, text, link and category, checked."""
    form = request.form
    audience = form.get("audience", "all")
    if audience not in ("all", "emails"):
        raise FormError("audience", "Choose all customers, or customers by email.")
    title = text_field(form, "title", max_length=120, label="A title")
    body = text_field(form, "body", max_length=500, required=False, label="The text")
    url = text_field(form, "url", max_length=2048, required=False, label="The link")
    if url and not (local_path(url, "") or _web_address(url)):
        raise FormError(
            "url", "The link must be a path on this shop, such as /orders, or an http(s) address."
        )
    if audience == "all":
        recipients = notify.customers()
    else:
        emails = text_field(form, "emails", max_length=5000, label="A list of emails")
        recipients, missing = notify.users_by_email(emails)
        bad = [e for e in missing if not is_email(e)]
        if bad:
            raise FormError("emails", f"Not an email address: {', '.join(bad[:5])}")
        if missing:
            raise FormError("emails", f"No customer with: {', '.join(missing[:5])}")
    if not recipients:
        raise FormError("audience", "Nobody to send to: there are no customers yet.")
    category = form.get("category", "")
    kinds = dict(notify.staff_categories())
    if category not in kinds:
        raise FormError("category", f"Choose what the message is: {', '.join(kinds.values())}.")
    return recipients, title, body or None, url or None, category


def _web_address(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[": an unbalanced IPv6 bracket
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@bp.get("/messages/inbox.json")
@staff_required
def messages_inbox() -> Any:
    """Per message (``?id=..&id=..``, at most 100), the inbox items it wrote and how many
    were read: the analytics beside flask-push's delivery counts."""
    ids = request.args.getlist("id")
    if len(ids) > 100:
        raise FormError("id", "Ask for at most 100 messages at a time.")
    return jsonify(notify.inbox_counts(ids))


@bp.post("/export")
@staff_required
def export() -> Any:
    user = current_user()
    assert user is not None
    notify.start_export(user)
    flash("Export started: follow it in the bell.")
    return redirect_back(request.form.get("next"), url_for("staff.board"))


@bp.get("/exports/<name>")
@staff_required
def export_file(name: str) -> Any:
    if not name.endswith(".csv") or os.sep in name:
        abort(404)
    return send_from_directory(notify.export_dir(current_app), name, as_attachment=True)


@bp.get("/providers")
@staff_required
def providers() -> str:
    configured = []
    config = current_app.config
    if config.get("PUSH_VAPID_PRIVATE_KEY"):
        configured.append(("Web Push (VAPID)", config.get("PUSH_VAPID_SUBJECT", "")))
    if config.get("PUSH_FCM_CREDENTIALS"):
        configured.append(("FCM", config.get("PUSH_FCM_BASE_URL", "Google")))
    if config.get("PUSH_APNS_KEY"):
        configured.append(("APNs", config.get("PUSH_APNS_BASE_URL", "Apple")))
    return render_template("staff/providers.html", configured=configured)


@bp.get("/installations")
@staff_required
def installations() -> str:
    models = push.models
    installs = list(
        db.session.scalars(
            sa.select(models.Installation).order_by(models.Installation.created_at.desc())
        )
    )
    subscriptions = list(
        db.session.scalars(
            sa.select(models.Subscription).order_by(models.Subscription.created_at.desc())
        )
    )
    from .models import User

    names = {u.push_id: u.name for u in db.session.scalars(sa.select(User))}
    return render_template(
        "staff/installations.html",
        installations=installs,
        subscriptions=subscriptions,
        names=names,
    )
