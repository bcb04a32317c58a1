"""flask-push: index the time messages are scheduled for.

The operator console's overview shows the deliveries of the messages due in the
last 24 hours: those sent then (by ``created_at``, indexed) and those scheduled for
then (by ``send_at``). With the index that is a range read, not a scan of every
message.

Revision ID: d2f6b8a4c1e9
Revises: c9e5a7d3f1b2
Create Date: 2026-12-07 19:50:00.000000
"""

from __future__ import annotations

from alembic import op

from flask_push.migrations.guards import refuse_ambiguous_downgrade

revision = "d2f6b8a4c1e9"
down_revision = "c9e5a7d3f1b2"
branch_labels = None
depends_on = None


def upgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    op.create_index("ix_push_messages_send_at", "push_messages", ["send_at"])


def downgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    refuse_ambiguous_downgrade()
    op.drop_index("ix_push_messages_send_at", table_name="push_messages")
