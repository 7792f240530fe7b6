"""Events of one call as the services publish them, for tests: each factory fills the envelope
(the call's SID, its business, the call's trace id) and the fields of a plausible event; any
field, the envelope's too (occurred_at, attempt, event_id), is given by keyword."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import (
    CallStarted,
    Lead,
    RecordingCompleted,
    RecordingDownloaded,
    Stage,
    StageFailed,
    StageStarted,
    SummaryReady,
    TranscriptReady,
    call_correlation_id,
)
from shared.transcript import AudioRedaction

CALL_SID = "CA0123456789abcdef0123456789abcdef"
BUSINESS_ID = "biz-1"
ACCOUNT_SID = "AC" + "0" * 32
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """A moment `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


def envelope(call_sid: str = CALL_SID, business_id: str = BUSINESS_ID) -> dict[str, Any]:
    """What every event of one call carries: its SID, its business, the call's trace id."""
    return {
        "call_sid": call_sid,
        "business_id": business_id,
        "correlation_id": call_correlation_id(call_sid),
    }


def call_started(
    call_sid: str = CALL_SID, business_id: str = BUSINESS_ID, **fields: Any
) -> CallStarted:
    return CallStarted(
        **envelope(call_sid, business_id)
        | {
            "account_sid": ACCOUNT_SID,
            "from_number": "+15551230000",
            "to_number": "+15559870000",
            **fields,
        },
    )


def recording_completed(
    call_sid: str = CALL_SID,
    business_id: str = BUSINESS_ID,
    status: str = "completed",
    **fields: Any,
) -> RecordingCompleted:
    completed = status == "completed"
    return RecordingCompleted(
        **envelope(call_sid, business_id)
        | {
            "recording_sid": "RE1",
            "recording_status": status,
            "recording_url": "https://api.twilio.com/Recordings/RE1" if completed else "",
            "duration_seconds": 42.5 if completed else None,
            "channels": 2,
            **fields,
        },
    )


def recording_downloaded(
    call_sid: str = CALL_SID, business_id: str = BUSINESS_ID, **fields: Any
) -> RecordingDownloaded:
    return RecordingDownloaded(
        **envelope(call_sid, business_id)
        | {
            "recording_sid": "RE1",
            "object_key": f"{business_id}/{call_sid}/RE1.wav",
            "content_type": "audio/wav",
            "size_bytes": 123456,
            "sha256": "a" * 64,
            "channels": 2,
            **fields,
        },
    )


def transcript_ready(
    call_sid: str = CALL_SID,
    business_id: str = BUSINESS_ID,
    outcome: str = "transcribed",
    **fields: Any,
) -> TranscriptReady:
    """A transcript of the call's words, or (outcome "no_speech") of none."""
    words: dict[str, Any] = {}
    if outcome == "transcribed":
        words = {
            "language": "en",
            "duration_seconds": 42.5,
            "speakers": ["caller", "agent"],
            "preview": "Caller: my sink leaks in Denver",
        }
    return TranscriptReady(
        **envelope(call_sid, business_id)
        | {
            "outcome": outcome,
            "transcript_key": f"{business_id}/{call_sid}/RE1.transcript.json",
            # The recording of `recording_downloaded`, written back with nothing to replace.
            "audio_redaction": AudioRedaction(
                object_key=f"{business_id}/{call_sid}/RE1.wav", sound="tone", padding_seconds=0.25
            ),
            **words,
            **fields,
        },
    )


def summary_ready(
    call_sid: str = CALL_SID, business_id: str = BUSINESS_ID, **fields: Any
) -> SummaryReady:
    return SummaryReady(
        **envelope(call_sid, business_id)
        | {
            "outcome": "extracted",
            "summary": "Caller asked for plumbing in Denver.",
            "lead": Lead(service="plumbing", city="Denver", confidence=0.8),
            "extractor": "rules-v1",
            **fields,
        },
    )


def stage_started(
    stage: Stage, call_sid: str = CALL_SID, business_id: str = BUSINESS_ID, **fields: Any
) -> StageStarted:
    return StageStarted(**envelope(call_sid, business_id) | {"stage": stage, **fields})


def stage_failed(
    stage: Stage, call_sid: str = CALL_SID, business_id: str = BUSINESS_ID, **fields: Any
) -> StageFailed:
    return StageFailed(
        **envelope(call_sid, business_id)
        | {"stage": stage, "error": "boom", "terminal": False, **fields},
    )
