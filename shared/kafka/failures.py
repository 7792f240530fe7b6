"""What a stage worker does when handling a message fails: the one rule (decisions 0004, 0801).

- A message that does not decode, or whose schema version is newer than this code reads, goes
  to the worker's dead-letter topic at once (tries 0), and the partition moves on.
- An error out of the handler is retried with capped, jittered backoff (`max_attempts` tries
  in all) without holding up other calls, unless it is a TerminalError. A stage publishes a
  non-terminal `stage.failed` for each retry.
- A terminal error, or the retries exhausted, is given up: a stage publishes a terminal
  `stage.failed`, and the original bytes go to the worker's dead-letter topic with the reason,
  the worker, the tries and the source offset as headers. The message's offset is finished.
- A Kafka error (the broker did not take an output, a `stage.failed` or a dead letter) is the
  broker's failure, not the message's: never a dead letter. It escapes the message, and the
  worker (WorkerFailure) commits nothing more and stops at its next poll; every message since
  its last commit comes again after the restart (handlers are idempotent).
- A batch handler's failure is neither retried nor dead-lettered as one: each of the batch's
  events goes through the rule above one by one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord
from aiokafka import errors as kafka_errors
from pydantic import ValidationError
from tenacity import RetryCallState

from shared import metrics, tracing
from shared.events import SCHEMA_VERSION, AnyEvent, Event, Stage, StageFailed, decode
from shared.kafka.producer import EventProducer
from shared.kafka.topics import dead_letter_topic
from shared.retry import describe, retrying
from shared.settings import RetrySettings

log = logging.getLogger(__name__)


@dataclass
class FailureHandling:
    """The rule above, for the messages of worker `worker` (of `stage`, if it is one)."""

    worker: str
    stage: Stage | None
    retry: RetrySettings
    producer: EventProducer

    async def decoded(self, record: ConsumerRecord[bytes, bytes]) -> AnyEvent | None:
        """The record's event; None once a record that does not decode, or is of a newer
        schema, is dead-lettered."""
        try:
            event = decode(record.value)
        except ValidationError as error:
            log.error("undecodable message at %s:%s: %s", record.topic, record.offset, error)
            await self._dead_letter(record, f"invalid event: {describe(error)}", tries=0)
            return None
        if event.schema_version > SCHEMA_VERSION:
            reason = (
                f"unknown schema version {event.schema_version} "
                f"(this worker reads up to {SCHEMA_VERSION})"
            )
            log.error("message at %s:%s: %s", record.topic, record.offset, reason)
            await self._dead_letter(record, reason, tries=0)
            return None
        return event

    async def handle(
        self,
        record: ConsumerRecord[bytes, bytes],
        event: AnyEvent,
        outputs_of: Callable[[], Awaitable[Sequence[Event]]],
        settle_start: Callable[[], Awaitable[None]],
    ) -> bool:
        """Tries `outputs_of()` as often as the rule allows, then publishes its outputs. True
        once they are acknowledged; False once the message is given up. `settle_start` is
        awaited before any outcome of the event is published (the stage's start
        announcement). Raises a Kafka error."""
        tries = 0
        report_retry = functools.partial(self._report_retry, event, settle_start)
        try:
            async for attempt in retrying(
                self.retry.max_attempts,
                self.retry.base_seconds,
                self.retry.max_seconds,
                report_retry,
            ):
                with attempt:
                    tries += 1
                    outputs = await outputs_of()
            await settle_start()
            for output in outputs:
                await self.producer.publish(output)
        except kafka_errors.KafkaError:
            raise  # the broker's failure, not the message's: no dead letter
        except Exception as error:  # terminal, or retries exhausted
            await self._give_up(record, event, describe(error), tries, settle_start)
            return False
        return True

    async def batch_succeeded(self, handling: Awaitable[None], events: int) -> bool:
        """Whether a batch handler's `handling` of `events` events succeeded; when it did not,
        the caller hands each of them to the one-by-one path."""
        try:
            await handling
        except Exception as error:
            log.warning(
                "%s: a batch of %d failed, handling its events one by one: %s",
                self.worker,
                events,
                describe(error),
            )
            return False
        return True

    async def _report_retry(
        self,
        event: AnyEvent,
        settle_start: Callable[[], Awaitable[None]],
        state: RetryCallState,
    ) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("try %d failed, will retry: %s", state.attempt_number, error)
        metrics.STAGE_RETRIES.labels(self.worker).inc()
        await settle_start()
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

    async def _give_up(
        self,
        record: ConsumerRecord[bytes, bytes],
        event: AnyEvent,
        reason: str,
        tries: int,
        settle_start: Callable[[], Awaitable[None]],
    ) -> None:
        log.error("giving up after %d tries: %s", tries, reason)
        metrics.STAGE_FAILURES.labels(self.worker).inc()
        tracing.record_failure(reason)
        await settle_start()
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

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, tries: int
    ) -> None:
        headers = [
            *list(record.headers or ()),
            ("dlq.reason", reason.encode()),
            ("dlq.worker", self.worker.encode()),
            ("dlq.tries", str(tries).encode()),
            ("dlq.source", f"{record.topic}:{record.partition}:{record.offset}".encode()),
        ]
        await self.producer.publish_raw(
            dead_letter_topic(self.worker), record.value, record.key, headers
        )
        metrics.DEAD_LETTERS.labels(self.worker).inc()


class WorkerFailure:
    """The latest error that escaped the handling of a message (by the rule above, a Kafka
    error). Once there is one, the worker commits nothing more and stops at its next poll."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def note(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = task.exception()

    def raise_if_any(self) -> None:
        if self.error is not None:
            # The output could not be made durable (broker down): stop without committing,
            # so the message is redelivered after restart.
            raise RuntimeError("a message could not be completed") from self.error
