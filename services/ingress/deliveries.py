"""SQL adapter of the ingress: which events a webhook delivery already put on Kafka.

One row per event id, claimed by the delivery that publishes it and marked once Kafka has
acknowledged it. A primary key makes the claim atomic across ingress instances; the table
lives in the same database as the player's (SQLite or PostgreSQL), so it survives restarts.
The claims and marks of concurrent webhooks share one transaction (a micro-batch).
See docs/decisions/0301-webhook-dedupe.md and 0907-batched-webhook-dedupe.md.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    Row,
    String,
    Table,
    and_,
    delete,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ingress.core import Claim, claim_verdict
from shared.batching import MicroBatcher
from shared.db import write_lock

log = logging.getLogger(__name__)
# Rows per transaction: 4 bound parameters each, far below SQLite's 32,766.
MAX_BATCH = 256

metadata = MetaData()
deliveries = Table(
    "ingress_deliveries",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("idempotency_token", String(200)),
    Column("claimed_until", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True)),
)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Write(Enum):
    CLAIM = "claim"
    MARK_PUBLISHED = "mark published"


@dataclass(frozen=True)
class _Request:
    write: Write
    event_id: str
    token: str | None = None


class Deliveries:
    def __init__(self, engine: AsyncEngine, lease: timedelta) -> None:
        self._engine = engine
        self._lease = lease
        self._write_lock = write_lock(engine)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._batcher: MicroBatcher[_Request, Claim | None] = MicroBatcher(
            self._write_batch, MAX_BATCH, self._abandoned
        )
        self._releasing: set[asyncio.Task[None]] = set()

    async def create_table(self) -> None:
        async with self._write_lock, self._engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

    async def claim(self, event_id: uuid.UUID, token: str | None) -> Claim:
        verdict = await self._batcher.submit(_Request(Write.CLAIM, str(event_id), token))
        assert verdict is not None
        return verdict

    async def mark_published(self, event_id: uuid.UUID) -> None:
        await self._batcher.submit(_Request(Write.MARK_PUBLISHED, str(event_id)))

    async def release(self, event_id: uuid.UUID) -> None:
        """Gives up a claim whose event did not reach Kafka, so Twilio's retry can publish."""
        async with self._write_lock, self._engine.begin() as connection:
            await connection.execute(
                delete(deliveries).where(
                    and_(
                        deliveries.c.event_id == str(event_id), deliveries.c.published_at.is_(None)
                    )
                )
            )

    async def finish(self) -> None:
        """Waits for the releases of abandoned claims still under way (at shutdown)."""
        await asyncio.gather(*self._releasing, return_exceptions=True)

    async def _write_batch(self, requests: Sequence[_Request]) -> list[Claim | None]:
        """One transaction: the marks first (a claim of the same event then sees it
        published), then the claims. Each request gets its own answer."""
        now = datetime.now(UTC)
        marks = [r.event_id for r in requests if r.write is Write.MARK_PUBLISHED]
        claims = [r for r in requests if r.write is Write.CLAIM]
        async with self._write_lock, self._engine.begin() as connection:
            if marks:
                await connection.execute(
                    update(deliveries)
                    .where(deliveries.c.event_id.in_(marks))
                    .values(published_at=now)
                )
            verdicts = await self._claim_all(connection, claims, now) if claims else {}
        return [verdicts.get(id(r)) for r in requests]

    async def _claim_all(
        self, connection: AsyncConnection, claims: list[_Request], now: datetime
    ) -> dict[int, Claim]:
        """INSERT … ON CONFLICT DO NOTHING for every event of the batch; the events already
        there get the verdict of their row, as one delivery at a time would have."""
        first: dict[str, _Request] = {}
        for request in claims:
            first.setdefault(request.event_id, request)
        # Sorted: two instances' batches then lock shared keys in the same order (PostgreSQL).
        keys = sorted(first)
        inserted = await connection.execute(
            self._insert(deliveries)
            .values(
                [
                    {
                        "event_id": key,
                        "idempotency_token": first[key].token,
                        "claimed_until": now + self._lease,
                        "published_at": None,
                    }
                    for key in keys
                ]
            )
            .on_conflict_do_nothing(index_elements=[deliveries.c.event_id])
            .returning(deliveries.c.event_id)
        )
        verdict_of = dict.fromkeys(inserted.scalars(), Claim.PUBLISH)
        if already_there := [key for key in keys if key not in verdict_of]:
            rows = await connection.execute(
                select(
                    deliveries.c.event_id, deliveries.c.claimed_until, deliveries.c.published_at
                ).where(deliveries.c.event_id.in_(already_there))
            )
            for row in rows.all():
                verdict_of[row.event_id] = await self._verdict(
                    connection, row, first[row.event_id].token, now
                )
        # Another delivery of the same event in this batch waits for the first one's outcome;
        # an event whose row was released in between is tried again (WAIT) too.
        return {
            id(request): verdict_of.get(request.event_id, Claim.WAIT)
            if first[request.event_id] is request
            else Claim.WAIT
            for request in claims
        }

    async def _verdict(
        self,
        connection: AsyncConnection,
        row: Row[Any, Any, Any],
        token: str | None,
        now: datetime,
    ) -> Claim:
        verdict = claim_verdict(row.published_at is not None, _aware(row.claimed_until), now)
        if verdict is not Claim.PUBLISH:
            return verdict
        # Take over the expired claim, unless another delivery just did.
        taken = await connection.execute(
            update(deliveries)
            .where(
                and_(
                    deliveries.c.event_id == row.event_id,
                    deliveries.c.published_at.is_(None),
                    deliveries.c.claimed_until == row.claimed_until,
                )
            )
            .values(claimed_until=now + self._lease, idempotency_token=token)
        )
        return Claim.PUBLISH if taken.rowcount == 1 else Claim.WAIT

    def _abandoned(self, request: _Request, verdict: Claim | None) -> None:
        """A claim won for a webhook that stopped waiting: give it up at once rather than
        make Twilio's retries wait for its lease."""
        if verdict is Claim.PUBLISH:
            releasing = asyncio.create_task(self._release_abandoned(request.event_id))
            self._releasing.add(releasing)
            releasing.add_done_callback(self._releasing.discard)

    async def _release_abandoned(self, event_id: str) -> None:
        try:
            await self.release(uuid.UUID(event_id))
        except SQLAlchemyError as error:
            log.warning("could not release an abandoned claim (its lease runs out): %r", error)
