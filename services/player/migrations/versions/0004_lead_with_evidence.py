"""The whole lead with its evidence, and the extractor that produced it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("lead_json", sa.Text))
        batch.add_column(sa.Column("extractor", sa.String(128)))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("extractor")
        batch.drop_column("lead_json")
