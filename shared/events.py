"""The event contract between callpipe's services and for outside consumers.

Every event is a frozen pydantic model serialised as JSON, keyed on Kafka by its call SID.
Within a schema version only optional fields are added. Audio never travels here: events
carry object keys. `docs/events/` holds the JSON Schemas generated from these models.
"""

from __future__ import annotations

import re
import uuid
import zlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    model_validator,
)

from shared.redaction.kinds import ALWAYS_REDACTED, EntityKind
from shared.transcript import AudioRedaction

SCHEMA_VERSION = 1
EventT = TypeVar("EventT", bound="Event")


class Topic(StrEnum):
    CALL_STARTED = "call.started"
    RECORDING_COMPLETED = "recording.completed"
    RECORDING_DOWNLOADED = "recording.downloaded"
    TRANSCRIPT_READY = "transcript.ready"
    SUMMARY_READY = "summary.ready"
    STAGE_STATUS = "stage.status"
    CALL_DELETED = "call.deleted"
    CALL_STATUS = "call.status"


class Stage(StrEnum):
    RECORDING = "recording"
    TRANSCRIPT = "transcript"
    SUMMARY = "summary"


# What an event may name. Every decoded event is checked (decision 1105): a forged one on the
# broker must not make a service read, write or hand out another business's objects. The SIDs
# are those the ingress accepts from Twilio.
BUSINESS_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CALL_SID_PATTERN = r"^CA[0-9A-Za-z]{1,62}$"
RECORDING_SID_PATTERN = r"^RE[0-9A-Za-z]{1,62}$"
_KEY_PATTERN = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)+")
MAX_KEY_LENGTH = 512
KEY_RULE = "`{business_id}/…`: letters, digits, `._-` and `/`, no `.` or `..` segment"
_DECODING = {"decoding": True}


def key_of_business(key: str, business_id: str) -> bool:
    """Whether an object key lies under the business's own prefix, with no way out of it."""
    segments = key.split("/")
    return (
        len(key) <= MAX_KEY_LENGTH
        and _KEY_PATTERN.fullmatch(key) is not None
        and segments[0] == business_id
        and not {".", ".."} & set(segments)
    )


def naming_problem(event: Event) -> str | None:
    """What an event names that it may not, if anything: an identifier off its pattern, or an
    object key outside the event's business."""
    if not re.fullmatch(BUSINESS_ID_PATTERN, event.business_id):
        return "business_id is not a slug"
    if not re.fullmatch(CALL_SID_PATTERN, event.call_sid):
        return "call_sid is not a call SID"
    recording_sid = getattr(event, "recording_sid", None)
    if recording_sid is not None and not re.fullmatch(RECORDING_SID_PATTERN, recording_sid):
        return "recording_sid is not a recording SID"
    audio_redaction = getattr(event, "audio_redaction", None)
    keys = {
        "object_key": getattr(event, "object_key", None),
        "transcript_key": getattr(event, "transcript_key", None),
        "audio_redaction.object_key": audio_redaction and audio_redaction.object_key,
    }
    for field_name, key in keys.items():
        if key is not None and not key_of_business(key, event.business_id):
            return f"{field_name} is not a key under the business's own prefix"
    return None


def utc_now() -> datetime:
    return datetime.now(UTC)


def _in_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


# Namespace of the ids callpipe derives from Twilio's identifiers (call and recording SIDs).
TWILIO_NAMESPACE = uuid.UUID("5b0c8f1e-6f0c-4d7e-9a53-8f7c2f0e1a11")


def call_correlation_id(call_sid: str) -> str:
    """One trace id (32 hex digits, W3C) per call, the same from every service."""
    return uuid.uuid5(TWILIO_NAMESPACE, call_sid).hex


def derived_event_id(source_event_id: uuid.UUID, name: str) -> uuid.UUID:
    """A deterministic id for an event caused by another: a redelivery yields the same id."""
    return uuid.uuid5(source_event_id, name)


