"""The stored transcript: JSON in the object store under its call ({business}/{call SID}/),
read by the extractor, the player and outside consumers (its JSON Schema is in docs/events/)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.redaction.kinds import EntityKind


class Word(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    text: str
    probability: float


class Segment(BaseModel):
    """One stretch of speech on one channel, as the recogniser returned it."""

    model_config = ConfigDict(frozen=True)

    speaker: str
    channel: int = Field(ge=0, description="0-based channel of the recording.")
    start: float
    end: float
    text: str
    confidence: float = Field(ge=0.0, le=1.0, description="exp(average token log-probability).")
    no_speech_probability: float = Field(0.0, ge=0.0, le=1.0)
    words: list[Word] = Field(default_factory=list)


class Utterance(BaseModel):
    """A turn: one speaker's consecutive segments, in the order the call went."""

    model_config = ConfigDict(frozen=True)

    speaker: str
    start: float
    end: float
    text: str
    confidence: float
    words: list[Word]


class RedactedSpan(BaseModel):
    """Where personal data was redacted: when, and who said it. Never what."""

    model_config = ConfigDict(frozen=True)

    kind: EntityKind
    start: float
    end: float
    speaker: str
    channel: int = Field(ge=0)


class AudioSpan(BaseModel):
    """A stretch of one channel of the recording replaced by the redaction's sound."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: int = Field(ge=0, description="0-based channel of the recording.")
    start: float = Field(ge=0.0, description="Seconds from the start of the recording.")
    end: float = Field(ge=0.0)


class AudioRedaction(BaseModel):
    """What was done to the stored recording: the redacted spans' times on their speaker's
    channel, padded and merged, replaced by a tone or silence. Never what was said."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    object_key: str = Field(description="The recording rewritten, in place.")
    sound: Literal["tone", "silence"] = Field(description="What replaced each span.")
    padding_seconds: float = Field(ge=0.0, description="Added before and after each span.")
    spans: list[AudioSpan] = Field(
        default_factory=list, description="By channel, then start; empty: nothing to replace."
    )


class Redaction(BaseModel):
    """What was redacted from the transcript: each span became a marker word (`[card]`,
    `[phone]`, ...) in the words and texts of its utterance and segments."""

    model_config = ConfigDict(frozen=True)

    kinds: list[EntityKind] = Field(description="The kinds redacted.")
    counts: dict[EntityKind, int] = Field(
        default_factory=dict, description="How many of each kind were found."
    )
    spans: list[RedactedSpan] = Field(default_factory=list, description="By start time.")
    audio: AudioRedaction | None = Field(
        None, description="The same spans replaced in the stored recording."
    )


class Transcript(BaseModel):
    model_config = ConfigDict(frozen=True)

    call_sid: str
    recording_sid: str
    language: str | None
    duration_seconds: float
    speakers: list[str]
    utterances: list[Utterance]
    model: str
    backend: str = Field("", description="`local` (faster-whisper) or `openai`.")
    segments: list[Segment] = Field(default_factory=list, description="By start time.")
    redaction: Redaction | None = Field(
        None, description="What was redacted from the utterances and segments."
    )

    @property
    def has_speech(self) -> bool:
        return bool(self.utterances)
