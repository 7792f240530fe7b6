"""Downloader core: where to fetch a recording, and what an answer of the provider means."""

from __future__ import annotations

from enum import Enum

from shared.events import AnyEvent, RecordingCompleted

MEDIA_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg"}


class FetchVerdict(Enum):
    OK = "ok"
    NOT_READY = "not_ready"  # Twilio answers 404 for a few seconds after `completed`
    RETRY = "retry"
    GIVE_UP = "give_up"


def wants(event: AnyEvent) -> bool:
    return isinstance(event, RecordingCompleted) and event.recording_status == "completed"


def media_url(recording_url: str, media_format: str) -> str:
    base = recording_url.removesuffix(".json")
    for extension in MEDIA_FORMATS:
        base = base.removesuffix(f".{extension}")
    return f"{base}.{media_format}"


def verdict(status_code: int) -> FetchVerdict:
    if 200 <= status_code < 300:
        return FetchVerdict.OK
    if status_code == 404:
        return FetchVerdict.NOT_READY
    if status_code in (408, 425, 429) or status_code >= 500:
        return FetchVerdict.RETRY
    return FetchVerdict.GIVE_UP
