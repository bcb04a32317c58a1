"""Everything the storefront pushes, in one place: each hook is a few lines of
flask-push's public API (``send``, ``activity``, ``upsert``).

Every send names its category of ``PUSH_CATEGORIES`` (``demo/__init__.py``), so what
reaches a shopper follows her "Notification settings": order updates always, offers
(at most two a day), shares and news as she chose."""

from __future__ import annotations

import csv
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, url_for

from flask_push import reports

from .extensions import db, push
from .models import STATUS_LABELS, STATUSES, Offer, Order, OrderEvent, Product, User, money


def customers() -> list[User]:
    return list(db.session.scalars(sa.select(User).where(User.role == "customer")))


def staff() -> list[User]:
    return list(db.session.scalars(sa.select(User).where(User.role == "staff")))


def share(sharer: User, item: Product | Offer) -> Any:
    """Tell the other customers that ``sharer`` shared a product or an offer."""
    kind = "offer" if isinstance(item, Offer) else "product"
    others = [user.push_id for user in customers() if user.id != sharer.id]
    if not others:
        return None
    return push.send(
        users=others,
        title=f"{sharer.name} shared {item.name}",
        body=item.description[:120],
        url=url_for(f"shop.{kind}", slug=item.slug),
        # a full URL: phones download the picture themselves, and a path means
        # nothing to them (the shop sets no PUSH_SITE_URL: it runs on any port)
        image=url_for("static", filename=item.image, _external=True),
        data={"kind": kind, "slug": item.slug, "sharedBy": sharer.name},
        inbox=True,
        notify_type="share",
        category="shares",
    )


def advance_order(order: Order, status: str | None = None) -> str | None:
    """Move ``order`` to ``status`` (the next one by default), then show its new state
    to its customer, in place (:func:`order_activity`). A status the order has reached
    already is not a move: None."""
    status = status or order.next_status
    keys = [key for key, _ in STATUSES]
    if status not in STATUS_LABELS or keys.index(status) <= keys.index(order.status):
        return None
    order.status = status
    event = OrderEvent(order_id=order.id, status=status)
    db.session.add(event)
    db.session.commit()
    order_activity(order, status, event.at)
    return status


#: minutes from each status to the door, for the ETA the order's updates show
MINUTES_LEFT = {"placed": 45, "confirmed": 40, "preparing": 30, "out_for_delivery": 15}
#: an ended order's Live Activity stays on the lock screen this long
DISMISS_AFTER = timedelta(hours=1)


def activity_id(order: Order) -> str:
    """The id of the order's live activity (and of its customer's inbox item)."""
    return f"order-{order.id}"


def order_activity(order: Order, status: str, at: datetime) -> Any:
    """Show the order's new state on every screen of its customer, in place, with one
    ``push.activity`` call: placing the order starts the activity, delivering it ends
    it. Her inbox keeps one item for the order with its progress, her browsers and
    Android phones replace the order's notification, iPhones show a Live Activity (the
    start by its push-to-start token, the rest by the activity's own token), and
    pages showing the order follow ``activity:order-<n>``."""
    keys = [key for key, _ in STATUSES]
    state: dict[str, Any] = {"status": status, "step": keys.index(status) + 1, "steps": len(keys)}
    if status in MINUTES_LEFT:  # UTC, as the shop shows its times
        state["eta"] = (at + timedelta(minutes=MINUTES_LEFT[status])).strftime("%H:%M")
    event = "start" if status == keys[0] else "end" if status == keys[-1] else "update"
    extra: dict[str, Any] = {}
    if event == "start":
        # what the iPhone app's Live Activity is made with (ActivityKit's attributes)
        extra = {
            "attributes_type": "OrderAttributes",
            "attributes": {"orderId": order.id, "total": money(order.total_cents)},
        }
    elif event == "end":
        extra = {"dismiss_at": datetime.now(timezone.utc) + DISMISS_AFTER}
    return push.activity(
        activity_id(order),
        users=[order.user.push_id],
        title=f"Order #{order.id}: {STATUS_LABELS[status]}",
        body=_status_body(status),
        state=state,
        url=url_for("shop.order", order_id=order.id),
        event=event,
        category="order_status",
        **extra,
    )


