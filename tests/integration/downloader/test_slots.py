"""Per-business download slots as SQL leases, shared by several downloader instances (each
instance its own engine, as separate processes would have), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.downloader.slots import DownloadSlots, download_slots
from shared.db import create_engine

T = TypeVar("T")


Instances = Callable[[float], Awaitable[list[DownloadSlots]]]
# Far longer than any test here: no lease runs out unless a test means it to.
LONG_LEASE_SECONDS = 60.0
# How long a test waits for what must happen before it fails, on a loaded machine.
PATIENCE_SECONDS = 30.0


@pytest.fixture(params=[0.0, 0.3], ids=["released-at-once", "kept-idle"])
async def instances(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Instances]:
    """Three instances sharing the table, each its own engine, with the lease given."""
    engines: list[AsyncEngine] = []
    made: list[DownloadSlots] = []

    async def make(lease_seconds: float) -> list[DownloadSlots]:
        engines.extend(create_engine(database_url) for _ in range(3))
        made.extend(
            DownloadSlots(engine, 2, lease_seconds=lease_seconds, idle_seconds=request.param)
            for engine in engines[-3:]
        )
        await made[-1].create_table()
        return made[-3:]

    yield make
    for instance in made:
        await instance.close()
    for engine in engines:
        await engine.dispose()


async def _within(seconds: float, what: str, awaitable: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        pytest.fail(f"{what}: not within {seconds} s")


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls `condition` until it holds; fails after PATIENCE_SECONDS."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {PATIENCE_SECONDS} s")
        await asyncio.sleep(0.05)


async def _leases(engine: AsyncEngine, business_id: str) -> dict[str, float]:
    """Holder → the expiry (epoch seconds) of the business's leases in the table."""
    async with engine.connect() as connection:
        found = await connection.execute(
            select(download_slots.c.holder, download_slots.c.expires_at).where(
                download_slots.c.business_id == business_id
            )
        )
        return {row.holder: row.expires_at for row in found}


async def test_at_most_the_cap_downloads_at_once_across_instances(instances: Instances) -> None:
    slots = await instances(LONG_LEASE_SECONDS)
    business, other = f"busy-{uuid.uuid4().hex}", f"quiet-{uuid.uuid4().hex}"
    holding = {business: 0, other: 0}
    most = {business: 0, other: 0}

    async def download(slots: DownloadSlots, business_id: str) -> None:
        async with slots.hold(business_id):
            holding[business_id] += 1
            most[business_id] = max(most[business_id], holding[business_id])
            # The download's own duration: long enough that a second claim (a SQL write
            # that may wait for another instance's) lands while the first is still held.
            await asyncio.sleep(0.5)
            holding[business_id] -= 1

    # Each instance lets two of its own downloads of a business claim a slot at once: six
    # claims compete for the business's two slots.
    await _within(
        PATIENCE_SECONDS,
        "fourteen downloads of half a second",
        asyncio.gather(
            *(download(slots[i % 3], business) for i in range(12)),
            *(download(slots[i % 3], other) for i in range(2)),
        ),
    )
    assert most == {business: 2, other: 2}


