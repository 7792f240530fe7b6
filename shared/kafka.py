"""The consumer runtime every stage runs on (aiokafka, manual commits).

- A message's offset is committed only once its output events are acknowledged by the broker
  (acks=all), or once it has been dead-lettered: at-least-once, nothing skipped.
- Messages of different calls are handled concurrently (bounded); messages of one call (same
  key) are handled in order. The commit point of a partition advances over the contiguous
  prefix of finished offsets, so a slow call never lets a later offset be committed past it.
  While running, a worker commits at most every `kafka_commit_interval_ms` (each commit is
  several writes to the local broker's object store, decision 0911); on a revoke or a stop it
  commits at once.
- A handler's transient error is retried with capped, jittered backoff without holding up
  other calls; a terminal error, or retries exhausted, emits `stage.failed` and sends the
  original bytes with the reason to the worker's dead-letter topic. Undecodable or unknown
  messages (wrong schema, a schema version newer than this code) go there at once.
- On stop (SIGTERM) in-flight messages get `shutdown_grace_seconds` to finish; the rest are
  cancelled and handed back uncommitted (see docs/reliability.md).
- If the broker itself cannot take the output, the worker stops without committing: the
  message is redelivered after restart (handlers are idempotent).
- A partition's records are handed on only up to a hole in its offsets (a later record
  readable before an earlier one, as Tansu can show while two producers write to one
  partition); the worker fetches again from the hole until it fills, and goes past it only
  after `kafka_offset_hole_patience_seconds` (shared/offset_holes.py, decision 0914).
- After each rebalance a worker whose metadata lacks a topic it consumes asks the broker again
  until it has it; if it led that assignment (the topic's partitions went to no member), it
  then leaves the group and joins again, so the group rebalances with every partition
  (decision 1106).
- A worker given a batch handler hands it every event of one poll at once (the player applies
  them in one transaction) and commits their offsets after it returns; if it fails, the events
  go through the one-by-one path above, with its retries and dead letters. A message whose
  call still has one in flight there, or that does not decode, takes that path at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import ssl
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.transaction import InitProducerIdRequest
from pydantic import ValidationError
from tenacity import RetryCallState

from shared import metrics, tracing
from shared.events import (
    SCHEMA_VERSION,
    AnyEvent,
    Event,
    Stage,
    StageFailed,
    StageStarted,
    Topic,
    decode,
    encode,
    stage_status_partition,
    topic_of,
)
from shared.logs import call_context
from shared.offset_holes import OffsetHoles
from shared.retry import Misconfigured, describe, retrying, wait_until_reached
from shared.settings import Settings
from shared.shutdown import Shutdown

log = logging.getLogger(__name__)

# While a hole is open, each fetch returns at once with the records after it: a short pause
# keeps the refetching from spinning.
HOLE_REFETCH_PAUSE_SECONDS = 0.02

Handler = Callable[[AnyEvent], Awaitable[Sequence[Event]]]
BatchHandler = Callable[[Sequence[AnyEvent]], Awaitable[Sequence[Event]]]


# The consumer groups; each has its own dead-letter topic.
WORKERS = ("downloader", "transcriber", "extractor", "player")


def client_options(settings: Settings) -> dict[str, Any]:
    """How every producer, consumer and admin client callpipe makes reaches the broker: the
    address, TLS (verifying the broker's certificate, with a client certificate when given)
    and the SASL login, as aiokafka's keyword arguments (decision 1105)."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile or None,
            certfile=settings.kafka_ssl_certfile or None,
            keyfile=settings.kafka_ssl_keyfile or None,
            password=settings.kafka_ssl_key_password.get_secret_value() or None,
        )
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


class BrokerMisconfigured(Misconfigured):
    """The broker answers, but no retry can help: a malformed address, a rejected login, a
    certificate that does not verify."""


