"""Stage inputs for retries, API keys per business, deleted calls.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stage_inputs",
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("event_json", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("call_sid", "stage"),
    )
    op.create_table(
        "deleted_calls",
        sa.Column("call_sid", sa.String(64), primary_key=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_sha256", sa.String(64), primary_key=True),
        sa.Column("business_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_api_keys_business_id", "api_keys", ["business_id"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("deleted_calls")
    op.drop_table("stage_inputs")
