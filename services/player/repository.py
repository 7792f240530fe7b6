"""SQL adapter of the player: applies events to the status table, idempotently, and reads it.

The same code runs on SQLite (the embedded default) and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event as sa_event
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.player import core
from services.player.core import CallState
from services.player.tables import call_events, calls
from shared.events import AnyEvent

MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(database_url: str) -> None:
    """Brings the schema to the newest revision. Blocking: run it in a thread."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def create_engine(database_url: str) -> AsyncEngine:
    if database_url.startswith("sqlite"):
        Path(database_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(database_url, connect_args={"timeout": 30})

        @sa_event.listens_for(engine.sync_engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_async_engine(database_url, pool_size=10, pool_pre_ping=True)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _state(row: Any) -> CallState:
    values = dict(row._mapping)
    values["created_at"] = _aware(values["created_at"])
    values["updated_at"] = _aware(values["updated_at"])
    return CallState(**values)


class CallRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def apply(self, event: AnyEvent) -> bool:
        """Applies one event; False when it was applied before (a redelivery)."""
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    insert(call_events).values(
                        event_id=str(event.event_id),
                        call_sid=event.call_sid,
                        event_type=event.event_type,
                        stage=core.timeline_stage(event),
                        attempt=event.attempt,
                        occurred_at=event.occurred_at,
                        detail=core.timeline_detail(event),
                    )
                )
                row = (
                    await connection.execute(
                        select(calls).where(calls.c.call_sid == event.call_sid)
                    )
                ).first()
                before = _state(row) if row else None
                after = core.apply(before, event)
                values = dataclasses.asdict(after)
                if before is None:
                    await connection.execute(insert(calls).values(**values))
                elif after != before:
                    await connection.execute(
                        update(calls).where(calls.c.call_sid == event.call_sid).values(**values)
                    )
        except IntegrityError:
            return False
        return True

    async def get(self, call_sid: str) -> CallState | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(select(calls).where(calls.c.call_sid == call_sid))
            ).first()
        return _state(row) if row else None

    async def page(self, limit: int, offset: int) -> list[CallState]:
        query = (
            select(calls)
            .order_by(calls.c.created_at.desc(), calls.c.call_sid)
            .limit(limit)
            .offset(offset)
        )
        async with self._engine.connect() as connection:
            return [_state(row) for row in await connection.execute(query)]

    async def timeline(self, call_sid: str) -> list[dict[str, Any]]:
        query = (
            select(call_events)
            .where(call_events.c.call_sid == call_sid)
            .order_by(call_events.c.occurred_at, call_events.c.event_id)
        )
        async with self._engine.connect() as connection:
            rows = await connection.execute(query)
            return [
                {**row._mapping, "occurred_at": _aware(row.occurred_at).isoformat()} for row in rows
            ]
