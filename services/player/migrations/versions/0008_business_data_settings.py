"""Each business's data settings: the kinds redacted, how long audio and calls are kept.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "business_data_settings",
        sa.Column("business_id", sa.String(64), primary_key=True),
        sa.Column("redact", sa.Text(), nullable=False),
        sa.Column("audio_retention_days", sa.Integer()),
        sa.Column("call_retention_days", sa.Integer()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("business_data_settings")
