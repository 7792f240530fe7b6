"""A call's progress through the pipeline's stages, as the player projects it into the status
table and the reconciler reads it back. No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import TYPE_CHECKING

from shared.events import Stage

if TYPE_CHECKING:
    from shared.events import AnyEvent


class StageStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    NO_RECORDING = "no_recording"
    NO_SPEECH = "no_speech"
    SKIPPED = "skipped"


# How far along a stage is within one attempt: a status only ever moves to a higher rank.
STATUS_RANK = {
    StageStatus.PENDING: 0,
    StageStatus.PROCESSING: 1,
    StageStatus.FAILED: 2,
    StageStatus.COMPLETED: 3,
    StageStatus.NO_RECORDING: 3,
    StageStatus.NO_SPEECH: 3,
    StageStatus.SKIPPED: 3,
}
TERMINAL = frozenset(
    {
        StageStatus.COMPLETED,
        StageStatus.FAILED,
        StageStatus.NO_RECORDING,
        StageStatus.NO_SPEECH,
        StageStatus.SKIPPED,
    }
)
STAGES = (Stage.RECORDING, Stage.TRANSCRIPT, Stage.SUMMARY)


@dataclass(frozen=True)
class CallState:
    call_sid: str
    business_id: str
    created_at: datetime
    updated_at: datetime
    from_number: str = ""
    to_number: str = ""
    direction: str = ""
    recording_status: StageStatus = StageStatus.PENDING
    recording_attempt: int = 0
    recording_tries: int = 0
    transcript_status: StageStatus = StageStatus.PENDING
    transcript_attempt: int = 0
    transcript_tries: int = 0
    summary_status: StageStatus = StageStatus.PENDING
    summary_attempt: int = 0
    summary_tries: int = 0
    recording_error: str | None = None
    transcript_error: str | None = None
    summary_error: str | None = None
    recording_sid: str | None = None
    recording_key: str | None = None
    recording_content_type: str | None = None
    recording_bytes: int | None = None
    # The recording as the transcriber wrote it back redacted: only then is it played.
    redacted_recording_key: str | None = None
    duration_seconds: float | None = None
    transcript_key: str | None = None
    transcript_preview: str | None = None
    language: str | None = None
    summary: str | None = None
    lead_service: str | None = None
    lead_city: str | None = None
    lead_confidence: float | None = None
    lead_json: str | None = None  # the whole lead with its evidence, as the extractor sent it
    extractor: str | None = None
    # Set when the business's retention deleted the call's audio: when, and why.
    audio_expired_at: datetime | None = None
    audio_expired_reason: str | None = None

    @classmethod
    def new(cls, event: AnyEvent) -> CallState:
        return cls(
            call_sid=event.call_sid,
            business_id=event.business_id,
            created_at=event.occurred_at,
            updated_at=event.occurred_at,
        )

    @property
    def status(self) -> StageStatus:
        """The call as a whole: failed if any stage failed, completed when all are done."""
        return overall_status(_stage_statuses(self))

    def stage_status(self, stage: Stage) -> StageStatus:
        status: StageStatus = getattr(self, f"{stage.value}_status")
        return status

    @property
    def last_error(self) -> str | None:
        """The failed stage's error, else the latest stage's (a retried transient one)."""
        return last_error(_stage_statuses(self), _stage_errors(self))


# The stages' fields, in STAGES order, read by name in one go: the call list computes a
# call's status and last error for every row it shows.
STATUS_FIELDS = tuple(f"{stage.value}_status" for stage in STAGES)
ERROR_FIELDS = tuple(f"{stage.value}_error" for stage in STAGES)
_stage_statuses = attrgetter(*STATUS_FIELDS)
_stage_errors = attrgetter(*ERROR_FIELDS)


def overall_status(statuses: Sequence[str]) -> StageStatus:
    """A call's status from its stages' (STATUS_FIELDS): failed if any failed, completed
    when all are done."""
    if StageStatus.FAILED in statuses:
        return StageStatus.FAILED
    if all(s in TERMINAL for s in statuses):
        return StageStatus.COMPLETED
    if any(s != StageStatus.PENDING for s in statuses):
        return StageStatus.PROCESSING
    return StageStatus.PENDING


def last_error(statuses: Sequence[str], errors: Sequence[str | None]) -> str | None:
    """The failed stage's error, else the latest unfinished or ended stage's (a retried
    transient one, or why there is no recording). A completed stage's error is history: a
    retry that later succeeded."""
    stages = list(zip(statuses, errors, strict=True))
    for status, error in stages:
        if status == StageStatus.FAILED and error:
            return error
    return next(
        (error for status, error in reversed(stages) if error and status != StageStatus.COMPLETED),
        None,
    )
