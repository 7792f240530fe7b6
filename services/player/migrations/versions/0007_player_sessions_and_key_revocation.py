"""Server-side status page sessions, and API keys that can be revoked.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("revoked_at", sa.DateTime(timezone=True)))
    op.create_table(
        "player_sessions",
        sa.Column("session_sha256", sa.String(64), primary_key=True),
        sa.Column("business_id", sa.String(64), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_player_sessions_key_sha256", "player_sessions", ["key_sha256"])
    op.create_index("ix_player_sessions_expires_at", "player_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("player_sessions")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("revoked_at")