async def test_a_slot_held_longer_than_its_lease_stays_held_while_renewed(
    instances: Instances,
) -> None:
    lease_seconds = 2.0  # renewed every third of it: a renewal may be over a second late
    slots = await instances(lease_seconds)
    engine = slots[0]._engine
    business = f"b-{uuid.uuid4().hex}"
    both_held = asyncio.Barrier(3)
    done = asyncio.Event()
    third_got_one = asyncio.Event()

    async def download(slots: DownloadSlots) -> None:
        async with slots.hold(business):
            await both_held.wait()
            await done.wait()

    async def third_download() -> None:
        async with slots[2].hold(business):
            third_got_one.set()

    holders = [asyncio.create_task(download(slots[0])), asyncio.create_task(download(slots[1]))]
    await _within(PATIENCE_SECONDS, "both slots taken", both_held.wait())
    first_expiries = await _leases(engine, business)
    assert len(first_expiries) == 2
    third = asyncio.create_task(third_download())

    async def leases_outlived_and_renewed() -> bool:
        assert not third_got_one.is_set(), "a third download got a slot of a held lease"
        renewed = await _leases(engine, business)
        assert renewed.keys() == first_expiries.keys(), "a held lease changed hands"
        return time.time() > max(first_expiries.values()) + lease_seconds / 2 and all(
            renewed[holder] > first_expiries[holder] for holder in first_expiries
        )

    # Past the leases as first taken: only their renewal keeps the slots held.
    await _until(leases_outlived_and_renewed, "both leases renewed past their first expiry")
    done.set()
    await _within(PATIENCE_SECONDS, "the third download once a slot was given back", third)
    await asyncio.gather(*holders)


async def test_a_crashed_holders_slot_frees_itself_when_its_lease_expires(
    instances: Instances,
) -> None:
    slots = await instances(1.0)
    business = f"b-{uuid.uuid4().hex}"
    crashed = slots[0]
    # Took both slots and died: no release, no renewal.
    for _ in range(2):
        await crashed._acquire(business)
    expiries = await _leases(slots[0]._engine, business)
    assert len(expiries) == 2

    async def take() -> float:
        async with slots[1].hold(business):
            return time.time()

    got_at = await _within(PATIENCE_SECONDS, "a slot of the crashed holder", take())
    assert got_at >= min(expiries.values()), "a slot was taken before its lease expired"


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

        async def holders_once_taken() -> list[str]:
            async with other.hold(business):
                return await _holders(engine, business)

        with caplog.at_level(logging.INFO, logger="services.downloader.slots"):
            holders = await _within(
                PATIENCE_SECONDS, "the idle slot given back", holders_once_taken()
            )
        assert holders not in ([], [idle_holder])
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
    engine = create_engine(sys.argv[1])
    slots = DownloadSlots(engine, 1, lease_seconds=float(sys.argv[3]), idle_seconds=600)
    async with slots.hold(sys.argv[2]):
        pass
    print("holding idle", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_crashed_processs_idle_slot_stays_renewed_until_it_dies_then_expires(
    engine: AsyncEngine, database_url: str
) -> None:
    lease_seconds = 2.0  # renewed every third of it: a renewal may be over a second late
    business = f"b-{uuid.uuid4().hex}"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_HOLDER, database_url, business, str(lease_seconds),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    other = DownloadSlots(engine, per_business=1, lease_seconds=lease_seconds, idle_seconds=0.0)
    got_it = asyncio.Event()

    async def take() -> float:
        async with other.hold(business):
            got_it.set()
            return time.time()

    try:
        assert holder.stdout is not None
        line = await _within(PATIENCE_SECONDS, "the holder's slot", holder.stdout.readline())
        assert line == b"holding idle\n"
        [(holder_id, first_expiry)] = (await _leases(engine, business)).items()
        waiting = asyncio.create_task(take())

        async def lease_outlived_and_renewed() -> bool:
            assert not got_it.is_set(), "the slot was taken while its holder renewed it"
            leases = await _leases(engine, business)
            assert leases.keys() == {holder_id}, "the held lease changed hands"
            return (
                time.time() > first_expiry + lease_seconds / 2 and leases[holder_id] > first_expiry
            )

        # Past the lease as first taken: only renewal keeps the idle slot held.
        await _until(lease_outlived_and_renewed, "the idle slot's lease renewed past its expiry")
        [last_expiry] = (await _leases(engine, business)).values()
        holder.kill()  # no release, no more renewal
        await holder.wait()
        got_at = await _within(PATIENCE_SECONDS, "the dead holder's slot", waiting)
        assert got_at >= last_expiry, "the slot was taken before its last lease expired"
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await other.close()
