"""What the player's HTTP application runs on: the resources the wiring (callpipe/bootstrap.py)
builds and hands in, and what the application keeps while it serves (`app.state.player`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cachetools import TTLCache
from sqlalchemy.ext.asyncio import AsyncEngine

from services.player.config import PlayerConfig
from services.player.deletion import Deleter
from services.player.repository import CallRepository, key_digest
from shared.kafka.producer import EventProducer
from shared.kafka.worker import StageWorker
from shared.storage import ObjectStore
from shared.twilio_rest import RecordingDeleter


@dataclass(frozen=True)
class PlayerResources:
    """Built, not started: the application's lifespan starts and closes them."""

    engine: AsyncEngine
    repository: CallRepository
    store: ObjectStore
    producer: EventProducer
    workers: Sequence[StageWorker]
    # Opened for each round of deletions at Twilio, inside the event loop.
    open_twilio: Callable[[], RecordingDeleter]


class KnownKeys:
    """The business of each API key, remembered for `api_key_cache_seconds`: an API client
    sends its key with every request. An unknown key is not remembered (it may be added)."""

    def __init__(self, repository: CallRepository, ttl_seconds: float) -> None:
        self._repository = repository
        self._businesses: TTLCache[str, str] = TTLCache(maxsize=10_000, ttl=ttl_seconds)

    async def business_of(self, api_key: str) -> str | None:
        digest = key_digest(api_key)
        business = self._businesses.get(digest)
        if business is None:
            business = await self._repository.business_of_key(api_key)
            if business is not None:
                self._businesses[digest] = business
        return business

    def forget_business(self, business_id: str) -> None:
        """The business was deleted: its keys are not taken from memory any more."""
        for digest, business in list(self._businesses.items()):
            if business == business_id:
                self._businesses.pop(digest, None)


@dataclass(frozen=True)
class PlayerState:
    settings: PlayerConfig
    resources: PlayerResources
    own_origin: str
    known_keys: KnownKeys
    # Set once the schema is migrated and the configured API key stored: until then the
    # routes answer 503 and /healthz says `connecting`.
    database_ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def deleter(self) -> Deleter:
        resources = self.resources
        return Deleter(
            resources.repository, resources.store, resources.producer, resources.open_twilio
        )
