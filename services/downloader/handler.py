"""Downloader: stream a recording's media from the provider into S3, once, politely.

The audio object's key is deterministic and a manifest (size, SHA-256, content type) is
written beside it only once the stored object is verified, so a redelivered or retried job
finds the work done and only publishes the event again. Downloads hold one of the
business's slots (`slots.py`); waiting for the media to exist does not hold a slot. A call
deleted before its recording is archived is skipped; one deleted while it was archived has
its archive deleted again (`shared.tombstones`): nothing is announced for either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from services.downloader import core
from services.downloader.policies import RedactionPolicies
from services.downloader.slots import DownloadSlots
from shared import metrics
from shared.decisions import Retry
from shared.events import AnyEvent, Event, RecordingCompleted, RecordingDownloaded
from shared.retry import TerminalError, carry_out
from shared.storage import ObjectStore
from shared.tombstones import discard, is_deleted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownloadPolicy:
    media_format: str
    allowed_origins: tuple[str, ...]
    max_bytes: int
    part_bytes: int
    delete_after_archive: bool


class DownloadHandler:
    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: tuple[str, str],
        store: ObjectStore,
        slots: DownloadSlots,
        policy: DownloadPolicy,
        redaction: RedactionPolicies,
    ) -> None:
        self._http = http
        self._auth = httpx.BasicAuth(*credentials)
        self._store = store
        self._slots = slots
        self._policy = policy
        self._redaction = redaction

    async def __call__(self, event: AnyEvent) -> Sequence[Event]:
        if not isinstance(event, RecordingCompleted):
            raise TerminalError(f"downloader cannot handle {event.event_type}")
        policy = self._policy
        fetch = core.source(event.recording_url, policy.media_format, policy.allowed_origins)
        if not isinstance(fetch, core.Fetch):
            carry_out(fetch)
        if skip := core.deleted_call(await is_deleted(self._store, event)):
            return await discard(self._store, skip)
        key = core.object_key(
            event.business_id,
            event.occurred_at.date(),
            event.call_sid,
            event.recording_sid,
            policy.media_format,
        )
        manifest = await self._archived(key)
        if manifest is None:
            async with self._slots.hold(event.business_id):
                manifest = await self._archive(fetch.url, key)
        else:
            log.info("already archived as %s, not fetched again", key)
        if deleted_meanwhile := core.deleted_call(await is_deleted(self._store, event), key):
            return await discard(self._store, deleted_meanwhile)
        if policy.delete_after_archive:
            await self._delete_at_provider(core.resource_url(event.recording_url))
        redact = core.redact(await self._redaction.redaction_kinds(event.business_id))
        return [
            event.caused(
                RecordingDownloaded,
                "recording.downloaded",
                recording_sid=event.recording_sid,
                object_key=key,
                content_type=manifest.content_type,
                size_bytes=manifest.size_bytes,
                sha256=manifest.sha256,
                channels=event.channels,
                direction=event.direction,
                redact=redact,
            )
        ]

    async def _archived(self, key: str) -> core.Manifest | None:
        """The manifest, when it and the object it describes are both in the store."""
        raw = await self._store.get_if_exists(core.manifest_key(key))
        if raw is None:
            return None
        manifest = core.Manifest.from_json(raw)
        stored = await self._store.head(key)
        if stored is None or stored.size != manifest.size_bytes:
            log.warning("manifest of %s does not match the stored object: fetching again", key)
            return None
        return manifest

    async def _archive(self, source: str, key: str) -> core.Manifest:
        content_type = core.MEDIA_FORMATS[self._policy.media_format]
        digest = hashlib.sha256()
        async with self._media(source) as response:
            declared = response.headers.get("content-length")
            if declared and (refused := core.size_allowed(int(declared), self._policy.max_bytes)):
                carry_out(refused)
            # Returns once the stored object is verified to hold exactly the bytes received.
            size = await self._store.put_parts(key, self._parts(response, digest), content_type)
        if size == 0:
            raise OSError(f"the provider sent no bytes for {source}")
        manifest = core.Manifest(key, size, digest.hexdigest(), content_type, source)
        await self._store.put(core.manifest_key(key), manifest.to_json(), "application/json")
        log.info("archived %d bytes as %s", size, key)
        metrics.DOWNLOAD_BYTES.inc(size)
        return manifest

    async def _parts(self, response: httpx.Response, digest: hashlib._Hash) -> AsyncIterator[bytes]:
        """The body in parts of `part_bytes`, hashed off the event loop, within the limit."""
        buffer = bytearray()
        received = 0
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if refused := core.size_allowed(received, self._policy.max_bytes):
                carry_out(refused)
            buffer += chunk
            if len(buffer) >= self._policy.part_bytes:
                part = bytes(buffer)
                buffer.clear()
                await asyncio.to_thread(digest.update, part)
                yield part
        if buffer:
            part = bytes(buffer)
            await asyncio.to_thread(digest.update, part)
            yield part

    @contextlib.asynccontextmanager
    async def _media(self, source: str) -> AsyncIterator[httpx.Response]:
        """GETs the media, following redirects only to allowed origins, and sending the
        account's credentials only to the origin of the recording URL."""
        url = source
        for redirects in itertools.count():
            same_origin = core.origin_of(url) == core.origin_of(source)
            response = await self._http.send(
                self._http.build_request("GET", url),
                auth=self._auth if same_origin else None,
                stream=True,
            )
            location = response.headers.get("location")
            decision = core.media_answer(
                response.status_code,
                url,
                str(response.url.join(location)) if location else None,
                response.headers.get("retry-after"),
                self._policy.allowed_origins,
                redirects,
                datetime.now(UTC),
            )
            if isinstance(decision, core.Store):
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            await response.aclose()
            if not isinstance(decision, core.Follow):
                carry_out(decision)
            url = decision.url

    async def _delete_at_provider(self, url: str) -> None:
        """Only called once the archive is verified. A failure other than a transient one is
        logged, not fatal: the recording is safely archived either way."""
        response = await self._http.delete(url, auth=self._auth)
        match core.delete_answer(
            response.status_code, url, response.headers.get("retry-after"), datetime.now(UTC)
        ):
            case core.Deleted():
                log.info("recording deleted at the provider (%d)", response.status_code)
            case core.LeaveThere(reason):
                log.error("%s: left there", reason)
            case Retry() as retry:
                carry_out(retry)
