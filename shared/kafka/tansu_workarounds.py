"""Where the local broker, Tansu 0.6, behaves unlike Apache Kafka, and what callpipe does about it.

Each workaround below names the broker behaviour it works around and the decision recording
it. Against Apache Kafka (production, the compose deployment) none of them changes what
happens: there they cost a check and never act. A broker without these behaviours lets this
module go in one change, with its call sites: the stage worker (shared/kafka/worker.py), the
producer's idempotence setting (shared/kafka/producer.py) and `records_to_end`
(shared/kafka/topics.py).

Not here: settings chosen for the local broker's object store that hold on any broker, the
commit interval (decision 0911) and one partition per topic by default (decision 0915).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.transaction import InitProducerIdRequest

from shared import metrics
from shared.kafka.connection import client_options
from shared.settings import KafkaSettings, RetrySettings

log = logging.getLogger(__name__)

# A poll's records, by partition.
Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


@dataclass(frozen=True)
class Admitted:
    """How many of a fetch's records (in offset order) may be handled now; if fewer than all,
    fetch again from `refetch_from`. `opened`: that hole was first met now. `skipped`: the
    hole gone past, if any."""

    count: int
    refetch_from: int | None = None
    opened: bool = False
    skipped: range | None = None


class OffsetHoles:
    """Holes in a partition's offsets while its log is still being written: wait, then go on.

    Works around: Tansu 0.6 gives a produce its offsets (it moves the partition's high
    watermark) before it writes the records. When two producers write to one partition, a
    fetch can so return offset N+1 while N is not readable yet, and a consumer that took that
    answer would move past N for good: a silent loss (decision 0914). Kafka's own log has no
    holes in callpipe's topics (no transactions, no compaction). So a consumer hands on a
    partition's records only up to a hole, fetches again from the hole, and goes past it only
    once it has stayed open for `patience_seconds` (a produce whose records were never
    written, after an object-store error, leaves a hole for good).

    Pure: the caller fetches, seeks and logs (OffsetHoleGuard)."""

    def __init__(self, patience_seconds: float) -> None:
        self._patience_seconds = patience_seconds
        self._next: dict[Hashable, int] = {}
        self._open_since: dict[Hashable, tuple[int, float]] = {}

    def expect(self, partition: Hashable, offset: int) -> None:
        """The partition's next record is at `offset` (its committed offset, on assignment)."""
        self._next[partition] = offset
        self._open_since.pop(partition, None)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        for partition in partitions:
            self._next.pop(partition, None)
            self._open_since.pop(partition, None)

    def admit(self, partition: Hashable, offsets: Sequence[int], now: float) -> Admitted:
        expected = self._next.get(partition)
        for index, offset in enumerate(offsets):
            if expected is not None and offset > expected:
                hole_at, since = self._open_since.get(partition, (None, now))
                if hole_at != expected:
                    self._open_since[partition] = (expected, now)
                    return Admitted(index, refetch_from=expected, opened=True)
                if now - since < self._patience_seconds:
                    return Admitted(index, refetch_from=expected)
                del self._open_since[partition]
                self._next[partition] = offset + 1
                rest = self.admit(partition, offsets[index + 1 :], now)
                return Admitted(
                    index + 1 + rest.count,
                    rest.refetch_from,
                    rest.opened,
                    skipped=range(expected, offset),
                )
            # A record below the expected offset is a redelivery: handlers are idempotent.
            expected = max(expected if expected is not None else offset, offset + 1)
            self._next[partition] = expected
        if offsets:
            self._open_since.pop(partition, None)
        return Admitted(len(offsets))


# While a hole is open, each fetch returns at once with the records after it: a short pause
# keeps the refetching from spinning.
HOLE_REFETCH_PAUSE_SECONDS = 0.02


class OffsetHoleGuard:
    """A stage worker's guard against holes in a partition's offsets.

    Works around: Tansu 0.6 can make a later record of a partition readable before an earlier
    one (OffsetHoles, decision 0914). The guard hands on each partition's records only up to a
    hole, seeks back to the hole (aiokafka drops what it prefetched past it) and fetches again
    after a short pause, until the hole fills or `kafka_offset_hole_patience_seconds` pass.
    Holes waited out and gone past are counted (`callpipe_offset_holes`); going past one is
    logged at ERROR with its offsets."""

    def __init__(self, worker: str, patience_seconds: float) -> None:
        self._worker = worker
        self._patience_seconds = patience_seconds
        self._holes = OffsetHoles(patience_seconds)

    async def expect_resume_points(
        self, consumer: AIOKafkaConsumer, assigned: Sequence[TopicPartition]
    ) -> None:
        """On assignment: the next record of each partition is at its committed offset, or at
        the start of its log when the group has none: a hole right there is seen as one too."""
        try:
            starts = {tp: await consumer.committed(tp) for tp in assigned}
            never_committed = [tp for tp, offset in starts.items() if offset is None]
            if never_committed:
                starts |= await consumer.beginning_offsets(never_committed)
        except kafka_errors.KafkaError as error:
            log.warning("%s: where the partitions resume is unknown: %r", self._worker, error)
            return
        for tp, offset in starts.items():
            if offset is not None:
                self._holes.expect(tp, offset)

    def forget(self, revoked: Sequence[TopicPartition]) -> None:
        self._holes.forget(revoked)

    async def up_to_holes(self, consumer: AIOKafkaConsumer, batch: Records) -> Records:
        """Each partition's records up to a hole in its offsets; fetches again from a hole."""
        now = time.monotonic()
        admitted: Records = {}
        refetching = False
        for tp, records in batch.items():
            verdict = self._holes.admit(tp, [record.offset for record in records], now)
            if verdict.skipped is not None:
                log.error(
                    "%s: offsets %d-%d of %s:%d stayed unreadable for %.0f s; going on past them",
                    self._worker,
                    verdict.skipped.start,
                    verdict.skipped.stop - 1,
                    tp.topic,
                    tp.partition,
                    self._patience_seconds,
                )
                metrics.OFFSET_HOLES.labels(self._worker, "skipped").inc()
            if verdict.opened:
                log.info(
                    "%s: %s:%d offset %s not readable yet while later ones are; fetching again",
                    self._worker,
                    tp.topic,
                    tp.partition,
                    verdict.refetch_from,
                )
                metrics.OFFSET_HOLES.labels(self._worker, "waited").inc()
            if verdict.refetch_from is not None:
                consumer.seek(tp, verdict.refetch_from)
                refetching = True
            if verdict.count:
                admitted[tp] = records[: verdict.count]
        if refetching:
            await asyncio.sleep(HOLE_REFETCH_PAUSE_SECONDS)
        return admitted


