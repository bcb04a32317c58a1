"""flask-push: a scheduled message's inbox items wait for its ``send_at``.

``push_scheduled_inbox`` (message id, user id, due time). A message sent with
``send_at`` and ``inbox=True`` wrote its inbox items at once: a shopper saw
tomorrow's offer in the bell today, and it stayed after the message was cancelled.
Its items now wait here, one row per user, and a worker writes them when the
message comes due; a cancel deletes the rows.

A new table: nothing existing is rewritten.

Revision ID: a4c8e2f6b1d9
Revises: f3b9a2d6c1e8
Create Date: 2026-12-05 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flask_push.migrations.guards import refuse_ambiguous_downgrade

revision = "a4c8e2f6b1d9"
down_revision = "f3b9a2d6c1e8"
branch_labels = None
depends_on = None


def upgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    op.create_table(
        "push_scheduled_inbox",
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "user_id"),
    )
    op.create_index("ix_push_scheduled_inbox_due", "push_scheduled_inbox", ["due_at"])


def downgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    refuse_ambiguous_downgrade()
    op.drop_index("ix_push_scheduled_inbox_due", table_name="push_scheduled_inbox")
    op.drop_table("push_scheduled_inbox")
