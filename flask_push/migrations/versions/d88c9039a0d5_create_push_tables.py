"""flask-push: create the push_* tables.

The first revision of the ``flask_push`` branch: an independent branch
(``down_revision = None``) that lives next to the host's own history, so a
host runs ``flask db upgrade heads``. See :mod:`flask_push.migrations`.

This file mirrors ``flask_push/models.py`` and must not import it: a
migration is frozen at the schema of its day. ``UTCDateTime`` columns are
plain ``DateTime(timezone=True)`` here, which is what the type stores.

Constraint names follow the naming convention of the Alembic and
Flask-SQLAlchemy docs (``uq_%(table_name)s_%(column_0_name)s``), so hosts with
that convention and hosts with none both compare clean under autogenerate.

Revision ID: d88c9039a0d5
Revises:
Create Date: 2025-11-23 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

from flask_push.migrations.guards import refuse_ambiguous_downgrade

revision = "d88c9039a0d5"
down_revision = None
branch_labels = ("flask_push",)
depends_on = None


def upgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    _not_made_already()
    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("p256dh", sa.String(length=100), nullable=False),
        sa.Column("auth", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("dead_reason", sa.String(length=255), nullable=True),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_subscriptions")),
        sa.UniqueConstraint("endpoint", name=op.f("uq_push_subscriptions_endpoint")),
    )
    op.create_index(
        op.f("ix_push_subscriptions_user_id"), "push_subscriptions", ["user_id"], unique=False
    )

    op.create_table(
        "push_installations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=255), nullable=False),
        sa.Column("app_version", sa.String(length=64), nullable=True),
        sa.Column("badge", sa.Integer(), nullable=True),
        sa.Column("device_token", sa.String(length=512), nullable=False),
        sa.Column("device_type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("dead_reason", sa.String(length=255), nullable=True),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("subscriptions", sa.JSON(), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_installations")),
        sa.UniqueConstraint("app_id", "device_token", name=op.f("uq_push_installations_app_id")),
    )
    op.create_index(
        op.f("ix_push_installations_user_id"), "push_installations", ["user_id"], unique=False
    )

    op.create_table(
        "push_inbox_items",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("url", sa.String(length=2048), nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("is_new", sa.Boolean(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "id", name=op.f("pk_push_inbox_items")),
    )
    # "newest first for one user": the listing's first page is an index range scan
    op.create_index(
        "ix_push_inbox_items_user_newest",
        "push_inbox_items",
        ["user_id", "created_at", "id"],
        unique=False,
    )
    # unread counts and mark-all-read touch only the unread rows
    op.create_index(
        "ix_push_inbox_items_user_unread",
        "push_inbox_items",
        ["user_id", "created_at"],
        unique=False,
        postgresql_where=sa.text("is_new"),
        sqlite_where=sa.text("is_new"),
    )

    op.create_table(
        "push_inbox_counters",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("unread", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_push_inbox_counters")),
    )

    op.create_table(
        "push_providers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_providers")),
        sa.UniqueConstraint("app_id", "kind", name=op.f("uq_push_providers_app_id")),
    )

    op.create_table(
        "push_messages",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("notification", sa.JSON(), nullable=False),
        sa.Column("notify_type", sa.String(length=64), nullable=True),
        sa.Column("inbox", sa.Boolean(), nullable=False),
        sa.Column("recipient_count", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("clicked", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_messages")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_push_messages_idempotency_key")),
    )
    op.create_index("ix_push_messages_created_at", "push_messages", ["created_at"], unique=False)

    op.create_table(
        "push_deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=True),
        sa.Column("installation_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_deliveries")),
    )
    # claiming: "queued and due", oldest first
    op.create_index(
        "ix_push_deliveries_claim", "push_deliveries", ["status", "due_at"], unique=False
    )
    # a message's counts per status
    op.create_index(
        "ix_push_deliveries_message_status",
        "push_deliveries",
        ["message_id", "status"],
        unique=False,
    )


#: the tables this revision creates
_TABLES = (
    "push_subscriptions",
    "push_installations",
    "push_inbox_items",
    "push_inbox_counters",
    "push_providers",
    "push_messages",
    "push_deliveries",
)


def _not_made_already() -> None:
    """Tables of these names exist, and Alembic has no record of them: say what to do
    instead of failing on the first CREATE TABLE. All of them: ``db.create_all()``
    made them (the Quickstart's way), to be recorded. Some: a host's own tables, or
    an earlier attempt, which recording would pass off as flask-push's.
    (Flask-Migrate prints a CommandError as one line.)"""
    if context.is_offline_mode():
        return
    inspector = sa.inspect(op.get_bind())
    present = [table for table in _TABLES if inspector.has_table(table)]
    if not present:
        return
    if len(present) == len(_TABLES):
        # Which revision: stamping the head over an older flask-push's tables would
        # leave Alembic nothing to upgrade while they stay old.
        from flask_push.schema_history import HEAD, stamp_command, tables_revision

        made_by = tables_revision(inspector)
        if made_by is None:
            raise CommandError(
                "flask-push's tables exist already, but Alembic has no record of them, "
                "and they match none of flask-push's revisions (some of what its later "
                "revisions added is there, some is not). Rename or drop them, then run "
                "`flask db upgrade heads` again."
            )
        which = (
            "this flask-push's newest revision"
            if made_by == HEAD
            else f"flask-push's revision {made_by}"
        )
        raise CommandError(
            "flask-push's tables exist already, but Alembic has no record of them "
            f"(db.create_all() made them?). They are as {which} made them: "
            f"record that once with `{stamp_command(made_by)}`, then run `flask db "
            "upgrade heads` again."
        )
    missing = [table for table in _TABLES if table not in present]
    raise CommandError(
        f"Some of flask-push's table names are taken already ({', '.join(present)}), "
        f"and the others are not ({', '.join(missing)}): these are not tables flask-push "
        "made whole. Rename or drop the tables in the way, then run `flask db upgrade "
        "heads` again."
    )


def downgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    refuse_ambiguous_downgrade()
    op.drop_index("ix_push_deliveries_message_status", table_name="push_deliveries")
    op.drop_index("ix_push_deliveries_claim", table_name="push_deliveries")
    op.drop_table("push_deliveries")
    op.drop_index("ix_push_messages_created_at", table_name="push_messages")
    op.drop_table("push_messages")
    op.drop_table("push_providers")
    op.drop_table("push_inbox_counters")
    op.drop_index("ix_push_inbox_items_user_unread", table_name="push_inbox_items")
    op.drop_index("ix_push_inbox_items_user_newest", table_name="push_inbox_items")
    op.drop_table("push_inbox_items")
    op.drop_index(op.f("ix_push_installations_user_id"), table_name="push_installations")
    op.drop_table("push_installations")
    op.drop_index(op.f("ix_push_subscriptions_user_id"), table_name="push_subscriptions")
    op.drop_table("push_subscriptions")
