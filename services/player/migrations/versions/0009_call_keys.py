"""Each call's data key, wrapped; destroyed when the call is deleted (decision 1204).

Every service that publishes or reads events makes this table when it meets it missing
(shared/call_keys.py), as the ingress may see a call before the player migrated: it is made
here only where it is not there yet.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("call_keys"):
        return
    op.create_table(
        "call_keys",
        sa.Column("call_sid", sa.String(64), primary_key=True),
        sa.Column("business_id", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("call_keys_business", "call_keys", ["business_id"])


def downgrade() -> None:
    op.drop_index("call_keys_business", "call_keys")
    op.drop_table("call_keys")
