"""The stored transcript: JSON beside the audio in the object store, read by the extractor,
the player and outside consumers (its JSON Schema is in docs/events/)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Word(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    text: str
    probability: float


class Utterance(BaseModel):
    model_config = ConfigDict(frozen=True)

    speaker: str
    start: float
    end: float
    text: str
    confidence: float
    words: list[Word]


class Transcript(BaseModel):
    model_config = ConfigDict(frozen=True)

    call_sid: str
    recording_sid: str
    language: str | None
    duration_seconds: float
    speakers: list[str]
    utterances: list[Utterance]
    model: str

    @property
    def has_speech(self) -> bool:
        return bool(self.utterances)
