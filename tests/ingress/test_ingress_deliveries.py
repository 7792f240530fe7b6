"""The dedupe table's batched claims and marks (decision 0907), on SQLite and PostgreSQL:
concurrent claims share transactions, and each still gets the verdict one delivery at a
time would have got."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from services.ingress.core import Claim
from services.ingress.deliveries import Deliveries
from shared.db import create_engine

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
LEASE = timedelta(seconds=60)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return POSTGRES_URL
    return f"sqlite+aiosqlite:///{tmp_path / 'callpipe.db'}"


async def open_deliveries(database_url: str, lease: timedelta = LEASE) -> Deliveries:
    deliveries = Deliveries(create_engine(database_url), lease)
    await deliveries.create_table()
    return deliveries


async def test_concurrent_claims_of_many_events_each_publish_once(database_url: str) -> None:
    deliveries = await open_deliveries(database_url)
    events = [uuid.uuid4() for _ in range(40)]
    # Every event claimed three times at once, as three deliveries of one webhook would.
    verdicts = await asyncio.gather(
        *(deliveries.claim(event, f"token-{n}") for n in range(3) for event in events)
    )
    by_event: dict[uuid.UUID, list[Claim]] = {}
    for event, verdict in zip(events * 3, verdicts, strict=True):
        by_event.setdefault(event, []).append(verdict)
    for event in events:
        assert sorted(v.value for v in by_event[event]) == ["publish", "wait", "wait"], event


async def test_once_marked_every_later_claim_is_a_duplicate(database_url: str) -> None:
    deliveries = await open_deliveries(database_url)
    published, in_flight = uuid.uuid4(), uuid.uuid4()
    assert await deliveries.claim(published, None) is Claim.PUBLISH
    assert await deliveries.claim(in_flight, None) is Claim.PUBLISH
    # The mark and the claims of other deliveries arrive together (one batch).
    mark = asyncio.create_task(deliveries.mark_published(published))
    again = await asyncio.gather(
        deliveries.claim(published, "retry"), deliveries.claim(in_flight, "retry")
    )
    await mark
    assert list(again) == [Claim.DUPLICATE, Claim.WAIT]


async def test_a_claim_whose_lease_ran_out_is_taken_over_by_one_delivery(
    database_url: str,
) -> None:
    expired = await open_deliveries(database_url, lease=timedelta(seconds=-1))
    event = uuid.uuid4()
    assert await expired.claim(event, "crashed") is Claim.PUBLISH
    deliveries = await open_deliveries(database_url)
    takeovers = await asyncio.gather(*(deliveries.claim(event, "retry") for _ in range(3)))
    assert sorted(v.value for v in takeovers) == ["publish", "wait", "wait"]


async def test_a_released_claim_can_be_claimed_again(database_url: str) -> None:
    deliveries = await open_deliveries(database_url)
    event = uuid.uuid4()
    assert await deliveries.claim(event, None) is Claim.PUBLISH
    await deliveries.release(event)
    assert await deliveries.claim(event, None) is Claim.PUBLISH
