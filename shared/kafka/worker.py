"""The consumer runtime every stage runs on (aiokafka, manual commits).

- Messages of different calls are handled concurrently (at most `max_in_flight`); messages of
  one call (same key) are handled in order (InFlight).
- What is committed, and when, is shared/kafka/offsets.py: each partition's contiguous prefix
  of finished offsets, at most every `kafka_commit_interval_ms` while running, at once on a
  revoke or a stop.
- What happens when handling a message fails (retries, `stage.failed`, dead letters, a broker
  that cannot take the output) is shared/kafka/failures.py.
- A stage announces `stage.started` for work that has run `stage_started_after_ms`
  (decision 0920).
- On stop (SIGTERM) in-flight messages get `shutdown_grace_seconds` to finish; the rest are
  cancelled and handed back uncommitted (see docs/reliability.md).
- A worker given a batch handler hands it every event of one poll at once (the player applies
  them in one transaction) and commits their offsets after it returns; if it fails, the events
  go through the one-by-one path. A message whose call still has one in flight there, or that
  does not decode, takes that path at once.
- Events arrive with their personal fields sealed (decision 1204): the worker opens each one
  with its call's key before its handler sees it, within the failure rule (a key the
  database does not give is retried, a payload that does not open is given up). An event
  of a deleted call (its key destroyed) is handled as nothing to do: its offset is committed,
  nothing is published, nothing is dead-lettered.
- The local broker's workarounds it runs (holes in a partition's offsets, a rebalance made
  without a topic's metadata) are shared/kafka/tansu_workarounds.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from pydantic import ValidationError

from shared import metrics, tracing
from shared.events import SCHEMA_VERSION, AnyEvent, Event, Stage, StageStarted, decode
from shared.health import Health
from shared.kafka.connection import client_options
from shared.kafka.failures import FailureHandling, WorkerFailure
from shared.kafka.offsets import Commits, HandledInputs, OffsetTracker
from shared.kafka.producer import EventProducer
from shared.kafka.tansu_workarounds import OffsetHoleGuard, TopicMetadataWatch
from shared.logs import call_context
from shared.retry import TerminalError
from shared.sealing import Unopenable
from shared.settings import (
    KafkaSettings,
    RetrySettings,
    Settings,
    ShutdownSettings,
    WorkerSettings,
)
from shared.shutdown import Shutdown

log = logging.getLogger(__name__)

Handler = Callable[[AnyEvent], Awaitable[Sequence[Event]]]
BatchHandler = Callable[[Sequence[AnyEvent]], Awaitable[Sequence[Event]]]
# A poll's records, by partition.
Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


@dataclass(frozen=True)
class StageWorkerSettings:
    """The slices a stage worker runs with."""

    kafka: KafkaSettings
    worker: WorkerSettings
    retry: RetrySettings
    shutdown: ShutdownSettings

    @classmethod
    def of(cls, settings: Settings) -> StageWorkerSettings:
        return cls(settings.kafka, settings.worker, settings.retry, settings.shutdown)


@dataclass
class StageWorker:
    """Consumes `topics` as consumer group `name` and hands each event to `handle`, or the
    events of a poll together to `handle_batch` when given (falling back to `handle`)."""

    name: str
    topics: Sequence[str]
    handle: Handler
    settings: StageWorkerSettings
    producer: EventProducer
    stage: Stage | None = None
    wants: Callable[[AnyEvent], bool] = lambda event: True
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    handle_batch: BatchHandler | None = None

    def __post_init__(self) -> None:
        if self.handle_batch is not None and self.stage is not None:
            # A stage reports started/failed per event, around its own retries.
            raise ValueError("a batch handler is for workers without a stage")
        self._tracker = OffsetTracker()
        self._failures = FailureHandling(self.name, self.stage, self.settings.retry, self.producer)
        self._failure = WorkerFailure()
        self._commits = Commits(
            self._tracker, self._failure, self.settings.kafka.commit_interval_ms
        )
        self._hole_guard = OffsetHoleGuard(
            self.name, self.settings.kafka.offset_hole_patience_seconds
        )
        self._metadata_watch = TopicMetadataWatch(
            self.name, self.topics, self.settings.retry, self._commit
        )
        self._in_flight = InFlight(self._failure)
        self._consumer: AIOKafkaConsumer | None = None
        self._handled = HandledInputs()
        self._reported_state = Health.CONNECTING
        self._lost_broker = False

    @property
    def state(self) -> Health:
        """`ready` while it consumes, `connecting` before and while its group coordinator
        (the broker) is out of reach."""
        if not self.ready.is_set() or self._consumer is None:
            return Health.CONNECTING
        coordinator = self._consumer._coordinator
        if coordinator is not None and coordinator.coordinator_id is None:
            return Health.CONNECTING
        return Health.READY

    async def run(self, stop: asyncio.Event, shutdown: Shutdown | None = None) -> None:
        """Consumes until `stop` is set, then stops within `shutdown`'s bound: in-flight
        messages get the grace, committing and closing the consumer the rest."""
        shutdown = shutdown or Shutdown(self.name, self.settings.shutdown)
        consumer = AIOKafkaConsumer(
            **client_options(self.settings.kafka),
            group_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.worker.max_in_flight,
            fetch_max_wait_ms=self.settings.kafka.fetch_max_wait_ms,
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
            self._metadata_watch.stop()
            await shutdown.within_bound("closing the consumer", consumer.stop())

    async def partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Before partitions move to another member: finishes and commits what was taken."""
        await self.drain()
        self._tracker.forget(revoked)
        self._hole_guard.forget(revoked)

    async def partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info(
            "%s assigned %s",
            self.name,
            ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(assigned)) or "nothing",
        )
        if self._consumer is None:
            return
        self._metadata_watch.after_assignment(self._consumer)
        await self._hole_guard.expect_resume_points(self._consumer, assigned)

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        fetched = await consumer.getmany(timeout_ms=200)
        batch = await self._hole_guard.up_to_holes(consumer, fetched)
        self.ready.set()
        if self.handle_batch is None:
            for tp, records in batch.items():
                for record in records:
                    self._dispatch(tp, record)
        elif batch:
            await self._process_batch(self.handle_batch, batch)
        await metrics.observe_consumer(self.name, consumer, len(self._in_flight))
        self._log_state_change()
        await self._in_flight.wait_for_fewer_than(self.settings.worker.max_in_flight)
        self._failure.raise_if_any()
        # While the broker is away a commit would wait for it: it is made once it is back.
        if self._commits.due() and self.state == Health.READY:
            await self._commit()

    def _log_state_change(self) -> None:
        """One line when the broker goes away under a consuming worker, one when it is back."""
        state = self.state
        if state == self._reported_state:
            return
        if state == Health.CONNECTING:
            log.warning("%s: broker out of reach, waiting for it (health: connecting)", self.name)
        elif self._lost_broker:
            log.info("%s: broker back, consuming again", self.name)
        self._lost_broker = state == Health.CONNECTING
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

    def _dispatch(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        self._tracker.add(tp, record.offset)
        self._start(tp, record)

    def _start(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        self._in_flight.start(record.key, functools.partial(self._process_and_finish, tp, record))

    async def drain(self) -> None:
        await self._in_flight.wait()
        await self._commit()

    async def _hand_back(self, shutdown: Shutdown) -> None:
        """Shutdown: lets in-flight messages finish for the grace, then cancels the rest
        (typically calls waiting out a retry backoff, or on a broker or S3 server that does
        not answer) and commits only what finished; the cancelled messages are redelivered to
        whichever member takes the partition. A commit the broker does not take within the
        bound is given up: those messages come again too."""
        await self._in_flight.wait(at_most_seconds=shutdown.grace_left())
        unfinished = self._in_flight.cancel_all()
        if unfinished:
            log.info("%s handing back %d unfinished messages", self.name, len(unfinished))
            shutdown.abandon(f"{len(unfinished)} unfinished messages (handed back uncommitted)")
            await asyncio.wait(unfinished, timeout=shutdown.close_left())
        await self._commits.commit_at_stop(self._consumer, shutdown)

    async def _commit(self) -> None:
        await self._commits.commit(self._consumer)

    async def _process_and_finish(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        await self._process(record)
        self._tracker.finish(tp, record.offset)

    async def _process_batch(self, handle_batch: BatchHandler, batch: Records) -> None:
        """Hands the poll's events to `handle_batch` in one call; their offsets are finished
        once it returned. A message that does not decode, or whose call has a message still
        in flight one by one, goes one by one, and so does every later message of its call in
        the poll: those start only after the batch, so a call's messages stay in order."""
        together: list[tuple[TopicPartition, ConsumerRecord[bytes, bytes], AnyEvent]] = []
        alone: list[tuple[TopicPartition, ConsumerRecord[bytes, bytes]]] = []
        keys_alone = self._in_flight.keys()
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
            handling = self._handle_together(handle_batch, together)
            if await self._failures.batch_succeeded(handling, len(together)):
                for tp, record, _ in together:
                    self._tracker.finish(tp, record.offset)
            else:
                alone = [(tp, record) for tp, record, _ in together] + alone
        for tp, record in alone:
            self._start(tp, record)

    async def _handle_together(
        self,
        handle_batch: BatchHandler,
        together: list[tuple[TopicPartition, ConsumerRecord[bytes, bytes], AnyEvent]],
    ) -> None:
        chosen = [(record, event) for _, record, event in together if self.wants(event)]
        opened = await self.producer.envelopes.open_all([event for _, event in chosen])
        wanted = [
            (record, event)
            for (record, _), event in zip(chosen, opened, strict=True)
            if event is not None
        ]
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
        event = await self._failures.decoded(record)
        if event is None or not self.wants(event):
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
            outputs_of = functools.partial(self._open_and_handle, event)
            if await self._failures.handle(record, event, outputs_of, announcement.settle):
                self._handled.add(event.event_id)

    async def _open_and_handle(self, event: AnyEvent) -> Sequence[Event]:
        """The handler's outputs for the event opened; none for an event of a deleted call."""
        try:
            opened = await self.producer.envelopes.open(event)
        except Unopenable as error:
            raise TerminalError(str(error)) from error
        if opened is None:
            log.info("an event of a deleted call (its key is destroyed): nothing to do")
            return []
        return await self.handle(opened)

    def _start_announcement(self, event: AnyEvent) -> StartAnnouncement:
        """`stage.started` for this event, published once the work has run
        `stage_started_after_ms` (decision 0920); at once when that is 0."""
        if self.stage is None:
            return StartAnnouncement()
        started = event.caused(StageStarted, f"{self.stage}.started", stage=self.stage)
        return StartAnnouncement(
            self.settings.worker.stage_started_after_ms / 1000,
            functools.partial(self.producer.publish, started),
        )


class InFlight:
    """The messages being handled, a task each. A message's work starts only once the message
    of the same key (call) before it is done, so one call's messages are handled in order and
    different calls' concurrently. An error escaping a task is noted in `failure`."""

    def __init__(self, failure: WorkerFailure) -> None:
        self._failure = failure
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_by_key: dict[bytes | None, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def keys(self) -> set[bytes | None]:
        """The keys with a message in flight."""
        return set(self._last_by_key)

    def start(self, key: bytes | None, work: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.create_task(self._in_order(self._last_by_key.get(key), work))
        self._last_by_key[key] = task
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._done, key))

    @staticmethod
    async def _in_order(
        previous: asyncio.Task[None] | None, work: Callable[[], Awaitable[None]]
    ) -> None:
        if previous is not None:
            await asyncio.shield(previous)
        await work()

    def _done(self, key: bytes | None, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._failure.note(task)
        if self._last_by_key.get(key) is task:
            del self._last_by_key[key]

    async def wait_for_fewer_than(self, limit: int) -> None:
        while len(self._tasks) >= limit:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def wait(self, at_most_seconds: float | None = None) -> None:
        """Until every message in flight is done, or `at_most_seconds` passed."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=at_most_seconds)

    def cancel_all(self) -> list[asyncio.Task[None]]:
        """Cancels every message still in flight; their tasks."""
        unfinished = list(self._tasks)
        for task in unfinished:
            task.cancel()
        return unfinished


class StartAnnouncement(contextlib.AbstractContextManager["StartAnnouncement"]):
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
    assignment, note where each partition resumes (StageWorker.partitions_*)."""

    def __init__(self, worker: StageWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._worker.partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self._worker.partitions_assigned(assigned)