def _status_body(status: str) -> str:
    return {
        "placed": "We got your order.",
        "confirmed": "The shop confirmed your order.",
        "preparing": "Your order is being packed.",
        "out_for_delivery": "Your courier is on the way.",
        "delivered": "Enjoy! Your order was delivered.",
    }[status]


def offer_default_text(offer: Offer) -> str:
    return f"Exclusive Offer: {offer.name}"


def offer_default_body(offer: Offer) -> str:
    return f"{offer.discount_percent}% off {offer.product.name}."


def push_offer(offer: Offer, title: str | None = None, body: str | None = None) -> Any:
    """Push an offer to every customer (their inbox too). ``None`` means the default
    text; an empty ``body`` means none (an empty title is refused by ``push.send``)."""
    return push.send(
        users=[user.push_id for user in customers()],
        title=offer_default_text(offer) if title is None else title,
        body=offer_default_body(offer) if body is None else body or None,
        url=url_for("shop.offer", slug=offer.slug),
        image=url_for("static", filename=offer.image, _external=True),
        data={"kind": "offer", "slug": offer.slug},
        inbox=True,
        notify_type="offer",
        category="offers",
    )


def users_by_email(emails: str) -> tuple[list[User], list[str]]:
    """The customers named in a comma, space or newline separated list, and the
    addresses no customer has."""
    wanted = [e.strip().lower() for e in emails.replace(",", " ").split() if e.strip()]
    found = {
        user.email: user
        for user in db.session.scalars(
            sa.select(User).where(User.email.in_(wanted), User.role == "customer")
        )
    }
    return [found[e] for e in wanted if e in found], [e for e in wanted if e not in found]


#: what the staff's own messages may be: shares come from shoppers only
STAFF_CATEGORIES = ("news", "offers", "order_status")


def staff_categories() -> list[tuple[str, str]]:
    """The categories a staff message may have, as (id, label), news first."""
    configured = push.settings.categories
    return [(id, configured[id].label) for id in STAFF_CATEGORIES if id in configured]


def category_labels() -> dict[str, str]:
    """Every category's label by id."""
    return {id: category.label for id, category in push.settings.categories.items()}


def off_by_default() -> list[str]:
    """The categories a shopper gets nothing of until she turns them on (news)."""
    categories = push.settings.categories.items()
    return [id for id, category in categories if not (category.default or category.required)]


def type_labels() -> dict[str, str]:
    """What the Notifications page and the bell call each inbox item's type: its
    category's label, as the notification settings name it."""
    labels = category_labels()
    return {
        **labels,  # a staff message's type is its category
        "activity": labels["order_status"],  # an order's live activity
        "share": labels["shares"],
        "offer": labels["offers"],
        "export": "Export",
        "announcement": "Announcement",  # staff messages of earlier versions of the demo
    }


def ad_hoc(
    recipients: list[User], title: str, body: str | None, url: str | None, category: str
) -> Any:
    return push.send(
        users=[user.push_id for user in recipients],
        title=title,
        body=body or None,
        url=url or None,
        inbox=True,
        notify_type=category,  # named in the inbox as its category is in the settings
        category=category,
    )


def delivery_counts(message_id: str) -> dict[str, int]:
    """The message's deliveries per status, with ``suppressed`` (the shoppers' settings
    or the daily cap) and ``deferred`` (waiting for quiet hours)."""
    return reports.message_counts(db.session, push.models, [message_id])[message_id]