# What reaching the broker fails with when the configuration, not the broker, is wrong.
CONFIGURATION_ERRORS = (
    ValueError,
    ssl.SSLCertVerificationError,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.IllegalSaslStateError,
)
# One try at reaching the broker, before its clients start (they log every refused
# connection as an error, and a failed login only as a connection failure).
BROKER_PROBE_TIMEOUT_MS = 5000


async def probe_broker(settings: Settings) -> None:
    """Connects (and logs in) to a bootstrap server; raises if none answers, and
    BrokerMisconfigured if the configuration is what is wrong."""
    options = client_options(settings)
    try:
        hosts = collect_hosts(settings.kafka_bootstrap)
    except CONFIGURATION_ERRORS as error:
        raise BrokerMisconfigured(
            f"CALLPIPE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap!r}: {describe(error)}"
        ) from error
    if not hosts:
        raise BrokerMisconfigured("CALLPIPE_KAFKA_BOOTSTRAP is empty")
    last_error: Exception | None = None
    for host, port, _ in hosts:
        try:
            connection = await create_conn(
                host,
                port,
                request_timeout_ms=BROKER_PROBE_TIMEOUT_MS,
                ssl_context=options.get("ssl_context"),
                security_protocol=options["security_protocol"],
                sasl_mechanism=options.get("sasl_mechanism"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
            )
        except CONFIGURATION_ERRORS as error:
            raise BrokerMisconfigured(f"{host}:{port}: {describe(error)}") from error
        except (OSError, TimeoutError, kafka_errors.KafkaError) as error:
            last_error = error
            continue
        connection.close()
        return
    raise kafka_errors.KafkaConnectionError(
        f"no answer from {settings.kafka_bootstrap}: {describe(last_error) if last_error else '?'}"
    )


async def connect_patiently(
    settings: Settings, connect: Callable[[], Awaitable[None]], stop: asyncio.Event
) -> bool:
    """Reaches the broker (a probe, then `connect`), waiting for it with the stages' capped,
    jittered backoff as long as it is unreachable. True once connected, False if `stop` came
    first. A configuration error is raised at once (BrokerMisconfigured)."""

    async def connect_once() -> None:
        await probe_broker(settings)
        await connect()

    return await wait_until_reached(
        f"broker {settings.kafka_bootstrap}",
        connect_once,
        lambda _error: True,
        stop,
        settings.retry_base_seconds,
        settings.retry_max_seconds,
    )


async def start_producer_patiently(
    settings: Settings, producer: EventProducer, stop: asyncio.Event, *, create_topics: bool
) -> bool:
    """Starts `producer` (after creating the topics that are missing, if asked) once the
    broker is reachable: connect_patiently's answer."""

    async def connect() -> None:
        try:
            if create_topics:
                await ensure_topics(settings)
            await producer.start()
        except Exception:
            await producer.stop()
            raise

    return await connect_patiently(settings, connect, stop)


def dead_letter_topic(worker: str) -> str:
    return f"{worker}.dlq"


def all_topics() -> list[str]:
    return [t.value for t in Topic] + [dead_letter_topic(w) for w in WORKERS]


def traceparent(correlation_id: str) -> bytes:
    trace_id = correlation_id if len(correlation_id) == 32 else secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01".encode()


def partitions_of(topic: str, settings: Settings) -> int:
    """`kafka_partitions`, but `stage.status` has at least one partition per stage (0918)."""
    if topic == Topic.STAGE_STATUS.value:
        return max(settings.kafka_partitions, len(Stage))
    return settings.kafka_partitions


async def ensure_topics(settings: Settings) -> None:
    """Creates every topic callpipe uses that does not exist yet."""
    topics = all_topics()
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(t, partitions_of(t, settings), 1) for t in missing]
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
    # Done once every partition reached its end offset and a poll brings nothing more:
    # Tansu 0.6 can report an end offset one short of the last record.
    while True:
        batch = await consumer.getmany(timeout_ms=1000)
        for records in batch.values():
            for record in records:
                yield record
        if not batch and all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
            return


