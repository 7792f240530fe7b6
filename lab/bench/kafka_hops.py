"""For scale: how many produce → consume hops the broker carries with bare aiokafka (acks=all,
the same producer settings as callpipe's), with no handler, no database and no S3 work."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.kafka.connection import client_options
from shared.kafka.producer import use_idempotence
from shared.settings import Settings

PAYLOAD = b"x" * 600  # about the size of a callpipe event


async def raw_kafka_hops_per_s(settings: Settings, count: int) -> float:
    topic = f"bench.hops.{secrets.token_hex(4)}"
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.kafka.partitions, 1)])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**client_options(settings.kafka), group_id=None)
    producer = AIOKafkaProducer(
        **client_options(settings.kafka),
        acks="all",
        enable_idempotence=await use_idempotence(settings.kafka),
        linger_ms=2,
    )
    await consumer.start()
    await producer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)

        async def consume() -> None:
            received = 0
            while received < count:
                batch = await consumer.getmany(timeout_ms=200)
                received += sum(len(records) for records in batch.values())

        started = time.perf_counter()
        consuming = asyncio.create_task(consume())
        sends = [
            await producer.send(topic, PAYLOAD, key=f"CA{index % 256}".encode())
            for index in range(count)
        ]
        await asyncio.gather(*sends)
        await asyncio.wait_for(consuming, timeout=120)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()
        with contextlib.suppress(Exception):
            await consumer.stop()