class TopicMetadataWatch:
    """A rebalance made without a topic's metadata is made again once the metadata is back.

    Works around: just after a restart Tansu can answer a topic's metadata with an error;
    aiokafka then drops the topic from its metadata, and the group's leader, assigning from its
    own metadata, gives that topic's partitions to no member. aiokafka would ask again only at
    its periodic refresh (`metadata_max_age_ms`, five minutes), and its own rejoin of a leader
    whose metadata changed makes no rebalance on Tansu: events on those partitions would wait
    (decision 1106).

    So after each assignment, when the member's metadata lacks a topic it consumes, it asks
    the broker again, with the stages' capped backoff, until it has it. If this member led the
    assignment, it then commits what it finished, leaves the group and joins again, and the
    group rebalances with every partition. Uses aiokafka internals (`consumer._client`,
    `consumer._coordinator`)."""

    def __init__(
        self,
        worker: str,
        topics: Sequence[str],
        retry: RetrySettings,
        commit: Callable[[], Awaitable[None]],
    ) -> None:
        self._worker = worker
        self._topics = topics
        self._retry = retry
        self._commit = commit
        self._watching: asyncio.Task[None] | None = None

    def after_assignment(self, consumer: AIOKafkaConsumer) -> None:
        self.stop()  # the watch of an earlier assignment
        if not self._topics_without_metadata(consumer):
            return
        # aiokafka keeps the group's subscription from a join until the next only on the
        # member that led it.
        led = consumer._coordinator._group_subscription is not None
        self._watching = asyncio.create_task(self._refresh(consumer, led))

    def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            self._watching = None

    def _topics_without_metadata(self, consumer: AIOKafkaConsumer) -> list[str]:
        return [topic for topic in self._topics if not consumer.partitions_for_topic(topic)]

    async def _refresh(self, consumer: AIOKafkaConsumer, led: bool) -> None:
        log.warning(
            "%s: no metadata for %s after a rebalance: asking the broker again",
            self._worker,
            ", ".join(self._topics_without_metadata(consumer)),
        )
        pause = self._retry.base_seconds
        while not await self._metadata_known(consumer, led):
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._retry.max_seconds)
        if not led:
            log.info("%s: metadata of every topic it consumes known again", self._worker)
            return
        log.warning(
            "%s: metadata of every topic it consumes known again; it assigned the group's "
            "partitions without some: leaving the group and joining again",
            self._worker,
        )
        try:
            await self._commit()  # what finished, while still a member
        except Exception as error:
            log.warning("%s: commit before leaving the group failed: %s", self._worker, error)
        await consumer._coordinator.maybe_leave_group()
        # Joining again, it assigns from its own metadata: taken in now, while the broker
        # waits for the other members to join.
        await consumer._client.force_metadata_update()

    async def _metadata_known(self, consumer: AIOKafkaConsumer, led: bool) -> bool:
        """Whether the broker now has metadata for every topic this worker consumes. A member
        that led the assignment asks for a copy: a change of its own metadata would make
        aiokafka join again as the same member, which on Tansu starts no rebalance, and would
        race the leave that does. Another takes the answer in its own metadata (aiokafka's
        group coordinator watches it only on a leader)."""
        if not led:
            await consumer._client.force_metadata_update()
            return not self._topics_without_metadata(consumer)
        try:
            answer = await consumer._client.fetch_all_metadata()
        except kafka_errors.KafkaError:
            return False
        return all(answer.partitions_for_topic(topic) for topic in self._topics)


def grants_producer_ids(error_code: int) -> bool:
    """Whether an InitProducerId answer means the broker supports the idempotent producer: a
    producer id, or a retriable error (a broker still loading; the producer retries those).
    The answer broker_supports_idempotence goes by (decision 1005)."""
    error = kafka_errors.for_code(error_code)
    return error is kafka_errors.NoError or bool(error.retriable)


async def broker_supports_idempotence(kafka: KafkaSettings) -> bool:
    """Asks the broker for a producer id, the idempotent producer's first request.

    Works around: Tansu 0.6 lists InitProducerId among its API versions yet answers it with an
    unknown server error, so the version list alone cannot tell, and an idempotent producer
    would fail to start (decision 1005)."""
    client = AIOKafkaClient(**client_options(kafka))
    try:
        await client.bootstrap()
        answer = await client.send(
            client.get_random_node(),
            InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000),
        )
    finally:
        await client.close()
    return grants_producer_ids(answer.error_code)


def end_offsets_confirmed(last_poll: Records) -> bool:
    """Whether a reader that reached the end offsets it was told may stop: only after a poll
    that brought nothing more.

    Works around: Tansu 0.6 can report an end offset one short of the last record (decision
    0701)."""
    return not last_poll