async def replay(settings: Settings, topics: Sequence[str]) -> AsyncIterator[AnyEvent]:
    """Every event on `topics` from the beginning to the end (no consumer group, nothing
    committed); in order within a partition. Undecodable messages are skipped: they are in
    the dead-letter topics already."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False, group_id=None)
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
                yield decode(record.value)
            except ValidationError:
                log.warning("skipped undecodable %s:%s", record.topic, record.offset)
    finally:
        await consumer.stop()


def grants_producer_ids(error_code: int) -> bool:
    """Whether an InitProducerId answer means the broker supports the idempotent producer: a
    producer id, or a retriable error (a broker still loading; the producer retries those)."""
    error = kafka_errors.for_code(error_code)
    return error is kafka_errors.NoError or bool(error.retriable)


async def broker_supports_idempotence(settings: Settings) -> bool:
    """Asks the broker for a producer id, the idempotent producer's first request. Tansu 0.6
    lists InitProducerId among its API versions yet answers it with an unknown server error, so
    the version list alone cannot tell."""
    client = AIOKafkaClient(**client_options(settings))
    try:
        await client.bootstrap()
        answer = await client.send(
            client.get_random_node(),
            InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000),
        )
    finally:
        await client.close()
    return grants_producer_ids(answer.error_code)


async def use_idempotence(settings: Settings) -> bool:
    """The idempotent-producer setting resolved: `auto` asks the broker."""
    choice = settings.kafka_idempotent_producer
    if choice == "auto":
        return await broker_supports_idempotence(settings)
    return choice


class EventProducer:
    """Publishes events keyed by call SID, waiting for acks=all. Created in the event loop.
    `linger_ms`: how long a send waits for others to share its produce request."""

    def __init__(self, settings: Settings, linger_ms: int = 2) -> None:
        self._settings = settings
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self.idempotent = False

    async def start(self) -> None:
        self.idempotent = await use_idempotence(self._settings)
        log.info("producer: acks=all, idempotent %s", "on" if self.idempotent else "off")
        self._producer = AIOKafkaProducer(
            **client_options(self._settings),
            acks="all",
            enable_idempotence=self.idempotent,
            linger_ms=self._linger_ms,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    @property
    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("EventProducer.start() was not awaited")
        return self._producer

    async def publish(self, event: Event) -> None:
        topic = topic_of(event).value
        partition = None
        if isinstance(event, StageStarted | StageFailed):
            partitions = len(await self._started.partitions_for(topic))
            partition = stage_status_partition(event.stage, event.call_sid, partitions)
        await self._started.send_and_wait(
            topic,
            encode(event),
            key=event.call_sid.encode(),
            partition=partition,
            headers=tracing.kafka_headers(event.correlation_id, traceparent(event.correlation_id)),
        )
        metrics.EVENTS_PUBLISHED.labels(topic).inc()

    async def publish_raw(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        await self._started.send_and_wait(topic, value, key=key, headers=headers)


class _OffsetTracker:
    """Per partition: offsets in arrival order, and which are finished."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, deque[int]] = {}
        self._done: dict[TopicPartition, set[int]] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        self._pending.setdefault(tp, deque()).append(offset)
        self._done.setdefault(tp, set())

    def finish(self, tp: TopicPartition, offset: int) -> None:
        self._done[tp].add(offset)

    def commit_points(self) -> dict[TopicPartition, int]:
        points: dict[TopicPartition, int] = {}
        for tp, pending in self._pending.items():
            done = self._done[tp]
            while pending and pending[0] in done:
                offset = pending.popleft()
                done.discard(offset)
                points[tp] = offset + 1
        return points

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.pop(tp, None)
            self._done.pop(tp, None)


