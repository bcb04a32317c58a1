"""flask-push: each delivery keeps the user it was sent to.

``push_deliveries.user_id`` (nullable). "Why didn't she get it?" looked a delivery's
user up through its subscription or installation, which answers for the target's
owner now: after she deleted her subscription, or her browser signed in as someone
else, her deliveries were no longer hers. Rows written before this revision have no
user; they are still found through their target, as before.

Adding a nullable column without a default rewrites nothing, on PostgreSQL and
SQLite alike.

Revision ID: f3b9a2d6c1e8
Revises: b6f1d4e8c2a7
Create Date: 2026-12-05 10:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flask_push.migrations.guards import refuse_ambiguous_downgrade

revision = "f3b9a2d6c1e8"
down_revision = "b6f1d4e8c2a7"
branch_labels = None
depends_on = None


def upgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    op.add_column("push_deliveries", sa.Column("user_id", sa.String(255), nullable=True))


def downgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    refuse_ambiguous_downgrade()
    with op.batch_alter_table("push_deliveries") as table:
        table.drop_column("user_id")
