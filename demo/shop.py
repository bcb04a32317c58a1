"""The shopper's pages: catalog, sharing, cart, orders, notifications and their
settings, simulated phones."""

from __future__ import annotations

import zoneinfo
from functools import cache
from typing import Any

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
    url_for,
)
from werkzeug.security import check_password_hash

from flask_push import ValidationError

from . import notify, phones
from .extensions import db, push
from .models import CartItem, Offer, Order, OrderEvent, OrderLine, Product, User, money
from .views import (
    MAX_QUANTITY,
    FormError,
    current_user,
    int_field,
    is_email,
    login_required,
    redirect_back,
    sign_in,
)

bp = Blueprint("shop", __name__)


def _customer(reason: str | None = None) -> User:
    """The signed-in shopper; a 403 for staff, with ``reason`` on the page when given."""
    user = current_user()
    if user is None or user.is_staff:
        abort(403, reason)
    return user


#: why staff may not open the shoppers' notification settings and simulated phones:
#: the staff's inbox (new orders, exports) has no category and reaches no phone, so
#: what they chose there would change nothing
STAFF_HAVE_NO_SETTINGS = (
    "Notification settings are the shoppers' choices. Staff get new orders and exports "
    "in the bell's inbox only, which no setting changes."
)
STAFF_HAVE_NO_PHONES = (
    "Simulated phones are the shoppers': staff get nothing on a phone. Devices lists "
    "the browsers and phones the shoppers registered."
)


@bp.get("/")
def index() -> str:
    category = request.args.get("category")
    query = sa.select(Product).order_by(Product.id)
    if category:
        query = query.where(Product.category == category)
    products = list(db.session.scalars(query))
    offers = list(db.session.scalars(sa.select(Offer).order_by(Offer.id)))
    categories = list(db.session.scalars(sa.select(Product.category).distinct()))
    if category and category not in categories:
        # an empty shop, no chip chosen and no word of why: a page of its own instead
        abort(404, f"There is no “{category[:40]}” aisle in this shop.")
    return render_template(
        "index.html",
        products=products,
        offers=offers,
        categories=sorted(categories),
        category=category,
    )


@bp.get("/products/<slug>")
def product(slug: str) -> str:
    item = db.first_or_404(sa.select(Product).where(Product.slug == slug))
    offers = list(db.session.scalars(sa.select(Offer).where(Offer.product_id == item.id)))
    return render_template("product.html", product=item, offers=offers)


@bp.get("/offers/<slug>")
def offer(slug: str) -> str:
    item = db.first_or_404(sa.select(Offer).where(Offer.slug == slug))
    return render_template("offer.html", offer=item)


#: what a shopper can share, by the ``kind`` in its URL (each has a page ``shop.<kind>``)
SHAREABLE: dict[str, type[Product] | type[Offer]] = {"product": Product, "offer": Offer}


@bp.post("/share/<kind>/<slug>")
@login_required
def share(kind: str, slug: str) -> Any:
    model = SHAREABLE.get(kind) or abort(404)
    item = db.first_or_404(sa.select(model).where(model.slug == slug))
    message = notify.share(_customer(), item)
    count = len(notify.customers()) - 1
    flash(
        f"Shared {item.name} with {count} other shoppers." if message else "Nobody to share with."
    )
    return redirect(url_for(f"shop.{kind}", slug=slug))


# -- cart and orders -------------------------------------------------------------


#: the largest id a form may name (ids are positive 32-bit integers)
MAX_ID = 2**31 - 1


