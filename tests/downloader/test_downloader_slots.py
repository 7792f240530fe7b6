"""Per-business download slots as SQL leases, shared by several downloader instances (each
instance its own engine, as separate processes would have), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.downloader.slots import DownloadSlots, download_slots
from shared.db import create_engine

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'slots.db'}"
    return POSTGRES_URL


@pytest.fixture(params=[0.0, 0.3], ids=["released-at-once", "kept-idle"])
async def instances(
    database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[list[DownloadSlots]]:
    engines = [create_engine(database_url) for _ in range(3)]
    slots = [
        DownloadSlots(engine, per_business=2, lease_seconds=0.6, idle_seconds=request.param)
        for engine in engines
    ]
    await slots[0].create_table()
    yield slots
    for instance in slots:
        await instance.close()
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
        await crashed._acquire(business)
    async with instances[1].hold(business):
        pass  # got a slot back once a lease expired


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await DownloadSlots(engine, per_business=1, lease_seconds=1.0).create_table()
    yield engine
    await engine.dispose()


async def _holders(engine: AsyncEngine, business_id: str) -> list[str]:
    async with engine.connect() as connection:
        found = await connection.execute(
            select(download_slots.c.holder).where(download_slots.c.business_id == business_id)
        )
        return list(found.scalars())


async def test_a_burst_of_one_business_takes_its_slot_once(engine: AsyncEngine) -> None:
    business = f"b-{uuid.uuid4().hex}"
    takes: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO download_slots"):
            takes.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    slots = DownloadSlots(engine, per_business=1, lease_seconds=30.0, idle_seconds=30.0)
    try:
        for _ in range(10):
            async with slots.hold(business):
                pass
        assert len(takes) == 1
        assert len(await _holders(engine, business)) == 1  # still held, idle
    finally:
        await slots.close()
    assert await _holders(engine, business) == []  # closing gave it back at once


async def test_an_idle_slot_is_given_back_after_the_idle_time_to_another_instance(
    engine: AsyncEngine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    business = f"b-{uuid.uuid4().hex}"
    other_engine = create_engine(database_url)
    # A lease far longer than the test: the other instance can only get the slot because
    # the first gave it back after its idle time, not because the lease expired.
    first = DownloadSlots(engine, per_business=1, lease_seconds=120.0, idle_seconds=0.3)
    other = DownloadSlots(other_engine, per_business=1, lease_seconds=120.0, idle_seconds=0.3)
    try:
        async with first.hold(business):
            pass
        [idle_holder] = await _holders(engine, business)
        with caplog.at_level(logging.INFO, logger="services.downloader.slots"):
            async with other.hold(business):
                assert await _holders(engine, business) not in ([], [idle_holder])
        assert f"every download slot of business {business} is busy" in caplog.text
    finally:
        await first.close()
        await other.close()
        await other_engine.dispose()


CRASHING_HOLDER = """
import asyncio, sys
from services.downloader.slots import DownloadSlots
from shared.db import create_engine

async def main() -> None:
    slots = DownloadSlots(create_engine(sys.argv[1]), 1, lease_seconds=0.6, idle_seconds=600)
    async with slots.hold(sys.argv[2]):
        pass
    print("holding idle", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_crashed_processs_idle_slot_stays_renewed_until_it_dies_then_expires(
    engine: AsyncEngine, database_url: str
) -> None:
    business = f"b-{uuid.uuid4().hex}"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_HOLDER, database_url, business,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    other = DownloadSlots(engine, per_business=1, lease_seconds=0.6, idle_seconds=0.0)
    got_it = asyncio.Event()

    async def take() -> None:
        async with other.hold(business):
            got_it.set()

    try:
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"holding idle\n"
        waiting = asyncio.create_task(take())
        await asyncio.sleep(2.4)  # four lease periods: only renewal keeps the idle slot held
        assert not got_it.is_set()
        holder.kill()  # no release, no more renewal
        await holder.wait()
        await waiting  # its lease expired, and the other instance took the slot
        assert got_it.is_set()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await other.close()
