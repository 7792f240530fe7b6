"""Per-business download slots shared by every downloader instance, as leases in SQL.

A slot is a row (business, slot number) with a holder and an expiry. Taking one is an INSERT
or an UPDATE of an expired row, both atomic in SQLite and PostgreSQL, so two instances never
hold the same slot; the process renews the leases it holds, and a crashed holder's slot frees
itself when the lease expires. A process keeps a slot a short idle time after a download and
hands it to its next download of that business without SQL: a burst of one business's calls
takes a slot once, not once a call. See docs/decisions/0401-downloader-slots-and-archive.md
and 0913-downloader-keeps-its-slots.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
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


@dataclass
class _Lease:
    business_id: str
    slot: int
    holder: str  # one per lease: a late release of an old lease cannot delete a new one
    taken_at: float  # monotonic, as is valid_until
    valid_until: float
    idle_timer: asyncio.TimerHandle | None = None


@dataclass
class _Business:
    """This process's share of one business: `places` lets at most `per_business` of its
    downloads of the business run (only those touch the shared leases), `idle` the slots it
    holds with no download in them."""

    places: asyncio.Semaphore
    idle: list[_Lease] = field(default_factory=list)


class DownloadSlots:
    def __init__(
        self,
        engine: AsyncEngine,
        per_business: int,
        lease_seconds: float,
        idle_seconds: float = 0.0,
    ) -> None:
        """`idle_seconds`: how long a slot stays held, renewed, after its download ended,
        for this process's next download of the business; 0 releases it at once."""
        self._engine = engine
        self._per_business = per_business
        self._lease_seconds = lease_seconds
        self._idle_seconds = idle_seconds
        self._businesses: dict[str, _Business] = {}
        self._held: dict[str, _Lease] = {}  # holder → lease, busy or idle: renewed together
        self._renewer: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._closed = False

    async def create_table(self) -> None:
        async with self._engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

    async def close(self) -> None:
        """Gives back the slots held idle at once, rather than when their leases expire;
        a download still running gives its slot back when it ends."""
        self._closed = True
        for business in self._businesses.values():
            while business.idle:
                self._release_idle(business.idle[0], business)
        await asyncio.gather(*self._releases)
        if self._renewer is not None and not self._held:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

    @contextlib.asynccontextmanager
    async def hold(self, business_id: str) -> AsyncIterator[None]:
        """Waits (asynchronously, polling) for one of the business's slots, holds it until
        the block ends, renewing the lease meanwhile."""
        business = self._businesses.get(business_id)
        if business is None:
            business = self._businesses[business_id] = _Business(
                asyncio.Semaphore(self._per_business)
            )
        async with business.places:
            lease = self._take_idle(business)
            if lease is None:
                lease = await self._acquire(business_id)
                self._held[lease.holder] = lease
            if self._renewer is None or self._renewer.done():
                self._renewer = asyncio.create_task(self._renew_while_held())
            try:
                yield
            finally:
                await self._keep_or_release(lease, business)

    def _take_idle(self, business: _Business) -> _Lease | None:
        """An idle slot whose lease is still good for a third of its length (its renewal
        keeps it at two thirds or more); one past that is given back, not trusted."""
        while business.idle:
            lease = business.idle[-1]
            if lease.valid_until - time.monotonic() > self._lease_seconds / 3:
                self._unidle(lease, business)
                return lease
            self._release_idle(lease, business)
        return None

    async def _keep_or_release(self, lease: _Lease, business: _Business) -> None:
        """Kept for the next download, unless it was lost, or it has been held a whole lease
        period: then it goes back to the table, where the other instances compete for it."""
        if lease.holder not in self._held:
            return  # lost: its renewal found another holder or none
        held_for = time.monotonic() - lease.taken_at
        if self._idle_seconds > 0 and held_for < self._lease_seconds and not self._closed:
            lease.idle_timer = asyncio.get_running_loop().call_later(
                self._idle_seconds, self._release_idle, lease, business
            )
            business.idle.append(lease)
            return
        await self._release(lease)

    def _unidle(self, lease: _Lease, business: _Business) -> None:
        business.idle.remove(lease)
        if lease.idle_timer is not None:
            lease.idle_timer.cancel()
            lease.idle_timer = None

    def _release_idle(self, lease: _Lease, business: _Business) -> None:
        """Out of the idle list now, so no download takes it; deleted in the background."""
        self._unidle(lease, business)
        release = asyncio.create_task(self._release_in_background(lease))
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)

    async def _release_in_background(self, lease: _Lease) -> None:
        try:
            await self._release(lease)
        except (SQLAlchemyError, OSError):
            log.exception(
                "could not give back download slot %d of business %s: it frees itself when "
                "its lease expires",
                lease.slot,
                lease.business_id,
            )

    async def _release(self, lease: _Lease) -> None:
        self._held.pop(lease.holder, None)
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(download_slots).where(
                    download_slots.c.business_id == lease.business_id,
                    download_slots.c.slot == lease.slot,
                    download_slots.c.holder == lease.holder,
                )
            )

    async def _acquire(self, business_id: str) -> _Lease:
        holder = uuid.uuid4().hex
        waited = False
        while True:
            for slot in random.sample(range(self._per_business), self._per_business):
                if await self._try_take(business_id, slot, holder):
                    if waited:
                        log.info("got download slot %d of business %s", slot, business_id)
                    now = time.monotonic()
                    return _Lease(business_id, slot, holder, now, now + self._lease_seconds)
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

    async def _renew_while_held(self) -> None:
        """Every third of the lease, one statement renews every lease this process holds."""
        while self._held:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                await self._renew()
            except (SQLAlchemyError, OSError):
                log.exception("could not renew the download slots: trying again")

    async def _renew(self) -> None:
        holders = list(self._held)
        if not holders:
            return
        renewed_at = time.monotonic()
        async with self._engine.begin() as connection:
            renewed = await connection.execute(
                update(download_slots)
                .where(download_slots.c.holder.in_(holders))
                .values(expires_at=time.time() + self._lease_seconds)
            )
            kept = set(holders)
            if renewed.rowcount != len(holders):
                found = await connection.execute(
                    select(download_slots.c.holder).where(download_slots.c.holder.in_(holders))
                )
                kept = set(found.scalars())
        for holder in holders:
            lease = self._held.get(holder)
            if lease is None:
                continue  # released meanwhile
            if holder in kept:
                lease.valid_until = renewed_at + self._lease_seconds
                continue
            log.warning("lost download slot %d of business %s", lease.slot, lease.business_id)
            del self._held[holder]
            business = self._businesses[lease.business_id]
            if lease in business.idle:
                self._unidle(lease, business)