@bp.post("/cart")
@login_required
def cart_add() -> Any:
    user = _customer()
    offer_row = None
    if offer_id := int_field(request.form, "offer_id", low=1, high=MAX_ID, default=0):
        offer_row = db.get_or_404(Offer, offer_id)
        product_id = offer_row.product_id
    else:
        product_id = int_field(request.form, "product_id", low=1, high=MAX_ID, label="Product")
    product_row = db.get_or_404(Product, product_id)
    try:
        quantity = int_field(
            request.form, "quantity", low=1, high=MAX_QUANTITY, default=1, label="Quantity"
        )
        line = _add_to_cart(user, product_row, offer_row, quantity)
    except FormError as err:
        # back to the item's page, with the message and a 400
        flash(err.message, "error")
        page = offer(offer_row.slug) if offer_row else product(product_row.slug)
        return page, 400
    flash(f"Added {line.name} to your cart.")  # as the cart's line says it
    return redirect_back(request.form.get("next"), url_for("shop.cart"))


def _add_to_cart(user: User, item: Product, deal: Offer | None, quantity: int) -> CartItem:
    """Add ``quantity`` of ``item`` (at the ``deal`` price) to the user's cart line for it,
    which it returns; a line holds at most ``MAX_QUANTITY``."""
    line = db.session.scalar(
        sa.select(CartItem).where(
            CartItem.user_id == user.id,
            CartItem.product_id == item.id,
            CartItem.offer_id == deal.id if deal else CartItem.offer_id.is_(None),
        )
    )
    if line is None:
        line = CartItem(user_id=user.id, product=item, offer=deal, quantity=0)
    if line.quantity + quantity > MAX_QUANTITY:
        raise FormError(
            "quantity",
            f"An order takes at most {MAX_QUANTITY} of one item, and your cart already "
            f"has {line.quantity} of {line.name}.",
        )
    line.quantity += quantity
    db.session.add(line)
    db.session.commit()
    return line


@bp.get("/cart")
@login_required
def cart() -> str:
    user = _customer()
    lines = list(db.session.scalars(sa.select(CartItem).where(CartItem.user_id == user.id)))
    total = sum(line.unit_cents * line.quantity for line in lines)
    return render_template("cart.html", lines=lines, total=total)


@bp.post("/cart/<int:line_id>/remove")
@login_required
def cart_remove(line_id: int) -> Any:
    line = db.get_or_404(CartItem, line_id)
    if line.user_id != _customer().id:
        abort(404)
    db.session.delete(line)
    db.session.commit()
    return redirect(url_for("shop.cart"))


@bp.post("/checkout")
@login_required
def checkout() -> Any:
    user = _customer()
    lines = list(db.session.scalars(sa.select(CartItem).where(CartItem.user_id == user.id)))
    if not lines:
        flash("Your cart is empty.")
        return redirect(url_for("shop.cart"))
    order = place_order(user, lines)
    flash(f"Order #{order.id} placed. We will keep you posted here, live.")
    return redirect(url_for("shop.order", order_id=order.id))


def place_order(user: User, lines: list[CartItem]) -> Order:
    order = Order(user_id=user.id, status="placed")
    for line in lines:
        order.lines.append(
            OrderLine(name=line.name, quantity=line.quantity, unit_cents=line.unit_cents)
        )
        db.session.delete(line)
    order.total_cents = sum(line.unit_cents * line.quantity for line in order.lines)
    db.session.add(order)
    db.session.flush()
    placed = OrderEvent(order_id=order.id, status="placed")
    db.session.add(placed)
    db.session.commit()
    # the shopper's screens: the order's live activity starts
    notify.order_activity(order, "placed", placed.at)
    # the staff's bell: a new order to prepare
    for member in notify.staff():
        push.upsert(
            member.push_id,
            notify_type="new_order",
            title=f"New order #{order.id}",
            body=f"{user.name}: {money(order.total_cents)}",
            url=url_for("shop.order", order_id=order.id),  # staff see it with "Advance status"
        )
    return order


def _own_order(order_id: int) -> Order:
    order = db.get_or_404(Order, order_id)
    user = current_user()
    if user is None or (not user.is_staff and order.user_id != user.id):
        abort(404)
    return order