class Sealed(BaseModel):
    """An event's personal fields, encrypted with its call's data key (decision 1204)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = Field(description="Version of the sealing: 1 is AES-256-GCM.")
    nonce: str = Field(description="The 12-byte nonce, base64.")
    ciphertext: str = Field(
        description="The personal fields as a JSON object of path → value, encrypted with "
        "the associated data `callpipe.sealed.v1|{event_id}|{event_type}|{business_id}|"
        "{call_sid}`, base64 (tag included)."
    )


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    schema_version: int = SCHEMA_VERSION
    occurred_at: Annotated[AwareDatetime, AfterValidator(_in_utc)] = Field(default_factory=utc_now)
    call_sid: str = Field(
        min_length=1, max_length=64, json_schema_extra={"pattern": CALL_SID_PATTERN}
    )
    business_id: str = Field(
        min_length=1, max_length=64, json_schema_extra={"pattern": BUSINESS_ID_PATTERN}
    )
    attempt: int = Field(default=1, ge=1)
    correlation_id: str = Field(
        min_length=1, description="Same for every event of one call; W3C trace id when traced."
    )
    sealed: Sealed | None = Field(
        None,
        description="The event's personal fields, encrypted with its call's key; they travel "
        "blank in the clear. Absent from events without personal fields.",
    )

    @model_validator(mode="after")
    def _names_only_its_own(self, info: ValidationInfo) -> Self:
        if info.context == _DECODING and (problem := naming_problem(self)):
            raise ValueError(problem)
        return self

    def caused(self, event_cls: type[EventT], name: str, **fields: Any) -> EventT:
        """Builds the next event of this call, with a deterministic id and the same lineage."""
        return event_cls(
            event_id=derived_event_id(self.event_id, name),
            call_sid=self.call_sid,
            business_id=self.business_id,
            attempt=self.attempt,
            correlation_id=self.correlation_id,
            **fields,
        )


TwilioParams = Annotated[
    dict[str, str],
    Field(description="Every parameter of the Twilio webhook, as Twilio sent it."),
]


class CallStarted(Event):
    event_type: Literal["call.started"] = "call.started"
    account_sid: str
    # A number, a SIP URI or a Client identity (`client:alice`), as Twilio names the party.
    from_number: str = Field("", max_length=1024)
    to_number: str = Field("", max_length=1024)
    direction: str = "inbound"
    twilio_params: TwilioParams = Field(default_factory=dict)


class CallStatusChanged(Event):
    """Twilio's call status callback: the call is ringing, in progress, completed, busy, …"""

    event_type: Literal["call.status"] = "call.status"
    call_status: str
    sequence_number: int | None = None
    duration_seconds: float | None = None
    twilio_params: TwilioParams = Field(default_factory=dict)


class RecordingStarted(Event):
    """Twilio's recording status callback `in-progress`: the recording runs."""

    event_type: Literal["recording.started"] = "recording.started"
    recording_sid: str = Field(json_schema_extra={"pattern": RECORDING_SID_PATTERN})
    channels: int = 1
    twilio_params: TwilioParams = Field(default_factory=dict)


class RecordingCompleted(Event):
    """Twilio's recording status callback: `completed`, `absent` or `failed`."""

    event_type: Literal["recording.completed"] = "recording.completed"
    recording_sid: str = Field(json_schema_extra={"pattern": RECORDING_SID_PATTERN})
    recording_status: Literal["completed", "absent", "failed"]
    recording_url: str = ""
    duration_seconds: float | None = None
    channels: int = 1
    error_code: str | None = None
    twilio_params: TwilioParams = Field(default_factory=dict)
    direction: str | None = Field(
        None, description="The call's direction (`inbound`, `outbound-api`…), when known."
    )


class RecordingDownloaded(Event):
    event_type: Literal["recording.downloaded"] = "recording.downloaded"
    recording_sid: str = Field(json_schema_extra={"pattern": RECORDING_SID_PATTERN})
    object_key: str = Field(description=f"The audio's object key, {KEY_RULE}.")
    content_type: str
    size_bytes: int
    sha256: str
    channels: int = 1
    direction: str | None = Field(
        None, description="Twilio's call direction (`inbound`, `outbound-api`…), when known."
    )
    redact: list[EntityKind] = Field(
        default=sorted(ALWAYS_REDACTED),
        description="The kinds of personal data the later stages redact from what they store "
        "and publish (the business's choice, always with `card` and `number`).",
    )


class RedactionSummary(BaseModel):
    """What was redacted from a transcript: the kinds redacted and how many of each were
    found. Never the values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kinds: list[EntityKind]
    counts: dict[EntityKind, int] = Field(default_factory=dict)


class TranscriptReady(Event):
    event_type: Literal["transcript.ready"] = "transcript.ready"
    outcome: Literal["transcribed", "no_speech"]
    transcript_key: str = Field(description=f"The transcript's object key, {KEY_RULE}.")
    language: str | None = None
    duration_seconds: float = 0.0
    speakers: list[str] = Field(default_factory=list)
    preview: str = Field("", max_length=500)
    redact: list[EntityKind] = Field(
        default=sorted(ALWAYS_REDACTED),
        description="The kinds of personal data redacted from the transcript, which the "
        "extractor redacts from its outputs too.",
    )
    redaction: RedactionSummary | None = Field(
        None,
        description="What the transcriber redacted from the transcript; null when not reported.",
    )
    audio_redaction: AudioRedaction | None = Field(
        None,
        description="What the transcriber replaced in the stored recording (the same spans, "
        "on the speaker's channel); null: the recording was not redacted, and is not played.",
    )


class Evidence(BaseModel):
    """Where in the transcript a lead field was found: the quoted words and their time, so a
    player can jump to that moment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    confidence: float = Field(ge=0.0, le=1.0)
    quote: str = Field(max_length=500)
    start: float = Field(ge=0.0, description="Seconds from the start of the recording.")
    end: float = Field(ge=0.0)
    speaker: str | None = None


