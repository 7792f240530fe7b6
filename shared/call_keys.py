"""Each call's data key in SQL, and the envelopes every event travels in (decision 1204).

`CallKeys` keeps one random AES-256 key per call in the table `call_keys` of the status
database, wrapped by the key-encryption key derived from `CALLPIPE_KEY_WRAPPING_KEY`. A
deleted call's key is destroyed: its row stays, with no key, so that the call never gets a
new one and every copy of its events, on every topic and dead-letter topic, stays unreadable.
Keys are cached in the process for a short while; the cache forgets a call on `call.deleted`.

`Envelopes` is what the Kafka runtime (shared/kafka/) seals with on the way out and opens
with on the way in, and the reader a downstream consumer holding the wrapping key uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from cachetools import TTLCache
from pydantic import SecretStr
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine
from shared.events import AnyEvent, CallDeleted, EventT, decode, utc_now
from shared.sealing import (
    has_personal_fields,
    key_encryption_key,
    new_data_key,
    open_sealed,
    seal,
    strip,
    unwrap_key,
    wrap_key,
)
from shared.settings import Settings

CACHE_SECONDS = 60.0
CACHE_SIZE = 20_000

metadata = MetaData()
call_keys = Table(
    "call_keys",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("business_id", String(64), nullable=False),
    # Null once destroyed: the call was deleted.
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("destroyed_at", DateTime(timezone=True), nullable=True),
    Index("call_keys_business", "business_id"),
)


class KeyMissing(Exception):
    """No key was ever made for the call: the event was sealed against another database."""


class Destroyed:
    """The call's key was destroyed (the call was deleted)."""


DESTROYED = Destroyed()


def _insert(dialect: Dialect) -> Any:
    return (postgresql if dialect.name == "postgresql" else sqlite).insert


def destroy_call_key(connection: Connection, business_id: str, call_sid: str) -> None:
    """Destroys the call's key in the caller's transaction (with the call's rows): every
    sealed copy of its events becomes unreadable. A call that has no key yet gets a destroyed
    one, so it never gets another. For any deletion of calls, one call or a whole business's."""
    now = utc_now()
    connection.execute(
        _insert(connection.dialect)(call_keys)
        .values(call_sid=call_sid, business_id=business_id, created_at=now)
        .on_conflict_do_nothing(index_elements=[call_keys.c.call_sid])
    )
    connection.execute(
        update(call_keys)
        .where(call_keys.c.call_sid == call_sid, call_keys.c.destroyed_at.is_(None))
        .values(wrapped_key=None, destroyed_at=now)
    )


async def copy_call_keys(source: AsyncEngine, target: AsyncEngine) -> int:
    """Copies every call's key row (destroyed ones too) from `source` to `target`, which has
    the table and none of them: a status table rebuilt elsewhere must open the same events
    and leave the deleted calls' shut. Returns how many rows it copied."""
    async with source.connect() as connection:
        rows = [dict(row._mapping) for row in await connection.execute(select(call_keys))]
    if rows:
        async with target.begin() as connection:
            await connection.execute(call_keys.insert(), rows)
    return len(rows)


def _has_table(connection: Connection) -> bool:
    return inspect(connection).has_table(call_keys.name)


