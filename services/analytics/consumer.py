"""The example downstream consumer: callpipe's topics → live per-business figures by the hour,
served as JSON on GET /figures (and /healthz, /metrics).

This is how another team taps callpipe's events: its own consumer group (`callpipe-analytics`),
so it reads every event independently of callpipe's workers and never slows them down; the
published event schemas (docs/events/) as the contract. It is loss-tolerant by design: figures
live in memory and are rebuilt at start by reading the topics from the beginning, undecodable
messages are skipped, and offsets are auto-committed only so that operators see its lag.

It reads events as any consumer holding the wrapping key does (decision 1204): through
`Envelopes.read`, which opens their personal fields with the call's key. Events of deleted
calls (their keys destroyed) read as None and count nowhere; so the figures rebuilt after a
deletion leave the deleted calls out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from pydantic import ValidationError

from services.analytics.core import Figures
from shared import metrics
from shared.call_keys import Envelopes, KeyMissing
from shared.events import Topic, utc_now
from shared.health import Health
from shared.kafka.connection import client_options, connect_patiently
from shared.sealing import Unopenable
from shared.settings import Settings
from shared.shutdown import Shutdown

log = logging.getLogger(__name__)

GROUP = "callpipe-analytics"
TOPICS = [
    Topic.CALL_STARTED.value,
    Topic.RECORDING_COMPLETED.value,
    Topic.STAGE_STATUS.value,
    Topic.RECORDING_DOWNLOADED.value,
    Topic.TRANSCRIPT_READY.value,
    Topic.SUMMARY_READY.value,
]


class _ReadFromTheStart(ConsumerRebalanceListener):  # type: ignore[misc]
    """The figures are in memory: every partition this instance gets is read from its start."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        if assigned:
            await self._consumer.seek_to_beginning(*assigned)


class Link:
    """The consumer's state for /healthz: `connecting` until the broker is reached and while
    its group coordinator is out of reach, then `ready`."""

    def __init__(self) -> None:
        self.consumer: AIOKafkaConsumer | None = None

    @property
    def state(self) -> Health:
        if self.consumer is None:
            return Health.CONNECTING
        coordinator = self.consumer._coordinator
        if coordinator is not None and coordinator.coordinator_id is None:
            return Health.CONNECTING
        return Health.READY


async def consume(
    settings: Settings, figures: Figures, shutdown: Shutdown, link: Link | None = None
) -> None:
    """Reads the topics into `figures` until `shutdown.stop`; waits for the broker while it is
    unreachable. Its offsets only show the lag: a last commit the broker does not take
    within the bound is given up."""
    link = link or Link()

    async def connect() -> None:
        consumer = AIOKafkaConsumer(
            **client_options(settings.kafka),
            group_id=GROUP,
            enable_auto_commit=True,
            auto_offset_reset="earliest",
        )
        consumer.subscribe(TOPICS, listener=_ReadFromTheStart(consumer))
        await consumer.start()
        link.consumer = consumer

    if not await connect_patiently(settings.kafka, settings.retry, connect, shutdown.stop):
        return
    consumer = link.consumer
    assert consumer is not None
    log.info("analytics consuming %s as group %s", ", ".join(TOPICS), GROUP)
    envelopes = Envelopes.of(settings)
    try:
        while not shutdown.stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    try:
                        event = await envelopes.read(record.value)
                    except (ValidationError, KeyMissing, Unopenable) as error:
                        log.warning(
                            "skipped unreadable %s:%s: %s", record.topic, record.offset, error
                        )
                        continue
                    metrics.EVENTS_CONSUMED.labels("analytics", record.topic).inc()
                    if event is not None:
                        figures.apply(event)
            figures.forget_unfinished(utc_now())
            await metrics.observe_consumer("analytics", consumer, 0)
    finally:
        await shutdown.within_bound("closing the consumer", consumer.stop())
        await envelopes.close()


def http_app(figures: Figures, link: Link) -> web.Application:
    async def figures_page(_request: web.Request) -> web.Response:
        return web.json_response(figures.view())

    async def healthz(_request: web.Request) -> web.Response:
        state = link.state
        return web.json_response({"status": state}, status=200 if state == Health.READY else 503)

    app = web.Application()
    app.router.add_get("/figures", figures_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics.aiohttp_page)
    return app


async def run(settings: Settings, shutdown: Shutdown) -> None:
    figures = Figures()
    link = Link()
    runner = web.AppRunner(http_app(figures, link), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.local.analytics_port).start()
    log.info("figures at http://127.0.0.1:%d/figures", settings.local.analytics_port)
    try:
        await consume(settings, figures, shutdown, link)
    finally:
        await shutdown.within_bound("closing the HTTP server", runner.cleanup())
    shutdown.finished()
