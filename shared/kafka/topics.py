"""callpipe's topics: their names and partitions, creating the missing ones, and reading a
topic's log from its beginning to its end without a consumer group."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import ValidationError

from shared.call_keys import Envelopes
from shared.events import AnyEvent, Stage, Topic, decode
from shared.kafka.connection import client_options
from shared.kafka.tansu_workarounds import end_offsets_confirmed
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

# The consumer groups; each has its own dead-letter topic.
WORKERS = ("downloader", "transcriber", "extractor", "player")


def dead_letter_topic(worker: str) -> str:
    return f"{worker}.dlq"


def all_topics() -> list[str]:
    return [t.value for t in Topic] + [dead_letter_topic(w) for w in WORKERS]


def partitions_of(topic: str, kafka: KafkaSettings) -> int:
    """`kafka_partitions`, but `stage.status` has at least one partition per stage (0918)."""
    if topic == Topic.STAGE_STATUS.value:
        return max(kafka.partitions, len(Stage))
    return kafka.partitions


async def ensure_topics(kafka: KafkaSettings) -> None:
    """Creates every topic callpipe uses that does not exist yet."""
    topics = all_topics()
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(t, partitions_of(t, kafka), 1) for t in missing]
                )
    finally:
        await admin.close()


async def records_to_end(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of `partitions` (assigned to `consumer`) from the beginning to the end,
    in order within a partition."""
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(partitions)
    while True:
        batch = await consumer.getmany(timeout_ms=1000)
        for records in batch.values():
            for record in records:
                yield record
        if end_offsets_confirmed(batch) and all(
            [await consumer.position(tp) >= ends[tp] for tp in partitions]
        ):
            return


async def replay(
    kafka: KafkaSettings, topics: Sequence[str], envelopes: Envelopes
) -> AsyncIterator[AnyEvent]:
    """Every event on `topics` from the beginning to the end (no consumer group, nothing
    committed), opened with `envelopes`; in order within a partition. Undecodable messages
    are skipped: they are in the dead-letter topics already; so are events of deleted calls
    (their keys are destroyed)."""
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata of every topic
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        async for record in records_to_end(consumer, partitions):
            try:
                event = await envelopes.open(decode(record.value))
            except ValidationError:
                log.warning("skipped undecodable %s:%s", record.topic, record.offset)
                continue
            if event is not None:
                yield event
    finally:
        await consumer.stop()