class HandledInputs:
    """The event ids a stage worker handled to the end (its outputs acknowledged), the most
    recent `capacity` of them. A broker without idempotent producers can store one event
    twice (a send retried through a stall); its second copy meets the same worker moments
    later, in order behind the first, and is absorbed here instead of making its side
    effects again. A copy that arrives after a restart is handled again: at-least-once."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._capacity = capacity
        self._ids: dict[uuid.UUID, None] = {}

    def add(self, event_id: uuid.UUID) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids


@dataclass
class StageWorker:
    """Consumes `topics` as consumer group `name` and hands each event to `handle`, or the
    events of a poll together to `handle_batch` when given (falling back to `handle`)."""

    name: str
    topics: Sequence[str]
    handle: Handler
    settings: Settings
    producer: EventProducer
    stage: Stage | None = None
    wants: Callable[[AnyEvent], bool] = lambda event: True
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    handle_batch: BatchHandler | None = None

    def __post_init__(self) -> None:
        if self.handle_batch is not None and self.stage is not None:
            # A stage reports started/failed per event, around its own retries.
            raise ValueError("a batch handler is for workers without a stage")
        self._tracker = _OffsetTracker()
        self._holes = OffsetHoles(self.settings.kafka_offset_hole_patience_seconds)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._last_by_key: dict[bytes | None, asyncio.Task[None]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._failure: BaseException | None = None
        self._last_commit = float("-inf")
        self._handled = HandledInputs()
        self._reported_state = "connecting"
        self._lost_broker = False
        self._topic_watch: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        """`ready` while it consumes, `connecting` before and while its group coordinator
        (the broker) is out of reach."""
        if not self.ready.is_set() or self._consumer is None:
            return "connecting"
        coordinator = self._consumer._coordinator
        if coordinator is not None and coordinator.coordinator_id is None:
            return "connecting"
        return "ready"

    async def run(self, stop: asyncio.Event, shutdown: Shutdown | None = None) -> None:
        """Consumes until `stop` is set, then stops within `shutdown`'s bound: in-flight
        messages get the grace, committing and closing the consumer the rest."""
        shutdown = shutdown or Shutdown(self.name, self.settings)
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.max_in_flight,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
            # Round robin spreads a group's one-partition topics over its members (the range
            # assignor gives them all to the first); range stays for members of before (0919).
            partition_assignment_strategy=(RoundRobinPartitionAssignor, RangePartitionAssignor),
        )
        self._consumer = consumer
        consumer.subscribe(list(self.topics), listener=_OnRebalance(self))
        await consumer.start()
        log.info("%s consuming %s", self.name, ", ".join(self.topics))
        try:
            while not stop.is_set():
                await self._unless_stopped(self._poll(consumer), stop, shutdown)
            await self._hand_back(shutdown)
        finally:
            if self._topic_watch is not None:
                self._topic_watch.cancel()
            await shutdown.within_bound("closing the consumer", consumer.stop())

    def _topics_without_metadata(self, consumer: AIOKafkaConsumer) -> list[str]:
        return [topic for topic in self.topics if not consumer.partitions_for_topic(topic)]

    def watch_topic_metadata(self) -> None:
        """After an assignment: when this member's metadata lacks a topic it consumes (the
        broker answered it with an error, as Tansu can just after a restart), asks the broker
        again, with the stages' capped backoff, until it has it. The group's leader assigns
        from its own metadata, so if this member led the assignment, that topic's partitions
        went to no member: once its metadata has the topic, it leaves the group and joins
        again, and the group rebalances with every partition. Left alone, aiokafka would ask
        only at its periodic refresh (`metadata_max_age_ms`, five minutes), and its own
        rejoin of a leader whose metadata changed makes no rebalance on Tansu: events on
        those partitions would wait (decision 1106)."""
        if self._topic_watch is not None:
            self._topic_watch.cancel()  # of an earlier assignment
            self._topic_watch = None
        consumer = self._consumer
        if consumer is None or not self._topics_without_metadata(consumer):
            return
        # aiokafka keeps the group's subscription from a join until the next only on the
        # member that led it.
        led = consumer._coordinator._group_subscription is not None
        self._topic_watch = asyncio.create_task(self._refresh_topic_metadata(consumer, led))

    async def _refresh_topic_metadata(self, consumer: AIOKafkaConsumer, led: bool) -> None:
        log.warning(
            "%s: no metadata for %s after a rebalance: asking the broker again",
            self.name,
            ", ".join(self._topics_without_metadata(consumer)),
        )
        pause = self.settings.retry_base_seconds
        while not await self._topic_metadata_known(consumer, led):
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.settings.retry_max_seconds)
        if not led:
            log.info("%s: metadata of every topic it consumes known again", self.name)
            return
        log.warning(
            "%s: metadata of every topic it consumes known again; it assigned the group's "
            "partitions without some: leaving the group and joining again",
            self.name,
        )
        try:
            await self._commit()  # what finished, while still a member
        except Exception as error:
            log.warning("%s: commit before leaving the group failed: %s", self.name, error)
        await consumer._coordinator.maybe_leave_group()
        # Joining again, it assigns from its own metadata: taken in now, while the broker
        # waits for the other members to join.
        await consumer._client.force_metadata_update()

    async def _topic_metadata_known(self, consumer: AIOKafkaConsumer, led: bool) -> bool:
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
        return all(answer.partitions_for_topic(topic) for topic in self.topics)

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        batch = await self._up_to_holes(consumer, await consumer.getmany(timeout_ms=200))
        self.ready.set()
        if self.handle_batch is None:
            for tp, records in batch.items():
                for record in records:
                    self._dispatch(tp, record)
        elif batch:
            await self._process_batch(self.handle_batch, batch)
        await metrics.observe_consumer(self.name, consumer, len(self._in_flight))
        self._log_state_change()
        await self._wait_for_room()
        self._raise_if_failed()
        since_commit_ms = (time.monotonic() - self._last_commit) * 1000
        # While the broker is away a commit would wait for it: it is made once it is back.
        if since_commit_ms >= self.settings.kafka_commit_interval_ms and self.state == "ready":
            await self._commit()

    def _log_state_change(self) -> None:
        """One line when the broker goes away under a consuming worker, one when it is back."""
        state = self.state
        if state == self._reported_state:
            return
        if state == "connecting":
            log.warning("%s: broker out of reach, waiting for it (health: connecting)", self.name)
        elif self._lost_broker:
            log.info("%s: broker back, consuming again", self.name)
        self._lost_broker = state == "connecting"
        self._reported_state = state

    async def _unless_stopped(
        self, step: Awaitable[None], stop: asyncio.Event, shutdown: Shutdown
    ) -> None:
        """Runs one poll; if `stop` comes meanwhile (the poll waiting for room, or for a
        broker that is away), it gets the grace, then is cancelled: what it had not finished
        is not committed, so it comes again."""
        polling = asyncio.ensure_future(step)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([polling, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not polling.done():
                await asyncio.wait([polling], timeout=shutdown.grace_left())
        finally:
            stopping.cancel()
            if not polling.done():
                polling.cancel()
                await asyncio.wait([polling], timeout=shutdown.close_left())
        if polling.done() and not polling.cancelled():
            polling.result()

    async def _up_to_holes(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """Each partition's records up to a hole in its offsets; fetches again from a hole."""
        now = time.monotonic()
        admitted: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        refetching = False
        for tp, records in batch.items():
            verdict = self._holes.admit(tp, [record.offset for record in records], now)
            if verdict.skipped is not None:
                log.error(
                    "%s: offsets %d-%d of %s:%d stayed unreadable for %.0f s; going on past them",
                    self.name,
                    verdict.skipped.start,
                    verdict.skipped.stop - 1,
                    tp.topic,
                    tp.partition,
                    self.settings.kafka_offset_hole_patience_seconds,
                )
                metrics.OFFSET_HOLES.labels(self.name, "skipped").inc()
            if verdict.opened:
                log.info(
                    "%s: %s:%d offset %s not readable yet while later ones are; fetching again",
                    self.name,
                    tp.topic,
                    tp.partition,
                    verdict.refetch_from,
                )
                metrics.OFFSET_HOLES.labels(self.name, "waited").inc()
            if verdict.refetch_from is not None:
                consumer.seek(tp, verdict.refetch_from)
                refetching = True
            if verdict.count:
                admitted[tp] = records[: verdict.count]
        if refetching:
            await asyncio.sleep(HOLE_REFETCH_PAUSE_SECONDS)
        return admitted

    def _dispatch(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        self._tracker.add(tp, record.offset)
        self._start(tp, record)

    def _start(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        previous = self._last_by_key.get(record.key)
        task = asyncio.create_task(self._process_in_order(previous, tp, record))
        self._last_by_key[record.key] = task
        self._in_flight.add(task)
        task.add_done_callback(self._on_task_done(record.key))

    def _on_task_done(self, key: bytes | None) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._in_flight.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self._failure = task.exception()
            if self._last_by_key.get(key) is task:
                del self._last_by_key[key]

        return done

    async def _wait_for_room(self) -> None:
        while len(self._in_flight) >= self.settings.max_in_flight:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)

    async def drain(self) -> None:
        if self._in_flight:
            await asyncio.wait(self._in_flight)
        await self._commit()

    async def _hand_back(self, shutdown: Shutdown) -> None:
        """Shutdown: lets in-flight messages finish for the grace, then cancels the rest
        (typically calls waiting out a retry backoff, or on a broker or S3 server that does
        not answer) and commits only what finished; the cancelled messages are redelivered to
        whichever member takes the partition. A commit the broker does not take within the
        bound is given up: those messages come again too."""
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=shutdown.grace_left())
        unfinished = list(self._in_flight)
        for task in unfinished:
            task.cancel()
        if unfinished:
            log.info("%s handing back %d unfinished messages", self.name, len(unfinished))
            shutdown.abandon(f"{len(unfinished)} unfinished messages (handed back uncommitted)")
            await asyncio.wait(unfinished, timeout=shutdown.close_left())
        if self._failure is not None:
            shutdown.abandon(
                "every commit: an output did not reach the broker "
                f"({describe(self._failure)}), so all since the last commit come again"
            )
            return
        points = self._tracker.commit_points()
        if points and self._consumer is not None:
            await shutdown.within_bound(
                f"committing {len(points)} partitions' finished offsets",
                self._consumer.commit(points),
            )

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            # The output could not be made durable (broker down): stop without committing,
            # so the message is redelivered after restart.
            raise RuntimeError("a message could not be completed") from self._failure

    async def _commit(self) -> None:
        self._raise_if_failed()
        points = self._tracker.commit_points()
        if points and self._consumer is not None:
            await self._consumer.commit(points)
            self._last_commit = time.monotonic()

    async def _process_in_order(
        self,
        previous: asyncio.Task[None] | None,
        tp: TopicPartition,
        record: ConsumerRecord[bytes, bytes],
    ) -> None:
        if previous is not None:
            await asyncio.shield(previous)
        await self._process(record)
        self._tracker.finish(tp, record.offset)

    async def _process_batch(
        self,
        handle_batch: BatchHandler,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        """Hands the poll's events to `handle_batch` in one call; their offsets are finished
        once it returned. A message that does not decode, or whose call has a message still
        in flight one by one, goes one by one, and so does every later message of its call in
        the poll: those start only after the batch, so a call's messages stay in order."""
        together: list[tuple[TopicPartition, ConsumerRecord[bytes, bytes], AnyEvent]] = []
        alone: list[tuple[TopicPartition, ConsumerRecord[bytes, bytes]]] = []
        keys_alone = set(self._last_by_key)
        for tp, records in batch.items():
            for record in records:
                self._tracker.add(tp, record.offset)
                event = None if record.key in keys_alone else _decoded(record)
                if event is None:
                    keys_alone.add(record.key)
                    alone.append((tp, record))
                else:
                    together.append((tp, record, event))
        if together:
            try:
                await self._handle_together(handle_batch, together)
            except Exception as error:
                log.warning(
                    "%s: a batch of %d failed, handling its events one by one: %s",
                    self.name,
                    len(together),
                    describe(error),
                )
                alone = [(tp, record) for tp, record, _ in together] + alone
            else:
                for tp, record, _ in together:
                    self._tracker.finish(tp, record.offset)
        for tp, record in alone:
            self._start(tp, record)

    async def _handle_together(
        self,
        handle_batch: BatchHandler,
        together: list[tuple[TopicPartition, ConsumerRecord[bytes, bytes], AnyEvent]],
    ) -> None:
        wanted = [(record, event) for _, record, event in together if self.wants(event)]
        if not wanted:
            return
        started = time.perf_counter()
        with contextlib.ExitStack() as spans:
            for record, event in wanted:
                spans.enter_context(
                    tracing.consumer_span(self.name, record.topic, record.headers, event)
                )
            outputs = await handle_batch([event for _, event in wanted])
            for output in outputs:
                await self.producer.publish(output)
        seconds = time.perf_counter() - started
        for record, event in wanted:
            metrics.handled(self.name, record.topic, event.occurred_at, seconds)

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = decode(record.value)
        except ValidationError as error:
            log.error("undecodable message at %s:%s: %s", record.topic, record.offset, error)
            await self._dead_letter(record, f"invalid event: {describe(error)}", tries=0)
            return
        if event.schema_version > SCHEMA_VERSION:
            reason = (
                f"unknown schema version {event.schema_version} "
                f"(this worker reads up to {SCHEMA_VERSION})"
            )
            log.error("message at %s:%s: %s", record.topic, record.offset, reason)
            await self._dead_letter(record, reason, tries=0)
            return
        if not self.wants(event):
            return
        if event.event_id in self._handled:
            with call_context(event.call_sid, str(event.event_id)):
                log.info("a second copy of an event this worker handled: absorbed")
            metrics.DUPLICATES_ABSORBED.labels(self.name).inc()
            return
        with (
            call_context(event.call_sid, str(event.event_id)),
            tracing.consumer_span(self.name, record.topic, record.headers, event),
            metrics.handling(self.name, record.topic, event.occurred_at),
            self._start_announcement(event) as announcement,
        ):
            tries = 0

            async def report_retry(state: RetryCallState) -> None:
                error = state.outcome.exception() if state.outcome else None
                log.warning("try %d failed, will retry: %s", state.attempt_number, error)
                metrics.STAGE_RETRIES.labels(self.name).inc()
                await announcement.settle()
                if self.stage is not None and error is not None:
                    await self.producer.publish(
                        event.caused(
                            StageFailed,
                            f"{self.stage}.retry.{state.attempt_number}",
                            stage=self.stage,
                            error=describe(error),
                            terminal=False,
                            tries=state.attempt_number,
                        )
                    )

            try:
                async for attempt in retrying(
                    self.settings.max_attempts,
                    self.settings.retry_base_seconds,
                    self.settings.retry_max_seconds,
                    report_retry,
                ):
                    with attempt:
                        tries += 1
                        outputs = await self.handle(event)
                await announcement.settle()
                for output in outputs:
                    await self.producer.publish(output)
                self._handled.add(event.event_id)
            except kafka_errors.KafkaError:
                # The broker, not the message, failed: never a dead letter. The worker stops
                # without committing it, and it comes again once the broker is back.
                raise
            except Exception as error:  # terminal, or retries exhausted
                reason = describe(error)
                log.error("giving up after %d tries: %s", tries, reason)
                metrics.STAGE_FAILURES.labels(self.name).inc()
                tracing.record_failure(reason)
                await announcement.settle()
                if self.stage is not None:
                    await self.producer.publish(
                        event.caused(
                            StageFailed,
                            f"{self.stage}.failed",
                            stage=self.stage,
                            error=reason,
                            terminal=True,
                            tries=tries,
                        )
                    )
                await self._dead_letter(record, reason, tries)

    def _start_announcement(self, event: AnyEvent) -> _StartAnnouncement:
        """`stage.started` for this event, published once the work has run
        `stage_started_after_ms` (decision 0920); at once when that is 0."""
        if self.stage is None:
            return _StartAnnouncement()
        started = event.caused(StageStarted, f"{self.stage}.started", stage=self.stage)
        return _StartAnnouncement(
            self.settings.stage_started_after_ms / 1000,
            functools.partial(self.producer.publish, started),
        )

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, tries: int
    ) -> None:
        headers = [
            *list(record.headers or ()),
            ("dlq.reason", reason.encode()),
            ("dlq.worker", self.name.encode()),
            ("dlq.tries", str(tries).encode()),
            ("dlq.source", f"{record.topic}:{record.partition}:{record.offset}".encode()),
        ]
        await self.producer.publish_raw(
            dead_letter_topic(self.name), record.value, record.key, headers
        )
        metrics.DEAD_LETTERS.labels(self.name).inc()


