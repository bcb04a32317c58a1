"""flask-push: notification policy: each user's preferences, the sends a daily cap
counts, and a message's category.

Frozen at the schema of its day, like every revision (it does not import the models).

Revision ID: e7a3f9c15d20
Revises: c4d2e8a1b7f3
Create Date: 2026-12-04 09:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flask_push.migrations.guards import refuse_ambiguous_downgrade

revision = "e7a3f9c15d20"
down_revision = "c4d2e8a1b7f3"
branch_labels = None
depends_on = None


def upgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    op.create_table(
        "push_preferences",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("quiet_start", sa.String(length=5), nullable=True),
        sa.Column("quiet_end", sa.String(length=5), nullable=True),
        sa.Column("time_zone", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "push_capped_sends",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_push_capped_sends_category",
        "push_capped_sends",
        ["category", "sent_at", "user_id"],
    )
    with op.batch_alter_table("push_messages") as batch:
        batch.add_column(sa.Column("category", sa.String(length=64), nullable=True))


def downgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    refuse_ambiguous_downgrade()
    with op.batch_alter_table("push_messages") as batch:
        batch.drop_column("category")
    op.drop_index("ix_push_capped_sends_category", table_name="push_capped_sends")
    op.drop_table("push_capped_sends")
    op.drop_table("push_preferences")
