"""flask-push: claim one message's due deliveries in index order.

``ix_push_deliveries_message_status`` (``message_id, status``) becomes
``ix_push_deliveries_message_due`` (``message_id, status, due_at``). The celery
queue's task for a message claims that message's oldest due deliveries; with
``due_at`` in the index it walks them in order instead of reading and sorting every
queued delivery of the message at each claim. It still serves a message's counts
per status.

On PostgreSQL, ``CREATE INDEX`` blocks writes to ``push_deliveries`` while it builds;
on a large table, run this revision when few messages are being sent.

Revision ID: b6f1d4e8c2a7
Revises: a91c3d5e7b28
Create Date: 2026-12-04 15:40:00.000000
"""

from __future__ import annotations

from alembic import op

from flask_push.migrations.guards import refuse_ambiguous_downgrade

revision = "b6f1d4e8c2a7"
down_revision = "a91c3d5e7b28"
branch_labels = None
depends_on = None


def upgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    # the new index first, so that the counts always have one
    op.create_index(
        "ix_push_deliveries_message_due",
        "push_deliveries",
        ["message_id", "status", "due_at"],
    )
    op.drop_index("ix_push_deliveries_message_status", table_name="push_deliveries")


def downgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    refuse_ambiguous_downgrade()
    op.create_index(
        "ix_push_deliveries_message_status", "push_deliveries", ["message_id", "status"]
    )
    op.drop_index("ix_push_deliveries_message_due", table_name="push_deliveries")
