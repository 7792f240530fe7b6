"""Retention: when and why a call's audio was deleted by its business's retention, and the
retention sweep's claims on the calls it is working on.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as calls:
        calls.add_column(sa.Column("audio_expired_at", sa.DateTime(timezone=True)))
        calls.add_column(sa.Column("audio_expired_reason", sa.Text()))
    op.create_table(
        "retention_claims",
        sa.Column("call_sid", sa.String(64), primary_key=True),
        sa.Column("claimed_by", sa.String(36), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retention_claims")
    with op.batch_alter_table("calls") as calls:
        calls.drop_column("audio_expired_reason")
        calls.drop_column("audio_expired_at")
