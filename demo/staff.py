"""The staff console: orders board, offer pushes, ad hoc messages with analytics,
the orders export, providers and installations."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
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
from .views import current_user, plural, staff_required

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
    status = notify.advance_order(order, request.form.get("status") or None)
    if status:
        flash(f"Order #{order.id} is now {order.status_label}; {order.user.name} was notified.")
    return redirect(request.form.get("next") or url_for("staff.board"))


@bp.get("/offers")
@staff_required
def offers() -> str:
    rows = list(db.session.scalars(sa.select(Offer).order_by(Offer.id)))
    return render_template("staff/offers.html", offers=rows, default_text=notify.offer_default_text)


@bp.post("/offers/<int:offer_id>/push")
@staff_required
def push_offer(offer_id: int) -> Any:
    offer = db.get_or_404(Offer, offer_id)
    try:
        message = notify.push_offer(offer, request.form.get("title"), request.form.get("body"))
    except (ValidationError, PayloadError) as err:
        flash(f"Not sent: {err}", "error")
        return redirect(url_for("staff.offers"))
    flash(f"“{message.notification['title']}” queued for {message.recipient_count} devices.")
    return redirect(url_for("staff.messages"))


@bp.route("/messages", methods=["GET", "POST"])
@staff_required
def messages() -> Any:
    if request.method == "POST":
        title = (request.form.get("title") or "").strip()
        audience = request.form.get("audience", "all")
        missing: list[str] = []
        if audience == "emails":
            recipients, missing = notify.users_by_email(request.form.get("emails", ""))
        else:
            recipients = notify.customers()
        if not title:
            flash("A title is needed.", "error")
        elif missing:
            flash(f"No customer with: {', '.join(missing)}", "error")
        elif not recipients:
            flash("Nobody to send to.", "error")
        else:
            try:
                message = notify.ad_hoc(
                    recipients, title, request.form.get("body"), request.form.get("url")
                )
            except (ValidationError, PayloadError) as err:
                flash(f"Not sent: {err}", "error")
            else:
                count = message.recipient_count
                targets = plural(count, "browser or device", "browsers and devices")
                flash(f"Queued for {plural(len(recipients), 'customer')} ({targets}).")
                return redirect(url_for("staff.messages"))
    return render_template("staff/messages.html", form=request.form)


@bp.post("/export")
@staff_required
def export() -> Any:
    user = current_user()
    assert user is not None
    notify.start_export(user)
    flash("Export started: follow it in the bell.")
    return redirect(request.form.get("next") or url_for("staff.board"))


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
