"""Downloader core: where to fetch a recording, where to store it, and what an answer of the
provider means. No I/O."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from urllib.parse import urlsplit

from shared.events import AnyEvent, RecordingCompleted

MEDIA_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg"}
# Twilio answers 404 for a few seconds after `completed`: never ask again sooner than this.
NOT_READY_WAIT_SECONDS = 1.0
# A Retry-After beyond this is taken as this: the stage's attempts stay bounded in time.
MAX_RETRY_AFTER_SECONDS = 120.0
MAX_REDIRECTS = 5


class FetchVerdict(Enum):
    OK = "ok"
    REDIRECT = "redirect"
    NOT_READY = "not_ready"
    RETRY = "retry"
    GIVE_UP = "give_up"


def wants(event: AnyEvent) -> bool:
    return isinstance(event, RecordingCompleted) and event.recording_status == "completed"


def media_url(recording_url: str, media_format: str) -> str:
    """Twilio's recording URL (bare, `.json`, `.wav` or `.mp3`) → its media URL in `format`.
    The media keeps the recording's channels: Twilio serves dual-channel as two channels."""
    base = recording_url.removesuffix(".json")
    for extension in MEDIA_FORMATS:
        base = base.removesuffix(f".{extension}")
    return f"{base}.{media_format}"


def resource_url(recording_url: str) -> str:
    """The recording's REST resource (for DELETE), whatever form the URL came in."""
    return media_url(recording_url, "json")


def object_key(
    business_id: str, recorded_on: date, call_sid: str, recording_sid: str, extension: str
) -> str:
    """Deterministic: a redelivered or retried job finds its own earlier work."""
    return f"{business_id}/{recorded_on.isoformat()}/{call_sid}/{recording_sid}.{extension}"


def manifest_key(key: str) -> str:
    """Written last, once the audio object is verified: its presence means "archived"."""
    return f"{key}.manifest.json"


def parse_origins(configured: str) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/").lower() for o in configured.split(",") if o.strip())


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{(parts.hostname or '').lower()}{port}"


def url_allowed(url: str, allowed_origins: tuple[str, ...]) -> bool:
    """Only the provider's origins; `https://*.example.com` admits its subdomains."""
    parts = urlsplit(url)
    if parts.username or parts.password or not parts.hostname:
        return False
    origin = origin_of(url)
    return any(
        origin == allowed or ("*" in allowed and fnmatch.fnmatchcase(origin, allowed))
        for allowed in allowed_origins
    )


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """HTTP Retry-After (seconds or an HTTP date), bounded to [0, MAX_RETRY_AFTER_SECONDS]."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        seconds = float(header)
    else:
        try:
            seconds = (parsedate_to_datetime(header) - now).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def verdict(status_code: int) -> FetchVerdict:
    if 200 <= status_code < 300:
        return FetchVerdict.OK
    if status_code in (301, 302, 303, 307, 308):
        return FetchVerdict.REDIRECT
    if status_code == 404:
        return FetchVerdict.NOT_READY
    if status_code in (408, 425, 429) or status_code >= 500:
        return FetchVerdict.RETRY
    return FetchVerdict.GIVE_UP


def too_large(size: int, limit: int) -> bool:
    return size > limit


@dataclass(frozen=True)
class Manifest:
    """What the downloader verified about the stored audio object."""

    key: str
    size_bytes: int
    sha256: str
    content_type: str
    source_url: str

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        return cls(**json.loads(raw))
