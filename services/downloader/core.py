"""Downloader core: where to fetch a recording, where to store it, and what to do with each
answer of the provider: every retry-or-give-up decision of the downloader is made here and
returned as a value (`shared.decisions`); the handler carries it out. No I/O."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from urllib.parse import urlsplit

from shared.decisions import Discard, GiveUp, Retry, for_deleted_call
from shared.events import AnyEvent, RecordingCompleted
from shared.redaction.kinds import EntityKind, redacted_kinds

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


def redact(kinds: frozenset[EntityKind]) -> list[EntityKind]:
    """What the call's later stages redact, as `recording.downloaded` carries it: the kinds
    the business chose, and always cards and long numbers."""
    return sorted(redacted_kinds(kinds))


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


def deleted_call(deleted: bool, archived_key: str | None = None) -> Discard | None:
    """A deleted call's recording is not fetched; one archived while the call was deleted
    is deleted again, audio and manifest, and not announced."""
    stored = (archived_key, manifest_key(archived_key)) if archived_key else ()
    return for_deleted_call(deleted, stored)


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


def retry_after_seconds(header: str | None, now: datetime) -> float:
    """HTTP Retry-After (seconds or an HTTP date), bounded to [0, MAX_RETRY_AFTER_SECONDS];
    0 (at once) when the header is absent or unreadable."""
    if not header:
        return 0.0
    header = header.strip()
    if header.isdigit():
        seconds = float(header)
    else:
        try:
            seconds = (parsedate_to_datetime(header) - now).total_seconds()
        except (TypeError, ValueError):
            return 0.0
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


@dataclass(frozen=True)
class Fetch:
    """Fetch the media from `url`."""

    url: str


@dataclass(frozen=True)
class Store:
    """The answer carries the media: store it."""


@dataclass(frozen=True)
class Follow:
    """The provider redirected to an allowed `url`: ask there."""

    url: str


@dataclass(frozen=True)
class Deleted:
    """The provider holds the recording no more."""


@dataclass(frozen=True)
class LeaveThere:
    """The provider refused the delete for good: the recording stays there, archived here."""

    reason: str


def source(
    recording_url: str, media_format: str, allowed_origins: tuple[str, ...]
) -> Fetch | GiveUp:
    url = media_url(recording_url, media_format)
    if not url_allowed(url, allowed_origins):
        return GiveUp(f"recording URL {url!r} is not on an allowed provider origin")
    return Fetch(url)


def media_answer(
    status_code: int,
    url: str,
    location: str | None,
    retry_after: str | None,
    allowed_origins: tuple[str, ...],
    redirects: int,
    now: datetime,
) -> Store | Follow | Retry | GiveUp:
    """What to do with the provider's answer to the media GET of `url`, the `redirects`th
    redirect of the first one; `location` is the answer's redirect target made absolute."""
    match verdict(status_code):
        case FetchVerdict.OK:
            return Store()
        case FetchVerdict.REDIRECT:
            if redirects >= MAX_REDIRECTS:
                return GiveUp(f"more than {MAX_REDIRECTS} redirects, the last to {url}")
            if not location or not url_allowed(location, allowed_origins):
                return GiveUp(f"provider redirected to a disallowed URL {location!r}")
            return Follow(location)
        case FetchVerdict.NOT_READY:
            return Retry(f"media not ready yet (404) at {url}", NOT_READY_WAIT_SECONDS)
        case FetchVerdict.RETRY:
            after = retry_after_seconds(retry_after, now)
            return Retry(f"provider answered {status_code} for {url}", after)
        case FetchVerdict.GIVE_UP:
            return GiveUp(f"provider answered {status_code} for {url}")


def size_allowed(size: int, limit: int) -> GiveUp | None:
    """A recording over the limit, as declared by the provider or as received, is refused."""
    if size > limit:
        return GiveUp(f"recording is over the limit of {limit} bytes ({size} bytes or more)")
    return None


def delete_answer(
    status_code: int, url: str, retry_after: str | None, now: datetime
) -> Deleted | Retry | LeaveThere:
    """What the provider's answer to the delete of an archived recording means."""
    if status_code in (200, 204, 404):
        return Deleted()
    if verdict(status_code) is FetchVerdict.RETRY:
        after = retry_after_seconds(retry_after, now)
        return Retry(f"provider answered {status_code} to the delete of {url}", after)
    return LeaveThere(f"provider refused to delete {url} ({status_code})")


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
