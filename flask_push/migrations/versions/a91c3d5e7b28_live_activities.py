"""flask-push: live activities: each activity's latest state, Live Activity push
tokens, an installation's push-to-start token, and a message's activity.

Frozen at the schema of its day, like every revision (it does not import the models).

Revision ID: a91c3d5e7b28
Revises: e7a3f9c15d20
Create Date: 2026-12-04 10:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flask_push.migrations.guards import refuse_ambiguous_downgrade

revision = "a91c3d5e7b28"
down_revision = "e7a3f9c15d20"
branch_labels = None
depends_on = None


def upgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    op.create_table(
        "push_activities",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("users", sa.JSON(), nullable=False),
        sa.Column("event", sa.String(length=8), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "push_activity_tokens",
        sa.Column("installation_id", sa.String(length=40), nullable=False),
        sa.Column("activity_id", sa.String(length=64), nullable=False),
        sa.Column("push_token", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("installation_id", "activity_id"),
    )
    with op.batch_alter_table("push_installations") as batch:
        batch.add_column(sa.Column("push_to_start_token", sa.String(length=512), nullable=True))
    with op.batch_alter_table("push_messages") as batch:
        batch.add_column(sa.Column("activity_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("activity", sa.JSON(), nullable=True))
    op.create_index("ix_push_messages_activity_id", "push_messages", ["activity_id"])


def downgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    refuse_ambiguous_downgrade()
    op.drop_index("ix_push_messages_activity_id", table_name="push_messages")
    with op.batch_alter_table("push_messages") as batch:
        batch.drop_column("activity")
        batch.drop_column("activity_id")
    with op.batch_alter_table("push_installations") as batch:
        batch.drop_column("push_to_start_token")
    op.drop_table("push_activity_tokens")
    op.drop_table("push_activities")
