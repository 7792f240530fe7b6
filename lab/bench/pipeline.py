"""Calls through the whole pipeline: the signed `completed` recording callback at the ingress
→ downloader (simulator media → S3) → transcriber → extractor (instant backends) →
summary.ready → the call's row in the player's status table shows the summary completed.

"Visible in the player" is read from the player's status table itself (the table its API
answers from) every few milliseconds: polling the HTTP API for every call in flight would
load the player with the measurement."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from lab.bench.load import LoadResult, as_fast_as_possible, offer
from lab.bench.twilio import Recording, SignedWebhooks, register_recordings
from services.player.tables import calls
from shared.db import create_engine
from shared.settings import Settings

POLL_SECONDS = 0.01
QUERY_CHUNK = 500
POST_CONCURRENCY = 32


class CompletionWatcher:
    """Resolves a future per call once its summary stage is completed in the status table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._waiting: dict[str, asyncio.Future[float]] = {}

    def expect(self, call_sid: str) -> asyncio.Future[float]:
        future = asyncio.get_running_loop().create_future()
        self._waiting[call_sid] = future
        return future

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            sids = list(self._waiting)
            for start in range(0, len(sids), QUERY_CHUNK):
                chunk = sids[start : start + QUERY_CHUNK]
                query = select(calls.c.call_sid).where(
                    calls.c.call_sid.in_(chunk), calls.c.summary_status == "completed"
                )
                async with self._engine.connect() as connection:
                    done = (await connection.execute(query)).scalars().all()
                seen = time.perf_counter()
                for call_sid in done:
                    future = self._waiting.pop(call_sid)
                    if not future.done():
                        future.set_result(seen)


@dataclass
class Pipeline:
    settings: Settings
    http: aiohttp.ClientSession
    watcher: CompletionWatcher
    audio: str
    call_timeout_seconds: float
    business_ids: list[str]

    async def one_call(self, webhooks: SignedWebhooks, recording: Recording) -> None:
        visible = self.watcher.expect(recording.call_sid)
        await webhooks.recording_status(recording, "completed")
        await asyncio.wait_for(visible, self.call_timeout_seconds)

    async def saturate(self, count: int) -> LoadResult:
        """`count` calls offered as fast as the ingress takes them: calls per second from
        the first webhook to the last call visible in the player."""
        recordings = await register_recordings(
            self.settings, self.http, self.audio, count, self.business_ids
        )
        webhooks = SignedWebhooks(self.settings, self.http)
        posting = asyncio.Semaphore(POST_CONCURRENCY)

        async def call(index: int) -> None:
            visible = self.watcher.expect(recordings[index].call_sid)
            async with posting:
                await webhooks.recording_status(recordings[index], "completed")
            await asyncio.wait_for(visible, self.call_timeout_seconds)

        return await as_fast_as_possible(call, count, concurrency=count)

    async def at_rate(self, rate_per_s: float, seconds: float) -> LoadResult:
        """Calls arriving at `rate_per_s` for `seconds` (open loop); each call's latency from
        its webhook's arrival time to visible in the player."""
        count = max(1, round(rate_per_s * seconds))
        recordings = await register_recordings(
            self.settings, self.http, self.audio, count, self.business_ids
        )
        webhooks = SignedWebhooks(self.settings, self.http)

        async def call(index: int) -> None:
            await self.one_call(webhooks, recordings[index])

        return await offer(call, rate_per_s, seconds)


@contextlib.asynccontextmanager
async def pipeline(
    settings: Settings,
    http: aiohttp.ClientSession,
    audio: str,
    call_timeout_seconds: float,
    business_ids: list[str],
) -> AsyncIterator[Pipeline]:
    engine = create_engine(settings.database_url)
    watcher = CompletionWatcher(engine)
    watching = asyncio.create_task(watcher.run())
    try:
        yield Pipeline(settings, http, watcher, audio, call_timeout_seconds, business_ids)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await engine.dispose()
