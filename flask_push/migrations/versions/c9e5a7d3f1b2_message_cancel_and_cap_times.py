"""flask-push: a message keeps when an operator cancelled it, and when its pushes
count against the daily cap.

``push_messages.cancelled_at`` (nullable). A cancel was known only by the message's
``cancelled`` deliveries, so a scheduled message whose users had no browser or
device, only inbox items held for its ``send_at``, could not be seen as cancelled:
the console offered no Cancel, and the API's cancel took the items back while the
message still said ``scheduled``. Messages cancelled before this revision get the
time of their last cancelled delivery.

``push_messages.counted_at`` (nullable). The daily cap's ledger counted a message's
pushes at its first due time; an operator's retry of a message days old pushes
today, and is now counted today: the ledger's rows of the users it pushes to move
to the retry's time, which this column keeps. Null: the first due time, as before.

Revision ID: c9e5a7d3f1b2
Revises: a4c8e2f6b1d9
Create Date: 2026-12-07 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flask_push.migrations.guards import refuse_ambiguous_downgrade

revision = "c9e5a7d3f1b2"
down_revision = "a4c8e2f6b1d9"
branch_labels = None
depends_on = None


def upgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    for name in ("cancelled_at", "counted_at"):
        op.add_column("push_messages", sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    messages = sa.table("push_messages", sa.column("id"), sa.column("cancelled_at"))
    deliveries = sa.table(
        "push_deliveries", sa.column("message_id"), sa.column("status"), sa.column("updated_at")
    )
    cancelled = (
        sa.select(sa.func.max(deliveries.c.updated_at))
        .where(deliveries.c.message_id == messages.c.id, deliveries.c.status == "cancelled")
        .scalar_subquery()
    )
    op.execute(
        messages.update()
        .values(cancelled_at=cancelled)
        .where(
            sa.exists().where(
                deliveries.c.message_id == messages.c.id, deliveries.c.status == "cancelled"
            )
        )
    )


def downgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    refuse_ambiguous_downgrade()
    with op.batch_alter_table("push_messages") as table:
        table.drop_column("counted_at")
        table.drop_column("cancelled_at")
