"""The ingress's outbox relay: stored webhook events onto Kafka (acks=all), then marked.

- A webhook's event is stored in SQL (`Deliveries`) and, if the producer is connected, handed
  to a send of its own at once, under this instance's lease; the marks of many sends share a
  transaction (the dedupe table's micro-batch). No poll delay on the happy path.
- A sweep takes the stored, unpublished events that nobody holds: left by a crashed instance
  (once its lease ran out), released after a failed send, or stored while the producer was
  away or busy. It runs every `ingress_outbox_sweep_seconds`, at once when woken, again at
  once while it finds a full batch, and with capped, jittered backoff while sends fail.
- The producer connects in the background, retrying likewise: the ingress stores and answers
  webhooks while the broker is unreachable.
- Kafka may get an event twice (a send acknowledged, then the mark lost to a crash or a
  database failure): same event id, which every consumer deduplicates.
See docs/decisions/0912-webhook-outbox.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError
from tenacity import AsyncRetrying, RetryCallState

from services.ingress.config import IngressConfig
from services.ingress.deliveries import Deliveries
from shared.events import Event
from shared.kafka.producer import EventProducer, start_producer_patiently
from shared.logs import call_context
from shared.retry import describe, retrying

log = logging.getLogger(__name__)
# Sends of handed-over events at once; past that, events wait in SQL for a sweep.
MAX_IN_FLIGHT = 1024
SWEEP_BATCH = 256


class NotAllPublished(Exception):
    """Some events of a sweep did not reach Kafka: their leases are released, the sweep
    backs off."""


class OutboxRelay:
    def __init__(
        self, deliveries: Deliveries, producer: EventProducer, settings: IngressConfig
    ) -> None:
        self._deliveries = deliveries
        self._producer = producer
        self._settings = settings
        self.connected = asyncio.Event()
        self._sweep_now = asyncio.Event()
        self._sends: dict[asyncio.Task[None], Event] = {}
        self._running: asyncio.Task[None] | None = None

    @property
    def broker_state(self) -> str:
        return "connected" if self.connected.is_set() else "connecting"

    def start(self) -> None:
        self._running = asyncio.create_task(self._connect_then_sweep())

    async def stop(self) -> None:
        """Sends under way get `shutdown_grace_seconds` to be acknowledged and marked; the
        rest are released, so a restart or another instance publishes them without waiting
        for the lease."""
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
        if self._sends:
            await asyncio.wait(self._sends, timeout=self._settings.shutdown.grace_seconds)
        unfinished = list(self._sends.items())
        for task, _ in unfinished:
            task.cancel()
        await asyncio.gather(*(task for task, _ in unfinished), return_exceptions=True)
        if unfinished:
            log.info("releasing %d events not yet on Kafka", len(unfinished))
            await self._release([event for _, event in unfinished])

    async def store(self, event: Event, token: str | None) -> bool:
        """Stores the webhook's event durably; True if this delivery stored it, False if a
        delivery of the same occurrence already had. Shielded: a stored event is handed over
        even if the webhook stopped waiting."""
        return await asyncio.shield(self._store(event, token))

    async def _store(self, event: Event, token: str | None) -> bool:
        at_once = self.connected.is_set() and len(self._sends) < MAX_IN_FLIGHT
        stored = await self._deliveries.store(event, token, claimed=at_once)
        if stored and at_once:
            send = asyncio.create_task(self._send(event))
            self._sends[send] = event
            send.add_done_callback(self._sends.pop)
        elif stored:
            self._sweep_now.set()
        return stored

    async def _send(self, event: Event) -> None:
        with call_context(event.call_sid, str(event.event_id)):
            try:
                await self._producer.publish(event)
            except Exception as error:
                log.warning("send failed (%s): a sweep publishes it", describe(error))
                await self._release([event])
                return
            await self._mark(event)

    async def _mark(self, event: Event) -> None:
        try:
            await self._deliveries.mark_published(str(event.event_id))
        except SQLAlchemyError as error:
            # The lease runs out and a sweep publishes it again: same event id, deduplicated.
            log.error("published, but could not mark it: %s", describe(error))

    async def _release(self, events: Sequence[Event]) -> None:
        try:
            await self._deliveries.release([str(e.event_id) for e in events])
        except SQLAlchemyError as error:
            log.error("could not release %d events (their lease runs out): %r", len(events), error)

    def _retrying(self, what: str) -> AsyncRetrying:
        """Until it succeeds, with the stages' capped, jittered backoff."""

        async def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s failed (%s), try %d; next in %.1f s",
                what,
                describe(error) if error else "?",
                state.attempt_number,
                state.upcoming_sleep,
            )

        return retrying(
            None,
            self._settings.retry.base_seconds,
            self._settings.retry.max_seconds,
            log_retry,
        )

    async def _connect_then_sweep(self) -> None:
        # Stopped by cancelling this task: the wait needs no stop event of its own.
        await start_producer_patiently(
            self._settings.kafka,
            self._settings.retry,
            self._producer,
            asyncio.Event(),
            create_topics=True,
        )
        self.connected.set()
        while True:
            self._sweep_now.clear()
            async for attempt in self._retrying("sweeping the outbox"):
                with attempt:
                    full = await self._sweep()
            if not full:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._sweep_now.wait(), self._settings.ingress.outbox_sweep_seconds
                    )

    async def _sweep(self) -> bool:
        """Publishes one batch of unheld events; True if the batch was full (more may wait)."""
        events = await self._deliveries.claim_unpublished(SWEEP_BATCH)
        if not events:
            return False
        try:
            outcomes = await asyncio.gather(
                *(self._producer.publish(e) for e in events), return_exceptions=True
            )
        except asyncio.CancelledError:
            # Stopping: the next sweep, here after a restart or elsewhere, takes them at once.
            await self._release(events)
            raise
        published = [e for e, outcome in zip(events, outcomes, strict=True) if outcome is None]
        failed = [e for e, outcome in zip(events, outcomes, strict=True) if outcome is not None]
        await asyncio.gather(*(self._mark(e) for e in published))
        log.info("sweep published %d stored events", len(published))
        if failed:
            await self._release(failed)
            first_error = next(o for o in outcomes if isinstance(o, BaseException))
            raise NotAllPublished(f"{len(failed)} of {len(events)} events: {describe(first_error)}")
        return len(events) == SWEEP_BATCH