class CallKeys:
    """Get-or-create, get and destroy of each call's data key, cached `cache_seconds`."""

    def __init__(
        self,
        engine: AsyncEngine,
        wrapping_key: SecretStr,
        cache_seconds: float = CACHE_SECONDS,
        *,
        owns_engine: bool = False,
    ) -> None:
        self.engine = engine
        self._kek = key_encryption_key(wrapping_key.get_secret_value())
        # call SID → (its business, its key)
        self._cache: TTLCache[str, tuple[str, bytes | Destroyed]] = TTLCache(
            CACHE_SIZE, cache_seconds
        )
        self._owns_engine = owns_engine
        self._table_ready = False
        self._pending: dict[str, asyncio.Future[bytes | Destroyed]] = {}

    @classmethod
    def of(cls, settings: Settings) -> CallKeys:
        """On the status database, with an engine of its own (closed by `close`)."""
        return cls(
            create_engine(settings.database_url), settings.keys.wrapping_key, owns_engine=True
        )

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()

    async def create_table(self) -> None:
        """Creates `call_keys` if it is missing: whichever service meets a call first makes
        it (the player's migration 0009 makes the same table). Two services creating it at
        once on PostgreSQL: the second one's error only says that it exists now."""
        try:
            async with self.engine.begin() as connection:
                await connection.run_sync(metadata.create_all)
        except DBAPIError:
            async with self.engine.connect() as connection:
                if not await connection.run_sync(_has_table):
                    raise
        self._table_ready = True

    def forget(self, call_sid: str) -> None:
        self._cache.pop(call_sid, None)

    async def get_or_create(self, business_id: str, call_sid: str) -> bytes | Destroyed:
        """The call's key, made if it has none: by one service only, however many ask at once
        (the insert does nothing when a row is there, then everyone reads the same row). The
        events of one call published together in this process wait for one lookup."""
        cached = self._cached(business_id, call_sid)
        if cached is not None:
            return cached
        pending = self._pending.get(call_sid)
        if pending is None:
            pending = asyncio.ensure_future(self._get_or_create(business_id, call_sid))
            self._pending[call_sid] = pending
            pending.add_done_callback(lambda _: self._pending.pop(call_sid, None))
        await asyncio.shield(pending)
        key = self._cached(business_id, call_sid)
        return await pending if key is None else key

    async def _get_or_create(self, business_id: str, call_sid: str) -> bytes | Destroyed:
        found = await self._read([call_sid])
        if call_sid not in found:
            if not self._table_ready:
                await self.create_table()
            wrapped = wrap_key(self._kek, new_data_key(), business_id, call_sid)
            async with self.engine.begin() as connection:
                await connection.execute(
                    _insert(connection.dialect)(call_keys)
                    .values(
                        call_sid=call_sid,
                        business_id=business_id,
                        wrapped_key=wrapped,
                        created_at=utc_now(),
                    )
                    .on_conflict_do_nothing(index_elements=[call_keys.c.call_sid])
                )
            found = await self._read([call_sid])
        return self._remember(call_sid, business_id, found[call_sid])

    async def get(self, business_id: str, call_sid: str) -> bytes | Destroyed:
        """The call's key, or DESTROYED; raises KeyMissing when it never had one."""
        return (await self.get_many([(business_id, call_sid)]))[call_sid]

    async def get_many(self, calls: Iterable[tuple[str, str]]) -> dict[str, bytes | Destroyed]:
        """The keys of (business, call) pairs, those not cached in one query."""
        keys: dict[str, bytes | Destroyed] = {}
        wanted: dict[str, str] = {}
        for business_id, call_sid in calls:
            cached = self._cached(business_id, call_sid)
            if cached is None:
                wanted[call_sid] = business_id
            else:
                keys[call_sid] = cached
        if wanted:
            found = await self._read(sorted(wanted))
            for call_sid, business_id in wanted.items():
                if call_sid not in found:
                    raise KeyMissing(f"no key was ever made for call {call_sid}")
                keys[call_sid] = self._remember(call_sid, business_id, found[call_sid])
        return keys

    async def destroy(self, business_id: str, call_sid: str) -> None:
        """Destroys the call's key in a transaction of its own."""
        if not self._table_ready:
            await self.create_table()
        async with self.engine.begin() as connection:
            await connection.run_sync(destroy_call_key, business_id, call_sid)
        self.forget(call_sid)

    async def _read(self, call_sids: Sequence[str]) -> dict[str, tuple[str, bytes | None]]:
        query = select(call_keys.c.call_sid, call_keys.c.business_id, call_keys.c.wrapped_key)
        query = query.where(call_keys.c.call_sid.in_(call_sids))
        try:
            async with self.engine.connect() as connection:
                rows = (await connection.execute(query)).all()
        except DBAPIError:
            if self._table_ready:
                raise
            await self.create_table()  # a new database: no call has a key yet
            return {}
        self._table_ready = True
        return {row.call_sid: (row.business_id, row.wrapped_key) for row in rows}

    def _cached(self, business_id: str, call_sid: str) -> bytes | Destroyed | None:
        cached = self._cache.get(call_sid)
        if cached is None:
            return None
        owner, key = cached
        if owner != business_id:
            raise KeyMissing(f"call {call_sid} is not of business {business_id}")
        return key

    def _remember(
        self, call_sid: str, business_id: str, row: tuple[str, bytes | None]
    ) -> bytes | Destroyed:
        owner, wrapped = row
        if owner != business_id:
            raise KeyMissing(f"call {call_sid} is not of business {business_id}")
        key = DESTROYED if wrapped is None else unwrap_key(self._kek, wrapped, owner, call_sid)
        self._cache[call_sid] = (owner, key)
        return key


class Envelopes:
    """Events sealed on the way out and opened on the way in, with the calls' keys.

    A downstream consumer with the wrapping key and the status database reads events so:

        envelopes = Envelopes.of(settings)  # CALLPIPE_DATABASE_URL, CALLPIPE_KEY_WRAPPING_KEY
        event = await envelopes.read(record.value)  # None: the call was deleted
        ...
        await envelopes.close()
    """

    def __init__(self, keys: CallKeys) -> None:
        self.keys = keys

    @classmethod
    def of(cls, settings: Settings) -> Envelopes:
        """With the calls' keys in the status database, on an engine of their own."""
        return cls(CallKeys.of(settings))

    async def close(self) -> None:
        await self.keys.close()

    async def seal(self, event: EventT) -> EventT:
        """The event as it is published: its personal fields sealed with its call's key (made
        now if the call has none); blank, and nothing sealed, for a deleted call."""
        if isinstance(event, CallDeleted):
            self.keys.forget(event.call_sid)
        if not has_personal_fields(event) or event.sealed is not None:
            return event
        key = await self.keys.get_or_create(event.business_id, event.call_sid)
        return strip(event) if isinstance(key, Destroyed) else seal(event, key)

    async def open(self, event: AnyEvent) -> AnyEvent | None:
        """The event with its personal fields back; None when its call was deleted (its key
        destroyed). Raises KeyMissing, or shared.sealing.Unopenable for a payload that does
        not open."""
        return (await self.open_all([event]))[0]

    async def open_all(self, events: Sequence[AnyEvent]) -> list[AnyEvent | None]:
        """`open` of each event, the keys not cached read in one query."""
        for event in events:
            if isinstance(event, CallDeleted):
                self.keys.forget(event.call_sid)
        sealed = {(e.business_id, e.call_sid) for e in events if e.sealed is not None}
        keys = await self.keys.get_many(sealed) if sealed else {}
        opened: list[AnyEvent | None] = []
        for event in events:
            if event.sealed is None:
                opened.append(event)
                continue
            key = keys[event.call_sid]
            opened.append(None if isinstance(key, Destroyed) else open_sealed(event, key))
        return opened

    async def read(self, raw: bytes) -> AnyEvent | None:
        """An event as it travels (JSON bytes), opened; None when its call was deleted.
        Raises pydantic.ValidationError on bytes that are not an event."""
        return await self.open(decode(raw))