class _StartAnnouncement(contextlib.AbstractContextManager["_StartAnnouncement"]):
    """A `stage.started` waiting out its delay. `settle()` comes before the stage publishes
    its outcome: a start not yet announced is dropped (the outcome says it all), one being
    published is waited for, so the outcome never overtakes it. Leaving the context drops a
    start not yet announced (the message was handed back)."""

    def __init__(
        self, seconds: float | None = None, publish: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self._publishing: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        if publish is None or seconds is None:
            return
        if seconds > 0:
            self._timer = asyncio.get_running_loop().call_later(seconds, self._begin, publish)
        else:
            self._begin(publish)

    def _begin(self, publish: Callable[[], Awaitable[None]]) -> None:
        self._timer = None
        self._publishing = asyncio.ensure_future(publish())

    async def settle(self) -> None:
        self._drop()
        publishing, self._publishing = self._publishing, None
        if publishing is not None:
            await publishing

    def _drop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __exit__(self, *exc_info: object) -> None:
        self._drop()


def _decoded(record: ConsumerRecord[bytes, bytes]) -> AnyEvent | None:
    """The record's event, or None when it does not decode or is of a newer schema."""
    try:
        event = decode(record.value)
    except ValidationError:
        return None
    return event if event.schema_version <= SCHEMA_VERSION else None


class _OnRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move to another member, finish and commit what was taken; on
    assignment, note where each partition resumes."""

    def __init__(self, worker: StageWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._worker.drain()
        self._worker._tracker.forget(revoked)
        self._worker._holes.forget(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """The next record of each partition is at its committed offset, or at the start of
        its log when the group has none: a hole right there is seen as one too."""
        log.info(
            "%s assigned %s",
            self._worker.name,
            ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(assigned)) or "nothing",
        )
        self._worker.watch_topic_metadata()
        consumer = self._worker._consumer
        if consumer is None:
            return
        try:
            starts = {tp: await consumer.committed(tp) for tp in assigned}
            never_committed = [tp for tp, offset in starts.items() if offset is None]
            if never_committed:
                starts |= await consumer.beginning_offsets(never_committed)
        except kafka_errors.KafkaError as error:
            log.warning("%s: where the partitions resume is unknown: %r", self._worker.name, error)
            return
        for tp, offset in starts.items():
            if offset is not None:
                self._worker._holes.expect(tp, offset)
