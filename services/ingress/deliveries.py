"""SQL adapter of the ingress: which events a webhook delivery already put on Kafka.

One row per event id, claimed by the delivery that publishes it and marked once Kafka has
acknowledged it. A primary key makes the claim atomic across ingress instances; the table
lives in the same database as the player's (SQLite or PostgreSQL), so it survives restarts.
See docs/decisions/0301-webhook-dedupe.md.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    and_,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingress.core import Claim, claim_verdict

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


class Deliveries:
    def __init__(self, engine: AsyncEngine, lease: timedelta) -> None:
        self._engine = engine
        self._lease = lease

    async def create_table(self) -> None:
        async with self._engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

    async def claim(self, event_id: uuid.UUID, token: str | None) -> Claim:
        now = datetime.now(UTC)
        key = str(event_id)
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    insert(deliveries).values(
                        event_id=key,
                        idempotency_token=token,
                        claimed_until=now + self._lease,
                        published_at=None,
                    )
                )
            return Claim.PUBLISH
        except IntegrityError:
            pass
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    select(deliveries.c.claimed_until, deliveries.c.published_at).where(
                        deliveries.c.event_id == key
                    )
                )
            ).one_or_none()
            if row is None:  # released in between: the caller tries again
                return Claim.WAIT
            verdict = claim_verdict(row.published_at is not None, _aware(row.claimed_until), now)
            if verdict is not Claim.PUBLISH:
                return verdict
            # Take over the expired claim, unless another delivery just did.
            taken = await connection.execute(
                update(deliveries)
                .where(
                    and_(
                        deliveries.c.event_id == key,
                        deliveries.c.published_at.is_(None),
                        deliveries.c.claimed_until == row.claimed_until,
                    )
                )
                .values(claimed_until=now + self._lease, idempotency_token=token)
            )
            return Claim.PUBLISH if taken.rowcount == 1 else Claim.WAIT

    async def mark_published(self, event_id: uuid.UUID) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(deliveries)
                .where(deliveries.c.event_id == str(event_id))
                .values(published_at=datetime.now(UTC))
            )

    async def release(self, event_id: uuid.UUID) -> None:
        """Gives up a claim whose event did not reach Kafka, so Twilio's retry can publish."""
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(deliveries).where(
                    and_(
                        deliveries.c.event_id == str(event_id), deliveries.c.published_at.is_(None)
                    )
                )
            )
