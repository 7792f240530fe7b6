"""Rebuilds the status table from the topics: every event from the beginning, applied to an
empty database by the same projection the player runs live."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, select

from services.player.projector import projected_topics
from services.player.repository import CallRepository, migrate
from services.player.tables import calls
from shared.call_keys import CallKeys, Envelopes, copy_call_keys
from shared.db import create_engine
from shared.kafka.topics import replay
from shared.settings import Settings

log = logging.getLogger(__name__)


class NotEmpty(Exception):
    pass


async def rebuild(settings: Settings, database_url: str) -> int:
    """Applies every event on the pipeline's topics, opened with the calls' keys in the
    status database of `settings`, which it copies to the new one (events of deleted calls
    stay out); returns how many were applied."""
    await asyncio.to_thread(migrate, database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            existing = (await connection.execute(select(func.count()).select_from(calls))).scalar()
        if existing:
            raise NotEmpty(f"{existing} calls already in {database_url}: rebuild into an empty one")
        repository = CallRepository(engine)
        keys = CallKeys.of(settings)
        applied = 0
        try:
            if settings.database_url != database_url:
                await copy_call_keys(keys.engine, engine)
            async for event in replay(settings.kafka, projected_topics(), Envelopes(keys)):
                applied += await repository.apply(event)
        finally:
            repository.close()
            await keys.close()
        return applied
    finally:
        await engine.dispose()
