"""A call's export for a subject access request: everything held about it in one document.
No I/O: the route gathers the parts, this puts them together (decision 1207)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.player.data_settings import DataSettings
from shared.redaction.kinds import EntityKind
from shared.transcript import Transcript

EXPORT_SCHEMA_VERSION = 1


class AudioLink(BaseModel):
    url: str = Field(
        description="The call's playback URL (`GET /api/recordings/{call_sid}/file`, with the "
        "same key or login): the audio itself is not in the document."
    )
    content_type: str | None
    size_bytes: int | None
    duration_seconds: float | None


class AppliedSettings(BaseModel):
    redacted: list[EntityKind] | None = Field(
        description="The kinds redacted from this call's transcript, summary and lead, as its "
        "transcript records them (the choice in force when its recording was fetched); null "
        "without a transcript, or one that records none."
    )
    current: DataSettings = Field(
        description="The business's data settings at the time of export: the retentions and "
        "Twilio deletion that apply to the call from now on. Changes made while the call was "
        "on its way are on its timeline (`settings.changed`)."
    )


class CallExport(BaseModel):
    """Everything callpipe holds about one call."""

    schema_version: int = Field(description="This document's version; 1.")
    exported_at: datetime
    call: dict[str, Any] = Field(
        description="The call's row: numbers, direction, times, every stage's status, "
        "attempts, tries and error, object keys, preview, summary and lead."
    )
    timeline: list[dict[str, Any]] = Field(description="The call's events, in order.")
    transcript: Transcript | None = Field(description="The stored transcript; null if none.")
    summary: str | None
    lead: dict[str, Any] | None = Field(description="The lead, each field with its evidence.")
    data_settings: AppliedSettings
    audio: AudioLink | None = Field(description="Null when no recording is stored.")


def call_export(
    call: dict[str, Any],
    timeline: list[dict[str, Any]],
    transcript: Transcript | None,
    settings: DataSettings,
    playback_url: str,
    now: datetime,
) -> CallExport:
    """The document, from the call as the API shows it (`call_view`), its timeline, its
    transcript, the business's data settings and the playback URL."""
    audio = None
    if call["recording_key"]:
        audio = AudioLink(
            url=playback_url,
            content_type=call["recording_content_type"],
            size_bytes=call["recording_bytes"],
            duration_seconds=call["duration_seconds"],
        )
    redaction = transcript.redaction if transcript else None
    return CallExport(
        schema_version=EXPORT_SCHEMA_VERSION,
        exported_at=now,
        call=call,
        timeline=timeline,
        transcript=transcript,
        summary=call["summary"],
        lead=call["lead"],
        data_settings=AppliedSettings(
            redacted=list(redaction.kinds) if redaction else None,
            current=settings,
        ),
        audio=audio,
    )
