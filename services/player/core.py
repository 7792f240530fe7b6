"""Player core: the projection of pipeline events onto one call's status row. No I/O.

Rules that make the projection safe to replay and to receive out of order:
- a stage's status only moves forward within a pipeline attempt (a late `processing` never
  overwrites `completed`); a higher attempt (a retry) starts the stage over;
- duplicates are filtered before this by event id (see the repository), and applying the same
  event twice gives the same row anyway.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from enum import StrEnum
from operator import itemgetter
from typing import Any

from shared.call_state import (
    ERROR_FIELDS,
    STAGES,
    STATUS_FIELDS,
    STATUS_RANK,
    CallState,
    StageStatus,
    last_error,
    overall_status,
)
from shared.events import (
    AnyEvent,
    CallDeleted,
    CallStarted,
    CallStatusChanged,
    RecordingCompleted,
    RecordingDownloaded,
    RecordingStarted,
    RedactionSummary,
    Stage,
    StageFailed,
    StageStarted,
    SummaryReady,
    TranscriptReady,
    key_of_business,
)
from shared.transcript import AudioRedaction

# Call statuses of a call that was never answered: no recording will ever come.
UNANSWERED_CALL_STATUSES = {"busy", "no-answer", "canceled", "failed"}


def _move(
    state: CallState,
    stage: Stage,
    status: StageStatus,
    attempt: int,
    facts: dict[str, Any] | None = None,
    **guarded: Any,
) -> CallState:
    """Moves `stage` to `status` if that is forward within its attempt, or a newer attempt
    (which also reopens the stages after it). `guarded` fields change only with the move;
    `facts` (what the event tells about the recording, transcript or summary) are kept
    whatever order events arrive in, unless they belong to an older attempt."""
    current = state.stage_status(stage)
    current_attempt = int(getattr(state, f"{stage.value}_attempt"))
    if facts and attempt >= current_attempt:
        state = dataclasses.replace(state, **facts)
    newer = attempt > current_attempt
    forward = attempt == current_attempt and STATUS_RANK[status] > STATUS_RANK[current]
    if not (newer or forward):
        return state
    changes: dict[str, Any] = {
        f"{stage.value}_status": status,
        f"{stage.value}_attempt": attempt,
    }
    if newer:
        state = _reopen_downstream(state, stage, attempt)
        error_field = f"{stage.value}_error"
        if error_field not in (facts or {}):
            # A newer attempt starts clean, unless this event is its first news and says
            # what went wrong (a retry reported before anything else of the attempt).
            changes[error_field] = None
    changes.update(guarded)
    return dataclasses.replace(state, **changes)


def _reopen_downstream(state: CallState, stage: Stage, attempt: int) -> CallState:
    """A newer attempt of a stage makes the later stages' older outcomes stale: pending."""
    changes: dict[str, Any] = {}
    for later in _downstream(stage):
        if int(getattr(state, f"{later.value}_attempt")) < attempt:
            changes[f"{later.value}_status"] = StageStatus.PENDING
            changes[f"{later.value}_attempt"] = attempt
            changes[f"{later.value}_error"] = None
    return dataclasses.replace(state, **changes)


def _downstream(stage: Stage) -> tuple[Stage, ...]:
    return STAGES[STAGES.index(stage) + 1 :]


def _skip_downstream(state: CallState, stage: Stage, attempt: int) -> CallState:
    for later in _downstream(stage):
        state = _move(state, later, StageStatus.SKIPPED, attempt)
    return state


def _count_try(state: CallState, stage: Stage, tries: int) -> CallState:
    field = f"{stage.value}_tries"
    changes: dict[str, Any] = {field: max(int(getattr(state, field)), tries)}
    return dataclasses.replace(state, **changes)