LeadKind = Literal["lead", "spam", "wrong_number", "not_a_lead"]
Urgency = Literal["urgent", "normal"]


class Lead(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str | None = None
    city: str | None = None
    confidence: float = Field(0.0, ge=0.0, le=1.0)
    caller_name: str | None = None
    callback_number: str | None = None
    urgency: Urgency | None = None
    kind: LeadKind | None = Field(
        None, description="A real lead, spam, a wrong number, or not a lead."
    )
    in_service_area: bool | None = Field(
        None, description="Whether the city is one the business serves; null when unknown."
    )
    evidence: dict[str, Evidence] = Field(
        default_factory=dict, description="Per lead field name: its confidence and its source."
    )


class SummaryReady(Event):
    event_type: Literal["summary.ready"] = "summary.ready"
    outcome: Literal["extracted", "nothing_to_extract"]
    summary: str
    lead: Lead
    extractor: str = Field(description="Backend and version that produced this result.")
    model: str | None = Field(None, description="The LLM model that answered, if any.")
    prompt_version: str | None = Field(
        None, description="Version and digest of the prompt, to compare re-runs."
    )


class StageStarted(Event):
    """A stage has been working on the call for a while (`stage_started_after_ms`; work done
    sooner is announced by its output alone): its status becomes `processing`. `occurred_at`
    is when the stage took the work."""

    event_type: Literal["stage.started"] = "stage.started"
    stage: Stage


class StageFailed(Event):
    """A stage gave up on the call (terminal) or will retry (not terminal)."""

    event_type: Literal["stage.failed"] = "stage.failed"
    stage: Stage
    error: str = Field(max_length=2000)
    terminal: bool
    tries: int = Field(1, ge=0, description="Tries the stage made on this event so far.")


class CallDeleted(Event):
    """Tombstone: the call, its audio and transcript were deleted; consumers forget it."""

    event_type: Literal["call.deleted"] = "call.deleted"


AnyEvent = Annotated[
    CallStarted
    | CallStatusChanged
    | RecordingStarted
    | RecordingCompleted
    | RecordingDownloaded
    | TranscriptReady
    | SummaryReady
    | StageStarted
    | StageFailed
    | CallDeleted,
    Field(discriminator="event_type"),
]
_any_event: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

EVENT_TOPICS: dict[type[Event], Topic] = {
    CallStarted: Topic.CALL_STARTED,
    CallStatusChanged: Topic.CALL_STATUS,
    RecordingStarted: Topic.CALL_STATUS,
    RecordingCompleted: Topic.RECORDING_COMPLETED,
    RecordingDownloaded: Topic.RECORDING_DOWNLOADED,
    TranscriptReady: Topic.TRANSCRIPT_READY,
    SummaryReady: Topic.SUMMARY_READY,
    StageStarted: Topic.STAGE_STATUS,
    StageFailed: Topic.STAGE_STATUS,
    CallDeleted: Topic.CALL_DELETED,
}


def topic_of(event: Event) -> Topic:
    return EVENT_TOPICS[type(event)]


def stage_status_partition(stage: Stage, call_sid: str, partitions: int) -> int:
    """The `stage.status` partition of a stage's event for a call. The partitions are shared
    out among the stages (one each below three), and a call's events of one stage always
    land on the same one, in order. So the stages never write one partition together: the
    local broker holds each of two concurrent writers of a partition up to a second
    (decision 0918)."""
    stages = list(Stage)
    if partitions < len(stages):
        return stages.index(stage) % partitions
    share = partitions // len(stages)
    return stages.index(stage) * share + zlib.crc32(call_sid.encode()) % share


def input_of_stage(event: Event) -> Stage | None:
    """The stage that takes this event as its work (what a retry re-emits, with a higher
    attempt), if any."""
    match event:
        case RecordingCompleted(recording_status="completed"):
            return Stage.RECORDING
        case RecordingDownloaded():
            return Stage.TRANSCRIPT
        case TranscriptReady():
            return Stage.SUMMARY
    return None


def encode(event: Event) -> bytes:
    return event.model_dump_json(exclude=None if event.sealed else {"sealed"}).encode()


def decode(raw: bytes) -> AnyEvent:
    """Parses any callpipe event and checks what it names (`naming_problem`); raises
    pydantic.ValidationError on malformed input."""
    return _any_event.validate_json(raw, context=_DECODING)
