"""The calls status table and the call_events timeline.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _stage(stage: str) -> list[sa.Column[object]]:
    return [
        sa.Column(f"{stage}_status", sa.String(16), nullable=False),
        sa.Column(f"{stage}_attempt", sa.Integer, nullable=False),
        sa.Column(f"{stage}_tries", sa.Integer, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_sid", sa.String(64), primary_key=True),
        sa.Column("business_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_number", sa.String(32), nullable=False),
        sa.Column("to_number", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(32), nullable=False),
        *_stage("recording"),
        *_stage("transcript"),
        *_stage("summary"),
        sa.Column("last_error", sa.Text),
        sa.Column("recording_sid", sa.String(64)),
        sa.Column("recording_key", sa.String(512)),
        sa.Column("recording_content_type", sa.String(64)),
        sa.Column("recording_bytes", sa.Integer),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("transcript_key", sa.String(512)),
        sa.Column("transcript_preview", sa.Text),
        sa.Column("language", sa.String(16)),
        sa.Column("summary", sa.Text),
        sa.Column("lead_service", sa.String(128)),
        sa.Column("lead_city", sa.String(128)),
        sa.Column("lead_confidence", sa.Float),
    )
    for column in ("business_id", "created_at", "recording_status", "transcript_status",
                   "summary_status"):  # fmt: skip
        op.create_index(f"ix_calls_{column}", "calls", [column])
    op.create_table(
        "call_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(16)),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_call_events_call_sid", "call_events", ["call_sid"])


def downgrade() -> None:
    op.drop_table("call_events")
    op.drop_table("calls")
