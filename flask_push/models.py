"""Tables of flask-push, defined on the host's Flask-SQLAlchemy ``db``.

Flask-SQLAlchemy allows one ``SQLAlchemy`` per app, so the host owns the
database and flask-push adds its ``push_*`` tables to the host's metadata:
Flask-Migrate sees them, and the shipped Alembic migrations create them.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.schema import conv

from .ids import new_id


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC.

    SQLite keeps no zone, so naive values read back are UTC; PostgreSQL answers in
    its session's ``TimeZone`` (the server's, often not UTC), converted here: the
    sentences and pages that show times say "UTC" of them.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("flask-push stores timezone-aware datetimes only")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _partial_index(name: str, *columns: str, where: str) -> sa.Index:
    """An index of the rows matching ``where`` only, on both databases flask-push
    supports (each dialect takes its own keyword, and one left out builds a full
    index there without a word)."""
    return sa.Index(name, *columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where))


#: status of a subscription or installation that is delivered to
ACTIVE = "active"
#: status once the push service said the target is gone; never sent to again
DEAD = "dead"


class DeliveryTarget:
    """What subscriptions and installations share: an owner, and a status that
    turns dead, with the reason and time, once the push service says the target
    is gone (dead targets are never sent to again)."""

    #: indexed (each table declares its indexes, named as its migrations name them)
    user_id: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(16), default=ACTIVE)
    dead_reason: Mapped[str | None] = mapped_column(sa.String(255))
    #: indexed: the console lists the targets found dead in the last day
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def revive(self) -> None:
        """Active again: the browser or app re-registered it."""
        self.status, self.dead_reason, self.dead_at = ACTIVE, None, None


@dataclass(frozen=True)
class Models:
    """The model classes bound to one ``db``, by the names flask-push gives them
    (the classes themselves are ``FlaskPushSubscription``, ``FlaskPushMessage``, ...)."""

    Subscription: Any
    Installation: Any
    InboxItem: Any
    InboxCounter: Any
    Provider: Any
    Message: Any
    Delivery: Any
    Preference: Any
    CappedSend: Any
    Activity: Any
    ActivityToken: Any
    ScheduledInboxItem: Any


def unclaimed_update(table: Any, now: Any) -> Any:
    """SQL: an UPDATE of the queued delivery ``b_id`` (a parameter, for executemany)
    that no worker holds at ``now``: one a worker claimed since it was read is on its
    way, and left as it is."""
    return sa.update(table).where(
        table.c.id == sa.bindparam("b_id"),
        table.c.status == "queued",
        sa.or_(table.c.lease_until.is_(None), table.c.lease_until < now),
    )


def hurry_waiting(session: Any, models: Models, column: Any, target_id: str, now: Any) -> None:
    """Make the pushes to one target that wait unclaimed for a later time (quiet
    hours, a schedule, a retry) due now, in the caller's transaction: the target is
    being deleted, so a worker ends them at once as it does on a claim
    (``target_dead``), rather than they wait for a time that no longer matters with
    a reason that no longer holds.

    :param column: ``Delivery.subscription_id`` or ``Delivery.installation_id``.
    """
    d = models.Delivery
    session.execute(
        sa.update(d)
        .where(
            column == target_id,
            d.status == "queued",
            d.due_at > now,
            sa.or_(d.lease_until.is_(None), d.lease_until < now),
        )
        .values(due_at=now),
        execution_options={"synchronize_session": False},
    )


def recipient(models: Models) -> Any:
    """SQL: the user a delivery was sent to: its own ``user_id``, else (a row written
    before deliveries kept it, or one to a target that was anonymous then) its
    target's owner now. For a query that outer-joins the delivery's subscription and
    installation."""
    d, s, i = models.Delivery, models.Subscription, models.Installation
    return sa.func.coalesce(d.user_id, s.user_id, i.user_id)


_by_db: weakref.WeakKeyDictionary[SQLAlchemy, Models] = weakref.WeakKeyDictionary()


def models_for(db: SQLAlchemy) -> Models:
    """Define the ``push_*`` models on ``db`` once, and return them."""
    if db not in _by_db:
        _by_db[db] = _define(db)
    return _by_db[db]


def _define(db: SQLAlchemy) -> Models:
    # The classes join the host's registry, where a relationship("Subscription") of
    # the host looks its own class up by name: a second class of that name makes the
    # name ambiguous, and the host's mapping fails. So they carry a prefix no host
    # model has; the code (and hosts) reach them as ``push.models.Subscription``.
    class FlaskPushSubscription(DeliveryTarget, db.Model):  # type: ignore[name-defined,misc]
        """A browser's Web Push subscription."""

        __tablename__ = "push_subscriptions"
        # Every index and constraint is named as the shipped migrations name it: a
        # name left to the host's naming convention would differ from the one the
        # migrations made, and the host's autogenerate would drop and recreate it.
        # conv() marks a name final, as op.f() does in the revisions; a name a
        # revision gives plainly is plain here too, since a convention that uses
        # %(constraint_name)s rewrote it there and rewrites it here alike. A primary
        # key a revision left unnamed is unnamed here.
        __table_args__ = (
            sa.PrimaryKeyConstraint("id", name=conv("pk_push_subscriptions")),
            sa.UniqueConstraint("endpoint", name=conv("uq_push_subscriptions_endpoint")),
            sa.Index(conv("ix_push_subscriptions_user_id"), "user_id"),
            sa.Index("ix_push_subscriptions_dead_at", "dead_at"),
        )

        id: Mapped[str] = mapped_column(
            sa.String(40), primary_key=True, default=lambda: new_id("sub")
        )
        endpoint: Mapped[str] = mapped_column(sa.String(2048))
        p256dh: Mapped[str] = mapped_column(sa.String(100))
        auth: Mapped[str] = mapped_column(sa.String(32))
        topics: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
        user_agent: Mapped[str | None] = mapped_column(sa.String(512))
        expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
        last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    class FlaskPushInstallation(DeliveryTarget, db.Model):  # type: ignore[name-defined,misc]
        """A mobile app install (LoopBack's Installation): one device token of one app."""

        __tablename__ = "push_installations"
        __table_args__ = (
            sa.PrimaryKeyConstraint("id", name=conv("pk_push_installations")),
            sa.UniqueConstraint(
                "app_id", "device_token", name=conv("uq_push_installations_app_id")
            ),
            sa.Index(conv("ix_push_installations_user_id"), "user_id"),
            sa.Index("ix_push_installations_dead_at", "dead_at"),
        )

        id: Mapped[str] = mapped_column(
            sa.String(40), primary_key=True, default=lambda: new_id("ins")
        )
        app_id: Mapped[str] = mapped_column(sa.String(255))
        app_version: Mapped[str | None] = mapped_column(sa.String(64))
        badge: Mapped[int | None] = mapped_column(sa.Integer)
        device_token: Mapped[str] = mapped_column(sa.String(512))
        device_type: Mapped[str] = mapped_column(sa.String(16))
        subscriptions: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
        time_zone: Mapped[str | None] = mapped_column(sa.String(64))
        modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
        #: iOS: the app's push-to-start token, which starts a Live Activity by a push
        push_to_start_token: Mapped[str | None] = mapped_column(sa.String(512))

    class FlaskPushInboxItem(db.Model):  # type: ignore[name-defined,misc]
        """One entry of a user's notification inbox.

        The key is (user_id, id): ids are per user, so a client may pick its own
        id (say ``export-7``) to update a progress item in place.
        """

        __tablename__ = "push_inbox_items"
        __table_args__ = (
            sa.PrimaryKeyConstraint("user_id", "id", name=conv("pk_push_inbox_items")),
            # "newest first for one user": the listing's first page is an index range scan
            sa.Index("ix_push_inbox_items_user_newest", "user_id", "created_at", "id"),
            # unread counts and mark-all-read touch only the unread rows
            _partial_index(
                "ix_push_inbox_items_user_unread", "user_id", "created_at", where="is_new"
            ),
        )

        user_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
        id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
        type: Mapped[str] = mapped_column(sa.String(64), default="info")
        title: Mapped[str] = mapped_column(sa.String(255))
        body: Mapped[str | None] = mapped_column(sa.Text)
        url: Mapped[str | None] = mapped_column(sa.String(2048))
        data: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
        is_new: Mapped[bool] = mapped_column(sa.Boolean, default=True)
        progress: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
        created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
        updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    class FlaskPushScheduledInboxItem(db.Model):  # type: ignore[name-defined,misc]
        """An inbox item a scheduled message owes a user, written when the message
        comes due (``send_at``): until then the user sees nothing of it, and a cancel
        takes it back. One row per message and user; the item's fields are the
        message's own."""

        __tablename__ = "push_scheduled_inbox"
        __table_args__ = (
            # the workers' "what has come due": one index range
            sa.Index("ix_push_scheduled_inbox_due", "due_at"),
        )

        message_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
        user_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
        due_at: Mapped[datetime] = mapped_column(UTCDateTime)

    class FlaskPushInboxCounter(db.Model):  # type: ignore[name-defined,misc]
        """A user's inbox counts, kept with every write so that reading them is O(1)."""

        __tablename__ = "push_inbox_counters"
        __table_args__ = (sa.PrimaryKeyConstraint("user_id", name=conv("pk_push_inbox_counters")),)

        user_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
        total: Mapped[int] = mapped_column(sa.Integer, default=0)
        unread: Mapped[int] = mapped_column(sa.Integer, default=0)

    class FlaskPushProvider(db.Model):  # type: ignore[name-defined,misc]
        """Push credentials of one kind (webpush, fcm, apns) for one app id."""

        __tablename__ = "push_providers"
        __table_args__ = (
            sa.PrimaryKeyConstraint("id", name=conv("pk_push_providers")),
            sa.UniqueConstraint("app_id", "kind", name=conv("uq_push_providers_app_id")),
        )

        id: Mapped[str] = mapped_column(
            sa.String(40), primary_key=True, default=lambda: new_id("prv")
        )
        app_id: Mapped[str] = mapped_column(sa.String(255))
        kind: Mapped[str] = mapped_column(sa.String(16))
        settings: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
        secrets: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
        created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
        modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    class FlaskPushMessage(db.Model):  # type: ignore[name-defined,misc]
        """One ``push.send()``: who it is for, what it shows, and when it goes."""

        __tablename__ = "push_messages"
        __table_args__ = (
            sa.PrimaryKeyConstraint("id", name=conv("pk_push_messages")),
            sa.UniqueConstraint("idempotency_key", name=conv("uq_push_messages_idempotency_key")),
            sa.Index("ix_push_messages_created_at", "created_at"),
            sa.Index("ix_push_messages_activity_id", "activity_id"),
            # the console's "due in the last 24 hours": scheduled ones by their time
            sa.Index("ix_push_messages_send_at", "send_at"),
        )

        id: Mapped[str] = mapped_column(
            sa.String(40), primary_key=True, default=lambda: new_id("msg")
        )
        #: ``{"users": [..]}``, ``{"topic": ..}``, ``{"query": {..}}``, ``{"everyone": true}``
        #: or ``{"id": ..}`` (``notify_by_id``)
        audience: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
        #: the notification as the API shows it (camelCase keys)
        notification: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
        notify_type: Mapped[str | None] = mapped_column(sa.String(64))
        inbox: Mapped[bool] = mapped_column(sa.Boolean, default=False)
        recipient_count: Mapped[int] = mapped_column(sa.Integer, default=0)
        idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
        send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
        created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
        clicked: Mapped[int] = mapped_column(sa.Integer, default=0)
        #: the W3C traceparent of the send's span (OpenTelemetry), for the workers' links
        traceparent: Mapped[str | None] = mapped_column(sa.String(55))
        #: its ``PUSH_CATEGORIES`` id; None: not subject to the users' preferences
        category: Mapped[str | None] = mapped_column(sa.String(64))
        #: ``push.activity``: the activity it is a state of, and that state
        #: (:class:`flask_push.message.Activity` as JSON) for the workers
        activity_id: Mapped[str | None] = mapped_column(sa.String(64))
        activity: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
        #: when an operator cancelled it (``push.cancel``): nothing of it goes out
        #: from then on, a retry included
        cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
        #: when its pushes count against a daily cap (``max_per_day``): the time an
        #: operator's retry pushed them again; None: its first due time
        #: (:func:`flask_push.policy.counted_at`)
        counted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

        @property
        def status(self) -> str:
            """``scheduled``, ``queued``, ``sending`` or ``done``, as ``GET
            /messages/<id>`` says it: read from its deliveries (one query) while the
            message is in a session, so that it is ``done`` after an inline send."""
            from .reports import message_counts, message_status, status_as_queued

            # Only a row written and still in its session has deliveries to read: one
            # added and not flushed yet has no id until the query's autoflush gives it
            # one (the lookup by its id then failed), and one deleted has none left.
            if not sa.inspect(self).persistent:
                return status_as_queued(self)
            session = sa.orm.object_session(self)
            counts = message_counts(session, models, [self.id])[self.id]
            return message_status(self.send_at, counts, self.cancelled_at)

    class FlaskPushDelivery(db.Model):  # type: ignore[name-defined,misc]
        """One message to one subscription or installation: the durable outbox row.

        ``queued`` rows whose ``due_at`` has come and whose ``lease_until`` is past
        (or unset) are claimed by workers; a worker that dies leaves its rows
        queued, and they are claimed again once the lease runs out.
        """

        __tablename__ = "push_deliveries"
        __table_args__ = (
            sa.PrimaryKeyConstraint("id", name=conv("pk_push_deliveries")),
            # claiming: "queued and due", oldest first
            sa.Index("ix_push_deliveries_claim", "status", "due_at"),
            # a message's counts per status, and claiming one message's due
            # deliveries oldest first (the celery queue's tasks) in index order
            sa.Index("ix_push_deliveries_message_due", "message_id", "status", "due_at"),
            # a target's latest deliveries (push.user_targets): one index entry per row,
            # since a delivery has a subscription or an installation, never both
            _partial_index(
                "ix_push_deliveries_subscription",
                "subscription_id",
                "id",
                where="subscription_id IS NOT NULL",
            ),
            _partial_index(
                "ix_push_deliveries_installation",
                "installation_id",
                "id",
                where="installation_id IS NOT NULL",
            ),
        )

        # 64-bit on PostgreSQL (a busy sender makes billions of rows); SQLite's
        # autoincrement works only on a column declared INTEGER.
        id: Mapped[int] = mapped_column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True
        )
        message_id: Mapped[str] = mapped_column(sa.String(40))
        #: webpush, fcm or apns
        kind: Mapped[str] = mapped_column(sa.String(16))
        subscription_id: Mapped[str | None] = mapped_column(sa.String(40))
        installation_id: Mapped[str | None] = mapped_column(sa.String(40))
        #: the user it was sent to (None: an anonymous target, or a row written before
        #: it was kept), which the target's owner may no longer be: a subscription is
        #: deleted, or a browser signs in as someone else
        user_id: Mapped[str | None] = mapped_column(sa.String(255))
        #: one of :data:`flask_push.outcomes.STATUSES`
        status: Mapped[str] = mapped_column(sa.String(16), default="queued")
        attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
        due_at: Mapped[datetime] = mapped_column(UTCDateTime)
        lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
        expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
        error: Mapped[str | None] = mapped_column(sa.Text)
        #: when its notification was first clicked: a delivery's clicks count once
        clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
        updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
        #: its timeline: ``{"at", "what", "detail"?, ...}`` entries, oldest first
        #: (:mod:`flask_push.outcomes` names the kinds)
        #: (NULL in rows written before timelines were kept: read as none)
        events: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON, default=list)
        #: the machine reason of its status (a key of :data:`flask_push.outcomes.REASONS`)
        reason: Mapped[str | None] = mapped_column(sa.String(32))
        #: when the push service accepted it
        sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
        #: the push service's id for it (Web Push ``Location``, FCM ``name``, ``apns-id``)
        service_id: Mapped[str | None] = mapped_column(sa.String(255))

    class FlaskPushPreference(db.Model):  # type: ignore[name-defined,misc]
        """What one user chose: channels per category, and quiet hours.

        Only the choices the user made are kept (``{"offers": {"web": false}}``); a
        channel never chosen follows its category's ``default`` as configured now.
        """

        __tablename__ = "push_preferences"

        user_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
        categories: Mapped[dict[str, dict[str, bool]]] = mapped_column(sa.JSON, default=dict)
        #: quiet hours: local ``HH:MM`` times in ``time_zone``; all three or none
        quiet_start: Mapped[str | None] = mapped_column(sa.String(5))
        quiet_end: Mapped[str | None] = mapped_column(sa.String(5))
        time_zone: Mapped[str | None] = mapped_column(sa.String(64))
        updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    class FlaskPushCappedSend(db.Model):  # type: ignore[name-defined,misc]
        """A message of a category with ``max_per_day`` that pushed to a user: what
        the cap counts over the last 24 hours. Older rows are pruned as new ones come.
        """

        __tablename__ = "push_capped_sends"
        __table_args__ = (
            # "this category, since then, for these users": one range, pruning too
            sa.Index("ix_push_capped_sends_category", "category", "sent_at", "user_id"),
        )

        id: Mapped[int] = mapped_column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True
        )
        category: Mapped[str] = mapped_column(sa.String(64))
        user_id: Mapped[str] = mapped_column(sa.String(255))
        message_id: Mapped[str] = mapped_column(sa.String(40))
        sent_at: Mapped[datetime] = mapped_column(UTCDateTime)

    class FlaskPushActivity(db.Model):  # type: ignore[name-defined,misc]
        """A thing whose state changes (``push.activity``): who follows it, its
        latest state, and the last APNs timestamp given to it."""

        __tablename__ = "push_activities"

        id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
        users: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
        event: Mapped[str] = mapped_column(sa.String(8))
        state: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
        #: seconds since the epoch, only growing: APNs drops a push that is not newer
        timestamp: Mapped[int] = mapped_column(sa.BigInteger)
        #: set by ``event="end"``: the activity takes no more calls
        ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
        created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
        updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    class FlaskPushActivityToken(db.Model):  # type: ignore[name-defined,misc]
        """An iOS Live Activity's own push token, on the installation that runs it."""

        __tablename__ = "push_activity_tokens"

        installation_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
        activity_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
        push_token: Mapped[str] = mapped_column(sa.String(512))
        created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    models = Models(
        Subscription=FlaskPushSubscription,
        Installation=FlaskPushInstallation,
        InboxItem=FlaskPushInboxItem,
        InboxCounter=FlaskPushInboxCounter,
        Provider=FlaskPushProvider,
        Message=FlaskPushMessage,
        Delivery=FlaskPushDelivery,
        Preference=FlaskPushPreference,
        CappedSend=FlaskPushCappedSend,
        Activity=FlaskPushActivity,
        ActivityToken=FlaskPushActivityToken,
        ScheduledInboxItem=FlaskPushScheduledInboxItem,
    )
    return models