@bp.get("/orders")
@login_required
def orders() -> str:
    user = _customer()
    rows = list(
        db.session.scalars(
            sa.select(Order).where(Order.user_id == user.id).order_by(Order.id.desc())
        )
    )
    return render_template("orders.html", orders=rows)


@bp.get("/orders/<int:order_id>")
@login_required
def order(order_id: int) -> str:
    return render_template("order.html", order=_own_order(order_id))


@bp.get("/orders/<int:order_id>.json")
@login_required
def order_json(order_id: int) -> Any:
    """The order's timeline, for a page that lost its websocket and reloads state."""
    row = _own_order(order_id)
    return jsonify(
        {
            "id": row.id,
            "status": row.status,
            "label": row.status_label,
            "timeline": [
                {**step, "at": step["at"].isoformat() + "Z" if step["at"] else None}
                for step in row.timeline()
            ],
        }
    )


# -- notifications history ---------------------------------------------------------


@bp.get("/notifications")
@login_required
def notifications() -> str:
    user = current_user()
    assert user is not None
    page = int_field(request.args, "page", low=0, high=10_000, default=0)
    result = push.search(user.push_id, skip=page * 20, take=20)
    return render_template("notifications.html", result=result, page=page)


@bp.post("/notifications/read-all")
@login_required
def notifications_read_all() -> Any:
    user = current_user()
    assert user is not None
    push.mark_all_read(user.push_id)
    return redirect(url_for("shop.notifications"))


# -- notification settings: what reaches the shopper, and when ------------------------

#: each channel a shopper chooses, as the page names it
CHANNEL_LABELS = {"web": "Browsers", "mobile": "Phones", "inbox": "Inbox"}
#: flask-push's field of a refused preference -> (the form's field, its label)
SETTINGS_FIELDS = {
    "quietHours.start": ("quiet_start", "The start"),
    "quietHours.end": ("quiet_end", "The end"),
    "quietHours.timeZone": ("time_zone", "The time zone"),
}
#: quiet hours offered to a shopper who has none yet
QUIET_DEFAULT = {"start": "22:00", "end": "07:00", "time_zone": ""}


@cache
def time_zones() -> list[str]:
    """The IANA zones people live in (Europe/Berlin, America/New_York), and UTC."""
    legacy = ("Etc/", "SystemV/", "US/", "posix", "right/")
    return sorted(
        {"UTC"}
        | {
            zone
            for zone in zoneinfo.available_timezones()
            if "/" in zone and not zone.startswith(legacy)
        }
    )


@bp.route("/settings/notifications", methods=["GET", "POST"])
@login_required
def notification_settings() -> Any:
    """A plain form: a box per category and channel, and the quiet hours. Saved
    through ``push.set_preferences`` all at once, or, when flask-push refuses a
    value, not at all (the form comes back as sent, with the reason beside the field)."""
    user = _customer(STAFF_HAVE_NO_SETTINGS)
    categories = push.settings.categories.values()
    if request.method == "GET":
        saved = push.get_preferences(user.push_id)
        quiet = saved.quiet_hours
        return _settings_page(
            saved.categories,
            {
                "on": quiet is not None,
                **(
                    {"start": quiet.start, "end": quiet.end, "time_zone": quiet.time_zone}
                    if quiet
                    else QUIET_DEFAULT
                ),
            },
        )
    form = request.form
    chosen = {
        c.id: {channel: f"{c.id}.{channel}" in form for channel in c.channels} for c in categories
    }
    quiet_on = form.get("quiet") == "on"
    quiet_hours = {
        "start": _local_time(form.get("quiet_start", "")),
        "end": _local_time(form.get("quiet_end", "")),
        "time_zone": form.get("time_zone", "").strip(),
    }
    try:
        if form.get("quiet") not in ("on", "off"):
            raise FormError("quiet", "Choose quiet hours, or none.")
        if quiet_on and not quiet_hours["time_zone"]:
            raise FormError("time_zone", "Choose your time zone.")
        push.set_preferences(
            user.push_id,
            # a required category cannot be turned off: its boxes are not sent
            categories={c.id: chosen[c.id] for c in categories if not c.required},
            quiet_hours=quiet_hours if quiet_on else None,
        )
    except (FormError, ValidationError) as err:
        if isinstance(err, FormError):
            field, message = err.field, err.message
        else:
            field, label = SETTINGS_FIELDS.get(err.field or "", ("categories", "This choice"))
            message = f"{label} {err.message}."
        flash("Nothing was saved: fix what is marked below.", "error")
        return _settings_page(chosen, {"on": quiet_on, **quiet_hours}, {field: message}), 400
    flash("Your notification settings are saved.")
    return redirect(url_for("shop.notification_settings"))


