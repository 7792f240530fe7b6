"""The player's start and stop. A configuration error fails the start; a database or broker
not reachable yet is waited for, while /healthz says `connecting` and the API answers 503."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aiokafka.errors import KafkaError
from fastapi import FastAPI

from services.player.http.state import PlayerState
from services.player.repository import migrate
from shared.db import database_unreachable, wait_for_database
from shared.kafka.connection import probe_broker
from shared.kafka.producer import start_producer_patiently
from shared.shutdown import Shutdown


def lifespan(state: PlayerState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def running(_app: FastAPI) -> AsyncIterator[None]:
        settings, resources = state.settings, state.resources
        shutdown = Shutdown("player", settings.shutdown)
        try:
            await prepare_database(state)
        except Exception as error:
            if not database_unreachable(error):
                raise
        await resources.store.start()
        with contextlib.suppress(KafkaError, OSError):
            await probe_broker(settings.kafka)
        consuming = asyncio.create_task(consume(state, shutdown))
        try:
            yield
        finally:
            # uvicorn handles the signals: the stop is bounded here, without the last resort.
            shutdown.begin(last_resort=False)
            await consuming
            await close(state, shutdown)

    return running


async def prepare_database(state: PlayerState) -> None:
    settings = state.settings
    await asyncio.to_thread(migrate, settings.database_url)
    if api_key := settings.player.api_key.get_secret_value():
        await state.resources.repository.add_api_key(
            settings.business.default_id, api_key, "configured"
        )
    state.database_ready.set()


async def consume(state: PlayerState, shutdown: Shutdown) -> None:
    """Once the database is prepared and the broker reached: the projection, until the stop."""
    settings, resources = state.settings, state.resources
    if not state.database_ready.is_set() and not await wait_for_database(
        settings.database_url,
        lambda: prepare_database(state),
        shutdown.stop,
        settings.retry.base_seconds,
        settings.retry.max_seconds,
    ):
        return
    if await start_producer_patiently(
        settings.kafka, settings.retry, resources.producer, shutdown.stop, create_topics=True
    ):
        await asyncio.gather(
            *(worker.run(shutdown.stop, shutdown) for worker in resources.workers),
            state.deleter.retry_twilio_periodically(
                settings.player.twilio_delete_retry_seconds, shutdown.stop
            ),
        )


async def close(state: PlayerState, shutdown: Shutdown) -> None:
    resources = state.resources
    await shutdown.within_bound("closing the producer", resources.producer.stop())
    await shutdown.within_bound("closing the object store client", resources.store.stop())
    resources.repository.close()
    await shutdown.within_bound("closing the database", resources.engine.dispose())
    shutdown.finished()
