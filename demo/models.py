"""The storefront's own tables, on the same ``db`` as flask-push's ``push_*`` tables."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db

#: an order's statuses, in the order they happen, with the label shown to people
STATUSES: list[tuple[str, str]] = [
    ("placed", "Placed"),
    ("confirmed", "Confirmed"),
    ("preparing", "Preparing"),
    ("out_for_delivery", "Out for delivery"),
    ("delivered", "Delivered"),
]
STATUS_LABELS = dict(STATUSES)


def money(cents: int) -> str:
    """A price as the shop writes it everywhere: pages, pushes and Live Activities."""
    return f"${cents / 100:,.2f}"


class TimelineStep(TypedDict):
    """An order's status on its timeline: ``at`` is when it happened, None not yet."""

    status: str
    label: str
    at: datetime | None


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# Flask-SQLAlchemy makes db.Model at run time, an attribute of db: mypy cannot name it
# as a base class (name-defined) and so takes it as Any, which strict forbids (misc).
class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "demo_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(255), unique=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(16), default="customer")

    @property
    def push_id(self) -> str:
        """The id flask-push knows this user by (what ``identity_loader`` returns)."""
        return str(self.id)

    @property
    def is_staff(self) -> bool:
        return self.role == "staff"


class Product(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "demo_products"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(sa.String(80), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    category: Mapped[str] = mapped_column(sa.String(40))
    description: Mapped[str] = mapped_column(sa.Text)
    price_cents: Mapped[int] = mapped_column(sa.Integer)
    image: Mapped[str] = mapped_column(sa.String(255))


class Offer(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "demo_offers"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(sa.String(80), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str] = mapped_column(sa.Text)
    discount_percent: Mapped[int] = mapped_column(sa.Integer)
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("demo_products.id"))
    image: Mapped[str] = mapped_column(sa.String(255))
    product: Mapped[Product] = relationship()

    @property
    def price_cents(self) -> int:
        return round(self.product.price_cents * (100 - self.discount_percent) / 100)


class CartItem(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "demo_cart_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("demo_users.id"), index=True)
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("demo_products.id"))
    offer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("demo_offers.id"))
    quantity: Mapped[int] = mapped_column(sa.Integer, default=1)
    product: Mapped[Product] = relationship()
    offer: Mapped[Offer | None] = relationship()

    @property
    def name(self) -> str:
        """What the line is called: the offer's name, else the product's."""
        return (self.offer or self.product).name

    @property
    def unit_cents(self) -> int:
        return self.offer.price_cents if self.offer else self.product.price_cents


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "demo_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("demo_users.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(32), default="placed")
    total_cents: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    user: Mapped[User] = relationship()
    lines: Mapped[list[OrderLine]] = relationship(cascade="all, delete-orphan")
    events: Mapped[list[OrderEvent]] = relationship(
        cascade="all, delete-orphan", order_by="OrderEvent.id"
    )

    @property
    def status_label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status)

    @property
    def next_status(self) -> str | None:
        keys = [key for key, _ in STATUSES]
        index = keys.index(self.status)
        return keys[index + 1] if index + 1 < len(keys) else None

    def timeline(self) -> list[TimelineStep]:
        """Every status with when it happened (None: not yet)."""
        reached = {event.status: event.at for event in self.events}
        return [{"status": key, "label": label, "at": reached.get(key)} for key, label in STATUSES]


class OrderLine(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "demo_order_lines"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("demo_orders.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(160))
    quantity: Mapped[int] = mapped_column(sa.Integer)
    unit_cents: Mapped[int] = mapped_column(sa.Integer)


class OrderEvent(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "demo_order_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("demo_orders.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(32))
    at: Mapped[datetime] = mapped_column(default=utcnow)
