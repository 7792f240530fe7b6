"""Per-business download slots as SQL leases, shared by several downloader instances (each
instance its own engine, as separate processes would have), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.downloader.slots import DownloadSlots
from shared.db import create_engine

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'slots.db'}"
    return POSTGRES_URL


@pytest.fixture
async def instances(database_url: str) -> AsyncIterator[list[DownloadSlots]]:
    engines = [create_engine(database_url) for _ in range(3)]
    slots = [DownloadSlots(engine, per_business=2, lease_seconds=0.6) for engine in engines]
    await slots[0].create_table()
    yield slots
    for engine in engines:
        await engine.dispose()


async def test_at_most_the_cap_downloads_at_once_across_instances(
    instances: list[DownloadSlots],
) -> None:
    business, other = f"busy-{uuid.uuid4().hex}", f"quiet-{uuid.uuid4().hex}"
    holding = {business: 0, other: 0}
    most = {business: 0, other: 0}

    async def download(slots: DownloadSlots, business_id: str) -> None:
        async with slots.hold(business_id):
            holding[business_id] += 1
            most[business_id] = max(most[business_id], holding[business_id])
            # Long enough that a second claim (a SQL write that may wait for another
            # instance's) lands while the first is still held, so the cap is reached.
            await asyncio.sleep(0.5)
            holding[business_id] -= 1

    await asyncio.gather(
        *(download(instances[i % 3], business) for i in range(12)),
        *(download(instances[i % 3], other) for i in range(2)),
    )
    assert most == {business: 2, other: 2}


async def test_a_slot_held_longer_than_its_lease_stays_held_while_renewed(
    instances: list[DownloadSlots],
) -> None:
    business = f"b-{uuid.uuid4().hex}"
    order: list[str] = []
    both_held = asyncio.Barrier(3)

    async def download(slots: DownloadSlots, name: str, seconds: float) -> None:
        async with slots.hold(business):
            order.append(f"{name} got")
            await both_held.wait()
            await asyncio.sleep(seconds)
            order.append(f"{name} done")

    # Both slots held for three lease periods: a third download must wait for one to end.
    first = asyncio.create_task(download(instances[0], "first", 1.8))
    second = asyncio.create_task(download(instances[1], "second", 1.8))
    await both_held.wait()
    async with instances[2].hold(business):
        order.append("third got")
    await asyncio.gather(first, second)
    assert order.index("third got") > min(order.index("first done"), order.index("second done"))


async def test_a_crashed_holders_slot_frees_itself_when_its_lease_expires(
    instances: list[DownloadSlots],
) -> None:
    business = f"b-{uuid.uuid4().hex}"
    crashed = instances[0]
    # Took both slots and died: no release, no renewal.
    for _ in range(2):
        await crashed._acquire(business, holder=f"crashed-{uuid.uuid4().hex}")
    async with instances[1].hold(business):
        pass  # got a slot back once a lease expired