def _local_time(value: str) -> str:
    """A time field's value as HH:MM: a browser may add seconds (``22:00:00``)."""
    value = value.strip()
    return value[:5] if len(value) == 8 and value.endswith(":00") else value


def _settings_page(
    chosen: dict[str, dict[str, bool]],
    quiet: dict[str, Any],
    errors: dict[str, str] | None = None,
) -> str:
    rows = []
    for c in push.settings.categories.values():
        if c.required:
            hint = "Always on"
        elif c.max_per_day:
            hint = f"At most {c.max_per_day} a day"
        elif not c.default:
            hint = "Off until you turn it on"
        else:
            hint = ""
        rows.append(
            {
                "id": c.id,
                "label": c.label,
                "required": c.required,
                "hint": hint,
                "channels": [
                    {
                        "name": f"{c.id}.{channel}",
                        "label": CHANNEL_LABELS[channel],
                        "on": c.required or chosen.get(c.id, {}).get(channel, False),
                    }
                    for channel in c.channels
                ],
            }
        )
    zones = time_zones()
    if quiet["time_zone"] and quiet["time_zone"] not in zones:
        zones = [quiet["time_zone"], *zones]  # kept as sent, to fix
    return render_template(
        "settings.html", rows=rows, quiet=quiet, zones=zones, errors=errors or {}
    )


# -- simulated phones ----------------------------------------------------------------


@bp.get("/devices")
@login_required
def devices() -> str:
    user = _customer(STAFF_HAVE_NO_PHONES)
    return render_template(
        "devices.html",
        installations=phones.installations(user.push_id),
        received=phones.received(user.push_id),
        screens=phones.screens(user.push_id),
        fakes=phones.fakes(),
        app_id=current_app.config["DEMO_APP_ID"],
    )


@bp.get("/devices/received.json")
@login_required
def devices_received() -> Any:
    """What the page refreshes: the services' log, each device's screen (drawn here,
    as on the page), and the Live Activities whose token the simulated app is to
    register."""
    user = _customer(STAFF_HAVE_NO_PHONES)
    shown = phones.screens(user.push_id)
    return jsonify(
        {
            "received": phones.received(user.push_id),
            "screens": render_template("_screens.html", screens=shown),
            "register": phones.to_register(shown),
        }
    )


# -- sign in -------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error, status = None, 200
    if request.method == "POST":
        email = (request.form.get("email") or "").strip().lower()
        password = request.form.get("password") or ""
        if not email or not password:
            error, status = "Enter your email and your password.", 400
        elif not is_email(email):
            error, status = f"“{email[:80]}” is not an email address.", 400
        else:
            user = db.session.scalar(sa.select(User).where(User.email == email))
            if user and check_password_hash(user.password_hash, password):
                sign_in(user)
                home = url_for("staff.board") if user.is_staff else url_for("shop.index")
                return redirect_back(request.args.get("next"), home)
            # a wrong password is not malformed input: the page answers 200, as before
            error = "Wrong email or password."
    users = list(db.session.scalars(sa.select(User).order_by(User.role.desc(), User.id)))
    return render_template("login.html", error=error, users=users), status


@bp.post("/logout")
def logout() -> Any:
    from flask import session

    session.clear()
    return redirect(url_for("shop.index"))
