"""Per-business download slots shared by every downloader instance, as leases in SQL.

A slot is a row (business, slot number) with a holder and an expiry. Taking one is an INSERT
or an UPDATE of an expired row, both atomic in SQLite and PostgreSQL, so two instances never
hold the same slot; the holder renews its lease while it downloads, and a crashed holder's
slot frees itself when the lease expires. See docs/decisions/0401-download-slots.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, delete, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

metadata = MetaData()
download_slots = Table(
    "download_slots",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("holder", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),  # epoch seconds
)

POLL_SECONDS = 0.25


class DownloadSlots:
    def __init__(self, engine: AsyncEngine, per_business: int, lease_seconds: float) -> None:
        self._engine = engine
        self._per_business = per_business
        self._lease_seconds = lease_seconds
        # This instance's downloads of a business queue here first for its `per_business`
        # places: only those poll the shared leases, so a burst of one business's calls
        # waits in memory instead of becoming a storm of SQL writes that slows every writer.
        self._local: dict[str, asyncio.Semaphore] = {}

    async def create_table(self) -> None:
        async with self._engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

    @contextlib.asynccontextmanager
    async def hold(self, business_id: str) -> AsyncIterator[None]:
        """Waits (asynchronously, polling) for one of the business's slots, holds it until
        the block ends, renewing the lease meanwhile."""
        local = self._local.setdefault(business_id, asyncio.Semaphore(self._per_business))
        async with local:
            holder = uuid.uuid4().hex
            slot = await self._acquire(business_id, holder)
            renewer = asyncio.create_task(self._renew(business_id, slot, holder))
            try:
                yield
            finally:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
                async with self._engine.begin() as connection:
                    await connection.execute(
                        delete(download_slots).where(
                            download_slots.c.business_id == business_id,
                            download_slots.c.slot == slot,
                            download_slots.c.holder == holder,
                        )
                    )

    async def _acquire(self, business_id: str, holder: str) -> int:
        waited = False
        while True:
            for slot in random.sample(range(self._per_business), self._per_business):
                if await self._try_take(business_id, slot, holder):
                    if waited:
                        log.info("got download slot %d of business %s", slot, business_id)
                    return slot
            if not waited:
                log.info("every download slot of business %s is busy: waiting", business_id)
                waited = True
            await asyncio.sleep(POLL_SECONDS * (0.5 + random.random()))

    async def _try_take(self, business_id: str, slot: int, holder: str) -> bool:
        """A free slot has no row, so the INSERT alone takes it (one write transaction, the
        usual case); only a slot whose row exists is tried again as an expired lease."""
        now = time.time()
        expires_at = now + self._lease_seconds
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    insert(download_slots).values(
                        business_id=business_id, slot=slot, holder=holder, expires_at=expires_at
                    )
                )
        except IntegrityError:
            async with self._engine.begin() as connection:
                taken_over = await connection.execute(
                    update(download_slots)
                    .where(
                        download_slots.c.business_id == business_id,
                        download_slots.c.slot == slot,
                        download_slots.c.expires_at < now,
                    )
                    .values(holder=holder, expires_at=expires_at)
                )
            return bool(taken_over.rowcount == 1)
        return True

    async def _renew(self, business_id: str, slot: int, holder: str) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            async with self._engine.begin() as connection:
                renewed = await connection.execute(
                    update(download_slots)
                    .where(
                        download_slots.c.business_id == business_id,
                        download_slots.c.slot == slot,
                        download_slots.c.holder == holder,
                    )
                    .values(expires_at=time.time() + self._lease_seconds)
                )
            if renewed.rowcount != 1:
                log.warning("lost download slot %d of business %s", slot, business_id)
                return
