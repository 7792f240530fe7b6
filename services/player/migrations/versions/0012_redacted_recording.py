"""The recording the transcriber redacted: playback serves a recording only once it is.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("redacted_recording_key", sa.String(512)))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("redacted_recording_key")
