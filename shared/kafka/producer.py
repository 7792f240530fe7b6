"""Publishing events: keyed by call SID, acknowledged by every in-sync replica (acks=all),
idempotent where the broker supports it (decision 1005), with the call's trace context, and
their personal fields sealed with the call's key (decision 1204): the one place events leave
a service."""

from __future__ import annotations

import asyncio
import logging
import secrets

from aiokafka import AIOKafkaProducer

from shared import metrics, tracing
from shared.call_keys import Envelopes
from shared.events import (
    Event,
    StageFailed,
    StageStarted,
    encode,
    stage_status_partition,
    topic_of,
)
from shared.kafka.connection import client_options, connect_patiently
from shared.kafka.tansu_workarounds import broker_supports_idempotence
from shared.kafka.topics import ensure_topics
from shared.settings import KafkaSettings, RetrySettings

log = logging.getLogger(__name__)


def traceparent(correlation_id: str) -> bytes:
    trace_id = correlation_id if len(correlation_id) == 32 else secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01".encode()


async def use_idempotence(kafka: KafkaSettings) -> bool:
    """The idempotent-producer setting resolved: `auto` asks the broker."""
    choice = kafka.idempotent_producer
    if choice == "auto":
        return await broker_supports_idempotence(kafka)
    return choice


class EventProducer:
    """Publishes events keyed by call SID, waiting for acks=all, sealed by `envelopes`; the
    consumers of this service open theirs with the same. Created in the event loop.
    `linger_ms`: how long a send waits for others to share its produce request."""

    def __init__(self, kafka: KafkaSettings, envelopes: Envelopes, linger_ms: int = 2) -> None:
        self._kafka = kafka
        self.envelopes = envelopes
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self.idempotent = False

    async def start(self) -> None:
        self.idempotent = await use_idempotence(self._kafka)
        log.info("producer: acks=all, idempotent %s", "on" if self.idempotent else "off")
        self._producer = AIOKafkaProducer(
            **client_options(self._kafka),
            acks="all",
            enable_idempotence=self.idempotent,
            linger_ms=self._linger_ms,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        await self.envelopes.close()

    @property
    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("EventProducer.start() was not awaited")
        return self._producer

    async def encoded(self, event: Event) -> bytes:
        """The event as it travels: its personal fields sealed."""
        return encode(await self.envelopes.seal(event))

    async def publish(self, event: Event) -> None:
        topic = topic_of(event).value
        partition = None
        if isinstance(event, StageStarted | StageFailed):
            partitions = len(await self._started.partitions_for(topic))
            partition = stage_status_partition(event.stage, event.call_sid, partitions)
        await self._started.send_and_wait(
            topic,
            await self.encoded(event),
            key=event.call_sid.encode(),
            partition=partition,
            headers=tracing.kafka_headers(event.correlation_id, traceparent(event.correlation_id)),
        )
        metrics.EVENTS_PUBLISHED.labels(topic).inc()

    async def publish_raw(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        """Bytes as they were read (a dead letter, a re-drive): sealed fields stay sealed."""
        await self._started.send_and_wait(topic, value, key=key, headers=headers)


async def start_producer_patiently(
    kafka: KafkaSettings,
    retry: RetrySettings,
    producer: EventProducer,
    stop: asyncio.Event,
    *,
    create_topics: bool,
) -> bool:
    """Starts `producer` (after creating the topics that are missing, if asked) once the
    broker is reachable: connect_patiently's answer."""

    async def connect() -> None:
        try:
            if create_topics:
                await ensure_topics(kafka)
            await producer.start()
        except Exception:
            await producer.stop()
            raise

    return await connect_patiently(kafka, retry, connect, stop)
