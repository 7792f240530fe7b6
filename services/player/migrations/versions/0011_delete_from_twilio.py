"""Whether a business's deletions reach Twilio's copy of the recordings, and the calls whose
recordings are still to be deleted there.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("business_data_settings") as table:
        table.add_column(
            sa.Column("delete_from_twilio", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "twilio_deletions",
        sa.Column("call_sid", sa.String(64), primary_key=True),
        sa.Column("business_id", sa.String(64), nullable=False, index=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
    )


def downgrade() -> None:
    op.drop_table("twilio_deletions")
    with op.batch_alter_table("business_data_settings") as table:
        table.drop_column("delete_from_twilio")
