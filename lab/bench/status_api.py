"""The status page's call list (`GET /api/calls`, the first page, newest first, with the
total) with many calls in the table: the table is filled straight through SQL (completed
calls spread over the past weeks), then the list is asked at an offered rate."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime, timedelta

import aiohttp
from sqlalchemy import insert

from lab.bench.load import LoadResult, as_fast_as_possible, offer
from services.player.repository import count_calls
from services.player.tables import calls
from shared.call_state import CallState, StageStatus
from shared.db import create_engine
from shared.settings import Settings

INSERT_CHUNK = 5000
CONCURRENCY = 16


def seeded_call(business_id: str, index: int, now: datetime) -> dict[str, object]:
    """A completed call, `index` minutes before `now`."""
    moment = now - timedelta(minutes=index)
    state = CallState(
        call_sid=f"CAseed{index:08d}{secrets.token_hex(8)}",
        business_id=business_id,
        created_at=moment,
        updated_at=moment,
        from_number=f"+1555{index % 10_000_000:07d}",
        to_number="+15005550001",
        direction="inbound",
        recording_status=StageStatus.COMPLETED,
        transcript_status=StageStatus.COMPLETED,
        summary_status=StageStatus.COMPLETED,
        transcript_preview="caller: I need a plumber in Boston tomorrow morning.",
        summary="A caller asked for a plumber in Boston.",
        lead_service="plumbing",
        lead_city="Boston",
        lead_confidence=0.9,
    )
    return dataclasses.asdict(state)


async def seed_calls(settings: Settings, count: int) -> None:
    engine = create_engine(settings.database_url)
    now = datetime.now(UTC) - timedelta(hours=1)  # older than the pipeline's calls
    try:
        for start in range(0, count, INSERT_CHUNK):
            rows = [
                seeded_call(settings.business.default_id, index, now)
                for index in range(start, min(count, start + INSERT_CHUNK))
            ]
            async with engine.begin() as connection:
                await connection.execute(insert(calls), rows)
                await connection.run_sync(count_calls, settings.business.default_id, len(rows))
    finally:
        await engine.dispose()


class CallList:
    def __init__(self, settings: Settings, http: aiohttp.ClientSession) -> None:
        self._http = http
        self._url = f"http://127.0.0.1:{settings.player.port}/api/calls"
        self._auth = {"Authorization": f"Bearer {settings.player.api_key.get_secret_value()}"}

    async def first_page(self, _index: int = 0) -> None:
        async with self._http.get(self._url, headers=self._auth) as answer:
            if answer.status != 200:
                raise RuntimeError(f"player answered {answer.status}: {await answer.text()}")
            await answer.read()


async def call_list_at_rate(
    settings: Settings, http: aiohttp.ClientSession, rate_per_s: float, seconds: float
) -> LoadResult:
    return await offer(CallList(settings, http).first_page, rate_per_s, seconds)


async def call_list_per_s(
    settings: Settings, http: aiohttp.ClientSession, count: int
) -> LoadResult:
    listing = CallList(settings, http)
    return await as_fast_as_possible(listing.first_page, count, CONCURRENCY)
