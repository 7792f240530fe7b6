"""A call's parties as Twilio can name them: SIP URIs (`sip:alice@example.sip.twilio.com`)
and Client identities (`client:...`) do not fit the 32 characters a phone number needs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PARTY_COLUMNS = ("from_number", "to_number")


def upgrade() -> None:
    # SQLite does not enforce a VARCHAR's length: only PostgreSQL's columns need widening,
    # which it does in place (no table rewrite when a varchar only grows).
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in PARTY_COLUMNS:
        op.alter_column("calls", column, type_=sa.String(1024), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in PARTY_COLUMNS:
        op.alter_column("calls", column, type_=sa.String(32), existing_nullable=False)
