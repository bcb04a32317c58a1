"""flask-push: each delivery keeps its timeline, reason, send time and service id; a
target's deliveries are indexed; a message keeps its send span's trace context.

Frozen at the schema of its day, like every revision (it does not import the models).
Rows written before it have no timeline (NULL, read as an empty one).

Revision ID: 5b1e7c2a9f04
Revises: d88c9039a0d5
Create Date: 2026-12-04 03:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flask_push.migrations.guards import refuse_ambiguous_downgrade

revision = "5b1e7c2a9f04"
down_revision = "d88c9039a0d5"
branch_labels = None
depends_on = None


def upgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    with op.batch_alter_table("push_deliveries") as batch:
        batch.add_column(sa.Column("events", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("service_id", sa.String(length=255), nullable=True))
    with op.batch_alter_table("push_messages") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(length=55), nullable=True))
    # a target's latest deliveries (push.user_targets)
    for column in ("subscription_id", "installation_id"):
        op.create_index(
            f"ix_push_deliveries_{column.removesuffix('_id')}",
            "push_deliveries",
            [column, "id"],
            unique=False,
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
            sqlite_where=sa.text(f"{column} IS NOT NULL"),
        )


def downgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    refuse_ambiguous_downgrade()
    op.drop_index("ix_push_deliveries_installation", table_name="push_deliveries")
    op.drop_index("ix_push_deliveries_subscription", table_name="push_deliveries")
    with op.batch_alter_table("push_deliveries") as batch:
        batch.drop_column("service_id")
        batch.drop_column("sent_at")
        batch.drop_column("reason")
        batch.drop_column("events")
    with op.batch_alter_table("push_messages") as batch:
        batch.drop_column("traceparent")
