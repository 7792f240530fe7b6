"""One error column per stage instead of one per call: a retry clears its own stage's error
only, whatever order events arrive in.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STAGES = ("recording", "transcript", "summary")


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        for stage in STAGES:
            batch.add_column(sa.Column(f"{stage}_error", sa.Text))
        batch.drop_column("last_error")


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("last_error", sa.Text))
        for stage in STAGES:
            batch.drop_column(f"{stage}_error")