def apply(state: CallState | None, event: AnyEvent) -> CallState:
    state = state or CallState.new(event)
    state = dataclasses.replace(
        state,
        created_at=min(state.created_at, event.occurred_at),
        updated_at=max(state.updated_at, event.occurred_at),
    )
    match event:
        case CallStarted():
            return dataclasses.replace(
                state,
                from_number=event.from_number,
                to_number=event.to_number,
                direction=event.direction,
            )
        case CallStatusChanged(call_status=status) if status in UNANSWERED_CALL_STATUSES:
            moved = _move(
                state,
                Stage.RECORDING,
                StageStatus.NO_RECORDING,
                event.attempt,
                recording_error=f"the call ended {status} before it was answered",
            )
            return _skip_downstream(moved, Stage.RECORDING, event.attempt)
        case CallStatusChanged() | RecordingStarted():
            return state
        case RecordingCompleted(recording_status="completed"):
            facts: dict[str, Any] = {"recording_sid": event.recording_sid}
            if event.duration_seconds is not None:
                facts["duration_seconds"] = event.duration_seconds
            return _move(state, Stage.RECORDING, StageStatus.PROCESSING, event.attempt, facts)
        case RecordingCompleted():
            status = (
                StageStatus.NO_RECORDING
                if event.recording_status == "absent"
                else StageStatus.FAILED
            )
            moved = _move(
                state,
                Stage.RECORDING,
                status,
                event.attempt,
                {"recording_sid": event.recording_sid},
                recording_error=f"Twilio reported the recording {event.recording_status}"
                + (f" (error {event.error_code})" if event.error_code else ""),
            )
            return _skip_downstream(moved, Stage.RECORDING, event.attempt)
        case StageStarted():
            return _count_try(
                _move(state, event.stage, StageStatus.PROCESSING, event.attempt), event.stage, 1
            )
        case StageFailed(terminal=False):
            facts = {f"{event.stage.value}_error": event.error}  # unless a newer attempt began
            moved = _move(state, event.stage, StageStatus.PROCESSING, event.attempt, facts)
            return _count_try(moved, event.stage, event.tries)
        case StageFailed():
            error_field: dict[str, Any] = {f"{event.stage.value}_error": event.error}
            moved = _move(state, event.stage, StageStatus.FAILED, event.attempt, **error_field)
            moved = _count_try(moved, event.stage, event.tries)
            return _skip_downstream(moved, event.stage, event.attempt)
        # An outcome counts a try: a stage done before it announced its start (decision
        # 0920) still took one.
        case RecordingDownloaded():
            moved = _move(
                state,
                Stage.RECORDING,
                StageStatus.COMPLETED,
                event.attempt,
                {
                    "recording_sid": event.recording_sid,
                    "recording_key": event.object_key,
                    "recording_content_type": event.content_type,
                    "recording_bytes": event.size_bytes,
                },
            )
            return _count_try(moved, Stage.RECORDING, 1)
        case TranscriptReady():
            moved = _move(
                state,
                Stage.TRANSCRIPT,
                StageStatus.COMPLETED if event.outcome == "transcribed" else StageStatus.NO_SPEECH,
                event.attempt,
                {
                    "transcript_key": event.transcript_key,
                    "transcript_preview": event.preview,
                    "language": event.language,
                    "redacted_recording_key": event.audio_redaction.object_key
                    if event.audio_redaction
                    else None,
                },
            )
            return _count_try(moved, Stage.TRANSCRIPT, 1)
        case SummaryReady():
            moved = _move(
                state,
                Stage.SUMMARY,
                StageStatus.COMPLETED,
                event.attempt,
                {
                    "summary": event.summary,
                    "lead_service": event.lead.service,
                    "lead_city": event.lead.city,
                    "lead_confidence": event.lead.confidence,
                    "lead_json": event.lead.model_dump_json(),
                    "extractor": event.extractor,
                },
            )
            return _count_try(moved, Stage.SUMMARY, 1)
        case CallDeleted():
            return state  # the repository removes the row itself
    raise AssertionError(f"unhandled event type {event.event_type}")


def timeline_detail(event: AnyEvent) -> str:
    """One line for the call's timeline."""
    match event:
        case StageStarted():
            return f"{event.stage} started"
        case StageFailed():
            kind = "failed" if event.terminal else "will retry"
            return f"{event.stage} {kind}: {event.error}"
        case RecordingCompleted():
            return f"recording {event.recording_status}"
        case RecordingStarted():
            return "recording in progress"
        case CallStatusChanged():
            return f"call {event.call_status}"
        case TranscriptReady():
            return (
                f"transcript {event.outcome}"
                + _redaction_detail(event.redaction)
                + _audio_redaction_detail(event.audio_redaction)
            )
        case SummaryReady():
            return f"summary {event.outcome}"
    return event.event_type


def _redaction_detail(redaction: RedactionSummary | None) -> str:
    """What was redacted, by kind and count: "; redacting card, number: 1 card"."""
    if redaction is None:
        return ""
    found = ", ".join(f"{count} {kind}" for kind, count in sorted(redaction.counts.items()))
    return f"; redacting {', '.join(redaction.kinds)}: {found or 'none found'}"


def _audio_redaction_detail(audio: AudioRedaction | None) -> str:
    """Where the recording was redacted: "; audio: 2 spans replaced by a tone (channel 1
    11.17-17.47 s, channel 1 21.43-24.83 s)", channels counted from 1 as Twilio does."""
    if audio is None:
        return "; audio not redacted"
    if not audio.spans:
        return "; audio: nothing to replace"
    where = ", ".join(
        f"channel {span.channel + 1} {span.start:.2f}-{span.end:.2f} s" for span in audio.spans
    )
    spans = "1 span" if len(audio.spans) == 1 else f"{len(audio.spans)} spans"
    sound = "a tone" if audio.sound == "tone" else "silence"
    return f"; audio: {spans} replaced by {sound} ({where})"


