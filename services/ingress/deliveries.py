"""SQL adapter of the ingress: the webhooks' events, stored once each, until Kafka has them.

`ingress_deliveries` has one row per event id, ever: a primary key makes storing an event
atomic across ingress instances, so a second delivery of the same webhook adds nothing. The
event itself waits in `ingress_outbox` until the relay has it acknowledged by Kafka; marking
it published deletes that row, so only what dedupe needs is kept. `claimed_until` is the
relay's lease: the instance holding it is the one publishing the event. The stores and marks
of concurrent webhooks share one transaction (a micro-batch). Both tables live in the same
database as the player's (SQLite or PostgreSQL) and are made by `create_all`, as is
`ingress_recording_starts` (REST mode's recording starts, decision 1101).
See docs/decisions/0301-webhook-dedupe.md, 0907-batched-webhook-dedupe.md and
0912-webhook-outbox.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingress import core
from shared.batching import MicroBatcher
from shared.db import WriteTransactions, write_lock
from shared.events import AnyEvent, Event, decode, encode

log = logging.getLogger(__name__)
# Rows per transaction: at most 5 bound parameters each, far below SQLite's 32,766.
MAX_BATCH = 256

metadata = MetaData()
deliveries = Table(
    "ingress_deliveries",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("idempotency_token", String(core.MAX_IDEMPOTENCY_TOKEN)),
    Column("claimed_until", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True)),
)
outbox = Table(
    "ingress_outbox",
    metadata,
    # Stored order, which the relay's sweep keeps.
    Column("position", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("event_json", Text, nullable=False),
)

# REST mode's recording starts (decision 1101): a call listed here had its recording started,
# so a redelivered or replayed `in-progress` callback does not start another. A table of its
# own: `create_all` adds it to an existing database, where it would not add a column.
recording_starts = Table(
    "ingress_recording_starts",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class _Store:
    event: Event
    token: str | None
    claimed: bool


@dataclass(frozen=True)
class _MarkPublished:
    event_id: str


class Deliveries:
    def __init__(self, engine: AsyncEngine, lease: timedelta) -> None:
        self._engine = engine
        self._lease = lease
        self._write_lock = write_lock(engine)
        self._transactions = WriteTransactions(engine, self._write_lock)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._batcher: MicroBatcher[_Store | _MarkPublished, bool] = MicroBatcher(
            self._write_batch, MAX_BATCH
        )

    def close(self) -> None:
        self._transactions.dispose()

    async def create_table(self) -> None:
        async with self._write_lock, self._engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

    async def store(self, event: Event, token: str | None, *, claimed: bool) -> bool:
        """Stores the event for the relay unless a delivery of the same occurrence did; True
        if this one did. `claimed`: this instance's relay takes it at once (under the lease);
        otherwise it waits for a sweep."""
        return await self._batcher.submit(_Store(event, token, claimed))

    async def mark_published(self, event_id: str) -> None:
        """Kafka has the event: it is a duplicate from now on, and its payload goes."""
        await self._batcher.submit(_MarkPublished(event_id))

    async def release(self, event_ids: Sequence[str]) -> None:
        """Gives up the lease of events that did not reach Kafka: the next sweep of any
        instance takes them."""
        now = datetime.now(UTC)
        async with self._write_lock, self._engine.begin() as connection:
            await connection.execute(
                update(deliveries)
                .where(
                    and_(deliveries.c.event_id.in_(event_ids), deliveries.c.published_at.is_(None))
                )
                .values(claimed_until=now)
            )

    async def recording_started(self, call_sid: str) -> bool:
        """Whether this call's recording was started over the REST API before."""
        query = select(recording_starts.c.call_sid).where(recording_starts.c.call_sid == call_sid)
        async with self._engine.connect() as connection:
            return (await connection.execute(query)).first() is not None

    async def mark_recording_started(self, call_sid: str) -> None:
        async with self._write_lock, self._engine.begin() as connection:
            await connection.execute(
                self._insert(recording_starts)
                .values(call_sid=call_sid, started_at=datetime.now(UTC))
                .on_conflict_do_nothing(index_elements=[recording_starts.c.call_sid])
            )

    async def unpublished(self) -> int:
        """Events stored and not yet acknowledged by Kafka (the relay's backlog)."""
        async with self._engine.connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(outbox)) or 0)

    async def claim_unpublished(self, limit: int) -> list[AnyEvent]:
        """Takes the lease of up to `limit` stored, unpublished events nobody holds (left by a
        crashed or stopped instance, released after a failed send, or stored unclaimed), in
        stored order."""
        now = datetime.now(UTC)
        async with self._write_lock, self._engine.begin() as connection:
            candidates = (
                select(outbox.c.event_id)
                .join(deliveries, deliveries.c.event_id == outbox.c.event_id)
                .where(and_(deliveries.c.published_at.is_(None), deliveries.c.claimed_until <= now))
                .order_by(outbox.c.position)
                .limit(limit)
            )
            # The conditions again on the row itself: of two instances sweeping at once, the
            # second finds the lease taken (PostgreSQL re-checks them once the row is free).
            taken = await connection.execute(
                update(deliveries)
                .where(
                    and_(
                        deliveries.c.event_id.in_(candidates.scalar_subquery()),
                        deliveries.c.published_at.is_(None),
                        deliveries.c.claimed_until <= now,
                    )
                )
                .values(claimed_until=now + self._lease)
                .returning(deliveries.c.event_id)
            )
            event_ids = list(taken.scalars())
            if not event_ids:
                return []
            rows = await connection.execute(
                select(outbox.c.event_json)
                .where(outbox.c.event_id.in_(event_ids))
                .order_by(outbox.c.position)
            )
            return [decode(json.encode()) for json in rows.scalars()]

    async def _write_batch(self, requests: Sequence[_Store | _MarkPublished]) -> list[bool]:
        return await self._transactions.run(partial(self._write, requests))

    def _write(
        self, requests: Sequence[_Store | _MarkPublished], connection: Connection
    ) -> list[bool]:
        """One transaction: the marks first (a store of the same event then sees it
        published), then the stores. Each request gets its own answer."""
        now = datetime.now(UTC)
        marks = [r.event_id for r in requests if isinstance(r, _MarkPublished)]
        stores = [r for r in requests if isinstance(r, _Store)]
        if marks:
            connection.execute(
                update(deliveries).where(deliveries.c.event_id.in_(marks)).values(published_at=now)
            )
            connection.execute(delete(outbox).where(outbox.c.event_id.in_(marks)))
        stored = self._store_all(connection, stores, now) if stores else set()
        return [isinstance(r, _MarkPublished) or id(r) in stored for r in requests]

    def _store_all(self, connection: Connection, stores: list[_Store], now: datetime) -> set[int]:
        """INSERT … ON CONFLICT DO NOTHING of every event of the batch, and the payloads of
        those inserted; the ids (of requests) that stored their event."""
        first: dict[str, _Store] = {}
        for request in stores:
            first.setdefault(str(request.event.event_id), request)
        # Sorted: two instances' batches then lock shared keys in the same order (PostgreSQL).
        keys = sorted(first)
        inserted = connection.execute(
            self._insert(deliveries)
            .values(
                [
                    {
                        "event_id": key,
                        "idempotency_token": first[key].token,
                        "claimed_until": now + self._lease if first[key].claimed else now,
                        "published_at": None,
                    }
                    for key in keys
                ]
            )
            .on_conflict_do_nothing(index_elements=[deliveries.c.event_id])
            .returning(deliveries.c.event_id)
        )
        new = set(inserted.scalars())
        payloads = [first[key] for key in first if key in new]  # arrival order
        if already_there := [key for key in keys if key not in new]:
            payloads += self._claims_without_payload(connection, already_there, first)
        if payloads:
            connection.execute(
                self._insert(outbox)
                .values(
                    [
                        {"event_id": str(r.event.event_id), "event_json": encode(r.event).decode()}
                        for r in payloads
                    ]
                )
                .on_conflict_do_nothing(index_elements=[outbox.c.event_id])
            )
        return {id(first[key]) for key in new}

    def _claims_without_payload(
        self, connection: Connection, keys: list[str], first: dict[str, _Store]
    ) -> list[_Store]:
        """Unpublished rows with no stored event: claims of an ingress from before the outbox
        (decision 0912) that crashed before publishing. This delivery supplies the event; a
        sweep publishes it once the old claim's lease ran out."""
        rows = connection.execute(
            select(deliveries.c.event_id).where(
                and_(
                    deliveries.c.event_id.in_(keys),
                    deliveries.c.published_at.is_(None),
                    ~deliveries.c.event_id.in_(select(outbox.c.event_id)),
                )
            )
        )
        return [first[key] for key in rows.scalars()]