def inbox_counts(message_ids: list[str]) -> dict[str, dict[str, Any]]:
    """How many inbox items each message wrote (``item``: their id), how many of them
    were read, and for how many of the shoppers it was for their notification
    settings held the item back (``heldBack``: ``push.send(inbox=True)`` gives each
    user's item the message's id, unless her settings have the message's category off
    in her inbox; each state of an order's live activity updates the item whose id is
    the activity's, but a catch-up of a state to a Live Activity's new token writes
    none). Messages not found are left out."""
    message, item = push.models.Message, push.models.InboxItem
    sent = db.session.execute(
        sa.select(
            message.id, message.activity_id, message.inbox, message.category, message.audience
        ).where(message.id.in_(message_ids))
    ).all()
    # an activity's states share one item per user: the activity's id
    item_ids = {
        row.id: (row.activity_id if row.inbox and row.activity_id else row.id) for row in sent
    }
    rows = db.session.execute(
        sa.select(item.id, sa.func.count(), sa.func.sum(sa.case((item.is_new, 0), else_=1)))
        .where(item.id.in_(set(item_ids.values())))
        .group_by(item.id)
    )
    counts = {id: (int(count), int(read or 0)) for id, count, read in rows}
    answer: dict[str, dict[str, Any]] = {}
    for row in sent:
        written, read = counts.get(item_ids[row.id], (0, 0))
        answer[row.id] = {
            "inbox": written,
            "read": read,
            "heldBack": _held_back(row, written),
            # the items' id: the states of an order share theirs, counted once in sums
            "item": item_ids[row.id],
        }
    return answer


def _held_back(sent: Any, written: int) -> int:
    """Of the shoppers a message with an inbox item and a category was for, those
    who got no item: the send gives one to each of them but those whose settings
    have the category off in the inbox (the demo sends to lists of users, and
    schedules nothing, whose items would wait)."""
    users = (sent.audience or {}).get("users") if isinstance(sent.audience, dict) else None
    if not (sent.inbox and sent.category and isinstance(users, list)):
        return 0
    return max(0, len(set(users)) - written)


# -- the orders export: a background job reporting to one inbox item ------------


def export_dir(app: Flask) -> str:
    path = os.path.join(app.instance_path, "exports")
    os.makedirs(path, exist_ok=True)
    return path


def start_export(user: User) -> tuple[str, threading.Thread]:
    """Start exporting every order as CSV in a thread; returns the inbox item's id
    (updated in place as the export goes) and the thread."""
    total = db.session.scalar(sa.select(sa.func.count()).select_from(Order)) or 0
    item = push.upsert(
        user.push_id,
        notify_type="export",
        title="Orders export",
        body="Starting…",
        progress={"total": total, "processed": 0},
    )
    # the app itself for the thread, not the proxy; Flask types current_app as the app,
    # so mypy does not know the proxy's method
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=_run_export, args=(app, user.push_id, item.id), name="demo-export", daemon=True
    )
    thread.start()
    return item.id, thread


def _run_export(app: Flask, user_id: str, item_id: str) -> None:
    delay = float(app.config.get("DEMO_EXPORT_DELAY", 0))
    with app.app_context():
        orders = list(db.session.scalars(sa.select(Order).order_by(Order.id)))
        total = len(orders)
        if not orders:
            # a CSV of its header line alone is nothing to download: say why instead
            push.upsert(
                user_id,
                item_id,
                title="Nothing to export yet",
                body="No orders yet: the export lists every order once shoppers have placed some.",
                progress={"total": 0, "processed": 0},
                is_new=True,
            )
            return
        name = f"orders-{item_id}.csv"
        with open(os.path.join(export_dir(app), name), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["order", "customer", "status", "total", "placed_at"])
            for done, order in enumerate(orders, start=1):
                writer.writerow(
                    [
                        order.id,
                        order.user.email,
                        order.status,
                        f"{order.total_cents / 100:.2f}",
                        order.created_at.isoformat(),
                    ]
                )
                push.upsert(
                    user_id,
                    item_id,
                    body=f"{done} of {total} orders",
                    progress={"total": total, "processed": done},
                )
                if delay:
                    time.sleep(delay)
        with app.test_request_context():
            link = url_for("staff.export_file", name=name)
        push.upsert(
            user_id,
            item_id,
            title="Orders export ready",
            body=f"{total} order{'' if total == 1 else 's'}. Download the CSV.",
            url=link,
            progress={"total": total, "processed": total},
            is_new=True,
        )
        db.session.remove()
