"""Playback: one large recording fetched whole through the player's
`GET /api/recordings/{call_sid}/file` (following its 307 to the presigned object-store URL,
as a browser does: the redirect's round trip counts) vs straight from the object store with
the services' own client, one at a time, alternating, after one unmeasured fetch each way."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from datetime import UTC, datetime

import aiohttp
from sqlalchemy import insert

from services.player.repository import count_calls
from services.player.tables import calls
from shared.call_state import CallState, StageStatus
from shared.db import create_engine
from shared.settings import Settings
from shared.storage import ObjectStore

MB = 1_000_000
READ_BYTES = 256 * 1024


async def _add_recording(settings: Settings, store: ObjectStore, size_mb: float) -> tuple[str, str]:
    call_sid = f"CAplayback{secrets.token_hex(11)}"
    key = f"{settings.business.default_id}/playback/{call_sid}.wav"
    await store.put(key, os.urandom(int(size_mb * MB)), "audio/wav")
    now = datetime.now(UTC)
    state = CallState(
        call_sid=call_sid,
        business_id=settings.business.default_id,
        created_at=now,
        updated_at=now,
        recording_status=StageStatus.COMPLETED,
        recording_key=key,
        recording_content_type="audio/wav",
        recording_bytes=int(size_mb * MB),
        # As the transcriber leaves it: the player plays only a redacted recording.
        transcript_status=StageStatus.COMPLETED,
        redacted_recording_key=key,
    )
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(calls).values(**dataclasses.asdict(state)))
            await connection.run_sync(count_calls, settings.business.default_id, 1)
    finally:
        await engine.dispose()
    return call_sid, key


async def playback_mb_per_s(
    settings: Settings, http: aiohttp.ClientSession, size_mb: float, runs: int
) -> tuple[float, float]:
    """(through the player, straight from S3), MB/s."""
    store = ObjectStore(settings.s3)
    await store.start()
    try:
        call_sid, key = await _add_recording(settings, store, size_mb)
        url = f"http://127.0.0.1:{settings.player.port}/api/recordings/{call_sid}/file"
        auth = {"Authorization": f"Bearer {settings.player.api_key.get_secret_value()}"}

        async def through_player() -> int:
            received = 0
            # aiohttp follows the redirect and, as browsers do, does not send the player's
            # Authorization header to the object store's origin.
            async with http.get(url, headers=auth) as answer:
                answer.raise_for_status()
                async for chunk in answer.content.iter_chunked(READ_BYTES):
                    received += len(chunk)
            return received

        async def straight_from_s3() -> int:
            received = 0
            async for chunk in store.stream(key, chunk_size=READ_BYTES):
                received += len(chunk)
            return received

        seconds = {through_player: 0.0, straight_from_s3: 0.0}
        received = {through_player: 0, straight_from_s3: 0}
        for fetch in seconds:
            await fetch()  # warm-up: connections, caches
        for _ in range(runs):
            for fetch in seconds:
                started = time.perf_counter()
                received[fetch] += await fetch()
                seconds[fetch] += time.perf_counter() - started
        return (
            received[through_player] / MB / seconds[through_player],
            received[straight_from_s3] / MB / seconds[straight_from_s3],
        )
    finally:
        await store.stop()
