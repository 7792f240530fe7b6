"""Waits until the ingress has published every webhook event it stored and every stage worker
has committed everything on its topics, so one measurement does not run into the backlog of
the one before."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.ingress.deliveries import Deliveries
from shared.db import create_engine
from shared.kafka.connection import client_options
from shared.kafka.topics import WORKERS, all_topics
from shared.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


async def wait_until_drained(settings: Settings, within_seconds: float) -> float:
    """Seconds waited until the ingress's outbox is empty and no worker group lags on any
    partition it committed on; gives up (logged) after `within_seconds`."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    ends = AIOKafkaConsumer(**client_options(settings.kafka), group_id=None)
    engine = create_engine(settings.ingress_database_url)
    outbox = Deliveries(engine, timedelta(seconds=settings.ingress.outbox_lease_seconds))
    await admin.start()
    await ends.start()
    started = time.monotonic()
    try:
        while True:
            lag = await outbox.unpublished() + await _total_lag(admin, ends)
            waited = time.monotonic() - started
            if lag == 0:
                log.info("workers caught up in %.1f s", waited)
                return waited
            if waited > within_seconds:
                log.warning("still %d events behind after %.0f s", lag, waited)
                return waited
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await ends.stop()
        await admin.close()
        await engine.dispose()


async def _total_lag(admin: AIOKafkaAdminClient, ends: AIOKafkaConsumer) -> int:
    # Partitions named explicitly: Tansu closes the connection on an offset fetch for "all".
    await ends.topics()  # refreshes the metadata
    every = [
        TopicPartition(topic, partition)
        for topic in all_topics()
        for partition in sorted(ends.partitions_for_topic(topic) or ())
    ]
    latest: dict[TopicPartition, int] = await ends.end_offsets(every)
    lag = 0
    for group in WORKERS:
        committed = await admin.list_consumer_group_offsets(group, partitions=every)
        lag += sum(
            max(0, latest[tp] - at.offset)
            for tp, at in committed.items()
            if at.offset >= 0 and tp in latest
        )
    return lag
