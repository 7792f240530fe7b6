"""Each call's data key in SQL (shared/call_keys.py), on SQLite and PostgreSQL: made once
however many services ask at once, destroyed with the call, and what that does to its
events (decision 1204)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from services.player.repository import CallRepository, migrate
from shared.call_keys import DESTROYED, CallKeys, Envelopes, KeyMissing, call_keys
from shared.db import create_engine
from shared.events import CallDeleted, encode
from shared.sealing import Unopenable
from tests.support.events import BUSINESS_ID, CALL_SID, call_started, envelope, summary_ready

WRAPPING_KEY = SecretStr("a-wrapping-key-of-the-tests-0123456789")
CALLER = "+15551230000"


@pytest.fixture
async def keys(database_url: str) -> AsyncIterator[CallKeys]:
    """Keys on a new database where nothing made the table yet."""
    made = CallKeys(create_engine(database_url), WRAPPING_KEY, owns_engine=True)
    try:
        yield made
    finally:
        await made.close()


async def _rows(database_url: str) -> list[tuple[str, bytes | None]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            query = select(call_keys.c.call_sid, call_keys.c.wrapped_key)
            return [(row.call_sid, row.wrapped_key) for row in await connection.execute(query)]
    finally:
        await engine.dispose()


async def test_a_call_gets_one_key_which_every_service_reads(
    keys: CallKeys, database_url: str
) -> None:
    made = await keys.get_or_create(BUSINESS_ID, CALL_SID)
    assert isinstance(made, bytes) and len(made) == 32
    other = CallKeys(create_engine(database_url), WRAPPING_KEY, owns_engine=True)
    try:
        assert await other.get(BUSINESS_ID, CALL_SID) == made
        assert await other.get_or_create(BUSINESS_ID, CALL_SID) == made
    finally:
        await other.close()
    [(call_sid, wrapped)] = await _rows(database_url)
    assert call_sid == CALL_SID and wrapped is not None and made not in wrapped


async def test_services_making_a_calls_first_key_at_once_end_with_one_key(
    database_url: str,
) -> None:
    services = [
        CallKeys(create_engine(database_url), WRAPPING_KEY, owns_engine=True) for _ in range(6)
    ]
    try:
        made = await asyncio.gather(
            *(each.get_or_create(BUSINESS_ID, CALL_SID) for each in services)
        )
    finally:
        for each in services:
            await each.close()
    assert len(set(made)) == 1
    assert len(await _rows(database_url)) == 1


async def test_events_of_one_new_call_published_together_share_its_one_key(
    keys: CallKeys, database_url: str
) -> None:
    made = await asyncio.gather(*(keys.get_or_create(BUSINESS_ID, CALL_SID) for _ in range(5)))
    assert len(set(made)) == 1
    assert len(await _rows(database_url)) == 1


async def test_a_call_that_never_had_a_key_is_not_taken_for_a_deleted_one(
    keys: CallKeys,
) -> None:
    with pytest.raises(KeyMissing):
        await keys.get(BUSINESS_ID, CALL_SID)
    await keys.get_or_create(BUSINESS_ID, CALL_SID)
    with pytest.raises(KeyMissing):
        await keys.get("biz-2", CALL_SID)  # another business's event naming the call


async def test_a_destroyed_key_is_gone_for_good(keys: CallKeys, database_url: str) -> None:
    await keys.get_or_create(BUSINESS_ID, CALL_SID)
    await keys.destroy(BUSINESS_ID, CALL_SID)
    assert await keys.get(BUSINESS_ID, CALL_SID) is DESTROYED
    assert await keys.get_or_create(BUSINESS_ID, CALL_SID) is DESTROYED
    assert await _rows(database_url) == [(CALL_SID, None)]
    fresh = CallKeys(create_engine(database_url), WRAPPING_KEY, owns_engine=True)
    try:
        assert await fresh.get_or_create(BUSINESS_ID, CALL_SID) is DESTROYED
    finally:
        await fresh.close()


async def test_a_call_deleted_before_it_had_a_key_never_gets_one(keys: CallKeys) -> None:
    await keys.destroy(BUSINESS_ID, CALL_SID)
    assert await keys.get_or_create(BUSINESS_ID, CALL_SID) is DESTROYED


async def test_keys_do_not_unwrap_under_another_wrapping_key(
    keys: CallKeys, database_url: str
) -> None:
    await keys.get_or_create(BUSINESS_ID, CALL_SID)
    other = CallKeys(
        create_engine(database_url),
        SecretStr("another-wrapping-key-0123456789abc"),
        owns_engine=True,
    )
    try:
        with pytest.raises(Unopenable):
            await other.get(BUSINESS_ID, CALL_SID)
    finally:
        await other.close()


async def test_the_player_migration_and_the_adapter_make_the_same_table_in_either_order(
    keys: CallKeys, database_url: str
) -> None:
    await keys.get_or_create(BUSINESS_ID, CALL_SID)  # the adapter made the table first
    await asyncio.to_thread(migrate, database_url)
    assert len(await _rows(database_url)) == 1


async def test_a_deleted_calls_events_no_longer_open_anywhere(database_url: str) -> None:
    """The player deletes the call: its key goes in the same transaction as its rows, and
    the events sealed before no longer open, in this process or any other."""
    await asyncio.to_thread(migrate, database_url)
    engine = create_engine(database_url)
    repository = CallRepository(engine)
    publisher = Envelopes(CallKeys(engine, WRAPPING_KEY))
    reader = Envelopes(CallKeys(create_engine(database_url), WRAPPING_KEY, owns_engine=True))
    try:
        started = call_started(from_number=CALLER)
        summary = summary_ready(summary="Dana needs a plumber")
        sealed = [await publisher.seal(started), await publisher.seal(summary)]
        assert CALLER.encode() not in encode(sealed[0])
        assert await reader.open_all(sealed) == [started, summary]
        await repository.apply(started)

        await repository.delete_call(BUSINESS_ID, CALL_SID)

        # Each process holds the key in its cache until it hears of the deletion: the player
        # as it publishes `call.deleted`, a consumer as it reads it.
        deleted = CallDeleted(**envelope())
        assert await publisher.seal(deleted) == deleted
        assert await publisher.keys.get(BUSINESS_ID, CALL_SID) is DESTROYED
        assert await reader.open_all([deleted, *sealed]) == [deleted, None, None]
        late = await publisher.seal(call_started(from_number=CALLER))
        assert late.sealed is None and late.from_number == "" and late.twilio_params == {}
    finally:
        repository.close()
        await reader.close()
        await engine.dispose()
