"""The status table and the call timeline (SQLAlchemy Core). Alembic migrations create them."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData()


def _stage_columns(stage: str) -> list[Column[object]]:
    return [
        Column(f"{stage}_status", String(16), nullable=False, index=True),
        Column(f"{stage}_attempt", Integer, nullable=False),
        Column(f"{stage}_tries", Integer, nullable=False),
        Column(f"{stage}_error", Text),
    ]


calls = Table(
    "calls",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("business_id", String(64), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("from_number", String(1024), nullable=False),
    Column("to_number", String(1024), nullable=False),
    Column("direction", String(32), nullable=False),
    *_stage_columns("recording"),
    *_stage_columns("transcript"),
    *_stage_columns("summary"),
    Column("recording_sid", String(64)),
    Column("recording_key", String(512)),
    Column("recording_content_type", String(64)),
    Column("recording_bytes", Integer),
    Column("redacted_recording_key", String(512)),
    Column("duration_seconds", Float),
    Column("transcript_key", String(512)),
    Column("transcript_preview", Text),
    Column("language", String(16)),
    Column("summary", Text),
    Column("lead_service", String(128)),
    Column("lead_city", String(128)),
    Column("lead_confidence", Float),
    Column("lead_json", Text),
    Column("extractor", String(128)),
    Column("audio_expired_at", DateTime(timezone=True)),
    Column("audio_expired_reason", Text),
)

# One row per applied event: its primary key makes the projection idempotent (an event id
# is applied once, in the same transaction as the change it caused), and it is the timeline.
call_events = Table(
    "call_events",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("call_sid", String(64), nullable=False, index=True),
    Column("event_type", String(64), nullable=False),
    Column("stage", String(16)),
    Column("attempt", Integer, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("detail", Text, nullable=False),
)

# The latest input event of each stage of a call: what a retry re-emits.
stage_inputs = Table(
    "stage_inputs",
    metadata,
    Column("call_sid", String(64), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("event_json", Text, nullable=False),
    PrimaryKeyConstraint("call_sid", "stage"),
)

# Deleted calls: events still in flight for them are not projected again.
deleted_calls = Table(
    "deleted_calls",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("deleted_at", DateTime(timezone=True), nullable=False),
)

# API keys, stored as SHA-256 digests (keys are 256-bit random: no slow hash needed).
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_sha256", String(64), primary_key=True),
    Column("business_id", String(64), nullable=False, index=True),
    Column("label", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

# The status page's logins: the cookie carries the random session id, this table its digest,
# so a session ends for every copy of the cookie when its row goes (logout, revocation).
player_sessions = Table(
    "player_sessions",
    metadata,
    Column("session_sha256", String(64), primary_key=True),
    Column("business_id", String(64), nullable=False),
    Column("key_sha256", String(64), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# How many calls each business has: the call list's unfiltered total, kept by the projection
# in the transaction that creates or deletes a call, so the list need not count 100,000 rows.
business_call_counts = Table(
    "business_call_counts",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("calls", Integer, nullable=False),
)

# What each business chose about its calls' personal data (services/player/data_settings.py);
# a business without a row has the defaults.
business_data_settings = Table(
    "business_data_settings",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("redact", Text, nullable=False),  # JSON: a list of kinds
    Column("audio_retention_days", Integer),  # NULL: kept
    Column("call_retention_days", Integer),  # NULL: kept
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("delete_from_twilio", Boolean, nullable=False),
)

# Deleted calls whose recordings are still to be deleted at Twilio (the business opted in):
# queued before the local deletion, removed once Twilio holds none of them, retried until then.
twilio_deletions = Table(
    "twilio_deletions",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("business_id", String(64), nullable=False, index=True),
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
)

# The retention sweep's claims on calls it is deleting audio of, or deleting (a lease: another
# sweep leaves a claimed call alone until `claimed_until`, after which a crashed sweep's call
# is taken again).
retention_claims = Table(
    "retention_claims",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("claimed_by", String(36), nullable=False),
    Column("claimed_until", DateTime(timezone=True), nullable=False),
)