class Playback(StrEnum):
    """Whether a call's stored recording may be played."""

    READY = "ready"
    # Downloaded, not yet transcribed and written back redacted.
    REDACTING = "redacting"
    # Never redacted: its transcription failed for good, or it was stored before the
    # recording was redacted at all.
    NOT_REDACTED = "not_redacted"


def playback(call: CallState, recording_key: str) -> Playback:
    """A downloaded recording is played only once the transcriber announced it redacted
    (`transcript.ready` of the transcript stage's current attempt naming this recording)."""
    match call.transcript_status:
        case StageStatus.PENDING | StageStatus.PROCESSING:
            return Playback.REDACTING
        case StageStatus.COMPLETED | StageStatus.NO_SPEECH if (
            call.redacted_recording_key == recording_key
        ):
            return Playback.READY
    return Playback.NOT_REDACTED


def timeline_stage(event: AnyEvent) -> str | None:
    if isinstance(event, StageStarted | StageFailed):
        return event.stage.value
    return None


class NotRetryable(Exception):
    """The stage is not in a state a retry can change."""


def retry_attempt(state: CallState, stage: Stage) -> int:
    """The attempt a retry of `stage` runs as. Only a failed stage is retried, so a double
    click (the second finds the stage no longer failed) retries once."""
    status = state.stage_status(stage)
    if status != StageStatus.FAILED:
        raise NotRetryable(f"the {stage} stage is {status}; only a failed stage is retried")
    return int(getattr(state, f"{stage.value}_attempt")) + 1


def retrying(state: CallState, stage: Stage, attempt: int) -> CallState:
    """The call once a retry of `stage` at `attempt` is queued: that stage and the later
    ones pending again, the old error cleared."""
    state = _reopen_downstream(state, stage, attempt)
    changes: dict[str, Any] = {
        f"{stage.value}_status": StageStatus.PENDING,
        f"{stage.value}_attempt": attempt,
        f"{stage.value}_error": None,
    }
    return dataclasses.replace(state, **changes)


def as_retry(stage_input: AnyEvent, attempt: int) -> AnyEvent:
    """The stage's input again, as the next attempt. It keeps its `occurred_at`: object keys
    are dated by it, so a retry finds and replaces the same objects."""
    return stage_input.model_copy(
        update={
            "event_id": uuid.uuid5(stage_input.event_id, f"retry.{attempt}"),
            "attempt": attempt,
        }
    )


CALL_FIELDS = tuple(field.name for field in dataclasses.fields(CallState))
_row_statuses = itemgetter(*STATUS_FIELDS)
_row_errors = itemgetter(*ERROR_FIELDS)


def call_view(call: Mapping[str, Any]) -> dict[str, Any]:
    """A call as the API shows it, from its fields: a status table row (the call list) or a
    CallState's (`vars(state)`)."""
    view = {name: call[name] for name in CALL_FIELDS}
    statuses = _row_statuses(call)
    view["status"] = overall_status(statuses)
    view["last_error"] = last_error(statuses, _row_errors(call))
    view["lead"] = json.loads(view.pop("lead_json")) if view["lead_json"] else None
    view["created_at"] = call["created_at"].isoformat()
    view["updated_at"] = call["updated_at"].isoformat()
    expired = call["audio_expired_at"]
    view["audio_expired_at"] = expired.isoformat() if expired else None
    return view


def own_key(call: CallState, key: str | None) -> str | None:
    """The row's object key, only when under the call's own business prefix: even a
    poisoned status row never makes the player read, presign or delete another's."""
    return key if key and key_of_business(key, call.business_id) else None


def recording_folder(call: CallState) -> str | None:
    """The folder of the recording the row names, when it is this call's own (its last
    segment the call SID) under the call's business."""
    key = own_key(call, call.recording_key)
    folder = key.rpartition("/")[0] if key else ""
    return f"{folder}/" if folder.endswith(f"/{call.call_sid}") else None


def stored_objects(event: AnyEvent) -> list[str]:
    """The keys of the objects the event announces as stored."""
    match event:
        case RecordingDownloaded():
            return recording_objects(event.object_key)
        case TranscriptReady():
            return [event.transcript_key]
    return []


def recording_objects(recording_key: str) -> list[str]:
    """The audio and the downloader's record of it."""
    return [recording_key, f"{recording_key}.manifest.json"]
