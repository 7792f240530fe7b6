"""Downloader: fetch the recording media from Twilio (basic auth) and store it in S3."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import httpx

from services.downloader import core
from shared.events import AnyEvent, Event, RecordingCompleted, RecordingDownloaded
from shared.retry import TerminalError
from shared.storage import ObjectStore, recording_key

log = logging.getLogger(__name__)


class MediaNotReady(Exception):
    """The provider does not have the media yet; retried with backoff."""


class DownloadHandler:
    def __init__(self, http: httpx.AsyncClient, store: ObjectStore, media_format: str) -> None:
        self._http = http
        self._store = store
        self._format = media_format

    async def __call__(self, event: AnyEvent) -> Sequence[Event]:
        if not isinstance(event, RecordingCompleted):
            raise TerminalError(f"downloader cannot handle {event.event_type}")
        key = recording_key(event.business_id, event.call_sid, event.recording_sid, self._format)
        content_type = core.MEDIA_FORMATS[self._format]
        stored = await self._store.head(key)
        if stored is not None and "sha256" in stored.metadata:
            log.info("already stored as %s, not fetched again", key)
            size, sha256 = stored.size, stored.metadata["sha256"]
        else:
            data = await self._fetch(core.media_url(event.recording_url, self._format))
            sha256 = hashlib.sha256(data).hexdigest()
            size = len(data)
            await self._store.put(key, data, content_type, metadata={"sha256": sha256})
            log.info("stored %d bytes as %s", size, key)
        return [
            event.caused(
                RecordingDownloaded,
                "recording.downloaded",
                recording_sid=event.recording_sid,
                object_key=key,
                content_type=content_type,
                size_bytes=size,
                sha256=sha256,
                channels=event.channels,
            )
        ]

    async def _fetch(self, url: str) -> bytes:
        response = await self._http.get(url)
        match core.verdict(response.status_code):
            case core.FetchVerdict.OK:
                return response.content
            case core.FetchVerdict.NOT_READY:
                raise MediaNotReady(f"media not ready yet (404) at {url}")
            case core.FetchVerdict.RETRY:
                raise httpx.HTTPStatusError(
                    f"provider answered {response.status_code}",
                    request=response.request,
                    response=response,
                )
            case core.FetchVerdict.GIVE_UP:
                raise TerminalError(f"provider answered {response.status_code} for {url}")
        raise AssertionError("unreachable")
