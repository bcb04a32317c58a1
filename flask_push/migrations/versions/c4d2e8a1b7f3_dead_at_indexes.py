"""flask-push: index the time subscriptions and installations were found dead.

The operator console's overview lists the targets found dead in the last 24 hours;
with the index that is a range read, not a scan of every subscription.

Revision ID: c4d2e8a1b7f3
Revises: 5b1e7c2a9f04
Create Date: 2026-12-04 03:40:00.000000
"""

from __future__ import annotations

from alembic import op

from flask_push.migrations.guards import refuse_ambiguous_downgrade

revision = "c4d2e8a1b7f3"
down_revision = "5b1e7c2a9f04"
branch_labels = None
depends_on = None


def upgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    op.create_index("ix_push_subscriptions_dead_at", "push_subscriptions", ["dead_at"])
    op.create_index("ix_push_installations_dead_at", "push_installations", ["dead_at"])


def downgrade(engine_name: str = "") -> None:
    if engine_name:  # a bind's database (`flask db init --multidb`): not flask-push's
        return
    refuse_ambiguous_downgrade()
    op.drop_index("ix_push_installations_dead_at", table_name="push_installations")
    op.drop_index("ix_push_subscriptions_dead_at", table_name="push_subscriptions")
