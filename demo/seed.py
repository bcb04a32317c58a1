"""Seed data: a small grocery catalog, offers, three customers and a staff user.

Running it again changes nothing that exists (rows are matched by slug or email).
"""

from __future__ import annotations

import functools

import click
import sqlalchemy as sa
from werkzeug.security import generate_password_hash

from .extensions import db
from .models import Offer, Product, User
from .schema import create_tables

#: every seeded account's password (the demo prints it)
PASSWORD = "demo1234"

USERS = [
    ("alice@example.com", "Alice", "customer"),
    ("bob@example.com", "Bob", "customer"),
    ("carol@example.com", "Carol", "customer"),
    ("staff@example.com", "Sam (staff)", "staff"),
]


@functools.cache
def _password_hash() -> str:
    """The hash of :data:`PASSWORD`, made once per process: a scrypt hash costs about
    0.1 s of CPU, and the tests seed a fresh database for each of many tests. Every
    account shares the published password, so one salt for them all hides nothing."""
    return generate_password_hash(PASSWORD)


PRODUCTS = [
    ("avocados", "Hass avocados (4)", "Fruit & veg", 549, "Creamy, ripe and ready for toast."),
    ("strawberries", "Strawberries 400 g", "Fruit & veg", 399, "Sweet berries from local farms."),
    ("oranges", "Navel oranges 1 kg", "Fruit & veg", 329, "Juicy and seedless."),
    ("sourdough", "Sourdough loaf", "Bakery", 475, "Baked this morning, crackly crust."),
    ("croissants", "Butter croissants (4)", "Bakery", 520, "Flaky, all-butter."),
    ("milk", "Organic whole milk 1 l", "Dairy", 189, "From grass-fed cows."),
    ("cheddar", "Aged cheddar 200 g", "Dairy", 625, "Twelve months, sharp and nutty."),
    ("coffee", "Cold brew coffee", "Drinks", 349, "Smooth, low acidity, 330 ml."),
    ("lemonade", "Sparkling lemonade", "Drinks", 249, "Real lemons, light fizz."),
]

OFFERS = [
    (
        "breakfast-deal",
        "Breakfast bundle",
        "croissants",
        25,
        "Croissants for a quarter less: breakfast is served.",
    ),
    ("berry-weekend", "Berry weekend", "strawberries", 30, "Strawberries 30% off until Sunday."),
    ("cold-brew-summer", "Cold brew summer", "coffee", 20, "Stay cool: cold brew 20% off."),
]


def seed() -> dict[str, int]:
    """Insert what is missing; returns how many rows of each kind were added."""
    added = {"users": 0, "products": 0, "offers": 0}
    for email, name, role in USERS:
        if db.session.scalar(sa.select(User).where(User.email == email)) is None:
            db.session.add(
                User(
                    email=email,
                    name=name,
                    role=role,
                    password_hash=_password_hash(),
                )
            )
            added["users"] += 1
    for slug, name, category, price, description in PRODUCTS:
        if db.session.scalar(sa.select(Product).where(Product.slug == slug)) is None:
            db.session.add(
                Product(
                    slug=slug,
                    name=name,
                    category=category,
                    price_cents=price,
                    description=description,
                    image=f"img/{slug}.svg",
                )
            )
            added["products"] += 1
    db.session.flush()
    for slug, name, product_slug, discount, description in OFFERS:
        if db.session.scalar(sa.select(Offer).where(Offer.slug == slug)) is None:
            product = db.session.scalar(sa.select(Product).where(Product.slug == product_slug))
            assert product is not None
            db.session.add(
                Offer(
                    slug=slug,
                    name=name,
                    product_id=product.id,
                    discount_percent=discount,
                    description=description,
                    image=f"img/offer-{slug}.svg",
                )
            )
            added["offers"] += 1
    db.session.commit()
    return added


@click.command("demo-seed")
def seed_command() -> None:
    """Create the demo's tables and seed data (safe to run again)."""
    upgraded = create_tables()
    if upgraded:
        click.echo("added to the existing tables: " + ", ".join(upgraded))
    added = seed()
    click.echo(", ".join(f"{count} {kind} added" for kind, count in added.items()))
