"""The outbox of the ingress (decisions 0907 and 0912), on SQLite and PostgreSQL: concurrent
deliveries store each event once in shared transactions, the relay's sweep leases stored
events to one instance at a time in stored order, and a published event keeps no payload.

Each test runs on a database of its own, of each kind."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingress.deliveries import Deliveries, deliveries, metadata, outbox
from shared import twilio_callbacks
from shared.db import create_engine
from shared.events import Event

LEASE = timedelta(seconds=60)
SWEEP_ALL = 100_000


@pytest.fixture
async def new_engine(database_url: str) -> AsyncIterator[Callable[[], AsyncEngine]]:
    """Engines on the test's database, disposed when it ends: an aiosqlite connection left
    open answers from its thread after the test's event loop closed."""
    made: list[AsyncEngine] = []

    def engine() -> AsyncEngine:
        made.append(create_engine(database_url))
        return made[-1]

    yield engine
    for engine_made in made:
        await engine_made.dispose()


async def open_deliveries(engine: AsyncEngine, lease: timedelta = LEASE) -> Deliveries:
    opened = Deliveries(engine, lease)
    await opened.create_table()
    return opened


def new_events(count: int) -> list[Event]:
    return [
        twilio_callbacks.call_started(
            {"AccountSid": "AC" + "1" * 32, "CallSid": "CA" + secrets.token_hex(16)}, "demo"
        )
        for _ in range(count)
    ]


def ids(events: list[Event]) -> list[str]:
    return [str(e.event_id) for e in events]


async def swept(store: Deliveries, mine: list[Event]) -> list[str]:
    """The ids of `mine` that a sweep leases now, in the order it returns them."""
    wanted = set(ids(mine))
    return [
        str(e.event_id)
        for e in await store.claim_unpublished(SWEEP_ALL)
        if str(e.event_id) in wanted
    ]


async def test_concurrent_deliveries_of_many_events_store_each_once(
    new_engine: Callable[[], AsyncEngine],
) -> None:
    store = await open_deliveries(new_engine())
    events = new_events(40)
    # Every event delivered three times at once, as three deliveries of one webhook would be.
    stored = await asyncio.gather(
        *(store.store(event, f"token-{n}", claimed=False) for n in range(3) for event in events)
    )
    by_event: dict[str, list[bool]] = {}
    for event, verdict in zip(events * 3, stored, strict=True):
        by_event.setdefault(str(event.event_id), []).append(verdict)
    assert all(sorted(v) == [False, False, True] for v in by_event.values()), by_event
    async with new_engine().connect() as connection:
        rows = await connection.execute(
            select(outbox.c.event_id).where(outbox.c.event_id.in_(ids(events)))
        )
        assert sorted(rows.scalars()) == sorted(ids(events))


async def test_a_sweep_returns_the_stored_events_whole_and_in_stored_order(
    new_engine: Callable[[], AsyncEngine],
) -> None:
    store = await open_deliveries(new_engine())
    events = new_events(5)
    for event in events:
        assert await store.store(event, None, claimed=False)
    returned = {str(e.event_id): e for e in await store.claim_unpublished(SWEEP_ALL)}
    assert [returned[i] for i in ids(events) if i in returned] == events


async def test_a_published_event_is_a_duplicate_keeps_no_payload_and_is_not_swept(
    new_engine: Callable[[], AsyncEngine],
) -> None:
    store = await open_deliveries(new_engine())
    published, waiting = new_events(2)
    assert await store.store(published, None, claimed=False)
    assert await store.store(waiting, None, claimed=False)
    backlog = await store.unpublished()
    # The mark and later deliveries arrive together (one batch).
    mark = asyncio.create_task(store.mark_published(str(published.event_id)))
    again = await asyncio.gather(
        store.store(published, "retry", claimed=False), store.store(waiting, "retry", claimed=False)
    )
    await mark
    assert list(again) == [False, False]
    assert await store.unpublished() == backlog - 1
    assert await swept(store, [published, waiting]) == [str(waiting.event_id)]
    async with new_engine().connect() as connection:
        payloads = await connection.execute(
            select(outbox.c.event_id).where(outbox.c.event_id == str(published.event_id))
        )
        marked = await connection.execute(
            select(deliveries.c.published_at).where(
                deliveries.c.event_id == str(published.event_id)
            )
        )
        assert payloads.first() is None
        assert marked.scalar_one() is not None


async def test_two_instances_sweeping_at_once_lease_each_event_to_one(
    new_engine: Callable[[], AsyncEngine],
) -> None:
    first, second = await open_deliveries(new_engine()), await open_deliveries(new_engine())
    events = new_events(30)
    await asyncio.gather(*(first.store(e, None, claimed=False) for e in events))
    by_first, by_second = await asyncio.gather(swept(first, events), swept(second, events))
    assert not set(by_first) & set(by_second)
    assert sorted(by_first + by_second) == sorted(ids(events))
    # Leased: nobody sweeps them again while the lease runs.
    assert await swept(first, events) == []


async def test_an_event_held_by_a_live_instance_is_swept_once_its_lease_ran_out_or_released(
    new_engine: Callable[[], AsyncEngine],
) -> None:
    crashed = await open_deliveries(new_engine(), lease=timedelta(seconds=-1))
    live = await open_deliveries(new_engine())
    expired, held = new_events(2)
    assert await crashed.store(expired, None, claimed=True)
    assert await live.store(held, None, claimed=True)
    sweeper = await open_deliveries(new_engine())
    assert await swept(sweeper, [expired, held]) == [str(expired.event_id)]
    await live.release([str(held.event_id)])
    assert await swept(sweeper, [expired, held]) == [str(held.event_id)]


async def test_a_claim_of_the_ingress_before_the_outbox_gets_its_event_from_a_retry(
    new_engine: Callable[[], AsyncEngine],
) -> None:
    """A row without a stored event: an older ingress claimed it and crashed before
    publishing. The next delivery supplies the event; a sweep publishes it."""
    store = await open_deliveries(new_engine())
    [event] = new_events(1)
    async with new_engine().begin() as connection:
        await connection.execute(
            deliveries.insert().values(
                event_id=str(event.event_id),
                idempotency_token="old",
                claimed_until=datetime.now(UTC) - timedelta(seconds=1),
                published_at=None,
            )
        )
    assert not await store.store(event, "retry", claimed=False)
    assert await swept(store, [event]) == [str(event.event_id)]


async def test_an_ingress_database_from_before_recording_starts_gets_their_table(
    tmp_path: Path,
) -> None:
    """An ingress.db made before REST mode's recording starts were kept: starting the ingress
    adds their table, the tables already there untouched."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ingress.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all, tables=[deliveries, outbox])
        store = await open_deliveries(engine)
        try:
            call_sid = "CA" + secrets.token_hex(16)
            assert not await store.recording_started(call_sid)
            await store.mark_recording_started(call_sid)
            await store.mark_recording_started(call_sid)
            assert await store.recording_started(call_sid)
        finally:
            store.close()
    finally:
        await engine.dispose()
