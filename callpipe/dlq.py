"""`callpipe dlq`: list dead letters and re-drive them after a fix.

A re-drive publishes a dead letter back to the topic it was read from (its `dlq.source`):
a stage's dead letter that decodes goes back as the next attempt of the same event (the
player's retry button does the same), so the status table reopens the stage and every event
it causes gets fresh, deterministic ids: it is opened with its call's key and sealed again for
its new id (decision 1204); anything else (undecodable, unknown version, the player's own dead
letters, an event whose call was deleted or that does not open) goes back byte for byte, its
personal fields still sealed. Each dead-letter topic has a consumer group
`<worker>.dlq.redrive` whose committed offset says how far `--all` got: a second `--all`
re-drives nothing, and re-driving one entry twice yields the same event id, which every
consumer already absorbs. See docs/reliability.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from services.player.core import as_retry
from shared.call_keys import Envelopes, KeyMissing
from shared.events import AnyEvent, decode
from shared.kafka.connection import client_options
from shared.kafka.producer import EventProducer
from shared.kafka.topics import WORKERS, dead_letter_topic, records_to_end
from shared.sealing import Unopenable
from shared.settings import Settings

log = logging.getLogger(__name__)

STAGE_WORKERS = tuple(w for w in WORKERS if w != "player")


def redrive_group(worker: str) -> str:
    return f"{dead_letter_topic(worker)}.redrive"


@dataclass(frozen=True)
class DeadLetter:
    worker: str
    partition: int
    offset: int
    call_sid: str | None
    event_type: str | None
    attempt: int | None
    reason: str
    tries: int
    source_topic: str
    source_partition: int
    source_offset: int
    redriven: bool
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def describe(self) -> dict[str, object]:
        return {
            "worker": self.worker,
            "dlq_offset": f"{self.partition}:{self.offset}",
            "call_sid": self.call_sid,
            "event_type": self.event_type,
            "attempt": self.attempt,
            "reason": self.reason,
            "tries": self.tries,
            "source": f"{self.source_topic}:{self.source_partition}:{self.source_offset}",
            "redriven": self.redriven,
        }


def _decoded(value: bytes) -> AnyEvent | None:
    try:
        return decode(value)
    except ValidationError:
        return None


def parse_source(source: str) -> tuple[str, int, int]:
    """`topic:partition:offset` (the `dlq.source` header) → its parts."""
    topic, partition, offset = source.rsplit(":", 2)
    return topic, int(partition), int(offset)


def dead_letter(worker: str, record: ConsumerRecord[bytes, bytes], committed: int) -> DeadLetter:
    headers = {name: value.decode(errors="replace") for name, value in record.headers or ()}
    source_topic, source_partition, source_offset = parse_source(headers["dlq.source"])
    event = _decoded(record.value)
    return DeadLetter(
        worker=worker,
        partition=record.partition,
        offset=record.offset,
        call_sid=event.call_sid
        if event
        else (record.key.decode(errors="replace") if record.key else None),
        event_type=event.event_type if event else None,
        attempt=event.attempt if event else None,
        reason=headers.get("dlq.reason", ""),
        tries=int(headers.get("dlq.tries", "0")),
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        redriven=record.offset < committed,
        value=record.value,
        key=record.key,
        headers=tuple(
            (name, value) for name, value in record.headers or () if not name.startswith("dlq.")
        ),
    )


async def redrive_value(letter: DeadLetter, producer: EventProducer) -> bytes:
    """What goes back to the source topic (see the module's docstring)."""
    event = _decoded(letter.value)
    if event is None or letter.worker not in STAGE_WORKERS:
        return letter.value
    try:
        opened = await producer.envelopes.open(event)
    except (KeyMissing, Unopenable) as error:
        log.warning("re-driving %s as it is: %s", letter.describe()["dlq_offset"], error)
        return letter.value
    if opened is None:
        return letter.value
    return await producer.encoded(as_retry(opened, opened.attempt + 1))


async def _read(
    settings: Settings, worker: str
) -> tuple[list[DeadLetter], AIOKafkaConsumer, dict[TopicPartition, int]]:
    """Every dead letter of `worker`, oldest first per partition, with the consumer (started,
    in the re-drive group) and the group's committed position per partition."""
    topic = dead_letter_topic(worker)
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka),
        group_id=redrive_group(worker),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return [], consumer, {}
        consumer.assign(partitions)
        committed = {tp: (await consumer.committed(tp)) or 0 for tp in partitions}
        letters = [
            dead_letter(worker, record, committed[TopicPartition(record.topic, record.partition)])
            async for record in records_to_end(consumer, partitions)
        ]
        return letters, consumer, committed
    except BaseException:
        await consumer.stop()
        raise


async def list_dead_letters(settings: Settings, workers: Sequence[str]) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    for worker in workers:
        found, consumer, _ = await _read(settings, worker)
        await consumer.stop()
        letters += found
    return letters


async def redrive(
    settings: Settings, worker: str, offsets: Sequence[tuple[int, int]] | None
) -> list[DeadLetter]:
    """Re-drives the dead letters of `worker` at `offsets` (partition, offset), or, when
    `offsets` is None, every one not re-driven yet; returns what it re-drove."""
    letters, consumer, committed = await _read(settings, worker)
    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    try:
        if offsets is None:
            chosen = [letter for letter in letters if not letter.redriven]
        else:
            wanted = set(offsets)
            chosen = [letter for letter in letters if (letter.partition, letter.offset) in wanted]
            missing = wanted - {(letter.partition, letter.offset) for letter in chosen}
            if missing:
                raise KeyError(
                    f"no dead letter at {sorted(missing)} in {dead_letter_topic(worker)}"
                )
        for letter in chosen:
            headers = [
                *letter.headers,
                (
                    "dlq.redriven-from",
                    f"{dead_letter_topic(worker)}:{letter.partition}:{letter.offset}".encode(),
                ),
            ]
            await producer.publish_raw(
                letter.source_topic, await redrive_value(letter, producer), letter.key, headers
            )
            log.info(
                "re-drove %s:%s:%s (call %s) to %s",
                dead_letter_topic(worker),
                letter.partition,
                letter.offset,
                letter.call_sid,
                letter.source_topic,
            )
            tp = TopicPartition(dead_letter_topic(worker), letter.partition)
            # The group's position only moves forward over a prefix: `--offset` on a later
            # entry leaves the earlier ones for `--all`.
            if letter.offset == committed.get(tp, 0):
                committed[tp] = letter.offset + 1
                await consumer.commit({tp: committed[tp]})
        return chosen
    finally:
        await producer.stop()
        await consumer.stop()
