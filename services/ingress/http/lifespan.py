"""The ingress's start and stop. A configuration error fails the start. A database not
reachable yet is waited for while webhooks are answered 503 (Twilio retries them); a broker
not reachable yet, while webhooks are stored."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aiokafka.errors import KafkaError
from fastapi import FastAPI

from services.ingress.http.state import IngressState
from shared.db import database_unreachable, wait_for_database
from shared.kafka.connection import probe_broker
from shared.shutdown import Shutdown


def lifespan(state: IngressState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def running(_app: FastAPI) -> AsyncIterator[None]:
        try:
            await prepare_database(state)
        except Exception as error:
            if not database_unreachable(error):
                raise
        with contextlib.suppress(KafkaError, OSError):
            await probe_broker(state.settings.kafka)
        starting = asyncio.create_task(relay_once_the_database_is_there(state))
        state.recording_starter = state.resources.open_recording_starter()
        try:
            yield
        finally:
            await stop(state, starting)

    return running


async def prepare_database(state: IngressState) -> None:
    await state.resources.deliveries.create_table()
    state.database_ready.set()


async def relay_once_the_database_is_there(state: IngressState) -> None:
    # Stopped by cancelling this task: the wait needs no stop event of its own.
    settings = state.settings
    if not state.database_ready.is_set():
        await wait_for_database(
            settings.database_url,
            lambda: prepare_database(state),
            asyncio.Event(),
            settings.retry.base_seconds,
            settings.retry.max_seconds,
        )
    state.resources.relay.start()


async def stop(state: IngressState, starting: asyncio.Task[None]) -> None:
    # uvicorn handles the signals: the stop is bounded here, without the last resort.
    resources = state.resources
    shutdown = Shutdown("ingress", state.settings.shutdown)
    shutdown.begin(last_resort=False)
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    if state.recording_starter is not None:
        await shutdown.within_bound("closing the Twilio client", state.recording_starter.close())
        state.recording_starter = None
    await shutdown.within_bound("handing back the events being sent", resources.relay.stop())
    await shutdown.within_bound("closing the producer", resources.producer.stop())
    resources.deliveries.close()
    await shutdown.within_bound("closing the database", resources.engine.dispose())
    shutdown.finished()
